//! Decoding: bytes as a phone sends them (WAV, raw LINEAR16, FLOAT32, MULAW, FLAC, Ogg and
//! WebM Opus) into interleaved `f32` samples at full scale 1.0, each encoding sent to its
//! reader in [`super::codec`]. Every way the bytes can be wrong is an [`AudioError`] that
//! says what was wrong; nothing here panics on input.

use super::codec::{flac, ogg_opus, raw, wav, webm_opus};
use super::{AudioError, AudioFormat, Decoded, Encoding};

/// Decodes one whole utterance.
pub fn decode(bytes: &[u8], format: &AudioFormat) -> Result<Decoded, AudioError> {
    decode_with(bytes, format, Completeness::Whole, None)
}

/// Decodes one whole utterance that must last at most `max_seconds`: the last check of
/// its length, for what compresses past telling it from its bytes (FLAC, WebM Opus),
/// whose decode stops just past the limit. Its samples are the utterance's, so that it
/// is decoded once.
pub fn decode_within(
    bytes: &[u8],
    format: &AudioFormat,
    max_seconds: f64,
) -> Result<Decoded, AudioError> {
    let decoded = decode_with(bytes, format, Completeness::Whole, Some(max_seconds))?;
    let seconds = decoded.duration_seconds();
    if seconds > max_seconds {
        return Err(AudioError::TooLong {
            seconds,
            limit: max_seconds,
        });
    }
    Ok(decoded)
}

/// Decodes the start of an utterance that is still arriving: a WAV data chunk shorter
/// than its header declares, or a last frame cut by a chunk boundary, is not an error
/// here; the audio is read up to the last whole frame.
pub fn decode_prefix(bytes: &[u8], format: &AudioFormat) -> Result<Decoded, AudioError> {
    decode_with(bytes, format, Completeness::Prefix, None)
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
    most_seconds: Option<f64>,
) -> Result<Decoded, AudioError> {
    format.validate()?;
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let prefix = completeness == Completeness::Prefix;
    let decoded = match format.encoding {
        Encoding::Wav => wav::decode(bytes, prefix, format)?,
        Encoding::OggOpus => ogg_opus::decode(bytes, prefix, format)?,
        Encoding::Flac => flac::decode(bytes, prefix, format, most_seconds)?,
        Encoding::WebmOpus => webm_opus::decode(bytes, prefix, format, most_seconds)?,
        raw => {
            let sample_rate = format
                .sample_rate
                .ok_or(AudioError::MissingSampleRate(raw))?;
            let channels = format.channels.unwrap_or(1);
            let bytes = match completeness {
                Completeness::Whole => bytes,
                Completeness::Prefix => {
                    let frame = raw::raw_sample_bytes(raw) * channels as usize;
                    &bytes[..bytes.len() / frame * frame]
                }
            };
            let samples = raw::decode_raw(bytes, raw, channels)?;
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
