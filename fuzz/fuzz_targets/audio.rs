//! Any bytes as audio of any declared format: a verdict, never a panic; the same verdict
//! whole or in chunks; finite samples when decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_search::audio::{self, AudioFormat, Encoding, UtteranceBuffer};

fuzz_target!(|input: &[u8]| {
    let Some((&[kind, rate, chunk], bytes)) = input.split_first_chunk::<3>() else {
        return;
    };
    let encoding = [Encoding::Wav, Encoding::Linear16, Encoding::Float32, Encoding::Mulaw, Encoding::OggOpus, Encoding::Flac, Encoding::WebmOpus]
        [usize::from(kind % 7)];
    let rates = [None, Some(0), Some(8_000), Some(16_000), Some(48_000), Some(4_000_000)];
    let format = AudioFormat {
        encoding,
        sample_rate: rates[usize::from(rate) % rates.len()],
        channels: [None, Some(1), Some(2), Some(0), Some(9)][usize::from(kind / 4 % 5)],
    };
    if format.validate().is_err() {
        return;
    }
    // The verdict the server reaches: the buffer's checks, then the one decode.
    let decoded = |bytes: Vec<u8>| audio::decode_within(&bytes, &format, 30.0).is_ok();
    let whole = UtteranceBuffer::whole(format, 30.0, bytes.to_vec())
        .is_ok_and(|mut buffer| decoded(buffer.take()));
    let mut buffer = UtteranceBuffer::new(format, 30.0);
    let chunked = bytes
        .chunks(usize::from(chunk).max(1) * 64)
        .all(|part| buffer.push(part).is_ok())
        && buffer.finish().is_ok_and(|(bytes, _)| decoded(bytes));
    assert_eq!(whole, chunked, "whole and chunked disagree");
    if let Ok(prepared) = audio::prepare(bytes, &format) {
        assert!(prepared.samples.iter().all(|s| s.is_finite()));
    }
});
