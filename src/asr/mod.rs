//! Speech recognition with Whisper in candle.
//!
//! [`Whisper::load`] reads a Hugging Face Whisper folder once (`load.rs`);
//! [`Whisper::transcribe`] turns 16 kHz mono samples into a [`Transcript`]
//! (`transcribe.rs`: the window loop, fallback, language, segments). The model is shared:
//! every call keeps its decoding state on its own stack, so any number of workers can use
//! one model. [`model`] is only the network; [`precision`] decides how its products are
//! computed and [`kernels`] computes them; [`decode`] runs one decoding pass, [`window`]
//! says how much of the window the encoder computes, [`constrained`] decodes and scores
//! against the catalog's names (given as token sequences), `word_times.rs` times each
//! word on request, [`mel`] computes features and [`ct2`] imports CTranslate2 folders.

pub mod constrained;
pub mod ct2;
pub mod decode;
mod error;
pub mod kernels;
mod load;
pub mod mel;
pub mod model;
pub mod precision;
pub mod tokens;
mod transcribe;
mod transcript;
pub mod window;
mod word_times;

use candle_core::Device;
use tokenizers::Tokenizer;

pub use constrained::{AcousticContext, BeamMatch, Reading, ReadingScore, TokenTree, TokenTrie};
pub use error::AsrError;
pub use precision::Precision;
pub use transcribe::TranscribeOptions;
pub use transcript::{AsrTimings, Segment, Transcript, TranscriptAlternative};
pub use window::EncoderWindow;
pub use word_times::WordTime;

use model::WhisperModel;
use tokens::SpecialTokens;
use window::ShortWindow;

/// Tokens in the English-only Whisper vocabulary; multilingual models have more.
const ENGLISH_VOCAB_SIZE: usize = 51_864;

/// A loaded Whisper model and its tokenizer.
pub struct Whisper {
    model: WhisperModel,
    tokenizer: Tokenizer,
    special: SpecialTokens,
    device: Device,
    name: String,
    /// The silent pass short windows end with; `None` when every window is encoded whole.
    short_window: Option<ShortWindow>,
}

impl Whisper {
    /// Whether the model knows languages other than English.
    pub fn is_multilingual(&self) -> bool {
        self.special.languages.len() > 1 && self.model.config.vocab_size > ENGLISH_VOCAB_SIZE
    }

    fn text(&self, tokens: &[u32]) -> Result<String, AsrError> {
        let text_tokens: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < self.special.end_of_text)
            .collect();
        self.tokenizer
            .decode(&text_tokens, true)
            .map_err(|e| AsrError::Tokenizer(e.to_string()))
    }

    /// Phrase hints as previous-text tokens.
    fn encode_hints(&self, hints: &[String]) -> Result<Vec<u32>, AsrError> {
        let joined = hints
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        if joined.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self
            .tokenizer
            .encode(format!(" {joined}"), false)
            .map_err(|e| AsrError::Tokenizer(e.to_string()))?;
        let tokens = encoding.get_ids();
        if tokens.len() > decode::MAX_PROMPT_TOKENS {
            return Err(AsrError::HintsTooLong {
                tokens: tokens.len(),
                limit: decode::MAX_PROMPT_TOKENS,
            });
        }
        Ok(tokens.to_vec())
    }
}
