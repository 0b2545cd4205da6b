//! Ogg Opus as opusenc writes it: the fixtures transcribe as their WAVs do, in chunks of any
//! size or whole; a long stream is refused while it streams, from what its pages declare;
//! broken, cut or foreign streams get a precise error.

use voice_search::asr::TranscribeOptions;
use voice_search::audio::{self, AudioError, AudioFormat, Encoding, UtteranceBuffer};

use super::bytes_sent_before_too_long;
use crate::common::{fixture_bytes, wav_format, whisper};

fn ogg_opus() -> AudioFormat {
    AudioFormat {
        encoding: Encoding::OggOpus,
        sample_rate: None,
        channels: None,
    }
}

fn transcript(bytes: &[u8], format: &AudioFormat) -> String {
    let prepared = audio::prepare(bytes, format).unwrap();
    whisper()
        .transcribe(&prepared.samples, &TranscribeOptions::default())
        .unwrap()
        .text
}

#[test]
fn ogg_opus_fixtures_transcribe_as_their_wavs_do() {
    for name in ["q0004", "q0070"] {
        let opus = fixture_bytes(&format!("{name}.opus"));
        let wav = fixture_bytes(&format!("{name}.wav"));
        assert_eq!(
            transcript(&opus, &ogg_opus()),
            transcript(&wav, &wav_format()),
            "{name}"
        );
        let decoded = audio::decode(&opus, &ogg_opus()).unwrap();
        let from_wav = audio::decode(&wav, &wav_format()).unwrap();
        assert_eq!((decoded.sample_rate, decoded.channels), (48_000, 1));
        assert!(
            (decoded.duration_seconds() - from_wav.duration_seconds()).abs() < 0.01,
            "{name}: {} s decoded, {} s in the WAV",
            decoded.duration_seconds(),
            from_wav.duration_seconds()
        );
    }
}

#[test]
fn chunks_of_any_size_give_what_the_whole_stream_gives() {
    let opus = fixture_bytes("q0004.opus");
    let whole = UtteranceBuffer::whole(ogg_opus(), 30.0, opus.clone()).unwrap();
    for size in [1, 17, 4_096] {
        let mut buffer = UtteranceBuffer::new(ogg_opus(), 30.0);
        for chunk in opus.chunks(size) {
            buffer.push(chunk).unwrap();
        }
        assert_eq!(buffer.bytes(), whole.bytes());
        assert_eq!(buffer.seconds(), whole.seconds(), "chunks of {size}");
    }
    assert!(
        (whole.seconds() - 2.388).abs() < 0.01,
        "{}",
        whole.seconds()
    );
    // The start of a stream still arriving decodes up to its last whole page.
    let prefix = audio::decode_prefix(&opus[..opus.len() * 2 / 3], &ogg_opus()).unwrap();
    assert!(prefix.duration_seconds() > 0.5 && prefix.duration_seconds() < 2.3);
}

#[test]
fn a_long_stream_is_refused_while_it_streams_however_small() {
    // 40 s of near silence in 22 KB: 30 s of audio declared by its pages comes well
    // before the last byte.
    let opus = fixture_bytes("quiet_40s.opus");
    let sent = bytes_sent_before_too_long(ogg_opus(), &opus, 512);
    assert!(
        sent < opus.len() * 9 / 10,
        "refused only after {sent} of {} bytes",
        opus.len()
    );
}

#[test]
fn broken_cut_or_foreign_streams_get_a_precise_error() {
    let opus = fixture_bytes("q0004.opus");
    let error = |bytes: &[u8], format: AudioFormat| audio::decode(bytes, &format).unwrap_err();
    let cut = error(&opus[..opus.len() - 100], ogg_opus());
    assert!(
        matches!(&cut, AudioError::CorruptOgg(what) if what.contains("ends inside a page")),
        "{cut}"
    );
    let wav = error(&fixture_bytes("q0004.wav"), ogg_opus());
    assert!(
        matches!(&wav, AudioError::CorruptOgg(what) if what.contains("no Ogg page starts at byte 0")),
        "{wav}"
    );
    let mut flipped = opus.clone();
    flipped[opus.len() / 2] ^= 0x55;
    let flipped = error(&flipped, ogg_opus());
    assert!(matches!(flipped, AudioError::CorruptOgg(_)), "{flipped}");
    let declared = AudioFormat {
        channels: Some(2),
        ..ogg_opus()
    };
    let mismatch = error(&opus, declared);
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
