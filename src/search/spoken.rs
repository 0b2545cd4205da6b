//! How people say catalog entries, and the catalog's names held in memory for
//! recognition.
//!
//! [`spoken_forms`] turns a document into the names a person would say ("The Godfather:
//! Part II" -> "The Godfather Part Two", "Piano Sonata No. 14 ..., \"Moonlight\": ..." ->
//! "the Moonlight Sonata", "Kraków" -> "Krakow") and the readings that qualify them
//! ("Rehab by Amy Winehouse", "Springfield, Illinois"), cased as written, since the
//! speech model scores them as text. [`SpokenCatalog`] keeps every entry's forms and
//! sound keys in step with the index (built when it opens, changed by every committed
//! upsert and delete) and tells followers of each change, so that recognition can bias
//! towards what the catalog holds without knowing documents.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rayon::prelude::*;
use rphonetic::{DoubleMetaphone, DoubleMetaphoneResult};

use super::document::CatalogDocument;
use super::numbers::{number_words, roman_value};
use super::text::analyze;

/// Most names and readings kept per entry: a bound on what recognition scores.
const MAX_NAMES: usize = 6;
const MAX_READINGS: usize = 16;
/// Writers named in a song's body ("Written by A, B & C") that a reading may credit.
const MAX_WRITERS: usize = 2;
/// Words after which a Roman numeral is a number ("Part II"), not a letter.
const NUMBERED: &[&str] = &["part", "chapter", "episode", "volume", "vol", "book", "act"];
/// Classical forms a nickname is said with ("the Moonlight Sonata").
const WORK_FORMS: &[&str] = &[
    "sonata", "symphony", "concerto", "serenade", "suite", "overture", "requiem", "mass",
    "quartet", "nocturne", "etude", "waltz",
];
/// Longest sound key compared, in code letters.
const SOUND_KEY_LEN: usize = 24;

/// What a person would say for one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SpokenEntry {
    pub id: String,
    pub category: String,
    pub popularity: f64,
    /// The entry's names alone, as said.
    pub names: Vec<String>,
    /// Names and qualified readings ("Rehab by Amy Winehouse"), the names first.
    pub readings: Vec<String>,
    /// Whether each reading shortens the written title (a part before ":" or ",").
    pub shortened: Vec<bool>,
    /// Analyzed words of each qualifier: artist, writers, state, country.
    pub qualifiers: Vec<Vec<String>>,
    /// Sound keys of the readings: (reading index, key), each reading's English key and,
    /// where it differs, the key of its name said as its own language would.
    sound_keys: Vec<(usize, SoundKey)>,
}

/// A name of the entry and whether it shortens the title.
struct Name {
    text: String,
    shortened: bool,
}

/// The spoken forms of a document.
pub fn spoken_forms(document: &CatalogDocument) -> SpokenEntry {
    let names = names(document);
    let mut qualifiers: Vec<(String, &str)> = Vec::new();
    let category = document.category.to_lowercase();
    match category.as_str() {
        "song" => {
            if let Some(artist) = document.attribute("artist") {
                if let Some(main) = main_artist(&artist) {
                    qualifiers.push((clean(main), " by "));
                }
                qualifiers.push((clean(&artist), " by "));
            }
            for writer in writers(&document.body) {
                qualifiers.push((writer, " by "));
            }
        }
        "city" => {
            for key in ["state", "country"] {
                if let Some(place) = document.attribute(key) {
                    qualifiers.push((clean(&place), ", "));
                }
            }
        }
        _ => {}
    }
    let mut readings: Vec<String> = Vec::new();
    let mut shortened = Vec::new();
    let mut push = |text: String, short: bool| {
        if readings.len() < MAX_READINGS && !text.is_empty() && !readings.contains(&text) {
            readings.push(text);
            shortened.push(short);
        }
    };
    for name in &names {
        push(name.text.clone(), name.shortened);
    }
    for (qualifier, joint) in &qualifiers {
        for name in &names {
            push(format!("{}{joint}{qualifier}", name.text), name.shortened);
        }
    }
    let qualifier_words = qualifiers
        .iter()
        .map(|(q, _)| analyze(q))
        .filter(|words| !words.is_empty())
        .collect();
    let sound_keys = readings
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let (english, native) = SoundKey::with_native(&analyze(r));
            [Some(english), native]
                .into_iter()
                .flatten()
                .map(move |key| (i, key))
        })
        .collect();
    SpokenEntry {
        id: document.id.clone(),
        category,
        popularity: document.popularity.unwrap_or(0.0),
        names: names.into_iter().map(|n| n.text).collect(),
        readings,
        shortened,
        qualifiers: qualifier_words,
        sound_keys,
    }
}

/// The names of a document: its title cleaned, without parentheses, cut before ":" or
/// ",", with numbers spelled out, and a classical work's nickname.
fn names(document: &CatalogDocument) -> Vec<Name> {
    let title = deunicode::deunicode(&document.title);
    // (text, shortened), cleaned and deduplicated at the end.
    let mut forms: Vec<(String, bool)> = Vec::new();
    let unquoted = title.replace('"', "");
    forms.push((clean(&unquoted), false));
    // As written, accents and all ("Düsseldorf"): the recognizer writes many names so.
    let written = without_parentheses(&document.title.replace('"', ""));
    if !written.is_ascii() {
        forms.push((clean_keeping_letters(&written), false));
    }
    let bare = without_parentheses(&unquoted);
    for text in [spell_numbers(&unquoted), bare.clone(), spell_numbers(&bare)] {
        forms.push((clean(&text), false));
    }
    // A quoted nickname, and the work it names: "Moonlight" -> "the Moonlight Sonata".
    let nickname = title
        .split('"')
        .nth(1)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if let Some(nickname) = nickname {
        let lower = title.to_lowercase();
        if let Some(form) = WORK_FORMS.iter().find(|f| lower.contains(*f)) {
            forms.push((clean(&format!("the {nickname} {}", capitalize(form))), true));
        }
        forms.push((clean(nickname), true));
    }
    if let Some(cut) = bare.find([':', ',']) {
        let head = &bare[..cut];
        if !analyze(head).is_empty() && analyze(&bare[cut..]).len() >= 2 {
            forms.push((clean(head), true));
            forms.push((clean(&spell_numbers(head)), true));
        }
    }
    let mut out: Vec<Name> = Vec::new();
    for (text, shortened) in forms {
        if !text.is_empty() && out.len() < MAX_NAMES && !out.iter().any(|n| n.text == text) {
            out.push(Name { text, shortened });
        }
    }
    out
}

/// The artist a credit names first, as people say it: "R.E.M. Feat. Kate Pearson" ->
/// "R.E.M."; `None` for a credit of one artist.
fn main_artist(credit: &str) -> Option<&str> {
    // ASCII lowercasing keeps every byte offset.
    let lower = credit.to_ascii_lowercase();
    let cut = [" feat. ", " feat ", " ft. ", " ft ", " featuring "]
        .iter()
        .filter_map(|joint| lower.find(joint))
        .min()?;
    let main = credit[..cut].trim();
    (!main.is_empty()).then_some(main)
}

/// The surnames of a song's writers, from "Written by A, B & C." in its body.
fn writers(body: &str) -> Vec<String> {
    let Some(start) = body.find("Written by ") else {
        return Vec::new();
    };
    let rest = &body[start + "Written by ".len()..];
    let list = rest
        .split(". ")
        .next()
        .unwrap_or(rest)
        .trim_end_matches('.');
    list.split([',', '&', '/'])
        .filter_map(|writer| writer.split_whitespace().last().map(clean))
        .filter(|surname| surname.len() > 2)
        .take(MAX_WRITERS)
        .collect()
}

/// A name as text to say: ASCII, "&" as "and", no quotes, brackets or colons, single
/// spaces.
fn clean(text: &str) -> String {
    clean_keeping_letters(&deunicode::deunicode(text))
}

/// [`clean`] without the folding to ASCII.
fn clean_keeping_letters(text: &str) -> String {
    let text = text.replace('&', " and ");
    let kept: String = text
        .chars()
        .map(|c| match c {
            '"' | '(' | ')' | '[' | ']' | ':' | ';' | '*' | '_' | '|' => ' ',
            c => c,
        })
        .collect();
    kept.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches([',', '.', ' ', '-'])
        .to_string()
}

fn without_parentheses(text: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Digits and numbering Roman numerals as words: "Terminator 2" -> "Terminator Two",
/// "Part II" -> "Part Two", "Apollo 13" -> "Apollo Thirteen".
fn spell_numbers(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let core = word.trim_end_matches([':', ',', '.']);
        let tail = &word[core.len()..];
        let after_numbering =
            i > 0 && NUMBERED.contains(&words[i - 1].trim_end_matches('.').to_lowercase().as_str());
        let value = if core.chars().all(|c| c.is_ascii_digit()) && !core.is_empty() {
            core.parse::<u64>().ok()
        } else if after_numbering {
            roman_value(core)
        } else {
            None
        };
        match value.and_then(number_words) {
            Some(spelled) => out.push(format!("{}{tail}", capitalize(&spelled))),
            None => out.push(word.to_string()),
        }
    }
    out.join(" ")
}

/// The sound of words run together, so that a name misheard across word boundaries
/// ("scenic taddy") still meets the written one ("schenectady"), with its letter counts:
/// each edit changes them by at most two, so comparing counts rules out most of a
/// catalog's keys before any edit distance is computed. Held inline, so that a scan over
/// the catalog's keys reads no memory beside them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SoundKey {
    /// Code letters: the first `len`.
    code: [u8; SOUND_KEY_LEN],
    len: u8,
    /// Occurrences of each code letter, by its byte modulo 16 (letters that share a
    /// bucket only loosen the bound).
    counts: [u8; 16],
}

impl SoundKey {
    pub fn new(words: &[String]) -> Self {
        Self::codes(words).map_or_else(Self::default, |codes| {
            Self::from_code(codes.primary().as_bytes())
        })
    }

    /// The key of words and, where it differs, their key as a speaker of their own
    /// language would say them ("szczecin" read with Polish "sz" and "cz"): Double
    /// Metaphone's alternate code. A recognizer that writes English spellings of what it
    /// heard meets a foreign name through the second rather than the first.
    pub fn with_native(words: &[String]) -> (Self, Option<Self>) {
        let Some(codes) = Self::codes(words) else {
            return (Self::default(), None);
        };
        let english = Self::from_code(codes.primary().as_bytes());
        let native = Self::from_code(codes.alternate().as_bytes());
        let native = (native != english).then_some(native);
        (english, native)
    }

    fn codes(words: &[String]) -> Option<DoubleMetaphoneResult> {
        let joined: String = words.concat();
        (!joined.is_empty())
            .then(|| DoubleMetaphone::new(Some(SOUND_KEY_LEN)).double_metaphone(&joined))
    }

    fn from_code(code: &[u8]) -> Self {
        let code = &code[..code.len().min(SOUND_KEY_LEN)];
        let mut letters = [0u8; SOUND_KEY_LEN];
        letters[..code.len()].copy_from_slice(code);
        let mut counts = [0u8; 16];
        for byte in code {
            let count = &mut counts[usize::from(byte % 16)];
            *count = count.saturating_add(1);
        }
        Self {
            code: letters,
            len: code.len() as u8,
            counts,
        }
    }

    fn code(&self) -> &[u8] {
        &self.code[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Similarity to another key: 1 for the same, falling with the edits between them;
    /// `None` when they differ by more than `1 - floor` of the longer.
    fn similarity(&self, other: &SoundKey, floor: f32) -> Option<f32> {
        let longest = self.code().len().max(other.code().len());
        if longest == 0 {
            return None;
        }
        let limit = ((1.0 - floor) * longest as f32).floor() as usize;
        let count_gap: usize = self
            .counts
            .iter()
            .zip(&other.counts)
            .map(|(a, b)| usize::from(a.abs_diff(*b)))
            .sum();
        if count_gap.div_ceil(2) > limit {
            return None;
        }
        let edits = bounded_levenshtein(self.code(), other.code(), limit, Span::Whole)?;
        Some(1.0 - edits as f32 / longest as f32)
    }

    /// Similarity of `name` to the stretch of this key closest to it: a name heard among
    /// other sounds, its edges run into the words around it ("whether induced or if
    /// germany" holds "dusseldorf"). `None` below `floor`, or for a name too short to be
    /// placed by its sound alone.
    fn similarity_within(&self, name: &SoundKey, floor: f32) -> Option<f32> {
        let (heard, name_code) = (self.code(), name.code());
        if name_code.len() < MIN_PLACED_LEN || heard.len() <= name_code.len() {
            return None;
        }
        let limit = ((1.0 - floor) * name_code.len() as f32).floor() as usize;
        // Each edit supplies at most one letter the stretch lacks.
        let missing: usize = name
            .counts
            .iter()
            .zip(&self.counts)
            .map(|(wanted, held)| usize::from(wanted.saturating_sub(*held)))
            .sum();
        if missing > limit {
            return None;
        }
        let edits = bounded_levenshtein(name_code, heard, limit, Span::Stretch)?;
        Some(1.0 - edits as f32 / name_code.len() as f32)
    }
}

impl std::fmt::Debug for SoundKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SoundKey")
            .field(&String::from_utf8_lossy(self.code()))
            .finish()
    }
}

/// Where the second key may be matched: whole, or any stretch of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Span {
    Whole,
    Stretch,
}

/// Fewest edits that turn `a` into `b` (or into some stretch of `b`), or `None` past
/// `limit`. Myers' bit-parallel edit distance: a column of the edit table is one word of
/// vertical deltas, so each letter of `b` costs a few word operations rather than a row
/// of cells (sound keys are at most [`SOUND_KEY_LEN`] letters, which fit in a word).
fn bounded_levenshtein(a: &[u8], b: &[u8], limit: usize, span: Span) -> Option<usize> {
    if span == Span::Whole && a.len().abs_diff(b.len()) > limit {
        return None;
    }
    if a.is_empty() {
        let edits = if span == Span::Whole { b.len() } else { 0 };
        return (edits <= limit).then_some(edits);
    }
    debug_assert!(a.len() <= SOUND_KEY_LEN && a.iter().all(u8::is_ascii));
    // Where each letter occurs in `a`.
    let mut occurs = [0u32; 128];
    for (i, &letter) in a.iter().enumerate() {
        occurs[usize::from(letter & 127)] |= 1 << i;
    }
    let last = 1u32 << (a.len() - 1);
    // Vertical deltas of the current column: +1 (`up`) or -1 (`down`), else 0.
    let (mut up, mut down) = (u32::MAX, 0u32);
    let mut edits = a.len();
    // A stretch may end anywhere: the least of the last row, from the empty stretch on.
    let mut least = edits;
    for &letter in b {
        let matches = occurs[usize::from(letter & 127)];
        let x_v = matches | down;
        let x_h = ((matches & up).wrapping_add(up) ^ up) | matches;
        let mut h_up = down | !(x_h | up);
        let mut h_down = up & x_h;
        if h_up & last != 0 {
            edits += 1;
        } else if h_down & last != 0 {
            edits -= 1;
        }
        h_up <<= 1;
        h_down <<= 1;
        // The whole of `b` from its start: the first row grows by one a letter; a
        // stretch may start anywhere, so that row stays 0.
        if span == Span::Whole {
            h_up |= 1;
        }
        up = h_down | !(x_v | h_up);
        down = h_up & x_v;
        least = least.min(edits);
    }
    let edits = match span {
        Span::Whole => edits,
        Span::Stretch => least,
    };
    (edits <= limit).then_some(edits)
}

/// A change to the catalog's entries, told to followers after it is committed.
#[derive(Debug, Clone)]
pub enum CatalogChange {
    Added(Arc<SpokenEntry>),
    Removed(Arc<SpokenEntry>),
}

type Follower = Box<dyn Fn(&CatalogChange) + Send + Sync>;

/// Every entry's spoken forms, by id.
#[derive(Default)]
pub struct SpokenCatalog {
    state: RwLock<CatalogState>,
}

#[derive(Default)]
struct CatalogState {
    entries: HashMap<String, Arc<SpokenEntry>>,
    followers: Vec<Follower>,
}

/// An entry whose sound is close to what was heard.
#[derive(Debug, Clone)]
pub struct SoundAlike {
    pub entry: Arc<SpokenEntry>,
    pub similarity: f32,
}

/// Sound similarity below which an entry is not a sound-alike.
const SOUND_FLOOR: f32 = 0.6;
/// The same for a name found inside what was heard, where the stretch it matches is
/// free to start and end anywhere, so the match must be closer.
const WITHIN_FLOOR: f32 = 0.8;
/// Code letters a name needs to be placed inside what was heard by sound alone.
const MIN_PLACED_LEN: usize = 5;

impl SpokenCatalog {
    pub fn get(&self, id: &str) -> Option<Arc<SpokenEntry>> {
        self.read().entries.get(id).cloned()
    }

    /// Adds or replaces the entries of documents just committed.
    pub fn upsert(&self, documents: &[CatalogDocument]) {
        self.apply(documents.iter().map(spoken_forms).collect(), &[]);
    }

    /// Drops the entry of a document just deleted.
    pub fn remove(&self, id: &str) {
        self.apply(Vec::new(), &[id.to_string()]);
    }

    /// Drops the entries of `removed` ids and adds or replaces `added`, in one step.
    pub fn apply(&self, added: Vec<SpokenEntry>, removed: &[String]) {
        let mut state = self.write();
        for id in removed {
            if let Some(old) = state.entries.remove(id) {
                state.tell(&CatalogChange::Removed(old));
            }
        }
        for entry in added {
            let entry = Arc::new(entry);
            if let Some(old) = state.entries.insert(entry.id.clone(), entry.clone()) {
                state.tell(&CatalogChange::Removed(old));
            }
            state.tell(&CatalogChange::Added(entry));
        }
    }

    /// Registers `follower` for every later change and returns the entries held now (by
    /// id), in one step, so that the follower misses nothing and sees nothing twice.
    pub fn follow(
        &self,
        follower: impl Fn(&CatalogChange) + Send + Sync + 'static,
    ) -> Vec<Arc<SpokenEntry>> {
        let mut state = self.write();
        state.followers.push(Box::new(follower));
        // By id, so that what the follower builds from them comes out the same in every
        // process (the map's own order does not).
        let mut entries: Vec<Arc<SpokenEntry>> = state.entries.values().cloned().collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries
    }

    /// Entries whose readings sound most like any of `heard` (spans of a name as
    /// heard), best first, at most `limit`. One parallel pass over the catalog.
    pub fn sound_alikes(&self, heard: &[Vec<String>], limit: usize) -> Vec<SoundAlike> {
        let keys: Vec<SoundKey> = heard
            .iter()
            .map(|words| SoundKey::new(words))
            .filter(|key| !key.is_empty())
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        self.closest(limit, |entry| {
            keys.iter()
                .filter_map(|key| entry.sound_similarity_to(key))
                .max_by(f32::total_cmp)
        })
    }

    /// Entries one of whose readings sounds like a stretch of `heard` (the words after
    /// the carrier, say), for names whose edges the recognizer ran into the words
    /// around them; best first, at most `limit`.
    pub fn sounds_within(&self, heard: &[String], limit: usize) -> Vec<SoundAlike> {
        let heard = SoundKey::new(heard);
        if heard.is_empty() {
            return Vec::new();
        }
        self.closest(limit, |entry| {
            entry
                .sound_keys
                .iter()
                .filter_map(|(_, key)| heard.similarity_within(key, WITHIN_FLOOR))
                .max_by(f32::total_cmp)
        })
    }

    /// The `limit` entries that `similarity` rates highest (the more popular first among
    /// equals, then by id), in one parallel pass over the catalog.
    fn closest(
        &self,
        limit: usize,
        similarity: impl Fn(&SpokenEntry) -> Option<f32> + Sync,
    ) -> Vec<SoundAlike> {
        let state = self.read();
        let entries: Vec<&Arc<SpokenEntry>> = state.entries.values().collect();
        let mut found: Vec<SoundAlike> = entries
            .par_iter()
            .filter_map(|entry| {
                Some(SoundAlike {
                    similarity: similarity(entry)?,
                    entry: (*entry).clone(),
                })
            })
            .collect();
        // The catalog is a hash map: without the id last, equals would come in an order
        // that changes from one process to the next.
        found.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(b.entry.popularity.total_cmp(&a.entry.popularity))
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        found.truncate(limit);
        found
    }

    /// The most popular entries all of whose qualifiers (artist, state, country) were
    /// heard among `words`: "rotsaf poland" still names a city in Poland.
    pub fn qualified_by(&self, words: &[String], limit: usize) -> Vec<Arc<SpokenEntry>> {
        let state = self.read();
        let entries: Vec<&Arc<SpokenEntry>> = state.entries.values().collect();
        let mut found: Vec<Arc<SpokenEntry>> = entries
            .par_iter()
            .filter(|e| {
                e.qualifiers
                    .iter()
                    .any(|group| group.iter().all(|q| words.contains(q)))
            })
            .map(|e| (*e).clone())
            .collect();
        found.sort_by(|a, b| b.popularity.total_cmp(&a.popularity).then(a.id.cmp(&b.id)));
        found.truncate(limit);
        found
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CatalogState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CatalogState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl CatalogState {
    fn tell(&self, change: &CatalogChange) {
        for follower in &self.followers {
            follower(change);
        }
    }
}

impl SpokenEntry {
    /// Indices of the `n` readings that sound most like `heard`, the closest first: the
    /// readings worth the speech model's time.
    pub fn readings_like(&self, heard: &SoundKey, n: usize) -> Vec<usize> {
        let mut best = vec![0f32; self.readings.len()];
        for (i, key) in &self.sound_keys {
            best[*i] = best[*i].max(heard.similarity(key, 0.0).unwrap_or(0.0));
        }
        let mut ranked: Vec<(usize, f32)> = best.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.into_iter().take(n).map(|(i, _)| i).collect()
    }

    /// The best similarity of the entry's readings to a sound key heard; `None` when
    /// none comes close.
    pub fn sound_similarity_to(&self, heard: &SoundKey) -> Option<f32> {
        self.sound_keys
            .iter()
            .filter_map(|(_, key)| heard.similarity(key, SOUND_FLOOR))
            .max_by(f32::total_cmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> SpokenEntry {
        spoken_forms(&CatalogDocument::from_json_str(json).unwrap())
    }

    #[test]
    fn names_are_said_as_people_say_them() {
        let godfather = entry(r#"{"id":"m","title":"The Godfather: Part II","category":"movie"}"#);
        assert!(
            godfather
                .names
                .contains(&"The Godfather Part Two".to_string()),
            "{:?}",
            godfather.names
        );
        let terminator =
            entry(r#"{"id":"t","title":"Terminator 2: Judgment Day","category":"movie"}"#);
        assert!(terminator
            .names
            .contains(&"Terminator Two Judgment Day".to_string()));
        let lodz = entry(r#"{"id":"c","title":"Łódź","category":"city","country":"Poland"}"#);
        assert_eq!(
            lodz.readings,
            ["Lodz", "Łódź", "Lodz, Poland", "Łódź, Poland"]
        );
        let moonlight = entry(
            r#"{"id":"s","title":"Piano Sonata No. 14 in C Sharp Minor, Op. 27, No. 2, \"Moonlight\": I. Adagio sostenuto","category":"song","artist":"Maurizio Pollini","body":"Written by Ludwig van Beethoven."}"#,
        );
        assert!(
            moonlight
                .names
                .contains(&"the Moonlight Sonata".to_string()),
            "{:?}",
            moonlight.names
        );
        assert!(moonlight
            .readings
            .contains(&"the Moonlight Sonata by Beethoven".to_string()));
        let acdc = entry(r#"{"id":"a","title":"Rock & Roll","category":"song","artist":"AC/DC"}"#);
        assert_eq!(acdc.readings, ["Rock and Roll", "Rock and Roll by AC/DC"]);
        let featuring = entry(
            r#"{"id":"f","title":"Losing My Religion","category":"song","artist":"R.E.M. Feat. Kate Pearson"}"#,
        );
        assert_eq!(
            featuring.readings,
            [
                "Losing My Religion",
                "Losing My Religion by R.E.M",
                "Losing My Religion by R.E.M. Feat. Kate Pearson"
            ]
        );
        assert_eq!(acdc.qualifiers, [["ac", "dc"]]);
    }

    #[test]
    fn a_name_is_found_inside_the_words_it_ran_into() {
        let words = |text: &str| -> Vec<String> { text.split(' ').map(String::from).collect() };
        let heard = SoundKey::new(&words("whether induced or if germany"));
        let dusseldorf = SoundKey::new(&words("dusseldorf"));
        let within = heard.similarity_within(&dusseldorf, WITHIN_FLOOR);
        assert!(
            within.is_some_and(|s| s >= WITHIN_FLOOR),
            "{heard:?} {dusseldorf:?}"
        );
        assert_eq!(heard.similarity(&dusseldorf, SOUND_FLOOR), None);
        let oslo = SoundKey::new(&words("oslo"));
        assert_eq!(
            heard.similarity_within(&oslo, WITHIN_FLOOR),
            None,
            "too short to place"
        );
        let unrelated = SoundKey::new(&words("thiruvananthapuram"));
        assert_eq!(heard.similarity_within(&unrelated, WITHIN_FLOOR), None);
    }

    #[test]
    fn sound_keys_cross_word_boundaries() {
        let words = |s: &str| analyze(s);
        let schenectady = entry(r#"{"id":"c","title":"Schenectady","category":"city"}"#);
        let heard = SoundKey::new(&words("scenic taddy"));
        assert!(
            schenectady.sound_similarity_to(&heard).is_some(),
            "{heard:?}"
        );
        let chicago = entry(r#"{"id":"d","title":"Chicago","category":"city"}"#);
        assert!(chicago.sound_similarity_to(&heard).is_none());
    }

    #[test]
    fn a_foreign_name_is_met_as_its_own_language_says_it() {
        let words = |s: &str| analyze(s);
        let szczecin = entry(r#"{"id":"c","title":"Szczecin","category":"city"}"#);
        // Polish "sz" and "cz" as an English listener writes them.
        let heard = SoundKey::new(&words("shchechin"));
        let english_only = SoundKey::new(&words("szczecin"));
        assert!(heard.similarity(&english_only, SOUND_FLOOR).is_none());
        assert!(
            szczecin.sound_similarity_to(&heard).is_some(),
            "{heard:?} against {:?}",
            szczecin.sound_keys
        );
        assert_eq!(szczecin.readings_like(&heard, 1), vec![0]);
    }

    /// A few code letters, so that random keys often come close to each other.
    const CODE_LETTERS: &[u8] = b"AKNSTX0P";

    /// A seeded stream of pseudo-random numbers (a linear congruential generator).
    fn random_numbers(seed: u64) -> impl FnMut() -> usize {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        }
    }

    /// Edits from `a` to `b` (or to its closest stretch), by the whole table.
    fn plain_edits(a: &[u8], b: &[u8], span: Span) -> usize {
        let mut previous: Vec<usize> = match span {
            Span::Whole => (0..=b.len()).collect(),
            Span::Stretch => vec![0; b.len() + 1],
        };
        for i in 1..=a.len() {
            let mut current = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                current[j] = (previous[j] + 1)
                    .min(current[j - 1] + 1)
                    .min(previous[j - 1] + cost);
            }
            previous = current;
        }
        match span {
            Span::Whole => previous[b.len()],
            Span::Stretch => previous.into_iter().min().unwrap_or(0),
        }
    }

    #[test]
    fn bit_parallel_edits_match_the_whole_table() {
        let mut next = random_numbers(11);
        let letter = |n: usize| CODE_LETTERS[n % CODE_LETTERS.len()];
        for _ in 0..5_000 {
            let a: Vec<u8> = (0..next() % (SOUND_KEY_LEN + 1))
                .map(|_| letter(next()))
                .collect();
            let b: Vec<u8> = (0..next() % (SOUND_KEY_LEN + 1))
                .map(|_| letter(next()))
                .collect();
            let limit = next() % 12;
            for span in [Span::Whole, Span::Stretch] {
                let plain = plain_edits(&a, &b, span);
                assert_eq!(
                    bounded_levenshtein(&a, &b, limit, span),
                    (plain <= limit).then_some(plain),
                    "{:?} {:?} {}",
                    String::from_utf8_lossy(&a),
                    String::from_utf8_lossy(&b),
                    span == Span::Whole
                );
            }
        }
    }

    #[test]
    fn the_letter_count_bound_never_rules_out_a_close_key() {
        // Keys and copies of them with a few random edits, so that many pairs are close.
        let mut next = random_numbers(7);
        let letter = |n: usize| CODE_LETTERS[n % CODE_LETTERS.len()];
        let key = |code: Vec<u8>| SoundKey::from_code(&code);
        let mut compared = 0;
        for _ in 0..5_000 {
            let original: Vec<u8> = (0..1 + next() % 12).map(|_| letter(next())).collect();
            let mut edited = original.clone();
            for _ in 0..next() % 5 {
                let at = next() % (edited.len() + 1);
                match next() % 3 {
                    0 => edited.insert(at, letter(next())),
                    1 if at < edited.len() => edited[at] = letter(next()),
                    _ if at < edited.len() && edited.len() > 1 => {
                        edited.remove(at);
                    }
                    _ => {}
                }
            }
            let (a, b) = (key(original), key(edited));
            let longest = a.code().len().max(b.code().len());
            let limit = ((1.0 - SOUND_FLOOR) * longest as f32).floor() as usize;
            let plain = Some(plain_edits(a.code(), b.code(), Span::Whole))
                .filter(|&edits| edits <= limit)
                .map(|edits| 1.0 - edits as f32 / longest as f32);
            assert_eq!(a.similarity(&b, SOUND_FLOOR), plain, "{a:?} {b:?}");
            compared += usize::from(plain.is_some());
        }
        assert!(
            compared > 100,
            "too few close pairs to test the bound: {compared}"
        );
    }

    #[test]
    fn followers_see_every_committed_change_once() {
        let catalog = SpokenCatalog::default();
        let doc = |id: &str, title: &str| {
            CatalogDocument::from_json_str(&format!(
                r#"{{"id":"{id}","title":"{title}","category":"movie"}}"#
            ))
            .unwrap()
        };
        catalog.upsert(&[doc("a", "Alien")]);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let held = catalog.follow(move |change| {
            log.lock().unwrap().push(match change {
                CatalogChange::Added(e) => format!("+{}", e.names[0]),
                CatalogChange::Removed(e) => format!("-{}", e.names[0]),
            })
        });
        assert_eq!(held.len(), 1);
        catalog.upsert(&[doc("a", "Aliens"), doc("b", "Brazil")]);
        catalog.remove("b");
        catalog.remove("missing");
        assert_eq!(
            *seen.lock().unwrap(),
            ["-Alien", "+Aliens", "+Brazil", "-Brazil"]
        );
    }
}
