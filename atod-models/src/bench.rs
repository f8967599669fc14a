//! Throughput of a model on a backend: training (forward, backward and AdamW), prefill and KV-cached decoding.
//!
//! `atod bench model` and the criterion bench `benches/benches/models.rs` both call [`bench_model`]; the PyTorch
//! reference `benches/pytorch/bench_model.py` runs the same three measurements on the same shapes, so the
//! ratio of the two is measured in one run.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::generate::{generate, sequence_stats, SamplingParams};
use crate::hotpath::HotPathBackend;
use crate::model::TransformerConfig;

/// The shapes of one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBenchOptions {
    /// Sequences per training step and per prefill.
    pub batch: usize,
    /// Tokens per sequence in training and prefill.
    pub seq: usize,
    /// Timed training steps (after `warmup` untimed ones).
    pub train_steps: usize,
    /// Untimed warm-up iterations of each measurement.
    pub warmup: usize,
    /// Rows decoded at once.
    pub decode_batch: usize,
    /// Prompt length before decoding.
    pub decode_prompt: usize,
    /// Tokens decoded per row.
    pub decode_tokens: usize,
    /// Seed of the weights and the data.
    pub seed: u64,
}

impl Default for ModelBenchOptions {
    fn default() -> Self {
        Self {
            batch: 16,
            seq: 128,
            train_steps: 5,
            warmup: 1,
            decode_batch: 16,
            decode_prompt: 16,
            decode_tokens: 112,
            seed: 0,
        }
    }
}

/// Measured throughputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBenchReport {
    /// Parameters of the model.
    pub params: usize,
    /// Training tokens per second: forward, backward and an AdamW step over `batch * seq` tokens.
    pub train_tokens_per_s: f64,
    /// Prompt tokens per second of a batched prefill that fills the KV cache.
    pub prefill_tokens_per_s: f64,
    /// Generated tokens per second of KV-cached greedy decoding (prefill excluded).
    pub decode_tokens_per_s: f64,
    /// The process's peak resident memory after the measurements ([`peak_rss_bytes`]).
    pub peak_rss_bytes: Option<u64>,
}

/// Measures `config` on the autodiff backend `B` (training) and its inner backend (prefill, decoding).
pub fn bench_model<B>(
    config: &TransformerConfig,
    opts: &ModelBenchOptions,
    device: &B::Device,
) -> Result<ModelBenchReport>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    B::seed(device, opts.seed);
    let mut model = config.init::<B>(device)?;
    let vocab = config.vocab_size;
    let mut rng = atod_core::rng::SplitMix64::new(opts.seed);
    let mut random_ids = |n: usize| -> Vec<i32> { (0..n).map(|_| rng.below(vocab as u64) as i32).collect() };

    // Training: next-token NLL over every position, as SFT computes it (`sequence_stats` with every token but
    // the first as a target: the fused CPU path where the backend has one).
    let (batch, seq) = (opts.batch, opts.seq);
    let data: Vec<u32> = random_ids(batch * (seq + 1)).into_iter().map(|t| t as u32).collect();
    let targets = vec![true; seq + 1];
    let rows: Vec<(&[u32], &[bool])> = data.chunks(seq + 1).map(|row| (row, &targets[..])).collect();
    let mut optim = AdamWConfig::new().init::<B, crate::model::Transformer<B>>();
    let mut train_time = 0.0;
    for step in 0..opts.warmup + opts.train_steps {
        let start = Instant::now();
        let loss = sequence_stats(&model, &rows, 1.0)?.logp.mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
        // Reading the loss back waits for the step to finish on asynchronous backends.
        let _ = loss.into_data();
        if step >= opts.warmup {
            train_time += start.elapsed().as_secs_f64();
        }
    }
    let train_tokens_per_s = (opts.train_steps * batch * seq) as f64 / train_time;

    let model = model.valid();
    // Prefill: the forward that fills the KV cache for prompts of full length, and the first token's logits
    // (a generation of one token).
    let prompts: Vec<Vec<u32>> = (0..batch).map(|_| random_ids(seq).into_iter().map(|t| t as u32).collect()).collect();
    let seeds = vec![0; prompts.len()];
    let mut prefill_time = 0.0;
    for step in 0..opts.warmup + opts.train_steps {
        let start = Instant::now();
        generate(&model, &prompts, &SamplingParams::greedy(1), &[], &seeds)?;
        if step >= opts.warmup {
            prefill_time += start.elapsed().as_secs_f64();
        }
    }
    let prefill_tokens_per_s = (opts.train_steps * batch * seq) as f64 / prefill_time;

    // Decoding: greedy generation with no stop token, minus the time of its own prefill.
    let prompts: Vec<Vec<u32>> = (0..opts.decode_batch)
        .map(|_| random_ids(opts.decode_prompt).into_iter().map(|t| t as u32).collect())
        .collect();
    let one = SamplingParams::greedy(1);
    let full = SamplingParams::greedy(opts.decode_tokens + 1);
    let mut decode_time = 0.0;
    for step in 0..opts.warmup + 1 {
        let start = Instant::now();
        generate(&model, &prompts, &one, &[], &seeds)?;
        let prefill = start.elapsed().as_secs_f64();
        let start = Instant::now();
        generate(&model, &prompts, &full, &[], &seeds)?;
        if step >= opts.warmup {
            decode_time = (start.elapsed().as_secs_f64() - prefill).max(1e-9);
        }
    }
    let decode_tokens_per_s = (opts.decode_batch * opts.decode_tokens) as f64 / decode_time;
    Ok(ModelBenchReport {
        params: config.num_params(),
        train_tokens_per_s,
        prefill_tokens_per_s,
        decode_tokens_per_s,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// The peak resident memory of this process so far (`VmHWM` of `/proc/self/status`); `None` where the system
/// does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}
