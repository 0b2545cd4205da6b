//! Whisper's encoder and decoder as plain candle-nn layers over the Hugging Face weights.
//!
//! The decoder is written here rather than taken from candle-transformers because that
//! one caches only the cross-attention keys and values: here the self-attention keys and
//! values are cached too, so each new token costs one position, not the whole prefix.

use std::sync::Arc;

use candle_core::{Device, Module, Tensor};
use candle_nn::{
    embedding, layer_norm, linear, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder,
};
use rayon::prelude::*;
use serde::Deserialize;

use super::{kernels, AsrError};

/// Layer norm epsilon Whisper was trained with.
const LAYER_NORM_EPS: f64 = 1e-5;

/// The architecture, as `config.json` of a Hugging Face Whisper folder gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct WhisperConfig {
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub num_mel_bins: usize,
    pub vocab_size: usize,
    /// Encoder positions: 1500 for 30 s.
    pub max_source_positions: usize,
    /// Decoder context: 448 tokens.
    pub max_target_positions: usize,
    #[serde(default)]
    pub suppress_tokens: Vec<u32>,
    #[serde(default)]
    pub begin_suppress_tokens: Vec<u32>,
}

/// How the matrix products of many rows (the encoder, prompts, scoring trees) are
/// computed. The decoder loses nothing measurable in 8 bits, nor the encoder in bfloat16;
/// the encoder in 8 bits moved one dev-set query's first hit (see docs/benchmarks.md, Speed
/// section), so it is not the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32: the reference, and the path for CPUs without AVX-512 VNNI.
    F32,
    /// The decoder in 8 bits, the encoder in f32.
    Int8Decoder,
    /// The decoder in 8 bits, the encoder in bfloat16 (AVX-512 BF16 too).
    Bf16Int8,
    /// Encoder and decoder in 8 bits.
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Int8Decoder => "int8-decoder",
            Self::Bf16Int8 => "bf16-int8",
            Self::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "f32" => Ok(Self::F32),
            "int8-decoder" => Ok(Self::Int8Decoder),
            "bf16-int8" => Ok(Self::Bf16Int8),
            "int8" => Ok(Self::Int8),
            _ => Err(format!(
                "{text:?} is not a precision: f32, int8-decoder, bf16-int8 or int8"
            )),
        }
    }
}

impl Precision {
    /// The default: the fastest that measured as accurate as f32 on this CPU.
    pub fn fastest() -> Self {
        match (kernels::int8::available(), kernels::bf16::available()) {
            (true, true) => Self::Bf16Int8,
            (true, false) => Self::Int8Decoder,
            (false, _) => Self::F32,
        }
    }

    /// Whether any product runs in 8 bits.
    pub fn uses_int8(self) -> bool {
        self != Self::F32
    }

    /// Whether any product runs in bfloat16.
    pub fn uses_bf16(self) -> bool {
        self == Self::Bf16Int8
    }
}

/// How one part of the model multiplies many rows.
#[derive(Clone, Copy)]
enum Products {
    Int8,
    Bf16,
    F32,
}

/// A linear layer that serves the shapes Whisper needs: many rows at once (the encoder,
/// a prompt, a scoring tree) through an 8-bit or candle's f32 matrix product, a beam's
/// few rows in bfloat16 where the CPU has it, and a decoding step's row through a
/// half-precision matrix-vector product, which skips the weight packing that dominates
/// a one-row product.
struct Projection {
    many: ManyRows,
    /// Only where passes of a few rows run (the decoder's), not in the encoder.
    half: Option<kernels::HalfMatrix>,
    /// The same weights in bfloat16 for passes of [`BF16_ROWS`] (a beam's paths), where
    /// the decoder runs in low precision and the CPU has the unit.
    few_bf16: Option<kernels::Bf16Matrix>,
    bias: Option<Tensor>,
    outputs: usize,
}

/// The product for many rows; in 8 bits or bfloat16, the f32 weights are not kept.
enum ManyRows {
    Int8(kernels::Int8Matrix),
    Bf16(kernels::Bf16Matrix),
    F32(Linear),
}

/// Rows up to which the few-row paths are taken (half precision, and bfloat16 from
/// three rows where present): decoding steps, beams and small token trees.
const VECTOR_ROWS: usize = 32;
/// Rows of the passes whose products run in bfloat16 where the decoder is in low
/// precision: a beam's paths. A decoding step's one or two rows stay in half precision,
/// so the free transcript is decoded as before.
const BF16_ROWS: std::ops::RangeInclusive<usize> = 3..=VECTOR_ROWS;
/// Queries up to which unmasked attention takes the one-query kernel rather than the
/// blocked matrix products: over 1500 keys of 6 heads (`cargo bench --bench kernels --
/// decoding_step/att`), 1 query 93 against 145 µs, 2 171 / 215, 4 300 / 257, 6 428 /
/// 269, 24 (a beam pass) 1.20 / 0.54 ms.
const ATTEND_ONE_QUERIES: usize = 2;

impl Projection {
    /// `few_rows`: whether passes of a few rows run through it, which keep the weights in
    /// half precision too.
    fn new(linear: Linear, products: Products, few_rows: bool) -> candle_core::Result<Self> {
        let half = few_rows
            .then(|| kernels::HalfMatrix::new(linear.weight()))
            .transpose()?;
        let bias = linear.bias().cloned();
        let (outputs, inputs) = linear.weight().dims2()?;
        let weight = linear.weight();
        let low = match products {
            Products::Int8 => kernels::with_f32_values(weight, |w| {
                kernels::Int8Matrix::new(w, outputs, inputs).map(ManyRows::Int8)
            })?,
            Products::Bf16 => kernels::with_f32_values(weight, |w| {
                kernels::Bf16Matrix::new(w, outputs, inputs).map(ManyRows::Bf16)
            })?,
            Products::F32 => None,
        };
        let few_bf16 = match products {
            Products::Int8 if few_rows => {
                kernels::with_f32_values(weight, |w| kernels::Bf16Matrix::new(w, outputs, inputs))?
            }
            _ => None,
        };
        let many = low.unwrap_or(ManyRows::F32(linear));
        Ok(Self {
            many,
            half,
            few_bf16,
            bias,
            outputs,
        })
    }

    fn load(
        inputs: usize,
        outputs: usize,
        bias: bool,
        vb: VarBuilder,
        products: Products,
        few_rows: bool,
    ) -> candle_core::Result<Self> {
        let linear = if bias {
            linear(inputs, outputs, vb)?
        } else {
            linear_no_bias(inputs, outputs, vb)?
        };
        Self::new(linear, products, few_rows)
    }

    /// `x` through one of the low-precision kernels, which take and give plain f32 rows.
    fn low_precision(
        &self,
        x: &Tensor,
        shape: Vec<usize>,
        product: impl Fn(&[f32], Option<&[f32]>) -> Vec<f32>,
    ) -> candle_core::Result<Tensor> {
        let bias = self.bias.as_ref().map(Tensor::to_vec1::<f32>).transpose()?;
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        Tensor::from_vec(product(&values, bias.as_deref()), shape, x.device())
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let inputs = *dims.last().expect("a projection input has dimensions");
        let rows = x.elem_count() / inputs;
        let mut shape = dims;
        *shape.last_mut().expect("non-empty") = self.outputs;
        if let Some(bf16) = self.few_bf16.as_ref().filter(|_| BF16_ROWS.contains(&rows)) {
            return self.low_precision(x, shape, |v, b| bf16.forward(v, b));
        }
        let Some(half) = self.half.as_ref().filter(|_| rows <= VECTOR_ROWS) else {
            return match &self.many {
                ManyRows::F32(linear) => linear.forward(x),
                ManyRows::Int8(int8) => self.low_precision(x, shape, |v, b| int8.forward(v, b)),
                ManyRows::Bf16(bf16) => self.low_precision(x, shape, |v, b| bf16.forward(v, b)),
            };
        };
        let rows = x.reshape((rows, inputs))?.to_vec2::<f32>()?;
        let out = if rows.len() == 1 {
            half.mul_vec(&rows[0])
        } else {
            half.mul_rows(&rows)
        };
        let out = Tensor::from_vec(out, shape, x.device())?;
        match &self.bias {
            Some(bias) => out.broadcast_add(bias),
            None => Ok(out),
        }
    }
}

/// Multi-head attention.
struct Attention {
    query: Projection,
    key: Projection,
    value: Projection,
    out: Projection,
    heads: usize,
}

impl Attention {
    fn load(
        vb: VarBuilder,
        d_model: usize,
        heads: usize,
        products: Products,
        few_rows: bool,
    ) -> candle_core::Result<Self> {
        let projection = |name: &str, bias: bool| {
            Projection::load(d_model, d_model, bias, vb.pp(name), products, few_rows)
        };
        Ok(Self {
            query: projection("q_proj", true)?,
            key: projection("k_proj", false)?,
            value: projection("v_proj", true)?,
            out: projection("out_proj", true)?,
            heads,
        })
    }

    /// [batch, time, d_model] -> [batch, heads, time, head_dim].
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, time, d_model) = x.dims3()?;
        x.reshape((batch, time, self.heads, d_model / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x`, split into heads.
    fn keys_values(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.key.forward(x)?)?,
            self.split_heads(&self.value.forward(x)?)?,
        ))
    }

    /// Self-attention over a long unmasked sequence (the encoder's 1500 positions),
    /// through the blocked CPU kernel, or in bfloat16 when `packed` (one sequence, the
    /// CPU has the unit); `later` holds the keys and values of positions after those of
    /// `x`, computed elsewhere.
    fn self_attend_long(
        &self,
        x: &Tensor,
        later: Option<(&Tensor, &Tensor)>,
        packed: bool,
    ) -> candle_core::Result<Tensor> {
        let (batch, time, d_model) = x.dims3()?;
        let head_dim = d_model / self.heads;
        let query = self.split_heads(&self.query.forward(x)?)?;
        let (mut keys, mut values) = self.keys_values(x)?;
        if let Some((later_keys, later_values)) = later {
            keys = Tensor::cat(&[&keys, later_keys], 2)?;
            values = Tensor::cat(&[&values, later_values], 2)?;
        }
        if packed && batch == 1 {
            if let Some(heads) = pack_heads(&keys, &values)? {
                return self.attend_heads(&query, &heads);
            }
        }
        let attended = kernels::attention(&query, &keys, &values, (head_dim as f32).powf(-0.5))?;
        self.merge_heads(&attended, (batch, time, d_model))
    }

    /// Attends from `x` to the given keys and values.
    fn attend(
        &self,
        x: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (batch, time, d_model) = x.dims3()?;
        let head_dim = d_model / self.heads;
        let scale = (head_dim as f64).powf(-0.5);
        let query = self.split_heads(&self.query.forward(x)?)?;
        let attended = if mask.is_none() && time <= ATTEND_ONE_QUERIES {
            // One or two queries that may see every key: a decoding step.
            kernels::attend_one(&query, keys, values, scale as f32)?
        } else if let Some(mask) = mask {
            // A prompt or a token tree: each query sees only a few of the keys.
            kernels::with_f32_values(mask, |mask| {
                kernels::masked_attention(&query, keys, values, mask, scale as f32)
            })??
        } else {
            // Several queries over the audio: a beam's or a scoring tree's
            // cross-attention.
            kernels::attention(&query, keys, values, scale as f32)?
        };
        self.merge_heads(&attended, (batch, time, d_model))
    }

    /// Attends from `x` (one sequence) to keys and values packed per head in bfloat16.
    fn attend_packed(
        &self,
        x: &Tensor,
        heads: &[kernels::Bf16Head],
    ) -> candle_core::Result<Tensor> {
        self.attend_heads(&self.split_heads(&self.query.forward(x)?)?, heads)
    }

    /// Attention of `query` [1, heads, time, head_dim] over packed heads, joined and
    /// projected.
    fn attend_heads(
        &self,
        query: &Tensor,
        heads: &[kernels::Bf16Head],
    ) -> candle_core::Result<Tensor> {
        let (batch, query_heads, time, head_dim) = query.dims4()?;
        if batch != 1 || query_heads != heads.len() {
            candle_core::bail!(
                "packed attention takes one sequence and {} heads, got {batch} and {query_heads}",
                heads.len()
            )
        }
        let scale = (head_dim as f64).powf(-0.5) as f32;
        let attended: Vec<f32> = kernels::with_f32_values(query, |query| {
            heads
                .par_iter()
                .zip(query.par_chunks(time * head_dim))
                .flat_map_iter(|(head, query)| head.attend(query, scale))
                .collect()
        })?;
        let attended = Tensor::from_vec(
            attended,
            (batch, self.heads, time, head_dim),
            query.device(),
        )?;
        self.merge_heads(&attended, (batch, time, self.heads * head_dim))
    }

    /// Heads' outputs [batch, heads, time, head_dim] joined and projected.
    fn merge_heads(
        &self,
        attended: &Tensor,
        (batch, time, d_model): (usize, usize, usize),
    ) -> candle_core::Result<Tensor> {
        let attended = attended.transpose(1, 2)?.reshape((batch, time, d_model))?;
        self.out.forward(&attended)
    }
}

/// The MLP of a block: d_model -> 4 d_model -> d_model with exact GELU.
struct FeedForward {
    norm: LayerNorm,
    up: Projection,
    down: Projection,
}

impl FeedForward {
    fn load(
        vb: VarBuilder,
        d_model: usize,
        products: Products,
        few_rows: bool,
    ) -> candle_core::Result<Self> {
        let hidden = vb.pp("fc1").get_unchecked("weight")?.dim(0)?;
        Ok(Self {
            norm: layer_norm(d_model, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
            up: Projection::load(d_model, hidden, true, vb.pp("fc1"), products, few_rows)?,
            down: Projection::load(hidden, d_model, true, vb.pp("fc2"), products, few_rows)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x + self
            .down
            .forward(&kernels::gelu(&self.up.forward(&self.norm.forward(x)?)?)?)?
    }
}

struct EncoderBlock {
    norm: LayerNorm,
    attention: Attention,
    feed_forward: FeedForward,
}

impl EncoderBlock {
    fn forward(
        &self,
        x: &Tensor,
        later: Option<(&Tensor, &Tensor)>,
        packed: bool,
    ) -> candle_core::Result<Tensor> {
        let x = (x + self
            .attention
            .self_attend_long(&self.norm.forward(x)?, later, packed)?)?;
        self.feed_forward.forward(&x)
    }
}

/// What the encoder makes of a window's silence from position `from` on: each block's
/// keys and values there and the output states, from one pass over a silent window.
pub struct Padding {
    from: usize,
    keys_values: Vec<(Tensor, Tensor)>,
    states: Tensor,
}

/// The decoder's cross-attention keys and values of a [`Padding`]'s states, per block:
/// made once, since every short window ends in that silence.
pub struct CrossPadding {
    from: usize,
    keys_values: Vec<(Tensor, Tensor)>,
}

/// The audio encoder: two convolutions, sinusoidal positions, pre-norm blocks.
pub struct Encoder {
    conv1: kernels::Conv3,
    conv2: kernels::Conv3,
    positions: Tensor,
    blocks: Vec<EncoderBlock>,
    norm: LayerNorm,
    /// Whether self-attention runs in bfloat16: with the encoder's products.
    packed_attention: bool,
}

impl Encoder {
    fn load(
        vb: VarBuilder,
        config: &WhisperConfig,
        products: Products,
    ) -> candle_core::Result<Self> {
        let d = config.d_model;
        let conv = |name: &str, inputs: usize, stride: usize| {
            let vb = vb.pp(name);
            kernels::Conv3::new(
                &vb.get((d, inputs, 3), "weight")?,
                &vb.get(d, "bias")?,
                stride,
            )
        };
        let blocks = (0..config.encoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(EncoderBlock {
                    norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("self_attn_layer_norm"))?,
                    attention: Attention::load(
                        vb.pp("self_attn"),
                        d,
                        config.encoder_attention_heads,
                        products,
                        false,
                    )?,
                    feed_forward: FeedForward::load(vb, d, products, false)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            conv1: conv("conv1", config.num_mel_bins, 1)?,
            conv2: conv("conv2", d, 2)?,
            positions: vb.get((config.max_source_positions, d), "embed_positions.weight")?,
            blocks,
            norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("layer_norm"))?,
            packed_attention: matches!(products, Products::Bf16),
        })
    }

    /// Convolutions and positions: mel features [batch, n_mels, frames] -> [batch,
    /// frames / 2, d_model].
    fn stem(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(mel, true)?;
        let x = self.conv2.forward_time_major(&x, true)?;
        let time = x.dim(1)?;
        x.broadcast_add(&self.positions.narrow(0, 0, time)?)
    }

    /// Mel features [batch, n_mels, 3000] -> audio states [batch, 1500, d_model].
    pub fn forward(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.stem(mel)?;
        for block in &self.blocks {
            x = block.forward(&x, None, self.packed_attention)?;
        }
        self.norm.forward(&x)
    }

    /// The [`Padding`] of a silent window's features [1, n_mels, 3000] from position
    /// `from` on.
    pub fn padding(&self, silence: &Tensor, from: usize) -> candle_core::Result<Padding> {
        let mut x = self.stem(silence)?;
        let rest = x.dim(1)? - from;
        let mut keys_values = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (keys, values) = block.attention.keys_values(&block.norm.forward(&x)?)?;
            keys_values.push((
                keys.narrow(2, from, rest)?.contiguous()?,
                values.narrow(2, from, rest)?.contiguous()?,
            ));
            x = block.forward(&x, None, self.packed_attention)?;
        }
        let states = self.norm.forward(&x)?.narrow(1, from, rest)?.contiguous()?;
        Ok(Padding {
            from,
            keys_values,
            states,
        })
    }

    /// The first frames of a window [1, n_mels, frames] whose other frames are the
    /// silence `padding` was made of -> audio states of the whole window [1, 1500,
    /// d_model], computing the first `time` positions: `frames` must exceed `2 * time`,
    /// since the convolutions of the last position see the frame after it. The positions
    /// computed attend to the padding's keys and values as the silent pass left them;
    /// the padding's states are that pass's.
    pub fn forward_padded(
        &self,
        mel: &Tensor,
        time: usize,
        padding: &Padding,
    ) -> candle_core::Result<Tensor> {
        let frames = mel.dim(2)?;
        if frames <= 2 * time {
            candle_core::bail!("{frames} frames are too few to compute {time} positions");
        }
        let mut x = self.stem(mel)?.narrow(1, 0, time)?;
        let (skip, rest) = padding_span(time, padding.from, padding.states.dim(1)?)?;
        for (block, (keys, values)) in self.blocks.iter().zip(&padding.keys_values) {
            let later = (&keys.narrow(2, skip, rest)?, &values.narrow(2, skip, rest)?);
            x = block.forward(&x, Some(later), self.packed_attention)?;
        }
        let x = self.norm.forward(&x)?;
        Tensor::cat(&[&x, &padding.states.narrow(1, skip, rest)?], 1)
    }
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
    cross_kv: Vec<(Tensor, Tensor)>,
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
    tokens: Embedding,
    /// The token embeddings again, in half precision, as the output projection.
    output: kernels::HalfMatrix,
    /// And in 8 bits, for many rows at once (scoring trees), with an 8-bit decoder.
    output_int8: Option<kernels::Int8Matrix>,
    positions: Tensor,
    blocks: Vec<DecoderBlock>,
    norm: LayerNorm,
    /// Whether [`Decoder::cache`] packs the audio's keys and values in bfloat16.
    packed_cross_attention: bool,
}

impl Decoder {
    fn load(
        vb: VarBuilder,
        config: &WhisperConfig,
        products: Products,
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
        let tokens = embedding(config.vocab_size, d, vb.pp("embed_tokens"))?;
        Ok(Self {
            output: kernels::HalfMatrix::new(tokens.embeddings())?,
            output_int8: match products {
                Products::Int8 => {
                    let (vocabulary, d_model) = tokens.embeddings().dims2()?;
                    kernels::with_f32_values(tokens.embeddings(), |weights| {
                        kernels::Int8Matrix::new(weights, vocabulary, d_model)
                    })?
                }
                Products::Bf16 | Products::F32 => None,
            },
            tokens,
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
        let (_, time) = tokens.dims2()?;
        let offset = cache.len();
        let positions = self.positions.narrow(0, offset, time)?;
        let mask = causal_mask(time, offset, tokens.device())?;
        self.forward_at(tokens, &positions, mask.as_ref(), cache)
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
        self.forward_at(tokens, &positions, Some(mask), cache)
    }

    fn forward_at(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut DecoderCache,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.tokens.forward(tokens)?.broadcast_add(positions)?;
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
    /// 8-bit decoder the normalizers come from the 8-bit vocabulary (five times faster
    /// than the half-precision one); a beam's few rows still take the asked tokens'
    /// logits from the half-precision rows, since those decide its choices (8-bit ones
    /// cost a dev top-1 hit), while a scoring tree's many rows take them in 8 bits too.
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

/// Where a window computed to `time` positions meets a padding of `held` positions from
/// `from` on: how many of the padding's to skip, and how many to take after them.
fn padding_span(time: usize, from: usize, held: usize) -> candle_core::Result<(usize, usize)> {
    let total = from + held;
    if time < from || time > total {
        candle_core::bail!("{time} positions computed, the padding covers {from} to {total}");
    }
    Ok((time - from, total - time))
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

/// One sequence's keys and values [1, heads, positions, head_dim], packed per head in
/// bfloat16; `None` without AVX-512 BF16.
fn pack_heads(
    keys: &Tensor,
    values: &Tensor,
) -> candle_core::Result<Option<Vec<kernels::Bf16Head>>> {
    let (_, heads, _, head_dim) = keys.dims4()?;
    kernels::with_f32_values(keys, |keys| {
        kernels::with_f32_values(values, |values| {
            let per_head = keys.len() / heads;
            keys.par_chunks(per_head)
                .zip(values.par_chunks(per_head))
                .map(|(k, v)| kernels::Bf16Head::new(k, v, head_dim))
                .collect()
        })
    })?
}

/// Whisper with its weights loaded.
pub struct WhisperModel {
    pub config: WhisperConfig,
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl WhisperModel {
    /// Builds the model from a VarBuilder over Hugging Face weights; a missing or
    /// mis-shaped tensor is named in the error.
    pub fn load(
        vb: VarBuilder,
        config: WhisperConfig,
        precision: Precision,
    ) -> Result<Self, AsrError> {
        let weights = |e: candle_core::Error| AsrError::Weights(e.to_string());
        let (encoder_products, decoder_products) = match precision {
            Precision::F32 => (Products::F32, Products::F32),
            Precision::Int8Decoder => (Products::F32, Products::Int8),
            Precision::Bf16Int8 => (Products::Bf16, Products::Int8),
            Precision::Int8 => (Products::Int8, Products::Int8),
        };
        let encoder =
            Encoder::load(vb.pp("model.encoder"), &config, encoder_products).map_err(weights)?;
        let decoder =
            Decoder::load(vb.pp("model.decoder"), &config, decoder_products).map_err(weights)?;
        Ok(Self {
            config,
            encoder,
            decoder,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use super::*;
    use crate::asr::mel::{MelExtractor, N_FRAMES, SAMPLE_RATE};
    use crate::asr::window::{ShortWindow, PEAK};

    const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/whisper-tiny.en");

    fn model(precision: Precision) -> WhisperModel {
        let dir = Path::new(MODEL);
        let config: WhisperConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        // SAFETY: read-only map of the weights file; every tensor is copied out.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
        }
        .unwrap();
        WhisperModel::load(vb, config, precision).unwrap()
    }

    /// The relative distance ‖a − b‖ / ‖b‖.
    fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt()
        };
        norm(&(a - b).unwrap()) / norm(b)
    }

    /// The features of the fixture q0004 (a real 2.4 s utterance) after the front end.
    fn q0004_features(n_mels: usize) -> Vec<f32> {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/q0004.wav"
        ))
        .unwrap();
        let format = crate::audio::AudioFormat {
            encoding: crate::audio::Encoding::Wav,
            sample_rate: None,
            channels: None,
        };
        let samples = crate::audio::prepare(&bytes, &format).unwrap().samples;
        MelExtractor::shared(n_mels).log_mel(&samples)
    }

    /// Each encoder block's output, from the mel of a real utterance.
    fn block_outputs(encoder: &Encoder, mel: &Tensor) -> Vec<Tensor> {
        let mut x = encoder.stem(mel).unwrap();
        let mut outputs = Vec::new();
        for block in &encoder.blocks {
            x = block.forward(&x, None, encoder.packed_attention).unwrap();
            outputs.push(x.clone());
        }
        outputs
    }

    /// On q0004, the 8-bit encoder's blocks stay within 5% of f32's outputs (measured:
    /// 1.3 to 2.3%), the bfloat16 encoder's within 1% (0.2 to 0.3%); the 8-bit decoder's
    /// hidden states within 8% (5.2%), and what decoding reads of them through the 8-bit
    /// output projection, the next tokens' log-probabilities, within 0.05 nats on average
    /// (0.023) and 0.5 at most (0.25).
    #[test]
    fn low_precision_layers_stay_close_to_f32() {
        if !crate::asr::kernels::int8::available() {
            eprintln!("no AVX-512 VNNI on this CPU: the 8-bit layers are not used here");
            return;
        }
        let reference = model(Precision::F32);
        let eight_bit = model(Precision::Int8);
        let bf16 = crate::asr::kernels::bf16::available().then(|| model(Precision::Bf16Int8));
        let n_mels = reference.config.num_mel_bins;
        let mel =
            Tensor::from_vec(q0004_features(n_mels), (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
        let exact = block_outputs(&reference.encoder, &mel);
        let approximate = block_outputs(&eight_bit.encoder, &mel);
        for (layer, (a, b)) in approximate.iter().zip(&exact).enumerate() {
            let error = relative_error(a, b);
            eprintln!("encoder block {layer}: {error}");
            assert!(error < 0.05, "encoder block {layer}: {error}");
        }
        if let Some(bf16) = &bf16 {
            for (layer, (a, b)) in block_outputs(&bf16.encoder, &mel)
                .iter()
                .zip(&exact)
                .enumerate()
            {
                let error = relative_error(a, b);
                eprintln!("bfloat16 encoder block {layer}: {error}");
                assert!(error < 0.01, "bfloat16 encoder block {layer}: {error}");
            }
        }

        // The decoder on the same (f32) audio states, teacher-forced with the transcript
        // four times over: more tokens than VECTOR_ROWS, so the 8-bit path runs.
        let audio = reference.encoder.forward(&mel).unwrap();
        let tokenizer =
            tokenizers::Tokenizer::from_file(Path::new(MODEL).join("tokenizer.json")).unwrap();
        let text = " You will now be placed into the conference.".repeat(4);
        let mut tokens = vec![50257, 50362];
        tokens.extend(tokenizer.encode(text, false).unwrap().get_ids());
        assert!(tokens.len() > VECTOR_ROWS);
        let ids = tokens.clone();
        let tokens = Tensor::new(tokens.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let hidden = |model: &WhisperModel| {
            let mut cache = model.decoder.cache(&audio).unwrap();
            model.decoder.forward(&tokens, &mut cache).unwrap()
        };
        let (approximate, exact) = (hidden(&eight_bit), hidden(&reference));
        let error = relative_error(&approximate, &exact);
        eprintln!("decoder hidden states: {error}");
        assert!(error < 0.08, "decoder hidden states: {error}");
        // What decoding reads: each next token's log-probability.
        let log_probs = |model: &WhisperModel, hidden: &Tensor| {
            let rows = hidden.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            let rows: Vec<&[f32]> = rows[..rows.len() - 1].iter().map(Vec::as_slice).collect();
            let targets: Vec<Vec<u32>> = ids[1..].iter().map(|&t| vec![t]).collect();
            let (_, chosen) = model.decoder.target_log_probs(&rows, &targets);
            chosen.into_iter().map(|t| t[0]).collect::<Vec<f32>>()
        };
        let (a, b) = (
            log_probs(&eight_bit, &approximate),
            log_probs(&reference, &exact),
        );
        let largest = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let mean = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).sum::<f32>() / a.len() as f32;
        eprintln!("next-token log-probabilities: mean difference {mean}, largest {largest}");
        assert!(
            mean < 0.05 && largest < 0.5,
            "log-probabilities: mean {mean}, largest {largest}"
        );
    }

    /// The padded encoding of a window: over silence, exactly the full pass; over the
    /// speech of q0004 (2.4 s), the computed positions' states within 10% of the full
    /// pass over the same features (measured at the 6 s floor: 8.9%), the padding's within
    /// 40% (34%):
    /// the padding hears the speech in the full pass only. What that costs in words is
    /// measured on the dev set (`asr::window`).
    #[test]
    fn padded_encoding_follows_the_full_pass() {
        let model = model(Precision::F32);
        let encoder = &model.encoder;
        let n_mels = model.config.num_mel_bins;
        // The least a short window computes, as for q0004.
        let first = ShortWindow::frames(SAMPLE_RATE).expect("a second is a short window");
        let silence = Tensor::full(PEAK - 2.0, (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
        let padding = encoder.padding(&silence, first / 2).unwrap();
        let padded = encoder
            .forward_padded(
                &silence.narrow(2, 0, first + 2).unwrap(),
                first / 2,
                &padding,
            )
            .unwrap();
        let full = encoder.forward(&silence).unwrap();
        let error = relative_error(&padded, &full);
        assert!(error < 1e-5, "silence: {error}");

        let mut features = q0004_features(n_mels);
        // The speech's floor is the silent pass's: shifted as a short window is.
        let loudest = features.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for value in &mut features {
            *value += PEAK - loudest;
        }
        let mel = Tensor::from_vec(features, (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
        let padded = encoder
            .forward_padded(&mel.narrow(2, 0, first + 2).unwrap(), first / 2, &padding)
            .unwrap();
        let full = encoder.forward(&mel).unwrap();
        let positions = first / 2;
        let part = |t: &Tensor, from: usize, len: usize| t.narrow(1, from, len).unwrap();
        let computed = relative_error(&part(&padded, 0, positions), &part(&full, 0, positions));
        let rest = 1500 - positions;
        let silent = relative_error(
            &part(&padded, positions, rest),
            &part(&full, positions, rest),
        );
        eprintln!("speech positions: {computed}, padding: {silent}");
        assert!(computed < 0.1, "speech positions: {computed}");
        assert!(silent < 0.4, "padding: {silent}");
    }

    /// A short window's decoder cache, its silent positions' keys and values made at
    /// load, is the cache computed from all of the window's states.
    #[test]
    fn a_padded_decoder_cache_is_the_whole_one() {
        let model = model(Precision::fastest());
        let n_mels = model.config.num_mel_bins;
        let first = ShortWindow::frames(SAMPLE_RATE).expect("a second is a short window");
        let silence = Tensor::full(PEAK - 2.0, (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
        let padding = model.encoder.padding(&silence, first / 2).unwrap();
        let cross = model.decoder.cross_padding(&padding).unwrap();
        let mel =
            Tensor::from_vec(q0004_features(n_mels), (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
        // More than the least window, so that part of the padding is skipped.
        let time = first / 2 + 50;
        let audio = model
            .encoder
            .forward_padded(&mel.narrow(2, 0, 2 * time + 2).unwrap(), time, &padding)
            .unwrap();
        let whole = model.decoder.cache(&audio).unwrap();
        let padded = model.decoder.cache_padded(&audio, time, &cross).unwrap();
        for ((k, v), (pk, pv)) in whole.cross_kv.iter().zip(&padded.cross_kv) {
            assert_eq!(k.dims(), pk.dims());
            assert!(relative_error(k, pk) < 1e-6 && relative_error(v, pv) < 1e-6);
        }
        assert!(model
            .decoder
            .cache_padded(&audio, first / 2 - 1, &cross)
            .is_err());
    }
}
