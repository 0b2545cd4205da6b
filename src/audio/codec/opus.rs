//! The Opus packet decoder Ogg and WebM share: the identification header, and packets
//! decoded in order with the encoder's pre-skip dropped, up to a number of samples.

use crate::audio::format::check_declared;
use crate::audio::{AudioError, AudioFormat, Decoded};

/// Opus always runs at 48 kHz; granule positions count samples at this rate.
pub const OPUS_RATE: u32 = 48_000;
/// Longest Opus packet: 120 ms.
const MAX_PACKET_FRAMES: usize = 5_760;
/// The identification header's fields that decoding needs (Ogg's first packet, WebM's
/// codec private data).
#[derive(Debug, Clone, Copy)]
pub(in crate::audio) struct OpusHead {
    pub channels: u16,
    pub pre_skip: u64,
    /// The rate the encoder was given (0: not said); Opus itself always decodes at 48 kHz.
    pub input_rate: u32,
}

/// Reads an identification header (Ogg's first packet, WebM's codec private data).
pub(in crate::audio) fn parse_head(body: &[u8]) -> Result<OpusHead, AudioError> {
    if body.len() < 19 || &body[..8] != b"OpusHead" {
        return Err(corrupt(
            "the first page holds no OpusHead: is this Ogg Opus (not Vorbis, not WebM)?".into(),
        ));
    }
    if body[8] >> 4 != 0 {
        return Err(unsupported(&format!("OpusHead version {}", body[8])));
    }
    let channels = u16::from(body[9]);
    if body[18] != 0 || !(1..=2).contains(&channels) {
        return Err(unsupported(&format!(
            "{channels} channels in channel mapping family {}: mono or stereo (family 0) is read",
            body[18]
        )));
    }
    Ok(OpusHead {
        channels,
        pre_skip: u64::from(u16::from_le_bytes([body[10], body[11]])),
        input_rate: u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")),
    })
}

impl OpusHead {
    /// A rate the client declared must be the one the encoder was given (as Google
    /// Speech-to-Text has it; 48 kHz when the header does not say), channels the header's.
    pub(in crate::audio) fn check_declared(
        &self,
        declared: &AudioFormat,
    ) -> Result<(), AudioError> {
        let input_rate = if self.input_rate == 0 {
            OPUS_RATE
        } else {
            self.input_rate
        };
        check_declared(declared, input_rate, self.channels)
    }
}

/// Opus packets of one stream decoded in order, the encoder's pre-skip dropped, up to a
/// number of samples.
pub(in crate::audio) struct OpusSamples {
    decoder: opus_decoder::OpusDecoder,
    channels: u16,
    /// One packet's samples: at most 120 ms.
    frame: Vec<f32>,
    skip: usize,
    samples: Vec<f32>,
    most: usize,
    /// Packets decoded so far, for naming one that fails.
    packets: usize,
}

impl OpusSamples {
    pub(in crate::audio) fn new(head: OpusHead, most: usize) -> Result<Self, String> {
        let channels = usize::from(head.channels);
        Ok(Self {
            decoder: opus_decoder::OpusDecoder::new(OPUS_RATE, channels)
                .map_err(|error| format!("the Opus decoder: {error}"))?,
            channels: head.channels,
            frame: vec![0f32; MAX_PACKET_FRAMES * channels],
            skip: head.pre_skip as usize * channels,
            samples: Vec::new(),
            most,
            packets: 0,
        })
    }

    /// Decodes one packet; false once `most` samples are in.
    pub(in crate::audio) fn push(&mut self, packet: &[u8]) -> Result<bool, String> {
        self.packets += 1;
        let frames = self
            .decoder
            .decode_float(packet, &mut self.frame, false)
            .map_err(|error| format!("Opus packet {}: {error}", self.packets))?;
        let new = &self.frame[..frames * usize::from(self.channels)];
        let skipped = self.skip.min(new.len());
        self.skip -= skipped;
        let new = &new[skipped..];
        let room = self.most - self.samples.len();
        self.samples.extend_from_slice(&new[..new.len().min(room)]);
        Ok(self.samples.len() < self.most)
    }

    pub(in crate::audio) fn finish(self) -> Decoded {
        Decoded {
            samples: self.samples,
            sample_rate: OPUS_RATE,
            channels: self.channels,
        }
    }
}

fn corrupt(what: String) -> AudioError {
    AudioError::CorruptOgg(what)
}

fn unsupported(what: &str) -> AudioError {
    AudioError::UnsupportedOgg(what.to_string())
}

/// Samples per channel at 48 kHz that an Opus packet holds, from its TOC byte and, for a
/// packet of several frames, its frame count byte (RFC 6716, section 3.1); 0 for an empty
/// or cut packet.
pub(in crate::audio) fn packet_frames(packet: &[u8]) -> usize {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = usize::from(toc >> 3);
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][config % 4],
        12..=15 => [480, 960][config % 2],
        _ => [120, 240, 480, 960][config % 4],
    };
    let count = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(0, |&byte| usize::from(byte & 0x3F)),
    };
    frame * count
}

#[cfg(test)]
mod tests {
    use super::packet_frames;

    #[test]
    fn a_packet_says_its_length_in_its_toc() {
        // SILK 20 ms, one frame; CELT 2.5 ms, two frames; hybrid 10 ms, code 3 with 5.
        assert_eq!(packet_frames(&[1 << 3]), 960);
        assert_eq!(packet_frames(&[(16 << 3) | 1]), 240);
        assert_eq!(packet_frames(&[(12 << 3) | 3, 5]), 2400);
        assert_eq!(packet_frames(&[(31 << 3) | 3]), 0, "a cut code-3 packet");
        assert_eq!(packet_frames(&[]), 0);
    }
}
