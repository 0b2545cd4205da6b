//! What a transcription gives: the text, its segments and n-best alternatives, and the
//! time each stage of the model took.

use std::time::Duration;

use super::WordTime;

/// A piece of the transcript with its times, in seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_seconds: f32,
    pub end_seconds: f32,
    pub text: String,
}

/// What was said.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Empty when nothing was said.
    pub text: String,
    pub segments: Vec<Segment>,
    /// Each word with its times, when they were asked for.
    pub words: Vec<WordTime>,
    pub language: String,
    /// Probability that the (first) window held no speech.
    pub no_speech_prob: f32,
    /// Mean log-probability per token.
    pub avg_logprob: f32,
    /// Mean probability of the transcript's tokens, 0..1.
    pub confidence: f32,
    /// The n-best transcripts, the text above first; only the text above unless more
    /// alternatives were asked for.
    pub alternatives: Vec<TranscriptAlternative>,
    /// Time spent in each stage of the model.
    pub timings: AsrTimings,
}

/// One of the n-best transcripts.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptAlternative {
    pub text: String,
    /// Mean log-probability per token.
    pub avg_logprob: f32,
    /// Mean probability of its tokens, 0..1.
    pub confidence: f32,
}

/// Time spent in each stage of one transcription, summed over its windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AsrTimings {
    pub mel: Duration,
    pub encoder: Duration,
    /// Decoding passes, language detection and fallbacks included.
    pub decoder: Duration,
}

impl Transcript {
    /// The transcript of audio in which nobody spoke.
    pub fn silent() -> Self {
        Self {
            text: String::new(),
            segments: Vec::new(),
            words: Vec::new(),
            language: String::new(),
            no_speech_prob: 1.0,
            avg_logprob: 0.0,
            confidence: 0.0,
            alternatives: Vec::new(),
            timings: AsrTimings::default(),
        }
    }
}
