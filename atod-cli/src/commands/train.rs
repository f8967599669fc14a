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
    let mut config = TrainConfig::load(&args.config)?;
    if let Some(on) = super::reproducible_flag() {
        config.reproducible = on;
    }
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
        println!("teacher        {}", success_line(summary.teacher_success_rate, summary.teacher_episodes));
        println!("student before {}", success_line(summary.initial_success_rate, summary.initial_episodes));
        println!("student after  {}", success_line(summary.final_success_rate, summary.final_episodes));
        println!("wall time      {:.0} s", summary.wall_seconds);
    }
    Ok(())
}

/// "6.2% success (95% CI 1.7-20.1%, 32 episodes)": the rate with Wilson's interval over the evaluation episodes,
/// so that a reader sees whether two figures differ by more than the episodes can resolve.
pub fn success_line(rate: f64, episodes: u64) -> String {
    match crate::report::stats::wilson95(rate, episodes) {
        Some((low, high)) => format!(
            "{:.1}% success (95% CI {:.1}-{:.1}%, {episodes} episodes)",
            100.0 * rate,
            100.0 * low,
            100.0 * high
        ),
        None => format!("{:.1}% success", 100.0 * rate),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn success_lines_carry_their_interval() {
        assert_eq!(super::success_line(2.0 / 32.0, 32), "6.2% success (95% CI 1.7-20.1%, 32 episodes)");
        assert_eq!(super::success_line(0.0, 128), "0.0% success (95% CI 0.0-2.9%, 128 episodes)");
        assert_eq!(super::success_line(0.25, 0), "25.0% success");
    }
}
