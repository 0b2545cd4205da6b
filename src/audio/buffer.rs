//! Gathers one utterance's bytes as they arrive, enforcing the length limit as early as
//! the bytes allow, so that an over-long utterance is refused while it streams rather
//! than after it has filled memory. This is the only place the limit is checked:
//! streamed and unary utterances alike pass through a buffer.

use super::codec::flac::FlacScan;
use super::codec::ogg_opus::OggScan;
use super::codec::trial::LengthTrials;
use super::codec::{wav, webm_opus};
use super::format::{ByteLayout, MAX_UTTERANCE_BYTES};
use super::{AudioError, AudioFormat, Encoding};

/// Bytes of one utterance, in arrival order.
#[derive(Debug)]
pub struct UtteranceBuffer {
    format: AudioFormat,
    max_seconds: f64,
    bytes: Vec<u8>,
    /// Bytes per second of audio, and where the audio starts, once known (at once for raw
    /// audio, after the header for WAV).
    layout: Option<ByteLayout>,
    /// For Ogg Opus: what the pages so far declare.
    ogg: Option<OggScan>,
    /// For FLAC: its metadata walk and length trials so far.
    flac: Option<FlacScan>,
    /// For WebM Opus: its length trials so far.
    webm: Option<LengthTrials>,
}

/// A WAV stream whose data chunk has not begun after this many bytes is refused, so that
/// a header can neither hide the length limit nor hold memory; LIST and other chunks
/// before the data fit easily.
const WAV_HEADER_SEARCH_BYTES: usize = 1024 * 1024;

impl UtteranceBuffer {
    pub fn new(format: AudioFormat, max_seconds: f64) -> Self {
        let layout = match format.encoding {
            Encoding::Wav | Encoding::OggOpus | Encoding::Flac | Encoding::WebmOpus => None,
            raw => {
                let width = match raw {
                    Encoding::Linear16 => 2.0,
                    Encoding::Float32 => 4.0,
                    _ => 1.0,
                };
                format.sample_rate.map(|rate| ByteLayout {
                    byte_rate: rate as f64 * width * format.channels.unwrap_or(1) as f64,
                    data_offset: 0,
                })
            }
        };
        Self {
            format,
            max_seconds,
            bytes: Vec::new(),
            layout,
            ogg: (format.encoding == Encoding::OggOpus).then(OggScan::default),
            flac: (format.encoding == Encoding::Flac).then(FlacScan::default),
            webm: (format.encoding == Encoding::WebmOpus)
                .then(|| LengthTrials::new(webm_opus::FIRST_TRIAL_BYTES)),
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
        buffer.check(false)?;
        Ok(buffer)
    }

    /// Appends a chunk; fails once the utterance is longer than the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), AudioError> {
        self.bytes.extend_from_slice(chunk);
        self.check(true)
    }

    /// The utterance length limit, checked as early as the bytes allow: a WAV header is
    /// validated as soon as it has arrived, each Ogg page as it completes, FLAC's header and
    /// metadata as they arrive and, while it streams (`trials`), a FLAC or WebM stream's
    /// packet lengths at each doubling of its bytes. What compresses past telling its length is checked last by its
    /// one decode, on a worker ([`crate::audio::decode_within`]).
    fn check(&mut self, trials: bool) -> Result<(), AudioError> {
        if self.bytes.len() > MAX_UTTERANCE_BYTES {
            return Err(AudioError::TooManyBytes {
                limit: MAX_UTTERANCE_BYTES,
            });
        }
        if self.layout.is_none() && self.format.encoding == Encoding::Wav {
            self.layout = wav::layout(&self.bytes)?;
            if self.layout.is_none() && self.bytes.len() > WAV_HEADER_SEARCH_BYTES {
                return Err(AudioError::CorruptWav(
                    "no data chunk in the first 1 MiB of the utterance".into(),
                ));
            }
        }
        if let Some(ogg) = &mut self.ogg {
            ogg.update(&self.bytes)?;
        }
        if let Some(flac) = &mut self.flac {
            flac.check(&self.bytes, self.max_seconds, trials)?;
        }
        if let Some(webm) = self.webm.as_mut().filter(|_| trials) {
            webm_opus::check(webm, &self.bytes, self.max_seconds)?;
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

    /// Audio received so far, in seconds (0 until a WAV header has arrived; for Ogg Opus,
    /// what its whole pages declare; for FLAC and WebM, the most its checks found).
    pub fn seconds(&self) -> f64 {
        if let Some(ogg) = &self.ogg {
            return ogg.seconds();
        }
        if let Some(flac) = &self.flac {
            return flac.seconds();
        }
        if let Some(webm) = &self.webm {
            return webm.seconds();
        }
        self.layout.map_or(0.0, |layout| {
            self.bytes.len().saturating_sub(layout.data_offset) as f64 / layout.byte_rate
        })
    }

    /// The bytes received so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Checks the whole utterance as far as its bytes tell, then hands them over with its
    /// length in seconds so far (for FLAC and WebM, what the trials found; their one decode
    /// on a worker checks the rest), and starts a new one.
    pub fn finish(&mut self) -> Result<(Vec<u8>, f64), AudioError> {
        self.check(false)?;
        let seconds = self.seconds();
        Ok((self.take(), seconds))
    }

    /// Hands over the bytes and starts a new utterance.
    pub fn take(&mut self) -> Vec<u8> {
        if self.format.encoding == Encoding::Wav {
            self.layout = None;
        }
        if let Some(ogg) = &mut self.ogg {
            *ogg = OggScan::default();
        }
        let fresh = Self::new(self.format, self.max_seconds);
        (self.flac, self.webm) = (fresh.flac, fresh.webm);
        std::mem::take(&mut self.bytes)
    }
}
