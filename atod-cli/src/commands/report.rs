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
    /// A grid only: also write the paper-layout report (Table 1 per environment and averaged, the ablation, the
    /// paper's findings checked, learning curves, wall time, the commands that regenerate it) to FILE, e.g.
    /// RESULTS.md.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// With --markdown: a markdown file included at the end (the analysis written by hand).
    #[arg(long, value_name = "FILE", requires = "markdown")]
    pub notes: Option<PathBuf>,
    /// With --markdown: the finished cell whose retraining the report gives as its regenerate-one-cell command
    /// (default: the first finished `atod` cell). Name a cheap one: on a fresh clone the command builds the SFT
    /// stages the cell needs first.
    #[arg(long, value_name = "ID", requires = "markdown")]
    pub cell: Option<String>,
}

/// Runs `atod report`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if report::is_grid_dir(&args.dir) {
        let (grid, written) = report::write_grid_report(&args.dir)?;
        if let Some(markdown) = &args.markdown {
            write_paper_report(args, &grid, &written, markdown)?;
        }
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
    if args.markdown.is_some() {
        anyhow::bail!("--markdown needs a grid directory; {} is a single run", args.dir.display());
    }
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

/// Writes the paper-layout report of `grid` to `markdown`.
fn write_paper_report(
    args: &Args,
    grid: &report::Grid,
    written: &report::Written,
    markdown: &std::path::Path,
) -> anyhow::Result<()> {
    let notes = match &args.notes {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("reading the notes {}", path.display()))?)
        }
        None => None,
    };
    let sessions = report::read_grid_log(&args.dir)?;
    let dir = args.dir.display().to_string();
    let mut commands = Vec::new();
    if let Some(config) = &grid.config {
        commands.push((
            "The whole grid (it resumes: finished cells are kept; delete the grid directory to start afresh)"
                .to_owned(),
            format!("cargo run -p atod-cli --release -- grid --config {config}"),
        ));
    }
    let mut report_command =
        format!("cargo run -p atod-cli --release -- report {dir} --markdown {}", markdown.display());
    if let Some(notes) = &args.notes {
        report_command.push_str(&format!(" --notes {}", notes.display()));
    }
    if let Some(cell) = &args.cell {
        report_command.push_str(&format!(" --cell {cell}"));
    }
    commands.push(("This report, from the cells on disk".to_owned(), report_command));
    let method = grid.columns.iter().position(|c| c == "method");
    let finished = || grid.rows.iter().filter(|r| r.status == report::Status::Finished);
    let cell = match &args.cell {
        Some(id) => Some(finished().find(|r| &r.cell == id).with_context(|| {
            let state = grid.rows.iter().find(|r| &r.cell == id).map_or("not a cell of the grid", |_| "not finished");
            format!("--cell {id}: {state} (the regenerate-one-cell command needs a finished cell of {dir})")
        })?),
        None => finished().find(|r| method.is_some_and(|m| r.axes[m] == "atod")).or_else(|| finished().next()),
    };
    if let Some(row) = cell {
        let final_rate = row.final_success_rate.map_or_else(|| "?".to_owned(), |x| format!("{:.2}%", 100.0 * x));
        commands.push((
            format!(
                "One cell, `{id}`, retrained from its committed config into a fresh directory (the stages it needs \
                 are built first when runs/stages/ lacks them); its `final_success_rate` in the printed summary and \
                 in `runs/regen-{id}/summary.json` is to match the {final_rate} of results.csv. A run is \
                 deterministic given its config and build, and in the reproducible mode the same on every x86-64 \
                 CPU with AVX2 and FMA: with the build that trained the cell, its `evals.jsonl` and every line of \
                 its `metrics.jsonl` but the `time/*` keys match the committed cell's too (the notes say which \
                 build that was)",
                id = row.cell
            ),
            format!(
                "cargo run -p atod-cli --release -- train --config {dir}/cells/{id}/config.toml --out runs/regen-{id}",
                id = row.cell
            ),
        ));
    }
    let inputs = report::paper::PaperInputs {
        link_prefix: report::paper::link_prefix(markdown, &args.dir),
        plots: written.plots.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect(),
        notes,
        sessions,
        commands,
    };
    let text = report::paper::render(grid, &inputs);
    std::fs::write(markdown, text).with_context(|| format!("writing {}", markdown.display()))?;
    if !args.json {
        println!("wrote {}", markdown.display());
    }
    Ok(())
}
