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

    let exe = cell_executable()?;
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
    // An earlier invocation that was killed left its last heartbeat: log it now, so that the grid's wall time
    // counts it too.
    recover_interrupted(&config.out)?;
    let to_train = jobs.len();
    let heartbeat = (to_train > 0).then(|| Heartbeat::start(&config.out, parallel));
    let started = std::time::Instant::now();
    let outcomes = grid::run_jobs(jobs, parallel, |event| match event {
        Event::Started(_, running) => bar.set_message(format!("running {}", running.join(", "))),
        Event::Ended(outcome, running) => {
            if let Some(heartbeat) = &heartbeat {
                heartbeat.ended(outcome.success);
            }
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
    if let Some(heartbeat) = heartbeat {
        heartbeat.stop();
        let trained = outcomes.iter().filter(|o| o.success).count();
        let line = invocation_line(started.elapsed().as_secs_f64(), trained, outcomes.len() - trained, parallel, false);
        append_log(&config.out, &line)?;
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

/// The executable the cells run: this process's own binary, through `/proc/self/exe` where there is one
/// (Linux), so that every cell of an invocation runs the same code even when the file is replaced meanwhile (a
/// rebuild while a long grid runs: the path would then name the new build, or nothing); elsewhere its path.
fn cell_executable() -> anyhow::Result<PathBuf> {
    let this = Path::new("/proc/self/exe");
    if this.exists() {
        return Ok(this.to_path_buf());
    }
    std::env::current_exe().context("finding the atod executable for the cells")
}

/// One line of `<out>/grid-log.jsonl`: when the invocation ended, how long it ran, how many cells it trained and
/// how many failed, the cells run at once, and whether it was interrupted (then it is counted up to its last
/// heartbeat). The wall time of RESULTS.md adds these up.
fn invocation_line(
    seconds: f64,
    trained: usize,
    failed: usize,
    parallel: usize,
    interrupted: bool,
) -> serde_json::Value {
    serde_json::json!({
        "ended_unix": unix_now(),
        "seconds": seconds,
        "trained": trained,
        "failed": failed,
        "parallel": parallel,
        "interrupted": interrupted,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Appends one invocation to `<out>/grid-log.jsonl`.
fn append_log(out: &Path, line: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = out.join("grid-log.jsonl");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
}

/// The file in which a running invocation keeps its would-be log line up to date: `grid-running-<pid>.json`, one
/// per process, so that two invocations over the same grid (on one machine) keep their own.
fn heartbeat_path(out: &Path, pid: u32) -> PathBuf {
    out.join(format!("grid-running-{pid}.json"))
}

/// How often a running invocation rewrites its heartbeat (and at every cell's end).
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps `<out>/grid-running-<pid>.json` up to date while the grid trains: the log line this invocation would write
/// if it ended now, marked interrupted. A grid killed by a signal (Ctrl-C, the end of a session, SIGKILL) leaves
/// it behind, and the next invocation logs it (`recover_interrupted`), so that an interrupted invocation counts
/// in the grid's wall time up to at most `HEARTBEAT_EVERY` before it died, rather than not at all.
struct Heartbeat {
    state: std::sync::Arc<(std::sync::Mutex<HeartbeatState>, std::sync::Condvar)>,
    thread: std::thread::JoinHandle<()>,
    path: PathBuf,
}

#[derive(Default)]
struct HeartbeatState {
    trained: usize,
    failed: usize,
    stop: bool,
}

impl Heartbeat {
    fn start(out: &Path, parallel: usize) -> Self {
        use std::sync::{Arc, Condvar, Mutex};
        let state = Arc::new((Mutex::new(HeartbeatState::default()), Condvar::new()));
        let path = heartbeat_path(out, std::process::id());
        let thread = {
            let state = Arc::clone(&state);
            let path = path.clone();
            let started = std::time::Instant::now();
            std::thread::spawn(move || {
                let (lock, wake) = &*state;
                let mut guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                while !guard.stop {
                    let line =
                        invocation_line(started.elapsed().as_secs_f64(), guard.trained, guard.failed, parallel, true);
                    // Best effort: a heartbeat that cannot be written costs only the accounting of a crash.
                    let scratch = path.with_extension("json.tmp");
                    if fs::write(&scratch, line.to_string() + "\n").is_ok() {
                        let _ = fs::rename(&scratch, &path);
                    }
                    guard = wake.wait_timeout(guard, HEARTBEAT_EVERY).unwrap_or_else(|e| e.into_inner()).0;
                }
            })
        };
        Heartbeat { state, thread, path }
    }

    /// A cell ended: count it and rewrite the heartbeat now.
    fn ended(&self, success: bool) {
        let (lock, wake) = &*self.state;
        let mut guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if success {
            guard.trained += 1;
        } else {
            guard.failed += 1;
        }
        wake.notify_all();
    }

    /// The grid ended by itself: stop writing and remove the heartbeat (the caller logs the invocation).
    fn stop(self) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stop = true;
        wake.notify_all();
        let _ = self.thread.join();
        let _ = fs::remove_file(&self.path);
    }
}

/// Logs the heartbeats that interrupted invocations left in `out` (those whose process is gone) and removes them.
fn recover_interrupted(out: &Path) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(out) else { return Ok(()) };
    let mut left: Vec<(PathBuf, u32)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let pid = name.strip_prefix("grid-running-")?.strip_suffix(".json")?.parse().ok()?;
            Some((entry.path(), pid))
        })
        .collect();
    left.sort();
    for (path, pid) in left {
        // A live process other than this one is another invocation still running (on Linux, where /proc says).
        if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        match serde_json::from_str::<serde_json::Value>(text.trim()) {
            Ok(line) if line["seconds"].is_number() => {
                append_log(out, &line)?;
                eprintln!(
                    "an earlier invocation of this grid was interrupted after {}; logged in grid-log.jsonl",
                    report::format_duration(line["seconds"].as_f64().unwrap_or(0.0))
                );
            }
            _ => eprintln!("warning: {} is not a heartbeat this grid wrote; ignored and removed", path.display()),
        }
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
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
