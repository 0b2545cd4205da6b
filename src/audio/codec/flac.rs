//! FLAC, as iOS and many SDKs send lossless speech, read by symphonia. FLAC compresses
//! silence to almost nothing, so its bytes say little about its length: the header's
//! total (STREAMINFO), when it gives one, is checked as soon as it arrives, and the audio
//! itself by trials ([`LengthTrials`]) over its frame headers from 1 KiB of audio bytes.
//! The metadata blocks before the audio are walked once, as they arrive, and bounded in
//! bytes and count. Decoding never goes past the header's total, nor past the decoded
//! samples' cap, which refuses the stream.

use std::io::Cursor;

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::default::codecs::FlacDecoder;
use symphonia::default::formats::FlacReader;

use super::trial::{most_samples, LengthTrials};
use crate::audio::format::{
    check_channels, check_declared, check_rate, too_many_samples, MAX_DECODED_SAMPLES,
};
use crate::audio::{AudioError, AudioFormat, Decoded};

/// Audio bytes (past the metadata blocks) before the first trial decode.
const FIRST_TRIAL_BYTES: usize = 1024;
/// "fLaC", a metadata block header and STREAMINFO's first 18 bytes.
const STREAMINFO_BYTES: usize = 4 + 4 + 18;

/// Most bytes of metadata blocks before the audio, and most blocks: a phone's FLAC has
/// a few small ones; nothing larger is speech.
const MAX_METADATA_BYTES: usize = 1024 * 1024;
const MAX_METADATA_BLOCKS: usize = 256;

/// What a FLAC stream's bytes so far have shown: how far its metadata walk has come,
/// where its audio starts, and its length trials.
#[derive(Debug, Clone)]
pub struct FlacScan {
    next_block: usize,
    blocks: usize,
    audio_at: Option<usize>,
    trials: LengthTrials,
}

impl Default for FlacScan {
    fn default() -> Self {
        Self {
            next_block: 4,
            blocks: 0,
            audio_at: None,
            trials: LengthTrials::new(FIRST_TRIAL_BYTES),
        }
    }
}

impl FlacScan {
    /// Checks the stream (`bytes`, the utterance so far) against `max_seconds` where it
    /// is due: the header's total once it has arrived and, while it is `streaming`, the
    /// frames' lengths at each doubling of its audio bytes.
    pub fn check(
        &mut self,
        bytes: &[u8],
        max_seconds: f64,
        streaming: bool,
    ) -> Result<(), AudioError> {
        if let Some((rate, total)) = stream_info(bytes)? {
            self.trials.declared(total as f64 / rate as f64);
        }
        self.walk(bytes)?;
        if !streaming {
            return Ok(());
        }
        let audio_bytes = self.audio_at.and_then(|at| bytes.len().checked_sub(at));
        self.trials
            .run(audio_bytes, || frame_seconds(bytes, max_seconds))
    }

    /// The most audio found or declared so far, in seconds.
    pub fn seconds(&self) -> f64 {
        self.trials.seconds()
    }

    /// Walks on over the metadata block headers that have arrived, each once.
    fn walk(&mut self, bytes: &[u8]) -> Result<(), AudioError> {
        while self.audio_at.is_none() {
            let Some(header) = bytes.get(self.next_block..self.next_block + 4) else {
                return Ok(());
            };
            let length = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
            self.blocks += 1;
            self.next_block += 4 + length;
            if self.blocks > MAX_METADATA_BLOCKS || self.next_block > MAX_METADATA_BYTES {
                return Err(corrupt(&format!(
                    "the metadata before the audio passes {MAX_METADATA_BLOCKS} blocks or {} KiB, more than speech needs: send the audio without pictures or padding",
                    MAX_METADATA_BYTES / 1024
                )));
            }
            if header[0] & 0x80 != 0 {
                self.audio_at = Some(self.next_block);
            }
        }
        Ok(())
    }
}

/// Seconds of audio in the frames of a stream still arriving, from their headers (each
/// says its block size), up to just past `max_seconds`.
fn frame_seconds(bytes: &[u8], max_seconds: f64) -> Result<f64, AudioError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut reader = match FlacReader::try_new(source, FormatOptions::default()) {
        Ok(reader) => reader,
        Err(symphonia::core::errors::Error::IoError(_)) => return Err(AudioError::Empty),
        Err(error) => return Err(failed("the header", error)),
    };
    let rate = reader
        .tracks()
        .first()
        .and_then(|track| match &track.codec_params {
            Some(CodecParameters::Audio(params)) => params.sample_rate,
            _ => None,
        })
        .ok_or_else(|| corrupt("no sample rate"))?;
    check_rate(rate)?;
    let most = (max_seconds * f64::from(rate)) as u64 + 1;
    let mut frames = 0u64;
    while frames < most {
        match reader.next_packet() {
            Ok(Some(packet)) => frames += packet.dur.get(),
            // The stream ends here for now, or a frame is still arriving.
            Ok(None) | Err(_) => break,
        }
    }
    Ok(frames as f64 / f64::from(rate))
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
    let capped = samples.len() >= MAX_DECODED_SAMPLES;
    if capped && !prefix && matches!(reader.next_packet(), Ok(Some(_))) {
        return Err(too_many_samples(rate, channels));
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
