//! Seeded, bounded property tests over what clients send byte for byte: mutated WAV, Ogg
//! and WebM Opus, FLAC and raw audio, mutated documents, page tokens and CTranslate2 models, and random stream
//! event sequences. Whatever the input, the parsers answer with a value or an error,
//! never a panic; audio reaches the same verdict fed whole or in random chunks; decoded
//! samples are finite; a stream ends with at most one error, last. (No fuzzing engine
//! runs here: cargo-fuzz needs a nightly toolchain. The seeds make every failure
//! reproducible.)

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use voice_search::asr::ct2;
use voice_search::audio::{self, AudioFormat, Encoding, UtteranceBuffer};
use voice_search::monitor::{DriftMonitor, Monitor};
use voice_search::pipeline::{HitOptions, Pipeline};
use voice_search::search::page::PageTokens;
use voice_search::search::CatalogDocument;
use voice_search::voice::{Inbound, SessionLimits, StreamConfig, Voice, VoiceLimits};
use voice_search::workers::{PoolSize, WorkerPool};

use crate::asr::import::{synthetic, write_ct2};
use crate::common::fixture_bytes;

/// Cases per property: enough to reach the parsers' odd corners, bounded in time.
const CASES: usize = 300;

/// A small deterministic generator (64-bit LCG, high bits).
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }

    fn byte(&mut self) -> u8 {
        self.below(256) as u8
    }

    /// `input` with a few random edits: bytes overwritten (often in the first 64, where
    /// headers live), a span cut, random bytes inserted, or the end cut off.
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len().max(1);
            match self.below(5) {
                0 | 1 => {
                    let at = if self.below(2) == 0 {
                        self.below(64.min(len))
                    } else {
                        self.below(len)
                    };
                    if at < out.len() {
                        out[at] = self.byte();
                    }
                }
                2 => {
                    let at = self.below(len);
                    let end = (at + self.below(256)).min(out.len());
                    out.drain(at.min(end)..end);
                }
                3 => {
                    let at = self.below(len).min(out.len());
                    let extra: Vec<u8> = (0..self.below(64)).map(|_| self.byte()).collect();
                    out.splice(at..at, extra);
                }
                _ => out.truncate(self.below(len)),
            }
        }
        out
    }
}

fn random_format(seed: &mut Seeded) -> AudioFormat {
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

#[test]
fn mutated_documents_are_read_or_refused_never_a_panic() {
    let document = br#"{"id": "song-1", "title": "Rock & Roll", "category": "song", "popularity": 12.5, "artist": "AC/DC", "body": "Written by A, B & C"}"#;
    let mut seed = Seeded(34);
    let mut refused = 0;
    for _ in 0..CASES {
        let bytes = seed.mutate(document);
        let text = String::from_utf8_lossy(&bytes);
        refused += usize::from(CatalogDocument::from_json_str(&text).is_err());
    }
    assert!(
        refused > 0 && refused < CASES,
        "mutations should both break and keep documents: {refused}"
    );
}

#[test]
fn mutated_page_tokens_never_open_another_page() {
    let tokens = PageTokens::default();
    let issued = tokens.issue(10, 3, "heat", &[]);
    let mut seed = Seeded(56);
    for case in 0..CASES {
        let token = String::from_utf8_lossy(&seed.mutate(issued.as_bytes())).into_owned();
        // The issued token itself, and the empty one (the first page by definition).
        if token == issued || token.is_empty() {
            continue;
        }
        // Only the page the token was issued for may come back (a spelling of the same
        // offset, say), never another.
        let parsed = tokens.parse(&token, 3, "heat", &[]);
        assert!(
            parsed.as_ref().map_or(true, |&offset| offset == 10),
            "case {case}: {token:?} gave {parsed:?}"
        );
    }
}

/// The synthetic CTranslate2 model's `model.bin`, with `extra` tensors.
fn ct2_model_bin(extra: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = synthetic(0.0);
    tensors.extend_from_slice(extra);
    write_ct2(dir.path(), &tensors, &[("encoder/num_heads", 2)]);
    std::fs::read(dir.path().join("model.bin")).unwrap()
}

const CT2_CONFIG: &[u8] = br#"{"suppress_ids": [1, 2]}"#;

#[test]
fn mutated_ct2_models_convert_or_are_refused_never_a_panic() {
    let model_bin = ct2_model_bin(&[]);
    ct2::convert(&model_bin, CT2_CONFIG).expect("the model itself converts");
    let mut seed = Seeded(78);
    let refused = (0..CASES)
        .filter(|_| ct2::convert(&seed.mutate(&model_bin), CT2_CONFIG).is_err())
        .count();
    assert!(
        refused > 0 && refused < CASES,
        "mutations should both break and keep models: {refused} refused"
    );
}

#[test]
fn aliases_share_their_tensor_instead_of_copying_it() {
    // 20,000 aliases of a 4 MB tensor: copied, 80 GB; shared, nothing.
    let big = (
        "extra/big".to_string(),
        vec![1 << 20],
        vec![0.0f32; 1 << 20],
    );
    let mut model_bin = ct2_model_bin(&[big]);
    // Replace the alias table `write_ct2` ends with (a count, then one pair of names).
    let string = |s: &str| {
        [
            &((s.len() + 1) as u16).to_le_bytes()[..],
            s.as_bytes(),
            &[0],
        ]
        .concat()
    };
    let table = [
        &1u32.to_le_bytes()[..],
        &string("decoder/projection/weight"),
        &string("decoder/embeddings/weight"),
    ]
    .concat();
    assert!(model_bin.ends_with(&table));
    model_bin.truncate(model_bin.len() - table.len());
    model_bin.extend(20_000u32.to_le_bytes());
    for i in 0..20_000 {
        model_bin.extend(string(&format!("alias/{i}")));
        model_bin.extend(string("extra/big"));
    }
    ct2::convert(&model_bin, CT2_CONFIG).expect("converts");
}

/// A front door with no model: each utterance fails with `NoModel` (enough to exercise
/// the stream's rules) and nothing waits on a worker.
fn modelless_voice() -> Voice {
    Voice::new(
        Pipeline::default(),
        WorkerPool::new(PoolSize {
            workers: 1,
            queue_depth: 4,
        }),
        Arc::new(Monitor::new(DriftMonitor::new(None, 10), None, None)),
        VoiceLimits {
            session: SessionLimits {
                max_utterance_seconds: 2.0,
                max_stream_seconds: 6.0,
            },
            idle_timeout: Duration::from_secs(5),
            max_streams: 4,
        },
    )
}

fn random_event(seed: &mut Seeded, wav: &[u8]) -> Result<Inbound, String> {
    match seed.below(8) {
        0 => Ok(Inbound::Config(StreamConfig {
            format: random_format(seed),
            options: Default::default(),
            hits: HitOptions::default(),
            interim_results: seed.below(2) == 0,
            search_interim: seed.below(2) == 0,
        })),
        1..=4 => {
            let at = seed.below(wav.len());
            let end = (at + seed.below(16_384)).min(wav.len());
            Ok(Inbound::Audio(wav[at..end].to_vec()))
        }
        5 | 6 => Ok(Inbound::EndOfUtterance),
        _ => Err("unreadable".to_string()),
    }
}

#[tokio::test]
async fn random_stream_events_end_every_stream_with_at_most_one_error_last() {
    let voice = modelless_voice();
    let wav = fixture_bytes("q0004.wav");
    let mut seed = Seeded(90);
    let mut ended_with_error = 0;
    for case in 0..CASES {
        // Mostly a config first, as a client would begin; sometimes anything.
        let mut events = Vec::new();
        if seed.below(4) != 0 {
            events.push(Ok(Inbound::Config(StreamConfig {
                format: random_format(&mut seed),
                options: Default::default(),
                hits: HitOptions::default(),
                interim_results: seed.below(2) == 0,
                search_interim: false,
            })));
        }
        events.extend((0..seed.below(12)).map(|_| random_event(&mut seed, &wav)));
        let answers: Vec<_> = voice
            .stream(tokio_stream::iter(events), || {})
            .expect("each stream ends before the next opens")
            .collect()
            .await;
        let errors = answers.iter().filter(|answer| answer.is_err()).count();
        assert!(errors <= 1, "case {case}: {errors} errors");
        if errors == 1 {
            ended_with_error += 1;
            assert!(
                answers.last().unwrap().is_err(),
                "case {case}: error not last"
            );
        }
    }
    assert!(
        0 < ended_with_error && ended_with_error < CASES,
        "the cases should be mixed: {ended_with_error} ended with an error"
    );
}
