//! The model on the CPU backend: the hot path alone, a training step (forward, backward and AdamW over all
//! positions), batched scoring of responses, and KV-cached generation. `atod bench model` reports the same
//! kinds of figures as tokens/s, next to the PyTorch reference (`benches/pytorch/bench_model.py`).
//! The group `fixed` compares the reproducible mode's fixed-order matrix product with `gemm`.

use atod_models::generate::{reference_generate, reference_sequence_stats};
use atod_models::optim::{AdamW, AdamWConfig};
use atod_models::{
    generate, score, sequence_stats, token_logprobs, CpuAutodiff, CpuBackend, SamplingParams, TransformerConfig,
};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const VOCAB: usize = 512;
const BATCH: usize = 8;
const SEQ: usize = 128;

fn ids(n: usize, seed: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % VOCAB) as u32).collect()
}

fn benches(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("models");
    group.sample_size(10);

    let logits = Tensor::<CpuBackend, 3>::random([BATCH, SEQ, VOCAB], Distribution::Normal(0.0, 2.0), &device);
    let targets = Tensor::<CpuBackend, 2, Int>::from_data(
        TensorData::new(ids(BATCH * SEQ, 1).into_iter().map(|t| t as i32).collect::<Vec<_>>(), [BATCH, SEQ]),
        &device,
    );
    group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    group.bench_function("hotpath 1024 rows x 512 vocab", |b| {
        b.iter(|| black_box(token_logprobs(logits.clone(), targets.clone()).logp.into_data()))
    });

    let config = TransformerConfig::student_s(VOCAB);
    let mut model = config.init::<CpuAutodiff>(&device).unwrap();
    let mut optim = AdamW::<CpuAutodiff>::new(AdamWConfig::default());
    // Next-token NLL over every position, as SFT computes it: through the fused CPU path (`sequence_stats`) and
    // through the reference composition of burn ops, in the same run.
    let data = ids(BATCH * (SEQ + 1), 2);
    let every = [true; SEQ + 1];
    let rows: Vec<(&[u32], &[bool])> = data.chunks(SEQ + 1).map(|row| (row, &every[..])).collect();
    for (name, fused) in
        [("student-s train step 8x128 (fused)", true), ("student-s train step 8x128 (reference)", false)]
    {
        group.bench_function(name, |b| {
            b.iter(|| {
                let stats = if fused {
                    sequence_stats(&model, &rows, 1.0).unwrap()
                } else {
                    reference_sequence_stats(&model, &rows, 1.0).unwrap()
                };
                let loss = stats.logp.mean().neg();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let (updated, _) = optim.step(1e-4, model.clone(), grads);
                model = updated;
            })
        });
    }

    let inference = model.valid();
    let prompts: Vec<Vec<u32>> = (0..BATCH).map(|i| ids(SEQ - 32, i)).collect();
    let responses: Vec<Vec<u32>> = (0..BATCH).map(|i| ids(32, i + 100)).collect();
    let pairs: Vec<(&[u32], &[u32])> = prompts.iter().zip(&responses).map(|(p, r)| (&p[..], &r[..])).collect();
    group.bench_function("student-s score 8 x (96 + 32)", |b| b.iter(|| black_box(score(&inference, &pairs, 1.0, 8))));

    group.throughput(Throughput::Elements((BATCH * 32) as u64));
    let greedy = SamplingParams::greedy(32);
    group.bench_function("student-s generate 8 x 32 after 96 (fused)", |b| {
        b.iter(|| black_box(generate(&inference, &prompts, &greedy, &[], &[0; BATCH])))
    });
    group.bench_function("student-s generate 8 x 32 after 96 (reference)", |b| {
        b.iter(|| black_box(reference_generate(&inference, &prompts, &greedy, &[], &[0; BATCH])))
    });
    group.finish();
}

/// The fixed-order matrix product of the reproducible mode (`cpu::fixed::matmul`) against the `gemm` crate
/// (`cpu::kernels::matmul`) on the products of a training step, both on rayon's threads, and the attention-sized
/// product also on the calling thread alone (as attention calls it).
fn fixed_matmul(c: &mut Criterion) {
    use atod_models::cpu::{fixed, kernels};
    let mut group = c.benchmark_group("fixed");
    group.sample_size(10);
    // (name, m, n, k, a_t, b_t)
    let shapes = [
        ("4096x256x256", 4096, 256, 256, false, false),
        ("4096x1024x256 b_t", 4096, 1024, 256, false, true),
        ("256x1024x4096 a_t", 256, 1024, 4096, true, false),
        ("64x200x32", 64, 200, 32, false, false),
    ];
    let values = |len: usize, seed: usize| -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
    };
    for (name, m, n, k, a_t, b_t) in shapes {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let mut out = vec![0f32; m * n];
        group.throughput(Throughput::Elements((m * n * k) as u64));
        group.bench_function(format!("gemm {name}"), |bench| {
            bench.iter(|| kernels::matmul(m, n, k, &a, a_t, &b, b_t, black_box(&mut out), false))
        });
        group.bench_function(format!("fixed {name}"), |bench| {
            bench.iter(|| fixed::matmul(m, n, k, &a, a_t, &b, b_t, black_box(&mut out), false, true))
        });
        if a_t && !b_t {
            // What the training step calls for a weight's gradient without the reproducible mode: gemm on two
            // halves of the reduction side by side (accumulating into `out`, which does not change the time).
            group.bench_function(format!("gemm {name} (matmul_weight_grad)"), |bench| {
                bench.iter(|| kernels::matmul_weight_grad(m, n, k, &a, &b, black_box(&mut out)))
            });
        }
        if m * n * k < 1 << 20 {
            group.bench_function(format!("fixed {name} (calling thread)"), |bench| {
                bench.iter(|| fixed::matmul(m, n, k, &a, a_t, &b, b_t, black_box(&mut out), false, false))
            });
        }
    }
    group.finish();
}

criterion_group!(models, benches, fixed_matmul);
criterion_main!(models);
