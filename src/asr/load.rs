//! Loading a Hugging Face Whisper folder at a precision and encoder window.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::model::{WhisperConfig, WhisperModel};
use super::tokens::SpecialTokens;
use super::window::{EncoderWindow, ShortWindow};
use super::{kernels, AsrError, Precision, Whisper};

impl Whisper {
    /// Loads a Hugging Face Whisper folder: `config.json`, `tokenizer.json`,
    /// `model.safetensors`, at the fastest precision this CPU runs, with short windows.
    pub fn load(dir: &Path) -> Result<Self, AsrError> {
        Self::load_with(dir, Precision::fastest(), EncoderWindow::default())
    }

    /// [`Whisper::load`] at the given precision and encoder window.
    pub fn load_with(
        dir: &Path,
        precision: Precision,
        window: EncoderWindow,
    ) -> Result<Self, AsrError> {
        if precision.uses_int8() && !kernels::int8::available()
            || precision.uses_bf16() && !kernels::bf16::available()
        {
            return Err(AsrError::Unsupported(precision));
        }
        let file = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(AsrError::Folder(
                    dir.to_owned(),
                    format!("{name} is missing (a Hugging Face Whisper folder has config.json, tokenizer.json and model.safetensors)"),
                ))
            }
        };
        let config_text =
            std::fs::read_to_string(file("config.json")?).map_err(|source| AsrError::Io {
                path: dir.join("config.json"),
                source,
            })?;
        let mut config: WhisperConfig = serde_json::from_str(&config_text)
            .map_err(|e| AsrError::Folder(dir.to_owned(), format!("config.json: {e}")))?;
        // Hub folders often keep these in generation_config.json instead.
        let generation = std::fs::read_to_string(dir.join("generation_config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        if let Some(generation) = &generation {
            if config.suppress_tokens.is_empty() {
                let ids = |key: &str| -> Vec<u32> {
                    generation[key].as_array().map_or(Vec::new(), |a| {
                        a.iter()
                            .filter_map(|v| v.as_u64().map(|v| v as u32))
                            .collect()
                    })
                };
                config.suppress_tokens = ids("suppress_tokens");
                config.begin_suppress_tokens = ids("begin_suppress_tokens");
            }
            if config.alignment_heads.is_empty() {
                config.alignment_heads =
                    serde_json::from_value(generation["alignment_heads"].clone())
                        .unwrap_or_default();
            }
        }
        if config.alignment_heads.is_empty() {
            let multilingual = config.vocab_size > super::ENGLISH_VOCAB_SIZE;
            config.alignment_heads = super::word_times::alignment_heads(&config, multilingual);
        }
        config.alignment_heads.sort_unstable();
        let tokenizer = Tokenizer::from_file(file("tokenizer.json")?)
            .map_err(|e| AsrError::Tokenizer(e.to_string()))?;
        let special = SpecialTokens::from_tokenizer(&tokenizer)?;
        let device = Device::Cpu;
        // SAFETY: the weights file is memory-mapped read-only; the loader copies every
        // tensor into f32 buffers before it returns.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[file("model.safetensors")?], DType::F32, &device)
        }
        .map_err(|e| AsrError::Weights(e.to_string()))?;
        let model = WhisperModel::load(vb, config, precision)?;
        let short_window = match window {
            EncoderWindow::Short => Some(ShortWindow::new(
                &model.encoder,
                &model.decoder,
                model.config.num_mel_bins,
                &device,
            )?),
            EncoderWindow::Full => None,
        };
        let name = dir
            .file_name()
            .map_or_else(|| "whisper".into(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            model,
            tokenizer,
            special,
            device,
            name,
            short_window,
        })
    }
}
