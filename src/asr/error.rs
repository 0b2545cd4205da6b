//! What can go wrong loading a model or transcribing.

use std::path::PathBuf;

use super::Precision;

/// Everything that can go wrong loading a model or transcribing.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model folder {0}: {1}")]
    Folder(PathBuf, String),
    #[error("model weights: {0}")]
    Weights(String),
    #[error("the model has no tensor {0}")]
    MissingTensor(String),
    #[error("tensor {name} has shape {found}, expected {expected}")]
    BadShape {
        name: String,
        expected: String,
        found: String,
    },
    #[error("import: {0}")]
    Import(String),
    #[error("language {code} is not supported by this model: {1}", code = crate::quote::quote(.0))]
    Language(String, String),
    #[error("the transcription was cancelled: its caller has gone")]
    Cancelled,
    #[error("no temperatures to decode with: give at least one (0 decodes greedily)")]
    NoTemperatures,
    #[error("inference: {0}")]
    Inference(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "the phrase hints come to {tokens} tokens; the decoder's prompt holds at most {limit}: send fewer or shorter hints"
    )]
    HintsTooLong { tokens: usize, limit: usize },
    #[error("precision {0} needs AVX-512 VNNI or AVX2 (and AVX-512 BF16 for bf16), which this CPU lacks: use f32")]
    Unsupported(Precision),
}
