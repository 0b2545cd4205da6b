//! The length check of audio that compresses past telling its length from its bytes
//! (FLAC, WebM Opus): while it streams, the utterance so far is read again each time the
//! bytes measured have doubled, its packets' lengths added up from their headers without
//! decoding them, each trial stopping just past the limit; once whole, its one decode
//! ([`crate::audio::decode_within`]), on a worker, stops there too. A small stream that
//! expands past the limit is so refused without ever being decoded, and the work stays
//! in proportion to the bytes.

use crate::audio::format::MAX_DECODED_SAMPLES;
use crate::audio::AudioError;

/// Most samples a decode of `channels` at `rate` may give: never past the byte limit's
/// worth ([`MAX_DECODED_SAMPLES`]), nor, for a trial, past one frame beyond `seconds`.
pub fn most_samples(rate: u32, channels: usize, seconds: Option<f64>) -> usize {
    let frames = seconds.map_or(usize::MAX, |seconds| (seconds * rate as f64) as usize + 1);
    frames.saturating_mul(channels).min(MAX_DECODED_SAMPLES)
}

/// When the next trial is due, and the most audio the trials so far found.
#[derive(Debug, Clone)]
pub struct LengthTrials {
    next_at: usize,
    seconds: f64,
}

impl LengthTrials {
    /// The first trial comes once `first_at` bytes are measured.
    pub fn new(first_at: usize) -> Self {
        Self {
            next_at: first_at,
            seconds: 0.0,
        }
    }

    /// Runs `trial` of the bytes so far (a prefix; it gives their seconds of audio) when
    /// one is due: `measured` bytes (`None` while they cannot be measured yet) reached the
    /// mark. A prefix whose headers have not all arrived has no audio yet (`Empty`).
    pub fn run(
        &mut self,
        measured: Option<usize>,
        trial: impl FnOnce() -> Result<f64, AudioError>,
    ) -> Result<(), AudioError> {
        if measured.is_none_or(|bytes| bytes < self.next_at) {
            return Ok(());
        }
        self.next_at = measured.unwrap_or(0).saturating_mul(2);
        match trial() {
            Ok(seconds) => self.seconds = self.seconds.max(seconds),
            Err(AudioError::Empty) => {}
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
