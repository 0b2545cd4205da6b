//! Opus in WebM, as Chrome's MediaRecorder writes it (sizes unknown, a live stream), read
//! by symphonia's Matroska reader and decoded as Ogg Opus is. WebM says nothing of its
//! length up front, so its length is checked by trial decodes ([`TrialDecodes`]) from
//! 4 KiB.

use std::io::Cursor;

use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::default::formats::MkvReader;

use super::buffer::MAX_UTTERANCE_BYTES;
use super::decode::check_declared;
use super::ogg_opus::{parse_head, MAX_PACKET_FRAMES, OPUS_RATE};
use super::trial::TrialDecodes;
use super::{AudioError, AudioFormat, Decoded};

/// Bytes of a stream before its first trial decode.
pub const FIRST_TRIAL_BYTES: usize = 4 * 1024;

/// Checks a WebM stream still arriving (`bytes`, the utterance so far) against
/// `max_seconds` where it is due: at each doubling of its bytes and at the `last` check.
pub fn check(
    trials: &mut TrialDecodes,
    bytes: &[u8],
    max_seconds: f64,
    last: bool,
) -> Result<(), AudioError> {
    trials.run(Some(bytes.len()), last, |prefix| {
        decode_packets(bytes, prefix, None, Some(max_seconds))
    })
}

/// Decodes a WebM Opus utterance, up to its last whole block.
pub fn decode(bytes: &[u8], prefix: bool, declared: &AudioFormat) -> Result<Decoded, AudioError> {
    decode_packets(bytes, prefix, Some(declared), None)
}

fn decode_packets(
    bytes: &[u8],
    prefix: bool,
    declared: Option<&AudioFormat>,
    most_seconds: Option<f64>,
) -> Result<Decoded, AudioError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut reader = match MkvReader::try_new(source, FormatOptions::default()) {
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
        .cloned()
        .ok_or_else(|| unsupported("no Opus audio track: WEBM_OPUS carries Opus"))?;
    let Some(CodecParameters::Audio(params)) = &track.codec_params else {
        return Err(unsupported("no Opus audio track: WEBM_OPUS carries Opus"));
    };
    let private = params
        .extra_data
        .as_deref()
        .ok_or_else(|| corrupt("the Opus track has no OpusHead (CodecPrivate)"))?;
    let head = parse_head(private)?;
    let input_rate = if head.input_rate == 0 {
        OPUS_RATE
    } else {
        head.input_rate
    };
    if let Some(declared) = declared {
        check_declared(declared, input_rate, head.channels)?;
    }
    let channels = usize::from(head.channels);
    // Never past what the byte limit holds as FLOAT32, nor just past the limit asked.
    let mut most = MAX_UTTERANCE_BYTES / 4;
    if let Some(seconds) = most_seconds {
        most = most.min(((seconds * OPUS_RATE as f64) as usize + 1) * channels);
    }
    let mut decoder = opus_decoder::OpusDecoder::new(OPUS_RATE, channels)
        .map_err(|error| corrupt(&format!("the Opus decoder: {error}")))?;
    let mut frame = vec![0f32; MAX_PACKET_FRAMES * channels];
    let mut samples = Vec::new();
    let mut skip = head.pre_skip as usize * channels;
    let mut packets = 0usize;
    while samples.len() < most {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            // A live recording (sizes unknown, as MediaRecorder writes) has no end marker:
            // it ends where its bytes do.
            Ok(None) | Err(symphonia::core::errors::Error::IoError(_)) => break,
            Err(_) if prefix => break,
            Err(error) => return Err(failed(&format!("block {packets}"), error)),
        };
        if packet.track_id != track.id {
            continue;
        }
        packets += 1;
        let decoded = decoder
            .decode_float(&packet.data, &mut frame, false)
            .map_err(|error| corrupt(&format!("Opus packet {packets}: {error}")))?;
        let mut new = &frame[..decoded * channels];
        let skipped = skip.min(new.len());
        skip -= skipped;
        new = &new[skipped..];
        samples.extend_from_slice(&new[..new.len().min(most - samples.len())]);
    }
    Ok(Decoded {
        samples,
        sample_rate: OPUS_RATE,
        channels: head.channels,
    })
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
