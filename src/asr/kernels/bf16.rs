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
    /// Inputs in pairs, the last padded with a zero where their count is odd.
    pairs: usize,
    /// Pairs of blocks of [`BLOCK`] outputs; in each block, for every pair of inputs,
    /// one word per output holding its two weights: one register load per pair.
    packed: Vec<u32>,
}

/// Whether this CPU runs the bfloat16 kernel.
pub fn available() -> bool {
    super::cpu::has_avx512_bf16()
}

impl Bf16Matrix {
    /// `weight` ([outputs][inputs], row-major) rounded to bfloat16; `None` where the CPU
    /// lacks AVX-512 BF16.
    pub fn new(weight: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        let mut matrix = Self::empty(outputs, inputs)?;
        let pairs = matrix.pairs;
        let rounded = matrix.round_rows(weight);
        // Each block is its 16 rows' words transposed.
        for (block, rows) in rounded.chunks(BLOCK * pairs).enumerate() {
            let packed = &mut matrix.packed[block * BLOCK * pairs..][..BLOCK * pairs];
            for (lane, row) in rows.chunks_exact(pairs).enumerate() {
                for (pair, &word) in row.iter().enumerate() {
                    packed[pair * BLOCK + lane] = word;
                }
            }
        }
        Some(matrix)
    }

    /// The matrix whose columns are the rows of `columns` ([inputs][outputs],
    /// row-major): for a product summed along those rows (attention's values).
    pub fn from_columns(columns: &[f32], inputs: usize, outputs: usize) -> Option<Self> {
        assert_eq!(columns.len(), outputs * inputs, "columns shape");
        let mut matrix = Self::empty(outputs, inputs)?;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `empty` gave a matrix, so `available()` saw AVX-512 F, BF16, BW and VL.
        unsafe {
            dpbf16::pack_columns(&mut matrix, columns)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no Bf16Matrix without AVX-512 BF16: {}",
            matrix.packed.len()
        );
        #[cfg(target_arch = "x86_64")]
        Some(matrix)
    }

    /// All zeros, packed for `outputs` × `inputs`; `None` without AVX-512 BF16.
    fn empty(outputs: usize, inputs: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        let pairs = inputs.div_ceil(PAIR);
        let blocks = outputs.div_ceil(2 * BLOCK) * 2;
        Some(Self {
            outputs,
            inputs,
            pairs,
            packed: vec![0; blocks * BLOCK * pairs],
        })
    }

    /// `x · weightᵀ (+ bias)` for `x` of [rows][inputs]: [rows][outputs].
    pub fn forward(&self, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        assert_eq!(x.len() % self.inputs, 0, "input length");
        let rows = x.len() / self.inputs;
        let mut out = vec![0f32; rows * self.outputs];
        out.par_chunks_mut(ROWS_PER_TASK * self.outputs)
            .zip(x.par_chunks(ROWS_PER_TASK * self.inputs))
            .for_each(|(out, x)| {
                let rounded = self.round_rows(x);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Bf16Matrix exists only where `available()` saw AVX-512 F and
                // BF16.
                unsafe {
                    dpbf16::multiply(self, &rounded, bias, out)
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("no Bf16Matrix without AVX-512 BF16: {rounded:?} {bias:?} {out:?}");
            });
        out
    }

    /// Rows of `x` ([rows][inputs]) as bfloat16 pairs, rounded to nearest even.
    fn round_rows(&self, x: &[f32]) -> Vec<u32> {
        let mut rounded = vec![0u32; x.len() / self.inputs * self.pairs];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Bf16Matrix exists only where `available()` saw AVX-512 F, BF16, BW and
        // VL.
        unsafe {
            dpbf16::round_rows(x, self.inputs, self.pairs, &mut rounded)
        }
        rounded
    }
}

/// One attention head's keys and values in bfloat16, packed once for every pass that
/// attends to them (a window's decoding passes, or one encoder block): both products of
/// attention at twice an f32 FMA's rate, the softmax between them in f32.
///
/// Against the f32 kernels: `cargo bench --bench kernels -- decoding_step` (6 heads over
/// 1500 keys) and `-- encoder_elementwise/attention`.
pub struct Bf16Head {
    /// Keys as the rows of a matrix: the scores are its products with the queries.
    keys: Bf16Matrix,
    /// Values as its columns: the output is its products with the weights.
    values: Bf16Matrix,
}

impl Bf16Head {
    /// `keys` and `values`: [positions][head_dim], row-major. `None` without AVX-512
    /// BF16.
    pub fn new(keys: &[f32], values: &[f32], head_dim: usize) -> Option<Self> {
        let positions = keys.len() / head_dim;
        Some(Self {
            keys: Bf16Matrix::new(keys, positions, head_dim)?,
            values: Bf16Matrix::from_columns(values, positions, head_dim)?,
        })
    }

    /// Scaled dot-product attention of `queries` ([rows][head_dim]) over every position:
    /// [rows][head_dim].
    pub fn attend(&self, queries: &[f32], scale: f32) -> Vec<f32> {
        let head_dim = self.keys.inputs;
        // A block of queries at a time, so that its weights stay in L2.
        queries
            .par_chunks(ROWS_PER_TASK * head_dim)
            .flat_map_iter(|queries| {
                let scaled: Vec<f32> = queries.iter().map(|q| q * scale).collect();
                let mut weights = self.keys.forward(&scaled, None);
                for row in weights.chunks_exact_mut(self.keys.outputs) {
                    super::math::softmax_in_place(row);
                }
                self.values.forward(&weights, None)
            })
            .collect()
    }
}

#[cfg(target_arch = "x86_64")]
mod dpbf16 {
    use std::arch::x86_64::*;

    use super::{Bf16Matrix, BLOCK, PAIR};

    /// Input rows one micro-kernel call keeps in registers (2 blocks × 8 accumulators).
    const ROWS: usize = 8;

    use crate::asr::kernels::lanes;

    /// Each row of `x` rounded to bfloat16 (to nearest even) into `rounded`, `pairs`
    /// words a row (zero-initialized, so an odd row's last word is padded).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and BF16 (`Bf16Matrix::new` checks it at run time).
    /// `inputs` is at least 1, `2 * pairs >= inputs`, and `rounded` holds `pairs` words for
    /// each of the `x.len() / inputs` rows.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn round_rows(x: &[f32], inputs: usize, pairs: usize, rounded: &mut [u32]) {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            for (row, out) in x.chunks_exact(inputs).zip(rounded.chunks_exact_mut(pairs)) {
                let out = out.as_mut_ptr() as *mut i16;
                for start in (0..inputs).step_by(BLOCK) {
                    let mask = lanes(inputs - start);
                    let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start));
                    let bits: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                    _mm256_mask_storeu_epi16(out.add(start), mask, bits);
                }
            }
        }
    }

    /// Packs `columns` ([inputs][outputs]) as the columns of `matrix`: each pair of its
    /// rows, 16 outputs at a time, rounded together and interleaved into words.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and BF16 (`Bf16Matrix::new` checks it at run time).
    /// `matrix.packed` holds `16 * pairs` words for every block of 16 outputs (as
    /// `Bf16Matrix` lays it out).
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn pack_columns(matrix: &mut Bf16Matrix, columns: &[f32]) {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let (outputs, pairs) = (matrix.outputs, matrix.pairs);
            // Word i takes the i-th value of the first row and of the second.
            let interleave: [i16; 32] = std::array::from_fn(|i| (i / 2 + (i % 2) * BLOCK) as i16);
            let interleave = _mm512_loadu_si512(interleave.as_ptr() as *const _);
            let zero = _mm512_setzero_ps();
            for pair in 0..pairs {
                let first = &columns[PAIR * pair * outputs..][..outputs];
                let second = (PAIR * pair + 1 < matrix.inputs)
                    .then(|| &columns[(PAIR * pair + 1) * outputs..][..outputs]);
                for block in 0..outputs.div_ceil(BLOCK) {
                    let start = block * BLOCK;
                    let mask = lanes(outputs - start);
                    let a = _mm512_maskz_loadu_ps(mask, first.as_ptr().add(start));
                    let b =
                        second.map_or(zero, |r| _mm512_maskz_loadu_ps(mask, r.as_ptr().add(start)));
                    let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
                    let words = _mm512_permutexvar_epi16(interleave, both);
                    let at = block * BLOCK * pairs + pair * BLOCK;
                    _mm512_storeu_si512(matrix.packed.as_mut_ptr().add(at) as *mut _, words);
                }
            }
        }
    }

    /// All rows of `rounded` against every output block.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and BF16 (`Bf16Matrix::new` checks it at run time).
    /// `matrix` is laid out as `Bf16Matrix` builds it, `rounded` holds whole rows of
    /// `matrix.pairs` words, `out` holds `matrix.outputs` values for each, and `bias`, when
    /// given, `matrix.outputs` values.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn multiply(
        matrix: &Bf16Matrix,
        rounded: &[u32],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let group_len = 2 * BLOCK * matrix.pairs;
            let weights = |group: usize| &matrix.packed[group * group_len..(group + 1) * group_len];
            let at = |row: usize| &rounded[row * matrix.pairs..];
            tile_rows!(
                groups: matrix.packed.len() / group_len,
                rows: rounded.len() / matrix.pairs,
                tile: ROWS,
                blocks: 2,
                zero: _mm512_setzero_ps(),
                full: |group, row| kernel::<ROWS>(weights(group), at(row), matrix.pairs),
                one: |group, row| kernel::<1>(weights(group), at(row), matrix.pairs)[0],
                store: |block, row, sum| store(
                    matrix,
                    block,
                    sum,
                    bias,
                    &mut out[row * matrix.outputs..][..matrix.outputs],
                ),
            );
        }
    }

    /// The f32 sums of `R` consecutive rows (the first at the start of `rounded`)
    /// against one group of two blocks of 16 outputs each.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and BF16 (`Bf16Matrix::new` checks it at run time). `R
    /// <= ROWS`, `weights` holds two blocks of `16 * pairs` words, and `rounded` holds `R *
    /// pairs` words.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn kernel<const R: usize>(
        weights: &[u32],
        rounded: &[u32],
        pairs: usize,
    ) -> [[__m512; 2]; ROWS] {
        // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
        // features this function is compiled for, and the lengths keep every load and store
        // in bounds.
        unsafe {
            let mut sums = [[_mm512_setzero_ps(); 2]; ROWS];
            let a = rounded.as_ptr();
            let w = weights.as_ptr();
            let block_len = BLOCK * pairs;
            for pair in 0..pairs {
                let first: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(w.add(pair * BLOCK) as *const _));
                let second: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                    w.add(block_len + pair * BLOCK) as *const _,
                ));
                for (r, sum) in sums.iter_mut().take(R).enumerate() {
                    let two: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + pair) as i32));
                    sum[0] = _mm512_dpbf16_ps(sum[0], two, first);
                    sum[1] = _mm512_dpbf16_ps(sum[1], two, second);
                }
            }
            sums
        }
    }

    /// One row's sums for one block, with the bias, into its outputs.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and BF16 (`Bf16Matrix::new` checks it at run time).
    /// `out` holds `matrix.outputs` values, and `bias`, when given, as many.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn store(
        matrix: &Bf16Matrix,
        block: usize,
        sum: __m512,
        bias: Option<&[f32]>,
        out: &mut [f32],
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
            let value = match bias {
                Some(bias) => {
                    _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(first)))
                }
                None => sum,
            };
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(first), mask, value);
        }
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

    #[test]
    fn columns_pack_as_the_transposed_matrix() {
        // Odd inputs (a padded pair) and a partial block of outputs.
        let (inputs, outputs) = (37, 21);
        let columns = crate::asr::kernels::test_values(inputs * outputs, 7);
        let transposed: Vec<f32> = (0..outputs * inputs)
            .map(|i| columns[(i % inputs) * outputs + i / inputs])
            .collect();
        let (Some(from_columns), Some(from_rows)) = (
            Bf16Matrix::from_columns(&columns, inputs, outputs),
            Bf16Matrix::new(&transposed, outputs, inputs),
        ) else {
            eprintln!("no AVX-512 BF16 on this CPU: the bfloat16 kernel is not used here");
            return;
        };
        assert_eq!(from_columns.packed, from_rows.packed);
    }

    #[test]
    fn a_packed_head_attends_as_f32_within_rounding_error() {
        let (positions, head_dim, queries, scale) = (300, 64, 5, 0.125);
        let keys = crate::asr::kernels::test_values(positions * head_dim, 1);
        let values = crate::asr::kernels::test_values(positions * head_dim, 2);
        let q = crate::asr::kernels::test_values(queries * head_dim, 3);
        let Some(head) = Bf16Head::new(&keys, &values, head_dim) else {
            eprintln!("no AVX-512 BF16 on this CPU: the bfloat16 kernel is not used here");
            return;
        };
        let attended = head.attend(&q, scale);
        for (query, got) in q.chunks(head_dim).zip(attended.chunks(head_dim)) {
            let scores: Vec<f32> = keys
                .chunks(head_dim)
                .map(|k| scale * k.iter().zip(query).map(|(a, b)| a * b).sum::<f32>())
                .collect();
            let largest = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f32> = scores.iter().map(|s| (s - largest).exp()).collect();
            let total: f32 = weights.iter().sum();
            for (d, &value) in got.iter().enumerate() {
                let expected: f32 = weights
                    .iter()
                    .zip(values.chunks(head_dim))
                    .map(|(w, v)| w / total * v[d])
                    .sum();
                // Each operand is off by at most 2^-9 of itself.
                assert!(
                    (value - expected).abs() < 4e-3,
                    "{value} against {expected}"
                );
            }
        }
    }
}
