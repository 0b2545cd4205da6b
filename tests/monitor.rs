//! Monitoring on a real server: the Prometheus scrape after real traffic, drift flagged
//! for quiet, noisy and 8 kHz audio but not for clean audio, and the capture folder
//! within its bounds and usable as an eval set.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use tonic::transport::Channel;
use voice_search::audio::resample::to_target_rate;
use voice_search::audio::Encoding;
use voice_search::config::ServeConfig;
use voice_search::monitor::capture::labelling_manifest;
use voice_search::monitor::{Baseline, UtteranceFeatures};
use voice_search::pipeline::{HitOptions, Pipeline};
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    self, AudioEncoding, DriftState, RecognitionConfig, StreamingVoiceSearchConfig,
    VoiceSearchRequest,
};
use voice_search::search::{CarrierPhrases, CatalogIndex, QueryEngine};

use crate::common::server::{sample, test_config, TestServer};
use crate::common::{fixture_bytes, wav_format, whisper};

fn wav_config() -> StreamingVoiceSearchConfig {
    StreamingVoiceSearchConfig {
        recognition: Some(RecognitionConfig {
            encoding: AudioEncoding::Wav as i32,
            ..Default::default()
        }),
        search: None,
    }
}

async fn voice_search(
    channel: Channel,
    wav: Vec<u8>,
) -> Result<proto::UtteranceResult, tonic::Status> {
    Ok(VoiceSearchClient::new(channel)
        .voice_search(VoiceSearchRequest {
            config: Some(wav_config()),
            audio: wav,
        })
        .await?
        .into_inner()
        .result
        .unwrap())
}

#[tokio::test]
async fn a_scrape_after_traffic_shows_every_metric() {
    let server = TestServer::start(ServeConfig {
        demo_catalog: true,
        ..test_config()
    })
    .await;
    voice_search(server.channel().await, fixture_bytes("q0070.wav"))
        .await
        .unwrap();
    let refused = voice_search(server.channel().await, b"RIFFjunk".to_vec()).await;
    assert!(refused.is_err());
    SearchClient::new(server.channel().await)
        .search(proto::SearchRequest {
            query: "tokyo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let metrics = server.scrape().await;
    assert_eq!(
        sample(
            &metrics,
            r#"voicesearch_requests_total{code="OK",rpc="VoiceSearch"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"voicesearch_requests_total{code="INVALID_ARGUMENT",rpc="VoiceSearch"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"voicesearch_requests_total{code="OK",rpc="Search"}"#
        ),
        1.0
    );
    let demo = voice_search::search::import::DEMO_CATALOG.lines().count() as f64;
    assert_eq!(sample(&metrics, "voicesearch_index_documents"), demo);
    assert_eq!(
        sample(
            &metrics,
            r#"voicesearch_model_info{model="whisper-tiny.en"}"#
        ),
        1.0
    );
    assert!(sample(&metrics, "voicesearch_model_size_bytes") > 10e6);
    for stage in ["decode", "front_end", "mel", "encoder", "decoder", "search"] {
        let count = sample(
            &metrics,
            &format!(r#"voicesearch_stage_seconds_count{{stage="{stage}"}}"#),
        );
        assert_eq!(count, 1.0, "{stage}");
    }
    let encoder = sample(
        &metrics,
        r#"voicesearch_stage_seconds_sum{stage="encoder"}"#,
    );
    assert!(encoder > 0.0 && encoder < 30.0, "encoder {encoder} s");
    assert_eq!(
        sample(&metrics, "voicesearch_utterance_latency_seconds_count"),
        1.0
    );
    let audio = sample(&metrics, "voicesearch_audio_seconds_total");
    assert!((audio - 1.99).abs() < 0.05, "audio seconds {audio}");
    assert_eq!(sample(&metrics, "voicesearch_real_time_factor_count"), 1.0);
    assert_eq!(
        sample(&metrics, r#"voicesearch_utterances_total{speech="true"}"#),
        1.0
    );
    for gauge in [
        "voicesearch_active_streams 0",
        "voicesearch_queued_utterances 0",
        "voicesearch_busy_workers 0",
    ] {
        assert!(metrics.contains(gauge), "{gauge} missing:\n{metrics}");
    }
    server.shutdown().await.unwrap();
}

const CLIPS: [&str; 8] = [
    "q0004.wav",
    "q0006.wav",
    "q0025.wav",
    "q0049.wav",
    "q0068.wav",
    "q0107.wav",
    "q0011.wav",
    "q0017.wav",
];

/// A fixture's mono samples and rate.
fn samples(name: &str) -> (Vec<f32>, u32) {
    let reader = hound::WavReader::new(Cursor::new(fixture_bytes(name))).unwrap();
    let rate = reader.spec().sample_rate;
    let samples = reader
        .into_samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    (samples, rate)
}

fn wav(samples: &[f32], rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for &s in samples {
        writer
            .write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

/// The clips as clean 16 kHz speech.
fn clean() -> Vec<Vec<u8>> {
    CLIPS
        .iter()
        .map(|name| {
            let (samples, rate) = samples(name);
            wav(&to_target_rate(samples, rate).unwrap(), 16_000)
        })
        .collect()
}

/// The clean clips changed by `change`, at `rate`.
fn variant(change: impl Fn(Vec<f32>) -> Vec<f32>, rate: u32) -> Vec<Vec<u8>> {
    CLIPS
        .iter()
        .map(|name| {
            let (samples, from) = samples(name);
            let clean = to_target_rate(samples, from).unwrap();
            let changed = change(clean);
            if rate == 16_000 {
                wav(&changed, rate)
            } else {
                // 16 kHz to 8 kHz: a two-tap average, then every other sample.
                let halved: Vec<f32> = changed
                    .chunks(2)
                    .map(|p| p.iter().sum::<f32>() / p.len() as f32)
                    .collect();
                wav(&halved, rate)
            }
        })
        .collect()
}

fn white_noise(samples: Vec<f32>, level: f32) -> Vec<f32> {
    let mut state = 7u32;
    samples
        .into_iter()
        .map(|s| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s + level * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

async fn drift_states(server: &TestServer) -> Vec<(String, DriftState)> {
    server
        .drift_report()
        .await
        .features
        .into_iter()
        .map(|row| (row.feature.clone(), row.state()))
        .collect()
}

fn flagged(states: &[(String, DriftState)]) -> Vec<&str> {
    states
        .iter()
        .filter(|(_, state)| *state == DriftState::Drift)
        .map(|(feature, _)| feature.as_str())
        .collect()
}

#[tokio::test]
async fn drift_flags_quiet_noisy_and_narrowband_audio_but_not_clean_audio() {
    // The baseline: the clean clips run in process, as `eval --report` and
    // `drift baseline` do, against the same catalog the server will hold.
    let folder = tempfile::tempdir().unwrap();
    let index_dir = folder.path().join("index");
    let documents = [
        ("dus", "Düsseldorf"),
        ("conf", "Conference Center"),
        ("pw", "Password Manager"),
    ];
    {
        let index = Arc::new(CatalogIndex::open(&index_dir).unwrap());
        let docs: Vec<_> = documents
            .iter()
            .map(|(id, title)| {
                voice_search::search::CatalogDocument::from_json(
                    serde_json::json!({"id": id, "title": title, "category": "demo"}),
                )
                .unwrap()
            })
            .collect();
        index.upsert(&docs).unwrap();
        let pipeline = Pipeline::new(
            Some(Arc::new(
                voice_search::asr::Whisper::load(Path::new(crate::common::MODEL_DIR)).unwrap(),
            )),
            Some(Arc::new(QueryEngine::new(
                index,
                CarrierPhrases::load(None).unwrap(),
            ))),
        );
        let format = wav_format();
        let hits = HitOptions {
            max_hits: 5,
            ..Default::default()
        };
        let features: Vec<UtteranceFeatures> = clean()
            .iter()
            .map(|bytes| {
                let outcome = pipeline
                    .run_bytes(bytes, &format, &Default::default(), Some(&hits))
                    .unwrap();
                UtteranceFeatures::of(
                    &outcome,
                    Encoding::Wav,
                    pipeline.unknown_word_share(&outcome.transcript.text),
                )
            })
            .collect();
        Baseline::from_features(&features, "clean fixtures")
            .unwrap()
            .save(&folder.path().join("baseline.json"))
            .unwrap();
    }
    let server = TestServer::start(ServeConfig {
        drift_baseline: Some(folder.path().join("baseline.json")),
        drift_window: CLIPS.len(),
        ..test_config()
    })
    .await;
    // The server's index is fresh; fill it as the baseline's was.
    let demo: Vec<_> = documents
        .iter()
        .map(|&(id, title)| (id, title, "demo"))
        .collect();
    server.add_documents(&demo).await;
    let send_all = |clips: Vec<Vec<u8>>| {
        let server = &server;
        async move {
            for clip in clips {
                voice_search(server.channel().await, clip).await.unwrap();
            }
        }
    };

    send_all(clean()).await;
    let states = drift_states(&server).await;
    assert!(
        flagged(&states).is_empty(),
        "clean audio flagged: {states:?}"
    );

    send_all(variant(|s| s.iter().map(|x| x * 0.03).collect(), 16_000)).await;
    let quiet = drift_states(&server).await;
    assert!(flagged(&quiet).contains(&"loudness_dbfs"), "{quiet:?}");
    assert!(!flagged(&quiet).contains(&"sample_rate_hz"), "{quiet:?}");

    send_all(variant(|s| white_noise(s, 0.08), 16_000)).await;
    let noisy = drift_states(&server).await;
    assert!(flagged(&noisy).contains(&"snr_db"), "{noisy:?}");
    assert!(!flagged(&noisy).contains(&"sample_rate_hz"), "{noisy:?}");

    send_all(variant(|s| s, 8_000)).await;
    let narrow = drift_states(&server).await;
    assert!(flagged(&narrow).contains(&"sample_rate_hz"), "{narrow:?}");
    assert!(!flagged(&narrow).contains(&"loudness_dbfs"), "{narrow:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_capture_folder_stays_within_its_bounds_and_feeds_eval() {
    let folder = tempfile::tempdir().unwrap();
    let capture_dir = folder.path().join("capture");
    let server = TestServer::start(ServeConfig {
        capture_dir: Some(capture_dir.clone()),
        capture_fraction: 0.5,
        capture_max_mib: 1,
        ..test_config()
    })
    .await;
    // 4.9 s at 8 kHz is about 160 KB as a float WAV: 1 MiB holds six of them.
    let clip = fixture_bytes("q0068.wav");
    for _ in 0..24 {
        voice_search(server.channel().await, clip.clone())
            .await
            .unwrap();
    }
    let metrics = server.scrape().await;
    assert_eq!(
        sample(&metrics, "voicesearch_captured_utterances_total"),
        12.0
    );
    server.shutdown().await.unwrap();

    let files: Vec<_> = std::fs::read_dir(&capture_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    let total: u64 = files.iter().sum();
    assert!(total <= 1024 * 1024, "{total} bytes in the capture folder");
    assert!(files.len() >= 8, "only {} files kept", files.len());

    // Labelling: the pre-filled manifest, taken as correct, is an eval set.
    std::fs::write(
        capture_dir.join("manifest.jsonl"),
        labelling_manifest(&capture_dir).unwrap(),
    )
    .unwrap();
    let entries = voice_search::eval::read_manifest(&capture_dir.join("manifest.jsonl")).unwrap();
    assert_eq!(entries.len(), files.len() / 2);
    let bytes = std::fs::read(&entries[0].audio).unwrap();
    let prepared = voice_search::audio::prepare(&bytes, &wav_format()).unwrap();
    let transcript = whisper()
        .transcribe(&prepared.samples, &Default::default())
        .unwrap();
    assert_eq!(transcript.text, entries[0].text);
    assert!(transcript.text.starts_with("The number you have dialed"));
}
