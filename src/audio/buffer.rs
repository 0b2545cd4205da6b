//! Gathers one utterance's bytes as they arrive, enforcing the length limit as early as
//! the bytes allow, so that an over-long utterance is refused while it streams rather
//! than after it has filled memory. This is the only place the limit is checked:
//! streamed and unary utterances alike pass through a buffer.

use super::{AudioError, AudioFormat, Encoding};

/// Bytes of one utterance, in arrival order.
#[derive(Debug)]
pub struct UtteranceBuffer {
    format: AudioFormat,
    max_seconds: f64,
    bytes: Vec<u8>,
    /// Bytes per second of audio, once known (at once for raw audio, after the header
    /// for WAV).
    byte_rate: Option<f64>,
}

/// Size of a canonical WAV header; a header may be longer, which only makes the duration
/// estimate err on the short side.
const WAV_HEADER_BYTES: usize = 44;
/// A WAV stream with no readable header after this many bytes is refused, so that a
/// corrupt header cannot disable the length limit.
const WAV_HEADER_SEARCH_BYTES: usize = 64 * 1024;

impl UtteranceBuffer {
    pub fn new(format: AudioFormat, max_seconds: f64) -> Self {
        let byte_rate = match format.encoding {
            Encoding::Wav => None,
            raw => {
                let width = match raw {
                    Encoding::Linear16 => 2.0,
                    Encoding::Float32 => 4.0,
                    _ => 1.0,
                };
                format
                    .sample_rate
                    .map(|rate| rate as f64 * width * format.channels.unwrap_or(1) as f64)
            }
        };
        Self {
            format,
            max_seconds,
            bytes: Vec::new(),
            byte_rate,
        }
    }

    /// A whole utterance received at once (a unary call), held to the same limit.
    pub fn whole(
        format: AudioFormat,
        max_seconds: f64,
        bytes: Vec<u8>,
    ) -> Result<Self, AudioError> {
        let mut buffer = Self::new(format, max_seconds);
        buffer.bytes = bytes;
        buffer.check()?;
        Ok(buffer)
    }

    /// Appends a chunk; fails once the utterance is longer than the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), AudioError> {
        self.bytes.extend_from_slice(chunk);
        self.check()
    }

    /// The one check of the utterance length limit, as early as the bytes allow.
    fn check(&mut self) -> Result<(), AudioError> {
        if self.byte_rate.is_none() && self.bytes.len() >= WAV_HEADER_BYTES {
            self.byte_rate = wav_byte_rate(&self.bytes);
            if self.byte_rate.is_none() && self.bytes.len() > WAV_HEADER_SEARCH_BYTES {
                return Err(AudioError::CorruptWav(
                    "no valid WAV header in the first 64 KiB of the utterance".into(),
                ));
            }
        }
        let seconds = self.seconds();
        if seconds > self.max_seconds {
            return Err(AudioError::TooLong {
                seconds,
                limit: self.max_seconds,
            });
        }
        Ok(())
    }

    /// Audio received so far, in seconds (0 until a WAV header has arrived).
    pub fn seconds(&self) -> f64 {
        let payload = match self.format.encoding {
            Encoding::Wav => self.bytes.len().saturating_sub(WAV_HEADER_BYTES),
            _ => self.bytes.len(),
        };
        self.byte_rate.map_or(0.0, |rate| payload as f64 / rate)
    }

    /// The bytes received so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Hands over the bytes and starts a new utterance.
    pub fn take(&mut self) -> Vec<u8> {
        if self.format.encoding == Encoding::Wav {
            self.byte_rate = None;
        }
        std::mem::take(&mut self.bytes)
    }
}

fn wav_byte_rate(bytes: &[u8]) -> Option<f64> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).ok()?;
    let spec = reader.spec();
    Some(spec.sample_rate as f64 * spec.channels as f64 * (spec.bits_per_sample as f64 / 8.0))
}
