//! `atod bench step` as a library: a few online steps of a train config, timed phase by phase.
//!
//! The stages the config needs are built first if absent (not timed); then a [`Trainer`] runs steps 0, 1, ...
//! exactly as `atod train` would (same seeds, same schedules over the config's total steps), its parts called
//! one by one so that each phase is timed: generation and the environments (inside the rollout), the teacher's
//! scoring, the advantages and the update; "other" is the rest of the step (rendering, advantages, bookkeeping).

use std::collections::BTreeMap;
use std::time::Instant;

use atod_envs::Registry;
use atod_losses::StepInfo;
use atod_models::{DeviceSpec, HotPathBackend};
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::config::TrainConfig;
use super::run::{start, Start};
use super::trainer::{per_sample, Settings, Trainer};
use crate::progress::Progress;

/// One phase's share of the steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Mean seconds per step.
    pub seconds: f64,
    /// The phase's tokens per second: generated tokens for generation, response tokens parsed for the
    /// environments, prompt and response tokens for scoring and for the update (times its PPO epochs); none for
    /// "other".
    pub tokens_per_s: Option<f64>,
}

/// What `atod bench step` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepBench {
    /// Steps timed.
    pub steps: u64,
    /// Mean wall time of a step.
    pub mean_step_seconds: f64,
    /// Each step's wall time.
    pub step_seconds: Vec<f64>,
    /// `generation`, `environment`, `scoring`, `update` and `other`.
    pub phases: BTreeMap<String, Phase>,
    /// Turn samples per step, on average.
    pub mean_samples: f64,
    /// Prompt tokens per step, on average.
    pub mean_prompt_tokens: f64,
    /// Response tokens per step, on average.
    pub mean_response_tokens: f64,
    /// The process's peak resident memory at the end.
    pub peak_rss_bytes: Option<u64>,
    /// Whether the steps ran in the reproducible mode.
    pub reproducible: bool,
    /// The instruction-set level of atod's CPU kernels.
    pub isa: String,
}

/// Times `steps` online steps of `config` on its device.
pub fn bench_steps(
    registry: &Registry,
    config: &TrainConfig,
    steps: u64,
    progress: &dyn Progress,
) -> anyhow::Result<StepBench> {
    let device: DeviceSpec = config.device.parse()?;
    match device {
        DeviceSpec::Cpu => bench_on::<atod_models::CpuAutodiff>(registry, config, steps, progress, &Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            atod_models::backend::check_cuda(&device)?;
            let cuda = device.cuda_device().expect("a CUDA spec");
            bench_on::<atod_models::CudaAutodiff>(registry, config, steps, progress, &cuda)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("DeviceSpec refuses CUDA without the cuda feature"),
    }
}

fn bench_on<B>(
    registry: &Registry,
    config: &TrainConfig,
    steps: u64,
    progress: &dyn Progress,
    device: &B::Device,
) -> anyhow::Result<StepBench>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let Start { models, optim, loss, .. } = start::<B>(registry, config, None, progress, device, None)?;
    let plugin = registry.get(&config.env.name)?;
    let settings = Settings { steps: config.train.steps, ..Settings::of(config) };
    let mut trainer = Trainer::new(plugin, &config.env.config_toml(), models, optim, loss, settings)?;
    // Per phase: seconds and tokens summed over the steps.
    let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let (mut step_seconds, mut samples, mut prompt_tokens, mut response_tokens) = (Vec::new(), 0.0, 0.0, 0.0);
    progress.start(steps, "bench step");
    for step in 0..steps {
        let started = Instant::now();
        let info = StepInfo::new(step, config.train.steps);
        let rollout = trainer.rollout(step)?;
        let scores = trainer.score(&rollout, step)?;
        let advantages = trainer.advantages(&rollout, &scores, info)?;
        let update = trainer.update(&rollout, &scores, &per_sample(&advantages, &rollout), info)?;
        let seconds = started.elapsed().as_secs_f64();

        let prompt: usize = rollout.samples.iter().map(|s| s.prompt_ids.len()).sum();
        let response: usize = rollout.samples.iter().map(|s| s.response_ids.len()).sum();
        let (prompt, response) = (prompt as f64, response as f64);
        let epochs = config.train.ppo_epochs as f64;
        let timed = rollout.timing.generate_s + rollout.timing.env_s + scores.seconds + update.seconds;
        for (phase, s, tokens) in [
            ("generation", rollout.timing.generate_s, response),
            ("environment", rollout.timing.env_s, response),
            ("scoring", scores.seconds, prompt + response),
            ("update", update.seconds, (prompt + response) * epochs),
            ("other", (seconds - timed).max(0.0), 0.0),
        ] {
            let entry = sums.entry(phase).or_default();
            entry.0 += s;
            entry.1 += tokens;
        }
        step_seconds.push(seconds);
        samples += rollout.samples.len() as f64;
        (prompt_tokens, response_tokens) = (prompt_tokens + prompt, response_tokens + response);
        progress.set_position(step + 1);
        progress.set_message(&format!("{seconds:.2} s"));
    }
    progress.finish();
    let n = steps.max(1) as f64;
    let phases = sums
        .into_iter()
        .map(|(name, (seconds, tokens))| {
            let tokens_per_s = (name != "other" && seconds > 0.0).then(|| tokens / seconds);
            (name.to_owned(), Phase { seconds: seconds / n, tokens_per_s })
        })
        .collect();
    Ok(StepBench {
        reproducible: atod_models::cpu::isa::reproducible(),
        isa: atod_models::cpu::isa::level().name().to_owned(),
        steps,
        mean_step_seconds: step_seconds.iter().sum::<f64>() / n,
        step_seconds,
        phases,
        mean_samples: samples / n,
        mean_prompt_tokens: prompt_tokens / n,
        mean_response_tokens: response_tokens / n,
        peak_rss_bytes: atod_models::bench::peak_rss_bytes(),
    })
}
