//! Decoding: bytes as a phone sends them (WAV, raw LINEAR16, FLOAT32, MULAW, FLAC, Ogg and WebM Opus) into
//! interleaved `f32` samples at full scale 1.0. Every way the bytes can be wrong is a
//! [`AudioError`] that says what was wrong; nothing here panics on input.

use std::io::Cursor;

use super::AudioError;

/// Lowest and highest sample rate accepted, in Hz.
pub const MIN_SAMPLE_RATE: u32 = 8_000;
pub const MAX_SAMPLE_RATE: u32 = 192_000;
/// Most channels accepted.
pub const MAX_CHANNELS: u16 = 8;

/// How the audio bytes are laid out.
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

/// Decodes one whole utterance.
pub fn decode(bytes: &[u8], format: &AudioFormat) -> Result<Decoded, AudioError> {
    decode_with(bytes, format, Completeness::Whole)
}

/// Decodes the start of an utterance that is still arriving: a WAV data chunk shorter
/// than its header declares, or a last frame cut by a chunk boundary, is not an error
/// here; the audio is read up to the last whole frame.
pub fn decode_prefix(bytes: &[u8], format: &AudioFormat) -> Result<Decoded, AudioError> {
    decode_with(bytes, format, Completeness::Prefix)
}

/// Whether the bytes must hold the whole utterance.
#[derive(Clone, Copy, PartialEq)]
enum Completeness {
    Whole,
    Prefix,
}

fn decode_with(
    bytes: &[u8],
    format: &AudioFormat,
    completeness: Completeness,
) -> Result<Decoded, AudioError> {
    format.validate()?;
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let decoded = match format.encoding {
        Encoding::Wav => decode_wav(bytes, format, completeness)?,
        Encoding::OggOpus => {
            super::ogg_opus::decode(bytes, completeness == Completeness::Prefix, format)?
        }
        Encoding::Flac => super::flac::decode(bytes, completeness == Completeness::Prefix, format)?,
        Encoding::WebmOpus => {
            super::webm_opus::decode(bytes, completeness == Completeness::Prefix, format)?
        }
        raw => {
            let sample_rate = format
                .sample_rate
                .ok_or(AudioError::MissingSampleRate(raw))?;
            let channels = format.channels.unwrap_or(1);
            let bytes = match completeness {
                Completeness::Whole => bytes,
                Completeness::Prefix => {
                    let frame = raw_sample_bytes(raw) * channels as usize;
                    &bytes[..bytes.len() / frame * frame]
                }
            };
            let samples = decode_raw(bytes, raw, channels)?;
            Decoded {
                samples,
                sample_rate,
                channels,
            }
        }
    };
    if decoded.samples.is_empty() {
        return Err(AudioError::Empty);
    }
    if let Some(index) = decoded.samples.iter().position(|s| !s.is_finite()) {
        return Err(AudioError::NonFinite { index });
    }
    Ok(decoded)
}

/// Bytes per sample of a raw encoding; frames must be whole.
fn raw_sample_bytes(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Linear16 => 2,
        Encoding::Float32 => 4,
        Encoding::Mulaw
        | Encoding::Wav
        | Encoding::OggOpus
        | Encoding::Flac
        | Encoding::WebmOpus => 1,
    }
}

fn decode_raw(bytes: &[u8], encoding: Encoding, channels: u16) -> Result<Vec<f32>, AudioError> {
    let width = raw_sample_bytes(encoding);
    let frame = width * channels as usize;
    if !bytes.len().is_multiple_of(frame) {
        return Err(AudioError::PartialFrame {
            encoding,
            bytes: bytes.len(),
            frame_bytes: frame,
        });
    }
    Ok(match encoding {
        Encoding::Linear16 => bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect(),
        Encoding::Float32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Encoding::Mulaw => bytes
            .iter()
            .map(|&b| mulaw_to_linear(b) as f32 / 32768.0)
            .collect(),
        Encoding::Wav | Encoding::OggOpus | Encoding::Flac | Encoding::WebmOpus => {
            unreachable!("containers are decoded by their own readers")
        }
    })
}

/// G.711 mu-law expansion to 16-bit linear.
fn mulaw_to_linear(byte: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = !byte;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

fn decode_wav(
    bytes: &[u8],
    format: &AudioFormat,
    completeness: Completeness,
) -> Result<Decoded, AudioError> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(wav_error)?;
    let spec = reader.spec();
    check_rate(spec.sample_rate)?;
    check_channels(spec.channels)?;
    check_declared(format, spec.sample_rate, spec.channels)?;
    let declared_samples = reader.len() as usize;
    let mut samples = read_wav_samples(reader, spec, bytes.len())?;
    if completeness == Completeness::Prefix {
        samples.truncate(samples.len() / spec.channels as usize * spec.channels as usize);
    }
    if samples.len() < declared_samples && completeness == Completeness::Whole {
        return Err(AudioError::TruncatedWav {
            declared: declared_samples,
            present: samples.len(),
        });
    }
    if samples.len() % spec.channels as usize != 0 {
        return Err(AudioError::TruncatedWav {
            declared: declared_samples,
            present: samples.len(),
        });
    }
    Ok(Decoded {
        samples,
        sample_rate: spec.sample_rate,
        channels: spec.channels,
    })
}

/// A rate or channel count the client declared must be what the stream's header says.
pub(super) fn check_declared(
    format: &AudioFormat,
    rate: u32,
    channels: u16,
) -> Result<(), AudioError> {
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

/// Reads every sample the data chunk really holds; a data chunk shorter than its header
/// claims stops at the last whole sample rather than failing, and the caller compares.
fn read_wav_samples(
    mut reader: hound::WavReader<Cursor<&[u8]>>,
    spec: hound::WavSpec,
    byte_len: usize,
) -> Result<Vec<f32>, AudioError> {
    // The header's count may lie; never reserve more than the bytes could hold.
    let mut samples = Vec::with_capacity((reader.len() as usize).min(byte_len));
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            for sample in reader.samples::<f32>() {
                match sample {
                    Ok(s) => samples.push(s),
                    Err(e) if is_eof(&e) => break,
                    Err(e) => return Err(wav_error(e)),
                }
            }
        }
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            for sample in reader.samples::<i32>() {
                match sample {
                    Ok(s) => samples.push(s as f32 * scale),
                    Err(e) if is_eof(&e) => break,
                    Err(e) => return Err(wav_error(e)),
                }
            }
        }
        (format, bits) => {
            return Err(AudioError::UnsupportedWav(format!(
                "{bits}-bit {} samples; use 8, 16, 24 or 32-bit integer or 32-bit float",
                match format {
                    hound::SampleFormat::Float => "float",
                    hound::SampleFormat::Int => "integer",
                }
            )))
        }
    }
    Ok(samples)
}

/// The only I/O source is an in-memory cursor, so an I/O error means the bytes ran out.
fn is_eof(error: &hound::Error) -> bool {
    matches!(error, hound::Error::IoError(_))
}

fn wav_error(error: hound::Error) -> AudioError {
    match error {
        hound::Error::IoError(_) => {
            AudioError::CorruptWav("the bytes end before the header's data chunk starts".into())
        }
        hound::Error::FormatError(what) => AudioError::CorruptWav(what.to_string()),
        hound::Error::Unsupported => {
            AudioError::UnsupportedWav("a WAV format hound cannot read (compressed?)".into())
        }
        other => AudioError::CorruptWav(other.to_string()),
    }
}

pub(super) fn check_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::SampleRateOutOfRange(rate))
    }
}

pub(super) fn check_channels(channels: u16) -> Result<(), AudioError> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        Ok(())
    } else {
        Err(AudioError::ChannelsOutOfRange(channels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_known_values() {
        assert_eq!(mulaw_to_linear(0xFF), 0);
        assert_eq!(mulaw_to_linear(0x7F), 0);
        assert_eq!(mulaw_to_linear(0x80), 32124);
        assert_eq!(mulaw_to_linear(0x00), -32124);
    }
}
