//! Raw PCM: signed 16-bit, 32-bit float and G.711 mu-law, interleaved.

use crate::audio::{AudioError, Encoding};

/// Bytes per sample of a raw encoding; frames must be whole.
pub(in crate::audio) fn raw_sample_bytes(encoding: Encoding) -> usize {
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

pub(in crate::audio) fn decode_raw(
    bytes: &[u8],
    encoding: Encoding,
    channels: u16,
) -> Result<Vec<f32>, AudioError> {
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
