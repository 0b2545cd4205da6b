//! Decoding one 30 s window, as openai-whisper does: the prompt (previous text, then the
//! start-of-transcript sequence), logit filters (suppressed tokens, no blank start,
//! timestamp rules), greedy, sampled or beam search steps over a KV cache, and the
//! figures the fallback decision needs (average log-probability, compression ratio,
//! no-speech probability).

use std::io::Write;

use candle_core::{Device, Tensor};

use super::constrained::PromptPass;
use super::kernels::log_sum_exp;
use super::model::{DecoderCache, WhisperModel};
use super::tokens::SpecialTokens;
use super::AsrError;

/// Most tokens sampled per window: half the decoder context, as openai-whisper does.
pub const MAX_SAMPLED_TOKENS: usize = 224;
/// Most prompt (previous text) tokens: the other half, less the start-of-prev token.
pub const MAX_PROMPT_TOKENS: usize = 223;
/// The first timestamp may not come later than this (in timestamp steps: 1 s).
const MAX_INITIAL_TIMESTAMP_STEPS: u32 = 50;

/// What to decode and how.
#[derive(Debug, Clone)]
pub struct DecodeRequest<'a> {
    /// Previous-text tokens (phrase hints, earlier windows), at most the last 223 used.
    pub prompt: &'a [u32],
    /// The language token for multilingual models.
    pub language: Option<u32>,
    pub timestamps: bool,
    /// 0 decodes greedily (or by beam search when `beam_size` > 1); above 0 samples.
    pub temperature: f32,
    pub beam_size: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Most tokens to sample (further capped by the context).
    pub max_tokens: usize,
}

/// The decoded tokens of one window and the figures about them.
#[derive(Debug, Clone)]
pub struct DecodeResult {
    /// Sampled tokens: text and timestamps, without the final end-of-text.
    pub tokens: Vec<u32>,
    /// Probability of each sampled token, end-of-text included.
    pub token_probs: Vec<f32>,
    pub sum_logprob: f32,
    /// Sum of log-probabilities over (tokens + 1), as openai-whisper averages.
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// The beam's other finished hypotheses, best first (empty without a beam).
    pub alternatives: Vec<Alternative>,
    /// The start sequence as the decoder left it, for trees grown over the window.
    pub prompt: PromptPass,
}

/// Another hypothesis of a beam.
#[derive(Debug, Clone)]
pub struct Alternative {
    pub tokens: Vec<u32>,
    pub avg_logprob: f32,
    /// Mean probability of its tokens, 0..1.
    pub mean_prob: f32,
}

/// One hypothesis of a beam.
#[derive(Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    probs: Vec<f32>,
    sum_logprob: f32,
}

/// Decodes a window, starting from `fresh`: the cache holding the window's
/// cross-attention keys and values and no tokens yet (shared by every fallback pass).
pub fn decode(
    model: &WhisperModel,
    special: &SpecialTokens,
    fresh: &DecoderCache,
    request: &DecodeRequest,
) -> Result<DecodeResult, AsrError> {
    let decoder = &model.decoder;
    let initial = start_sequence(
        special,
        request.prompt,
        request.language,
        request.timestamps,
    );
    let sot_index = initial
        .iter()
        .position(|&t| t == special.start_of_transcript)
        .expect("the start sequence holds start-of-transcript");

    let device = &Device::Cpu;
    let mut cache = fresh.clone();
    let prompt = Tensor::new(initial.as_slice(), device)?.unsqueeze(0)?;
    let hidden = decoder.forward(&prompt, &mut cache)?;
    let prompt_pass = PromptPass::from_hidden(cache.clone(), &hidden)?;
    // The no-speech probability is read where the model predicts what follows
    // start-of-transcript.
    let positions = Tensor::new(&[sot_index as u32, (initial.len() - 1) as u32], device)?;
    let logits = decoder.logits(&hidden.squeeze(0)?.index_select(&positions, 0)?)?;
    let no_speech_prob = softmax(&logits[0])[special.no_speech as usize];

    let filters = Filters::new(model, special, request.timestamps);
    let max_tokens = request
        .max_tokens
        .min(MAX_SAMPLED_TOKENS)
        .min(model.config.max_target_positions - initial.len());
    let mut others = Vec::new();
    let best = if request.beam_size > 1 && request.temperature == 0.0 {
        let mut finished = beam_search(
            model,
            &filters,
            &mut cache,
            logits[1].clone(),
            request.beam_size,
            max_tokens,
        )?
        .into_iter();
        let best = finished.next().expect("at least one hypothesis");
        others = finished
            .map(|h| Alternative {
                avg_logprob: h.sum_logprob / (h.tokens.len() + 1) as f32,
                mean_prob: h.probs.iter().sum::<f32>() / h.probs.len().max(1) as f32,
                tokens: h.tokens,
            })
            .collect();
        best
    } else {
        let mut rng = Rng(request.seed.max(1));
        sample(
            model,
            &filters,
            &mut cache,
            logits[1].clone(),
            request.temperature,
            max_tokens,
            &mut rng,
        )?
    };
    let avg_logprob = best.sum_logprob / (best.tokens.len() + 1) as f32;
    Ok(DecodeResult {
        tokens: best.tokens,
        token_probs: best.probs,
        sum_logprob: best.sum_logprob,
        avg_logprob,
        no_speech_prob,
        alternatives: others,
        prompt: prompt_pass,
    })
}

/// The tokens a window's decoding starts from: the previous text (at most the last 223
/// tokens of `prompt`), start-of-transcript, the language and task for multilingual
/// models, and no-timestamps when timestamps are off.
pub fn start_sequence(
    special: &SpecialTokens,
    prompt: &[u32],
    language: Option<u32>,
    timestamps: bool,
) -> Vec<u32> {
    let mut initial = Vec::new();
    if !prompt.is_empty() {
        initial.push(special.start_of_prev);
        let start = prompt.len().saturating_sub(MAX_PROMPT_TOKENS);
        initial.extend(&prompt[start..]);
    }
    initial.push(special.start_of_transcript);
    if let Some(language) = language {
        initial.push(language);
        initial.extend(special.transcribe);
    }
    if !timestamps {
        initial.push(special.no_timestamps);
    }
    initial
}

/// Greedy (temperature 0) or sampled decoding of one hypothesis.
fn sample(
    model: &WhisperModel,
    filters: &Filters,
    cache: &mut DecoderCache,
    mut logits: Vec<f32>,
    temperature: f32,
    max_tokens: usize,
    rng: &mut Rng,
) -> Result<Hypothesis, AsrError> {
    let mut hypothesis = Hypothesis {
        tokens: Vec::new(),
        probs: Vec::new(),
        sum_logprob: 0.0,
    };
    for _ in 0..max_tokens {
        filters.apply(&mut logits, &hypothesis.tokens);
        let token = if temperature > 0.0 {
            let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
            rng.pick(&softmax(&scaled))
        } else {
            argmax(&logits)
        };
        let logprob = logits[token as usize] - log_sum_exp(&logits);
        hypothesis.sum_logprob += logprob;
        hypothesis.probs.push(logprob.exp());
        if token == filters.end_of_text {
            break;
        }
        hypothesis.tokens.push(token);
        let input = Tensor::new(&[[token]], &Device::Cpu)?;
        let hidden = model.decoder.forward(&input, cache)?;
        logits = model.decoder.logits(&hidden.squeeze(1)?)?.swap_remove(0);
    }
    Ok(hypothesis)
}

/// Beam search over `beam_size` hypotheses, batched through the decoder; returns the
/// finished hypotheses best first by length-normalized log-probability.
fn beam_search(
    model: &WhisperModel,
    filters: &Filters,
    cache: &mut DecoderCache,
    first_logits: Vec<f32>,
    beam_size: usize,
    max_tokens: usize,
) -> Result<Vec<Hypothesis>, AsrError> {
    let mut beams = vec![Hypothesis {
        tokens: Vec::new(),
        probs: Vec::new(),
        sum_logprob: 0.0,
    }];
    let mut beam_logits = vec![first_logits];
    let mut beam_cache = cache.clone();
    let mut finished: Vec<Hypothesis> = Vec::new();
    for _ in 0..max_tokens {
        let mut candidates: Vec<(f32, usize, u32, f32)> = Vec::new();
        for (b, (beam, logits)) in beams.iter().zip(beam_logits.iter_mut()).enumerate() {
            filters.apply(logits, &beam.tokens);
            let logprobs = log_softmax(logits);
            for token in top_k(&logprobs, beam_size + 1) {
                let lp = logprobs[token as usize];
                candidates.push((beam.sum_logprob + lp, b, token, lp));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut next = Vec::new();
        let mut rows = Vec::new();
        for (score, b, token, lp) in candidates {
            let mut hypothesis = beams[b].clone();
            hypothesis.sum_logprob = score;
            hypothesis.probs.push(lp.exp());
            if token == filters.end_of_text {
                if finished.len() < beam_size {
                    finished.push(hypothesis);
                }
            } else if next.len() < beam_size {
                hypothesis.tokens.push(token);
                next.push(hypothesis);
                rows.push(b as u32);
            }
            // As openai-whisper: an ended hypothesis counts only when it ranks among the
            // `beam_size` best extensions, so that unlikely early ends cannot fill the
            // finished list before the likely ones end.
            if next.len() == beam_size {
                break;
            }
        }
        if finished.len() >= beam_size || next.is_empty() {
            break;
        }
        beam_cache = beam_cache.select(&Tensor::new(rows.as_slice(), &Device::Cpu)?)?;
        let tokens: Vec<u32> = next
            .iter()
            .map(|h| *h.tokens.last().expect("pushed above"))
            .collect();
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu)?.unsqueeze(1)?;
        let hidden = model.decoder.forward(&input, &mut beam_cache)?;
        beam_logits = model.decoder.logits(&hidden.squeeze(1)?)?;
        beams = next;
    }
    if finished.is_empty() {
        finished = beams;
    }
    let score = |h: &Hypothesis| h.sum_logprob / h.probs.len().max(1) as f32;
    finished.sort_by(|a, b| score(b).total_cmp(&score(a)));
    Ok(finished)
}

/// The logit filters openai-whisper applies before each step.
struct Filters {
    end_of_text: u32,
    timestamp_begin: u32,
    no_timestamps: u32,
    timestamps: bool,
    /// Suppressed at every step.
    suppressed: Vec<u32>,
    /// Suppressed at the first step only (a blank or an immediate end).
    suppressed_at_start: Vec<u32>,
}

impl Filters {
    fn new(model: &WhisperModel, special: &SpecialTokens, timestamps: bool) -> Self {
        let mut suppressed = model.config.suppress_tokens.clone();
        suppressed.extend(special.never_sampled());
        let vocab = model.config.vocab_size as u32;
        suppressed.retain(|&t| t < vocab);
        Self {
            end_of_text: special.end_of_text,
            timestamp_begin: special.timestamp_begin,
            no_timestamps: special.no_timestamps,
            timestamps,
            suppressed,
            suppressed_at_start: model.config.begin_suppress_tokens.clone(),
        }
    }

    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let ban = |logits: &mut [f32], range: std::ops::Range<usize>| {
            let end = range.end.min(logits.len());
            for l in &mut logits[range.start.min(end)..end] {
                *l = f32::NEG_INFINITY;
            }
        };
        if sampled.is_empty() {
            for &t in &self.suppressed_at_start {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        for &t in &self.suppressed {
            logits[t as usize] = f32::NEG_INFINITY;
        }
        let ts = self.timestamp_begin as usize;
        logits[self.no_timestamps as usize] = f32::NEG_INFINITY;
        if !self.timestamps {
            ban(logits, ts..usize::MAX);
            return;
        }
        let is_timestamp = |t: &u32| *t >= self.timestamp_begin;
        let last = sampled.last().is_some_and(is_timestamp);
        let penultimate = sampled.len() < 2 || is_timestamp(&sampled[sampled.len() - 2]);
        if last {
            if penultimate {
                ban(logits, ts..usize::MAX);
            } else {
                ban(logits, 0..self.end_of_text as usize);
            }
        }
        if let Some(&latest) = sampled.iter().rev().find(|t| is_timestamp(t)) {
            // Timestamps never go back; a closing one may repeat the opening one.
            let floor = if last && !penultimate {
                latest
            } else {
                latest + 1
            };
            ban(logits, ts..floor as usize);
        }
        if sampled.is_empty() {
            ban(logits, 0..ts);
            ban(
                logits,
                ts + MAX_INITIAL_TIMESTAMP_STEPS as usize + 1..usize::MAX,
            );
        }
        // When a timestamp is likelier than any single text token, take a timestamp.
        let logprobs = log_softmax(logits);
        let timestamp_logprob = log_sum_exp(&logprobs[ts..]);
        let best_text = logprobs[..ts]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if timestamp_logprob > best_text {
            ban(logits, 0..ts);
        }
    }
}

/// gzip-style compression ratio of the text, as openai-whisper computes it to spot
/// repetition loops.
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(text.as_bytes())
        .expect("writing to memory");
    let compressed = encoder.finish().expect("writing to memory");
    text.len() as f32 / compressed.len() as f32
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|&l| l - lse).collect()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    log_softmax(logits).into_iter().map(f32::exp).collect()
}

fn argmax(values: &[f32]) -> u32 {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let mut indices: Vec<u32> = (0..values.len() as u32).collect();
    let k = k.min(indices.len());
    indices.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
        values[b as usize].total_cmp(&values[a as usize])
    });
    indices.truncate(k);
    indices
}

/// A small seeded sampler (xorshift64*), so that fallback decoding is reproducible.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }

    fn pick(&mut self, probs: &[f32]) -> u32 {
        let mut target = self.next_f32();
        for (i, &p) in probs.iter().enumerate() {
            target -= p;
            if target <= 0.0 {
                return i as u32;
            }
        }
        argmax(probs)
    }
}
