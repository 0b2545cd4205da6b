//! The decoder's weights for passes of a few rows: a decoding step, a beam or a small
//! token tree multiplies a handful of vectors by them (the 51,864-wide output
//! projection above all), where memory bandwidth, not arithmetic, sets the pace. The
//! weights stay in half precision, as they ship, so nothing is lost (8 bits with a scale
//! per row changed dev transcripts for little time saved; docs/benchmarks.md).
//!
//! `cargo bench --bench kernels` compares them with candle's matrix product and
//! log-softmax; past 32 rows the decoder's own 384- and 1536-wide projections stay with
//! candle, where these tiles gain nothing.

use candle_core::Tensor;
use rayon::prelude::*;

use super::with_f32_values;

/// A [rows, cols] matrix in half precision, multiplied by a few vectors at a time.
pub struct HalfMatrix {
    rows: usize,
    cols: usize,
    data: Vec<half::f16>,
}

impl HalfMatrix {
    /// From a [rows, cols] f32 tensor, read in place.
    pub fn new(matrix: &Tensor) -> candle_core::Result<Self> {
        let (rows, cols) = matrix.dims2()?;
        let data = with_f32_values(matrix, |values| {
            values.iter().map(|&v| half::f16::from_f32(v)).collect()
        })?;
        Ok(Self { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The rows `rows` in f32, one after another.
    pub fn gather_rows(&self, rows: &[u32]) -> Vec<f32> {
        rows.iter()
            .flat_map(|&row| {
                let row = row as usize;
                self.data[row * self.cols..(row + 1) * self.cols]
                    .iter()
                    .map(|v| v.to_f32())
            })
            .collect()
    }

    /// `matrix · x` for a vector of `cols` values.
    pub fn mul_vec(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols, "vector length");
        let mut out = vec![0f32; self.rows];
        out.par_chunks_mut(4096)
            .enumerate()
            .for_each(|(block, out)| {
                let rows = &self.data[block * 4096 * self.cols..];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = dot_half(&rows[i * self.cols..(i + 1) * self.cols], x);
                }
            });
        out
    }

    /// Products of the weight rows `rows` with every vector, into `out` [vector][row]:
    /// tiles of three rows by four vectors, so each weight is loaded and widened once per
    /// four vectors and each vector value once per three rows. `xs` come in fours (the
    /// caller pads them), so that no weight is read twice.
    fn block_products(&self, rows: std::ops::Range<usize>, xs: &[&[f32]], out: &mut [f32]) {
        let width = rows.len();
        let row = |r: usize| &self.data[r * self.cols..(r + 1) * self.cols];
        if xs.len() <= 2 {
            // Too few vectors to fill a tile: one row at a time, read from memory once.
            for r in rows.clone() {
                for (i, x) in xs.iter().enumerate() {
                    out[i * width + r - rows.start] = dot_half(row(r), x);
                }
            }
            return;
        }
        debug_assert_eq!(xs.len() % 4, 0, "vectors come in fours");
        let mut r = rows.start;
        while r < rows.end {
            let at = r - rows.start;
            let tile_rows = (rows.end - r).min(3);
            // The last rows of a block fill a tile by repeating its final row.
            let picked = [r, (r + 1).min(rows.end - 1), (r + 2).min(rows.end - 1)];
            for i in (0..xs.len()).step_by(4) {
                let tile = dot_half_3x4(picked.map(row), [xs[i], xs[i + 1], xs[i + 2], xs[i + 3]]);
                for (k, values) in tile.into_iter().enumerate().take(tile_rows) {
                    for (j, value) in values.into_iter().enumerate() {
                        out[(i + j) * width + at + k] = value;
                    }
                }
            }
            r += tile_rows;
        }
    }

    /// `xs` padded to a multiple of four with `zeros` (two or fewer stay as they are: see
    /// [`HalfMatrix::block_products`]); the vectors are borrowed, not copied.
    fn in_fours<'a>(xs: &'a [impl AsRef<[f32]>], zeros: &'a [f32]) -> Vec<&'a [f32]> {
        let mut padded: Vec<&[f32]> = xs.iter().map(AsRef::as_ref).collect();
        if xs.len() > 2 {
            padded.resize(xs.len().div_ceil(4) * 4, zeros);
        }
        padded
    }

    /// `matrix · x` for each of a few vectors, [xs, rows] row-major: the weights stream
    /// through memory once for all of them, which a packed matrix product cannot beat
    /// at this size.
    pub fn mul_rows(&self, xs: &[Vec<f32>]) -> Vec<f32> {
        const BLOCK: usize = 256;
        let n = xs.len();
        let zeros = vec![0f32; self.cols];
        let padded = Self::in_fours(xs, &zeros);
        let blocks: Vec<Vec<f32>> = (0..self.rows.div_ceil(BLOCK))
            .into_par_iter()
            .map(|block| {
                let start = block * BLOCK;
                let end = (start + BLOCK).min(self.rows);
                let mut part = vec![0f32; (end - start) * padded.len()];
                self.block_products(start..end, &padded, &mut part);
                part
            })
            .collect();
        let mut out = vec![0f32; n * self.rows];
        for (block, part) in blocks.iter().enumerate() {
            let start = block * BLOCK;
            let width = part.len() / padded.len().max(1);
            for (i, values) in part.chunks_exact(width.max(1)).take(n).enumerate() {
                out[i * self.rows + start..i * self.rows + start + width].copy_from_slice(values);
            }
        }
        out
    }

    /// `matrix[row] · x`.
    pub fn dot_row(&self, row: usize, x: &[f32]) -> f32 {
        dot_half(&self.data[row * self.cols..(row + 1) * self.cols], x)
    }

    /// Log-softmax of `matrix · x` for each of a few vectors, read only at each one's
    /// `targets`, and each vector's normalizer (the log-sum-exp of its products, which
    /// gives any other target's log-probability with one [`HalfMatrix::dot_row`]): the
    /// weights stream through memory once for all the vectors, in parallel blocks that
    /// each keep a running maximum and sum of exponentials.
    pub fn log_softmax_at(
        &self,
        xs: &[impl AsRef<[f32]>],
        targets: &[Vec<u32>],
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        const BLOCK: usize = 512;
        let n = xs.len();
        let zeros = vec![0f32; self.cols];
        let xs = &Self::in_fours(xs, &zeros);
        super::math::blockwise_log_softmax_at(n, self.rows, BLOCK, targets, |range| {
            // Rows of the last group of four beyond `n` are zeros, computed and dropped.
            let mut logits = vec![0f32; range.len() * xs.len()];
            self.block_products(range, xs, &mut logits);
            logits
        })
    }
}

fn dot_half(row: &[half::f16], x: &[f32]) -> f32 {
    debug_assert_eq!(row.len(), x.len(), "a weight per value");
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2_fma_f16c() {
        // SAFETY: the features the function is compiled for were just detected.
        return unsafe { dot_half_f16c(row, x) };
    }
    row.iter().zip(x).map(|(w, v)| w.to_f32() * v).sum()
}

/// Three half-precision rows against four vectors: `[row][vector]`.
fn dot_half_3x4(rows: [&[half::f16]; 3], xs: [&[f32]; 4]) -> [[f32; 4]; 3] {
    debug_assert!(rows
        .iter()
        .all(|row| xs.iter().all(|x| x.len() == row.len())));
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2_fma_f16c() {
        // SAFETY: the features the function is compiled for were just detected.
        return unsafe { dot_half_3x4_f16c(rows, xs) };
    }
    rows.map(|row| xs.map(|x| row.iter().zip(x).map(|(w, v)| w.to_f32() * v).sum()))
}

/// [`dot_half_3x4`] compiled for AVX2, FMA and F16C.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and every row and vector has the first row's length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_half_3x4_f16c(rows: [&[half::f16]; 3], xs: [&[f32]; 4]) -> [[f32; 4]; 3] {
    // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
    // features this function is compiled for, and the lengths keep every load and store
    // in bounds.
    unsafe {
        use std::arch::x86_64::*;
        let cols = rows[0].len();
        let chunks = cols / 8;
        let mut acc = [[_mm256_setzero_ps(); 4]; 3];
        for c in 0..chunks {
            // SAFETY: c * 8 + 8 <= cols, the length of every row and vector; unaligned loads.
            let weights = rows.map(|row| {
                _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(c * 8) as *const __m128i))
            });
            for (j, x) in xs.iter().enumerate() {
                let values = _mm256_loadu_ps(x.as_ptr().add(c * 8));
                for (k, w) in weights.iter().enumerate() {
                    acc[k][j] = _mm256_fmadd_ps(*w, values, acc[k][j]);
                }
            }
        }
        let mut out = [[0f32; 4]; 3];
        for (k, row) in rows.iter().enumerate() {
            for (j, x) in xs.iter().enumerate() {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[k][j]);
                let tail: f32 = row[chunks * 8..]
                    .iter()
                    .zip(&x[chunks * 8..])
                    .map(|(w, v)| w.to_f32() * v)
                    .sum();
                out[k][j] = lanes.iter().sum::<f32>() + tail;
            }
        }
        out
    }
}

/// A half-precision row against a vector, compiled for AVX2, FMA and F16C.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and `x` is at least as long as `row`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_half_f16c(row: &[half::f16], x: &[f32]) -> f32 {
    // SAFETY: the caller upholds the contract under `# Safety` above: the CPU has the
    // features this function is compiled for, and the lengths keep every load and store
    // in bounds.
    unsafe {
        use std::arch::x86_64::*;
        let chunks = row.len() / 8;
        // Four sums in flight, so that each product waits on the one four before it rather
        // than on the last: one chain would be bound by the latency of its additions.
        let mut acc = [_mm256_setzero_ps(); 4];
        let fours = chunks / 4 * 4;
        for c in (0..fours).step_by(4) {
            for (k, sum) in acc.iter_mut().enumerate() {
                // SAFETY: (c + k) * 8 + 8 <= row.len() == x.len(); unaligned loads.
                let halves = _mm_loadu_si128(row.as_ptr().add((c + k) * 8) as *const __m128i);
                let values = _mm256_loadu_ps(x.as_ptr().add((c + k) * 8));
                *sum = _mm256_fmadd_ps(_mm256_cvtph_ps(halves), values, *sum);
            }
        }
        for c in fours..chunks {
            // SAFETY: c * 8 + 8 <= row.len() == x.len(); unaligned loads.
            let halves = _mm_loadu_si128(row.as_ptr().add(c * 8) as *const __m128i);
            let values = _mm256_loadu_ps(x.as_ptr().add(c * 8));
            acc[0] = _mm256_fmadd_ps(_mm256_cvtph_ps(halves), values, acc[0]);
        }
        let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let tail: f32 = row[chunks * 8..]
            .iter()
            .zip(&x[chunks * 8..])
            .map(|(w, v)| w.to_f32() * v)
            .sum();
        lanes.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn half_matrix_times_vector() {
        let matrix = Tensor::randn(0f32, 1.0, (5000, 37), &Device::Cpu).unwrap();
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let fast = HalfMatrix::new(&matrix).unwrap().mul_vec(&x);
        let exact: Vec<f32> = matrix
            .to_dtype(candle_core::DType::F16)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .matmul(&Tensor::from_vec(x.clone(), (37, 1), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in fast.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    /// The normalizers and the picked log-probabilities are those of a plain
    /// log-softmax, for targets in any order, many or few, tiles or single vectors.
    #[test]
    fn log_softmax_at_matches_the_plain_formula() {
        let matrix = Tensor::randn(0f32, 1.0, (3000, 64), &Device::Cpu).unwrap();
        let half = HalfMatrix::new(&matrix).unwrap();
        for vectors in [1usize, 5] {
            let xs: Vec<Vec<f32>> = (0..vectors)
                .map(|v| {
                    (0..64)
                        .map(|i| ((i * (v + 1)) as f32 * 0.7).cos())
                        .collect()
                })
                .collect();
            let targets: Vec<Vec<u32>> = (0..vectors as u32)
                .map(|v| {
                    let mut all: Vec<u32> = (0..3000).rev().step_by(v as usize + 1).collect();
                    all.extend([7 * v, 2999]);
                    all
                })
                .collect();
            let (normalizers, picked) = half.log_softmax_at(&xs, &targets);
            for (v, x) in xs.iter().enumerate() {
                let logits: Vec<f32> = (0..3000).map(|r| half.dot_row(r, x)).collect();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let normalizer = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
                assert!((normalizers[v] - normalizer).abs() < 1e-3);
                for (k, &t) in targets[v].iter().enumerate() {
                    let expected = logits[t as usize] - normalizer;
                    assert!(
                        (picked[v][k] - expected).abs() < 1e-3,
                        "vector {v}, token {t}"
                    );
                }
            }
        }
    }
}
