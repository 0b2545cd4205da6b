//! `voicesearch.v1.VoiceSearch`: each RPC converts its messages (`convert.rs`), calls the
//! library's [`Voice`] front door and converts the answer back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use super::connections::Disconnect;
use super::convert::{audio_format, hit_options, transcribe_options, utterance_result};
use super::status::{code_name, counted};
use crate::monitor::Monitor;
use crate::pipeline::{HitOptions, UtteranceOutcome};
use crate::proto::voice_search_server::VoiceSearch;
use crate::proto::{
    RecognitionConfig, StreamingVoiceSearchRequest, StreamingVoiceSearchResponse,
    TranscribeRequest, TranscribeResponse, VoiceSearchRequest, VoiceSearchResponse,
};
use crate::stream::{Inbound, StreamResults, Voice};

/// Serves the voice RPCs.
pub struct VoiceSearchService {
    voice: Voice,
    monitor: Arc<Monitor>,
}

impl VoiceSearchService {
    pub fn new(voice: Voice, monitor: Arc<Monitor>) -> Self {
        Self { voice, monitor }
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

const STREAMING: &str = "StreamingVoiceSearch";

#[tonic::async_trait]
impl VoiceSearch for VoiceSearchService {
    type StreamingVoiceSearchStream = CountedResponses;

    async fn streaming_voice_search(
        &self,
        request: Request<Streaming<StreamingVoiceSearchRequest>>,
    ) -> Result<Response<Self::StreamingVoiceSearchStream>, Status> {
        let disconnect = Disconnect::of(request.extensions());
        let inbound = request
            .into_inner()
            .map(|message| message.and_then(Inbound::try_from));
        let drop_client = move || disconnect.iter().for_each(Disconnect::now);
        let opened = self
            .voice
            .stream(inbound, drop_client)
            .map_err(Status::from);
        let results = counted(&self.monitor.metrics, STREAMING, opened)?;
        Ok(Response::new(CountedResponses {
            results,
            monitor: self.monitor.clone(),
            ended: false,
        }))
    }

    async fn voice_search(
        &self,
        request: Request<VoiceSearchRequest>,
    ) -> Result<Response<VoiceSearchResponse>, Status> {
        let result = async {
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
        .await;
        counted(&self.monitor.metrics, "VoiceSearch", result)
    }

    async fn transcribe(
        &self,
        request: Request<TranscribeRequest>,
    ) -> Result<Response<TranscribeResponse>, Status> {
        let result = async {
            let request = request.into_inner();
            let outcome = self.utterance(request.config, request.audio, None).await?;
            let result = utterance_result(true, outcome);
            Ok(Response::new(TranscribeResponse {
                audio: result.audio,
                transcript: result.transcript,
            }))
        }
        .await;
        counted(&self.monitor.metrics, "Transcribe", result)
    }
}

/// A stream's responses, its end counted once: by its status, or CANCELLED when the
/// client left before the end.
pub struct CountedResponses {
    results: StreamResults<Status>,
    monitor: Arc<Monitor>,
    ended: bool,
}

impl Stream for CountedResponses {
    type Item = Result<StreamingVoiceSearchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = ready!(Pin::new(&mut self.results).poll_next(cx));
        Poll::Ready(match next {
            Some(Ok(result)) => Some(Ok(result.into())),
            Some(Err(error)) => {
                self.ended = true;
                Some(counted(&self.monitor.metrics, STREAMING, Err(error.into())))
            }
            None => {
                if !std::mem::replace(&mut self.ended, true) {
                    self.monitor.metrics.request(STREAMING, code_name(Code::Ok));
                }
                None
            }
        })
    }
}

impl Drop for CountedResponses {
    fn drop(&mut self) {
        if !self.ended {
            self.monitor
                .metrics
                .request(STREAMING, code_name(Code::Cancelled));
        }
    }
}
