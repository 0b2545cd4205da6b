//! Opus in WebM as a live recorder writes it (sizes unknown, as Chrome's MediaRecorder
//! does; the fixtures come from ffmpeg's `-live 1`): a clip transcribes as its WAV does,
//! whole or in chunks of any size; a long stream is refused while it streams; foreign or
//! damaged bytes get a precise error.

use voice_search::asr::TranscribeOptions;
use voice_search::audio::{self, AudioError, AudioFormat, Encoding, UtteranceBuffer};

use super::bytes_sent_before_too_long;
use crate::common::{fixture_bytes, wav_format, whisper};

fn webm_opus() -> AudioFormat {
    AudioFormat {
        encoding: Encoding::WebmOpus,
        sample_rate: None,
        channels: None,
    }
}

#[test]
fn a_webm_opus_clip_transcribes_as_its_wav_does() {
    let webm = fixture_bytes("q0004.webm");
    let prepared = audio::prepare(&webm, &webm_opus()).unwrap();
    assert_eq!(
        (prepared.info.sample_rate, prepared.info.channels),
        (48_000, 1)
    );
    let wav = audio::decode(&fixture_bytes("q0004.wav"), &wav_format()).unwrap();
    assert!(
        (prepared.info.duration_seconds - wav.duration_seconds()).abs() < 0.03,
        "{} s decoded, {} s in the WAV",
        prepared.info.duration_seconds,
        wav.duration_seconds()
    );
    let text = whisper()
        .transcribe(&prepared.samples, &TranscribeOptions::default())
        .unwrap()
        .text;
    assert_eq!(text, "You will now be placed into the conference.");
}

#[test]
fn chunks_of_any_size_give_what_the_whole_stream_gives() {
    let webm = fixture_bytes("q0004.webm");
    let (whole, _) = UtteranceBuffer::whole(webm_opus(), 30.0, webm.clone())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(whole, webm);
    for size in [1, 250, 4_096] {
        let mut buffer = UtteranceBuffer::new(webm_opus(), 30.0);
        for chunk in webm.chunks(size) {
            buffer.push(chunk).unwrap();
        }
        assert_eq!(buffer.finish().unwrap().0, webm);
    }
    // The one decode the server makes is the plain decode, within the limit.
    let within = audio::decode_within(&webm, &webm_opus(), 30.0).unwrap();
    assert_eq!(within, audio::decode(&webm, &webm_opus()).unwrap());
    let prefix = audio::decode_prefix(&webm[..webm.len() / 2], &webm_opus()).unwrap();
    assert!(prefix.duration_seconds() > 0.5 && prefix.duration_seconds() < 2.0);
}

#[test]
fn a_long_stream_is_refused_while_it_streams() {
    // 75 s of near silence in 56 KB: refused once a check has decoded past 30 s of it.
    let webm = fixture_bytes("quiet_75s.webm");
    let sent = bytes_sent_before_too_long(webm_opus(), &webm, 512);
    assert!(
        sent < webm.len() * 3 / 4,
        "refused only after {sent} of {} bytes",
        webm.len()
    );
}

#[test]
fn foreign_or_damaged_webm_gets_a_precise_error() {
    let wav = audio::decode(&fixture_bytes("q0004.wav"), &webm_opus()).unwrap_err();
    assert!(matches!(wav, AudioError::CorruptWebm(_)), "{wav}");
    let webm = fixture_bytes("q0004.webm");
    let mut flipped = webm.clone();
    for byte in &mut flipped[100..140] {
        *byte ^= 0xA5;
    }
    let flipped = audio::decode(&flipped, &webm_opus());
    assert!(
        matches!(
            flipped,
            Err(AudioError::CorruptWebm(_) | AudioError::UnsupportedWebm(_))
        ),
        "{flipped:?}"
    );
    let declared = AudioFormat {
        channels: Some(2),
        ..webm_opus()
    };
    let mismatch = audio::decode(&webm, &declared).unwrap_err();
    assert!(
        matches!(
            mismatch,
            AudioError::HeaderMismatch {
                what: "channel count",
                ..
            }
        ),
        "{mismatch}"
    );
}
