//! WAV through hound, and the walk of a WAV header up to its data that the length check
//! runs as the bytes arrive.

use std::io::Cursor;

use crate::audio::format::{check_channels, check_declared, check_rate, ByteLayout};
use crate::audio::{AudioError, AudioFormat, Decoded};

/// Decodes a WAV utterance; a `prefix` (still arriving) is read to its last whole frame.
pub(in crate::audio) fn decode(
    bytes: &[u8],
    prefix: bool,
    format: &AudioFormat,
) -> Result<Decoded, AudioError> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(wav_error)?;
    let spec = reader.spec();
    check_rate(spec.sample_rate)?;
    check_channels(spec.channels)?;
    check_declared(format, spec.sample_rate, spec.channels)?;
    let declared_samples = reader.len() as usize;
    let mut samples = read_wav_samples(reader, spec, bytes.len())?;
    if prefix {
        samples.truncate(samples.len() / spec.channels as usize * spec.channels as usize);
    }
    if samples.len() < declared_samples && !prefix {
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

/// Walks a WAV file's chunks up to the start of its data: the audio layout once the
/// header has arrived (`None` while it has not), its format validated at once.
pub(in crate::audio) fn layout(bytes: &[u8]) -> Result<Option<ByteLayout>, AudioError> {
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
                return Ok(Some(ByteLayout {
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
