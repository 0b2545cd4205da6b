//! Candidate entries for a spoken query: what text search finds from the transcripts,
//! what sounds like the name heard, and any entries recognition proposes, each with what
//! search knows of it (rank, score, sound similarity, popularity, category, qualifier
//! words heard). Choosing among them is the caller's: the speech model judges best.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::intent::CarrierSplit;
use super::query::{popularity_prior, PageBudget, QueryEngine, SearchHit, SearchRequest};
use super::sound::SoundKey;
use super::spoken::SpokenEntry;
use super::text::{analyze, edit_distance, fuzzy_distance};
use super::SearchError;

/// How many candidates each source may give.
#[derive(Debug, Clone, Copy)]
pub struct CandidateLimits {
    /// Text search hits of the best transcript.
    pub text: usize,
    /// Text search hits of each other transcript.
    pub alternative_text: usize,
    pub sound: usize,
    /// Entries whose name sounds like a stretch of what was heard.
    pub sound_within: usize,
    /// The most popular entries whose qualifier was heard.
    pub qualified: usize,
}

/// One entry that may be what was said.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub entry: Arc<SpokenEntry>,
    /// Best rank (0 first) in text search of any transcript.
    pub text_rank: Option<usize>,
    /// Its text search score over the best text search score of the query (0..1).
    pub text_score: f32,
    /// Sound similarity of the heard name to the entry's readings (0 when not close).
    pub sound: f32,
    /// Found as a sound-alike (not only scored as one).
    pub by_sound: bool,
    /// Proposed by the caller (the recognizer's catalog beam).
    pub proposed: bool,
    /// Popularity prior, 0..1 on a log scale.
    pub popularity: f32,
    /// Whether the entry is of the category the carrier phrase asks for.
    pub category_match: bool,
    /// Share of the words of the entry's best-heard qualifier (artist, state, ...) found
    /// in the transcript.
    pub qualifier_heard: f32,
}

/// The candidates of one query, and the sound key of the name heard (what
/// [`SpokenEntry::readings_like`] compares readings with).
#[derive(Debug, Clone)]
pub struct CandidateSet {
    pub candidates: Vec<Candidate>,
    pub heard: SoundKey,
}

impl Candidate {
    /// `entry` as a candidate for a query cut as `split`, whose best transcript has the
    /// words `heard_words`; found by no source yet.
    fn new(entry: Arc<SpokenEntry>, split: &CarrierSplit, heard_words: &[String]) -> Self {
        Self {
            text_rank: None,
            text_score: 0.0,
            sound: 0.0,
            by_sound: false,
            proposed: false,
            popularity: popularity_prior(entry.popularity),
            category_match: split.intent.category.as_deref() == Some(entry.category.as_str()),
            qualifier_heard: entry
                .qualifiers
                .iter()
                .map(|group| heard_share(group, heard_words))
                .fold(0.0, f32::max),
            entry,
        }
    }
}

impl QueryEngine {
    /// Candidates for `transcripts` (the best first, cut around its name as `split`
    /// says) from search alone: what text search finds, what sounds like the name, and
    /// the popular entries whose qualifier was heard. It needs nothing of recognition
    /// but the transcripts, so it can run while the catalog beams do. The caller holds
    /// the generation ([`super::CatalogIndex::hold`]).
    pub fn candidates(
        &self,
        split: &CarrierSplit,
        transcripts: &[&str],
        limits: CandidateLimits,
    ) -> Result<CandidateSet, SearchError> {
        let best = transcripts.first().copied().unwrap_or("");
        let spoken = self.index().spoken();
        let heard_words = analyze(best);
        let mut found: Vec<Candidate> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        let mut add = |entry: Arc<SpokenEntry>, found: &mut Vec<Candidate>| -> usize {
            *position.entry(entry.id.clone()).or_insert_with(|| {
                found.push(Candidate::new(entry, split, &heard_words));
                found.len() - 1
            })
        };
        let mut top_score = 0f32;
        for (i, text) in transcripts.iter().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let page_size = if i == 0 {
                limits.text
            } else {
                limits.alternative_text
            };
            let hits = self
                .search_held(&SearchRequest {
                    query: text.to_string(),
                    page_size,
                    ..Default::default()
                })?
                .hits;
            if i == 0 {
                top_score = hits.first().map_or(0.0, |h| h.score);
            }
            for (rank, hit) in hits.into_iter().enumerate() {
                let Some(entry) = spoken.get(&hit.id) else {
                    continue;
                };
                let at = add(entry, &mut found);
                let candidate = &mut found[at];
                candidate.text_rank = Some(candidate.text_rank.map_or(rank, |r| r.min(rank)));
                let relative = if top_score > 0.0 {
                    hit.score / top_score
                } else {
                    0.0
                };
                candidate.text_score = candidate.text_score.max(relative.min(1.0));
            }
        }
        for alike in spoken.sound_alikes(&heard_spans(&split.intent.words), limits.sound) {
            let at = add(alike.entry, &mut found);
            found[at].by_sound = true;
        }
        for alike in spoken.sounds_within(&split.intent.words, limits.sound_within) {
            let at = add(alike.entry, &mut found);
            found[at].by_sound = true;
        }
        for entry in spoken.qualified_by(&split.intent.words, limits.qualified) {
            add(entry, &mut found);
        }
        let heard = SoundKey::new(&split.intent.words);
        for candidate in &mut found {
            candidate.sound = candidate.entry.sound_similarity_to(&heard).unwrap_or(0.0);
        }
        Ok(CandidateSet {
            candidates: found,
            heard,
        })
    }

    /// Marks the entries in `proposed` (the recognizer's, for the query `set` was made
    /// for) as proposed, adding those not among the candidates yet after the others.
    pub fn add_proposed(
        &self,
        set: &mut CandidateSet,
        split: &CarrierSplit,
        best: &str,
        proposed: &[String],
    ) {
        let spoken = self.index().spoken();
        let heard_words = analyze(best);
        for id in proposed {
            if let Some(known) = set.candidates.iter_mut().find(|c| &c.entry.id == id) {
                known.proposed = true;
            } else if let Some(entry) = spoken.get(id) {
                let mut candidate = Candidate::new(entry, split, &heard_words);
                candidate.proposed = true;
                candidate.sound = candidate
                    .entry
                    .sound_similarity_to(&set.heard)
                    .unwrap_or(0.0);
                set.candidates.push(candidate);
            }
        }
    }

    /// The hits for entries chosen by id, in order, with snippets around `matched`
    /// words; ids no longer in the catalog are skipped. Like a search page, the list
    /// ends early rather than pass [`super::query::MAX_PAGE_BYTES`] (it keeps at least one
    /// hit).
    pub fn hits_by_id(
        &self,
        chosen: &[(String, f32)],
        matched: &[String],
    ) -> Result<Vec<SearchHit>, SearchError> {
        let matched: BTreeSet<String> = matched.iter().cloned().collect();
        let mut hits = Vec::with_capacity(chosen.len());
        let mut budget = PageBudget::default();
        for (id, score) in chosen {
            if let Some((source, stored_bytes)) = self.index().get_sized(id)? {
                let hit = SearchHit::from_source(source, *score, &matched);
                if !budget.admits(&hit, stored_bytes, hits.len()) {
                    break;
                }
                hits.push(hit);
            }
        }
        Ok(hits)
    }
}

/// The name as heard, and the same without a trailing qualifier or a misheard leading
/// carrier word: a recognizer errs at both ends of a name.
fn heard_spans(words: &[String]) -> Vec<Vec<String>> {
    let n = words.len();
    let mut spans = vec![words.to_vec()];
    for (start, end) in [
        (0, n.saturating_sub(1)),
        (0, n.saturating_sub(2)),
        (1, n),
        (2, n),
    ] {
        if end > start && (start, end) != (0, n) {
            spans.push(words[start..end].to_vec());
        }
    }
    spans
}

/// Share of `wanted` words found in `heard`, exactly or within the fuzzy distance.
fn heard_share(wanted: &[String], heard: &[String]) -> f32 {
    if wanted.is_empty() {
        return 0.0;
    }
    let found = wanted
        .iter()
        .filter(|w| {
            heard
                .iter()
                .any(|h| h == *w || edit_distance(h, w, fuzzy_distance(w)).is_some())
        })
        .count();
    found as f32 / wanted.len() as f32
}
