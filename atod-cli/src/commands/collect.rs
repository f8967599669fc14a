//! `atod collect`: expert demonstrations as JSONL in the chat format, the input of `atod tokenizer` and
//! `atod sft`.
//!
//! The environment's expert plays `--episodes` episodes of a split through the rollout engine (episode `i`
//! plays task `i mod size` with seed `seed + i div size`), and every turn becomes one line:
//! `{"messages": [system, user, assistant], "env", "split", "task", "seed", "turn", "won"}`. The system and
//! user messages are rendered by [`crate::render`] with the trainer's defaults (or `--history`), so supervised
//! fine-tuning sees the prompts that rollouts will show; the assistant message is the expert's whole response
//! (its `<think>` thought and its action in the environment's tags). Only won episodes are written unless
//! `--all` is given. The file is written atomically.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use atod_core::{ChatMessage, Role};
use atod_envs::{EnvPlugin, Registry};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::commands::eval::{BATCH, MAX_TURNS};
use crate::policies::ExpertPolicy;
use crate::render::RenderConfig;
use crate::rollout::{run_episodes_with, sweep, Rollout, Sweep};

/// Arguments of `atod collect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The environment's name (see `atod envs`).
    #[arg(long)]
    pub env: String,
    /// The split to play.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// The number of episodes (tasks 0, 1, ... cycling over the split).
    #[arg(long)]
    pub episodes: u64,
    /// Where to write the JSONL (atomically).
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: PathBuf,
    /// The base seed of the episodes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The plugin's config as a TOML file (missing keys take the plugin's defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Past turns repeated in each prompt (default: the trainer's, 3).
    #[arg(long)]
    pub history: Option<usize>,
    /// Also write the turns of episodes the expert did not win.
    #[arg(long)]
    pub all: bool,
    /// Print one JSON document instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document of `atod collect --json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The file written.
    pub out: PathBuf,
    /// Episodes played.
    pub episodes: u64,
    /// The expert's success rate over them.
    pub success_rate: f64,
    /// Lines (turns) written.
    pub lines: usize,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
}

/// One line of the output.
#[derive(Debug, Serialize)]
struct Line<'a> {
    messages: Vec<ChatMessage>,
    env: &'a str,
    split: &'a str,
    task: u64,
    seed: u64,
    turn: usize,
    won: bool,
}

/// Runs `atod collect`.
pub fn run(registry: &Registry, args: &Args) -> anyhow::Result<()> {
    let plugin = registry.get(&args.env)?;
    let config = match &args.config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => plugin.default_config(),
    };
    let report = collect(plugin, &config, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} · {} · {} episodes · expert success {:.3} · {} turns written to {} · {:.1}s",
            args.env,
            args.split,
            report.episodes,
            report.success_rate,
            report.lines,
            report.out.display(),
            report.wall_seconds
        );
    }
    Ok(())
}

/// Plays the expert and writes the demonstrations.
pub fn collect(plugin: &EnvPlugin, config: &str, args: &Args) -> anyhow::Result<Report> {
    let defaults = RenderConfig::default();
    let render = RenderConfig { history: args.history.unwrap_or(defaults.history), ..defaults };
    collect_with(plugin, config, args, &render, MAX_TURNS, None)
}

/// [`collect`] with the prompt rendering and turn limit of a training config and, with `fit`, prompts fitted to
/// the token budget by that tokenizer, so that demonstrations show the prompts the trainer's rollouts will show.
pub fn collect_with(
    plugin: &EnvPlugin,
    config: &str,
    args: &Args,
    render: &RenderConfig,
    max_turns: usize,
    fit: Option<&atod_models::ChatTokenizer>,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let progress = ProgressBar::new(args.episodes).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} episodes, {elapsed} elapsed, eta {eta}")
            .expect("a valid template"),
    );
    progress.set_message(format!("collect {} · {}", args.env, args.split));
    let plan = Sweep { split: &args.split, episodes: args.episodes, seed: args.seed, batch: BATCH };
    let rollout = sweep(plugin, config, &plan, &progress, |envs, specs| match fit {
        Some(tokenizer) => {
            crate::rollout::run_episodes_fitted(envs, specs, &mut ExpertPolicy, tokenizer, render, max_turns)
        }
        None => run_episodes_with(envs, specs, &mut ExpertPolicy, render, max_turns),
    })?;
    progress.finish_and_clear();
    let (text, lines) = to_jsonl(&rollout, &args.env, args.all)?;
    atod_models::checkpoint::write_file_atomic(&args.out, text.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let won = rollout.episodes.iter().filter(|e| e.won).count();
    Ok(Report {
        out: args.out.clone(),
        episodes: rollout.episodes.len() as u64,
        success_rate: if rollout.episodes.is_empty() { 0.0 } else { won as f64 / rollout.episodes.len() as f64 },
        lines,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The JSONL text of a rollout's turns (those of won episodes unless `all`) and its number of lines.
fn to_jsonl(rollout: &Rollout, env: &str, all: bool) -> anyhow::Result<(String, usize)> {
    let mut text = String::new();
    let mut lines = 0;
    for sample in &rollout.samples {
        let episode = &rollout.episodes[sample.traj];
        if !(episode.won || all) {
            continue;
        }
        let mut messages = sample.messages.clone();
        messages.push(ChatMessage::new(Role::Assistant, sample.response.clone()));
        let line = Line {
            messages,
            env,
            split: &episode.task.split,
            task: episode.task.index,
            seed: episode.task.seed,
            turn: sample.turn_idx,
            won: episode.won,
        };
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
        lines += 1;
    }
    Ok((text, lines))
}
