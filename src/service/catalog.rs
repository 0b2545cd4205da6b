//! `voicesearch.v1.Catalog`: writes to and reads of the catalog index. Every write returns
//! only after its commit.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tonic::{Request, Response, Status, Streaming};

use super::convert::{json_to_document, validate};
use super::status::blocking;
use crate::fleet::FleetStatus;
use crate::proto::catalog_server::Catalog;
use crate::proto::{
    self, CatalogStats, DeleteDocumentRequest, DeleteDocumentResponse, GetDocumentRequest,
    GetStatsRequest, UpsertDocumentsRequest, UpsertDocumentsResponse,
};
use crate::quote::quote;
use crate::search::bulk::{BulkLoad, MAX_BATCH};
use crate::search::schema::SCHEMA_VERSION;
use crate::search::{CatalogIndex, UpsertCounts};

/// Serves the catalog RPCs.
pub struct CatalogService {
    index: Arc<CatalogIndex>,
    fleet: Arc<FleetStatus>,
}

impl CatalogService {
    pub fn new(index: Arc<CatalogIndex>, fleet: Arc<FleetStatus>) -> Self {
        Self { index, fleet }
    }
}

fn timestamp(at: std::time::SystemTime) -> prost_types::Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// Commits what a bulk load holds, off the async runtime; hands the load back with the
/// totals committed so far.
async fn commit(mut load: BulkLoad) -> Result<(BulkLoad, UpsertCounts), Status> {
    blocking(move || {
        let total = load.commit()?;
        Ok((load, total))
    })
    .await
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    async fn upsert_documents(
        &self,
        request: Request<UpsertDocumentsRequest>,
    ) -> Result<Response<UpsertDocumentsResponse>, Status> {
        let documents = request.into_inner().documents;
        if documents.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} documents in one call; the limit is {MAX_BATCH}: use BulkUpsertDocuments",
                documents.len()
            )));
        }
        let documents = validate(documents, "")?;
        let index = self.index.clone();
        let counts = blocking(move || Ok(index.upsert(&documents)?)).await?;
        Ok(Response::new(counts.into()))
    }

    async fn bulk_upsert_documents(
        &self,
        request: Request<Streaming<UpsertDocumentsRequest>>,
    ) -> Result<Response<UpsertDocumentsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut load = BulkLoad::new(self.index.clone());
        let mut message = 0usize;
        loop {
            let next = match stream.message().await {
                Ok(next) => next,
                Err(status) => {
                    // The client went away or sent garbage: keep what it sent validly.
                    commit(load).await?;
                    return Err(status);
                }
            };
            let Some(request) = next else { break };
            match validate(request.documents, &format!("message {message}, ")) {
                Ok(documents) => {
                    load.add(documents);
                    if load.batch_full() {
                        load = commit(load).await?.0;
                    }
                }
                Err(status) => {
                    let (_, total) = commit(load).await?;
                    return Err(Status::invalid_argument(format!(
                        "{}; the {} documents before it were committed ({} added, {} replaced)",
                        status.message(),
                        total.added + total.replaced,
                        total.added,
                        total.replaced
                    )));
                }
            }
            message += 1;
        }
        let (_, total) = commit(load).await?;
        Ok(Response::new(total.into()))
    }

    async fn delete_document(
        &self,
        request: Request<DeleteDocumentRequest>,
    ) -> Result<Response<DeleteDocumentResponse>, Status> {
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("id is empty"));
        }
        let index = self.index.clone();
        let deleted = blocking(move || Ok(index.delete(&id)?)).await?;
        Ok(Response::new(DeleteDocumentResponse { deleted }))
    }

    async fn get_document(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<proto::Document>, Status> {
        let id = request.into_inner().id;
        let index = self.index.clone();
        let found = blocking({
            let id = id.clone();
            move || Ok(index.get(&id)?)
        })
        .await?;
        match found {
            Some(source) => Ok(Response::new(json_to_document(&source))),
            None => Err(Status::not_found(format!(
                "no document has id {}",
                quote(&id)
            ))),
        }
    }

    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<CatalogStats>, Status> {
        let index = self.index.clone();
        let stats = blocking(move || Ok(index.stats()?)).await?;
        let fleet = self.fleet.state();
        Ok(Response::new(CatalogStats {
            document_count: stats.document_count,
            index_size_bytes: stats.size_bytes,
            last_commit_time: stats.last_commit.map(timestamp),
            schema_version: SCHEMA_VERSION,
            role: self.fleet.role().to_string(),
            commit_opstamp: self.index.opstamp(),
            snapshot_generation: fleet.generation,
            snapshot_published_time: (fleet.published_at_unix_ms > 0).then(|| {
                timestamp(UNIX_EPOCH + std::time::Duration::from_millis(fleet.published_at_unix_ms))
            }),
            snapshot_store_error: fleet.store_error.unwrap_or_default(),
            index_write_error: self.index.write_error().unwrap_or_default(),
        }))
    }
}
