//! The audio front end: whatever a phone sends (PCM, WAV, mu-law, FLAC, Ogg or WebM Opus), turned into clean 16 kHz mono samples.
//!
//! [`prepare`] runs the stages in order: [`decode()`] (bytes to samples), [`normalize`]
//! (downmix, DC removal, loudness), [`vad`] (where the speech is, if anywhere) and
//! [`resample`] (to 16 kHz). [`UtteranceBuffer`] gathers an utterance that arrives in
//! pieces; every stage runs on the whole utterance, so how it was cut never changes the
//! result.

mod buffer;
mod codec;
pub mod decode;
pub mod format;
pub mod normalize;
pub mod resample;
pub mod vad;

pub use buffer::UtteranceBuffer;
pub use decode::{decode, decode_prefix, decode_within};
pub use format::{AudioError, AudioFormat, Decoded, Encoding};
pub use resample::TARGET_SAMPLE_RATE;
pub use vad::VoiceActivity;

/// What the front end measured about one utterance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioInfo {
    /// Length as sent, in seconds.
    pub duration_seconds: f64,
    pub sample_rate: u32,
    pub channels: u16,
    /// RMS level of the voiced part before normalization, in dBFS.
    pub loudness_db: f32,
    /// Gain applied by normalization, in dB.
    pub gain_db: f32,
    /// Share of samples at full scale before normalization.
    pub clipped_fraction: f32,
    /// Where the speech is; the samples handed on start at `voice.start_seconds`.
    pub voice: VoiceActivity,
}

/// One utterance ready for the model.
#[derive(Debug, Clone)]
pub struct PreparedAudio {
    /// Mono samples at [`TARGET_SAMPLE_RATE`], normalized and trimmed to the speech.
    pub samples: Vec<f32>,
    pub info: AudioInfo,
}

/// Decodes and prepares one whole utterance.
pub fn prepare(bytes: &[u8], format: &AudioFormat) -> Result<PreparedAudio, AudioError> {
    prepare_decoded(&decode(bytes, format)?)
}

/// Prepares samples that are already decoded.
pub fn prepare_decoded(decoded: &Decoded) -> Result<PreparedAudio, AudioError> {
    let duration_seconds = decoded.duration_seconds();
    let mut mono = normalize::downmix(&decoded.samples, decoded.channels);
    let clipped_fraction = normalize::clipped_fraction(&mono);
    normalize::remove_dc(&mut mono);
    let voice = vad::detect(&mono, decoded.sample_rate);
    let gain_db = normalize::gain_db(voice.voiced_level_db, normalize::peak(&mono));
    normalize::apply_gain(&mut mono, gain_db);
    let rate = decoded.sample_rate as f64;
    let start = ((voice.start_seconds * rate) as usize).min(mono.len());
    let end = ((voice.end_seconds * rate).ceil() as usize).clamp(start, mono.len());
    mono.truncate(end);
    mono.drain(..start);
    let samples = resample::to_target_rate(mono, decoded.sample_rate)?;
    Ok(PreparedAudio {
        samples,
        info: AudioInfo {
            duration_seconds,
            sample_rate: decoded.sample_rate,
            channels: decoded.channels,
            loudness_db: voice.voiced_level_db,
            gain_db,
            clipped_fraction,
            voice,
        },
    })
}
