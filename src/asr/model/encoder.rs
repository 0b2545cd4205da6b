//! The audio encoder, and its padded pass: a short window computes only its first
//! positions and takes the rest from one pass over silence made at load.

use candle_core::{Module, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};

use super::attention::Attention;
use super::feed_forward::FeedForward;
use super::{padding_span, WhisperConfig, LAYER_NORM_EPS};
use crate::asr::kernels;
use crate::asr::precision::Products;

pub(super) struct EncoderBlock {
    norm: LayerNorm,
    attention: Attention,
    feed_forward: FeedForward,
}

impl EncoderBlock {
    pub(super) fn forward(
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
    pub(super) from: usize,
    keys_values: Vec<(Tensor, Tensor)>,
    pub(super) states: Tensor,
}

/// The audio encoder: two convolutions, sinusoidal positions, pre-norm blocks.
pub struct Encoder {
    conv1: kernels::Conv3,
    conv2: kernels::Conv3,
    positions: Tensor,
    pub(super) blocks: Vec<EncoderBlock>,
    norm: LayerNorm,
    /// Whether self-attention runs in bfloat16: with the encoder's products.
    pub(super) packed_attention: bool,
}

impl Encoder {
    pub(super) fn load(
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
    pub(super) fn stem(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
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
