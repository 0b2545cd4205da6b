//! `voicesearch.v1.VoiceSearch`: spoken queries in, transcripts and hits out.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::status::not_yet;
use crate::proto::voice_search_server::VoiceSearch;
use crate::proto::{
    StreamingVoiceSearchRequest, StreamingVoiceSearchResponse, TranscribeRequest,
    TranscribeResponse, VoiceSearchRequest, VoiceSearchResponse,
};

/// Serves the voice RPCs.
#[derive(Debug, Default)]
pub struct VoiceSearchService;

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<StreamingVoiceSearchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VoiceSearch for VoiceSearchService {
    type StreamingVoiceSearchStream = ResponseStream;

    async fn streaming_voice_search(
        &self,
        _request: Request<Streaming<StreamingVoiceSearchRequest>>,
    ) -> Result<Response<Self::StreamingVoiceSearchStream>, Status> {
        Err(not_yet("StreamingVoiceSearch", 5))
    }

    async fn voice_search(
        &self,
        _request: Request<VoiceSearchRequest>,
    ) -> Result<Response<VoiceSearchResponse>, Status> {
        Err(not_yet("VoiceSearch", 5))
    }

    async fn transcribe(
        &self,
        _request: Request<TranscribeRequest>,
    ) -> Result<Response<TranscribeResponse>, Status> {
        Err(not_yet("Transcribe", 3))
    }
}
