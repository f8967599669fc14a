//! `atod grid`: trains the cells of a grid file that are not finished yet, as child processes, then writes the
//! grid's report. The grid file format, the cell ids and the resumption rules are in `crate::grid`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::grid::{self, CellState, Event, GridConfig, Job};
use crate::report;

/// Arguments of `atod grid`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The grid file (TOML; see the format in `atod-cli/src/grid.rs`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Cells trained at once (overrides grid.parallel).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Print one JSON document (the cells' rows of results.csv) instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs `atod grid`; `plugins` are the `--plugin` flags, passed on to every cell.
pub fn run(plugins: &[PathBuf], args: &Args) -> anyhow::Result<()> {
    let config = GridConfig::load(&args.config)?;
    let parallel = match args.parallel {
        Some(0) => bail!("--parallel must be at least 1"),
        Some(n) => n,
        None => config.parallel,
    };
    let cells = config.cells()?;
    let cells_dir = config.out.join("cells");
    fs::create_dir_all(&cells_dir).with_context(|| format!("creating {}", cells_dir.display()))?;
    let manifest = config.manifest(&cells, &args.config.display().to_string());
    let manifest_path = config.out.join("grid.json");
    fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing {}", manifest_path.display()))?;

    let exe = std::env::current_exe().context("finding the atod executable for the cells")?;
    let mut jobs = Vec::new();
    let mut skipped = 0;
    for cell in config.training_order(&cells) {
        let dir = cells_dir.join(&cell.id);
        let text = toml::to_string(&config.cell_config(cell)?)?;
        let cell_toml = dir.join("cell.toml");
        let state = grid::cell_state(&dir);
        if state == CellState::Finished {
            skipped += 1;
            // A finished cell keeps the config it ran with; say so when the grid now asks for another.
            if fs::read_to_string(&cell_toml).is_ok_and(|old| old != text) {
                eprintln!(
                    "warning: cell {} is finished with a config that differs from the grid's now; it is not re-run \
                     (delete {} to re-run it)",
                    cell.id,
                    dir.display()
                );
            }
            continue;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(&cell_toml, &text).with_context(|| format!("writing {}", cell_toml.display()))?;
        let mut command = grid::train_command(&exe, plugins, &cell_toml, &dir, state == CellState::Partial);
        // The cells run in this grid's mode when its command line named one (a global flag, so it may follow).
        if let Some(on) = super::reproducible_flag() {
            command.arg("--reproducible").arg(on.to_string());
        }
        jobs.push(Job { id: cell.id.clone(), dir, command });
    }

    let bar = ProgressBar::new(cells.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} cells, {elapsed} elapsed · {wide_msg}")
            .expect("the template is valid"),
    );
    bar.set_prefix(config.name.clone());
    bar.set_position(skipped);
    if skipped > 0 {
        eprintln!("{skipped} of {} cells already finished", cells.len());
    }
    let started = std::time::Instant::now();
    let to_train = jobs.len();
    let outcomes = grid::run_jobs(jobs, parallel, |event| match event {
        Event::Started(_, running) => bar.set_message(format!("running {}", running.join(", "))),
        Event::Ended(outcome, running) => {
            bar.inc(1);
            bar.set_message(format!("running {}", running.join(", ")));
            // `suspend` rather than `println`, which prints nothing when the bar is hidden (no terminal).
            if !outcome.success {
                bar.suspend(|| {
                    eprintln!(
                        "cell {} failed ({}); the end of {}:\n{}",
                        outcome.id,
                        outcome.status,
                        cells_dir.join(&outcome.id).join("log.txt").display(),
                        indent(&outcome.log_tail)
                    )
                });
            }
        }
    });
    bar.finish_and_clear();
    if to_train > 0 {
        log_invocation(&config.out, started.elapsed().as_secs_f64(), parallel, &outcomes)?;
    }

    let (grid, written) = report::write_grid_report(&config.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report::rows_json(&grid.columns, &grid.rows))?);
    } else {
        print_summary(&config.out, &written, cells.len(), skipped as usize, &outcomes);
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.success).map(|o| o.id.as_str()).collect();
    if !failed.is_empty() {
        bail!("{} of {} cells failed: {}", failed.len(), cells.len(), failed.join(", "));
    }
    Ok(())
}

/// Appends this invocation to `<out>/grid-log.jsonl`: when it ended, how long it ran, how many cells it trained
/// and how many failed, and the cells run at once; the wall time of RESULTS.md adds these up. (An invocation
/// that is interrupted logs nothing; its cells' own wall times still count in the report.)
fn log_invocation(out: &Path, seconds: f64, parallel: usize, outcomes: &[grid::Outcome]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let ended = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let line = serde_json::json!({
        "ended_unix": ended,
        "seconds": seconds,
        "trained": outcomes.iter().filter(|o| o.success).count(),
        "failed": outcomes.iter().filter(|o| !o.success).count(),
        "parallel": parallel,
    });
    let path = out.join("grid-log.jsonl");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
}

fn print_summary(out: &Path, written: &report::Written, total: usize, skipped: usize, outcomes: &[grid::Outcome]) {
    let ok = outcomes.iter().filter(|o| o.success).count();
    println!("{total} cells: {skipped} already finished, {ok} trained now, {} failed", outcomes.len() - ok);
    println!("report: {}, {}", written.markdown.display(), written.csv.display());
    for plot in &written.plots {
        println!("plot: {}", plot.display());
    }
    println!("regenerate with: atod report {}", out.display());
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
