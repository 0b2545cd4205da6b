//! `voicesearch.v1.Search`: text queries over the catalog.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::json_to_document;
use super::status::{blocking, counted};
use crate::monitor::Monitor;
use crate::pipeline::{HitSource, RankedHit};
use crate::proto::search_server::Search;
use crate::proto::{self, SearchRequest, SearchResponse};
use crate::search::{self, QueryEngine, SearchHit};

/// Serves the text search RPC.
pub struct SearchService {
    engine: Arc<QueryEngine>,
    monitor: Arc<Monitor>,
}

impl SearchService {
    pub fn new(engine: Arc<QueryEngine>, monitor: Arc<Monitor>) -> Self {
        Self { engine, monitor }
    }
}

/// A library hit as a wire hit.
fn to_proto_hit(hit: SearchHit, confidence: f32, source: proto::HitSource) -> proto::Hit {
    proto::Hit {
        document: Some(json_to_document(&hit.source)),
        id: hit.id,
        title: hit.title,
        score: hit.score,
        snippet: hit.snippet,
        category: hit.category,
        confidence,
        source: source.into(),
    }
}

/// Text search hits as wire hits (no confidence: typed text has no acoustic evidence).
pub fn to_proto_hits(hits: Vec<SearchHit>) -> Vec<proto::Hit> {
    hits.into_iter()
        .map(|hit| to_proto_hit(hit, 0.0, proto::HitSource::Text))
        .collect()
}

/// Voice hits, with their confidence and how each was found.
pub fn to_proto_ranked_hits(hits: Vec<RankedHit>) -> Vec<proto::Hit> {
    hits.into_iter()
        .map(|ranked| {
            let source = match ranked.source {
                HitSource::Text => proto::HitSource::Text,
                HitSource::SoundAlike => proto::HitSource::SoundAlike,
                HitSource::Acoustic => proto::HitSource::Acoustic,
            };
            to_proto_hit(ranked.hit, ranked.confidence, source)
        })
        .collect()
}

#[tonic::async_trait]
impl Search for SearchService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let result = async {
            let request = request.into_inner();
            let engine = self.engine.clone();
            let results = blocking(move || {
                Ok(engine.search(&search::SearchRequest {
                    query: request.query,
                    categories: request.filters.map(|f| f.categories).unwrap_or_default(),
                    page_size: request.page_size as usize,
                    page_token: request.page_token,
                })?)
            })
            .await?;
            let next_page_token = results.next_page_token.clone();
            let interpreted_query = results.interpreted_query.clone();
            Ok(Response::new(SearchResponse {
                hits: to_proto_hits(results.hits),
                next_page_token,
                interpreted_query,
            }))
        }
        .await;
        counted(&self.monitor.metrics, "Search", result)
    }
}
