//! What a spoken query asks for, once its carrier phrase is taken off: "play kashmir by
//! led zeppelin" is a *song* named "kashmir by led zeppelin", "directions to springfield
//! illinois" a *city*. The phrase list is data ([`CarrierPhrases`]): the built-in one
//! covers voice commands in general, and a deployment can replace it with a TOML file
//! (`--carrier-phrases FILE`) of the same shape:
//!
//! ```toml
//! [[prefixes]]
//! phrase = "play"
//! category = "song"
//!
//! [[suffixes]]
//! phrase = "on the map"
//! category = "city"
//! ```

use serde::Deserialize;

use super::text::{analyze, edit_distance, fuzzy_distance};
use super::SearchError;

/// One carrier phrase and the kind of thing it asks for, if any.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CarrierPhrase {
    pub phrase: String,
    /// The catalog category it prefers ("song", "movie", "city", "region"), or none.
    #[serde(default)]
    pub category: Option<String>,
}

/// The phrase list as a file gives it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CarrierPhraseList {
    pub prefixes: Vec<CarrierPhrase>,
    pub suffixes: Vec<CarrierPhrase>,
}

/// The phrases stripped from the start and the end of a query, analyzed once when the
/// list is built rather than for every query.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "CarrierPhraseList")]
pub struct CarrierPhrases {
    prefixes: Vec<Analyzed>,
    suffixes: Vec<Analyzed>,
}

/// A carrier phrase in analyzed form.
#[derive(Debug, Clone, PartialEq)]
struct Analyzed {
    words: Vec<String>,
    category: Option<String>,
}

impl From<CarrierPhraseList> for CarrierPhrases {
    fn from(list: CarrierPhraseList) -> Self {
        let analyzed = |phrases: Vec<CarrierPhrase>| {
            phrases
                .into_iter()
                .map(|p| Analyzed {
                    words: analyze(&p.phrase),
                    category: p.category,
                })
                .filter(|p| !p.words.is_empty())
                .collect()
        };
        Self {
            prefixes: analyzed(list.prefixes),
            suffixes: analyzed(list.suffixes),
        }
    }
}

/// A query with its carrier phrases taken off.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// The words left to search for; never empty for a non-empty query.
    pub words: Vec<String>,
    /// The category the phrasing prefers; a preference, never a filter.
    pub category: Option<String>,
    /// Analyzed words taken off the start and the end.
    pub prefix_words: usize,
    pub suffix_words: usize,
}

/// A transcript cut where its carrier phrases end, in its own words and spelling:
/// "Directions to Scenic Taddy." is "Directions to" + "Scenic Taddy" + ".". Another
/// reading of the name goes between `prefix` and `suffix`.
#[derive(Debug, Clone, PartialEq)]
pub struct CarrierSplit {
    pub prefix: String,
    /// The name as heard; empty when the transcript had no words.
    pub slot: String,
    /// Carrier words after the name, and the closing punctuation.
    pub suffix: String,
    pub intent: Intent,
}

const SONG: &str = "song";
const MOVIE: &str = "movie";
const CITY: &str = "city";
const REGION: &str = "region";

/// The built-in phrases: (phrase, category).
const PREFIXES: &[(&str, Option<&str>)] = &[
    // Politeness and wake words, no preference.
    ("hey", None),
    ("ok", None),
    ("okay", None),
    ("please", None),
    ("can you", None),
    ("could you", None),
    ("would you", None),
    ("will you", None),
    ("i want to", None),
    ("i wanna", None),
    ("i would like to", None),
    ("i'd like to", None),
    ("let's", None),
    ("go ahead and", None),
    ("search for", None),
    ("search", None),
    ("find me", None),
    ("find", None),
    ("look up", None),
    ("show me", None),
    ("tell me about", None),
    ("what is", None),
    ("what's", None),
    ("who is", None),
    ("info on", None),
    ("information about", None),
    // Music.
    ("play", Some(SONG)),
    ("play me", Some(SONG)),
    ("play the song", Some(SONG)),
    ("play the track", Some(SONG)),
    ("play some", Some(SONG)),
    ("play music by", Some(SONG)),
    ("put on", Some(SONG)),
    ("listen to", Some(SONG)),
    ("hear", Some(SONG)),
    ("let me hear", Some(SONG)),
    ("start playing", Some(SONG)),
    ("queue", Some(SONG)),
    ("queue up", Some(SONG)),
    ("shuffle", Some(SONG)),
    ("the song", Some(SONG)),
    ("the track", Some(SONG)),
    ("the album", Some(SONG)),
    ("song", Some(SONG)),
    ("music", Some(SONG)),
    // Films.
    ("watch", Some(MOVIE)),
    ("stream", Some(MOVIE)),
    ("the movie", Some(MOVIE)),
    ("the film", Some(MOVIE)),
    ("movie", Some(MOVIE)),
    ("film", Some(MOVIE)),
    ("trailer for", Some(MOVIE)),
    ("the trailer for", Some(MOVIE)),
    ("showtimes for", Some(MOVIE)),
    ("rent", Some(MOVIE)),
    // Places.
    ("directions to", Some(CITY)),
    ("get directions to", Some(CITY)),
    ("navigate to", Some(CITY)),
    ("take me to", Some(CITY)),
    ("drive to", Some(CITY)),
    ("how do i get to", Some(CITY)),
    ("how far is", Some(CITY)),
    ("route to", Some(CITY)),
    ("weather in", Some(CITY)),
    ("weather for", Some(CITY)),
    ("the weather in", Some(CITY)),
    ("the weather for", Some(CITY)),
    ("forecast for", Some(CITY)),
    ("the forecast for", Some(CITY)),
    ("what's the weather like in", Some(CITY)),
    ("what's the weather in", Some(CITY)),
    ("how's the weather in", Some(CITY)),
    ("temperature in", Some(CITY)),
    ("hotels in", Some(CITY)),
    ("hotels near", Some(CITY)),
    ("restaurants in", Some(CITY)),
    ("things to do in", Some(CITY)),
    ("flights to", Some(CITY)),
    ("flight to", Some(CITY)),
    ("population of", Some(CITY)),
    ("the population of", Some(CITY)),
    ("time in", Some(CITY)),
    ("the time in", Some(CITY)),
    ("where is", Some(CITY)),
    ("map of", Some(CITY)),
    ("a map of", Some(CITY)),
    ("the city of", Some(CITY)),
    ("city of", Some(CITY)),
    // Regions.
    ("the state of", Some(REGION)),
    ("state of", Some(REGION)),
    ("the province of", Some(REGION)),
];

const SUFFIXES: &[(&str, Option<&str>)] = &[
    ("please", None),
    ("for me", None),
    ("now", None),
    ("right now", None),
    ("on the map", Some(CITY)),
    ("on a map", Some(CITY)),
    ("on maps", Some(CITY)),
    ("weather", Some(CITY)),
    ("the movie", Some(MOVIE)),
    ("movie", Some(MOVIE)),
    ("the film", Some(MOVIE)),
    ("the song", Some(SONG)),
    ("song", Some(SONG)),
];

impl Default for CarrierPhrases {
    fn default() -> Self {
        let build = |list: &[(&str, Option<&str>)]| {
            list.iter()
                .map(|(phrase, category)| CarrierPhrase {
                    phrase: phrase.to_string(),
                    category: category.map(str::to_string),
                })
                .collect()
        };
        CarrierPhraseList {
            prefixes: build(PREFIXES),
            suffixes: build(SUFFIXES),
        }
        .into()
    }
}

impl CarrierPhrases {
    /// The built-in list, or the one in a TOML file when a path is given.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, SearchError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| SearchError::Io {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SearchError::CarrierPhrases {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Every word that occurs in some carrier phrase.
    pub fn words(&self) -> impl Iterator<Item = String> + '_ {
        self.prefixes
            .iter()
            .chain(&self.suffixes)
            .flat_map(|p| p.words.iter().cloned())
    }

    /// Interprets a query given as text.
    pub fn interpret(&self, query: &str) -> Intent {
        self.interpret_words(analyze(query))
    }

    /// Takes carrier phrases off both ends, longest first and repeatedly, but never the
    /// last word; the most specific phrase's category wins ("play the movie X": movie).
    /// Long phrase words match within the fuzzy distance ("waether in" = "weather in"),
    /// since the recognizer misspells them too.
    pub fn interpret_words(&self, mut words: Vec<String>) -> Intent {
        let mut category: Option<&str> = None;
        let (mut prefix_words, mut suffix_words) = (0, 0);
        loop {
            let prefix = self
                .prefixes
                .iter()
                .filter(|p| {
                    p.words.len() < words.len() && same_words(&words[..p.words.len()], &p.words)
                })
                .max_by_key(|p| p.words.len());
            let suffix = self
                .suffixes
                .iter()
                .filter(|p| {
                    p.words.len() < words.len()
                        && same_words(&words[words.len() - p.words.len()..], &p.words)
                })
                .max_by_key(|p| p.words.len());
            match (prefix, suffix) {
                (Some(p), _) => {
                    words.drain(..p.words.len());
                    prefix_words += p.words.len();
                    category = p.category.as_deref().or(category);
                }
                (None, Some(s)) => {
                    words.truncate(words.len() - s.words.len());
                    suffix_words += s.words.len();
                    category = category.or(s.category.as_deref());
                }
                (None, None) => break,
            }
        }
        // "X by Y" names a work and its artist.
        if category.is_none()
            && words.len() >= 3
            && words[1..words.len() - 1].contains(&"by".into())
        {
            category = Some(SONG);
        }
        Intent {
            words,
            category: category.map(str::to_string),
            prefix_words,
            suffix_words,
        }
    }

    /// Cuts a transcript into carrier prefix, name and carrier suffix, keeping its own
    /// spelling: each whitespace-separated word counts for the analyzed words it gives.
    pub fn split(&self, text: &str) -> CarrierSplit {
        let raw: Vec<&str> = text.split_whitespace().collect();
        let counts: Vec<usize> = raw.iter().map(|w| analyze(w).len()).collect();
        let intent = self.interpret(text);
        // Raw words whose analyzed words lie wholly in the first `n` analyzed ones.
        let covering = |n: usize, counts: &mut dyn Iterator<Item = usize>| {
            let mut taken = 0;
            let mut words = 0;
            for count in counts {
                if taken + count > n {
                    break;
                }
                taken += count;
                words += 1;
                if taken == n {
                    break;
                }
            }
            words
        };
        let front = if intent.prefix_words == 0 {
            0
        } else {
            covering(intent.prefix_words, &mut counts.iter().copied())
        };
        let back = if intent.suffix_words == 0 {
            0
        } else {
            covering(intent.suffix_words, &mut counts.iter().rev().copied())
        };
        let back = back.min(raw.len() - front);
        let mut slot = raw[front..raw.len() - back].join(" ");
        let mut suffix = raw[raw.len() - back..].join(" ");
        if back == 0 {
            // The closing punctuation stays after whichever reading replaces the name.
            let kept = slot.trim_end_matches(['.', '?', '!', ',']).len();
            suffix = slot[kept..].to_string();
            slot.truncate(kept);
        } else {
            suffix = format!(" {suffix}");
        }
        CarrierSplit {
            prefix: raw[..front].join(" "),
            slot,
            suffix,
            intent,
        }
    }
}

/// Short words a recognizer swaps for one another inside a phrase ("hotels and" for
/// "hotels in").
const SWAPPED_WORDS: &[&str] = &["in", "on", "and", "an", "at", "to", "of", "for"];

/// Whether spoken words match phrase words, allowing misspellings of long words and,
/// after a phrase's first word, swapped short words.
fn same_words(spoken: &[String], phrase: &[String]) -> bool {
    spoken.iter().zip(phrase).enumerate().all(|(i, (s, p))| {
        s == p
            || edit_distance(s, p, fuzzy_distance(p).min(1)).is_some()
            || (i > 0 && SWAPPED_WORDS.contains(&s.as_str()) && SWAPPED_WORDS.contains(&p.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interpret(query: &str) -> (String, Option<String>) {
        let intent = CarrierPhrases::default().interpret(query);
        (intent.words.join(" "), intent.category)
    }

    #[test]
    fn carrier_phrases_come_off_with_their_intent() {
        assert_eq!(
            interpret("play kashmir by led zeppelin"),
            ("kashmir by led zeppelin".into(), Some("song".into()))
        );
        assert_eq!(
            interpret("Watch the movie Casablanca"),
            ("casablanca".into(), Some("movie".into()))
        );
        assert_eq!(
            interpret("what's the weather in reykjavik"),
            ("reykjavik".into(), Some("city".into()))
        );
        assert_eq!(
            interpret("show me kalamazoo michigan on the map"),
            ("kalamazoo michigan".into(), Some("city".into()))
        );
        assert_eq!(
            interpret("tell me about the state of montana"),
            ("montana".into(), Some("region".into()))
        );
        assert_eq!(
            interpret("hey can you navigate to boston please"),
            ("boston".into(), Some("city".into()))
        );
        assert_eq!(
            interpret("show me the shawshank redemption"),
            ("the shawshank redemption".into(), None)
        );
        assert_eq!(
            interpret("waether in chicago"),
            ("chicago".into(), Some("city".into()))
        );
        assert_eq!(
            interpret("hotels and marseille france"),
            ("marseille france".into(), Some("city".into()))
        );
    }

    #[test]
    fn a_transcript_splits_around_its_name_in_its_own_spelling() {
        let carriers = CarrierPhrases::default();
        let split = carriers.split("Show me Scenic Taddy on the map.");
        assert_eq!(
            (
                split.prefix.as_str(),
                split.slot.as_str(),
                split.suffix.as_str()
            ),
            ("Show me", "Scenic Taddy", " on the map.")
        );
        let split = carriers.split("Play Let There Be Rock by AC/DC.");
        assert_eq!(
            (
                split.prefix.as_str(),
                split.slot.as_str(),
                split.suffix.as_str()
            ),
            ("Play", "Let There Be Rock by AC/DC", ".")
        );
        let split = carriers.split("Schenectady");
        assert_eq!(
            (
                split.prefix.as_str(),
                split.slot.as_str(),
                split.suffix.as_str()
            ),
            ("", "Schenectady", "")
        );
        assert_eq!(split.intent.category, None);
    }

    #[test]
    fn a_bad_phrase_file_says_which_file_and_why() {
        let file = std::env::temp_dir().join(format!("carriers-{}.toml", std::process::id()));
        std::fs::write(&file, "[[prefixes]]\nphrase = 3\n").unwrap();
        let error = CarrierPhrases::load(Some(&file)).unwrap_err();
        std::fs::remove_file(&file).ok();
        assert!(
            matches!(&error, SearchError::CarrierPhrases { path, .. } if *path == file),
            "{error}"
        );
        assert!(error.to_string().contains("phrase"), "{error}");
    }

    #[test]
    fn a_query_is_never_stripped_to_nothing() {
        assert_eq!(interpret("play"), ("play".into(), None));
        for query in [
            "the movie",
            "watch movie",
            "please play",
            "show me on the map",
        ] {
            assert!(!interpret(query).0.is_empty(), "{query}");
        }
    }
}
