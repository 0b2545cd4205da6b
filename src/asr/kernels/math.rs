//! Vectorized arithmetic the kernels share: softmax, log-softmax over a vocabulary in
//! blocks, GELU, and polynomial `exp` and `erf` accurate to about 1e-7.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu;
use super::f32_slice;

/// Lanes of the partial sums and maxima: independent accumulators let the compiler use
/// SIMD for reductions it must otherwise do one element at a time.
pub(super) const LANES: usize = 8;

/// Defines `$name(&mut [f32])`, running `$portable` compiled for AVX2 and FMA when the
/// processor has them: the generic build targets plain x86-64, whose SSE code runs these
/// loops at a third of the speed.
macro_rules! vectorized {
    ($(#[$doc:meta])* $name:ident, $avx2:ident, $portable:ident) => {
        $(#[$doc])*
        pub(super) fn $name(values: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if cpu::has_avx2_fma() {
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
pub(super) fn softmax_portable(row: &mut [f32]) {
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
pub(super) fn blockwise_log_softmax_at(
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
    if cpu::has_avx2_fma() {
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
    use crate::asr::kernels::largest_difference;
    use candle_core::Device;

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
    fn gelu_matches_the_exact_form() {
        let x = Tensor::randn(0f32, 3.0, (4, 1000), &Device::Cpu).unwrap();
        let difference = largest_difference(&gelu(&x).unwrap(), &x.gelu_erf().unwrap());
        assert!(difference < 1e-5, "{difference}");
    }
}
