//! `atod train --config FILE.toml [--resume] [--out DIR]`: the whole pipeline of one run. Missing stages
//! (demonstrations, tokenizer, teacher, student initialisation) are built first and reused afterwards; then the
//! online loop runs and the run ends by printing the teacher's success and the student's before and after.

use std::path::PathBuf;

use atod_envs::Registry;

use crate::pipeline::config::TrainConfig;
use crate::pipeline::run;
use crate::progress;

/// Arguments of `atod train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The train config (see configs/quickstart.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue an interrupted run from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// The run directory (default `runs/<name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Runs `atod train`.
pub fn run(registry: &Registry, args: &Args) -> anyhow::Result<()> {
    let config = TrainConfig::load(&args.config)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
    let summary = run::run(registry, &config, &out, args.resume, &progress::bar(0, "train"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("run            {}", out.display());
        println!(
            "method         {} on {} ({} steps, student {})",
            summary.method, summary.env, summary.steps, summary.student
        );
        println!("teacher        {:.1}% success", 100.0 * summary.teacher_success_rate);
        println!("student before {:.1}% success", 100.0 * summary.initial_success_rate);
        println!("student after  {:.1}% success", 100.0 * summary.final_success_rate);
        println!("wall time      {:.0} s", summary.wall_seconds);
    }
    Ok(())
}
