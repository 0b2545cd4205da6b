//! Matrix products in bfloat16 with f32 sums (AVX-512 BF16: `vdpbf16ps`, 32
//! multiply-adds per instruction, twice an f32 FMA's): both operands keep f32's range and
//! 8 bits of mantissa, so no scales are needed and the error is about 0.4% of each
//! product, where 8-bit integers lose more on rows with outliers. The weights are
//! converted once; without BF16 (checked at run time) [`Bf16Matrix::new`] gives `None`.

use rayon::prelude::*;

/// Outputs of one packed block: one 512-bit register of f32 sums.
const BLOCK: usize = 16;
/// Inputs summed by one lane of one `vdpbf16ps`.
const PAIR: usize = 2;
/// Input rows a worker takes at once.
const ROWS_PER_TASK: usize = 64;

/// A weight matrix [outputs, inputs] in bfloat16, packed for [`Bf16Matrix::forward`].
pub struct Bf16Matrix {
    outputs: usize,
    inputs: usize,
    /// Inputs rounded up to a multiple of [`PAIR`] (zero weights in the padding).
    padded_inputs: usize,
    /// Pairs of blocks of [`BLOCK`] outputs; in each block, for every pair of inputs,
    /// the two weights of each of the 16 outputs: one register load per pair.
    packed: Vec<u16>,
}

/// Whether this CPU runs the bfloat16 kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl Bf16Matrix {
    /// `weight` ([outputs][inputs], row-major) rounded to bfloat16; `None` where the CPU
    /// lacks AVX-512 BF16.
    pub fn new(weight: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        let padded_inputs = inputs.div_ceil(PAIR) * PAIR;
        let blocks = outputs.div_ceil(2 * BLOCK) * 2;
        let mut packed = vec![0u16; blocks * BLOCK * padded_inputs];
        for (output, row) in weight.chunks_exact(inputs).enumerate() {
            let (block, lane) = (output / BLOCK, output % BLOCK);
            for (input, &w) in row.iter().enumerate() {
                let (pair, within) = (input / PAIR, input % PAIR);
                packed
                    [block * BLOCK * padded_inputs + pair * BLOCK * PAIR + lane * PAIR + within] =
                    half::bf16::from_f32(w).to_bits();
            }
        }
        Some(Self {
            outputs,
            inputs,
            padded_inputs,
            packed,
        })
    }

    /// `x · weightᵀ (+ bias)` for `x` of [rows][inputs]: [rows][outputs].
    pub fn forward(&self, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        assert_eq!(x.len() % self.inputs, 0, "input length");
        let rows = x.len() / self.inputs;
        let mut out = vec![0f32; rows * self.outputs];
        out.par_chunks_mut(ROWS_PER_TASK * self.outputs)
            .zip(x.par_chunks(ROWS_PER_TASK * self.inputs))
            .for_each(|(out, x)| self.multiply(x, bias, out));
        out
    }

    /// Rows `x` rounded to bfloat16, multiplied into `out`.
    fn multiply(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Bf16Matrix exists only where `available()` saw AVX-512 F and BF16.
        unsafe {
            let rounded = dpbf16::round_rows(x, self.inputs, self.padded_inputs);
            dpbf16::multiply(self, &rounded, bias, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no Bf16Matrix without AVX-512 BF16: {} {} {}",
            x.len(),
            bias.is_some(),
            out.len()
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod dpbf16 {
    use std::arch::x86_64::*;

    use super::{Bf16Matrix, BLOCK, PAIR};

    /// Input rows one micro-kernel call keeps in registers (2 blocks × 8 accumulators).
    const ROWS: usize = 8;

    use crate::asr::kernels::lanes;

    /// Each row rounded to bfloat16 (to nearest even), padded to whole pairs.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn round_rows(x: &[f32], inputs: usize, padded_inputs: usize) -> Vec<u16> {
        let rows = x.len() / inputs;
        let mut rounded = vec![0u16; rows * padded_inputs];
        for (row, out) in x
            .chunks_exact(inputs)
            .zip(rounded.chunks_exact_mut(padded_inputs))
        {
            for start in (0..inputs).step_by(BLOCK) {
                let mask = lanes(inputs - start);
                let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start));
                let bits: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(out.as_mut_ptr().add(start) as *mut i16, mask, bits);
            }
        }
        rounded
    }

    /// All rows of `rounded` against every output block.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn multiply(
        matrix: &Bf16Matrix,
        rounded: &[u16],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let pair_len = 2 * BLOCK * matrix.padded_inputs;
        let weights = |pair: usize| &matrix.packed[pair * pair_len..(pair + 1) * pair_len];
        let at = |row: usize| &rounded[row * matrix.padded_inputs..];
        tile_rows!(
            groups: matrix.packed.len() / pair_len,
            rows: rounded.len() / matrix.padded_inputs,
            tile: ROWS,
            blocks: 2,
            zero: _mm512_setzero_ps(),
            full: |pair, row| kernel::<ROWS>(weights(pair), at(row), matrix.padded_inputs),
            one: |pair, row| kernel::<1>(weights(pair), at(row), matrix.padded_inputs)[0],
            store: |block, row, sum| store(
                matrix,
                block,
                sum,
                bias,
                &mut out[row * matrix.outputs..][..matrix.outputs],
            ),
        );
    }

    /// The f32 sums of `R` consecutive rows (the first at the start of `rounded`)
    /// against one pair of blocks of 16 outputs each.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn kernel<const R: usize>(
        weights: &[u16],
        rounded: &[u16],
        padded_inputs: usize,
    ) -> [[__m512; 2]; ROWS] {
        let mut sums = [[_mm512_setzero_ps(); 2]; ROWS];
        let a = rounded.as_ptr();
        let w = weights.as_ptr();
        let block_len = BLOCK * padded_inputs;
        for pair in 0..padded_inputs / PAIR {
            let first: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(w.add(pair * BLOCK * PAIR) as *const _));
            let second: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                w.add(block_len + pair * BLOCK * PAIR) as *const _,
            ));
            for (r, sum) in sums.iter_mut().take(R).enumerate() {
                let two = (a.add(r * padded_inputs + pair * PAIR) as *const i32).read_unaligned();
                let two: __m512bh = std::mem::transmute(_mm512_set1_epi32(two));
                sum[0] = _mm512_dpbf16_ps(sum[0], two, first);
                sum[1] = _mm512_dpbf16_ps(sum[1], two, second);
            }
        }
        sums
    }

    /// One row's sums for one block, with the bias, into its outputs.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn store(
        matrix: &Bf16Matrix,
        block: usize,
        sum: __m512,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let first = block * BLOCK;
        if first >= matrix.outputs {
            return;
        }
        let mask = lanes(matrix.outputs - first);
        let value = match bias {
            Some(bias) => _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(first))),
            None => sum,
        };
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(first), mask, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_f32_within_rounding_error() {
        // Each operand is off by at most 2^-9 of itself.
        let ran = crate::asr::kernels::products_stay_close_to_f32(
            1.0 / 256.0,
            |w, outputs, inputs, x, bias| {
                Bf16Matrix::new(w, outputs, inputs).map(|matrix| matrix.forward(x, Some(bias)))
            },
        );
        if !ran {
            eprintln!("no AVX-512 BF16 on this CPU: the bfloat16 kernel is not used here");
        }
    }
}
