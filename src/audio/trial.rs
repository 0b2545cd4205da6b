//! The length check of audio that compresses past telling its length from its bytes
//! (FLAC, WebM Opus): the utterance so far is decoded again each time the bytes measured
//! have doubled, and once more when it is whole, each trial stopping just past the limit.
//! A small stream that expands past the limit is so refused without ever being decoded
//! past it, and the work stays in proportion to the bytes.

use super::buffer::MAX_DECODED_SAMPLES;
use super::{AudioError, Decoded};

/// Most samples a decode of `channels` at `rate` may give: never past the byte limit's
/// worth ([`MAX_DECODED_SAMPLES`]), nor, for a trial, past one frame beyond `seconds`.
pub fn most_samples(rate: u32, channels: usize, seconds: Option<f64>) -> usize {
    let frames = seconds.map_or(usize::MAX, |seconds| (seconds * rate as f64) as usize + 1);
    frames.saturating_mul(channels).min(MAX_DECODED_SAMPLES)
}

/// When the next trial is due, and the most audio the trials so far found.
#[derive(Debug, Clone)]
pub struct TrialDecodes {
    next_at: usize,
    seconds: f64,
}

impl TrialDecodes {
    /// The first trial comes once `first_at` bytes are measured.
    pub fn new(first_at: usize) -> Self {
        Self {
            next_at: first_at,
            seconds: 0.0,
        }
    }

    /// Runs `trial` (given whether the bytes are only a prefix) when one is due: `measured`
    /// bytes (`None` while they cannot be measured yet) reached the mark, or this is the
    /// `last` check. A prefix whose headers have not all arrived has no audio yet (`Empty`).
    pub fn run(
        &mut self,
        measured: Option<usize>,
        last: bool,
        trial: impl FnOnce(bool) -> Result<Decoded, AudioError>,
    ) -> Result<(), AudioError> {
        if !last && measured.is_none_or(|bytes| bytes < self.next_at) {
            return Ok(());
        }
        self.next_at = measured.unwrap_or(0).saturating_mul(2);
        match trial(!last) {
            Ok(decoded) => self.seconds = self.seconds.max(decoded.duration_seconds()),
            Err(AudioError::Empty) if !last => {}
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Also count a length the stream declares.
    pub fn declared(&mut self, seconds: f64) {
        self.seconds = self.seconds.max(seconds);
    }

    /// The most audio found or declared so far, in seconds.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}
