//! Attention on the CPU, one kernel per shape: one query over cached keys (a decoding
//! step), masked rows that read only the keys they see (a prompt, a token tree), and
//! blocks of queries whose score rows stay in cache (the encoder, a beam over the audio).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu;
use super::f32_slice;
use super::math::{softmax_in_place, softmax_portable, LANES};

/// Attention of one new query per (batch, head) over cached keys and values, all
/// contiguous [batch, heads, time, head_dim]: a decoding step. Reads the caches in place,
/// where a matrix product would first copy (pack) all 1500 cross-attention keys and
/// values of every layer for every token.
pub fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> candle_core::Result<Tensor> {
    rowwise_attention(q, k, v, RowwiseAttention { scale, mask: None })
}

/// Attention one query row at a time, each reading the caches in place: every key
/// ([`attend_one`]) or only those its mask leaves finite ([`masked_attention`]).
struct RowwiseAttention<'a> {
    scale: f32,
    /// Additive, [queries, keys], shared by every (batch, head).
    mask: Option<&'a [f32]>,
}

/// Query rows a worker takes at once under a mask: each row's work is a few dozen
/// short dot products.
const MASKED_ROWS_PER_TASK: usize = 32;

fn rowwise_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    op: RowwiseAttention,
) -> candle_core::Result<Tensor> {
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

impl CustomOp3 for RowwiseAttention<'_> {
    fn name(&self) -> &'static str {
        "rowwise-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v, (batch, heads, queries, head_dim), keys) =
            attention_operands(q, q_layout, k, k_layout, v, v_layout)?;
        if let Some(mask) = self.mask.filter(|m| m.len() != queries * keys) {
            candle_core::bail!(
                "attention mask holds {} values for {queries} queries over {keys} keys",
                mask.len()
            )
        }
        let mut out = vec![0f32; batch * heads * queries * head_dim];
        out.par_chunks_mut(head_dim)
            .with_min_len(self.mask.map_or(1, |_| MASKED_ROWS_PER_TASK))
            .enumerate()
            .for_each(|(row, out)| {
                let (bh, query) = (row / queries, row % queries);
                let q = &q[row * head_dim..(row + 1) * head_dim];
                let k = &k[bh * keys * head_dim..(bh + 1) * keys * head_dim];
                let v = &v[bh * keys * head_dim..(bh + 1) * keys * head_dim];
                match self.mask {
                    None => attend_row(q, k, v, self.scale, out),
                    Some(mask) => {
                        attend_visible(q, k, v, &mask[query * keys..][..keys], self.scale, out)
                    }
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, heads, queries, head_dim)),
        ))
    }
}

/// One query's attention over the keys of its head that `mask` leaves finite, added
/// into `out`.
fn attend_visible(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], scale: f32, out: &mut [f32]) {
    let head_dim = q.len();
    let visible: Vec<usize> = (0..mask.len()).filter(|&j| mask[j].is_finite()).collect();
    let mut scores: Vec<f32> = visible
        .iter()
        .map(|&j| scale * dot(&k[j * head_dim..(j + 1) * head_dim], q) + mask[j])
        .collect();
    softmax_in_place(&mut scores);
    for (&weight, &j) in scores.iter().zip(&visible) {
        for (o, x) in out.iter_mut().zip(&v[j * head_dim..(j + 1) * head_dim]) {
            *o += weight * x;
        }
    }
}

/// One query's attention over every key of its head, added into `out`: compiled for
/// AVX2 and FMA when the processor has them, since the generic build's SSE code runs
/// these loops at half the speed.
fn attend_row(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    debug_assert!(
        k.len() == v.len() && k.len().is_multiple_of(q.len().max(1)) && out.len() == q.len()
    );
    #[cfg(target_arch = "x86_64")]
    if cpu::has_avx2_fma() {
        // SAFETY: the features the function is compiled for were just detected.
        return unsafe { attend_row_avx2(q, k, v, scale, out) };
    }
    attend_row_portable(q, k, v, scale, out)
}

/// [`attend_row_portable`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA. (The body is safe code; only its compilation needs them.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_row_avx2(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    attend_row_portable(q, k, v, scale, out)
}

#[inline(always)]
fn attend_row_portable(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    let head_dim = q.len();
    let mut scores: Vec<f32> = k
        .chunks_exact(head_dim)
        .map(|key| scale * dot(key, q))
        .collect();
    softmax_portable(&mut scores);
    for (&weight, value) in scores.iter().zip(v.chunks_exact(head_dim)) {
        for (o, x) in out.iter_mut().zip(value) {
            *o += weight * x;
        }
    }
}

/// Attention under an additive mask [queries, keys] shared by every (batch, head), for
/// contiguous q [batch, heads, queries, head_dim] and k, v [batch, heads, keys,
/// head_dim]: a prompt or a token tree. Each query reads only the keys its mask leaves
/// finite (a tree node sees the prompt and its ancestors, a few dozen of hundreds), where
/// a matrix product would score every key and then mask most away (`cargo bench --bench
/// kernels -- decoding_step/tree_self_attention`).
pub fn masked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &[f32],
    scale: f32,
) -> candle_core::Result<Tensor> {
    rowwise_attention(
        q,
        k,
        v,
        RowwiseAttention {
            scale,
            mask: Some(mask),
        },
    )
}

/// What both attention ops read of their operands: the three slices, the queries' shape
/// (batch, heads, queries, head dimension) and the number of keys.
type AttentionOperands<'a> = (
    &'a [f32],
    &'a [f32],
    &'a [f32],
    (usize, usize, usize, usize),
    usize,
);

fn attention_operands<'a>(
    q: &'a CpuStorage,
    q_layout: &Layout,
    k: &'a CpuStorage,
    k_layout: &Layout,
    v: &'a CpuStorage,
    v_layout: &Layout,
) -> candle_core::Result<AttentionOperands<'a>> {
    Ok((
        f32_slice(q, q_layout)?,
        f32_slice(k, k_layout)?,
        f32_slice(v, v_layout)?,
        q_layout.shape().dims4()?,
        k_layout.shape().dims4()?.2,
    ))
}

/// Dot product with independent lane sums, so that it vectorizes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Queries per attention block.
const QUERY_BLOCK: usize = 128;

/// Scaled dot-product attention for contiguous q, k, v of shape [batch, heads, time,
/// head_dim], without a mask.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &BlockedAttention { scale },
    )
}

struct BlockedAttention {
    scale: f32,
}

impl CustomOp3 for BlockedAttention {
    fn name(&self) -> &'static str {
        "blocked-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v, (batch, heads, queries, head_dim), keys) =
            attention_operands(q, q_layout, k, k_layout, v, v_layout)?;
        let out = blocked_attention(
            q,
            k,
            v,
            (batch * heads, queries, keys, head_dim),
            self.scale,
        );
        Ok((CpuStorage::F32(out), q_layout.shape().clone()))
    }
}

/// The attention itself over contiguous [heads, time, head_dim] slices; `shape` is
/// (batch × heads, queries, keys, head_dim).
fn blocked_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (heads, queries, keys, head_dim): (usize, usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; heads * queries * head_dim];
    out.par_chunks_mut(queries * head_dim)
        .enumerate()
        .for_each(|(head, out)| {
            let q = &q[head * queries * head_dim..(head + 1) * queries * head_dim];
            let k = &k[head * keys * head_dim..(head + 1) * keys * head_dim];
            let v = &v[head * keys * head_dim..(head + 1) * keys * head_dim];
            let mut scores = vec![0f32; QUERY_BLOCK.min(queries) * keys];
            for start in (0..queries).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(queries - start);
                let scores = &mut scores[..rows * keys];
                // SAFETY: every pointer and stride below addresses inside the slices it comes
                // from: q block [rows × head_dim], k read transposed [head_dim × keys],
                // scores [rows × keys], v [keys × head_dim], out block [rows × head_dim].
                unsafe {
                    gemm::gemm(
                        rows,
                        keys,
                        head_dim,
                        scores.as_mut_ptr(),
                        1,
                        keys as isize,
                        false,
                        q[start * head_dim..].as_ptr(),
                        1,
                        head_dim as isize,
                        k.as_ptr(),
                        head_dim as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for row in scores.chunks_mut(keys) {
                    softmax_in_place(row);
                }
                // SAFETY: as above: scores [rows × keys], v [keys × head_dim], out block
                // [rows × head_dim].
                unsafe {
                    gemm::gemm(
                        rows,
                        head_dim,
                        keys,
                        out[start * head_dim..].as_mut_ptr(),
                        1,
                        head_dim as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        keys as isize,
                        v.as_ptr(),
                        1,
                        head_dim as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::kernels::largest_difference;
    use candle_core::Device;

    /// softmax(q kᵀ · scale) v, with candle's own operations.
    fn plain_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    #[test]
    fn attention_matches_the_plain_formula() {
        let device = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 3, 100, 16), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 3, 90, 16), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 3, 90, 16), &device).unwrap();
        let scale = 0.25;
        let fast = attention(&q, &k, &v, scale).unwrap();
        let plain = plain_attention(&q, &k, &v, scale as f64);
        let difference = largest_difference(&fast, &plain);
        assert!(difference < 1e-5, "{difference}");
    }

    #[test]
    fn attend_one_matches_the_plain_formula() {
        let device = Device::Cpu;
        // One query per head (a decoding step) and two (two paths of a tree).
        for queries in [1, 2] {
            let q = Tensor::randn(0f32, 1.0, (2, 3, queries, 16), &device).unwrap();
            let k = Tensor::randn(0f32, 1.0, (2, 3, 50, 16), &device).unwrap();
            let v = Tensor::randn(0f32, 1.0, (2, 3, 50, 16), &device).unwrap();
            let fast = attend_one(&q, &k, &v, 0.25).unwrap();
            let plain = plain_attention(&q, &k, &v, 0.25);
            let difference = largest_difference(&fast, &plain);
            assert!(difference < 1e-5, "{queries} queries: {difference}");
        }
    }

    #[test]
    fn masked_attention_matches_the_masked_formula() {
        let device = Device::Cpu;
        let (queries, keys) = (7, 12);
        // A tree's mask: every query sees the first five keys (a prompt) and some of the
        // rest, one of them with a finite penalty.
        let mask: Vec<f32> = (0..queries * keys)
            .map(|i| {
                let (query, key) = (i / keys, i % keys);
                match key {
                    _ if key < 5 => 0.0,
                    _ if (key + query) % 3 == 0 => -1.5,
                    _ if key == 5 + query => 0.0,
                    _ => f32::NEG_INFINITY,
                }
            })
            .collect();
        let q = Tensor::randn(0f32, 1.0, (2, 3, queries, 16), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 3, keys, 16), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 3, keys, 16), &device).unwrap();
        let fast = masked_attention(&q, &k, &v, &mask, 0.25).unwrap();
        let mask = Tensor::from_vec(mask, (queries, keys), &device).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * 0.25)
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let plain = candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&v)
            .unwrap();
        let difference = largest_difference(&fast, &plain);
        assert!(difference < 1e-5, "{difference}");
    }
}
