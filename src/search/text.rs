//! Text analysis shared by documents and queries, so both sides meet in one form: ASCII
//! folded, lowercase, punctuation gone, apostrophes dropped ("Schindler's" = schindlers),
//! and numbers written as digits whether they were spelled ("part two", "nineteen eighty
//! four") or written as Roman numerals ("Part II").

use super::numbers::{roman_value, tens, unit};

/// Words of a text in the shared form.
pub fn analyze(text: &str) -> Vec<String> {
    let folded = deunicode::deunicode(text).to_lowercase();
    let mut words = Vec::new();
    let mut current = String::new();
    for c in folded.chars() {
        if c.is_ascii_alphanumeric() {
            current.push(c);
        } else if c == '\'' || c == '`' {
            // Apostrophes join: "what's" -> "whats", "o'mine" -> "omine".
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    numbers_to_digits(words)
}

/// Roman numerals from 2 to 39 ("I", "V" and "X" alone are too often letters).
fn roman(word: &str) -> Option<u64> {
    (word.len() >= 2).then(|| roman_value(word)).flatten()
}

/// A number below 100 spelled in one or two words ("seven", "twenty one"), and how many
/// words it took.
fn small_number(words: &[String]) -> Option<(u64, usize)> {
    let first = words.first()?;
    if let Some(t) = tens(first) {
        if let Some(u) = words
            .get(1)
            .and_then(|w| unit(w))
            .filter(|&u| (1..10).contains(&u))
        {
            return Some((t + u, 2));
        }
        return Some((t, 1));
    }
    // "oh" is a digit only inside a number ("nineteen oh five").
    unit(first).filter(|_| first != "oh").map(|u| (u, 1))
}

/// A spelled number starting at `words[0]`: its value and word count.
fn spelled_number(words: &[String]) -> Option<(u64, usize)> {
    let (first, mut used) = small_number(words)?;
    // Year style: "nineteen eighty four", "nineteen oh five".
    if (10..100).contains(&first) {
        let rest = &words[used..];
        if rest.first().map(String::as_str) == Some("oh") {
            if let Some(u) = rest.get(1).and_then(|w| unit(w)).filter(|&u| u < 10) {
                return Some((first * 100 + u, used + 2));
            }
        }
        if let Some((second, n)) = small_number(rest).filter(|&(v, _)| v >= 10) {
            return Some((first * 100 + second, used + n));
        }
    }
    let mut total = 0;
    let mut current = first;
    loop {
        match words.get(used).map(String::as_str) {
            Some("hundred") if current < 100 => {
                current *= 100;
                used += 1;
            }
            Some("thousand") => {
                total += current.max(1) * 1000;
                current = 0;
                used += 1;
            }
            _ => break,
        }
        let skip_and = usize::from(words.get(used).map(String::as_str) == Some("and"));
        match small_number(&words[(used + skip_and).min(words.len())..]) {
            Some((v, n)) => {
                current += v;
                used += skip_and + n;
            }
            None => break,
        }
    }
    Some((total + current, used))
}

fn numbers_to_digits(words: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if let Some((value, used)) = spelled_number(&words[i..]) {
            out.push(value.to_string());
            i += used;
        } else if let Some(value) = roman(&words[i]) {
            out.push(value.to_string());
            i += 1;
        } else {
            out.push(words[i].clone());
            i += 1;
        }
    }
    out
}

/// Edits allowed when matching a word of this length fuzzily: none for short words,
/// where one edit makes another word, one from 5 letters, two from 8.
pub fn fuzzy_distance(word: &str) -> u8 {
    match word.len() {
        0..=4 => 0,
        5..=7 => 1,
        _ => 2,
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment), giving up
/// above `limit`. Runs on every catalog word of a similar length per query word, so it is
/// rapidfuzz's bit-parallel distance with a cutoff; words are ASCII after [`analyze`].
pub fn edit_distance(a: &str, b: &str, limit: u8) -> Option<u8> {
    if a.len().abs_diff(b.len()) > usize::from(limit) || b.len() >= MAX_FUZZY_LEN {
        return (a == b).then_some(0);
    }
    let cutoff = rapidfuzz::distance::osa::Args::default().score_cutoff(usize::from(limit));
    rapidfuzz::distance::osa::distance_with_args(a.bytes(), b.bytes(), &cutoff)
        .map(|edits| edits as u8)
}

/// Longest word compared fuzzily; longer ones match only exactly.
const MAX_FUZZY_LEN: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> String {
        analyze(text).join(" ")
    }

    #[test]
    fn folding_and_punctuation() {
        assert_eq!(n("Reykjavík"), "reykjavik");
        assert_eq!(n("Schindler's List"), "schindlers list");
        assert_eq!(n("AC/DC"), "ac dc");
        assert_eq!(n("Düsseldorf, Germany"), "dusseldorf germany");
    }

    #[test]
    fn numbers_meet_as_digits() {
        assert_eq!(n("the godfather part two"), "the godfather part 2");
        assert_eq!(n("The Godfather Part II"), "the godfather part 2");
        assert_eq!(n("nineteen eighty four"), "1984");
        assert_eq!(n("nineteen oh five"), "1905");
        assert_eq!(n("apollo thirteen"), "apollo 13");
        assert_eq!(n("twenty one pilots"), "21 pilots");
        assert_eq!(n("one hundred and one dalmatians"), "101 dalmatians");
        assert_eq!(
            n("two thousand and one a space odyssey"),
            "2001 a space odyssey"
        );
        assert_eq!(n("Rocky IV"), "rocky 4");
        assert_eq!(n("malcolm x"), "malcolm x");
        assert_eq!(n("oh brother"), "oh brother");
    }

    #[test]
    fn edit_distance_is_bounded() {
        assert_eq!(edit_distance("reykyavik", "reykjavik", 2), Some(1));
        assert_eq!(edit_distance("teh", "the", 1), Some(1));
        assert_eq!(edit_distance("abc", "xyz", 2), None);
        assert_eq!(edit_distance("kitten", "sitting", 3), Some(3));
    }
}
