//! The decoder's output projection read as log-probabilities (`log_softmax_at`), the
//! costliest step of the catalog's beams and forced scoring: the hand-written
//! half-precision kernel against candle's matrix product followed by a log-softmax, on
//! Whisper tiny.en's shape (51,864 tokens of 384 values) and the row counts decoding
//! sees (a step, a beam, a scoring tree). Random weights: speed does not depend on them.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rayon::prelude::*;
use voice_search::asr::kernels::{self, Bf16Head, Bf16Matrix, HalfMatrix, Int8Matrix};

const VOCAB: usize = 51_864;
const D_MODEL: usize = 384;

fn bench(c: &mut Criterion) {
    let device = Device::Cpu;
    let weights = Tensor::randn(0f32, 0.05, (VOCAB, D_MODEL), &device).unwrap();
    let half = HalfMatrix::new(&weights).unwrap();
    let flat = weights.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let int8 = Int8Matrix::new(&flat, VOCAB, D_MODEL);
    let mut group = c.benchmark_group("log_softmax_at");
    group.sample_size(10);
    for rows in [1usize, 2, 6, 24, 96, 192] {
        let hidden = Tensor::randn(0f32, 1.0, (rows, D_MODEL), &device).unwrap();
        let xs = hidden.to_vec2::<f32>().unwrap();
        let targets: Vec<Vec<u32>> = (0..rows).map(|r| vec![r as u32 * 7, 50_000]).collect();
        group.bench_with_input(BenchmarkId::new("half_tiles", rows), &rows, |b, _| {
            b.iter(|| half.log_softmax_at(&xs, &targets))
        });
        if let Some(int8) = int8.as_ref() {
            let name = format!("int8_{}", int8.kernel().name());
            group.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
                b.iter(|| int8.log_softmax_at(&xs, &targets))
            });
        }
        group.bench_with_input(BenchmarkId::new("candle_matmul", rows), &rows, |b, _| {
            b.iter(|| {
                let logits = hidden.matmul(&weights.t().unwrap()).unwrap();
                let normalized = candle_nn::ops::log_softmax(&logits, 1).unwrap();
                normalized.to_vec2::<f32>().unwrap()
            })
        });
    }
    group.finish();

    // The decoder's own projections (attention 384 -> 384, feed-forward 384 -> 1536 and
    // back) at the row counts of beams (6 to 24) and scoring trees (48, 96).
    let mut group = c.benchmark_group("projection");
    group.sample_size(10);
    for (inputs, outputs) in [(384usize, 384usize), (384, 1536), (1536, 384)] {
        let weights = Tensor::randn(0f32, 0.05, (outputs, inputs), &device).unwrap();
        let half = HalfMatrix::new(&weights).unwrap();
        let linear = candle_nn::Linear::new(weights.clone(), None);
        let flat = weights.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bf16 = Bf16Matrix::new(&flat, outputs, inputs);
        let int8 = Int8Matrix::new(&flat, outputs, inputs);
        for rows in [6usize, 12, 24, 48, 96] {
            let x = Tensor::randn(0f32, 1.0, (1, rows, inputs), &device).unwrap();
            let xs = x.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            let values: Vec<f32> = xs.concat();
            let name = format!("{inputs}x{outputs}/{rows}");
            group.bench_function(BenchmarkId::new("half_tiles", &name), |b| {
                b.iter(|| half.mul_rows(&xs))
            });
            if let Some(bf16) = bf16.as_ref() {
                group.bench_function(BenchmarkId::new("bf16", &name), |b| {
                    b.iter(|| bf16.forward(&values, None))
                });
            }
            if let Some(int8) = int8.as_ref().filter(|_| rows > 32) {
                let kernel = format!("int8_{}", int8.kernel().name());
                group.bench_function(BenchmarkId::new(kernel, &name), |b| {
                    b.iter(|| int8.forward(&values, None))
                });
            }
            group.bench_function(BenchmarkId::new("candle_linear", &name), |b| {
                b.iter(|| candle_nn::Module::forward(&linear, &x).unwrap())
            });
        }
    }
    group.finish();

    // The encoder's projections over its 1500 positions: 8 bits (VNNI or AVX2) against
    // candle's f32 (the gemm crate, AVX-512 where present).
    let mut group = c.benchmark_group("encoder_projection");
    group.sample_size(10);
    for (inputs, outputs) in [(384usize, 384usize), (384, 1536), (1536, 384)] {
        let weights = Tensor::randn(0f32, 0.05, (outputs, inputs), &device).unwrap();
        let linear = candle_nn::Linear::new(weights.clone(), None);
        let x = Tensor::randn(0f32, 1.0, (1, 1500, inputs), &device).unwrap();
        let values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let name = format!("{inputs}x{outputs}/1500");
        let flat = weights.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        if let Some(int8) = Int8Matrix::new(&flat, outputs, inputs) {
            let kernel = format!("int8_{}", int8.kernel().name());
            group.bench_function(BenchmarkId::new(kernel, &name), |b| {
                b.iter(|| int8.forward(&values, None))
            });
        }
        if let Some(bf16) = Bf16Matrix::new(&flat, outputs, inputs) {
            group.bench_function(BenchmarkId::new("bf16", &name), |b| {
                b.iter(|| bf16.forward(&values, None))
            });
        }
        group.bench_function(BenchmarkId::new("candle_linear", &name), |b| {
            b.iter(|| candle_nn::Module::forward(&linear, &x).unwrap())
        });
    }
    group.finish();

    // One decoding step's products: a single row through each of the decoder's
    // projections and the output projection, read from half precision.
    let mut group = c.benchmark_group("decoding_step");
    group.sample_size(20);
    for (inputs, outputs) in [
        (384usize, 384usize),
        (384, 1536),
        (1536, 384),
        (D_MODEL, VOCAB),
    ] {
        let weights = Tensor::randn(0f32, 0.05, (outputs, inputs), &device).unwrap();
        let half = HalfMatrix::new(&weights).unwrap();
        let x: Vec<f32> = (0..inputs).map(|i| (i as f32 * 0.1).sin()).collect();
        group.bench_function(format!("half_mul_vec/{inputs}x{outputs}"), |b| {
            b.iter(|| half.mul_vec(&x))
        });
    }
    // Cross-attention over the window's 1500 keys of 6 heads: one query (a greedy
    // step) and a beam pass's 24.
    let k = Tensor::randn(0f32, 1.0, (1, 6, 1500, 64), &device).unwrap();
    let v = Tensor::randn(0f32, 1.0, (1, 6, 1500, 64), &device).unwrap();
    // The same keys and values packed per head in bfloat16, as a window's cache keeps
    // them, and the packing itself (once per window).
    let (k_values, v_values) = (values_of(&k), values_of(&v));
    group.bench_function("pack_bf16_heads/6x1500x64", |b| {
        b.iter(|| pack(&k_values, &v_values))
    });
    let packed = pack(&k_values, &v_values);
    for queries in [1usize, 2, 4, 6, 24, 126] {
        let q = Tensor::randn(0f32, 1.0, (1, 6, queries, 64), &device).unwrap();
        group.bench_function(format!("attend_one/{queries}"), |b| {
            b.iter(|| kernels::attend_one(&q, &k, &v, 0.125).unwrap())
        });
        group.bench_function(format!("attention_blocked/{queries}"), |b| {
            b.iter(|| kernels::attention(&q, &k, &v, 0.125).unwrap())
        });
        if let Some(packed) = packed.as_ref() {
            let q_values = values_of(&q);
            group.bench_function(format!("attention_bf16_packed/{queries}"), |b| {
                b.iter(|| attend_packed(packed, &q_values))
            });
        }
    }
    // A scoring tree's self-attention: 126 nodes after a 3-token prompt, each seeing the
    // prompt and a chain of ancestors (here the 8 nodes before it).
    let (nodes, prompt) = (126usize, 3usize);
    let keys = prompt + nodes;
    let mask: Vec<f32> = (0..nodes * keys)
        .map(|i| {
            let (node, key) = (i / keys, i % keys);
            let visible = key < prompt || (key - prompt <= node && node - (key - prompt) < 8);
            if visible {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let q = Tensor::randn(0f32, 1.0, (1, 6, nodes, 64), &device).unwrap();
    let tree_k = Tensor::randn(0f32, 1.0, (1, 6, keys, 64), &device).unwrap();
    let tree_v = Tensor::randn(0f32, 1.0, (1, 6, keys, 64), &device).unwrap();
    group.bench_function("tree_self_attention/masked_kernel", |b| {
        b.iter(|| kernels::masked_attention(&q, &tree_k, &tree_v, &mask, 0.125).unwrap())
    });
    let mask_tensor = Tensor::from_vec(mask.clone(), (nodes, keys), &device).unwrap();
    group.bench_function("tree_self_attention/candle", |b| {
        b.iter(|| {
            let scores = (&q * 0.125)
                .unwrap()
                .matmul(&tree_k.t().unwrap())
                .unwrap()
                .broadcast_add(&mask_tensor)
                .unwrap();
            candle_nn::ops::softmax_last_dim(&scores)
                .unwrap()
                .matmul(&tree_v)
                .unwrap()
        })
    });
    group.finish();

    // The encoder's self-attention with the short window: 500 computed positions over
    // the window's 1500 keys, 6 heads of 64 (tiny.en), and the exact GELU over one
    // block's feed-forward activations; against candle's products, softmax and GELU.
    let mut group = c.benchmark_group("encoder_elementwise");
    group.sample_size(10);
    let q = Tensor::randn(0f32, 1.0, (1, 6, 500, 64), &device).unwrap();
    let k = Tensor::randn(0f32, 1.0, (1, 6, 1500, 64), &device).unwrap();
    let v = Tensor::randn(0f32, 1.0, (1, 6, 1500, 64), &device).unwrap();
    group.bench_function("attention/blocked", |b| {
        b.iter(|| kernels::attention(&q, &k, &v, 0.125).unwrap())
    });
    let (q_values, k_values, v_values) = (values_of(&q), values_of(&k), values_of(&v));
    if pack(&k_values, &v_values).is_some() {
        // Packing included: the encoder packs each block's keys and values afresh.
        group.bench_function("attention/bf16_packed", |b| {
            b.iter(|| attend_packed(&pack(&k_values, &v_values).unwrap(), &q_values))
        });
    }
    group.bench_function("attention/candle", |b| {
        b.iter(|| {
            let scores = (&q * 0.125).unwrap().matmul(&k.t().unwrap()).unwrap();
            candle_nn::ops::softmax_last_dim(&scores)
                .unwrap()
                .matmul(&v)
                .unwrap()
        })
    });
    let activations = Tensor::randn(0f32, 1.0, (1, 500, 1536), &device).unwrap();
    group.bench_function("gelu/erf_kernel", |b| {
        b.iter(|| kernels::gelu(&activations).unwrap())
    });
    group.bench_function("gelu/candle_gelu_erf", |b| {
        b.iter(|| activations.gelu_erf().unwrap())
    });
    group.finish();
}

fn values_of(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Six heads' keys and values [6][1500][64] packed in bfloat16; `None` without BF16.
fn pack(keys: &[f32], values: &[f32]) -> Option<Vec<Bf16Head>> {
    let per_head = keys.len() / 6;
    keys.par_chunks(per_head)
        .zip(values.par_chunks(per_head))
        .map(|(k, v)| Bf16Head::new(k, v, 64))
        .collect()
}

/// Each head's queries ([6][queries][64]) over its packed keys and values, in parallel
/// as the model runs them.
fn attend_packed(heads: &[Bf16Head], queries: &[f32]) -> Vec<f32> {
    heads
        .par_iter()
        .zip(queries.par_chunks(queries.len() / heads.len()))
        .flat_map_iter(|(head, q)| head.attend(q, 0.125))
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
