//! Opus in WebM, as Chrome's MediaRecorder writes it (sizes unknown, a live stream), read
//! by symphonia's Matroska reader and decoded as Ogg Opus is. WebM says nothing of its
//! length up front, so its length is checked by trials ([`LengthTrials`]) from 4 KiB,
//! which add up the Opus packets' lengths from their TOC bytes without decoding them.

use std::io::Cursor;

use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::default::formats::MkvReader;

use super::opus::{packet_frames, parse_head, OpusSamples, OPUS_RATE};
use super::trial::{most_samples, LengthTrials};
use crate::audio::format::{too_many_samples, MAX_DECODED_SAMPLES};
use crate::audio::{AudioError, AudioFormat, Decoded};

/// Bytes of a stream before its first trial decode.
pub const FIRST_TRIAL_BYTES: usize = 4 * 1024;

/// Checks a WebM stream still arriving (`bytes`, the utterance so far) against
/// `max_seconds` where it is due: at each doubling of its bytes.
pub fn check(trials: &mut LengthTrials, bytes: &[u8], max_seconds: f64) -> Result<(), AudioError> {
    trials.run(Some(bytes.len()), || packet_seconds(bytes, max_seconds))
}

/// Seconds of Opus in a stream still arriving, from its packets' TOC bytes, up to just
/// past `max_seconds`.
fn packet_seconds(bytes: &[u8], max_seconds: f64) -> Result<f64, AudioError> {
    let (mut reader, track) = open(bytes, true)?;
    let most = (max_seconds * f64::from(OPUS_RATE)) as usize + 1;
    let mut frames = 0usize;
    while frames < most {
        match reader.next_packet() {
            Ok(Some(packet)) if packet.track_id == track => frames += packet_frames(&packet.data),
            Ok(Some(_)) => {}
            // The stream ends here for now, or a block is still arriving.
            Ok(None) | Err(_) => break,
        }
    }
    Ok(frames as f64 / f64::from(OPUS_RATE))
}

/// The reader of a WebM stream and its Opus track's id and parameters.
fn open(bytes: &[u8], prefix: bool) -> Result<(MkvReader<'_>, u32), AudioError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let reader = match MkvReader::try_new(source, FormatOptions::default()) {
        Ok(reader) => reader,
        // The headers have not all arrived: no audio yet.
        Err(symphonia::core::errors::Error::IoError(_)) if prefix => return Err(AudioError::Empty),
        Err(error) => return Err(failed("the headers", error)),
    };
    let track = reader
        .tracks()
        .iter()
        .find(|track| {
            matches!(&track.codec_params, Some(CodecParameters::Audio(params)) if params.codec == CODEC_ID_OPUS)
        })
        .map(|track| track.id)
        .ok_or_else(|| unsupported("no Opus audio track: WEBM_OPUS carries Opus"))?;
    Ok((reader, track))
}

/// Decodes a WebM Opus utterance, up to its last whole block, and no further than just
/// past `most_seconds`.
pub fn decode(
    bytes: &[u8],
    prefix: bool,
    declared: &AudioFormat,
    most_seconds: Option<f64>,
) -> Result<Decoded, AudioError> {
    decode_packets(bytes, prefix, Some(declared), most_seconds)
}

fn decode_packets(
    bytes: &[u8],
    prefix: bool,
    declared: Option<&AudioFormat>,
    most_seconds: Option<f64>,
) -> Result<Decoded, AudioError> {
    let (mut reader, track) = open(bytes, prefix)?;
    let Some(Some(CodecParameters::Audio(params))) = reader
        .tracks()
        .iter()
        .find(|found| found.id == track)
        .map(|found| found.codec_params.clone())
    else {
        return Err(unsupported("no Opus audio track: WEBM_OPUS carries Opus"));
    };
    let private = params
        .extra_data
        .as_deref()
        .ok_or_else(|| corrupt("the Opus track has no OpusHead (CodecPrivate)"))?;
    let head = parse_head(private)?;
    if let Some(declared) = declared {
        head.check_declared(declared)?;
    }
    let head_channels = head.channels;
    let channels = usize::from(head.channels);
    let most = most_samples(OPUS_RATE, channels, most_seconds);
    let mut opus = OpusSamples::new(head, most).map_err(|error| corrupt(&error))?;
    let mut blocks = 0usize;
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            // A live recording (sizes unknown, as MediaRecorder writes) has no end marker:
            // it ends where its bytes do.
            Ok(None) | Err(symphonia::core::errors::Error::IoError(_)) => break,
            Err(_) if prefix => break,
            Err(error) => return Err(failed(&format!("block {blocks}"), error)),
        };
        blocks += 1;
        if packet.track_id == track && !opus.push(&packet.data).map_err(|e| corrupt(&e))? {
            if most == MAX_DECODED_SAMPLES && !prefix && matches!(reader.next_packet(), Ok(Some(_)))
            {
                return Err(too_many_samples(OPUS_RATE, head_channels));
            }
            break;
        }
    }
    Ok(opus.finish())
}

fn corrupt(what: &str) -> AudioError {
    AudioError::CorruptWebm(what.to_string())
}

fn unsupported(what: &str) -> AudioError {
    AudioError::UnsupportedWebm(what.to_string())
}

fn failed(what: &str, error: symphonia::core::errors::Error) -> AudioError {
    AudioError::CorruptWebm(format!("{what}: {error}"))
}
