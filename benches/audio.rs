//! The whole audio front end on a 5 s, 48 kHz stereo WAV utterance: decode, downmix,
//! normalize, voice activity, resample. Prints the speed as a multiple of real time.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use voice_search::audio::{self, AudioFormat, Encoding};

const SECONDS: f32 = 5.0;
const RATE: u32 = 48_000;

/// A speech-like test signal: a pitched buzz with syllable-rate loudness changes, a pause
/// in the middle, and a little noise.
fn utterance_wav() -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    let mut noise = 1u32;
    for i in 0..(SECONDS * RATE as f32) as usize {
        let t = i as f32 / RATE as f32;
        let syllables = (2.0 * std::f32::consts::PI * 4.0 * t).sin().max(0.0);
        let pause = if (2.0..2.5).contains(&t) { 0.0 } else { 1.0 };
        let voice: f32 = (1..8)
            .map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32)
            .sum();
        noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let hiss = (noise >> 16) as f32 / 65_536.0 - 0.5;
        let sample = 0.2 * voice * syllables * pause + 0.005 * hiss;
        let value = (sample * 32_767.0) as i16;
        writer.write_sample(value).unwrap();
        writer.write_sample(value / 2).unwrap();
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

fn front_end(c: &mut Criterion) {
    let wav = utterance_wav();
    let format = AudioFormat {
        encoding: Encoding::Wav,
        sample_rate: None,
        channels: None,
    };

    let runs = 20;
    let started = Instant::now();
    for _ in 0..runs {
        black_box(audio::prepare(&wav, &format).unwrap());
    }
    let per_run = started.elapsed().as_secs_f64() / runs as f64;
    println!(
        "audio front end: {:.1} ms per 5 s 48 kHz stereo utterance = {:.0}x real time",
        per_run * 1e3,
        SECONDS as f64 / per_run
    );

    c.bench_function("front_end_5s_48k_stereo", |b| {
        b.iter(|| audio::prepare(black_box(&wav), &format).unwrap())
    });
}

criterion_group!(benches, front_end);
criterion_main!(benches);
