//! Helpers shared by the test modules: fixtures, the model, the pipeline over the
//! fixture catalog, the modelless voice front door, the seeded generator of the property
//! tests ([`seeded`]), and the real server ([`server`]).

pub mod seeded;
pub mod server;

use std::path::PathBuf;
use std::time::Duration;

use voice_search::voice::{SessionLimits, Voice, VoiceLimits};

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Catalog documents from `(id, title, category)`.
pub fn documents(documents: &[(&str, &str, &str)]) -> Vec<voice_search::proto::Document> {
    documents
        .iter()
        .map(|&(id, title, category)| voice_search::proto::Document {
            id: id.into(),
            title: title.into(),
            category: category.into(),
            ..Default::default()
        })
        .collect()
}

/// The whole response to a plain HTTP/1.1 `GET path` (status line, headers and body), or
/// `None` when nothing listens at `addr`.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// WAV audio, its rate and channels from the header.
pub fn wav_format() -> voice_search::audio::AudioFormat {
    voice_search::audio::AudioFormat {
        encoding: voice_search::audio::Encoding::Wav,
        sample_rate: None,
        channels: None,
    }
}

/// The model the tests use: `models/fetch.sh` puts tiny.en here.
pub const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/whisper-tiny.en");

/// The real tiny.en, loaded once for the whole test binary.
pub fn whisper() -> &'static voice_search::asr::Whisper {
    static MODEL: std::sync::OnceLock<voice_search::asr::Whisper> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        voice_search::asr::Whisper::load(std::path::Path::new(MODEL_DIR))
            .unwrap_or_else(|e| panic!("{e}: run models/fetch.sh first"))
    })
}

/// The real tiny.en as the pipeline shares it, loaded once for the whole test binary.
pub fn shared_whisper() -> std::sync::Arc<voice_search::asr::Whisper> {
    static MODEL: std::sync::OnceLock<std::sync::Arc<voice_search::asr::Whisper>> =
        std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            std::sync::Arc::new(
                voice_search::asr::Whisper::load(std::path::Path::new(MODEL_DIR))
                    .unwrap_or_else(|e| panic!("{e}: run models/fetch.sh first")),
            )
        })
        .clone()
}

/// The pipeline over a fresh index on disk holding `tests/fixtures/catalog.jsonl` (22
/// cities, songs and films: the fixture clips' targets among look-alikes); the folder
/// lives as long as the returned guard.
pub fn fixture_pipeline() -> (tempfile::TempDir, voice_search::pipeline::Pipeline) {
    use voice_search::search::{import, CarrierPhrases, CatalogIndex, QueryEngine};
    let folder = tempfile::tempdir().unwrap();
    let index = std::sync::Arc::new(CatalogIndex::open(folder.path()).unwrap());
    let catalog = std::fs::read(fixture_path("catalog.jsonl")).unwrap();
    import::import_jsonl(&index, catalog.as_slice(), 100, |_| {}).unwrap();
    let engine = QueryEngine::new(index, CarrierPhrases::default());
    let pipeline = voice_search::pipeline::Pipeline::new(
        Some(shared_whisper()),
        Some(std::sync::Arc::new(engine)),
    );
    (folder, pipeline)
}

/// A front door with no model: each utterance fails with `NoModel` (enough to exercise
/// the stream's rules) and nothing waits on a worker.
pub fn modelless_voice() -> Voice {
    Voice::without_model(VoiceLimits {
        session: SessionLimits {
            max_utterance_seconds: 2.0,
            max_stream_seconds: 6.0,
        },
        idle_timeout: Duration::from_secs(5),
        max_streams: 4,
    })
}

/// Asserts that `transcript` carries its words with times as the API promises: the words
/// of its text, in order, each ending no earlier than it starts and no later than the
/// next one starts.
pub fn assert_word_times(transcript: &voice_search::proto::Transcript) {
    let seconds = |offset: &Option<prost_types::Duration>| {
        let offset = offset.as_ref().expect("a word without its offset");
        offset.seconds as f64 + f64::from(offset.nanos) * 1e-9
    };
    let words: Vec<&str> = transcript.words.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(words.join(" "), transcript.text, "{:?}", transcript.words);
    let mut previous_end = 0.0;
    for word in &transcript.words {
        let (start, end) = (seconds(&word.start_offset), seconds(&word.end_offset));
        assert!(
            previous_end <= start && start <= end,
            "{word:?} after {previous_end} s"
        );
        previous_end = end;
    }
}

/// One `StreamingVoiceSearchRequest` as the binary WebSocket frame `/v1/stream` reads.
pub fn ws_frame(
    request: voice_search::proto::streaming_voice_search_request::Request,
) -> tokio_tungstenite::tungstenite::Message {
    use prost::Message as _;
    let request = voice_search::proto::StreamingVoiceSearchRequest {
        request: Some(request),
    };
    tokio_tungstenite::tungstenite::Message::Binary(request.encode_to_vec().into())
}
