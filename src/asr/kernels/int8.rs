//! Matrix products in 8-bit integers, the scheme CTranslate2 runs Whisper with: weights
//! quantized once per output row, activations per input row as they come, products
//! summed in 32-bit integers by AVX-512 VNNI (`vpdpbusd`: 64 multiply-adds per
//! instruction, four times an f32 FMA's), then scaled back to f32.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so activations are stored offset by
//! 128 and each output row carries the weight sum that removes the offset again.
//! Without VNNI (checked at run time) [`Int8Matrix::new`] gives `None` and the caller
//! keeps its f32 path.
//!
//! `cargo bench --bench kernels -- encoder_projection` compares the encoder's projections
//! over 1500 positions with candle's f32 product, and `-- log_softmax_at` (51,864 x 384,
//! the rows of a scoring tree) the blocks of the vocabulary across the cores with the
//! half-precision tiles; the blocks never hold every row's whole vocabulary at once.

use rayon::prelude::*;

/// Columns (output rows) of one packed block: one 512-bit register of 32-bit sums.
const BLOCK: usize = 16;
/// Blocks one micro-kernel call works on, sharing each broadcast input.
const BLOCKS: usize = 2;
/// Inputs summed by one lane of one `vpdpbusd`.
const GROUP: usize = 4;
/// Input rows a worker takes at once, so that their bytes stay in L2 while every weight
/// block passes over them.
const ROWS_PER_TASK: usize = 64;
/// Rows [`Int8Matrix::log_softmax_at`] takes at once: each block of the vocabulary holds
/// their products (256 KB for 128 rows of 512 tokens), so that they stay in L2.
const LOG_SOFTMAX_ROWS: usize = 128;
/// The activation offset that makes signed bytes unsigned.
const OFFSET: i32 = 128;

/// A weight matrix [outputs, inputs] in 8 bits, packed for [`Int8Matrix::forward`].
pub struct Int8Matrix {
    outputs: usize,
    inputs: usize,
    /// Inputs rounded up to a multiple of [`GROUP`] (zero weights in the padding).
    padded_inputs: usize,
    /// Blocks of [`BLOCK`] outputs; in each, for every group of four inputs, the four
    /// weights of each of the 16 outputs, one register load per group.
    packed: Vec<i8>,
    /// Per output (zero in the last block's padding): the scale back to f32, and 128 ×
    /// the sum of its weights.
    scales: Vec<f32>,
    offsets: Vec<i32>,
}

/// Whether this CPU runs the 8-bit kernel.
pub fn available() -> bool {
    super::cpu::has_avx512_vnni()
}

impl Int8Matrix {
    /// Quantizes `weight` ([outputs][inputs], row-major), each output row to its own
    /// scale (its largest magnitude maps to 127); `None` where the CPU lacks VNNI.
    pub fn new(weight: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        let padded_inputs = inputs.div_ceil(GROUP) * GROUP;
        let blocks = outputs.div_ceil(BLOCK * BLOCKS) * BLOCKS;
        let mut packed = vec![0i8; blocks * BLOCK * padded_inputs];
        let mut scales = vec![0f32; blocks * BLOCK];
        let mut offsets = vec![0i32; blocks * BLOCK];
        for (output, row) in weight.chunks_exact(inputs).enumerate() {
            let largest = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            scales[output] = scale;
            let (block, lane) = (output / BLOCK, output % BLOCK);
            let mut sum = 0i32;
            for (input, &w) in row.iter().enumerate() {
                let q = (w / scale).round().clamp(-127.0, 127.0) as i8;
                sum += q as i32;
                let (group, within) = (input / GROUP, input % GROUP);
                packed[block * BLOCK * padded_inputs
                    + group * BLOCK * GROUP
                    + lane * GROUP
                    + within] = q;
            }
            offsets[output] = OFFSET * sum;
        }
        Some(Self {
            outputs,
            inputs,
            padded_inputs,
            packed,
            scales,
            offsets,
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

    /// Log-softmax of `weight · x` for each of many vectors, read only at each one's
    /// `targets`, and each vector's normalizer: as [`super::HalfMatrix::log_softmax_at`],
    /// for the rows of a scoring tree. The vocabulary is taken a block at a time across
    /// the cores, for a bounded slice of rows at a time: writing out every row's products
    /// over the whole vocabulary and reading them back cost as much as computing them.
    pub fn log_softmax_at(
        &self,
        xs: &[impl AsRef<[f32]>],
        targets: &[Vec<u32>],
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        /// Outputs per block: whole pairs of register blocks.
        const OUTPUTS_PER_BLOCK: usize = 16 * BLOCKS * BLOCK;
        let mut normalizers = Vec::with_capacity(xs.len());
        let mut chosen = Vec::with_capacity(xs.len());
        for (rows, targets) in xs
            .chunks(LOG_SOFTMAX_ROWS)
            .zip(targets.chunks(LOG_SOFTMAX_ROWS))
        {
            let flat: Vec<f32> = rows
                .iter()
                .flat_map(|row| row.as_ref().iter().copied())
                .collect();
            let n = rows.len();
            let (slice_normalizers, slice_chosen) =
                self.with_quantized(&flat, |quantized, scales| {
                    super::math::blockwise_log_softmax_at(
                        n,
                        self.outputs,
                        OUTPUTS_PER_BLOCK,
                        targets,
                        |range| {
                            let mut logits = vec![0f32; n * range.len()];
                            self.multiply_outputs(quantized, scales, None, range, &mut logits);
                            logits
                        },
                    )
                });
            normalizers.extend(slice_normalizers);
            chosen.extend(slice_chosen);
        }
        (normalizers, chosen)
    }

    /// `f` of the rows of `x` quantized, and their scales.
    fn with_quantized<R>(&self, x: &[f32], f: impl FnOnce(&[u8], &[f32]) -> R) -> R {
        debug_assert!(self.inputs >= 1 && self.inputs <= self.padded_inputs);
        debug_assert!(x.len().is_multiple_of(self.inputs), "whole rows");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Int8Matrix exists only where `available()` saw AVX-512 F, BW, VL and
        // VNNI.
        let (quantized, scales) =
            unsafe { vnni::quantize_rows(x, self.inputs, self.padded_inputs) };
        #[cfg(not(target_arch = "x86_64"))]
        let (quantized, scales): (Vec<u8>, Vec<f32>) =
            unreachable!("no Int8Matrix without VNNI: {}", x.len());
        f(&quantized, &scales)
    }

    /// The products (+ bias) of quantized rows with the outputs in `range` (whole pairs
    /// of blocks, or up to the last output), row by row into `out` ([rows][range
    /// length]).
    fn multiply_outputs(
        &self,
        quantized: &[u8],
        scales: &[f32],
        bias: Option<&[f32]>,
        range: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let rows = scales.len();
        debug_assert_eq!(quantized.len(), rows * self.padded_inputs, "whole rows");
        debug_assert!(range.end <= self.outputs && range.start <= range.end);
        debug_assert_eq!(out.len(), rows * range.len(), "a value per row and output");
        debug_assert!(bias.is_none_or(|bias| bias.len() == self.outputs));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Int8Matrix exists only where `available()` saw AVX-512 F, BW, VL and
        // VNNI.
        unsafe {
            vnni::multiply(self, quantized, scales, bias, range, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no Int8Matrix without VNNI: {} {} {} {range:?} {}",
            quantized.len(),
            scales.len(),
            bias.is_some(),
            out.len()
        );
    }

    /// Rows `x` quantized, multiplied and scaled back into `out`.
    fn multiply(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        self.with_quantized(x, |quantized, scales| {
            self.multiply_outputs(quantized, scales, bias, 0..self.outputs, out)
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Int8Matrix, BLOCK, BLOCKS, GROUP, OFFSET};

    /// Input rows one micro-kernel call keeps in registers ([`BLOCKS`] × 8 accumulators).
    const ROWS: usize = 8;

    use crate::asr::kernels::lanes;

    /// Each row offset to unsigned bytes at its own scale (its largest magnitude maps to
    /// 127), padded to whole groups; and the scales.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and VNNI (`Int8Matrix::new` checks it at run time).
    /// `inputs` is at least 1 and at most `padded_inputs`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn quantize_rows(
        x: &[f32],
        inputs: usize,
        padded_inputs: usize,
    ) -> (Vec<u8>, Vec<f32>) {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let rows = x.len() / inputs;
            let mut quantized = vec![OFFSET as u8; rows * padded_inputs];
            let mut scales = Vec::with_capacity(rows);
            let magnitude = _mm512_set1_epi32(i32::MAX);
            let offset = _mm512_set1_epi32(OFFSET);
            for (row, out) in x
                .chunks_exact(inputs)
                .zip(quantized.chunks_exact_mut(padded_inputs))
            {
                let mut largest = _mm512_setzero_ps();
                for start in (0..inputs).step_by(BLOCK) {
                    let v = _mm512_maskz_loadu_ps(lanes(inputs - start), row.as_ptr().add(start));
                    let v =
                        _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), magnitude));
                    largest = _mm512_max_ps(largest, v);
                }
                let largest = _mm512_reduce_max_ps(largest);
                let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
                let inverse = _mm512_set1_ps(1.0 / scale);
                for start in (0..inputs).step_by(BLOCK) {
                    let mask = lanes(inputs - start);
                    let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start));
                    // Rounds to nearest (the default mode); |v| / scale <= 127 by the scale.
                    let q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inverse)), offset);
                    _mm_mask_storeu_epi8(
                        out.as_mut_ptr().add(start) as *mut i8,
                        mask,
                        _mm512_cvtusepi32_epi8(q),
                    );
                }
                scales.push(scale);
            }
            (quantized, scales)
        }
    }

    /// All rows of `quantized` against the output blocks of `range` (whole pairs of
    /// blocks, or up to the last output), into `out`: [rows][range length].
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and VNNI (`Int8Matrix::new` checks it at run time).
    /// `matrix` is laid out as `Int8Matrix` builds it; `quantized` holds whole rows of
    /// `matrix.padded_inputs` bytes and `row_scales` a scale for each; `range` starts on a
    /// pair of blocks and ends within `matrix.outputs`; `out` holds `range.len()` values
    /// for each row, and `bias`, when given, `matrix.outputs`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn multiply(
        matrix: &Int8Matrix,
        quantized: &[u8],
        row_scales: &[f32],
        bias: Option<&[f32]>,
        range: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let pair_bytes = BLOCKS * BLOCK * matrix.padded_inputs;
            let first_pair = range.start / (BLOCKS * BLOCK);
            let pairs = range.len().div_ceil(BLOCKS * BLOCK);
            let weights = |pair: usize| {
                let pair = first_pair + pair;
                &matrix.packed[pair * pair_bytes..(pair + 1) * pair_bytes]
            };
            let at = |row: usize| &quantized[row * matrix.padded_inputs..];
            let width = range.len();
            tile_rows!(
                groups: pairs,
                rows: row_scales.len(),
                tile: ROWS,
                blocks: BLOCKS,
                zero: _mm512_setzero_si512(),
                full: |pair, row| kernel::<ROWS>(weights(pair), at(row), matrix.padded_inputs),
                one: |pair, row| kernel::<1>(weights(pair), at(row), matrix.padded_inputs)[0],
                store: |block, row, sum| store(
                    matrix,
                    first_pair * BLOCKS + block,
                    sum,
                    row_scales[row],
                    bias,
                    &mut out[row * width..][..width],
                    range.start,
                ),
            );
        }
    }

    /// The 32-bit sums of `R` consecutive rows (the first at the start of `quantized`)
    /// against one pair of blocks of 16 outputs each.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and VNNI (`Int8Matrix::new` checks it at run time). `R
    /// <= ROWS`, `padded_inputs` is a whole number of groups, `weights` holds two blocks of
    /// `16 * padded_inputs` bytes, and `quantized` holds `R * padded_inputs` bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn kernel<const R: usize>(
        weights: &[i8],
        quantized: &[u8],
        padded_inputs: usize,
    ) -> [[__m512i; BLOCKS]; ROWS] {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let mut sums = [[_mm512_setzero_si512(); BLOCKS]; ROWS];
            let a = quantized.as_ptr();
            let w = weights.as_ptr();
            let block_bytes = BLOCK * padded_inputs;
            for group in 0..padded_inputs / GROUP {
                let first = _mm512_loadu_si512(w.add(group * BLOCK * GROUP) as *const _);
                let second =
                    _mm512_loadu_si512(w.add(block_bytes + group * BLOCK * GROUP) as *const _);
                for (r, sum) in sums.iter_mut().take(R).enumerate() {
                    let four =
                        (a.add(r * padded_inputs + group * GROUP) as *const i32).read_unaligned();
                    let four = _mm512_set1_epi32(four);
                    sum[0] = _mm512_dpbusd_epi32(sum[0], four, first);
                    sum[1] = _mm512_dpbusd_epi32(sum[1], four, second);
                }
            }
            sums
        }
    }

    /// One row's sums for one block, offset removed and scaled, into its outputs (`out`
    /// starting at output `base`).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and VNNI (`Int8Matrix::new` checks it at run time).
    /// `matrix.offsets` and `matrix.scales` are padded to whole blocks; `out` holds the
    /// outputs from `base` to the end of this block or of the matrix, and `bias`, when
    /// given, `matrix.outputs` values.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn store(
        matrix: &Int8Matrix,
        block: usize,
        sum: __m512i,
        row_scale: f32,
        bias: Option<&[f32]>,
        out: &mut [f32],
        base: usize,
    ) {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let first = block * BLOCK;
            if first >= matrix.outputs {
                return;
            }
            let mask = lanes(matrix.outputs - first);
            let offsets = _mm512_loadu_si512(matrix.offsets.as_ptr().add(first) as *const _);
            let scales = _mm512_loadu_ps(matrix.scales.as_ptr().add(first));
            let value = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offsets)),
                _mm512_mul_ps(scales, _mm512_set1_ps(row_scale)),
            );
            let value = match bias {
                Some(bias) => {
                    _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(first)))
                }
                None => value,
            };
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(first - base), mask, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_at_matches_f32_within_quantization_error() {
        // Several blocks of the vocabulary and a partial one; more rows than a tile.
        let (vocabulary, inputs, rows) = (1100, 48, 11);
        let weight = crate::asr::kernels::test_values(vocabulary * inputs, 5);
        let Some(matrix) = Int8Matrix::new(&weight, vocabulary, inputs) else {
            eprintln!("no AVX-512 VNNI on this CPU: the 8-bit kernel is not used here");
            return;
        };
        let xs: Vec<Vec<f32>> = (0..rows)
            .map(|r| crate::asr::kernels::test_values(inputs, 100 + r as u64))
            .collect();
        let targets: Vec<Vec<u32>> = (0..rows as u32)
            .map(|r| vec![1099, 13 * r, 600 + r, 5])
            .collect();
        let (normalizers, picked) = matrix.log_softmax_at(&xs, &targets);
        for (r, x) in xs.iter().enumerate() {
            let logits: Vec<f32> = weight
                .chunks(inputs)
                .map(|w| w.iter().zip(x).map(|(a, b)| a * b).sum())
                .collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let normalizer = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
            // Products of values in [-1, 1) over 48 inputs, each operand within half a
            // step of 1/127: logits within about 0.1.
            assert!((normalizers[r] - normalizer).abs() < 0.1, "row {r}");
            for (k, &t) in targets[r].iter().enumerate() {
                let expected = logits[t as usize] - normalizer;
                assert!((picked[r][k] - expected).abs() < 0.2, "row {r}, token {t}");
            }
        }
    }

    #[test]
    fn products_match_f32_within_quantization_error() {
        // Each operand is off by at most half a step of 1/127 of its row's largest value (1 here).
        let ran = crate::asr::kernels::products_stay_close_to_f32(
            1.0 / 127.0,
            |w, outputs, inputs, x, bias| {
                Int8Matrix::new(w, outputs, inputs).map(|matrix| matrix.forward(x, Some(bias)))
            },
        );
        if !ran {
            eprintln!("no AVX-512 VNNI on this CPU: the 8-bit kernel is not used here");
        }
    }
}
