//! Gathers one utterance's bytes as they arrive, enforcing the length limit as early as
//! the bytes allow, so that an over-long utterance is refused while it streams rather
//! than after it has filled memory. This is the only place the limit is checked:
//! streamed and unary utterances alike pass through a buffer.

use super::decode::{check_channels, check_rate};
use super::ogg_opus::OggScan;
use super::trial::TrialDecodes;
use super::{flac, webm_opus};
use super::{AudioError, AudioFormat, Encoding};

/// Most bytes one utterance may hold, whatever its format says: 30 s of 48 kHz stereo
/// FLOAT32 is 11.5 MB.
pub const MAX_UTTERANCE_BYTES: usize = 32 * 1024 * 1024;

/// Most samples compressed audio may decode to: what the byte limit holds as FLOAT32, so
/// that no encoding expands past what the same utterance could carry uncompressed.
pub const MAX_DECODED_SAMPLES: usize = MAX_UTTERANCE_BYTES / 4;

/// Bytes of one utterance, in arrival order.
#[derive(Debug)]
pub struct UtteranceBuffer {
    format: AudioFormat,
    max_seconds: f64,
    bytes: Vec<u8>,
    /// Bytes per second of audio, and where the audio starts, once known (at once for raw
    /// audio, after the header for WAV).
    layout: Option<Layout>,
    /// For Ogg Opus: what the pages so far declare.
    ogg: Option<OggScan>,
    /// For FLAC and WebM Opus: the trial decodes so far.
    trials: Option<TrialDecodes>,
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    byte_rate: f64,
    data_offset: usize,
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
                format.sample_rate.map(|rate| Layout {
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
            trials: first_trial_bytes(format.encoding).map(TrialDecodes::new),
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
        buffer.check(true)?;
        Ok(buffer)
    }

    /// Appends a chunk; fails once the utterance is longer than the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), AudioError> {
        self.bytes.extend_from_slice(chunk);
        self.check(false)
    }

    /// The one check of the utterance length limit, as early as the bytes allow: a WAV
    /// header is validated as soon as it has arrived, each Ogg page as it completes, and a
    /// FLAC or WebM stream at each doubling of its bytes (and FLAC's header at once).
    /// The `last` check (the utterance is whole) also decodes what is compressed past
    /// telling its length otherwise.
    fn check(&mut self, last: bool) -> Result<(), AudioError> {
        if self.bytes.len() > MAX_UTTERANCE_BYTES {
            return Err(AudioError::TooManyBytes {
                limit: MAX_UTTERANCE_BYTES,
            });
        }
        if self.layout.is_none() && self.format.encoding == Encoding::Wav {
            self.layout = wav_layout(&self.bytes)?;
            if self.layout.is_none() && self.bytes.len() > WAV_HEADER_SEARCH_BYTES {
                return Err(AudioError::CorruptWav(
                    "no data chunk in the first 1 MiB of the utterance".into(),
                ));
            }
        }
        if let Some(ogg) = &mut self.ogg {
            ogg.update(&self.bytes)?;
        }
        if let Some(trials) = &mut self.trials {
            let (bytes, max) = (&self.bytes, self.max_seconds);
            match self.format.encoding {
                Encoding::Flac => flac::check(trials, bytes, max, last)?,
                _ => webm_opus::check(trials, bytes, max, last)?,
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

    /// Audio received so far, in seconds (0 until a WAV header has arrived; for Ogg Opus,
    /// what its whole pages declare; for FLAC and WebM, the most its checks found).
    pub fn seconds(&self) -> f64 {
        if let Some(ogg) = &self.ogg {
            return ogg.seconds();
        }
        if let Some(trials) = &self.trials {
            return trials.seconds();
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

    /// Checks the whole utterance, then hands over its bytes, with its length in seconds,
    /// and starts a new one.
    pub fn finish(&mut self) -> Result<(Vec<u8>, f64), AudioError> {
        self.check(true)?;
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
        self.trials = first_trial_bytes(self.format.encoding).map(TrialDecodes::new);
        std::mem::take(&mut self.bytes)
    }
}

/// Bytes before the first trial decode, for the encodings checked by trial decodes.
fn first_trial_bytes(encoding: Encoding) -> Option<usize> {
    match encoding {
        Encoding::Flac => Some(flac::FIRST_TRIAL_BYTES),
        Encoding::WebmOpus => Some(webm_opus::FIRST_TRIAL_BYTES),
        _ => None,
    }
}

/// Walks a WAV file's chunks up to the start of its data: the audio layout once the
/// header has arrived (`None` while it has not), its format validated at once.
fn wav_layout(bytes: &[u8]) -> Result<Option<Layout>, AudioError> {
    let corrupt = |what: &str| AudioError::CorruptWav(what.into());
    if bytes.len() < 12 {
        return Ok(None);
    }
    if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(corrupt("no RIFF/WAVE header"));
    }
    let mut at = 12;
    let mut byte_rate = None;
    while let Some(header) = bytes.get(at..at + 8) {
        let size = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let body = at + 8;
        match &header[0..4] {
            b"fmt " => {
                let Some(fmt) = bytes.get(body..body + 16) else {
                    return Ok(None);
                };
                let field16 = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
                let channels = field16(2);
                let rate = u32::from_le_bytes(fmt[4..8].try_into().expect("4 bytes"));
                let bits = field16(14);
                check_rate(rate)?;
                check_channels(channels)?;
                if ![8, 16, 24, 32].contains(&bits) {
                    return Err(AudioError::UnsupportedWav(format!(
                        "{bits} bits per sample: 8, 16, 24 or 32 are read"
                    )));
                }
                byte_rate = Some(rate as f64 * channels as f64 * (bits / 8) as f64);
            }
            b"data" => {
                let byte_rate =
                    byte_rate.ok_or_else(|| corrupt("the data chunk comes before fmt"))?;
                return Ok(Some(Layout {
                    byte_rate,
                    data_offset: body,
                }));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Ok(None)
}
