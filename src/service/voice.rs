//! `voicesearch.v1.VoiceSearch`: spoken queries in, transcripts and hits out.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::search::to_proto_hits;
use super::status::{blocking, not_yet};
use crate::asr::{self, TranscribeOptions};
use crate::audio::{AudioFormat, AudioInfo, Encoding};
use crate::pipeline::{HitOptions, Pipeline, UtteranceOutcome};
use crate::proto::voice_search_server::VoiceSearch;
use crate::proto::{
    self, AudioEncoding, RecognitionConfig, StreamingVoiceSearchRequest,
    StreamingVoiceSearchResponse, TranscribeRequest, TranscribeResponse, UtteranceResult,
    VoiceSearchRequest, VoiceSearchResponse,
};
use crate::search::query::MAX_PAGE_SIZE;

/// Hits per utterance when the config does not say.
const DEFAULT_MAX_HITS: usize = 5;

/// Serves the voice RPCs.
pub struct VoiceSearchService {
    pipeline: Pipeline,
    /// Longest utterance accepted, in seconds.
    max_utterance_seconds: f64,
}

impl VoiceSearchService {
    pub fn new(pipeline: Pipeline, max_utterance_seconds: f64) -> Self {
        Self {
            pipeline,
            max_utterance_seconds,
        }
    }

    /// Runs one whole utterance through the pipeline off the async runtime.
    async fn run(
        &self,
        config: Option<RecognitionConfig>,
        audio: Vec<u8>,
        hits: Option<HitOptions>,
    ) -> Result<UtteranceOutcome, Status> {
        let config = config.ok_or_else(|| Status::invalid_argument("config is missing"))?;
        let format = audio_format(&config)?;
        let options = TranscribeOptions {
            language: Some(config.language.clone()).filter(|l| !l.is_empty()),
            phrase_hints: config.phrase_hints.clone(),
            max_seconds: self.max_utterance_seconds,
            ..TranscribeOptions::default()
        };
        let pipeline = self.pipeline.clone();
        blocking(move || Ok(pipeline.run(&audio, &format, &options, hits.as_ref())?)).await
    }
}

/// The wire audio description as the front end's.
pub fn audio_format(config: &RecognitionConfig) -> Result<AudioFormat, Status> {
    let encoding = match AudioEncoding::try_from(config.encoding) {
        Ok(AudioEncoding::Linear16) => Encoding::Linear16,
        Ok(AudioEncoding::Float32) => Encoding::Float32,
        Ok(AudioEncoding::Wav) => Encoding::Wav,
        Ok(AudioEncoding::Mulaw) => Encoding::Mulaw,
        Ok(AudioEncoding::Unspecified) => {
            return Err(Status::invalid_argument(
                "encoding is unspecified: set LINEAR16, FLOAT32, WAV or MULAW",
            ))
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "encoding {} is unknown: use LINEAR16, FLOAT32, WAV or MULAW",
                config.encoding
            )))
        }
    };
    let channels = u16::try_from(config.channels).map_err(|_| {
        Status::invalid_argument(format!(
            "{} channels are out of range: it must be 1 to 8",
            config.channels
        ))
    })?;
    let format = AudioFormat {
        encoding,
        sample_rate: Some(config.sample_rate_hz).filter(|&r| r != 0),
        channels: match (encoding, channels) {
            (Encoding::Wav, 0) => None,
            (_, 0) => Some(1),
            (_, n) => Some(n),
        },
    };
    format.validate()?;
    Ok(format)
}

/// Hits wanted, from the wire options.
pub fn hit_options(search: Option<&proto::SearchOptions>) -> Result<HitOptions, Status> {
    let max_hits = match search.map_or(0, |s| s.max_hits as usize) {
        0 => DEFAULT_MAX_HITS,
        n if n > MAX_PAGE_SIZE => {
            return Err(Status::invalid_argument(format!(
                "max_hits {n} is over the limit of {MAX_PAGE_SIZE}"
            )))
        }
        n => n,
    };
    let categories = search
        .and_then(|s| s.filters.as_ref())
        .map(|f| f.categories.clone())
        .unwrap_or_default();
    Ok(HitOptions {
        max_hits,
        categories,
    })
}

pub fn to_proto_transcript(transcript: asr::Transcript) -> proto::Transcript {
    proto::Transcript {
        text: transcript.text,
        confidence: transcript.confidence,
        no_speech_probability: transcript.no_speech_prob,
        language: transcript.language,
        segments: transcript
            .segments
            .into_iter()
            .map(|s| proto::Segment {
                start_seconds: s.start_seconds,
                end_seconds: s.end_seconds,
                text: s.text,
            })
            .collect(),
    }
}

pub fn to_proto_audio(info: &AudioInfo) -> proto::AudioInfo {
    proto::AudioInfo {
        duration_seconds: info.duration_seconds as f32,
        sample_rate_hz: info.sample_rate,
        channels: info.channels as u32,
        loudness_dbfs: info.loudness_db,
        gain_db: info.gain_db,
        clipped_fraction: info.clipped_fraction,
        voice_detected: info.voice.speech,
    }
}

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
        request: Request<VoiceSearchRequest>,
    ) -> Result<Response<VoiceSearchResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.unwrap_or_default();
        let hits = hit_options(config.search.as_ref())?;
        let outcome = self
            .run(config.recognition, request.audio, Some(hits))
            .await?;
        Ok(Response::new(VoiceSearchResponse {
            result: Some(UtteranceResult {
                is_final: true,
                audio: Some(to_proto_audio(&outcome.audio)),
                transcript: Some(to_proto_transcript(outcome.transcript)),
                hits: to_proto_hits(outcome.hits),
            }),
        }))
    }

    async fn transcribe(
        &self,
        request: Request<TranscribeRequest>,
    ) -> Result<Response<TranscribeResponse>, Status> {
        let request = request.into_inner();
        let outcome = self.run(request.config, request.audio, None).await?;
        Ok(Response::new(TranscribeResponse {
            audio: Some(to_proto_audio(&outcome.audio)),
            transcript: Some(to_proto_transcript(outcome.transcript)),
        }))
    }
}
