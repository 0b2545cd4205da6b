//! The one place that composes the stages: audio bytes -> front end -> Whisper ->
//! catalog search. The gRPC service and the eval command both run utterances through
//! here, so what is measured is what is served.
//!
//! With catalog biasing (the default), recognition and search meet here: search
//! proposes candidates (text search of the transcript, sound-alikes of the name heard),
//! the recognizer's beam over the catalog's names ([`bias`]) proposes more, the speech
//! model scores each candidate's readings in the query's own carrier words, and
//! [`rerank`] turns that into a ranking and a confidence per hit.

pub mod bias;
pub mod rerank;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::asr::{
    AcousticContext, AsrError, Reading, ReadingScore, Segment, TranscribeOptions, Transcript,
    TranscriptAlternative, Whisper,
};
use crate::audio::{self, AudioError, AudioFormat, AudioInfo, Decoded};
use crate::search::text::analyze;
use crate::search::{
    Candidate, CandidateLimits, CandidateSet, QueryEngine, SearchError, SearchHit, SearchRequest,
};
use bias::CatalogBias;
use rerank::{CandidateFeatures, RerankModel, UNSCORED};

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
#[derive(Debug, Clone)]
pub struct HitOptions {
    pub max_hits: usize,
    pub categories: Vec<String>,
    /// Let the catalog decide what a name can be (candidates re-scored by the speech
    /// model); off gives plain text search of the transcript.
    pub catalog_bias: bool,
}

impl Default for HitOptions {
    fn default() -> Self {
        Self {
            max_hits: 10,
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
    /// The best candidate was below the model's confidence floor: the hits are those of
    /// plain text search.
    pub rejected: bool,
    /// Mean log-probability of the free transcript's own reading of the name.
    pub free_reading: f32,
}

/// Candidates the recognizer's catalog beams propose, the width of each beam, and the
/// first words of a transcript after which a beam also enters.
const BEAM_WIDTH: usize = 6;
const BEAM_PROPOSALS: usize = 10;
const BEAM_ENTRY_WORDS: usize = 3;
/// Most candidates re-scored by the speech model, and readings of each: the cost of
/// re-scoring grows with their product.
const RESCORED: usize = 24;
const READINGS_PER_CANDIDATE: usize = 2;
/// Candidates from each of search's sources.
const CANDIDATE_LIMITS: CandidateLimits = CandidateLimits {
    text: 8,
    alternative_text: 3,
    sound: 5,
    sound_within: 3,
    qualified: 3,
};

/// What a candidate's words earned: its text match, its sound, the beam's proposal and
/// the qualifier heard.
#[derive(Debug, Clone, Copy, Default)]
struct WordEvidence {
    text_score: f32,
    text_rank: Option<usize>,
    sound: f32,
    proposed: bool,
    qualifier_heard: f32,
}

impl WordEvidence {
    /// Per candidate, the best evidence of all the candidates that read as it does
    /// (`best` holds each one's reading): documents that sound the same were heard the
    /// same, so that only what sets them apart (popularity, category) decides between
    /// them, never which of them a search page or the beam happened to reach first.
    fn shared(candidates: &[Candidate], best: &[(ReadingScore, usize, ReadingScore)]) -> Vec<Self> {
        let words: Vec<String> = candidates
            .iter()
            .zip(best)
            .map(|(candidate, &(_, reading, _))| {
                analyze(&candidate.entry.readings[reading]).join(" ")
            })
            .collect();
        let mut by_words: HashMap<&str, Self> = HashMap::new();
        for (candidate, words) in candidates.iter().zip(&words) {
            let evidence = by_words.entry(words).or_default();
            evidence.text_score = evidence.text_score.max(candidate.text_score);
            evidence.text_rank = match (evidence.text_rank, candidate.text_rank) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            evidence.sound = evidence.sound.max(candidate.sound);
            evidence.proposed |= candidate.proposed;
            evidence.qualifier_heard = evidence.qualifier_heard.max(candidate.qualifier_heard);
        }
        words.iter().map(|words| by_words[words.as_str()]).collect()
    }
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
        // One catalog generation for the whole choice: search, sound-alikes, the beam's
        // names and the hits.
        let _generation = engine.index().hold();
        let words: Vec<&str> = text.split_whitespace().collect();
        let split = engine.carriers().split(text);
        let after_carrier = split.prefix.split_whitespace().count();
        // The beam enters after the carrier words; without any, also after each of
        // the first few words, in case the carrier was misheard past recognition.
        let mut entries: Vec<usize> = vec![after_carrier];
        if after_carrier == 0 {
            entries.extend(1..=BEAM_ENTRY_WORDS);
        }
        entries.retain(|&e| e < words.len().max(1));
        entries.sort_unstable();
        entries.dedup();
        let mut tree = whisper.token_tree(context);
        // Text search runs over every n-best transcript, the best first.
        let mut transcripts = vec![text];
        transcripts.extend(alternatives.iter().skip(1).map(|a| a.text.as_str()));
        // Search's own candidates need nothing of the beams: found on another thread
        // meanwhile, as the beams' small passes leave a core idle part of the time.
        let (searched, proposed) = std::thread::scope(|scope| {
            let searched =
                scope.spawn(|| engine.candidates(&split, &transcripts, CANDIDATE_LIMITS));
            let proposed = match &self.bias {
                Some(bias) => bias.propose(
                    whisper,
                    &mut tree,
                    &words,
                    &entries,
                    BEAM_WIDTH,
                    BEAM_PROPOSALS,
                ),
                None => Ok(Vec::new()),
            };
            let searched = searched
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (searched, proposed)
        });
        let proposed: Vec<(String, usize)> = proposed?;
        let mut searched = searched?;
        let proposed_ids: Vec<String> = proposed.iter().map(|(id, _)| id.clone()).collect();
        engine.add_proposed(&mut searched, &split, text, &proposed_ids);
        let CandidateSet {
            mut candidates,
            heard,
        } = searched;
        if !options.categories.is_empty() {
            candidates.retain(|c| {
                options
                    .categories
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&c.entry.category))
            });
        }
        // Each source gave its best few; a cap keeps re-scoring bounded all the same.
        candidates.truncate(RESCORED);

        // Each candidate's readings that sound most like the name heard, after the
        // carrier words and after the words its beam entered at; and the transcript's
        // own reading of the name after each of those.
        let suffix_words = split.suffix.split_whitespace().count();
        let name_end = words.len().saturating_sub(suffix_words);
        let mut alignments: Vec<usize> = vec![after_carrier];
        alignments.extend(proposed.iter().map(|&(_, k)| k));
        alignments.sort_unstable();
        alignments.dedup();
        let free_texts: Vec<String> = alignments
            .iter()
            .map(|&k| {
                if k == after_carrier {
                    split.slot.clone()
                } else {
                    words[k.min(name_end)..name_end].join(" ")
                }
            })
            .collect();
        let mut readings: Vec<Reading> = alignments
            .iter()
            .zip(&free_texts)
            .map(|(&k, free)| Reading {
                after_words: k,
                text: free,
                then: &split.suffix,
            })
            .collect();
        let mut owners: Vec<(usize, usize, usize)> = Vec::new();
        for (c, candidate) in candidates.iter().enumerate() {
            let mut at = vec![after_carrier];
            at.extend(
                proposed
                    .iter()
                    .filter(|(id, k)| *id == candidate.entry.id && *k != after_carrier)
                    .map(|&(_, k)| k),
            );
            for r in candidate
                .entry
                .readings_like(&heard, READINGS_PER_CANDIDATE)
            {
                for &k in &at {
                    readings.push(Reading {
                        after_words: k,
                        text: &candidate.entry.readings[r],
                        then: &split.suffix,
                    });
                    owners.push((c, r, k));
                }
            }
        }
        let scores = whisper.score_readings(&mut tree, &words, &readings)?;
        let unscored = ReadingScore {
            sum_logprob: UNSCORED,
            tokens: 1,
        };
        let score_of = |i: usize| scores[i].unwrap_or(unscored);
        let free_at = |k: usize| {
            alignments
                .iter()
                .position(|&a| a == k)
                .map_or(unscored, score_of)
        };
        let free_reading = free_at(after_carrier).mean();
        // Per candidate: its best reading's score, that reading, and the score of the
        // transcript's own reading at the same alignment.
        let mut best: Vec<(ReadingScore, usize, ReadingScore)> =
            vec![(unscored, 0, free_at(after_carrier)); candidates.len()];
        for (i, &(c, r, k)) in owners.iter().enumerate() {
            let score = score_of(alignments.len() + i);
            if score.mean() > best[c].0.mean() {
                best[c] = (score, r, free_at(k));
            }
        }
        let top = best.iter().map(|b| b.0.mean()).fold(UNSCORED, f32::max);
        let evidence = WordEvidence::shared(&candidates, &best);
        let mut scored: Vec<(ScoredCandidate, HitSource, Option<usize>)> = candidates
            .iter()
            .zip(&best)
            .zip(&evidence)
            .map(|((candidate, &(acoustic, reading, free)), words)| {
                let features = CandidateFeatures {
                    acoustic: acoustic.mean(),
                    margin: acoustic.mean() - top,
                    vs_free: acoustic.mean() - free.mean(),
                    sum_vs_free: acoustic.sum_logprob - free.sum_logprob,
                    length_ratio: acoustic.tokens as f32 / free.tokens.max(1) as f32,
                    text_score: words.text_score,
                    text_rank: words.text_rank.map_or(0.0, |r| 1.0 / (1.0 + r as f32)),
                    sound: words.sound,
                    proposed: f32::from(u8::from(words.proposed)),
                    popularity: candidate.popularity,
                    category_match: f32::from(u8::from(candidate.category_match)),
                    qualifier_heard: words.qualifier_heard,
                    shortened: f32::from(u8::from(candidate.entry.shortened[reading])),
                };
                let source = if candidate.proposed {
                    HitSource::Acoustic
                } else if candidate.by_sound && candidate.text_rank.is_none() {
                    HitSource::SoundAlike
                } else {
                    HitSource::Text
                };
                (
                    ScoredCandidate {
                        id: candidate.entry.id.clone(),
                        reading: candidate.entry.readings[reading].clone(),
                        confidence: self.rerank.confidence(&features),
                        features,
                    },
                    source,
                    candidate.text_rank,
                )
            })
            .collect();
        scored.sort_by(|a, b| b.0.confidence.total_cmp(&a.0.confidence));
        let rejected = scored
            .first()
            .is_none_or(|(best, _, _)| best.confidence < self.rerank.reject_below);
        let chosen: Vec<&(ScoredCandidate, HitSource, Option<usize>)> = if rejected {
            // Nothing in the catalog reads as what was said: text search order.
            let mut by_text: Vec<_> = scored.iter().filter(|s| s.2.is_some()).collect();
            by_text.sort_by_key(|s| s.2);
            by_text
        } else {
            scored.iter().collect()
        };
        let chosen: Vec<&(ScoredCandidate, HitSource, Option<usize>)> =
            chosen.into_iter().take(options.max_hits.max(1)).collect();
        let matched = chosen
            .first()
            .map(|(c, _, _)| analyze(&c.reading))
            .unwrap_or_default();
        let ids: Vec<(String, f32)> = chosen
            .iter()
            .map(|(c, _, _)| (c.id.clone(), c.confidence))
            .collect();
        let hits = engine
            .hits_by_id(&ids, &matched)?
            .into_iter()
            .zip(&chosen)
            .map(|(hit, (candidate, source, _))| RankedHit {
                confidence: candidate.confidence,
                source: *source,
                hit,
            })
            .collect();
        Ok((
            hits,
            CatalogDecision {
                candidates: scored.into_iter().map(|s| s.0).collect(),
                rejected,
                free_reading,
            },
        ))
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
