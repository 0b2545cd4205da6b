//! Query latency on the full catalog (plain BM25, and with fuzzy and phonetic matching),
//! the sound-alike scans of voice queries, and import throughput. Needs the dev catalog
//! at ../shared/eval/catalog.jsonl (or the path in VOICE_SEARCH_BENCH_CATALOG); without it
//! the bench says so and does nothing.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use voice_search::search::import::{import_jsonl, DEFAULT_BATCH};
use voice_search::search::{CarrierPhrases, CatalogIndex, Matching, QueryEngine, SearchRequest};

const QUERIES: &[&str] = &[
    "play kashmir by led zeppelin",
    "directions to springfield illinois",
    "show me the godfather part two",
    "what's the weather in reykyavik",
    "watch the shawshank redemtion",
    "play the nutcracker by chaikovsky",
];

fn catalog_path() -> PathBuf {
    std::env::var_os("VOICE_SEARCH_BENCH_CATALOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/catalog.jsonl")
        })
}

fn search(c: &mut Criterion) {
    let path = catalog_path();
    let Ok(catalog) = std::fs::read(&path) else {
        println!(
            "no catalog at {}: set VOICE_SEARCH_BENCH_CATALOG",
            path.display()
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let index = CatalogIndex::open(dir.path()).unwrap();
    let started = Instant::now();
    let summary = import_jsonl(&index, catalog.as_slice(), DEFAULT_BATCH, |_| {}).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "import: {} documents in {seconds:.2} s = {:.0} documents/s",
        summary.added,
        summary.added as f64 / seconds
    );

    let index = Arc::new(index);
    let plain =
        QueryEngine::new(index.clone(), CarrierPhrases::default()).with_matching(Matching {
            fuzzy: false,
            phonetic: false,
        });
    let full = QueryEngine::new(index, CarrierPhrases::default());
    let run = |engine: &QueryEngine| {
        for query in QUERIES {
            let request = SearchRequest {
                query: query.to_string(),
                page_size: 5,
                ..Default::default()
            };
            black_box(engine.search(&request).unwrap());
        }
    };
    c.bench_function("search_plain_bm25_6_queries", |b| b.iter(|| run(&plain)));
    c.bench_function("search_fuzzy_phonetic_6_queries", |b| b.iter(|| run(&full)));

    // The sound-alike scans of a voice query's candidates, over every reading's keys.
    let heard: Vec<Vec<String>> = QUERIES
        .iter()
        .map(|q| q.split_whitespace().skip(2).map(str::to_string).collect())
        .collect();
    let spoken = full.index().spoken();
    c.bench_function("sound_alikes_6_queries", |b| {
        b.iter(|| {
            for words in &heard {
                black_box(spoken.sound_alikes(std::slice::from_ref(words), 5));
                black_box(spoken.sounds_within(words, 3));
            }
        })
    });
}

criterion_group!(benches, search);
criterion_main!(benches);
