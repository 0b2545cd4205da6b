//! Mutated WAV, Ogg and WebM Opus, FLAC and raw audio: the same verdict fed whole or in
//! random chunks, and finite samples when decoded.

use voice_search::audio::{self, AudioFormat, Encoding, UtteranceBuffer};

use crate::common::fixture_bytes;
use crate::common::seeded::{Seeded, CASES};

pub(crate) fn random_format(seed: &mut Seeded) -> AudioFormat {
    let encoding = [
        Encoding::Wav,
        Encoding::Linear16,
        Encoding::Float32,
        Encoding::Mulaw,
        Encoding::OggOpus,
        Encoding::Flac,
        Encoding::WebmOpus,
    ][seed.below(7)];
    let rates = [
        None,
        Some(0),
        Some(8_000),
        Some(16_000),
        Some(44_100),
        Some(4_000_000),
    ];
    AudioFormat {
        encoding,
        sample_rate: rates[seed.below(rates.len())]
            .filter(|_| encoding != Encoding::Wav || seed.below(2) == 0),
        channels: [None, Some(0), Some(1), Some(2), Some(9)][seed.below(5)],
    }
}

#[test]
fn mutated_audio_gets_a_verdict_the_same_whole_or_chunked() {
    let bases = [
        fixture_bytes("q0004.wav"),
        fixture_bytes("q0004.opus"),
        fixture_bytes("q0008.flac"),
        fixture_bytes("q0004.webm"),
    ];
    let mut seed = Seeded(12);
    let (mut tried, mut accepted) = (0, 0);
    for case in 0..CASES {
        let base = &bases[[0, 0, 1, 2, 3][seed.below(5)]];
        let bytes = seed.mutate(base);
        let format = random_format(&mut seed);
        if format.validate().is_err() {
            continue;
        }
        // The verdict the server reaches: the buffer's checks, then the one decode.
        let decoded = |bytes: Vec<u8>| audio::decode_within(&bytes, &format, 30.0).map(|_| ());
        let whole = UtteranceBuffer::whole(format, 30.0, bytes.clone())
            .and_then(|mut buffer| decoded(buffer.take()));
        let mut buffer = UtteranceBuffer::new(format, 30.0);
        let mut chunked = Ok(());
        let mut at = 0;
        while at < bytes.len() && chunked.is_ok() {
            let end = (at + 1 + seed.below(8_192)).min(bytes.len());
            chunked = buffer.push(&bytes[at..end]);
            at = end;
        }
        let chunked = chunked.and_then(|()| decoded(buffer.finish()?.0));
        tried += 1;
        accepted += usize::from(whole.is_ok());
        assert_eq!(
            whole.is_ok(),
            chunked.is_ok(),
            "case {case}: {whole:?} whole, {chunked:?} chunked"
        );
        if let Ok(prepared) = audio::prepare(&bytes, &format) {
            assert!(
                prepared.samples.iter().all(|s| s.is_finite()),
                "case {case}: samples not finite"
            );
        }
    }
    assert!(
        0 < accepted && accepted < tried,
        "{accepted} of {tried} accepted: the cases should be mixed"
    );
}
