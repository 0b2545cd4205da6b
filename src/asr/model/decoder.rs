//! The text decoder with its caches: self-attention keys and values of the tokens so
//! far, and cross-attention keys and values of the audio, computed once per window.

use std::sync::Arc;

use candle_core::{Device, Module, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};
use rayon::prelude::*;

use super::attention::{pack_heads, Attention};
use super::encoder::Padding;
use super::feed_forward::FeedForward;
use super::{padding_span, WhisperConfig, LAYER_NORM_EPS};
use crate::asr::kernels;
use crate::asr::precision::{Products, VECTOR_ROWS};

/// One attention head of the decoder: (block, head).
pub type Head = (usize, usize);

/// The decoder's cross-attention keys and values of a [`Padding`]'s states, per block:
/// made once, since every short window ends in that silence.
pub struct CrossPadding {
    from: usize,
    keys_values: Vec<(Tensor, Tensor)>,
}

struct DecoderBlock {
    self_norm: LayerNorm,
    self_attention: Attention,
    cross_norm: LayerNorm,
    cross_attention: Attention,
    feed_forward: FeedForward,
}

/// Keys and values one decoding pass keeps: per block, the self-attention history and
/// the cross-attention projections of the audio states (computed once).
#[derive(Clone)]
pub struct DecoderCache {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    pub(super) cross_kv: Vec<(Tensor, Tensor)>,
    /// The cross-attention keys and values again in bfloat16, per block and head, which
    /// every pass over one sequence attends to (see [`Decoder::cache`]).
    cross_bf16: Option<Arc<Vec<Vec<kernels::Bf16Head>>>>,
}

impl DecoderCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.self_kv
            .first()
            .and_then(|kv| kv.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The audio's keys and values alone, with no tokens before: a pass over a new
    /// sequence of the same window.
    pub fn audio_only(&self) -> Self {
        Self {
            self_kv: vec![None; self.self_kv.len()],
            cross_kv: self.cross_kv.clone(),
            cross_bf16: self.cross_bf16.clone(),
        }
    }

    /// Keeps the batch rows `rows` (in that order): beam search reorders hypotheses.
    pub fn select(&self, rows: &Tensor) -> candle_core::Result<Self> {
        let pick = |t: &Tensor| t.index_select(rows, 0);
        Ok(Self {
            self_kv: self
                .self_kv
                .iter()
                .map(|kv| {
                    kv.as_ref()
                        .map(|(k, v)| Ok::<_, candle_core::Error>((pick(k)?, pick(v)?)))
                        .transpose()
                })
                .collect::<candle_core::Result<_>>()?,
            cross_kv: self
                .cross_kv
                .iter()
                .map(|(k, v)| Ok((pick(k)?, pick(v)?)))
                .collect::<candle_core::Result<_>>()?,
            // Packed for one sequence only, and reordering is for batches.
            cross_bf16: None,
        })
    }
}

/// The text decoder.
pub struct Decoder {
    /// The token embeddings in half precision, as they ship: the input embedding (one
    /// row per token) and the output projection. No f32 copy is kept; it would be the
    /// model's largest tensor.
    output: kernels::HalfMatrix,
    /// And in 8 bits, for many rows at once (scoring trees), where the precision says so.
    output_int8: Option<kernels::Int8Matrix>,
    positions: Tensor,
    blocks: Vec<DecoderBlock>,
    norm: LayerNorm,
    /// Whether [`Decoder::cache`] packs the audio's keys and values in bfloat16.
    packed_cross_attention: bool,
}

impl Decoder {
    pub(super) fn load(
        vb: VarBuilder,
        config: &WhisperConfig,
        products: Products,
        output_int8: bool,
    ) -> candle_core::Result<Self> {
        let d = config.d_model;
        let blocks = (0..config.decoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(DecoderBlock {
                    self_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("self_attn_layer_norm"))?,
                    self_attention: Attention::load(
                        vb.pp("self_attn"),
                        d,
                        config.decoder_attention_heads,
                        products,
                        true,
                    )?,
                    cross_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("encoder_attn_layer_norm"))?,
                    cross_attention: Attention::load(
                        vb.pp("encoder_attn"),
                        d,
                        config.decoder_attention_heads,
                        products,
                        true,
                    )?,
                    feed_forward: FeedForward::load(vb, d, products, true)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        let tokens = vb.get((config.vocab_size, d), "embed_tokens.weight")?;
        Ok(Self {
            output: kernels::HalfMatrix::new(&tokens)?,
            output_int8: if output_int8 {
                kernels::with_f32_values(&tokens, |weights| {
                    kernels::Int8Matrix::new(weights, config.vocab_size, d)
                })?
            } else {
                None
            },
            positions: vb.get((config.max_target_positions, d), "embed_positions.weight")?,
            blocks,
            norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("layer_norm"))?,
            packed_cross_attention: matches!(products, Products::Int8)
                && kernels::bf16::available(),
        })
    }

    /// A fresh cache for these audio states ([batch, 1500, d_model]). Where the decoder
    /// runs in low precision and the CPU has the unit, the audio's keys and values of one
    /// sequence are also packed in bfloat16 while they are still in cache, and every pass
    /// attends to those.
    pub fn cache(&self, audio: &Tensor) -> candle_core::Result<DecoderCache> {
        self.cache_with(audio, None)
    }

    /// [`Decoder::cache`] for the audio states of a short window [1, 1500, d_model]
    /// whose positions from `time` on are those of the silence `padding` was made of:
    /// only the first `time` positions' keys and values are computed, the rest are the
    /// padding's (each position's are its own, so the cache is the same).
    pub fn cache_padded(
        &self,
        audio: &Tensor,
        time: usize,
        padding: &CrossPadding,
    ) -> candle_core::Result<DecoderCache> {
        self.cache_with(audio, Some((time, padding)))
    }

    /// The cross-attention keys and values of a padding's states.
    pub fn cross_padding(&self, padding: &Padding) -> candle_core::Result<CrossPadding> {
        Ok(CrossPadding {
            from: padding.from,
            keys_values: self
                .blocks
                .iter()
                .map(|block| block.cross_attention.keys_values(&padding.states))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    fn cache_with(
        &self,
        audio: &Tensor,
        padded: Option<(usize, &CrossPadding)>,
    ) -> candle_core::Result<DecoderCache> {
        let packed = self.packed_cross_attention && audio.dim(0)? == 1;
        let mut cross_kv = Vec::with_capacity(self.blocks.len());
        let mut cross_bf16 = Vec::with_capacity(self.blocks.len());
        let padded = match padded {
            Some((time, padding)) => {
                let held = padding
                    .keys_values
                    .first()
                    .map_or(Ok(0), |(k, _)| k.dim(2))?;
                Some((time, padding, padding_span(time, padding.from, held)?))
            }
            None => None,
        };
        for (i, block) in self.blocks.iter().enumerate() {
            let (keys, values) = match padded {
                None => block.cross_attention.keys_values(audio)?,
                Some((time, padding, (skip, rest))) => {
                    let (keys, values) = block
                        .cross_attention
                        .keys_values(&audio.narrow(1, 0, time)?)?;
                    let (later_keys, later_values) = &padding.keys_values[i];
                    (
                        Tensor::cat(&[&keys, &later_keys.narrow(2, skip, rest)?], 2)?,
                        Tensor::cat(&[&values, &later_values.narrow(2, skip, rest)?], 2)?,
                    )
                }
            };
            if packed {
                cross_bf16.push(pack_heads(&keys, &values)?);
            }
            cross_kv.push((keys, values));
        }
        let cross_bf16: Option<Vec<_>> = cross_bf16.into_iter().collect();
        Ok(DecoderCache {
            self_kv: vec![None; self.blocks.len()],
            cross_kv,
            cross_bf16: cross_bf16.filter(|_| packed).map(Arc::new),
        })
    }

    /// Runs new tokens [batch, time] after those in `cache`; returns the final hidden
    /// states [batch, time, d_model] (see [`Decoder::logits`]).
    pub fn forward(
        &self,
        tokens: &Tensor,
        cache: &mut DecoderCache,
    ) -> candle_core::Result<Tensor> {
        self.forward_after(tokens, cache, None)
    }

    /// Runs `tokens` [1, time] after those in `cache` as [`Decoder::forward`] does, and
    /// returns the cross-attention scores (scaled query-key products, before the
    /// softmax) of the heads `heads` ((block, head), in block order), [time, audio
    /// positions] each: where each token looked in the audio.
    pub fn cross_attention_scores(
        &self,
        tokens: &Tensor,
        cache: &mut DecoderCache,
        heads: &[Head],
    ) -> candle_core::Result<Vec<Tensor>> {
        let mut scores = Vec::with_capacity(heads.len());
        self.forward_after(tokens, cache, Some((heads, &mut scores)))?;
        Ok(scores)
    }

    /// `tokens` at the positions after those in `cache`, each seeing those before it.
    fn forward_after(
        &self,
        tokens: &Tensor,
        cache: &mut DecoderCache,
        scores: Option<(&[Head], &mut Vec<Tensor>)>,
    ) -> candle_core::Result<Tensor> {
        let (_, time) = tokens.dims2()?;
        let offset = cache.len();
        let positions = self.positions.narrow(0, offset, time)?;
        let mask = causal_mask(time, offset, tokens.device())?;
        self.forward_at(tokens, &positions, mask.as_ref(), cache, scores)
    }

    /// Runs the nodes of a token tree [1, time] after those in `cache`: each node at its
    /// own position (its depth after the shared prefix) and seeing only what `mask`
    /// [time, cached + time] leaves at 0, so that many continuations of one prefix run as
    /// one sequence over a single copy of the cross-attention cache.
    pub fn forward_tree(
        &self,
        tokens: &Tensor,
        positions: &[u32],
        mask: &Tensor,
        cache: &mut DecoderCache,
    ) -> candle_core::Result<Tensor> {
        let index = Tensor::new(positions, tokens.device())?;
        let positions = self.positions.index_select(&index, 0)?;
        self.forward_at(tokens, &positions, Some(mask), cache, None)
    }

    /// The pass itself; `scores` asks for some heads' cross-attention scores too.
    fn forward_at(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut DecoderCache,
        mut scores: Option<(&[Head], &mut Vec<Tensor>)>,
    ) -> candle_core::Result<Tensor> {
        let (batch, time) = tokens.dims2()?;
        let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
        let embedded = Tensor::from_vec(
            self.output.gather_rows(&ids),
            (batch, time, self.output.cols()),
            tokens.device(),
        )?;
        let mut x = embedded.broadcast_add(positions)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let normed = block.self_norm.forward(&x)?;
            let (keys, values) = block.self_attention.keys_values(&normed)?;
            let (keys, values) = match cache.self_kv[i].take() {
                Some((k, v)) => (
                    Tensor::cat(&[&k, &keys], 2)?,
                    Tensor::cat(&[&v, &values], 2)?,
                ),
                None => (keys, values),
            };
            x = (&x + block.self_attention.attend(&normed, &keys, &values, mask)?)?;
            cache.self_kv[i] = Some((keys, values));
            let normed = block.cross_norm.forward(&x)?;
            let (ck, cv) = &cache.cross_kv[i];
            if let Some((heads, out)) = scores.as_mut() {
                if heads.iter().any(|&(b, _)| b == i) {
                    let all = block.cross_attention.scores(&normed, ck)?.squeeze(0)?;
                    for &(_, head) in heads.iter().filter(|&&(b, _)| b == i) {
                        out.push(all.get(head)?);
                    }
                }
            }
            let attended = match cache.cross_bf16.as_ref() {
                Some(packed) => block.cross_attention.attend_packed(&normed, &packed[i])?,
                None => block.cross_attention.attend(&normed, ck, cv, None)?,
            };
            x = (&x + attended)?;
            x = block.feed_forward.forward(&x)?;
        }
        self.norm.forward(&x)
    }

    /// Logits over the vocabulary of hidden states [rows, d_model], one vector per row; the
    /// output projection shares the token embedding matrix. Only the positions decoding
    /// needs go through it: a 51,864-wide projection is the costliest step per token.
    pub fn logits(&self, hidden: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        Ok(hidden
            .to_vec2::<f32>()?
            .iter()
            .map(|row| self.output.mul_vec(row))
            .collect())
    }

    /// Log-probabilities of chosen next tokens after each of the hidden states (rows of
    /// d_model values): `targets[r]` lists the tokens asked of row `r`. Also returns each
    /// row's normalizer, with which [`Decoder::logit`] gives any other token's
    /// log-probability later. The vocabulary streams through once for all rows, each
    /// block keeping its share of every row's normalizer (`benches/kernels.rs`). With an
    /// 8-bit output projection the normalizers come from the 8-bit vocabulary (a sum over every
    /// token, which 8-bit errors barely move); a beam's few rows still take the asked
    /// tokens' logits from the half-precision rows, since those decide its choices, while
    /// a scoring tree's many rows take them in 8 bits too (docs/benchmarks.md).
    pub fn target_log_probs(
        &self,
        hidden: &[&[f32]],
        targets: &[Vec<u32>],
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        match &self.output_int8 {
            Some(int8) if hidden.len() > VECTOR_ROWS => int8.log_softmax_at(hidden, targets),
            Some(int8) => {
                // The normalizer is a sum over every token, which 8-bit errors barely
                // move.
                let none: Vec<Vec<u32>> = vec![Vec::new(); hidden.len()];
                let (normalizers, _) = int8.log_softmax_at(hidden, &none);
                let chosen = hidden
                    .par_iter()
                    .zip(targets)
                    .zip(&normalizers)
                    .map(|((row, tokens), normalizer)| {
                        tokens
                            .iter()
                            .map(|&t| self.output.dot_row(t as usize, row) - normalizer)
                            .collect()
                    })
                    .collect();
                (normalizers, chosen)
            }
            _ => self.output.log_softmax_at(hidden, targets),
        }
    }

    /// The logit of one token after a hidden state.
    pub fn logit(&self, hidden: &[f32], token: u32) -> f32 {
        self.output.dot_row(token as usize, hidden)
    }
}

/// -inf above the diagonal for a block of `time` new tokens after `offset` cached ones;
/// none for a single token, which may see everything.
fn causal_mask(time: usize, offset: usize, device: &Device) -> candle_core::Result<Option<Tensor>> {
    if time == 1 {
        return Ok(None);
    }
    let values: Vec<f32> = (0..time)
        .flat_map(|i| {
            (0..offset + time).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (time, offset + time), device).map(Some)
}
