//! CPU kernels for the model's hot spots, where candle's generic operations spend most of
//! a transcription, by concept: [`attention`] (a block of queries at a time, so that
//! the 1500-wide score rows stay in cache; one query over cached keys; masked rows),
//! [`math`] (softmax, log-softmax over the vocabulary, GELU, polynomial `exp` and `erf`
//! accurate to about 1e-7, well below f32 model noise), [`conv`] (the encoder stem), the
//! products of a few rows ([`HalfMatrix`], which streams half-precision weights) and of
//! many ([`int8`], [`bf16`]). [`cpu`] says which of them this processor runs, detected at
//! run time.

pub use attention::{attend_one, attention, masked_attention};
pub use bf16::{Bf16Head, Bf16Matrix};
pub use conv::Conv3;
pub use half_matrix::HalfMatrix;
pub use int8::Int8Matrix;
pub use math::{gelu, log_sum_exp};

use candle_core::{CpuStorage, Layout, Tensor};

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

mod attention;
pub mod bf16;
mod conv;
pub mod cpu;
mod half_matrix;
pub mod int8;
mod math;

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

/// The values of a contiguous f32 tensor, read in place.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("the CPU kernels need contiguous f32 tensors"),
    }
}

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

/// The largest elementwise difference of two tensors, for the kernels' tests.
#[cfg(test)]
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
