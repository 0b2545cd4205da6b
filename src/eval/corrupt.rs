//! Deterministic corruption of reference transcripts the way a recognizer errs: one or
//! two letters of a name changed, a word split or two merged, a homophone. The same seed
//! and text always give the same corruption, so figures can be reproduced.

/// Words a recognizer swaps for one another.
const HOMOPHONES: &[(&str, &str)] = &[
    ("to", "two"),
    ("two", "to"),
    ("for", "four"),
    ("four", "for"),
    ("one", "won"),
    ("night", "knight"),
    ("knight", "night"),
    ("son", "sun"),
    ("sun", "son"),
    ("hole", "whole"),
    ("whole", "hole"),
    ("red", "read"),
    ("blue", "blew"),
    ("by", "buy"),
    ("there", "their"),
    ("rain", "reign"),
    ("sea", "see"),
    ("road", "rode"),
    ("time", "thyme"),
    ("new", "knew"),
    ("eye", "i"),
    ("heart", "hart"),
    ("rock", "roc"),
    ("rose", "rows"),
    ("hotels", "hotel's"),
];

/// Sound-preserving respellings, the way a recognizer writes names it does not know.
const RESPELLINGS: &[(&str, &str)] = &[
    ("ph", "f"),
    ("ck", "k"),
    ("c", "k"),
    ("ee", "ea"),
    ("ou", "oo"),
    ("y", "i"),
    ("ie", "y"),
    ("sch", "sh"),
    ("tch", "ch"),
    ("ll", "l"),
    ("ss", "s"),
    ("z", "s"),
    ("j", "y"),
];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, text: &str) -> Self {
        let mixed = text.bytes().fold(seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Self(mixed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Returns `text` with one recognizer-like error, chosen from `seed` and the text.
pub fn corrupt(text: &str, seed: u64) -> String {
    let mut rng = Rng::new(seed, text);
    let mut words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return text.to_string();
    }
    // Names are the long words; carrier words are short and common.
    let long: Vec<usize> = (0..words.len()).filter(|&i| words[i].len() >= 5).collect();
    let homophones: Vec<usize> = (0..words.len())
        .filter(|&i| HOMOPHONES.iter().any(|(w, _)| *w == words[i]))
        .collect();
    for _ in 0..8 {
        match rng.below(5) {
            // One or two letters changed in a name.
            0 | 1 if !long.is_empty() => {
                let i = long[rng.below(long.len())];
                let edits = 1 + rng.below(2);
                words[i] = misspell(&words[i], edits, &mut rng);
                return words.join(" ");
            }
            // A word split in two.
            2 if !long.is_empty() => {
                let i = long[rng.below(long.len())];
                let at = 2 + rng.below(words[i].len() - 3);
                let (a, b) = words[i].split_at(at);
                words[i] = format!("{a} {b}");
                return words.join(" ");
            }
            // Two words merged.
            3 if words.len() >= 2 => {
                let i = rng.below(words.len() - 1);
                let next = words.remove(i + 1);
                words[i].push_str(&next);
                return words.join(" ");
            }
            4 if !homophones.is_empty() => {
                let i = homophones[rng.below(homophones.len())];
                let (_, replacement) = HOMOPHONES
                    .iter()
                    .find(|(w, _)| *w == words[i])
                    .expect("filtered above");
                words[i] = replacement.to_string();
                return words.join(" ");
            }
            _ => {}
        }
    }
    words.join(" ")
}

/// Changes `edits` letters: a respelling when one applies, else a substitution,
/// deletion or swap of neighbours.
fn misspell(word: &str, edits: usize, rng: &mut Rng) -> String {
    let mut out = word.to_string();
    for _ in 0..edits {
        let respellings: Vec<_> = RESPELLINGS
            .iter()
            .filter(|(from, _)| out.contains(from))
            .collect();
        if !respellings.is_empty() && rng.below(2) == 0 {
            let (from, to) = respellings[rng.below(respellings.len())];
            out = out.replacen(from, to, 1);
            continue;
        }
        let chars: Vec<char> = out.chars().collect();
        // Keep the first letter: recognizers rarely get the onset wrong.
        let i = 1 + rng.below(chars.len() - 1);
        let mut chars = chars;
        match rng.below(3) {
            0 => chars[i] = (b'a' + rng.below(26) as u8) as char,
            1 if chars.len() > 4 => {
                chars.remove(i);
            }
            _ if i + 1 < chars.len() => chars.swap(i, i + 1),
            _ => chars[i] = (b'a' + rng.below(26) as u8) as char,
        }
        out = chars.into_iter().collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_is_deterministic_and_changes_the_text() {
        let text = "directions to kalamazoo michigan";
        assert_eq!(corrupt(text, 7), corrupt(text, 7));
        let changed = (0..20).filter(|&seed| corrupt(text, seed) != text).count();
        assert!(changed >= 18, "only {changed} of 20 seeds changed the text");
    }
}
