//! `atod report DIR`: regenerates a grid's results.csv, results.md and plots from its cells, or shows a single
//! run's summary and evaluations and writes its `plot.svg`.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::report;

/// Arguments of `atod report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A grid directory (with `cells/`) or a run directory.
    pub dir: PathBuf,
    /// Print one JSON document instead of the human summary: the cells' rows for a grid, the summary and the
    /// evaluations for a run.
    #[arg(long)]
    pub json: bool,
}

/// Runs `atod report`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if report::is_grid_dir(&args.dir) {
        let (grid, written) = report::write_grid_report(&args.dir)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report::rows_json(&grid.columns, &grid.rows))?);
        } else {
            let markdown = std::fs::read_to_string(&written.markdown)?;
            println!("{markdown}");
            println!(
                "wrote {}, {} and {} plots",
                written.markdown.display(),
                written.csv.display(),
                written.plots.len()
            );
        }
        return Ok(());
    }
    let run = report::load_run(&args.dir)?;
    let name = run
        .summary
        .as_ref()
        .and_then(|s| s["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| args.dir.display().to_string());
    let plot = args.dir.join("plot.svg");
    std::fs::write(&plot, report::render_run_plot(&name, &run))
        .with_context(|| format!("writing {}", plot.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({"summary": run.summary, "evals": run.evals}))?);
        return Ok(());
    }
    match &run.summary {
        Some(s) => {
            println!(
                "run {name}: {} · {} · {} · seed {}",
                text(&s["env"]),
                text(&s["student"]),
                text(&s["method"]),
                text(&s["seed"])
            );
            for key in [
                "status",
                "steps",
                "initial_success_rate",
                "final_success_rate",
                "teacher_success_rate",
                "wall_seconds",
            ] {
                println!("  {key:<22} {}", text(&s[key]));
            }
        }
        None => println!("run {name}: not finished (no summary.json)"),
    }
    println!();
    println!(
        "{:>6}  {:<8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "step", "split", "episodes", "success", "score", "return", "turns", "invalid"
    );
    let num = |v: &serde_json::Value| v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"));
    for e in &run.evals {
        println!(
            "{:>6}  {:<8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
            text(&e["step"]),
            text(&e["split"]),
            text(&e["episodes"]),
            num(&e["success_rate"]),
            num(&e["mean_score"]),
            num(&e["mean_return"]),
            num(&e["mean_turns"]),
            num(&e["invalid_action_rate"])
        );
    }
    println!("\nwrote {}", plot.display());
    Ok(())
}

/// A JSON value as plain text: strings without quotes, a missing value as "-". (`Value`'s own `Display` quotes
/// strings and ignores the width of a format.)
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}
