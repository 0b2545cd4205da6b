//! FLAC, as iOS and many SDKs send lossless speech, read by symphonia. FLAC compresses
//! silence to almost nothing, so its bytes say little about its length: the header's
//! total (STREAMINFO), when it gives one, is checked as soon as it arrives, and the audio
//! itself by trial decodes ([`TrialDecodes`]) from 1 KiB of audio bytes. Decoding never
//! goes past the header's total.

use std::io::Cursor;

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::default::codecs::FlacDecoder;
use symphonia::default::formats::FlacReader;

use super::trial::{most_samples, TrialDecodes};
use crate::audio::format::{check_channels, check_declared, check_rate};
use crate::audio::{AudioError, AudioFormat, Decoded};

/// Audio bytes (past the metadata blocks) before the first trial decode.
pub const FIRST_TRIAL_BYTES: usize = 1024;
/// "fLaC", a metadata block header and STREAMINFO's first 18 bytes.
const STREAMINFO_BYTES: usize = 4 + 4 + 18;

/// Checks a FLAC stream (`bytes`, the utterance so far) against `max_seconds` where it is
/// due: the header's total once it has arrived and, while it is `streaming`, the audio
/// itself at each doubling of its audio bytes.
pub fn check(
    trials: &mut TrialDecodes,
    bytes: &[u8],
    max_seconds: f64,
    streaming: bool,
) -> Result<(), AudioError> {
    if let Some((rate, total)) = stream_info(bytes)? {
        trials.declared(total as f64 / rate as f64);
    }
    if !streaming {
        return Ok(());
    }
    let audio_bytes = audio_offset(bytes).map(|at| bytes.len() - at);
    trials.run(audio_bytes, || {
        decode_frames(bytes, true, None, Some(max_seconds))
    })
}

/// Where the frames start, once every metadata block has arrived.
fn audio_offset(bytes: &[u8]) -> Option<usize> {
    let mut at = 4;
    loop {
        let header = bytes.get(at..at + 4)?;
        let length = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        at += 4 + length;
        if header[0] & 0x80 != 0 {
            return (at <= bytes.len()).then_some(at);
        }
    }
}

/// The rate and declared total frames from STREAMINFO, once it has arrived (`None` for a
/// total of 0: not said).
fn stream_info(bytes: &[u8]) -> Result<Option<(u32, u64)>, AudioError> {
    let Some(head) = bytes.get(..STREAMINFO_BYTES) else {
        if !b"fLaC".starts_with(&bytes[..bytes.len().min(4)]) {
            return Err(corrupt("no fLaC marker at the start: is this FLAC?"));
        }
        return Ok(None);
    };
    if &head[..4] != b"fLaC" {
        return Err(corrupt("no fLaC marker at the start: is this FLAC?"));
    }
    if head[4] & 0x7F != 0 {
        return Err(corrupt("the first metadata block is not STREAMINFO"));
    }
    let info = &head[8..];
    let rate =
        (u32::from(info[10]) << 12) | (u32::from(info[11]) << 4) | (u32::from(info[12]) >> 4);
    let channels = u16::from((info[12] >> 1) & 0x07) + 1;
    check_rate(rate)?;
    check_channels(channels)?;
    let total = (u64::from(info[13] & 0x0F) << 32)
        | u64::from(u32::from_be_bytes(
            info[14..18].try_into().expect("4 bytes"),
        ));
    Ok((total > 0).then_some((rate, total)))
}

/// Decodes a FLAC utterance; a `prefix` (still arriving) up to its last whole frame, and
/// no further than just past `most_seconds`.
pub fn decode(
    bytes: &[u8],
    prefix: bool,
    declared: &AudioFormat,
    most_seconds: Option<f64>,
) -> Result<Decoded, AudioError> {
    decode_frames(bytes, prefix, Some(declared), most_seconds)
}

/// Decodes frames in order until the bytes end or just past `most_seconds`.
fn decode_frames(
    bytes: &[u8],
    prefix: bool,
    declared: Option<&AudioFormat>,
    most_seconds: Option<f64>,
) -> Result<Decoded, AudioError> {
    let info = stream_info(bytes)?;
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut reader = match FlacReader::try_new(source, FormatOptions::default()) {
        Ok(reader) => reader,
        // The metadata blocks have not all arrived: no audio yet.
        Err(symphonia::core::errors::Error::IoError(_)) if prefix => return Err(AudioError::Empty),
        Err(error) => return Err(failed("the header", error)),
    };
    let track = reader
        .tracks()
        .first()
        .cloned()
        .ok_or_else(|| corrupt("no audio stream"))?;
    let Some(CodecParameters::Audio(params)) = &track.codec_params else {
        return Err(corrupt("no audio stream"));
    };
    let rate = params
        .sample_rate
        .ok_or_else(|| corrupt("no sample rate"))?;
    let channels = params.channels.as_ref().map_or(0, |c| c.count()) as u16;
    check_rate(rate)?;
    check_channels(channels)?;
    if let Some(declared) = declared {
        check_declared(declared, rate, channels)?;
    }
    let mut decoder = FlacDecoder::try_new(params, &AudioDecoderOptions::default())
        .map_err(|e| failed("the header", e))?;
    // Never past the header's total either.
    let mut most = most_samples(rate, channels as usize, most_seconds);
    if let Some((_, total)) = info {
        most = most.min(
            usize::try_from(total)
                .unwrap_or(usize::MAX)
                .saturating_mul(channels as usize),
        );
    }
    let mut samples: Vec<f32> = Vec::new();
    let mut frame: Vec<f32> = Vec::new();
    let mut frames = 0usize;
    while samples.len() < most {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(_) if prefix => break,
            Err(error) => return Err(failed(&format!("frame {frames}"), error)),
        };
        frames += 1;
        match decoder.decode(&packet) {
            Ok(buffer) => buffer.copy_to_vec_interleaved(&mut frame),
            Err(_) if prefix => break,
            Err(error) => return Err(failed(&format!("frame {frames}"), error)),
        }
        samples.extend_from_slice(&frame[..frame.len().min(most - samples.len())]);
    }
    if let Some((_, total)) = info.filter(|_| !prefix && most_seconds.is_none()) {
        let frames = (samples.len() / channels as usize) as u64;
        if frames < total {
            return Err(AudioError::CorruptFlac(format!(
                "the stream ends after {frames} of the {total} frames its header declares: \
                 send the whole stream"
            )));
        }
    }
    Ok(Decoded {
        samples,
        sample_rate: rate,
        channels,
    })
}

fn corrupt(what: &str) -> AudioError {
    AudioError::CorruptFlac(what.to_string())
}

fn failed(what: &str, error: symphonia::core::errors::Error) -> AudioError {
    AudioError::CorruptFlac(format!("{what}: {error}"))
}
