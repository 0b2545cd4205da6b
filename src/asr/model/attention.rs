//! Multi-head attention over the model's projections, each shape sent to its kernel: a
//! decoding step's one or two queries, a prompt's or a token tree's masked rows, and
//! blocks of queries over the audio.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::asr::kernels;
use crate::asr::precision::{Products, Projection};

/// Queries up to which unmasked attention takes the one-query kernel rather than the
/// blocked matrix products: where the one-query kernel is the faster over 1500 keys
/// (`cargo bench --bench kernels -- decoding_step/att`).
const ATTEND_ONE_QUERIES: usize = 2;

/// Multi-head attention.
pub(super) struct Attention {
    query: Projection,
    key: Projection,
    value: Projection,
    out: Projection,
    heads: usize,
}

impl Attention {
    pub(super) fn load(
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
    pub(super) fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, time, d_model) = x.dims3()?;
        x.reshape((batch, time, self.heads, d_model / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x`, split into heads.
    pub(super) fn keys_values(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.key.forward(x)?)?,
            self.split_heads(&self.value.forward(x)?)?,
        ))
    }

    /// Self-attention over a long unmasked sequence (the encoder's 1500 positions),
    /// through the blocked CPU kernel, or in bfloat16 when `packed` (one sequence, the
    /// CPU has the unit); `later` holds the keys and values of positions after those of
    /// `x`, computed elsewhere.
    pub(super) fn self_attend_long(
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
    pub(super) fn attend(
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

    /// The scaled query-key products of `x` [batch, time, d_model] against `keys`
    /// [batch, heads, positions, head_dim], before the softmax: [batch, heads, time,
    /// positions].
    pub(super) fn scores(&self, x: &Tensor, keys: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, d_model) = x.dims3()?;
        let scale = ((d_model / self.heads) as f64).powf(-0.5);
        let query = self.split_heads(&self.query.forward(x)?)?;
        query.matmul(&keys.t()?.contiguous()?)? * scale
    }

    /// Attends from `x` (one sequence) to keys and values packed per head in bfloat16.
    pub(super) fn attend_packed(
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

/// One sequence's keys and values [1, heads, positions, head_dim], packed per head in
/// bfloat16; `None` without AVX-512 BF16.
pub(super) fn pack_heads(
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
