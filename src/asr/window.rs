//! How much of Whisper's 30 s window the encoder computes.
//!
//! Whisper always hears 30 s: a 3 s query is a tenth speech and nine tenths zero
//! padding, and the encoder's cost grows with every position. The padding's states
//! depend little on the speech before them, so for a short utterance the encoder
//! computes the speech, [`TAIL_SECONDS`] of the padding after it, and at least
//! [`MIN_SECONDS`] in all; the rest of the window, keys and values of every block and the
//! output states, comes from one pass over silence made when the model loads
//! ([`ShortWindow`]), and so do the decoder's cross-attention keys and values of those
//! states, so a decoding projects only the positions computed. Cutting the window without that padding costs 5 or more WER
//! points; with it, dev WER and top-1 hold (docs/benchmarks.md, Speed). A repetition
//! loop, the way a cut window fails when the model misses where speech ends, sends the
//! window back to the encoder whole; an unlikely text, the way noise fails, does not, as
//! the whole window fares no better there.
//!
//! A silent frame's features are the window's floor, 8 (log10) below its loudest
//! feature, so one silent pass fits every window only if every window peaks at the same
//! level: a short window's features are shifted to [`PEAK`] first. Shifting Whisper's
//! log-mel features is a gain change, which the model was trained to take.

use candle_core::{Device, Tensor};

use super::mel::{HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use super::model::{CrossPadding, Decoder, DecoderCache, Encoder, Padding};

/// Whether the encoder may compute less than the whole window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderWindow {
    /// The speech and its padding tail, the rest from the silent pass, with the whole
    /// window as the fallback when a pass over it is a repetition loop.
    #[default]
    Short,
    /// Always all 30 s, as Whisper was trained.
    Full,
}

impl std::fmt::Display for EncoderWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Short => "short",
            Self::Full => "full",
        })
    }
}

impl std::str::FromStr for EncoderWindow {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "short" => Ok(Self::Short),
            "full" => Ok(Self::Full),
            _ => Err(format!("{text:?} is not an encoder window: short or full")),
        }
    }
}

/// Padding computed after the last sample of speech.
pub const TAIL_SECONDS: usize = 2;
/// Least audio computed, speech and padding: a margin above the shortest floor that kept
/// dev accuracy (docs/benchmarks.md), computing a fifth of the window for most queries.
pub const MIN_SECONDS: usize = 6;
/// The loudest feature of every short window (log10 mel energy 1.12, scaled as Whisper
/// scales it): the median peak of the dev set's speech after the front end's loudness
/// normalization, so the usual shift is small.
pub const PEAK: f32 = 1.28;

/// Feature frames of a second (two per encoder position).
const FRAMES_PER_SECOND: usize = SAMPLE_RATE / HOP_LENGTH;
/// Least frames computed.
const MIN_FRAMES: usize = MIN_SECONDS * FRAMES_PER_SECOND;

/// The silent pass a short window's encoding completes, and the decoder's
/// cross-attention keys and values of it.
pub struct ShortWindow {
    padding: Padding,
    cross: CrossPadding,
}

impl ShortWindow {
    /// Runs the encoder once over a silent window peaking at [`PEAK`].
    pub fn new(
        encoder: &Encoder,
        decoder: &Decoder,
        n_mels: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let silence = Tensor::full(PEAK - 2.0, (1, n_mels, N_FRAMES), device)?;
        let padding = encoder.padding(&silence, MIN_FRAMES / 2)?;
        let cross = decoder.cross_padding(&padding)?;
        Ok(Self { padding, cross })
    }

    /// The decoder's cache for `audio`, as [`ShortWindow::encode`] gave it from `frames`:
    /// the keys and values of the silent positions are the ones made at load.
    pub fn cache(
        &self,
        decoder: &Decoder,
        audio: &Tensor,
        frames: usize,
    ) -> candle_core::Result<DecoderCache> {
        decoder.cache_padded(audio, frames / 2, &self.cross)
    }

    /// Feature frames to compute for `samples` of speech: `None` when that is the whole
    /// window anyway.
    pub fn frames(samples: usize) -> Option<usize> {
        let frames = (samples.div_ceil(HOP_LENGTH) + TAIL_SECONDS * FRAMES_PER_SECOND)
            .max(MIN_FRAMES)
            .next_multiple_of(2);
        (frames < N_FRAMES).then_some(frames)
    }

    /// Audio states of the whole window [1, 1500, d_model] from the first `frames` of
    /// its features (`n_mels` rows of [`N_FRAMES`] values, as `mel` gives them), or
    /// `None` for a window without a sound, which has no peak to shift.
    pub fn encode(
        &self,
        encoder: &Encoder,
        features: &[f32],
        n_mels: usize,
        frames: usize,
        device: &Device,
    ) -> candle_core::Result<Option<Tensor>> {
        let loudest = features.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = features.iter().copied().fold(f32::INFINITY, f32::min);
        if loudest <= floor {
            return Ok(None);
        }
        let shift = PEAK - loudest;
        // The frame after the last computed one too: the convolutions look one ahead.
        let seen = frames + 2;
        let cut: Vec<f32> = features
            .chunks_exact(N_FRAMES)
            .flat_map(|row| row[..seen].iter().map(|value| value + shift))
            .collect();
        let mel = Tensor::from_vec(cut, (1, n_mels, seen), device)?;
        encoder
            .forward_padded(&mel, frames / 2, &self.padding)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_utterances_get_the_least_window_and_long_ones_all_of_it() {
        assert_eq!(ShortWindow::frames(SAMPLE_RATE), Some(MIN_FRAMES));
        assert_eq!(ShortWindow::frames(9 * SAMPLE_RATE), Some(1100));
        assert_eq!(ShortWindow::frames(9 * SAMPLE_RATE + 1), Some(1102));
        assert_eq!(ShortWindow::frames(28 * SAMPLE_RATE), None);
        assert_eq!(ShortWindow::frames(30 * SAMPLE_RATE), None);
    }
}
