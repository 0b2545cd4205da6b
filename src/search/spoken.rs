//! How people say catalog entries. [`spoken_forms`] turns a document into the names a
//! person would say ("The Godfather: Part II" -> "The Godfather Part Two", "Piano Sonata
//! No. 14 ..., \"Moonlight\": ..." -> "the Moonlight Sonata", "Kraków" -> "Krakow") and
//! the readings that qualify them ("Rehab by Amy Winehouse", "Springfield, Illinois"),
//! cased as written, since the speech model scores them as text; each reading with its
//! sound keys ([`super::sound`]).

use super::document::CatalogDocument;
use super::numbers::{number_words, roman_value};
use super::sound::{SoundKey, SOUND_FLOOR};
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
    pub(super) sound_keys: Vec<(usize, SoundKey)>,
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
}
