//! The audio front end on generated signals and on fixture clips; lying headers, chunking
//! and unbounded utterances (`errors`); mutated input of every format (`fuzz`).

use std::f32::consts::PI;
use std::io::Cursor;

use voice_search::audio::{
    self, decode, normalize, resample, vad, AudioError, AudioFormat, Encoding, UtteranceBuffer,
};

mod errors;
mod flac;
pub(crate) mod fuzz;
mod ogg_opus;
mod webm_opus;

use crate::common::{fixture_bytes, wav_format};

/// Streams `bytes` in `chunk`-byte pieces into a buffer with a 30 s limit; asserts it
/// refuses them as too long, and returns how many bytes had been sent by then.
fn bytes_sent_before_too_long(format: AudioFormat, bytes: &[u8], chunk: usize) -> usize {
    let mut buffer = UtteranceBuffer::new(format, 30.0);
    let mut sent = 0;
    let refused = bytes.chunks(chunk).find_map(|piece| {
        sent += piece.len();
        buffer.push(piece).err()
    });
    assert!(
        matches!(refused, Some(AudioError::TooLong { limit, .. }) if limit == 30.0),
        "{refused:?}"
    );
    sent
}

fn raw_format(encoding: Encoding, rate: u32, channels: u16) -> AudioFormat {
    AudioFormat {
        encoding,
        sample_rate: Some(rate),
        channels: Some(channels),
    }
}

fn tone(freq: f32, rate: u32, seconds: f32, amplitude: f32) -> Vec<f32> {
    let n = (rate as f32 * seconds) as usize;
    (0..n)
        .map(|i| amplitude * (2.0 * PI * freq * i as f32 / rate as f32).sin())
        .collect()
}

/// Writes samples (full scale 1.0) as a WAV file with the given sample layout.
fn wav_bytes(samples: &[f32], rate: u32, channels: u16, bits: u16, float: bool) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut cursor = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for &s in samples {
        if float {
            writer.write_sample(s).unwrap();
        } else {
            let max = ((1i64 << (bits - 1)) - 1) as f32;
            writer.write_sample((s * max).round() as i32).unwrap();
        }
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

fn db(ratio: f32) -> f32 {
    20.0 * ratio.log10()
}

/// Frequency from zero crossings of the middle of a signal.
fn frequency(samples: &[f32], rate: u32) -> f32 {
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    let crossings = middle
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    crossings as f32 / 2.0 / (middle.len() as f32 / rate as f32)
}

#[test]
fn wav_decodes_every_supported_sample_format() {
    let signal = tone(440.0, 16_000, 0.1, 0.5);
    for (bits, float) in [
        (8, false),
        (16, false),
        (24, false),
        (32, false),
        (32, true),
    ] {
        let bytes = wav_bytes(&signal, 16_000, 1, bits, float);
        let decoded = decode(&bytes, &wav_format()).unwrap();
        assert_eq!(decoded.sample_rate, 16_000);
        assert_eq!(decoded.samples.len(), signal.len(), "{bits}-bit");
        let tolerance = if bits == 8 { 0.02 } else { 1e-3 };
        for (a, b) in decoded.samples.iter().zip(&signal) {
            assert!(
                (a - b).abs() < tolerance,
                "{bits}-bit float={float}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn wav_keeps_channels_and_rate_from_header() {
    let stereo: Vec<f32> = tone(300.0, 44_100, 0.05, 0.3)
        .iter()
        .flat_map(|&s| [s, -s])
        .collect();
    let decoded = decode(&wav_bytes(&stereo, 44_100, 2, 16, false), &wav_format()).unwrap();
    assert_eq!((decoded.sample_rate, decoded.channels), (44_100, 2));
    assert_eq!(decoded.frames(), stereo.len() / 2);
}

#[test]
fn raw_encodings_decode() {
    let values = [0.5f32, -0.25, 0.0, 0.75];
    let linear16: Vec<u8> = values
        .iter()
        .flat_map(|&v| ((v * 32768.0) as i16).to_le_bytes())
        .collect();
    let decoded = decode(&linear16, &raw_format(Encoding::Linear16, 8_000, 1)).unwrap();
    assert_eq!(decoded.samples, values);

    let float32: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let decoded = decode(&float32, &raw_format(Encoding::Float32, 48_000, 2)).unwrap();
    assert_eq!(
        (decoded.samples.as_slice(), decoded.channels),
        (&values[..], 2)
    );

    // 0xFF and 0x7F are the two zeros of mu-law; 0x80 and 0x00 its extremes.
    let decoded = decode(
        &[0xFF, 0x7F, 0x80, 0x00],
        &raw_format(Encoding::Mulaw, 8_000, 1),
    )
    .unwrap();
    assert_eq!(decoded.samples[0], 0.0);
    assert_eq!(decoded.samples[1], 0.0);
    assert!(decoded.samples[2] > 0.97 && decoded.samples[3] < -0.97);
}

#[test]
fn bad_input_gets_a_precise_error() {
    let good = wav_bytes(&tone(440.0, 16_000, 0.1, 0.5), 16_000, 1, 16, false);
    let lin = |rate| raw_format(Encoding::Linear16, rate, 1);

    assert_eq!(decode(&[], &lin(16_000)), Err(AudioError::Empty));
    assert!(matches!(
        decode(&[1, 2, 3], &lin(16_000)),
        Err(AudioError::PartialFrame {
            bytes: 3,
            frame_bytes: 2,
            ..
        })
    ));
    assert_eq!(
        decode(&[0, 0], &lin(4_000)),
        Err(AudioError::SampleRateOutOfRange(4_000))
    );
    assert_eq!(
        decode(&[0, 0], &lin(200_000)),
        Err(AudioError::SampleRateOutOfRange(200_000))
    );
    let no_rate = AudioFormat {
        encoding: Encoding::Linear16,
        sample_rate: None,
        channels: None,
    };
    assert_eq!(
        decode(&[0, 0], &no_rate),
        Err(AudioError::MissingSampleRate(Encoding::Linear16))
    );

    let nan: Vec<u8> = [0.1f32, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(
        decode(&nan, &raw_format(Encoding::Float32, 16_000, 1)),
        Err(AudioError::NonFinite { index: 1 })
    );
    let inf: Vec<u8> = [f32::INFINITY]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert!(matches!(
        decode(&inf, &raw_format(Encoding::Float32, 16_000, 1)),
        Err(AudioError::NonFinite { index: 0 })
    ));

    // Cut in the middle of the data: the header now claims more than there is.
    assert!(matches!(
        decode(&good[..good.len() / 2], &wav_format()),
        Err(AudioError::TruncatedWav { .. })
    ));
    // Cut inside the header.
    assert!(matches!(
        decode(&good[..20], &wav_format()),
        Err(AudioError::CorruptWav(_))
    ));
    // Not a WAV at all.
    assert!(matches!(
        decode(&[7u8; 100], &wav_format()),
        Err(AudioError::CorruptWav(_))
    ));
    // A header with no samples.
    let empty = wav_bytes(&[], 16_000, 1, 16, false);
    assert_eq!(decode(&empty, &wav_format()), Err(AudioError::Empty));
    // The config contradicts the header.
    let mismatch = AudioFormat {
        encoding: Encoding::Wav,
        sample_rate: Some(8_000),
        channels: None,
    };
    assert!(matches!(
        decode(&good, &mismatch),
        Err(AudioError::HeaderMismatch {
            what: "sample rate",
            declared: 8_000,
            header: 16_000
        })
    ));
    // A header whose rate is out of range.
    let slow = wav_bytes(&tone(100.0, 4_000, 0.1, 0.5), 4_000, 1, 16, false);
    assert_eq!(
        decode(&slow, &wav_format()),
        Err(AudioError::SampleRateOutOfRange(4_000))
    );
}

#[test]
fn garbage_never_panics() {
    // A deterministic spread of corrupt inputs: random bytes, and a real header with its
    // bytes flipped one at a time.
    let good = wav_bytes(&tone(440.0, 16_000, 0.05, 0.5), 16_000, 1, 16, false);
    let mut state = 0x2545F491u32;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let _ = decode(&bytes, &wav_format());
        let _ = decode(&bytes, &raw_format(Encoding::Float32, 16_000, 2));
    }
    for i in 0..44 {
        let mut bytes = good.clone();
        bytes[i] ^= 0xFF;
        let _ = audio::prepare(&bytes, &wav_format());
    }
}

#[test]
fn downmix_and_dc_removal() {
    let left = tone(200.0, 16_000, 0.5, 0.4);
    let interleaved: Vec<f32> = left.iter().flat_map(|&s| [s + 0.3, 0.3]).collect();
    let mut mono = normalize::downmix(&interleaved, 2);
    assert_eq!(mono.len(), left.len());
    assert!((mono[100] - (left[100] / 2.0 + 0.3)).abs() < 1e-6);
    normalize::remove_dc(&mut mono);
    let mean = mono.iter().sum::<f32>() / mono.len() as f32;
    assert!(mean.abs() < 1e-4, "mean after DC removal: {mean}");
}

#[test]
fn quiet_and_loud_speakers_reach_the_same_level() {
    let clip = decode(&fixture_bytes("q0006.wav"), &wav_format()).unwrap();
    let at_gain = |gain_db: f32| {
        let mut decoded = clip.clone();
        normalize::apply_gain(&mut decoded.samples, gain_db);
        audio::prepare_decoded(&decoded).unwrap()
    };
    let quiet = at_gain(-25.0);
    let loud = at_gain(-2.0);
    let level = |p: &audio::PreparedAudio| vad::detect(&p.samples, 16_000).voiced_level_db;
    assert!(
        (level(&quiet) - level(&loud)).abs() < 1.0,
        "quiet {} dB vs loud {} dB after normalization",
        level(&quiet),
        level(&loud)
    );
    assert!((level(&loud) - normalize::TARGET_LEVEL_DB).abs() < 2.0);
    assert!(quiet.info.gain_db > loud.info.gain_db + 20.0);
}

#[test]
fn near_silence_is_not_blown_up() {
    let hiss = tone(1000.0, 16_000, 1.0, 1e-4);
    let prepared = audio::prepare_decoded(&audio::Decoded {
        samples: hiss,
        sample_rate: 16_000,
        channels: 1,
    })
    .unwrap();
    assert!(prepared.info.gain_db <= normalize::MAX_GAIN_DB);
    assert!(
        rms(&prepared.samples) < 0.01,
        "gain-limited hiss stays faint"
    );
    assert!(!prepared.info.voice.speech);
}

#[test]
fn clipping_is_detected() {
    let clipped: Vec<f32> = tone(300.0, 16_000, 1.0, 3.0)
        .iter()
        .map(|s| s.clamp(-1.0, 1.0))
        .collect();
    let prepared = audio::prepare_decoded(&audio::Decoded {
        samples: clipped,
        sample_rate: 16_000,
        channels: 1,
    })
    .unwrap();
    assert!(
        prepared.info.clipped_fraction > 0.5,
        "{}",
        prepared.info.clipped_fraction
    );
    let clean = audio::prepare(&fixture_bytes("q0006.wav"), &wav_format()).unwrap();
    assert!(clean.info.clipped_fraction < 0.001);
}

#[test]
fn a_7khz_tone_keeps_frequency_and_level() {
    for rate in [48_000, 44_100, 22_050] {
        let input = tone(7_000.0, rate, 1.0, 0.5);
        let output = resample::to_target_rate(input.clone(), rate).unwrap();
        let expected_len = (input.len() as f64 * 16_000.0 / rate as f64).round() as usize;
        assert!(
            output.len().abs_diff(expected_len) <= 1,
            "{rate}: {} frames",
            output.len()
        );
        let middle = &output[output.len() / 4..output.len() * 3 / 4];
        let level = db(rms(middle) / rms(&input));
        assert!(
            level.abs() < 0.5,
            "{rate} Hz: 7 kHz level changed by {level:.2} dB"
        );
        let freq = frequency(&output, 16_000);
        assert!(
            (freq - 7_000.0).abs() < 20.0,
            "{rate} Hz: tone came out at {freq:.0} Hz"
        );
    }
}

#[test]
fn energy_above_8khz_does_not_alias() {
    for (rate, freq) in [
        (48_000, 12_000.0),
        (48_000, 9_000.0),
        (44_100, 10_000.0),
        (22_050, 10_500.0),
    ] {
        let input = tone(freq, rate, 1.0, 0.5);
        let output = resample::to_target_rate(input.clone(), rate).unwrap();
        let middle = &output[output.len() / 4..output.len() * 3 / 4];
        let level = db(rms(middle) / rms(&input));
        assert!(
            level < -40.0,
            "{freq} Hz at {rate} Hz aliased at {level:.1} dB"
        );
    }
}

#[test]
fn chunking_never_changes_the_result() {
    let bytes = fixture_bytes("q0006.wav");
    let whole = audio::prepare(&bytes, &wav_format()).unwrap();
    for chunk in [1, 7, 320, 4096] {
        let mut buffer = UtteranceBuffer::new(wav_format(), 30.0);
        for piece in bytes.chunks(chunk) {
            buffer.push(piece).unwrap();
        }
        let pieced = audio::prepare(&buffer.take(), &wav_format()).unwrap();
        assert_eq!(pieced.samples, whole.samples, "chunks of {chunk} bytes");
        assert!(buffer.is_empty());
    }
}

#[test]
fn utterance_buffer_enforces_the_length_limit() {
    let format = raw_format(Encoding::Linear16, 16_000, 1);
    let mut buffer = UtteranceBuffer::new(format, 1.0);
    buffer.push(&vec![0u8; 32_000]).unwrap();
    assert!((buffer.seconds() - 1.0).abs() < 1e-9);
    assert!(matches!(
        buffer.push(&[0, 0]),
        Err(AudioError::TooLong { .. })
    ));

    let wav = wav_bytes(&tone(300.0, 16_000, 2.0, 0.3), 16_000, 1, 16, false);
    let mut buffer = UtteranceBuffer::new(wav_format(), 1.0);
    let result: Result<Vec<()>, _> = wav.chunks(1000).map(|c| buffer.push(c)).collect();
    assert!(matches!(result, Err(AudioError::TooLong { .. })));
}

#[test]
fn voice_activity_trims_silence_and_finds_speech() {
    let speech = decode(&fixture_bytes("q0006.wav"), &wav_format()).unwrap();
    let mut padded = vec![0.0f32; 16_000];
    padded.extend(&speech.samples);
    padded.extend(vec![0.0f32; 16_000]);
    let found = vad::detect(&padded, 16_000);
    assert!(found.speech);
    assert!(found.start_seconds > 0.7, "start {}", found.start_seconds);
    let speech_end = 1.0 + speech.duration_seconds();
    assert!(
        found.end_seconds < speech_end + 0.5,
        "end {}",
        found.end_seconds
    );
    assert!(found.end_seconds > 1.5, "end {}", found.end_seconds);

    let prepared = audio::prepare_decoded(&audio::Decoded {
        samples: padded.clone(),
        sample_rate: 16_000,
        channels: 1,
    })
    .unwrap();
    assert!(
        prepared.samples.len() < padded.len() - 16_000,
        "silence trimmed"
    );
}

#[test]
fn silence_and_steady_noise_hold_no_speech() {
    assert!(!vad::detect(&vec![0.0; 16_000], 16_000).speech);
    let silence = audio::prepare(&fixture_bytes("q0118.wav"), &wav_format()).unwrap();
    assert!(!silence.info.voice.speech, "digital silence");
    let noise = audio::prepare(&fixture_bytes("q0122.wav"), &wav_format()).unwrap();
    assert!(!noise.info.voice.speech, "pink noise at -20 dBFS");
    for speech in [
        "q0004.wav",
        "q0006.wav",
        "q0008.wav",
        "q0016.wav",
        "q0066.wav",
    ] {
        let prepared = audio::prepare(&fixture_bytes(speech), &wav_format()).unwrap();
        assert!(prepared.info.voice.speech, "{speech}");
    }
}
