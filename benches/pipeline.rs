//! One utterance end to end in process, as the server runs it: a 3 s spoken query (the
//! q0004 fixture, 2.4 s of speech padded with silence to 3 s) through decode, front end,
//! Whisper tiny.en and catalog search, without and with word times. Needs
//! `models/fetch.sh` first.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use voice_search::asr::{TranscribeOptions, Whisper};
use voice_search::audio::{AudioFormat, Encoding};
use voice_search::pipeline::{HitOptions, Pipeline};
use voice_search::search::{import, CarrierPhrases, CatalogIndex, QueryEngine};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/whisper-tiny.en");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/q0004.wav");
const SECONDS: f64 = 3.0;

/// The fixture padded with silence to exactly three seconds.
fn three_second_wav() -> Vec<u8> {
    let mut reader = hound::WavReader::open(FIXTURE).unwrap();
    let spec = reader.spec();
    let mut samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    samples.resize((SECONDS * spec.sample_rate as f64) as usize, 0);
    let mut cursor = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for sample in samples {
        writer.write_sample(sample).unwrap();
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

fn bench(c: &mut Criterion) {
    let whisper = Whisper::load(Path::new(MODEL))
        .unwrap_or_else(|e| panic!("{e}: run models/fetch.sh first"));
    let folder = tempfile::tempdir().unwrap();
    let index = Arc::new(CatalogIndex::open(folder.path()).unwrap());
    import::import_jsonl(&index, import::DEMO_CATALOG.as_bytes(), 1000, |_| {}).unwrap();
    let pipeline = Pipeline::new(
        Some(Arc::new(whisper)),
        Some(Arc::new(QueryEngine::new(
            index,
            CarrierPhrases::load(None).unwrap(),
        ))),
    );
    let wav = three_second_wav();
    let format = AudioFormat {
        encoding: Encoding::Wav,
        sample_rate: None,
        channels: None,
    };
    let options = TranscribeOptions::default();
    let hits = HitOptions {
        max_hits: 5,
        ..Default::default()
    };
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(10));
    group.bench_function("3 s utterance: audio, Whisper tiny.en, search", |b| {
        b.iter(|| {
            pipeline
                .run_bytes(&wav, &format, &options, Some(&hits))
                .unwrap()
        })
    });
    let timed = TranscribeOptions {
        word_times: true,
        ..TranscribeOptions::default()
    };
    group.bench_function("3 s utterance, with word times", |b| {
        b.iter(|| {
            pipeline
                .run_bytes(&wav, &format, &timed, Some(&hits))
                .unwrap()
        })
    });
    group.finish();
    let outcome = pipeline
        .run_bytes(&wav, &format, &options, Some(&hits))
        .unwrap();
    println!(
        "transcript {:?}; front end {:.1} ms, transcription {:.1} ms, search {:.2} ms, rescore {:.1} ms",
        outcome.transcript.text,
        outcome.timings.front_end.as_secs_f64() * 1e3,
        outcome.timings.transcription.as_secs_f64() * 1e3,
        outcome.timings.search.as_secs_f64() * 1e3,
        outcome.timings.rescore.as_secs_f64() * 1e3,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
