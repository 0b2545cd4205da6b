//! The MLP of a block.

use candle_core::{Module, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};

use super::LAYER_NORM_EPS;
use crate::asr::kernels;
use crate::asr::precision::{Products, Projection};

/// The MLP of a block: d_model -> 4 d_model -> d_model with exact GELU.
pub(super) struct FeedForward {
    norm: LayerNorm,
    up: Projection,
    down: Projection,
}

impl FeedForward {
    pub(super) fn load(
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

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x + self
            .down
            .forward(&kernels::gelu(&self.up.forward(&self.norm.forward(x)?)?)?)?
    }
}
