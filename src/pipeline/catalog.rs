//! Catalog-aware ranking of one utterance, as named steps: [`gather`] candidates (search
//! and the recognizer's beam over the catalog's names), [`lay_readings`] (each
//! candidate's readings closest to the name heard, at each place a name may start),
//! score them with the speech model, keep each candidate's [`BestReading`], turn that
//! into [`CandidateFeatures`] and a confidence, and [`choose`] the hits.

use std::collections::HashMap;

use super::rerank::{CandidateFeatures, RerankModel, UNSCORED};
use super::{
    CatalogBias, CatalogDecision, HitOptions, HitSource, PipelineError, RankedHit, ScoredCandidate,
};
use crate::asr::{
    AcousticContext, Reading, ReadingScore, TokenTree, TranscriptAlternative, Whisper,
};
use crate::search::text::analyze;
use crate::search::{Candidate, CandidateLimits, CandidateSet, CarrierSplit, QueryEngine};

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

/// The parts catalog-aware ranking uses.
pub(super) struct CatalogRanking<'a> {
    pub whisper: &'a Whisper,
    pub engine: &'a QueryEngine,
    pub bias: Option<&'a CatalogBias>,
    pub rerank: &'a RerankModel,
}

/// What one utterance's transcript says, cut for ranking.
struct Heard<'t> {
    words: Vec<&'t str>,
    split: CarrierSplit,
    /// Words before the name: the carrier ("play", "directions to").
    after_carrier: usize,
}

/// The recognizer's proposal: an entry, and after how many words its name starts.
type Proposal = (String, usize);

/// A candidate's best reading: its score, which of its readings, and the score of the
/// transcript's own reading of the name at the same place.
#[derive(Debug, Clone, Copy)]
struct BestReading {
    score: ReadingScore,
    reading: usize,
    free: ReadingScore,
}

/// Which candidate, reading and place a laid reading stands for.
#[derive(Debug, Clone, Copy)]
struct ReadingOwner {
    candidate: usize,
    reading: usize,
    after_words: usize,
}

/// The readings to score: first the transcript's own reading at each place
/// (`alignments`), then the candidates' (`owners`, one per reading after those).
struct LaidReadings<'t> {
    alignments: Vec<usize>,
    readings: Vec<Reading<'t>>,
    owners: Vec<ReadingOwner>,
}

/// A candidate ranked: as the reranker saw it, and how it was found.
struct Ranked {
    scored: ScoredCandidate,
    source: HitSource,
}

impl CatalogRanking<'_> {
    /// Hits chosen with the catalog for a transcript and its alternatives.
    pub fn hits(
        &self,
        context: &AcousticContext,
        text: &str,
        alternatives: &[TranscriptAlternative],
        options: &HitOptions,
    ) -> Result<(Vec<RankedHit>, CatalogDecision), PipelineError> {
        // One catalog generation for the whole choice: search, sound-alikes, the beam's
        // names and the hits.
        let _generation = self.engine.index().hold();
        let split = self.engine.carriers().split(text);
        let heard = Heard {
            words: text.split_whitespace().collect(),
            after_carrier: split.prefix.split_whitespace().count(),
            split,
        };
        let mut tree = self.whisper.token_tree(context);
        let mut transcripts = vec![text];
        transcripts.extend(alternatives.iter().skip(1).map(|a| a.text.as_str()));
        let (set, proposed) = self.gather(&heard, &transcripts, &mut tree, text)?;
        let CandidateSet {
            mut candidates,
            heard: heard_key,
        } = set;
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

        let free_texts = free_texts(&heard, &proposed);
        let laid = lay_readings(&heard, &candidates, &proposed, &free_texts, &heard_key);
        let scores = self
            .whisper
            .score_readings(&mut tree, &heard.words, &laid.readings)?;
        let (best, free_reading) =
            best_readings(&laid, &scores, heard.after_carrier, candidates.len());
        let ranked = self.rank(&candidates, &best);
        // The ranking is the reranker's even when nothing is likely: the low confidence
        // says so, rather than a floor that hands the order back to text search.
        let chosen = &ranked[..ranked.len().min(options.max_hits.max(1))];
        let matched = chosen
            .first()
            .map(|r| analyze(&r.scored.reading))
            .unwrap_or_default();
        let ids: Vec<(String, f32)> = chosen
            .iter()
            .map(|r| (r.scored.id.clone(), r.scored.confidence))
            .collect();
        let hits = self
            .engine
            .hits_by_id(&ids, &matched)?
            .into_iter()
            .zip(chosen)
            .map(|(hit, r)| RankedHit {
                confidence: r.scored.confidence,
                source: r.source,
                hit,
            })
            .collect();
        Ok((
            hits,
            CatalogDecision {
                candidates: ranked.into_iter().map(|r| r.scored).collect(),
                free_reading,
            },
        ))
    }

    /// Candidates from search, and the recognizer's proposals (added to them). Search's
    /// own candidates need nothing of the beams, so they are found on another thread
    /// meanwhile: the beams' small passes leave a core idle part of the time.
    fn gather(
        &self,
        heard: &Heard,
        transcripts: &[&str],
        tree: &mut TokenTree,
        text: &str,
    ) -> Result<(CandidateSet, Vec<Proposal>), PipelineError> {
        let entries = beam_entries(heard.words.len(), heard.after_carrier);
        let (searched, proposed) = std::thread::scope(|scope| {
            let searched = scope.spawn(|| {
                self.engine
                    .candidates(&heard.split, transcripts, CANDIDATE_LIMITS)
            });
            let proposed = match self.bias {
                Some(bias) => bias.propose(
                    self.whisper,
                    tree,
                    &heard.words,
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
        let proposed = proposed?;
        let mut set = searched?;
        let proposed_ids: Vec<String> = proposed.iter().map(|(id, _)| id.clone()).collect();
        self.engine
            .add_proposed(&mut set, &heard.split, text, &proposed_ids);
        Ok((set, proposed))
    }

    /// Each candidate's features and confidence, best first.
    fn rank(&self, candidates: &[Candidate], best: &[BestReading]) -> Vec<Ranked> {
        let top = best.iter().map(|b| b.score.mean()).fold(UNSCORED, f32::max);
        let evidence = WordEvidence::shared(candidates, best);
        let mut ranked: Vec<Ranked> = candidates
            .iter()
            .zip(best)
            .zip(&evidence)
            .map(|((candidate, best), words)| {
                let acoustic = best.score;
                let features = CandidateFeatures {
                    acoustic: acoustic.mean(),
                    margin: acoustic.mean() - top,
                    vs_free: acoustic.mean() - best.free.mean(),
                    sum_vs_free: acoustic.sum_logprob - best.free.sum_logprob,
                    length_ratio: acoustic.tokens as f32 / best.free.tokens.max(1) as f32,
                    text_score: words.text_score,
                    text_rank: words.text_rank.map_or(0.0, |r| 1.0 / (1.0 + r as f32)),
                    sound: words.sound,
                    proposed: f32::from(u8::from(words.proposed)),
                    popularity: candidate.popularity,
                    category_match: f32::from(u8::from(candidate.category_match)),
                    qualifier_heard: words.qualifier_heard,
                    shortened: f32::from(u8::from(candidate.entry.shortened[best.reading])),
                };
                let source = if candidate.proposed {
                    HitSource::Acoustic
                } else if candidate.by_sound && candidate.text_rank.is_none() {
                    HitSource::SoundAlike
                } else {
                    HitSource::Text
                };
                Ranked {
                    scored: ScoredCandidate {
                        id: candidate.entry.id.clone(),
                        reading: candidate.entry.readings[best.reading].clone(),
                        confidence: self.rerank.confidence(&features),
                        features,
                    },
                    source,
                }
            })
            .collect();
        ranked.sort_by(|a, b| b.scored.confidence.total_cmp(&a.scored.confidence));
        ranked
    }
}

/// After how many words the beam enters: after the carrier; without one, also after
/// each of the first few words, in case the carrier was misheard past recognition.
fn beam_entries(words: usize, after_carrier: usize) -> Vec<usize> {
    let mut entries: Vec<usize> = vec![after_carrier];
    if after_carrier == 0 {
        entries.extend(1..=BEAM_ENTRY_WORDS);
    }
    entries.retain(|&e| e < words.max(1));
    entries.sort_unstable();
    entries.dedup();
    entries
}

/// The places a name may start (after the carrier, and wherever the beam heard one),
/// with the transcript's own reading of the name from each.
fn free_texts(heard: &Heard, proposed: &[Proposal]) -> Vec<(usize, String)> {
    let suffix_words = heard.split.suffix.split_whitespace().count();
    let name_end = heard.words.len().saturating_sub(suffix_words);
    let mut alignments: Vec<usize> = vec![heard.after_carrier];
    alignments.extend(proposed.iter().map(|&(_, k)| k));
    alignments.sort_unstable();
    alignments.dedup();
    alignments
        .into_iter()
        .map(|k| {
            let text = if k == heard.after_carrier {
                heard.split.slot.clone()
            } else {
                heard.words[k.min(name_end)..name_end].join(" ")
            };
            (k, text)
        })
        .collect()
}

/// The transcript's own reading at each place, then each candidate's readings closest to
/// the name heard, after the carrier and after the words its beam entered at.
fn lay_readings<'t>(
    heard: &'t Heard,
    candidates: &'t [Candidate],
    proposed: &[Proposal],
    free_texts: &'t [(usize, String)],
    heard_key: &crate::search::SoundKey,
) -> LaidReadings<'t> {
    let then = heard.split.suffix.as_str();
    let mut readings: Vec<Reading> = free_texts
        .iter()
        .map(|(k, text)| Reading {
            after_words: *k,
            text,
            then,
        })
        .collect();
    let mut owners = Vec::new();
    for (c, candidate) in candidates.iter().enumerate() {
        let mut at = vec![heard.after_carrier];
        at.extend(
            proposed
                .iter()
                .filter(|(id, k)| *id == candidate.entry.id && *k != heard.after_carrier)
                .map(|&(_, k)| k),
        );
        for r in candidate
            .entry
            .readings_like(heard_key, READINGS_PER_CANDIDATE)
        {
            for &k in &at {
                readings.push(Reading {
                    after_words: k,
                    text: &candidate.entry.readings[r],
                    then,
                });
                owners.push(ReadingOwner {
                    candidate: c,
                    reading: r,
                    after_words: k,
                });
            }
        }
    }
    LaidReadings {
        alignments: free_texts.iter().map(|(k, _)| *k).collect(),
        readings,
        owners,
    }
}

/// Per candidate, its best-scoring reading; and the mean log-probability of the
/// transcript's own reading after the carrier.
fn best_readings(
    laid: &LaidReadings,
    scores: &[Option<ReadingScore>],
    after_carrier: usize,
    candidates: usize,
) -> (Vec<BestReading>, f32) {
    let unscored = ReadingScore {
        sum_logprob: UNSCORED,
        tokens: 1,
    };
    let score_of = |i: usize| scores[i].unwrap_or(unscored);
    let free_at = |k: usize| {
        laid.alignments
            .iter()
            .position(|&a| a == k)
            .map_or(unscored, score_of)
    };
    let mut best = vec![
        BestReading {
            score: unscored,
            reading: 0,
            free: free_at(after_carrier),
        };
        candidates
    ];
    for (i, owner) in laid.owners.iter().enumerate() {
        let score = score_of(laid.alignments.len() + i);
        if score.mean() > best[owner.candidate].score.mean() {
            best[owner.candidate] = BestReading {
                score,
                reading: owner.reading,
                free: free_at(owner.after_words),
            };
        }
    }
    (best, free_at(after_carrier).mean())
}

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
    /// Per candidate, the best evidence of all the candidates that read as it does:
    /// documents that sound the same were heard the same, so that only what sets them
    /// apart (popularity, category) decides between them, never which of them a search
    /// page or the beam happened to reach first.
    fn shared(candidates: &[Candidate], best: &[BestReading]) -> Vec<Self> {
        let words: Vec<String> = candidates
            .iter()
            .zip(best)
            .map(|(candidate, best)| analyze(&candidate.entry.readings[best.reading]).join(" "))
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
