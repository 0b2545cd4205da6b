//! `voicesearch.v1.Search`: text queries over the catalog.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::blocking;
use crate::proto::search_server::Search;
use crate::proto::{self, SearchRequest, SearchResponse};
use crate::search::{self, QueryEngine};

/// Serves the text search RPC.
pub struct SearchService {
    engine: Arc<QueryEngine>,
}

impl SearchService {
    pub fn new(engine: Arc<QueryEngine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl Search for SearchService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
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
            hits: results.hits.into_iter().map(proto::Hit::from).collect(),
            next_page_token,
            interpreted_query,
        }))
    }
}
