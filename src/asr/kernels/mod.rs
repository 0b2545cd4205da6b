//! CPU kernels for the encoder's hot spots, where candle's generic operations spend most
//! of a transcription: attention over 1500 positions and the exact GELU.
//!
//! Attention is computed a block of 128 queries at a time (scores, softmax, weighted
//! values) so that the 1500-wide score rows stay in cache instead of a 54 MB score
//! tensor going through memory three times; heads run in parallel. `exp` and `erf` use
//! polynomial approximations accurate to about 1e-7, well below f32 model noise.
//!
//! Passes of a few rows (decoding steps, beams) stream their weights through memory in
//! [`HalfMatrix`]; many rows go through the 8-bit ([`int8`]) and bfloat16 ([`bf16`])
//! kernels.

pub use bf16::{Bf16Head, Bf16Matrix};
pub use half_matrix::HalfMatrix;
pub use int8::Int8Matrix;

/// The AVX-512 mask of the first `remaining` of 16 lanes (all of them past 16).
#[cfg(target_arch = "x86_64")]
#[inline]
fn lanes(remaining: usize) -> u16 {
    if remaining >= 16 {
        u16::MAX
    } else {
        (1u16 << remaining) - 1
    }
}

/// The tiling loop both low-precision kernels share: for each group of `blocks` output
/// blocks (`groups` of them), the `rows` input rows `tile` at a time through `full`, the
/// last few one by one through `one`, and each row's sum for each block through `store`.
/// A macro rather than a function taking closures, so that it expands inside each
/// kernel's `target_feature` function and the micro-kernel and store inline there.
#[cfg(target_arch = "x86_64")]
macro_rules! tile_rows {
    (
        groups: $groups:expr, rows: $rows:expr, tile: $tile:expr, blocks: $blocks:expr,
        zero: $zero:expr,
        full: |$full_group:ident, $full_row:ident| $full:expr,
        one: |$one_group:ident, $one_row:ident| $one:expr,
        store: |$block:ident, $row:ident, $sum:ident| $store:expr $(,)?
    ) => {{
        let rows = $rows;
        for group in 0..$groups {
            let mut first = 0;
            while first < rows {
                let count = (rows - first).min($tile);
                let sums = if count == $tile {
                    let ($full_group, $full_row) = (group, first);
                    $full
                } else {
                    let mut sums = [[$zero; $blocks]; $tile];
                    for (r, sum) in sums.iter_mut().take(count).enumerate() {
                        let ($one_group, $one_row) = (group, first + r);
                        *sum = $one;
                    }
                    sums
                };
                for (r, sums) in sums.iter().take(count).enumerate() {
                    for (half, &$sum) in sums.iter().enumerate() {
                        let ($block, $row) = (group * $blocks + half, first + r);
                        $store;
                    }
                }
                first += count;
            }
        }
    }};
}

pub mod bf16;
mod half_matrix;
pub mod int8;

/// `count` deterministic pseudo-random values in [-1, 1), for the kernels' tests.
#[cfg(test)]
fn test_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Checks a low-precision product against f32 on odd shapes (a partial output block, a
/// partial input group, a partial row tile): `product(weight, outputs, inputs, x, bias)`
/// must stay within `3 √inputs · step` of the exact sum, each operand (in [-1, 1)) being
/// off by at most `step` and the errors adding up like a random walk. `false` where the
/// CPU lacks the kernel (`product` gives `None`).
#[cfg(test)]
fn products_stay_close_to_f32(
    step: f32,
    product: impl Fn(&[f32], usize, usize, &[f32], &[f32]) -> Option<Vec<f32>>,
) -> bool {
    for (rows, outputs, inputs) in [(13usize, 37usize, 31usize), (70, 384, 384), (3, 51, 1536)] {
        let weight = test_values(outputs * inputs, 1);
        let x = test_values(rows * inputs, 2);
        let bias = test_values(outputs, 3);
        let Some(got) = product(&weight, outputs, inputs, &x, &bias) else {
            return false;
        };
        let bound = 3.0 * (inputs as f32).sqrt() * step;
        for r in 0..rows {
            for o in 0..outputs {
                let exact: f32 = (0..inputs)
                    .map(|k| x[r * inputs + k] * weight[o * inputs + k])
                    .sum::<f32>()
                    + bias[o];
                let error = (got[r * outputs + o] - exact).abs();
                assert!(
                    error < bound,
                    "{rows}x{outputs}x{inputs} at ({r}, {o}): {error} > {bound}"
                );
            }
        }
    }
    true
}

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// A 1-D convolution with kernel 3 and padding 1, as Whisper's encoder stem uses, done
/// as one matrix product over an unfolded input (candle's generic convolution spends
/// three times as long on the same arithmetic).
pub struct Conv3 {
    /// [out_channels, in_channels * 3], row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    stride: usize,
}

/// Kernel width of [`Conv3`].
const CONV_KERNEL: usize = 3;

impl Conv3 {
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize) -> candle_core::Result<Self> {
        let (out_channels, in_channels, kernel) = weight.dims3()?;
        if kernel != CONV_KERNEL {
            candle_core::bail!("convolution kernel is {kernel} wide, expected {CONV_KERNEL}")
        }
        Ok(Self {
            weight: weight.flatten_all()?.to_vec1()?,
            bias: bias.to_vec1()?,
            in_channels,
            out_channels,
            stride,
        })
    }

    /// [1, in_channels, time] -> [1, time_out, out_channels] (time-major, as the encoder
    /// blocks want it), GELU applied when `gelu`.
    pub fn forward_time_major(&self, x: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
        let (_, channels, time) = x.dims3()?;
        if channels != self.in_channels {
            candle_core::bail!(
                "convolution input has {channels} channels, expected {}",
                self.in_channels
            )
        }
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let time_out = (time + 2 - CONV_KERNEL) / self.stride + 1;
        let width = channels * CONV_KERNEL;
        // Unfold: row t holds, per input channel, the three samples the kernel sees.
        let mut columns = vec![0f32; time_out * width];
        columns
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(t, row)| {
                for c in 0..channels {
                    for k in 0..CONV_KERNEL {
                        let position = (t * self.stride + k) as isize - 1;
                        if (0..time as isize).contains(&position) {
                            row[c * CONV_KERNEL + k] = x[c * time + position as usize];
                        }
                    }
                }
            });
        let mut out = vec![0f32; time_out * self.out_channels];
        // SAFETY: columns is [time_out × width], weight read transposed is
        // [width × out_channels], out is [time_out × out_channels]; all row-major.
        unsafe {
            gemm::gemm(
                time_out,
                self.out_channels,
                width,
                out.as_mut_ptr(),
                1,
                self.out_channels as isize,
                false,
                columns.as_ptr(),
                1,
                width as isize,
                self.weight.as_ptr(),
                width as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        out.par_chunks_mut(self.out_channels).for_each(|row| {
            for (value, bias) in row.iter_mut().zip(&self.bias) {
                *value += bias;
            }
            if gelu {
                gelu_in_place(row);
            }
        });
        Tensor::from_vec(
            out,
            (1, time_out, self.out_channels),
            &candle_core::Device::Cpu,
        )
    }

    /// The same as channel-major [1, out_channels, time_out], for chaining convolutions.
    pub fn forward(&self, x: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
        self.forward_time_major(x, gelu)?
            .transpose(1, 2)?
            .contiguous()
    }
}

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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
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
/// a matrix product would score every key and then mask most away: 126 tree nodes of 6
/// heads, 196 µs against candle's 1.01 ms (`cargo bench --bench kernels --
/// decoding_step/tree_self_attention`).
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

/// `f` of the values of an f32 tensor on the CPU, read in place where it is contiguous:
/// loading the output embeddings (80 MB in f32) copies nothing.
pub fn with_f32_values<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => Ok(f(f32_slice(cpu, layout)?)),
        _ => candle_core::bail!("the CPU kernels need tensors on the CPU"),
    }
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

/// The values of a contiguous f32 tensor, read in place.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("the CPU kernels need contiguous f32 tensors"),
    }
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

/// Lanes of the partial sums and maxima: independent accumulators let the compiler use
/// SIMD for reductions it must otherwise do one element at a time.
const LANES: usize = 8;

/// Defines `$name(&mut [f32])`, running `$portable` compiled for AVX2 and FMA when the
/// processor has them: the generic build targets plain x86-64, whose SSE code runs these
/// loops at a third of the speed.
macro_rules! vectorized {
    ($(#[$doc:meta])* $name:ident, $avx2:ident, $portable:ident) => {
        $(#[$doc])*
        fn $name(values: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the features the function is compiled for were just detected.
                return unsafe { $avx2(values) };
            }
            $portable(values)
        }

        /// The portable loop compiled for AVX2 and FMA.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2(values: &mut [f32]) {
            $portable(values)
        }
    };
}

vectorized!(
    /// Softmax of one row, in place.
    softmax_in_place,
    softmax_avx2,
    softmax_portable
);

#[inline(always)]
fn softmax_portable(row: &mut [f32]) {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail_max = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for chunk in chunks {
        for (m, &v) in maxima.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = maxima.iter().copied().fold(tail_max, f32::max);
    for value in row.iter_mut() {
        *value = fast_exp(*value - max);
    }
    let mut sums = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail_sum: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    let inverse = 1.0 / (sums.iter().sum::<f32>() + tail_sum);
    for value in row.iter_mut() {
        *value *= inverse;
    }
}

/// `ln Σ exp(value)` over a row, through the vectorized `exp`: a decoding step's
/// normalizer over the vocabulary (`-inf` when every value is).
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let (max, sum) = max_and_exp_sum(row);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + sum.ln()
}

/// Log-softmax of `n` rows of logits over `outputs` classes, read only at each row's
/// `targets`, and each row's normalizer, with the classes taken `block` at a time in
/// parallel: `products(classes)` gives the rows' logits for a range of classes, row by
/// row ([n or more][range length]). Each block keeps its share of every row's normalizer
/// and its targets' logits, so the whole [n][outputs] matrix never exists at once.
fn blockwise_log_softmax_at(
    n: usize,
    outputs: usize,
    block: usize,
    targets: &[Vec<u32>],
    products: impl Fn(std::ops::Range<usize>) -> Vec<f32> + Sync,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    // Each row's targets by token, so that a block finds its own by bisection: a beam's
    // first step asks for thousands, and a scan of them all per block cost more than the
    // block's products.
    let by_token: Vec<Vec<(usize, usize)>> = targets
        .iter()
        .map(|tokens| {
            let mut sorted: Vec<(usize, usize)> = tokens
                .iter()
                .enumerate()
                .map(|(k, &t)| (t as usize, k))
                .collect();
            sorted.sort_unstable();
            sorted
        })
        .collect();
    // Per block: (max, sum of exp(logit - max)) per row, and the target logits that fall
    // in the block as (row, target index, logit).
    type Partial = (Vec<(f32, f32)>, Vec<(usize, usize, f32)>);
    let partials: Vec<Partial> = (0..outputs.div_ceil(block))
        .into_par_iter()
        .map(|b| {
            let start = b * block;
            let end = (start + block).min(outputs);
            let width = end - start;
            let logits = products(start..end);
            let stats = logits
                .chunks_exact(width)
                .take(n)
                .map(max_and_exp_sum)
                .collect();
            let picks = by_token
                .iter()
                .enumerate()
                .flat_map(|(i, sorted)| {
                    let from = sorted.partition_point(|&(t, _)| t < start);
                    let to = sorted.partition_point(|&(t, _)| t < end);
                    sorted[from..to].iter().map(move |&(t, k)| (i, k, t))
                })
                .map(|(i, k, t)| (i, k, logits[i * width + t - start]))
                .collect();
            (stats, picks)
        })
        .collect();
    let normalizers: Vec<f32> = (0..n)
        .map(|i| {
            let max = partials
                .iter()
                .map(|(stats, _)| stats[i].0)
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = partials
                .iter()
                .map(|(stats, _)| stats[i].1 * (stats[i].0 - max).exp())
                .sum();
            max + sum.ln()
        })
        .collect();
    let mut out: Vec<Vec<f32>> = targets
        .iter()
        .map(|t| vec![f32::NEG_INFINITY; t.len()])
        .collect();
    for (_, picks) in &partials {
        for &(i, k, logit) in picks {
            out[i][k] = logit - normalizers[i];
        }
    }
    (normalizers, out)
}

/// The maximum of a row and the sum of `exp(value - maximum)` over it: one block's
/// share of a log-softmax normalizer.
fn max_and_exp_sum(row: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for were just detected.
        return unsafe { max_and_exp_sum_avx2(row) };
    }
    max_and_exp_sum_portable(row)
}

/// [`max_and_exp_sum_portable`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_and_exp_sum_avx2(row: &[f32]) -> (f32, f32) {
    max_and_exp_sum_portable(row)
}

#[inline(always)]
fn max_and_exp_sum_portable(row: &[f32]) -> (f32, f32) {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in maxima.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = maxima
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    for chunk in chunks {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += fast_exp(v - max);
        }
    }
    let tail_sum: f32 = tail.iter().map(|&v| fast_exp(v - max)).sum();
    (max, sums.iter().sum::<f32>() + tail_sum)
}

/// Exact-form GELU, x · Φ(x), over a tensor of any shape.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Gelu)
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut output = f32_slice(storage, layout)?.to_vec();
        output.par_chunks_mut(16_384).for_each(gelu_in_place);
        Ok((CpuStorage::F32(output), layout.shape().clone()))
    }
}

vectorized!(
    /// x · Φ(x) of every value, in place.
    gelu_in_place,
    gelu_avx2,
    gelu_portable
);

#[inline(always)]
fn gelu_portable(values: &mut [f32]) {
    for x in values {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// e^x by range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial (relative error
/// about 1e-7); branch-free so that loops over it vectorize.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer without a libm call,
    // which would stop the loop from vectorizing; the sum's low bits hold that integer,
    // read with integer arithmetic because a float-to-int `as` cast saturates, and its
    // checks run one lane at a time.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    sign * (1.0 - poly * fast_exp(-x * x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn largest_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// softmax(q kᵀ · scale) v, with candle's own operations.
    fn plain_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    #[test]
    fn fast_exp_and_erf_are_accurate() {
        for i in -800..=800 {
            let x = i as f32 / 10.0;
            let relative = (fast_exp(x) - x.exp()).abs() / x.exp();
            assert!(relative < 1e-6, "exp({x}): {relative}");
        }
        for (x, expected) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - expected).abs() < 5e-7, "erf({x}) = {}", erf(x));
        }
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

    #[test]
    fn conv3_matches_candle() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 5, 40), &device).unwrap();
        let w = Tensor::randn(0f32, 1.0, (7, 5, 3), &device).unwrap();
        let b = Tensor::randn(0f32, 1.0, 7, &device).unwrap();
        for stride in [1, 2] {
            let conv = Conv3::new(&w, &b, stride).unwrap();
            let fast = conv.forward(&x, false).unwrap();
            let plain = x
                .conv1d(&w, 1, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 7, 1)).unwrap())
                .unwrap();
            assert_eq!(fast.dims(), plain.dims());
            let difference = largest_difference(&fast, &plain);
            assert!(difference < 1e-4, "stride {stride}: {difference}");
        }
    }

    #[test]
    fn gelu_matches_the_exact_form() {
        let x = Tensor::randn(0f32, 3.0, (4, 1000), &Device::Cpu).unwrap();
        let difference = largest_difference(&gelu(&x).unwrap(), &x.gelu_erf().unwrap());
        assert!(difference < 1e-5, "{difference}");
    }
}
