//! `voicesearch.v1.Catalog`: writes to and reads of the catalog index.

use tonic::{Request, Response, Status, Streaming};

use super::status::not_yet;
use crate::proto::catalog_server::Catalog;
use crate::proto::{
    CatalogStats, DeleteDocumentRequest, DeleteDocumentResponse, Document, GetDocumentRequest,
    GetStatsRequest, UpsertDocumentsRequest, UpsertDocumentsResponse,
};

/// Serves the catalog RPCs.
#[derive(Debug, Default)]
pub struct CatalogService;

#[tonic::async_trait]
impl Catalog for CatalogService {
    async fn upsert_documents(
        &self,
        _request: Request<UpsertDocumentsRequest>,
    ) -> Result<Response<UpsertDocumentsResponse>, Status> {
        Err(not_yet("UpsertDocuments", 4))
    }

    async fn bulk_upsert_documents(
        &self,
        _request: Request<Streaming<UpsertDocumentsRequest>>,
    ) -> Result<Response<UpsertDocumentsResponse>, Status> {
        Err(not_yet("BulkUpsertDocuments", 4))
    }

    async fn delete_document(
        &self,
        _request: Request<DeleteDocumentRequest>,
    ) -> Result<Response<DeleteDocumentResponse>, Status> {
        Err(not_yet("DeleteDocument", 4))
    }

    async fn get_document(
        &self,
        _request: Request<GetDocumentRequest>,
    ) -> Result<Response<Document>, Status> {
        Err(not_yet("GetDocument", 4))
    }

    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<CatalogStats>, Status> {
        Err(not_yet("GetStats", 4))
    }
}
