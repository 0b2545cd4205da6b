//! What is recorded about every utterance for drift detection: the input as it arrived
//! and what the model and the search made of it.

use serde::{Deserialize, Serialize};

use crate::audio::Encoding;
use crate::pipeline::UtteranceOutcome;

/// The drift features of one utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceFeatures {
    pub duration_seconds: f64,
    /// RMS level of the voiced part before normalization, in dBFS.
    pub loudness_dbfs: f32,
    pub clipped_fraction: f32,
    /// Voiced level over the noise floor, in dB.
    pub snr_db: f32,
    pub sample_rate_hz: u32,
    pub channels: u16,
    pub encoding: String,
    pub no_speech_probability: f32,
    /// Mean token log-probability; absent when nothing was transcribed.
    pub avg_logprob: Option<f32>,
    pub words: usize,
    /// Share of transcript words missing from the catalog; absent without words.
    pub unknown_word_share: Option<f32>,
    /// Score of the first hit; absent without hits.
    pub top_hit_score: Option<f32>,
    pub no_hit: bool,
}

/// A feature's value: a number, a category, or nothing to measure.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    Number(f64),
    Category(String),
    Missing,
}

impl UtteranceFeatures {
    pub fn of(
        outcome: &UtteranceOutcome,
        encoding: Encoding,
        unknown_word_share: Option<f32>,
    ) -> Self {
        let audio = &outcome.audio;
        let spoke = !outcome.transcript.text.trim().is_empty();
        Self {
            duration_seconds: audio.duration_seconds,
            loudness_dbfs: audio.loudness_db,
            clipped_fraction: audio.clipped_fraction,
            snr_db: audio.voice.voiced_level_db - audio.voice.noise_floor_db,
            sample_rate_hz: audio.sample_rate,
            channels: audio.channels,
            encoding: format!("{encoding:?}").to_uppercase(),
            no_speech_probability: outcome.transcript.no_speech_prob,
            avg_logprob: spoke.then_some(outcome.transcript.avg_logprob),
            words: outcome.transcript.text.split_whitespace().count(),
            unknown_word_share,
            top_hit_score: outcome.hits.first().map(|h| h.hit.score),
            no_hit: outcome.hits.is_empty(),
        }
    }

    /// Every feature by name, in a fixed order.
    pub fn values(&self) -> [(&'static str, FeatureValue); 13] {
        use FeatureValue::{Category, Missing, Number};
        let optional = |v: Option<f32>| v.map_or(Missing, |v| Number(v as f64));
        [
            ("duration_seconds", Number(self.duration_seconds)),
            ("loudness_dbfs", Number(self.loudness_dbfs as f64)),
            ("clipped_fraction", Number(self.clipped_fraction as f64)),
            ("snr_db", Number(self.snr_db as f64)),
            ("sample_rate_hz", Category(self.sample_rate_hz.to_string())),
            ("channels", Category(self.channels.to_string())),
            ("encoding", Category(self.encoding.clone())),
            (
                "no_speech_probability",
                Number(self.no_speech_probability as f64),
            ),
            ("avg_logprob", optional(self.avg_logprob)),
            ("words", Number(self.words as f64)),
            ("unknown_word_share", optional(self.unknown_word_share)),
            ("top_hit_score", optional(self.top_hit_score)),
            ("no_hit", Category(self.no_hit.to_string())),
        ]
    }
}
