//! The one place that composes the stages: audio bytes -> front end -> Whisper ->
//! catalog search. The gRPC service and the eval command both run utterances through
//! here, so what is measured is what is served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::asr::{AsrError, Segment, TranscribeOptions, Transcript, Whisper};
use crate::audio::{self, AudioError, AudioFormat, AudioInfo, Decoded};
use crate::search::{QueryEngine, SearchError, SearchHit, SearchRequest};

/// Why an utterance could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(
        "the server runs without a speech model: fetch one with models/fetch.sh and pass --model"
    )]
    NoModel,
    #[error("the server runs without a catalog index")]
    NoIndex,
}

/// Which hits to return for an utterance.
#[derive(Debug, Clone, Default)]
pub struct HitOptions {
    pub max_hits: usize,
    pub categories: Vec<String>,
}

/// Time spent in each stage of one utterance (the model's own stages are in
/// [`Transcript::timings`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    /// Bytes to samples.
    pub decode: Duration,
    /// Downmix, loudness, voice activity and resampling.
    pub front_end: Duration,
    pub transcription: Duration,
    pub search: Duration,
}

/// What one utterance gave.
#[derive(Debug, Clone)]
pub struct UtteranceOutcome {
    pub transcript: Transcript,
    pub hits: Vec<SearchHit>,
    pub audio: AudioInfo,
    pub timings: StageTimings,
}

/// The stages, loaded once and shared by every request.
#[derive(Clone, Default)]
pub struct Pipeline {
    pub whisper: Option<Arc<Whisper>>,
    pub search: Option<Arc<QueryEngine>>,
}

impl Pipeline {
    /// Front end and transcription; hits too when `hits` is given.
    pub fn run(
        &self,
        bytes: &[u8],
        format: &AudioFormat,
        options: &TranscribeOptions,
        hits: Option<&HitOptions>,
    ) -> Result<UtteranceOutcome, PipelineError> {
        let started = Instant::now();
        let decoded = audio::decode(bytes, format)?;
        self.run_decoded(decoded, started.elapsed(), options, hits)
    }

    /// Like [`Pipeline::run`] for the part of an utterance heard so far (an interim
    /// result): audio cut short by a chunk boundary is read up to its last whole frame.
    pub fn run_prefix(
        &self,
        bytes: &[u8],
        format: &AudioFormat,
        options: &TranscribeOptions,
        hits: Option<&HitOptions>,
    ) -> Result<UtteranceOutcome, PipelineError> {
        let started = Instant::now();
        let decoded = audio::decode_prefix(bytes, format)?;
        self.run_decoded(decoded, started.elapsed(), options, hits)
    }

    fn run_decoded(
        &self,
        decoded: Decoded,
        decode: Duration,
        options: &TranscribeOptions,
        hits: Option<&HitOptions>,
    ) -> Result<UtteranceOutcome, PipelineError> {
        let whisper = self.whisper.as_ref().ok_or(PipelineError::NoModel)?;
        let started = Instant::now();
        let prepared = audio::prepare_decoded(decoded)?;
        if prepared.info.duration_seconds > options.max_seconds {
            return Err(AudioError::TooLong {
                seconds: prepared.info.duration_seconds,
                limit: options.max_seconds,
            }
            .into());
        }
        let front_end = started.elapsed();

        let started = Instant::now();
        // The energy detector heard nothing: no model run, so nothing can be invented.
        let mut transcript = if prepared.info.voice.speech {
            whisper.transcribe(&prepared.samples, options)?
        } else {
            Transcript::silent()
        };
        // Times count from the utterance as sent, not from the trimmed speech.
        let shift = prepared.info.voice.start_seconds as f32;
        for Segment {
            start_seconds,
            end_seconds,
            ..
        } in &mut transcript.segments
        {
            *start_seconds += shift;
            *end_seconds += shift;
        }
        let transcription = started.elapsed();

        let started = Instant::now();
        let hits = match hits {
            Some(hit_options) if !transcript.text.trim().is_empty() => {
                self.search_text(&transcript.text, hit_options)?
            }
            _ => Vec::new(),
        };
        Ok(UtteranceOutcome {
            transcript,
            hits,
            audio: prepared.info,
            timings: StageTimings {
                decode,
                front_end,
                transcription,
                search: started.elapsed(),
            },
        })
    }

    /// Share of the transcript's words the catalog lacks (see
    /// [`QueryEngine::unknown_word_share`]); `None` without words or without an index.
    pub fn unknown_word_share(&self, text: &str) -> Option<f32> {
        self.search.as_ref()?.unknown_word_share(text)
    }

    /// Searches the catalog with a transcript.
    pub fn search_text(
        &self,
        text: &str,
        options: &HitOptions,
    ) -> Result<Vec<SearchHit>, PipelineError> {
        let engine = self.search.as_ref().ok_or(PipelineError::NoIndex)?;
        let results = engine.search(&SearchRequest {
            query: text.to_string(),
            categories: options.categories.clone(),
            page_size: options.max_hits.max(1),
            page_token: String::new(),
        })?;
        Ok(results.hits)
    }
}
