//! The training pipeline behind `atod sft` and `atod train`: configs, self-resolving stages, supervised
//! fine-tuning, the online [`trainer`] and the run directory ([`run`]) that drives it. Rendering, rollouts,
//! demonstrations and evaluation are the library's modules `render`, `rollout`, `demos` and `evaluation`, shared
//! with `atod collect` and `atod eval`, so every stage sees the same prompts.

pub mod bench;
pub mod config;
pub mod run;
pub mod sft;
pub mod stages;
pub mod trainer;
pub mod update;

use std::path::Path;

use atod_core::config::EnvConfig;
use atod_envs::EnvPlugin;
use atod_models::{HotPathBackend, LmPolicy, SamplingParams};

use crate::demos::{self, DemoPlan};
pub use crate::evaluation::Summary as EvalSummary;
use crate::evaluation::{evaluate_policy, EvalPlan};
use crate::progress::Progress;
use crate::render::RenderConfig;
use config::{PromptConfig, SftRunConfig, TrainConfig};

/// The prompt rendering of an environment config and prompt limits.
pub fn render_of(env: &atod_core::config::EnvConfig, prompt: &PromptConfig) -> RenderConfig {
    RenderConfig {
        history: env.history,
        show_admissible: env.show_admissible,
        action_history: env.action_history,
        max_prompt_tokens: prompt.max_prompt_tokens,
    }
}

/// The prompt rendering of a train config.
pub fn render_config(config: &TrainConfig) -> RenderConfig {
    render_of(&config.env, &config.prompt)
}

/// Collects the expert demonstrations of an SFT config into `out` (won episodes only), with prompts fitted to
/// the budget when a tokenizer is given.
pub fn collect_demos(
    plugin: &EnvPlugin,
    config: &SftRunConfig,
    out: &Path,
    fit: Option<&atod_models::ChatTokenizer>,
    progress: &dyn Progress,
) -> anyhow::Result<demos::Report> {
    let plan = DemoPlan {
        env: config.env.name.clone(),
        split: config.env.train_split.clone(),
        episodes: config.demos.episodes,
        seed: config.demos.seed,
        all: false,
        out: out.to_owned(),
    };
    let render = render_of(&config.env, &config.prompt);
    demos::collect(plugin, &config.env.config_toml(), &plan, &render, config.prompt.max_turns, fit, progress)
}

fn plan(
    env: &atod_core::config::EnvConfig,
    prompt: &PromptConfig,
    split: &str,
    episodes: u64,
    seed: u64,
    temperature: f32,
) -> EvalPlan {
    EvalPlan {
        split: split.to_owned(),
        episodes,
        seed,
        render: render_of(env, prompt),
        max_turns: prompt.max_turns,
        sampling: Some(SamplingParams {
            temperature,
            max_new_tokens: prompt.max_new_tokens,
            ..SamplingParams::default()
        }),
    }
}

/// The temperature SFT stages are evaluated at (the trainer's default `eval_temperature`).
pub const STAGE_EVAL_TEMPERATURE: f32 = 0.4;

/// Evaluates an SFT stage's model on `split` at [`STAGE_EVAL_TEMPERATURE`].
pub fn evaluate<B: HotPathBackend>(
    policy: &mut LmPolicy<B>,
    plugin: &EnvPlugin,
    config: &SftRunConfig,
    split: &str,
    episodes: u64,
    seed: u64,
    progress: &dyn Progress,
) -> anyhow::Result<EvalSummary> {
    let plan = plan(&config.env, &config.prompt, split, episodes, seed, STAGE_EVAL_TEMPERATURE);
    Ok(evaluate_policy(policy, plugin, &config.env.config_toml(), &plan, progress)?.overall)
}

/// A train run's periodic evaluation: `train.eval_episodes` episodes of the eval split at
/// `train.eval_temperature`, always the same tasks and seeds.
pub fn evaluate_train<B: HotPathBackend>(
    policy: &mut LmPolicy<B>,
    plugin: &EnvPlugin,
    config: &TrainConfig,
    seed: u64,
    progress: &dyn Progress,
) -> anyhow::Result<EvalSummary> {
    let plan = plan(
        &config.env,
        &config.prompt,
        &config.env.eval_split,
        config.train.eval_episodes,
        seed,
        config.train.eval_temperature,
    );
    Ok(evaluate_policy(policy, plugin, &config.env.config_toml(), &plan, progress)?.overall)
}

/// Where a stage's evaluation under one plan (environment, prompts, episode count, temperature, seed) is kept in
/// the stage's directory: the SFT stage writes it as it finishes, and every train run that evaluates the same
/// model under the same plan (the teacher, and the student before training) reads it instead of playing the
/// episodes again (grid cells share it too).
fn stage_eval_path(
    stage_dir: &Path,
    env: &EnvConfig,
    prompt: &PromptConfig,
    episodes: u64,
    temperature: f32,
    seed: u64,
) -> std::path::PathBuf {
    // The arithmetic mode in force changes what the model generates, so it is part of the key (left out when
    // off, which keeps the earlier keys).
    let key = if atod_models::cpu::isa::reproducible() {
        stages::key_of("stage-eval", &(env, prompt, episodes, temperature.to_bits(), seed, "reproducible"))
    } else {
        stages::key_of("stage-eval", &(env, prompt, episodes, temperature.to_bits(), seed))
    };
    stage_dir.join(format!("eval-{key}.json"))
}

/// Evaluates an SFT stage's model on its eval split at [`STAGE_EVAL_TEMPERATURE`] and keeps the result in the
/// stage's evaluation cache.
pub fn evaluate_stage<B: HotPathBackend>(
    stage_dir: &Path,
    policy: &mut LmPolicy<B>,
    plugin: &EnvPlugin,
    config: &SftRunConfig,
    episodes: u64,
    seed: u64,
    progress: &dyn Progress,
) -> anyhow::Result<EvalSummary> {
    let summary = evaluate(policy, plugin, config, &config.env.eval_split, episodes, seed, progress)?;
    let path = stage_eval_path(stage_dir, &config.env, &config.prompt, episodes, STAGE_EVAL_TEMPERATURE, seed);
    atod_models::checkpoint::write_file_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(summary)
}

/// A stage model's evaluation under a train config's plan: read from the stage's cache, else played and kept.
/// `policy` must be the stage's model as saved.
pub fn cached_stage_eval<B: HotPathBackend>(
    stage_dir: &Path,
    policy: &mut LmPolicy<B>,
    plugin: &EnvPlugin,
    config: &TrainConfig,
    seed: u64,
    progress: &dyn Progress,
) -> anyhow::Result<EvalSummary> {
    let path = stage_eval_path(
        stage_dir,
        &config.env,
        &config.prompt,
        config.train.eval_episodes,
        config.train.eval_temperature,
        seed,
    );
    if let Some(summary) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        return Ok(summary);
    }
    let summary = evaluate_train(policy, plugin, config, seed, progress)?;
    atod_models::checkpoint::write_file_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(summary)
}
