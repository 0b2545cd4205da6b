//! Helpers shared by the test modules.

use std::path::PathBuf;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
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
