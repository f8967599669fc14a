//! A training loop of one's own on atod's library: the trainer's rollout, teacher scoring and update, with an
//! advantage of our own, on-policy distillation discounted by turn: `A_t = gamma^k (lp_T(a_t) - lp_old(a_t))`
//! for a token of turn k, so the first turns of an episode count most.
//!
//! The student and teacher here are fresh models on the bundled `counter` environment with a tokenizer
//! trained on its expert's turns; a real teacher comes from `atod sft`.
//!
//! `cargo run --release -p atod-cli --example custom_loop [-- STEPS]` (default 2 steps).

use std::collections::BTreeMap;

use atod_cli::pipeline::trainer::{Models, Settings, Trainer};
use atod_cli::policies::ExpertPolicy;
use atod_cli::render::RenderConfig;
use atod_cli::rollout::{run_episodes_with, sweep_specs};
use atod_losses::{Loss, StepInfo};
use atod_models::optim::{AdamW, AdamWConfig};
use atod_models::{ChatTokenizer, CpuAutodiff, LmPolicy, SamplingParams, TransformerConfig};
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;

/// The discount of a turn's distillation signal.
const GAMMA: f32 = 0.8;

/// Trains for `steps` steps and returns each step's metrics.
pub fn run(steps: u64) -> anyhow::Result<Vec<BTreeMap<String, f64>>> {
    let registry = atod_cli::registry::build(&[])?;
    let plugin = registry.get("counter")?;
    let env_config = "max_target = 5";
    let render = RenderConfig { history: 1, max_prompt_tokens: 256, ..RenderConfig::default() };

    // A tokenizer trained on 16 of the expert's episodes: its prompts and its responses.
    let mut envs: Vec<_> = (0..16).map(|_| plugin.create(env_config)).collect::<Result<_, _>>()?;
    let demos = run_episodes_with(&mut envs, &sweep_specs("train", 16, 0, 0..16), &mut ExpertPolicy, &render, 8)?;
    let texts =
        demos.samples.iter().flat_map(|s| s.messages.iter().map(|m| m.content.clone()).chain([s.response.clone()]));
    let tokenizer = ChatTokenizer::train(texts.collect::<Vec<_>>(), 320)?;

    // Fresh student and teacher models of the smallest preset.
    let device = Default::default();
    let shape = TransformerConfig::student_s(tokenizer.vocab_size());
    CpuAutodiff::seed(&device, 0);
    let student = shape.init::<CpuAutodiff>(&device)?;
    let teacher_model = shape.init::<CpuAutodiff>(&device)?.valid();
    let teacher =
        LmPolicy::new("teacher", teacher_model, shape.clone(), tokenizer.clone(), SamplingParams::default(), 0)?;
    let models = Models { student, student_config: shape, tokenizer, teacher, reference: None };

    let settings = Settings {
        seed: 0,
        steps,
        train_split: "train".into(),
        tasks_per_step: 2,
        group_size: 2,
        mini_batch_size: 8,
        ppo_epochs: 1,
        shards: 2,
        lr: 3e-4.into(),
        temperature: 1.0.into(),
        render,
        max_turns: 6,
        max_new_tokens: 24,
    };
    let optim = AdamW::new(AdamWConfig::default());
    let mut trainer = Trainer::new(plugin, env_config, models, optim, Loss::preset("opd")?, settings)?;

    let mut history = Vec::new();
    for step in 0..steps {
        let rollout = trainer.rollout(step)?;
        let scores = trainer.score(&rollout, step)?;
        // Our own advantage, in place of `trainer.advantages`: discounted per-token OPD.
        let advantages: Vec<Vec<f32>> = rollout
            .samples
            .iter()
            .zip(&scores.teacher)
            .map(|(sample, teacher)| {
                let discount = GAMMA.powi(sample.turn_idx as i32);
                sample.behaviour_logprobs.iter().zip(teacher).map(|(old, t)| discount * (t - old)).collect()
            })
            .collect();
        let update = trainer.update(&rollout, &scores, &advantages, StepInfo::new(step, steps))?;
        let mut metrics = update.metrics;
        metrics.extend(atod_cli::pipeline::trainer::rollout_metrics(&rollout));
        println!(
            "step {step}: loss/total {:.4}  actor/grad_norm {:.4}  updates {}  rollout/samples {}  rollout/success_rate {:.2}",
            metrics["loss/total"], metrics["actor/grad_norm"], update.updates, metrics["rollout/samples"],
            metrics["rollout/success_rate"]
        );
        history.push(metrics);
    }
    Ok(history)
}

fn main() -> anyhow::Result<()> {
    let steps = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    run(steps)?;
    Ok(())
}
