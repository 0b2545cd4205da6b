//! Word times as openai-whisper finds them (`timing.py`): the decoder runs once more over
//! a window's text after the start sequence, the cross-attention of the model's
//! alignment heads says where in the audio each token looked, and dynamic time warping
//! over that picture gives each token its first audio position; a word starts where its
//! first token does and ends where the next word's starts. Only on request: it costs one
//! decoder pass per window.

use candle_core::Tensor;

use super::decode::start_sequence;
use super::model::{DecoderCache, Head, WhisperConfig};
use super::{AsrError, Whisper};

/// One word of the transcript and when it was said.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTime {
    pub word: String,
    /// Seconds from the start of the audio transcribed.
    pub start_seconds: f32,
    pub end_seconds: f32,
    /// Mean probability of the word's tokens as they were decoded, 0..1.
    pub confidence: f32,
}

/// Audio positions per second: the encoder halves the 100 feature frames a second.
const POSITIONS_PER_SECOND: f32 = 50.0;
/// Width of the median filter over each head's attention, in positions.
const MEDIAN_WIDTH: usize = 7;
/// Words no longer than this (seconds) set the typical duration the hacks below use.
const MAX_MEDIAN_SECONDS: f32 = 0.7;
/// Punctuation that joins the word after it, and that joins the word before it.
const PREPENDED: &str = "\"'“¿([{-";
const APPENDED: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_ENDS: &str = ".。!！?？";
/// Languages written without spaces: each character group is a word.
const UNSPACED_LANGUAGES: &[&str] = &["zh", "ja", "th", "lo", "my", "yue"];

/// A model as the table below tells it: decoder blocks, heads, and whether the
/// vocabulary is multilingual.
type ModelShape = (usize, usize, bool);

/// openai-whisper's alignment heads by model.
const ALIGNMENT_HEADS: &[(ModelShape, &[Head])] = &[
    (
        (4, 6, false),
        &[
            (1, 0),
            (2, 0),
            (2, 5),
            (3, 0),
            (3, 1),
            (3, 2),
            (3, 3),
            (3, 4),
        ],
    ),
    (
        (4, 6, true),
        &[(2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)],
    ),
    ((6, 8, false), &[(3, 3), (4, 7), (5, 1), (5, 5), (5, 7)]),
    (
        (6, 8, true),
        &[
            (3, 1),
            (4, 2),
            (4, 3),
            (4, 7),
            (5, 1),
            (5, 2),
            (5, 4),
            (5, 6),
        ],
    ),
];

/// The alignment heads of a model shaped as `config`: openai-whisper's for the sizes it
/// names, else (as it does for others) every head of the later half of the blocks.
pub(super) fn alignment_heads(config: &WhisperConfig, multilingual: bool) -> Vec<Head> {
    let shape = (
        config.decoder_layers,
        config.decoder_attention_heads,
        multilingual,
    );
    match ALIGNMENT_HEADS.iter().find(|(known, _)| *known == shape) {
        Some((_, heads)) => heads.to_vec(),
        None => (config.decoder_layers / 2..config.decoder_layers)
            .flat_map(|block| (0..config.decoder_attention_heads).map(move |head| (block, head)))
            .collect(),
    }
}

/// A window's decoded text to time: its text tokens (no timestamps) with the probability
/// each was decoded with.
pub(super) struct TimedText<'a> {
    pub tokens: &'a [u32],
    pub probs: &'a [f32],
    /// Feature frames of the window that hold audio.
    pub frames: usize,
    pub language: Option<u32>,
}

impl Whisper {
    /// The words of `text`, timed within the window whose audio `cache` holds.
    pub(super) fn word_times(
        &self,
        cache: &DecoderCache,
        text: &TimedText,
    ) -> Result<Vec<WordTime>, AsrError> {
        if text.tokens.is_empty() {
            return Ok(Vec::new());
        }
        let start = start_sequence(&self.special, &[], text.language, false);
        let mut sequence = start.clone();
        sequence.extend(text.tokens);
        sequence.push(self.special.end_of_text);
        let input = Tensor::new(sequence.as_slice(), &self.device)?.unsqueeze(0)?;
        let heads = &self.model.config.alignment_heads;
        let scores =
            self.model
                .decoder
                .cross_attention_scores(&input, &mut cache.audio_only(), heads)?;
        let positions = (text.frames / 2).max(1);
        let heads: Vec<Vec<Vec<f32>>> = scores
            .iter()
            .map(|scores| {
                let width = positions.min(scores.dim(1)?);
                scores.narrow(1, 0, width)?.to_vec2::<f32>()
            })
            .collect::<candle_core::Result<_>>()?;
        // From the row of no-timestamps (which predicts the first text token) to that of
        // the last text token (which predicts the end).
        let matrix = alignment_matrix(heads);
        let rows = &matrix[start.len() - 1..matrix.len() - 1];
        let entered = row_entry_positions(&dtw(rows));
        let words = self.split_words(text.tokens, &self.language_code(text.language))?;
        let mut timed = Vec::with_capacity(words.len());
        let mut first = 0;
        for (word, count) in words {
            let seconds = |token: usize| entered[token] as f32 / POSITIONS_PER_SECOND;
            let probs = &text.probs[first..first + count];
            timed.push(WordTime {
                word,
                start_seconds: seconds(first),
                end_seconds: seconds(first + count),
                confidence: probs.iter().sum::<f32>() / count as f32,
            });
            first += count;
        }
        let mut timed = merge_punctuation(timed);
        shorten_long_words(&mut timed);
        Ok(timed)
    }

    /// Words of the tokens as openai-whisper splits them: a token group that decodes to
    /// whole characters, joined to the word before unless it starts with a space or is
    /// punctuation; each with its token count.
    fn split_words(
        &self,
        tokens: &[u32],
        language: &str,
    ) -> Result<Vec<(String, usize)>, AsrError> {
        let decode = |tokens: &[u32]| {
            self.tokenizer
                .decode(tokens, false)
                .map_err(|e| AsrError::Tokenizer(e.to_string()))
        };
        let unspaced = UNSPACED_LANGUAGES.contains(&language);
        let mut words: Vec<(String, usize)> = Vec::new();
        let mut group = 0;
        for end in 1..=tokens.len() {
            let piece = decode(&tokens[group..end])?;
            // A character cut between tokens decodes as U+FFFD until it is whole.
            if piece.contains('\u{FFFD}') && end < tokens.len() {
                continue;
            }
            let count = end - group;
            group = end;
            let trimmed = piece.trim();
            let punctuation =
                !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_punctuation());
            match words.last_mut() {
                Some((word, tokens)) if !unspaced && !piece.starts_with(' ') && !punctuation => {
                    word.push_str(&piece);
                    *tokens += count;
                }
                _ => words.push((piece, count)),
            }
        }
        Ok(words)
    }
}

/// The alignment heads' attention combined as openai-whisper does: each head's softmax
/// over the audio, standardized per audio position across the tokens, median-filtered
/// along the audio, then averaged over the heads. `heads` holds per head the scores
/// [tokens][positions]; the result is [tokens][positions].
fn alignment_matrix(heads: Vec<Vec<Vec<f32>>>) -> Vec<Vec<f32>> {
    let mut sum: Vec<Vec<f32>> = Vec::new();
    let count = heads.len().max(1) as f32;
    for mut head in heads {
        head.iter_mut().for_each(|row| softmax(row));
        standardize_columns(&mut head);
        for row in &mut head {
            *row = median_filter(row, MEDIAN_WIDTH);
        }
        if sum.is_empty() {
            sum = head;
        } else {
            for (total, row) in sum.iter_mut().zip(&head) {
                total.iter_mut().zip(row).for_each(|(t, v)| *t += v);
            }
        }
    }
    sum.iter_mut()
        .for_each(|row| row.iter_mut().for_each(|v| *v /= count));
    sum
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for value in row.iter_mut() {
        *value = (*value - max).exp();
        total += *value;
    }
    row.iter_mut().for_each(|value| *value /= total);
}

/// Each column (audio position) to mean 0 and standard deviation 1 over the rows.
fn standardize_columns(rows: &mut [Vec<f32>]) {
    let Some(width) = rows.first().map(Vec::len) else {
        return;
    };
    let n = rows.len() as f32;
    for column in 0..width {
        let mean = rows.iter().map(|row| row[column]).sum::<f32>() / n;
        let variance = rows
            .iter()
            .map(|row| (row[column] - mean).powi(2))
            .sum::<f32>()
            / n;
        let deviation = variance.sqrt().max(f32::EPSILON);
        rows.iter_mut()
            .for_each(|row| row[column] = (row[column] - mean) / deviation);
    }
}

/// The running median of `width` (odd) values, the ends mirrored (numpy's "reflect");
/// a row too short to mirror is left as it is.
fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let pad = width / 2;
    if row.len() <= pad {
        return row.to_vec();
    }
    let at = |i: isize| {
        let last = row.len() as isize - 1;
        let mirrored = if i < 0 {
            -i
        } else if i > last {
            2 * last - i
        } else {
            i
        };
        row[mirrored as usize]
    };
    (0..row.len() as isize)
        .map(|center| {
            let mut window: Vec<f32> = (center - pad as isize..=center + pad as isize)
                .map(at)
                .collect();
            window.sort_by(f32::total_cmp);
            window[pad]
        })
        .collect()
}

/// The cheapest monotonic path through `-matrix` from its first cell to its last
/// (openai-whisper's `dtw_cpu`): the (row, column) pairs in order.
fn dtw(matrix: &[Vec<f32>]) -> Vec<(usize, usize)> {
    let rows = matrix.len();
    let columns = matrix.first().map_or(0, Vec::len);
    let mut cost = vec![vec![f32::INFINITY; columns + 1]; rows + 1];
    let mut trace = vec![vec![2u8; columns + 1]; rows + 1];
    cost[0][0] = 0.0;
    for j in 1..=columns {
        for i in 1..=rows {
            let (diagonal, up, left) = (cost[i - 1][j - 1], cost[i - 1][j], cost[i][j - 1]);
            let (best, step) = if diagonal < up && diagonal < left {
                (diagonal, 0)
            } else if up < diagonal && up < left {
                (up, 1)
            } else {
                (left, 2)
            };
            cost[i][j] = -matrix[i - 1][j - 1] + best;
            trace[i][j] = step;
        }
    }
    trace[0].iter_mut().for_each(|step| *step = 2);
    trace.iter_mut().for_each(|row| row[0] = 1);
    let (mut i, mut j) = (rows, columns);
    let mut path = Vec::with_capacity(rows + columns);
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        match trace[i][j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

/// For each row of a path, the column where the path first enters it.
fn row_entry_positions(path: &[(usize, usize)]) -> Vec<usize> {
    let mut entered = Vec::new();
    for &(row, column) in path {
        if row == entered.len() {
            entered.push(column);
        }
    }
    entered
}

/// Opening punctuation joins the word after it and closing punctuation the word before
/// it, each keeping that word's times (openai-whisper's `merge_punctuations`).
fn merge_punctuation(words: Vec<WordTime>) -> Vec<WordTime> {
    let is_in = |set: &str, word: &str| !word.is_empty() && set.contains(word);
    let mut merged: Vec<WordTime> = Vec::with_capacity(words.len());
    let mut opening = String::new();
    for mut word in words {
        let bare = word.word.trim();
        if word.word.starts_with(' ') && is_in(PREPENDED, bare) {
            opening.push_str(&word.word);
            continue;
        }
        word.word = std::mem::take(&mut opening) + &word.word;
        match merged.last_mut() {
            Some(previous) if !previous.word.ends_with(' ') && is_in(APPENDED, &word.word) => {
                previous.word.push_str(&word.word);
            }
            _ => merged.push(word),
        }
    }
    for word in &mut merged {
        word.word = word.word.trim().to_string();
    }
    merged.retain(|word| !word.word.is_empty());
    merged
}

/// openai-whisper's guards against words stretched over pauses: a word next to a
/// sentence end is cut to twice the typical word's length, and so is a first word that
/// starts long before the speech does.
fn shorten_long_words(words: &mut [WordTime]) {
    let mut durations: Vec<f32> = words
        .iter()
        .map(|w| w.end_seconds - w.start_seconds)
        .filter(|&d| d > 0.0)
        .collect();
    if durations.is_empty() {
        return;
    }
    durations.sort_by(f32::total_cmp);
    let middle = durations.len() / 2;
    let median = if durations.len().is_multiple_of(2) {
        (durations[middle - 1] + durations[middle]) / 2.0
    } else {
        durations[middle]
    }
    .min(MAX_MEDIAN_SECONDS);
    let longest = median * 2.0;
    let ends_sentence = |word: &WordTime| {
        word.word
            .chars()
            .last()
            .is_some_and(|c| SENTENCE_ENDS.contains(c))
    };
    for i in 1..words.len() {
        if words[i].end_seconds - words[i].start_seconds > longest && ends_sentence(&words[i - 1]) {
            words[i].start_seconds = words[i].end_seconds - longest;
        }
    }
    if let Some(first) = words.first_mut() {
        if first.end_seconds > median * 4.0 && first.end_seconds - first.start_seconds > longest {
            first.start_seconds = (first.end_seconds - longest).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, start: f32, end: f32) -> WordTime {
        WordTime {
            word: text.into(),
            start_seconds: start,
            end_seconds: end,
            confidence: 1.0,
        }
    }

    #[test]
    fn the_path_follows_the_bright_cells_and_each_row_is_entered_once() {
        // Row 0 bright at columns 0-1, row 1 at 2-3, row 2 at 4-5; dark cells cost.
        let matrix: Vec<Vec<f32>> = (0..3)
            .map(|row| {
                (0..6)
                    .map(|c| if c / 2 == row { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let path = dtw(&matrix);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 5)));
        assert!(path
            .windows(2)
            .all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
        assert_eq!(row_entry_positions(&path), vec![0, 2, 4]);
    }

    #[test]
    fn the_median_filter_mirrors_its_ends() {
        let filtered = median_filter(&[5.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0], 3);
        assert_eq!(filtered, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(median_filter(&[1.0, 2.0], 7), vec![1.0, 2.0]);
    }

    #[test]
    fn punctuation_joins_its_word_and_keeps_its_times() {
        let words = vec![
            word(" \"", 0.0, 0.1),
            word(" Hello", 0.1, 0.5),
            word(",", 0.5, 0.6),
            word(" world", 0.6, 1.0),
            word(".", 1.0, 1.1),
        ];
        let merged = merge_punctuation(words);
        let texts: Vec<&str> = merged.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(texts, vec!["\" Hello,", "world."]);
        assert_eq!((merged[0].start_seconds, merged[0].end_seconds), (0.1, 0.5));
        assert_eq!((merged[1].start_seconds, merged[1].end_seconds), (0.6, 1.0));
    }

    #[test]
    fn a_first_word_stretched_over_leading_silence_is_cut() {
        let mut words = vec![
            word("So", 0.0, 3.0),
            word("it", 3.0, 3.3),
            word("goes", 3.3, 3.6),
        ];
        shorten_long_words(&mut words);
        assert!((words[0].start_seconds - 2.4).abs() < 1e-4, "{words:?}");
    }
}
