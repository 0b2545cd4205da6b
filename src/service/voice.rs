//! `voicesearch.v1.VoiceSearch`: each RPC converts its messages (`convert.rs`), calls the
//! library's [`Voice`] front door and converts the answer back.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::connections::Disconnect;
use super::convert::{audio_format, hit_options, transcribe_options, utterance_result};
use crate::pipeline::{HitOptions, UtteranceOutcome};
use crate::proto::voice_search_server::VoiceSearch;
use crate::proto::{
    RecognitionConfig, StreamingVoiceSearchRequest, StreamingVoiceSearchResponse,
    TranscribeRequest, TranscribeResponse, VoiceSearchRequest, VoiceSearchResponse,
};
use crate::voice::{Inbound, Voice};

/// Serves the voice RPCs.
pub struct VoiceSearchService {
    voice: Voice,
}

impl VoiceSearchService {
    pub fn new(voice: Voice) -> Self {
        Self { voice }
    }

    async fn utterance(
        &self,
        config: Option<RecognitionConfig>,
        audio: Vec<u8>,
        hits: Option<HitOptions>,
    ) -> Result<UtteranceOutcome, Status> {
        let config = config.ok_or_else(|| Status::invalid_argument("config is missing"))?;
        let (format, options) = (audio_format(&config)?, transcribe_options(&config)?);
        Ok(self.voice.utterance(format, options, hits, audio).await?)
    }
}

#[tonic::async_trait]
impl VoiceSearch for VoiceSearchService {
    type StreamingVoiceSearchStream =
        Pin<Box<dyn Stream<Item = Result<StreamingVoiceSearchResponse, Status>> + Send + 'static>>;

    async fn streaming_voice_search(
        &self,
        request: Request<Streaming<StreamingVoiceSearchRequest>>,
    ) -> Result<Response<Self::StreamingVoiceSearchStream>, Status> {
        let disconnect = Disconnect::of(request.extensions());
        let inbound = request
            .into_inner()
            .map(|message| message.and_then(Inbound::try_from));
        let drop_client = move || disconnect.iter().for_each(Disconnect::now);
        let results = self.voice.stream(inbound, drop_client)?;
        Ok(Response::new(Box::pin(results.map(|item| {
            item.map(StreamingVoiceSearchResponse::from)
                .map_err(Status::from)
        }))))
    }

    async fn voice_search(
        &self,
        request: Request<VoiceSearchRequest>,
    ) -> Result<Response<VoiceSearchResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.unwrap_or_default();
        let hits = hit_options(config.search.as_ref())?;
        let outcome = self
            .utterance(config.recognition, request.audio, Some(hits))
            .await?;
        Ok(Response::new(VoiceSearchResponse {
            result: Some(utterance_result(true, outcome)),
        }))
    }

    async fn transcribe(
        &self,
        request: Request<TranscribeRequest>,
    ) -> Result<Response<TranscribeResponse>, Status> {
        let request = request.into_inner();
        let outcome = self.utterance(request.config, request.audio, None).await?;
        let result = utterance_result(true, outcome);
        Ok(Response::new(TranscribeResponse {
            audio: result.audio,
            transcript: result.transcript,
        }))
    }
}
