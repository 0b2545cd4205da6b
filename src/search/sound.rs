//! Sound keys: how words sound, run together, as Double Metaphone codes, and how close
//! two keys are by a bounded edit distance. The one home of Double Metaphone for the
//! query side ([`phonetic_codes`] of a word, indexed with the catalog) and the catalog
//! side ([`SoundKey`] of a reading, scanned at recognition).

use rphonetic::{DoubleMetaphone, DoubleMetaphoneResult};

/// Longest sound key compared, in code letters.
pub(super) const SOUND_KEY_LEN: usize = 24;
/// Sound similarity below which an entry is not a sound-alike.
pub(super) const SOUND_FLOOR: f32 = 0.6;
/// The same for a name found inside what was heard, where the stretch it matches is
/// free to start and end anywhere, so the match must be closer.
pub(super) const WITHIN_FLOOR: f32 = 0.8;
/// Code letters a name needs to be placed inside what was heard by sound alone.
const MIN_PLACED_LEN: usize = 5;

/// Sound-alike codes of a word (Double Metaphone, primary and alternate), so that
/// "chaikovsky" meets "tchaikovsky". Digits have no sound code.
pub fn phonetic_codes(word: &str) -> Vec<String> {
    if word.len() < 3 || word.chars().any(|c| c.is_ascii_digit()) {
        return Vec::new();
    }
    let encoder = DoubleMetaphone::new(Some(8));
    let result = encoder.double_metaphone(word);
    let mut codes = vec![result.primary()];
    if result.alternate() != result.primary() {
        codes.push(result.alternate());
    }
    codes.retain(|c| !c.is_empty());
    codes
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
    pub(super) fn similarity(&self, other: &SoundKey, floor: f32) -> Option<f32> {
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
    pub(super) fn similarity_within(&self, name: &SoundKey, floor: f32) -> Option<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn phonetic_key(word: &str) -> String {
        phonetic_codes(word).into_iter().next().unwrap_or_default()
    }

    #[test]
    fn sound_alikes_share_a_code() {
        assert_eq!(phonetic_key("chaikovsky"), phonetic_key("tchaikovsky"));
        assert_eq!(phonetic_key("reykyavik"), phonetic_key("reykjavik"));
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
}
