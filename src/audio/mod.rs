//! The audio front end: whatever a phone sends (PCM, WAV, mu-law, FLAC, Ogg or WebM Opus), turned into clean 16 kHz mono samples.
//!
//! [`prepare`] runs the stages in order: [`decode()`] (bytes to samples), [`normalize`]
//! (downmix, DC removal, loudness), [`vad`] (where the speech is, if anywhere) and
//! [`resample`] (to 16 kHz). [`UtteranceBuffer`] gathers an utterance that arrives in
//! pieces; every stage runs on the whole utterance, so how it was cut never changes the
//! result.

mod buffer;
pub mod decode;
mod flac;
pub mod normalize;
mod ogg_opus;
pub mod resample;
mod trial;
pub mod vad;
mod webm_opus;

pub use buffer::UtteranceBuffer;
pub use decode::{decode, decode_prefix, AudioFormat, Decoded, Encoding};
pub use resample::TARGET_SAMPLE_RATE;
pub use vad::VoiceActivity;

/// Everything that can be wrong with audio input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AudioError {
    #[error("the utterance holds no audio")]
    Empty,
    #[error("sample rate {0} Hz is out of range: it must be 8000 to 192000 Hz")]
    SampleRateOutOfRange(u32),
    #[error("{0} channels are out of range: it must be 1 to 8")]
    ChannelsOutOfRange(u16),
    #[error("{0:?} audio needs a sample rate: set sample_rate_hz in the config")]
    MissingSampleRate(Encoding),
    #[error(
        "{bytes} bytes of {encoding:?} audio is not a whole number of frames ({frame_bytes} bytes \
         each): a chunk boundary may have cut a sample, or the encoding or channel count is wrong"
    )]
    PartialFrame {
        encoding: Encoding,
        bytes: usize,
        frame_bytes: usize,
    },
    #[error("sample {index} is NaN or infinite: FLOAT32 audio must hold finite values")]
    NonFinite { index: usize },
    #[error("corrupt WAV: {0}")]
    CorruptWav(String),
    #[error("unsupported WAV: {0}")]
    UnsupportedWav(String),
    #[error(
        "truncated WAV: the header declares {declared} samples but the data holds {present}; \
         send the whole file"
    )]
    TruncatedWav { declared: usize, present: usize },
    #[error("corrupt FLAC: {0}")]
    CorruptFlac(String),
    #[error("corrupt WebM Opus: {0}")]
    CorruptWebm(String),
    #[error("unsupported WebM: {0}")]
    UnsupportedWebm(String),
    #[error("corrupt Ogg Opus: {0}")]
    CorruptOgg(String),
    #[error("unsupported Ogg Opus: {0}")]
    UnsupportedOgg(String),
    #[error("the config says {what} {declared} but the audio's own header says {header}")]
    HeaderMismatch {
        what: &'static str,
        declared: u32,
        header: u32,
    },
    #[error("the utterance is {seconds:.1} s long; the limit is {limit:.1} s")]
    TooLong { seconds: f64, limit: f64 },
    #[error("the utterance holds more than {limit} bytes, the limit whatever its format")]
    TooManyBytes { limit: usize },
    #[error("resampling failed: {0}")]
    Resample(String),
}

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
    prepare_decoded(decode(bytes, format)?)
}

/// Prepares samples that are already decoded.
pub fn prepare_decoded(decoded: Decoded) -> Result<PreparedAudio, AudioError> {
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
