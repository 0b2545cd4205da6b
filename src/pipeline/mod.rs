//! The one place that composes the stages: audio bytes -> front end -> Whisper ->
//! catalog search. The gRPC service and the eval command both run utterances through
//! here, so what is measured is what is served.
//!
//! With catalog biasing (the default), recognition and search meet here: search
//! proposes candidates (text search of the transcript, sound-alikes of the name heard),
//! the recognizer's beam over the catalog's names ([`bias`]) proposes more, the speech
//! model scores each candidate's readings in the query's own carrier words, and
//! [`rerank`] turns that into a ranking and a confidence per hit; `catalog.rs` holds
//! those steps.

pub mod bias;
mod catalog;
pub mod rerank;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::asr::{
    AcousticContext, AsrError, Segment, TranscribeOptions, Transcript, TranscriptAlternative,
    Whisper,
};
use crate::audio::{self, AudioError, AudioFormat, AudioInfo, Decoded};
use crate::search::{QueryEngine, SearchError, SearchHit, SearchRequest};
use bias::CatalogBias;
use catalog::CatalogRanking;
use rerank::{CandidateFeatures, RerankModel};

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

/// An utterance's samples as decoded once, and how long decoding took (a stage of its
/// timings).
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    pub decoded: Decoded,
    pub took: Duration,
}

impl DecodedAudio {
    /// Decodes with `decode` (whole, within a limit, or a prefix), timed.
    pub fn timed(decode: impl FnOnce() -> Result<Decoded, AudioError>) -> Result<Self, AudioError> {
        let started = Instant::now();
        let decoded = decode()?;
        Ok(Self {
            decoded,
            took: started.elapsed(),
        })
    }
}

/// Which hits to return for an utterance.
#[derive(Debug, Clone)]
pub struct HitOptions {
    pub max_hits: usize,
    pub categories: Vec<String>,
    /// Let the catalog decide what a name can be (candidates re-scored by the speech
    /// model); off gives plain text search of the transcript.
    pub catalog_bias: bool,
}

/// Hits per utterance when the caller does not say (what the API promises for
/// `max_hits` 0).
pub const DEFAULT_MAX_HITS: usize = 5;

impl Default for HitOptions {
    fn default() -> Self {
        Self {
            max_hits: DEFAULT_MAX_HITS,
            categories: Vec::new(),
            catalog_bias: true,
        }
    }
}

/// How a hit was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HitSource {
    /// Text search of the transcript.
    Text,
    /// Its name sounds like the name heard.
    SoundAlike,
    /// The recognizer's beam over the catalog's names heard it.
    Acoustic,
}

/// A hit with how sure the pipeline is of it.
#[derive(Debug, Clone)]
pub struct RankedHit {
    pub hit: SearchHit,
    /// Calibrated probability that this is what was meant, 0..1; 0 when catalog
    /// biasing did not run (nothing to calibrate against).
    pub confidence: f32,
    pub source: HitSource,
}

/// One candidate as the reranker saw it, for error analysis and fitting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoredCandidate {
    pub id: String,
    pub reading: String,
    pub features: CandidateFeatures,
    pub confidence: f32,
}

/// What catalog biasing did for one utterance.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CatalogDecision {
    /// Every candidate, best first.
    pub candidates: Vec<ScoredCandidate>,
    /// Mean log-probability of the free transcript's own reading of the name.
    pub free_reading: f32,
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
    /// Catalog biasing: the constrained beam, candidates and their re-scoring.
    pub rescore: Duration,
}

/// What one utterance gave.
#[derive(Debug, Clone)]
pub struct UtteranceOutcome {
    pub transcript: Transcript,
    pub hits: Vec<RankedHit>,
    /// Present when catalog biasing ran.
    pub decision: Option<CatalogDecision>,
    pub audio: AudioInfo,
    pub timings: StageTimings,
}

/// The stages, loaded once and shared by every request.
#[derive(Clone, Default)]
pub struct Pipeline {
    whisper: Option<Arc<Whisper>>,
    search: Option<Arc<QueryEngine>>,
    bias: Option<Arc<CatalogBias>>,
    rerank: RerankModel,
}

impl Pipeline {
    /// Composes the stages present; with both a model and a catalog, the catalog's
    /// names are followed for biasing.
    pub fn new(whisper: Option<Arc<Whisper>>, search: Option<Arc<QueryEngine>>) -> Self {
        let bias = match (&whisper, &search) {
            (Some(whisper), Some(search)) => Some(CatalogBias::follow(
                whisper.clone(),
                search.index().spoken(),
            )),
            _ => None,
        };
        Self {
            whisper,
            search,
            bias,
            rerank: RerankModel::default(),
        }
    }

    pub fn whisper(&self) -> Option<&Arc<Whisper>> {
        self.whisper.as_ref()
    }

    pub fn search(&self) -> Option<&Arc<QueryEngine>> {
        self.search.as_ref()
    }

    pub fn bias(&self) -> Option<&Arc<CatalogBias>> {
        self.bias.as_ref()
    }

    /// [`Pipeline::run`] of a whole utterance's bytes (the eval's and the benches' way in;
    /// the server decodes within its limits on the worker).
    pub fn run_bytes(
        &self,
        bytes: &[u8],
        format: &AudioFormat,
        options: &TranscribeOptions,
        hits: Option<&HitOptions>,
    ) -> Result<UtteranceOutcome, PipelineError> {
        let audio = DecodedAudio::timed(|| audio::decode(bytes, format))?;
        self.run(&audio, options, hits)
    }

    /// Front end and transcription of decoded audio (a whole utterance, or the part heard
    /// so far for an interim result); hits too when `hits` is given.
    pub fn run(
        &self,
        audio: &DecodedAudio,
        options: &TranscribeOptions,
        hits: Option<&HitOptions>,
    ) -> Result<UtteranceOutcome, PipelineError> {
        let decode = audio.took;
        let decoded = &audio.decoded;
        let whisper = self.whisper.as_ref().ok_or(PipelineError::NoModel)?;
        let started = Instant::now();
        let prepared = audio::prepare_decoded(decoded)?;
        let front_end = started.elapsed();

        let started = Instant::now();
        // The energy detector heard nothing: no model run, so nothing can be invented.
        let (mut transcript, context) = if prepared.info.voice.speech {
            whisper.transcribe_in_context(&prepared.samples, options)?
        } else {
            (Transcript::silent(), None)
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
        for word in &mut transcript.words {
            word.start_seconds += shift;
            word.end_seconds += shift;
        }
        let transcription = started.elapsed();

        let started = Instant::now();
        let mut rescore = Duration::ZERO;
        let mut decision = None;
        let hits = match (hits, context) {
            (Some(_), _) if transcript.text.trim().is_empty() => Vec::new(),
            (Some(hit_options), Some(context)) if hit_options.catalog_bias => {
                let (hits, made) = self.catalog_hits(
                    whisper,
                    &context,
                    &transcript.text,
                    &transcript.alternatives,
                    hit_options,
                )?;
                rescore = started.elapsed();
                decision = Some(made);
                hits
            }
            (Some(hit_options), _) => self.search_text(&transcript.text, hit_options)?,
            (None, _) => Vec::new(),
        };
        Ok(UtteranceOutcome {
            transcript,
            hits,
            decision,
            audio: prepared.info,
            timings: StageTimings {
                decode,
                front_end,
                transcription,
                search: started.elapsed() - rescore,
                rescore,
            },
        })
    }

    /// Hits chosen with the catalog: candidates from search and from the recognizer's
    /// beam, each scored by the speech model in the transcript's carrier words.
    fn catalog_hits(
        &self,
        whisper: &Whisper,
        context: &AcousticContext,
        text: &str,
        alternatives: &[TranscriptAlternative],
        options: &HitOptions,
    ) -> Result<(Vec<RankedHit>, CatalogDecision), PipelineError> {
        let engine = self.search.as_ref().ok_or(PipelineError::NoIndex)?;
        CatalogRanking {
            whisper,
            engine,
            bias: self.bias.as_deref(),
            rerank: &self.rerank,
        }
        .hits(context, text, alternatives, options)
    }

    /// Share of the transcript's words the catalog lacks (see
    /// [`QueryEngine::unknown_word_share`]); `None` without words or without an index.
    pub fn unknown_word_share(&self, text: &str) -> Option<f32> {
        self.search.as_ref()?.unknown_word_share(text)
    }

    /// Searches the catalog with a transcript. Without acoustic evidence nothing is
    /// calibrated, so each hit's confidence is 0: not estimated.
    pub fn search_text(
        &self,
        text: &str,
        options: &HitOptions,
    ) -> Result<Vec<RankedHit>, PipelineError> {
        let engine = self.search.as_ref().ok_or(PipelineError::NoIndex)?;
        let results = engine.search(&SearchRequest {
            query: text.to_string(),
            categories: options.categories.clone(),
            page_size: options.max_hits.max(1),
            page_token: String::new(),
        })?;
        Ok(results
            .hits
            .into_iter()
            .map(|hit| RankedHit {
                confidence: 0.0,
                source: HitSource::Text,
                hit,
            })
            .collect())
    }
}
