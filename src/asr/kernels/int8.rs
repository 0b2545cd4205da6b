//! Matrix products in 8-bit integers, the scheme CTranslate2 runs Whisper with: weights
//! quantized once per output row, activations per input row as they come, products
//! summed in 32-bit integers, then scaled back to f32.
//!
//! Two kernels compute the same integer sums, chosen at run time: AVX-512 VNNI
//! (`vpdpbusd`: 64 multiply-adds per instruction, four times an f32 FMA's) and AVX2
//! (`vpmaddubsw` then `vpmaddwd`: 32 per pair). `vpdpbusd` multiplies unsigned by signed
//! bytes, so activations are stored offset by 128 and each output row carries the weight
//! sum that removes the offset again. `vpmaddubsw` would saturate its 16-bit pair sums on
//! offset bytes, so the AVX2 kernel takes the offset off again and multiplies the
//! activations' magnitudes by the weights carrying the activations' signs, whose pair
//! sums stay within 2 × 127². Without either (checked at run time) [`Int8Matrix::new`]
//! gives `None` and the caller keeps its f32 path.
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
    kernel: Kernel,
}

/// The instructions that sum the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Vnni,
    Avx2,
}

impl Kernel {
    /// The fastest this CPU runs, if any.
    pub fn fastest() -> Option<Self> {
        if super::cpu::has_avx512_vnni() {
            Some(Self::Vnni)
        } else if super::cpu::has_avx2() {
            Some(Self::Avx2)
        } else {
            None
        }
    }

    /// Its name in benches and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vnni => "vnni",
            Self::Avx2 => "avx2",
        }
    }

    /// Whether this CPU runs it.
    pub fn runs_here(self) -> bool {
        match self {
            Self::Vnni => super::cpu::has_avx512_vnni(),
            Self::Avx2 => super::cpu::has_avx2(),
        }
    }
}

/// Whether this CPU runs an 8-bit kernel.
pub fn available() -> bool {
    Kernel::fastest().is_some()
}

impl Int8Matrix {
    /// Quantizes `weight` ([outputs][inputs], row-major), each output row to its own
    /// scale (its largest magnitude maps to 127), for the fastest kernel this CPU runs;
    /// `None` where it runs none.
    pub fn new(weight: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        Self::with_kernel(weight, outputs, inputs, Kernel::fastest()?)
    }

    /// As [`Int8Matrix::new`] for one kernel; `None` where the CPU does not run it.
    pub fn with_kernel(
        weight: &[f32],
        outputs: usize,
        inputs: usize,
        kernel: Kernel,
    ) -> Option<Self> {
        if !kernel.runs_here() {
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
            kernel,
        })
    }

    /// The kernel that sums its products.
    pub fn kernel(&self) -> Kernel {
        self.kernel
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
        let (quantized, scales) = match self.kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Int8Matrix with this kernel exists only where `runs_here` saw
            // AVX-512 F, BW, VL and VNNI.
            Kernel::Vnni => unsafe { vnni::quantize_rows(x, self.inputs, self.padded_inputs) },
            _ => quantize_rows(x, self.inputs, self.padded_inputs),
        };
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
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Int8Matrix with this kernel exists only where `runs_here` saw
            // AVX-512 F, BW, VL and VNNI.
            Kernel::Vnni => unsafe { vnni::multiply(self, quantized, scales, bias, range, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an Int8Matrix with this kernel exists only where `runs_here` saw
            // AVX2.
            Kernel::Avx2 => unsafe { avx2::multiply(self, quantized, scales, bias, range, out) },
            #[cfg(not(target_arch = "x86_64"))]
            kernel => unreachable!(
                "no {kernel:?} kernel off x86_64: {} {} {} {range:?} {}",
                quantized.len(),
                scales.len(),
                bias.is_some(),
                out.len()
            ),
        }
    }

    /// Rows `x` quantized, multiplied and scaled back into `out`.
    fn multiply(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        self.with_quantized(x, |quantized, scales| {
            self.multiply_outputs(quantized, scales, bias, 0..self.outputs, out)
        })
    }
}

/// Each row offset to unsigned bytes at its own scale (its largest magnitude maps to 127),
/// padded to whole groups with the offset; and the scales. The same bytes as
/// `vnni::quantize_rows`, rounding halves to even as `vcvtps2dq` does.
fn quantize_rows(x: &[f32], inputs: usize, padded_inputs: usize) -> (Vec<u8>, Vec<f32>) {
    let rows = x.len() / inputs;
    let mut quantized = vec![OFFSET as u8; rows * padded_inputs];
    let mut scales = Vec::with_capacity(rows);
    for (row, out) in x
        .chunks_exact(inputs)
        .zip(quantized.chunks_exact_mut(padded_inputs))
    {
        let largest = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
        let inverse = 1.0 / scale;
        for (q, &v) in out.iter_mut().zip(row) {
            *q = ((v * inverse).round_ties_even() as i32 + OFFSET).clamp(0, 255) as u8;
        }
        scales.push(scale);
    }
    (quantized, scales)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Int8Matrix, BLOCK, GROUP};

    /// Input rows one micro-kernel call keeps in registers (two accumulators each).
    const ROWS: usize = 4;

    /// All rows of `quantized` against the outputs of `range`, into `out`: [rows][range
    /// length].
    ///
    /// # Safety
    /// The CPU has AVX2 (`Int8Matrix::with_kernel` checks it at run time). `matrix` is
    /// laid out as `Int8Matrix` builds it; `quantized` holds whole rows of
    /// `matrix.padded_inputs` bytes and `row_scales` a scale for each; `range` starts on
    /// a block and ends within `matrix.outputs`; `out` holds `range.len()` values for each
    /// row, and `bias`, when given, `matrix.outputs`.
    #[target_feature(enable = "avx2")]
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
            let block_bytes = BLOCK * matrix.padded_inputs;
            let rows = row_scales.len();
            let width = range.len();
            // Each activation's sign and magnitude once, not once per block.
            let signed: Vec<i8> = quantized.iter().map(|&q| (q ^ 0x80) as i8).collect();
            let magnitudes: Vec<u8> = signed.iter().map(|q| q.unsigned_abs()).collect();
            for block in range.start / BLOCK..range.end.div_ceil(BLOCK) {
                let weights = &matrix.packed[block * block_bytes..(block + 1) * block_bytes];
                let mut first = 0;
                while first < rows {
                    let count = (rows - first).min(ROWS);
                    let start = first * matrix.padded_inputs;
                    let (s, m) = (&signed[start..], &magnitudes[start..]);
                    let sums = match count {
                        4 => kernel::<4>(weights, s, m, matrix.padded_inputs),
                        3 => kernel::<3>(weights, s, m, matrix.padded_inputs),
                        2 => kernel::<2>(weights, s, m, matrix.padded_inputs),
                        _ => kernel::<1>(weights, s, m, matrix.padded_inputs),
                    };
                    for (r, sum) in sums.iter().take(count).enumerate() {
                        let row = first + r;
                        store(
                            matrix,
                            block,
                            sum,
                            row_scales[row],
                            bias,
                            &mut out[row * width..][..width],
                            range.clone(),
                        );
                    }
                    first += count;
                }
            }
        }
    }

    /// The 32-bit sums of `R` consecutive rows (the first at the start of `signed` and
    /// `magnitudes`, the activations and their magnitudes) against one block of 16
    /// outputs, two registers of 8 each.
    ///
    /// # Safety
    /// The CPU has AVX2 (`Int8Matrix::with_kernel` checks it at run time). `R <= ROWS`,
    /// `padded_inputs` is a whole number of groups, `weights` holds one block of `16 *
    /// padded_inputs` bytes, and `signed` and `magnitudes` hold `R * padded_inputs` bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn kernel<const R: usize>(
        weights: &[i8],
        signed: &[i8],
        magnitudes: &[u8],
        padded_inputs: usize,
    ) -> [[__m256i; 2]; ROWS] {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let mut sums = [[_mm256_setzero_si256(); 2]; ROWS];
            let w = weights.as_ptr();
            let ones = _mm256_set1_epi16(1);
            let four = |bytes: *const u8, r: usize, group: usize| {
                _mm256_set1_epi32(
                    (bytes.add(r * padded_inputs + group * GROUP) as *const i32).read_unaligned(),
                )
            };
            for group in 0..padded_inputs / GROUP {
                let low = _mm256_loadu_si256(w.add(group * BLOCK * GROUP) as *const _);
                let high = _mm256_loadu_si256(w.add(group * BLOCK * GROUP + 32) as *const _);
                for (r, sum) in sums.iter_mut().take(R).enumerate() {
                    let sign = four(signed.as_ptr() as *const u8, r, group);
                    let magnitude = four(magnitudes.as_ptr(), r, group);
                    let low = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(low, sign));
                    let high = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(high, sign));
                    sum[0] = _mm256_add_epi32(sum[0], _mm256_madd_epi16(low, ones));
                    sum[1] = _mm256_add_epi32(sum[1], _mm256_madd_epi16(high, ones));
                }
            }
            sums
        }
    }

    /// One row's sums for one block, scaled, into the outputs of `range` it holds (`out`
    /// starting at output `range.start`).
    ///
    /// # Safety
    /// The CPU has AVX2 (`Int8Matrix::with_kernel` checks it at run time).
    /// `matrix.scales` is padded to whole blocks; `out` holds `range.len()` values, `range`
    /// ends within `matrix.outputs`, and `bias`, when given, holds `matrix.outputs` values.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(
        matrix: &Int8Matrix,
        block: usize,
        sums: &[__m256i; 2],
        row_scale: f32,
        bias: Option<&[f32]>,
        out: &mut [f32],
        range: std::ops::Range<usize>,
    ) {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let first = block * BLOCK;
            let mut values = [0f32; BLOCK];
            for (half, &sum) in sums.iter().enumerate() {
                let scales = _mm256_loadu_ps(matrix.scales.as_ptr().add(first + 8 * half));
                let value = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(sum),
                    _mm256_mul_ps(scales, _mm256_set1_ps(row_scale)),
                );
                _mm256_storeu_ps(values.as_mut_ptr().add(8 * half), value);
            }
            let end = (first + BLOCK).min(range.end);
            for output in first.max(range.start)..end {
                let value = values[output - first];
                out[output - range.start] = match bias {
                    Some(bias) => value + bias[output],
                    None => value,
                };
            }
        }
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
            eprintln!("no AVX-512 VNNI nor AVX2 on this CPU: the 8-bit kernel is not used here");
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
    fn both_kernels_give_the_same_sums() {
        // Partial blocks, groups and row tiles; a range that starts past the first pair.
        let (outputs, inputs, rows) = (101, 43, 11);
        let weight = crate::asr::kernels::test_values(outputs * inputs, 7);
        let x = crate::asr::kernels::test_values(rows * inputs, 8);
        let bias = crate::asr::kernels::test_values(outputs, 9);
        let (Some(vnni), Some(avx2)) = (
            Int8Matrix::with_kernel(&weight, outputs, inputs, Kernel::Vnni),
            Int8Matrix::with_kernel(&weight, outputs, inputs, Kernel::Avx2),
        ) else {
            eprintln!("this CPU lacks AVX-512 VNNI or AVX2: only one kernel runs here");
            return;
        };
        assert_eq!(vnni.forward(&x, Some(&bias)), avx2.forward(&x, Some(&bias)));
        let xs: Vec<&[f32]> = x.chunks(inputs).collect();
        let targets: Vec<Vec<u32>> = (0..rows as u32).map(|r| vec![r, 100 - r]).collect();
        assert_eq!(
            vnni.log_softmax_at(&xs, &targets),
            avx2.log_softmax_at(&xs, &targets)
        );
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
            eprintln!("no AVX-512 VNNI nor AVX2 on this CPU: the 8-bit kernel is not used here");
        }
    }
}
