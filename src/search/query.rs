//! The query engine: from what a person said to ranked hits.
//!
//! Every query word is looked for exactly (BM25 over the title, boosted, the attribute
//! fields and the body), fuzzily (catalog words within 1 or 2 edits, by length, scored
//! below exact matches), by sound (Double Metaphone codes) and as a merged or split word.
//! The score is then nudged by popularity (a mild prior) and by the category the carrier
//! phrase asked for (a preference, never a filter).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, Score, Searcher, SegmentReader, Term};

use super::index::CatalogIndex;
use super::intent::{CarrierPhrases, Intent};
use super::page::{PageTokens, MAX_RESULT_WINDOW};
use super::schema::{self, category_hash};
use super::sound::phonetic_codes;
use super::text::{analyze, edit_distance, fuzzy_distance};
use super::SearchError;

/// Field weights of exact matches.
const TITLE_BOOST: f32 = 3.0;
const ATTRIBUTE_BOOST: f32 = 2.0;
const BODY_BOOST: f32 = 0.5;
/// Weight of a fuzzy match relative to an exact one: falls with the share of letters
/// edited, so two edits in "poughkeepsy" weigh more than one in "rehab".
fn fuzzy_weight(edits: u8, len: usize) -> f32 {
    (1.0 - 1.5 * edits as f32 / len.max(1) as f32).max(0.3)
}
/// Weight of a sound-alike match.
const PHONETIC_BOOST: f32 = 1.5;
/// Weight of a merged word (matched in the `joined` field).
const JOINED_BOOST: f32 = 2.0;
/// Extra weight of two query words that match as one catalog word ("god father"): they
/// stand for two words, and their halves alone match little.
const SPLIT_WORD_FACTOR: f32 = 1.5;
/// Popularity prior: a multiplier of at most 1 + this.
const POPULARITY_WEIGHT: f32 = 0.15;
/// Popularity at which the prior is full (log scale below it).
const POPULARITY_FULL: f64 = 1e7;
/// Multiplier of documents in the category the phrasing asks for.
const INTENT_BOOST: f32 = 1.6;
/// Words too common to look up fuzzily or by sound.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "at", "by", "for", "in", "is", "it", "me", "my", "of", "on", "the", "to",
    "with",
];

/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: usize = 100;
/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 1024;

/// What to search for and which page of it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    /// Keep only these categories (any of them); empty keeps all.
    pub categories: Vec<String>,
    pub page_size: usize,
    /// A token from a previous page, or empty.
    pub page_token: String,
}

/// One ranked document.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub id: String,
    pub title: String,
    pub category: String,
    pub score: f32,
    /// Body text around the matched words, which are wrapped in `<b></b>`.
    pub snippet: String,
    pub source: serde_json::Map<String, serde_json::Value>,
}

/// Words of a query searched; the rest are ignored (`interpreted_query` shows what was
/// searched), as web search engines do.
pub const MAX_QUERY_WORDS: usize = 32;
/// Longer words are matched only exactly: no name is that long, and fuzzy, phonetic and
/// split expansions of them cost the most.
const MAX_EXPANDED_CHARS: usize = 40;

/// Most bytes of hits one page holds, under the 4 MiB a gRPC client accepts by default.
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// The bytes of a list of hits so far: a list ends early rather than outgrow what a gRPC
/// client takes by default, but always holds its first hit.
#[derive(Default)]
pub(super) struct PageBudget {
    bytes: usize,
}

impl PageBudget {
    /// Whether `hit` (its document `stored_bytes` long) still fits after `held` hits.
    pub(super) fn admits(&mut self, hit: &SearchHit, stored_bytes: usize, held: usize) -> bool {
        self.bytes += hit.size_bytes(stored_bytes);
        self.bytes <= MAX_PAGE_BYTES || held == 0
    }
}

impl SearchHit {
    /// About the bytes this hit takes in a response, its document `stored_bytes` long.
    fn size_bytes(&self, stored_bytes: usize) -> usize {
        self.id.len() + self.title.len() + self.category.len() + self.snippet.len() + stored_bytes
    }

    /// The hit for a stored document, its snippet around the `matched` words.
    pub(super) fn from_source(
        source: serde_json::Map<String, serde_json::Value>,
        score: f32,
        matched: &BTreeSet<String>,
    ) -> Self {
        let text = |key: &str| {
            source
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Self {
            id: text("id"),
            title: text("title"),
            category: text("category"),
            score,
            snippet: snippet(&text("body"), matched),
            source,
        }
    }
}

/// One page of hits.
#[derive(Debug, Clone)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Empty when there is no further page.
    pub next_page_token: String,
    /// The words searched for and the category preferred, for debugging.
    pub interpreted_query: String,
}

/// Which approximate matching a search adds to exact BM25 matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matching {
    /// Catalog words within 1 or 2 edits, merged and split words.
    pub fuzzy: bool,
    /// Double Metaphone sound-alikes.
    pub phonetic: bool,
}

impl Default for Matching {
    fn default() -> Self {
        Self {
            fuzzy: true,
            phonetic: true,
        }
    }
}

/// The catalog's words (titles and attributes) as the term dictionaries of one searcher
/// hold them: exact lookups, and fuzzy ones through a Levenshtein automaton run over the
/// dictionary, so that a lookup costs microseconds however large the catalog.
struct Lexicon<'a> {
    searcher: &'a Searcher,
    fields: Vec<Field>,
}

/// Searches a [`CatalogIndex`].
pub struct QueryEngine {
    index: Arc<CatalogIndex>,
    carriers: CarrierPhrases,
    /// Every word of the carrier phrases, for splitting merged words.
    carrier_words: HashSet<String>,
    matching: Matching,
    page_tokens: PageTokens,
}

impl QueryEngine {
    pub fn new(index: Arc<CatalogIndex>, carriers: CarrierPhrases) -> Self {
        let carrier_words = carriers.words().collect();
        Self {
            index,
            carriers,
            carrier_words,
            matching: Matching::default(),
            page_tokens: PageTokens::default(),
        }
    }

    /// The same engine signing page tokens with `tokens` (a secret the fleet shares).
    pub fn with_page_tokens(self, page_tokens: PageTokens) -> Self {
        Self {
            page_tokens,
            ..self
        }
    }

    /// The same engine with other approximate matching (benchmarks compare them).
    pub fn with_matching(self, matching: Matching) -> Self {
        Self { matching, ..self }
    }

    pub fn index(&self) -> &Arc<CatalogIndex> {
        &self.index
    }

    pub fn carriers(&self) -> &CarrierPhrases {
        &self.carriers
    }

    /// Share of the words of `text` (as analyzed for search) that occur nowhere in the
    /// catalog; `None` for a text without words. A monitoring signal: it rises when people
    /// ask for what the catalog lacks, or when the recognizer garbles.
    pub fn unknown_word_share(&self, text: &str) -> Option<f32> {
        let words = analyze(text);
        if words.is_empty() {
            return None;
        }
        let searcher = self.index.searcher();
        let f = self.index.fields();
        let lexicon = Lexicon {
            searcher: &searcher,
            fields: [f.title, f.body]
                .into_iter()
                .chain(f.attributes.iter().copied())
                .collect(),
        };
        let unknown = words
            .iter()
            .filter(|word| lexicon.fields_of(word).is_empty())
            .count();
        Some(unknown as f32 / words.len() as f32)
    }

    /// Searches the generation in use, holding it for the search's length.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResults, SearchError> {
        let _generation = self.index.hold();
        self.search_held(request)
    }

    /// [`QueryEngine::search`] for a caller that holds the generation already.
    pub(super) fn search_held(
        &self,
        request: &SearchRequest,
    ) -> Result<SearchResults, SearchError> {
        let query = request.query.trim();
        if query.is_empty() {
            return Err(SearchError::InvalidQuery("the query is empty".into()));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchError::InvalidQuery(format!(
                "the query is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        let page_size = match request.page_size {
            0 => 10,
            n if n > MAX_PAGE_SIZE => {
                return Err(SearchError::InvalidQuery(format!(
                    "page_size {n} is over the limit of {MAX_PAGE_SIZE}"
                )))
            }
            n => n,
        };
        let generation = self.index.opstamp();
        let offset =
            self.page_tokens
                .parse(&request.page_token, generation, query, &request.categories)?;
        // No page reaches past the window, whatever its size.
        let page_size = page_size.min(MAX_RESULT_WINDOW - offset);

        let searcher = self.index.searcher();
        let f = self.index.fields();
        let lexicon = Lexicon {
            searcher: &searcher,
            fields: std::iter::once(f.title)
                .chain(f.attributes.iter().copied())
                .collect(),
        };
        // The work per query is bounded by its words, not its characters: one character
        // may fold to several words.
        let mut words = analyze(query);
        words.truncate(MAX_QUERY_WORDS);
        let words = if self.matching.fuzzy {
            self.resegment(words, &lexicon)
        } else {
            words
        };
        let intent = self.carriers.interpret_words(words);
        let interpreted_query = match &intent.category {
            Some(category) => format!("{} (prefers {category})", intent.words.join(" ")),
            None => intent.words.join(" "),
        };
        let (text_query, matched) = self.text_query(&intent, &lexicon);
        let query = self.with_filter(text_query, &request.categories);

        let preferred = intent.category.as_deref().map(category_hash);
        // One extra hit tells whether a next page exists.
        let collector = TopDocs::with_limit(page_size + 1)
            .and_offset(offset)
            .tweak_score(move |segment: &SegmentReader| {
                let popularity = segment
                    .fast_fields()
                    .f64(schema::POPULARITY)
                    .ok()
                    .map(|c| c.first_or_default_col(0.0));
                let category = segment
                    .fast_fields()
                    .u64(schema::CATEGORY_HASH)
                    .ok()
                    .map(|c| c.first_or_default_col(0));
                move |doc: DocId, score: Score| {
                    let prior = popularity
                        .as_ref()
                        .map_or(0.0, |c| popularity_prior(c.get_val(doc)));
                    let intent = match (&category, preferred) {
                        (Some(c), Some(p)) if c.get_val(doc) == p => INTENT_BOOST,
                        _ => 1.0,
                    };
                    score * (1.0 + POPULARITY_WEIGHT * prior) * intent
                }
            });
        let top = searcher.search(&query, &collector)?;
        // The next page starts where a page that ended early stopped.
        let mut hits = Vec::new();
        let mut budget = PageBudget::default();
        for &(score, address) in top.iter().take(page_size) {
            let (source, stored_bytes) = self.index.sized_source(&searcher, address)?;
            let hit = SearchHit::from_source(source, score, &matched);
            if !budget.admits(&hit, stored_bytes, hits.len()) {
                break;
            }
            hits.push(hit);
        }
        let next_page_token = if top.len() > hits.len() {
            self.page_tokens.issue(
                offset + hits.len(),
                generation,
                request.query.trim(),
                &request.categories,
            )
        } else {
            String::new()
        };
        Ok(SearchResults {
            hits,
            next_page_token,
            interpreted_query,
        })
    }

    /// The text part of the query, and the catalog words it can match (for highlighting).
    fn text_query(&self, intent: &Intent, lexicon: &Lexicon) -> (Box<dyn Query>, BTreeSet<String>) {
        let f = self.index.fields();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut matched = BTreeSet::new();
        let mut exact = |field: Field, word: &str, boost: f32| {
            let query = TermQuery::new(
                Term::from_field_text(field, word),
                IndexRecordOption::WithFreqs,
            );
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(query), boost)),
            ));
        };
        let words = &intent.words;
        for word in words {
            matched.insert(word.clone());
            exact(f.title, word, TITLE_BOOST);
            exact(f.body, word, BODY_BOOST);
            for &field in &f.attributes {
                exact(field, word, ATTRIBUTE_BOOST);
            }
            if STOP_WORDS.contains(&word.as_str()) || word.chars().count() > MAX_EXPANDED_CHARS {
                continue;
            }
            if self.matching.phonetic {
                for code in phonetic_codes(word) {
                    exact(f.phonetic, &code, PHONETIC_BOOST);
                }
            }
            if !self.matching.fuzzy {
                continue;
            }
            exact(f.joined, word, JOINED_BOOST);
            for (similar, fields, edits) in lexicon.similar(word) {
                matched.insert(similar.clone());
                for field in fields {
                    let boost = field_boost(f, field);
                    exact(field, &similar, boost * fuzzy_weight(edits, similar.len()));
                }
            }
        }
        // Words the recognizer split: "kala mazoo" -> "kalamazoo".
        for pair in words.windows(2).filter(|_| self.matching.fuzzy) {
            let merged = pair.concat();
            if merged.chars().count() > MAX_EXPANDED_CHARS {
                continue;
            }
            let fields = lexicon.fields_of(&merged);
            let exact_match = (!fields.is_empty()).then(|| (merged.clone(), fields, 0));
            for (similar, fields, edits) in exact_match.into_iter().chain(lexicon.similar(&merged))
            {
                matched.insert(similar.clone());
                for field in fields {
                    let boost = field_boost(f, field);
                    exact(
                        field,
                        &similar,
                        boost * SPLIT_WORD_FACTOR * fuzzy_weight(edits, similar.len()),
                    );
                }
            }
        }
        (Box::new(BooleanQuery::new(clauses)), matched)
    }

    /// Mends word boundaries the recognizer got wrong, against the words the catalog and
    /// the carrier phrases know: two pieces of one word are joined ("springfi eld" ->
    /// "springfield", "wat ch" -> "watch"), and an unknown word that is two known ones is
    /// split ("meslumdog" -> "me slumdog", "metwelve" -> "me 12").
    fn resegment(&self, words: Vec<String>, lexicon: &Lexicon) -> Vec<String> {
        let known_word = |w: &str| {
            !lexicon.fields_of(w).is_empty()
                || self.carrier_words.contains(w)
                || STOP_WORDS.contains(&w)
        };
        // Spelled numbers are known as the digits the analysis turns them into.
        let known = |w: &str| analyze(w).iter().all(|a| known_word(a));
        let mut joined: Vec<String> = Vec::with_capacity(words.len());
        for word in words {
            if let Some(previous) = joined.last_mut() {
                let merged = format!("{previous}{word}");
                if (!known(previous) || !known(&word)) && known_word(&merged) {
                    *previous = merged;
                    continue;
                }
            }
            joined.push(word);
        }
        let mut out = Vec::with_capacity(joined.len());
        for word in joined {
            if known(&word) || word.len() < 5 || word.chars().count() > MAX_EXPANDED_CHARS {
                out.push(word);
                continue;
            }
            // The split with the longest shorter half is the likeliest.
            let split = (2..word.len() - 1)
                .filter(|&at| word.is_char_boundary(at))
                .filter(|&at| known(&word[..at]) && known(&word[at..]))
                .max_by_key(|&at| at.min(word.len() - at));
            match split {
                Some(at) => {
                    out.push(word[..at].to_string());
                    out.push(word[at..].to_string());
                }
                None => out.push(word),
            }
        }
        analyze(&out.join(" "))
    }

    fn with_filter(&self, text: Box<dyn Query>, categories: &[String]) -> Box<dyn Query> {
        if categories.is_empty() {
            return text;
        }
        let field = self.index.fields().category;
        let allowed: Vec<(Occur, Box<dyn Query>)> = categories
            .iter()
            .map(|c| {
                let term = Term::from_field_text(field, &c.to_lowercase());
                (
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)) as Box<dyn Query>,
                )
            })
            .collect();
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, text),
            (Occur::Must, Box::new(BooleanQuery::new(allowed))),
        ]))
    }
}

impl Lexicon<'_> {
    /// The fields where `word` occurs.
    fn fields_of(&self, word: &str) -> Vec<Field> {
        self.fields
            .iter()
            .copied()
            .filter(|&field| {
                self.searcher.segment_readers().iter().any(|segment| {
                    segment
                        .inverted_index(field)
                        .ok()
                        .and_then(|inverted| inverted.terms().get(word.as_bytes()).ok()?)
                        .is_some()
                })
            })
            .collect()
    }

    /// Catalog words within the fuzzy distance of `word` (not `word` itself), with the
    /// fields they occur in and their distance.
    fn similar(&self, word: &str) -> Vec<(String, Vec<Field>, u8)> {
        let limit = fuzzy_distance(word);
        if limit == 0 {
            return Vec::new();
        }
        let mut found: HashMap<String, Vec<Field>> = HashMap::new();
        for &field in &self.fields {
            let query = FuzzyTermQuery::new(Term::from_field_text(field, word), limit, true);
            for segment in self.searcher.segment_readers() {
                let (Ok(automaton), Ok(inverted)) =
                    (query.automaton(), segment.inverted_index(field))
                else {
                    continue;
                };
                let Ok(mut stream) = inverted.terms().search(automaton).into_stream() else {
                    continue;
                };
                while stream.advance() {
                    if let Ok(candidate) = std::str::from_utf8(stream.key()) {
                        let fields = found.entry(candidate.to_string()).or_default();
                        if !fields.contains(&field) {
                            fields.push(field);
                        }
                    }
                }
            }
        }
        found
            .into_iter()
            .filter(|(candidate, _)| candidate != word)
            .filter_map(|(candidate, fields)| {
                let edits = edit_distance(word, &candidate, limit)?;
                // The candidate must be long enough to deserve that many edits too.
                (fuzzy_distance(&candidate) >= edits).then_some((candidate, fields, edits))
            })
            .collect()
    }
}

/// The exact-match weight of a title or attribute field.
fn field_boost(fields: &super::schema::Fields, field: Field) -> f32 {
    if field == fields.title {
        TITLE_BOOST
    } else {
        ATTRIBUTE_BOOST
    }
}

pub(super) fn popularity_prior(popularity: f64) -> f32 {
    ((1.0 + popularity.max(0.0)).ln() / (1.0 + POPULARITY_FULL).ln()).min(1.0) as f32
}

/// A short passage of `body` around the first matched word, matches in `<b></b>`.
pub(super) fn snippet(body: &str, matched: &BTreeSet<String>) -> String {
    const WORDS_BEFORE: usize = 8;
    const WORDS_TOTAL: usize = 30;
    let words: Vec<&str> = body.split_whitespace().collect();
    let is_match = |w: &str| analyze(w).iter().any(|a| matched.contains(a));
    let first = words.iter().position(|w| is_match(w)).unwrap_or(0);
    let start = first.saturating_sub(WORDS_BEFORE);
    let end = (start + WORDS_TOTAL).min(words.len());
    let mut out: Vec<String> = words[start..end]
        .iter()
        .map(|w| {
            let escape = |s: &str| {
                s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            if !is_match(w) {
                return escape(w);
            }
            // Bold the word itself, not the punctuation around it ("<b>Illinois</b>,").
            let core_start = w.find(char::is_alphanumeric).unwrap_or(0);
            let core_end = w.rfind(char::is_alphanumeric).map_or(w.len(), |i| {
                i + w[i..].chars().next().map_or(1, char::len_utf8)
            });
            format!(
                "{}<b>{}</b>{}",
                escape(&w[..core_start]),
                escape(&w[core_start..core_end]),
                escape(&w[core_end..])
            )
        })
        .collect();
    if start > 0 {
        out.insert(0, "…".into());
    }
    if end < words.len() {
        out.push("…".into());
    }
    out.join(" ")
}
