//! Speech recognition with Whisper in candle.
//!
//! [`Whisper::load`] reads a Hugging Face Whisper folder once; [`Whisper::transcribe`]
//! turns 16 kHz mono samples into a [`Transcript`]. The model is shared: every call keeps
//! its decoding state on its own stack, so any number of workers can use one model.
//! [`ct2`] imports CTranslate2 folders, [`mel`] computes features, [`model`] holds the
//! network, [`window`] how much of the window the encoder computes, and [`decode`] the
//! decoding loop.

pub mod ct2;
pub mod decode;
pub mod forced;
pub mod kernels;
pub mod mel;
pub mod model;
pub mod tokens;
mod tree;
pub mod trie;
pub mod window;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use decode::{compression_ratio, DecodeRequest, DecodeResult};
pub use forced::{AcousticContext, BeamMatch, Reading, ReadingScore};
use mel::{MelExtractor, N_FRAMES, N_SAMPLES, SAMPLE_RATE};
pub use model::Precision;
use model::{DecoderCache, WhisperConfig, WhisperModel};
use tokens::{SpecialTokens, TIMESTAMP_SECONDS};
pub use tree::TokenTree;
pub use trie::TokenTrie;
pub use window::EncoderWindow;
use window::ShortWindow;

/// Tokens in the English-only Whisper vocabulary; multilingual models have more.
const ENGLISH_VOCAB_SIZE: usize = 51_864;

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
    #[error("precision {0} needs AVX-512 VNNI (and BF16 for bf16), which this CPU lacks: use f32")]
    Unsupported(Precision),
}

/// How to transcribe.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// ISO 639-1 code; `None` is English for English-only models and detected otherwise.
    pub language: Option<String>,
    /// 1 decodes greedily; more uses beam search at temperature 0.
    pub beam_size: usize,
    /// Produce segment timestamps (always on for audio longer than one window).
    pub timestamps: bool,
    /// Words or names to make likelier, passed as the decoder's previous text.
    pub phrase_hints: Vec<String>,
    /// Tried in turn while a result looks like a failure (openai-whisper's fallback; see
    /// `decode_with_fallback` for what counts as one).
    pub temperatures: Vec<f32>,
    /// Above this compression ratio a result is a repetition loop.
    pub compression_ratio_threshold: f32,
    /// Below this average log-probability a result is unreliable: with a high no-speech
    /// probability nothing was said, and in long-form audio the window is decoded again.
    pub logprob_threshold: f32,
    /// Above this no-speech probability (with an unreliable result) nothing was said.
    pub no_speech_threshold: f32,
    /// Above this no-speech probability nothing was said, however confident the text:
    /// Whisper writes a fluent "you" over digital silence. On the dev set speech never
    /// scored above 0.5.
    pub no_speech_certain: f32,
    /// Transcripts to return, best first: above 1, a single-window utterance is decoded
    /// by a beam at least this wide and its other finished hypotheses come back too.
    pub alternatives: usize,
    /// Set from another thread to stop at the next window or decoding pass with
    /// [`AsrError::Cancelled`]: nobody is waiting for the transcript any more.
    pub cancelled: Option<Arc<AtomicBool>>,
}

impl TranscribeOptions {
    /// These options, stopping once `flag` is raised.
    pub fn cancelled_by(self, flag: Arc<AtomicBool>) -> Self {
        Self {
            cancelled: Some(flag),
            ..self
        }
    }

    fn check_cancelled(&self) -> Result<(), AsrError> {
        match &self.cancelled {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(AsrError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Tokens allowed per window: a base plus a rate no speech reaches (about 4 tokens per
/// second is fast speech), so that a repetition loop stops early instead of running to
/// the context limit.
fn token_budget(window_seconds: f32) -> usize {
    const BASE_TOKENS: f32 = 16.0;
    const TOKENS_PER_SECOND: f32 = 6.0;
    (BASE_TOKENS + TOKENS_PER_SECOND * window_seconds).ceil() as usize
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            beam_size: 1,
            timestamps: false,
            phrase_hints: Vec::new(),
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: 2.4,
            logprob_threshold: -1.0,
            no_speech_threshold: 0.6,
            no_speech_certain: 0.85,
            alternatives: 1,
            cancelled: None,
        }
    }
}

/// Where a window being decoded comes from.
#[derive(Debug, Clone, Copy)]
struct WindowKind {
    /// Encoded short ([`EncoderWindow::Short`]), not as the whole 30 s.
    short: bool,
    /// One of several windows of audio longer than 30 s.
    long_form: bool,
}

/// A piece of the transcript with its times, in seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_seconds: f32,
    pub end_seconds: f32,
    pub text: String,
}

/// What was said.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Empty when nothing was said.
    pub text: String,
    pub segments: Vec<Segment>,
    pub language: String,
    /// Probability that the (first) window held no speech.
    pub no_speech_prob: f32,
    /// Mean log-probability per token.
    pub avg_logprob: f32,
    /// Mean probability of the transcript's tokens, 0..1.
    pub confidence: f32,
    /// The n-best transcripts, the text above first; only the text above unless more
    /// alternatives were asked for.
    pub alternatives: Vec<TranscriptAlternative>,
    /// Time spent in each stage of the model.
    pub timings: AsrTimings,
}

/// One of the n-best transcripts.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptAlternative {
    pub text: String,
    /// Mean log-probability per token.
    pub avg_logprob: f32,
    /// Mean probability of its tokens, 0..1.
    pub confidence: f32,
}

/// Time spent in each stage of one transcription, summed over its windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AsrTimings {
    pub mel: Duration,
    pub encoder: Duration,
    /// Decoding passes, language detection and fallbacks included.
    pub decoder: Duration,
}

impl Transcript {
    /// The transcript of audio in which nobody spoke.
    pub fn silent() -> Self {
        Self {
            text: String::new(),
            segments: Vec::new(),
            language: String::new(),
            no_speech_prob: 1.0,
            avg_logprob: 0.0,
            confidence: 0.0,
            alternatives: Vec::new(),
            timings: AsrTimings::default(),
        }
    }
}

/// The segments of one window.
struct WindowSegments {
    /// Segments closed by a timestamp (or the whole window without timestamps).
    complete: Vec<Segment>,
    /// Text after the last timestamp that no timestamp closed.
    unfinished: Option<Segment>,
    /// Where, in seconds from the window's start, the next window should begin when
    /// the model did not transcribe the window to its end.
    resume_seconds: Option<f32>,
}

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
        if config.suppress_tokens.is_empty() {
            // Hub folders often keep these in generation_config.json instead.
            if let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) {
                if let Ok(generation) = serde_json::from_str::<serde_json::Value>(&text) {
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
            }
        }
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

    /// Whether the model knows languages other than English.
    pub fn is_multilingual(&self) -> bool {
        self.special.languages.len() > 1 && self.model.config.vocab_size > ENGLISH_VOCAB_SIZE
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, AsrError> {
        Ok(self.transcribe_in_context(samples, options)?.0)
    }

    /// Transcribes, and keeps what scoring other readings of the same audio needs
    /// ([`Whisper::score_readings`]) when the audio fits one window and held speech.
    pub fn transcribe_in_context(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<(Transcript, Option<AcousticContext>), AsrError> {
        let mel = MelExtractor::shared(self.model.config.num_mel_bins);
        let mut prompt = self.encode_hints(&options.phrase_hints)?;
        let long_form = samples.len() > N_SAMPLES;
        let timestamps = options.timestamps || long_form;

        let mut seek = 0usize;
        let mut language = None;
        let mut segments = Vec::new();
        let mut first_no_speech = None;
        let (mut logprob_sum, mut token_count, mut prob_sum) = (0f32, 0usize, 0f32);
        let mut timings = AsrTimings::default();
        let mut context = None;
        let mut other_texts = Vec::new();
        while seek < samples.len() {
            let window = &samples[seek..samples.len().min(seek + N_SAMPLES)];
            // A sliver left at the end holds nothing to decode.
            if window.len() < SAMPLE_RATE / 10 && seek > 0 {
                break;
            }
            options.check_cancelled()?;
            let started = Instant::now();
            let features = mel.log_mel(window);
            timings.mel += started.elapsed();
            let budget = token_budget(window.len() as f32 / SAMPLE_RATE as f32);
            // `short`: the frames a short window computed, with the silent pass behind them.
            let mut decode = |audio: Tensor, short: Option<usize>, timings: &mut AsrTimings| {
                let started = Instant::now();
                // Cross-attention keys and values: once per window, for every decoding pass.
                let fresh = match (short, &self.short_window) {
                    (Some(frames), Some(window)) => {
                        window.cache(&self.model.decoder, &audio, frames)?
                    }
                    _ => self.model.decoder.cache(&audio)?,
                };
                let language_token = self.window_language(&mut language, options, &fresh)?;
                let result = self.decode_with_fallback(
                    &fresh,
                    &prompt,
                    language_token,
                    timestamps,
                    budget,
                    options,
                    WindowKind {
                        short: short.is_some(),
                        long_form,
                    },
                )?;
                timings.decoder += started.elapsed();
                Ok::<_, AsrError>(result)
            };
            let decoded =
                match self.encode_short(&features, window.len(), long_form, &mut timings)? {
                    Some((audio, frames)) => decode(audio, Some(frames), &mut timings)?,
                    None => None,
                };
            let result = match decoded {
                Some(decoded) => decoded,
                None => {
                    let started = Instant::now();
                    let features =
                        Tensor::from_vec(features, (1, mel.n_mels(), N_FRAMES), &self.device)?;
                    let audio = self.model.encoder.forward(&features)?;
                    timings.encoder += started.elapsed();
                    decode(audio, None, &mut timings)?.ok_or(AsrError::NoTemperatures)?
                }
            };
            if !long_form {
                for alternative in &result.alternatives {
                    other_texts.push(TranscriptAlternative {
                        text: self.text(&alternative.tokens)?.trim().to_string(),
                        avg_logprob: alternative.avg_logprob,
                        confidence: alternative.mean_prob,
                    });
                }
                context = Some(AcousticContext {
                    prompt: result.prompt.clone(),
                });
            }
            first_no_speech.get_or_insert(result.no_speech_prob);
            let silent = result.no_speech_prob > options.no_speech_certain
                || (result.no_speech_prob > options.no_speech_threshold
                    && result.avg_logprob < options.logprob_threshold);
            let window_seconds = window.len() as f32 / SAMPLE_RATE as f32;
            let offset = seek as f32 / SAMPLE_RATE as f32;
            let mut advance = window.len();
            if !silent {
                let window_segments =
                    self.segments(&result.tokens, timestamps, offset, window_seconds)?;
                segments.extend(window_segments.complete);
                let more_audio = seek + window.len() < samples.len();
                match window_segments.resume_seconds {
                    // Decode what follows the last complete segment again, in the next window.
                    Some(resume) if more_audio => {
                        advance = ((resume * SAMPLE_RATE as f32) as usize)
                            .clamp(SAMPLE_RATE, window.len());
                    }
                    _ => segments.extend(window_segments.unfinished),
                }
                logprob_sum += result.sum_logprob;
                token_count += result.token_probs.len();
                prob_sum += result.token_probs.iter().sum::<f32>();
                prompt.extend(
                    result
                        .tokens
                        .iter()
                        .filter(|&&t| t < self.special.end_of_text),
                );
            }
            seek += advance;
        }
        let text = segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let language = self
            .special
            .languages
            .iter()
            .find(|(_, id)| Some(*id) == language)
            .map_or_else(|| "en".to_string(), |(code, _)| code.clone());
        let avg_logprob = if token_count > 0 {
            logprob_sum / token_count as f32
        } else {
            0.0
        };
        let confidence = if token_count > 0 {
            prob_sum / token_count as f32
        } else {
            0.0
        };
        let mut alternatives = Vec::new();
        if !text.is_empty() {
            alternatives.push(TranscriptAlternative {
                text: text.clone(),
                avg_logprob,
                confidence,
            });
            for other in other_texts {
                if alternatives.len() < options.alternatives
                    && !alternatives.iter().any(|a| a.text == other.text)
                {
                    alternatives.push(other);
                }
            }
        }
        let transcript = Transcript {
            alternatives,
            text,
            segments,
            language,
            no_speech_prob: first_no_speech.unwrap_or(1.0),
            avg_logprob,
            confidence,
            timings,
        };
        let context = context.filter(|_| !transcript.text.is_empty());
        Ok((transcript, context))
    }

    /// The audio states of a window from its first frames and the silent pass, and the
    /// frames computed, when the model keeps one, the window holds a short utterance and
    /// a sound.
    fn encode_short(
        &self,
        features: &[f32],
        samples: usize,
        long_form: bool,
        timings: &mut AsrTimings,
    ) -> Result<Option<(Tensor, usize)>, AsrError> {
        let (Some(short), Some(frames), false) =
            (&self.short_window, ShortWindow::frames(samples), long_form)
        else {
            return Ok(None);
        };
        let started = Instant::now();
        let n_mels = self.model.config.num_mel_bins;
        let audio = short.encode(&self.model.encoder, features, n_mels, frames, &self.device)?;
        timings.encoder += started.elapsed();
        Ok(audio.map(|audio| (audio, frames)))
    }

    /// The language of the first window, detected once, for every later window.
    fn window_language(
        &self,
        language: &mut Option<u32>,
        options: &TranscribeOptions,
        fresh: &DecoderCache,
    ) -> Result<u32, AsrError> {
        match *language {
            Some(token) => Ok(token),
            None => {
                let token = self.language_token(options.language.as_deref(), fresh)?;
                *language = Some(token);
                Ok(token)
            }
        }
    }

    /// Decodes at rising temperatures while the result looks like a failure: a
    /// repetition loop (compression ratio) or, in long-form audio, an unlikely text
    /// (average log-probability), unless the model says nobody spoke. From a short
    /// window, a repetition loop gives `None` instead: the whole window is worth encoding
    /// before any sampling. A single-window utterance keeps an unlikely greedy text: an
    /// unfamiliar name is unlikely by nature, and re-scoring against the catalog is what
    /// recovers it; on the dev set the retries changed no WER or top-1 hit and were most
    /// of the slowest twentieth of latencies (up to five more decodes).
    #[allow(clippy::too_many_arguments)]
    fn decode_with_fallback(
        &self,
        fresh: &DecoderCache,
        prompt: &[u32],
        language: u32,
        timestamps: bool,
        max_tokens: usize,
        options: &TranscribeOptions,
        window: WindowKind,
    ) -> Result<Option<DecodeResult>, AsrError> {
        // (result, whether its compression ratio passed)
        let mut tried: Vec<(DecodeResult, bool)> = Vec::new();
        for (i, &temperature) in options.temperatures.iter().enumerate() {
            options.check_cancelled()?;
            let request = DecodeRequest {
                prompt,
                language: self.is_multilingual().then_some(language),
                timestamps,
                temperature,
                beam_size: options.beam_size.max(options.alternatives),
                seed: 0x5EED + i as u64,
                max_tokens,
            };
            let result = decode::decode(&self.model, &self.special, fresh, &request)?;
            let text = self.text(&result.tokens)?;
            let too_repetitive = compression_ratio(&text) > options.compression_ratio_threshold;
            let too_unlikely = window.long_form && result.avg_logprob < options.logprob_threshold;
            let nobody_spoke = result.no_speech_prob > options.no_speech_threshold;
            if nobody_spoke || !(too_repetitive || too_unlikely) {
                return Ok(Some(result));
            }
            if window.short && too_repetitive {
                return Ok(None);
            }
            tried.push((result, !too_repetitive));
        }
        // Every pass failed: keep the likeliest one that is not a repetition loop (as
        // faster-whisper does) rather than the last, hottest sample.
        let any_passed = tried.iter().any(|(_, passed)| *passed);
        tried
            .into_iter()
            .filter(|(_, passed)| *passed || !any_passed)
            .map(|(result, _)| result)
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
            .map(Some)
            .ok_or(AsrError::NoTemperatures)
    }

    /// The language token to decode with: the requested one (checked), English for
    /// English-only models, or the most likely one for multilingual models.
    fn language_token(
        &self,
        requested: Option<&str>,
        fresh: &DecoderCache,
    ) -> Result<u32, AsrError> {
        let english = self
            .special
            .language("en")
            .unwrap_or(self.special.start_of_transcript);
        if !self.is_multilingual() {
            return match requested {
                None | Some("") | Some("en") => Ok(english),
                Some(other) => Err(AsrError::Language(
                    other.to_string(),
                    format!("{} is an English-only model; load a multilingual one (for example whisper-base)", self.name),
                )),
            };
        }
        if let Some(code) = requested.filter(|c| !c.is_empty()) {
            return self.special.language(code).ok_or_else(|| {
                AsrError::Language(
                    code.to_string(),
                    "use an ISO 639-1 code Whisper knows, such as en, de or fr".into(),
                )
            });
        }
        let mut cache = fresh.clone();
        let input = Tensor::new(&[[self.special.start_of_transcript]], &self.device)?;
        let hidden = self.model.decoder.forward(&input, &mut cache)?;
        let logits = self
            .model
            .decoder
            .logits(&hidden.squeeze(1)?)?
            .swap_remove(0);
        Ok(self
            .special
            .languages
            .iter()
            .map(|&(_, id)| id)
            .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
            .unwrap_or(english))
    }

    /// Splits a window's tokens into segments (times offset by `offset` seconds).
    fn segments(
        &self,
        tokens: &[u32],
        timestamps: bool,
        offset: f32,
        window_seconds: f32,
    ) -> Result<WindowSegments, AsrError> {
        let whole = |text: String| Segment {
            start_seconds: offset,
            end_seconds: offset + window_seconds,
            text: text.trim().to_string(),
        };
        if !timestamps {
            let text = self.text(tokens)?;
            let complete = if text.trim().is_empty() {
                Vec::new()
            } else {
                vec![whole(text)]
            };
            return Ok(WindowSegments {
                complete,
                unfinished: None,
                resume_seconds: None,
            });
        }
        let begin = self.special.timestamp_begin;
        let time = |t: u32| (t - begin) as f32 * TIMESTAMP_SECONDS;
        let mut complete = Vec::new();
        let mut start: Option<u32> = None;
        let mut last_end = None;
        let mut text_tokens = Vec::new();
        for &token in tokens {
            if token < begin {
                text_tokens.push(token);
                continue;
            }
            match start {
                Some(opening) if !text_tokens.is_empty() => {
                    complete.push(Segment {
                        start_seconds: offset + time(opening),
                        end_seconds: offset + time(token),
                        text: self.text(&text_tokens)?.trim().to_string(),
                    });
                    text_tokens.clear();
                    start = None;
                    last_end = Some(time(token));
                }
                _ => start = Some(token),
            }
        }
        let rest = self.text(&text_tokens)?;
        let unfinished = (!rest.trim().is_empty()).then(|| Segment {
            start_seconds: offset + start.map_or(0.0, time),
            end_seconds: offset + window_seconds,
            text: rest.trim().to_string(),
        });
        // As openai-whisper seeks: a window whose tokens end with text and one timestamp
        // was heard to its end; otherwise the model stopped early (or cut a segment off),
        // and the next window starts where the last complete segment ended.
        let single_timestamp_ending = tokens.len() >= 2
            && tokens[tokens.len() - 1] >= begin
            && tokens[tokens.len() - 2] < begin;
        let resume_seconds = if single_timestamp_ending {
            None
        } else {
            last_end
        };
        Ok(WindowSegments {
            complete,
            unfinished,
            resume_seconds,
        })
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
        Ok(encoding.get_ids().to_vec())
    }
}
