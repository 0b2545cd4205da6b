//! Whisper's encoder and decoder as plain candle-nn layers over the Hugging Face weights.
//!
//! The decoder is written here rather than taken from candle-transformers because that
//! one caches only the cross-attention keys and values: here the self-attention keys and
//! values are cached too, so each new token costs one position, not the whole prefix.
//!
//! Only the network lives here: how its products are computed is
//! [`super::precision`]'s, and how it is decoded is the caller's ([`super::decode`],
//! [`super::constrained`]).

mod attention;
mod decoder;
mod encoder;
mod feed_forward;
#[cfg(test)]
mod tests;

use candle_nn::VarBuilder;
use serde::Deserialize;

pub use decoder::{CrossPadding, Decoder, DecoderCache, Head};
pub use encoder::{Encoder, Padding};

use super::precision::{Precision, Products};
use super::AsrError;

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
    /// The cross-attention heads (block, head) that follow the speech, for word times
    /// (null in a converted folder whose checkpoint named none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub alignment_heads: Vec<Head>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Head>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
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
        let (encoder_products, decoder_products) = Products::of(precision);
        let encoder =
            Encoder::load(vb.pp("model.encoder"), &config, encoder_products).map_err(weights)?;
        let decoder = Decoder::load(
            vb.pp("model.decoder"),
            &config,
            decoder_products,
            precision.output_in_int8(),
        )
        .map_err(weights)?;
        Ok(Self {
            config,
            encoder,
            decoder,
        })
    }
}
