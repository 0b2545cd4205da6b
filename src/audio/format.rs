//! The audio vocabulary every codec shares, at the bottom of `audio/`: encodings, what a
//! client declares, decoded samples, the limits on rates, channels and sizes, and every
//! way audio input can be wrong.

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
    #[error(
        "the audio decodes to more than {limit} samples ({seconds:.1} s at {rate} Hz and \
         {channels} channels), the most one utterance may: send fewer channels or a lower rate"
    )]
    TooManySamples {
        limit: usize,
        seconds: f64,
        rate: u32,
        channels: u16,
    },
    #[error("resampling failed: {0}")]
    Resample(String),
}

/// Lowest and highest sample rate accepted, in Hz.
pub const MIN_SAMPLE_RATE: u32 = 8_000;
pub const MAX_SAMPLE_RATE: u32 = 192_000;
/// Most channels accepted.
pub const MAX_CHANNELS: u16 = 8;

/// Most bytes one utterance may hold, whatever its format says: 30 s of 48 kHz stereo
/// FLOAT32 is 11.5 MB.
pub const MAX_UTTERANCE_BYTES: usize = 32 * 1024 * 1024;

/// Most samples compressed audio may decode to: what the byte limit holds as FLOAT32, so
/// that no encoding expands past what the same utterance could carry uncompressed.
pub const MAX_DECODED_SAMPLES: usize = MAX_UTTERANCE_BYTES / 4;

/// The refusal of audio at `rate` and `channels` that decodes past [`MAX_DECODED_SAMPLES`].
pub fn too_many_samples(rate: u32, channels: u16) -> AudioError {
    AudioError::TooManySamples {
        limit: MAX_DECODED_SAMPLES,
        seconds: (MAX_DECODED_SAMPLES / usize::from(channels.max(1))) as f64 / f64::from(rate),
        rate,
        channels,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed 16-bit little-endian PCM, interleaved.
    Linear16,
    /// 32-bit float little-endian PCM, interleaved.
    Float32,
    /// A RIFF/WAVE container; rate and channels come from its header.
    Wav,
    /// G.711 mu-law, one byte per sample, interleaved.
    Mulaw,
    /// Opus in an Ogg container (RFC 7845); rate and channels come from its header.
    OggOpus,
    /// FLAC; rate and channels come from its header.
    Flac,
    /// Opus in WebM (Chrome's MediaRecorder); rate and channels come from its header.
    WebmOpus,
}

impl Encoding {
    /// Whether the bytes say their own rate and channels.
    pub fn is_self_describing(self) -> bool {
        matches!(
            self,
            Encoding::Wav | Encoding::OggOpus | Encoding::Flac | Encoding::WebmOpus
        )
    }
}

/// What the client declared about its audio. For the self-describing encodings, `None`
/// takes the header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub encoding: Encoding,
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
}

impl AudioFormat {
    /// Checks what can be checked before any audio arrives.
    pub fn validate(&self) -> Result<(), AudioError> {
        if let Some(rate) = self.sample_rate {
            check_rate(rate)?;
        } else if !self.encoding.is_self_describing() {
            return Err(AudioError::MissingSampleRate(self.encoding));
        }
        if let Some(channels) = self.channels {
            check_channels(channels)?;
        }
        Ok(())
    }
}

/// Interleaved samples with their layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: u16,
}

impl Decoded {
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels as usize
    }

    pub fn duration_seconds(&self) -> f64 {
        self.frames() as f64 / self.sample_rate as f64
    }
}

/// Where the audio of a stream starts and how many bytes a second of it takes, once known
/// (at once for raw audio, after the header for WAV).
#[derive(Debug, Clone, Copy)]
pub struct ByteLayout {
    pub byte_rate: f64,
    pub data_offset: usize,
}

/// A rate or channel count the client declared must be what the stream's header says.
pub fn check_declared(format: &AudioFormat, rate: u32, channels: u16) -> Result<(), AudioError> {
    if let Some(declared) = format.sample_rate.filter(|&r| r != rate) {
        return Err(AudioError::HeaderMismatch {
            what: "sample rate",
            declared,
            header: rate,
        });
    }
    if let Some(declared) = format.channels.filter(|&c| c != channels) {
        return Err(AudioError::HeaderMismatch {
            what: "channel count",
            declared: declared as u32,
            header: channels as u32,
        });
    }
    Ok(())
}

pub fn check_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::SampleRateOutOfRange(rate))
    }
}

pub fn check_channels(channels: u16) -> Result<(), AudioError> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        Ok(())
    } else {
        Err(AudioError::ChannelsOutOfRange(channels))
    }
}
