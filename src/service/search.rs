//! `voicesearch.v1.Search`: text queries over the catalog.

use tonic::{Request, Response, Status};

use super::status::not_yet;
use crate::proto::search_server::Search;
use crate::proto::{SearchRequest, SearchResponse};

/// Serves the text search RPC.
#[derive(Debug, Default)]
pub struct SearchService;

#[tonic::async_trait]
impl Search for SearchService {
    async fn search(
        &self,
        _request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        Err(not_yet("Search", 4))
    }
}
