//! FLAC as the flac tool writes it: the fixtures decode to their WAVs' samples exactly and
//! transcribe the same, whole or in chunks of any size; a stream that does not say its
//! length and compresses 10 minutes of silence into 28 KB is refused while it streams;
//! cut or foreign bytes get a precise error.

use voice_search::asr::TranscribeOptions;
use voice_search::audio::{self, AudioError, AudioFormat, Encoding, UtteranceBuffer};

use super::bytes_sent_before_too_long;
use crate::common::{fixture_bytes, wav_format, whisper};

fn flac() -> AudioFormat {
    AudioFormat {
        encoding: Encoding::Flac,
        sample_rate: None,
        channels: None,
    }
}

#[test]
fn flac_fixtures_are_their_wavs_sample_for_sample() {
    for name in ["q0004", "q0008"] {
        let decoded = audio::decode(&fixture_bytes(&format!("{name}.flac")), &flac()).unwrap();
        let wav = audio::decode(&fixture_bytes(&format!("{name}.wav")), &wav_format()).unwrap();
        assert_eq!(decoded, wav, "{name}");
    }
    let prepared = audio::prepare(&fixture_bytes("q0004.flac"), &flac()).unwrap();
    let text = whisper()
        .transcribe(&prepared.samples, &TranscribeOptions::default())
        .unwrap()
        .text;
    assert_eq!(text, "You will now be placed into the conference.");
}

#[test]
fn chunks_of_any_size_give_what_the_whole_stream_gives() {
    let bytes = fixture_bytes("q0008.flac");
    let (whole, _) = UtteranceBuffer::whole(flac(), 30.0, bytes.clone())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(whole, bytes);
    for size in [1, 333, 8_192] {
        let mut buffer = UtteranceBuffer::new(flac(), 30.0);
        for chunk in bytes.chunks(size) {
            buffer.push(chunk).unwrap();
        }
        let (chunked, seconds) = buffer.finish().unwrap();
        assert_eq!(chunked, bytes);
        // The header declares the length, counted before any decode.
        assert!((seconds - 2.176).abs() < 0.01, "{seconds}");
    }
    // The one decode the server makes is the plain decode, within the limit.
    let within = audio::decode_within(&bytes, &flac(), 30.0).unwrap();
    assert_eq!(within, audio::decode(&bytes, &flac()).unwrap());
    let prefix = audio::decode_prefix(&bytes[..bytes.len() / 2], &flac()).unwrap();
    assert!(prefix.duration_seconds() > 0.5 && prefix.duration_seconds() < 2.1);
}

#[test]
fn silence_that_hides_its_length_is_refused_while_it_streams() {
    let bytes = fixture_bytes("silence_10min.flac");
    let sent = bytes_sent_before_too_long(flac(), &bytes, 256);
    assert!(
        sent < bytes.len() / 4,
        "refused only after {sent} of {} bytes",
        bytes.len()
    );
    // Sent whole, its one decode stops just past the limit and refuses it.
    let whole = audio::decode_within(&bytes, &flac(), 30.0).unwrap_err();
    assert!(
        matches!(whole, AudioError::TooLong { limit, .. } if limit == 30.0),
        "{whole}"
    );
}

#[test]
fn cut_or_foreign_flac_gets_a_precise_error() {
    let bytes = fixture_bytes("q0004.flac");
    let cut = audio::decode(&bytes[..bytes.len() / 2], &flac()).unwrap_err();
    assert!(matches!(cut, AudioError::CorruptFlac(_)), "{cut}");
    let wav = audio::decode(&fixture_bytes("q0004.wav"), &flac()).unwrap_err();
    assert!(
        matches!(&wav, AudioError::CorruptFlac(what) if what.contains("fLaC")),
        "{wav}"
    );
    let declared = AudioFormat {
        sample_rate: Some(8_000),
        ..flac()
    };
    let mismatch = audio::decode(&bytes, &declared).unwrap_err();
    assert!(
        matches!(
            mismatch,
            AudioError::HeaderMismatch {
                what: "sample rate",
                ..
            }
        ),
        "{mismatch}"
    );
}

/// `bytes` (a FLAC stream) with `blocks` empty PADDING blocks after its STREAMINFO.
fn padded(bytes: &[u8], blocks: usize) -> Vec<u8> {
    let last = bytes[4] & 0x80;
    let mut padded = bytes[..4].to_vec();
    padded.push(bytes[4] & 0x7F);
    padded.extend_from_slice(&bytes[5..4 + 4 + 34]);
    for index in 0..blocks {
        let flag = if index + 1 == blocks { last } else { 0 };
        padded.extend_from_slice(&[0x01 | flag, 0, 0, 0]);
    }
    padded.extend_from_slice(&bytes[4 + 4 + 34..]);
    padded
}

#[test]
fn metadata_is_bounded_before_the_audio() {
    let bytes = fixture_bytes("q0008.flac");
    // A few padding blocks are FLAC as tools write it.
    let few = padded(&bytes, 3);
    assert_eq!(
        audio::decode(&few, &flac()).unwrap(),
        audio::decode(&bytes, &flac()).unwrap()
    );
    // Thousands of them, streamed in small messages, are refused once past the bound.
    let many = padded(&bytes, 100_000);
    let mut buffer = UtteranceBuffer::new(flac(), 30.0);
    let mut sent = 0;
    let refused = many.chunks(256).find_map(|chunk| {
        sent += chunk.len();
        buffer.push(chunk).err()
    });
    assert!(
        matches!(&refused, Some(AudioError::CorruptFlac(what)) if what.contains("metadata")),
        "{refused:?}"
    );
    assert!(sent < 4 * 1024, "refused only after {sent} bytes");
}

#[test]
fn past_the_decoded_samples_cap_a_stream_is_refused_not_cut() {
    // Ten minutes of 16 kHz mono decode past the cap; its header says no total.
    let bytes = fixture_bytes("silence_10min.flac");
    let refused = audio::decode(&bytes, &flac()).unwrap_err();
    assert!(
        matches!(refused, AudioError::TooManySamples { .. }),
        "{refused}"
    );
}
