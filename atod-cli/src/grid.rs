//! Grids of training runs: the grid file, its expansion into cells, each cell's train config, and the runner
//! that trains the unfinished cells as child processes (`atod grid`, DESIGN.md §8).
//!
//! # The grid file
//!
//! ```toml
//! [grid]
//! name = "smoke-grid"
//! base = "quickstart.toml"   # a train config; a relative path is relative to this grid file
//! out = "runs/smoke-grid"    # optional, default runs/<name>; a relative path is relative to the working directory
//! parallel = 1               # optional, default 1: cells trained at once, each a child process; --parallel overrides
//! run_order = ["student"]    # optional: train the cells sorted by these axes' values first (see Running)
//!
//! [axes]                     # the cartesian product of all axes; every list non-empty
//! env = ["alfworld", "webshop"]   # shorthand for the key env.name (string values)
//! student = ["student-s"]         # shorthand for student.preset (string values)
//! method = ["atod", "grpo"]       # shorthand for method (string values)
//! seed = [0, 1]                   # shorthand for seed (integer values)
//! "train.steps" = [4]             # any dotted key of the base config: strings, integers, floats, booleans
//!
//! [[grid.extra]]             # optional, repeatable: a sub-grid added to the cells above
//! axes = { method = ["atod-uniform", "atod-const"], env = ["alfworld"] }
//!
//! [[grid.extra]]
//! base = "webshop.toml"      # optional: this sub-grid's cells start from another base config
//! axes = { env = ["webshop"] }
//! set = { "loss.kappa" = "linear(1.0, 0.1, total)" }   # optional: keys set in its cells, not in their ids
//! ```
//!
//! A `[[grid.extra]]` sub-grid takes the main `[axes]` and replaces (or adds) the axes it lists, so the example
//! adds the two ablations on ALFWorld for every student and seed of the main grid; listing every axis with one
//! value adds a single cell. A sub-grid with its own `base` builds its cells from that config instead of the main
//! one: how one grid spans environments whose configs differ in more than a key or two (prompt budgets, the
//! environment's own table). A sub-grid's `set` sets dotted keys (any TOML value) in each of its cells without
//! naming them in the ids, for a setting that belongs with some cells' values, such as a schedule that only the
//! ATOD methods read; the cell's own axis values are set after them, and setting one key both ways is an error.
//! A cell id reached from two sub-grids that would give it different configs is an error. Cells of the main grid come first, then each sub-grid's in file order; a cell that
//! an earlier grid already holds (same id) is listed once. Unknown keys are errors that name the key and the file.
//! Keys of the base config are split on `.`; a key whose own name contains a dot cannot be set.
//!
//! # Cells
//!
//! The cells are expanded with the first axis outermost, axes ordered `env`, `student`, `method`, `seed` and then
//! the other keys in alphabetical order. A cell's id joins its values in that order with `-`: the shorthands by
//! their value (the seed as `s<N>`), every other key as `key=value`, e.g. `alfworld-student-s-atod-s0` or
//! `webshop-student-s-grpo-s1-train.steps=4`; characters outside `[A-Za-z0-9._=+-]` become `_`. Every axis is
//! in the id even with one value, so that adding a value to an axis later keeps the ids (and the finished runs)
//! of the cells already there. Two cells with the same id are an error.
//!
//! Cell `ID` lives in `<out>/cells/ID/`: `cell.toml` is the base config with the cell's values set (a dotted key
//! creates the tables it needs; an integer given for a float of the base stays a float) and `name` set to the id;
//! the run itself is that directory (the contract of `atod train --out`: `config.toml`, `metrics.jsonl`,
//! `evals.jsonl`, `checkpoints/`, and `summary.json` once finished); `log.txt` collects the child's output
//! across attempts; `failed` records the exit status of the last attempt when it failed. `<out>/grid.json` lists
//! the cells and their axis values for `atod report`.
//!
//! # Running
//!
//! Cells are trained in their listed order, or, with `run_order`, sorted (stably) by the position of their value
//! of each named axis among that axis's values as the cells list them: `["student"]` trains every cell of the
//! first student before any of the second, so that an interrupted grid leaves whole tables for some students
//! rather than a few cells of each. The order changes nothing else: not the ids, the report or the results.
//!
//! A cell is finished iff its `summary.json` says `"status": "finished"`; finished cells are skipped, a cell with
//! `metrics.jsonl` or `checkpoints/` is resumed (`--resume`), any other is started. Interrupting the grid
//! (Ctrl-C reaches the children too) and running it again therefore continues where it stopped. A failing cell
//! is reported with the tail of its log and does not stop the others; the grid exits non-zero if any failed.
//! *Caveat:* a grid killed with SIGKILL leaves its children running; wait for them before running it again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The axis shorthands in id order, and the config key each one sets.
pub const SHORTHANDS: [(&str, &str); 4] =
    [("env", "env.name"), ("student", "student.preset"), ("method", "method"), ("seed", "seed")];

/// A grid file, parsed and checked, with its base config read.
#[derive(Debug, Clone)]
pub struct GridConfig {
    /// The grid's name.
    pub name: String,
    /// The grid file.
    pub path: PathBuf,
    /// The base train config's path (resolved against the grid file's directory).
    pub base_path: PathBuf,
    /// The base train config.
    pub base: Table,
    /// The output directory.
    pub out: PathBuf,
    /// Cells trained at once.
    pub parallel: usize,
    /// The axes whose values order the training (`run_order`); empty for the listed order.
    pub run_order: Vec<String>,
    /// The main grid's axes, in id order.
    pub axes: Vec<Axis>,
    /// The `[[grid.extra]]` sub-grids, each with its axes complete (the main ones with its own replacing them).
    pub extra: Vec<SubGrid>,
}

/// One `[[grid.extra]]` sub-grid.
#[derive(Debug, Clone)]
pub struct SubGrid {
    /// Its axes, complete.
    pub axes: Vec<Axis>,
    /// Its own base config (path, table), when it names one.
    pub base: Option<(PathBuf, Table)>,
    /// The keys `set` sets in its cells, in file order.
    pub set: Vec<(String, Value)>,
}

/// One axis: a config key (or its shorthand) and the values it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The shorthand (`env`, `student`, `method`, `seed`) or the dotted config key.
    pub key: String,
    /// The values, in file order.
    pub values: Vec<Value>,
}

/// One cell of the grid: its id and the value of every axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The readable id, also the cell's directory name and its run's `name`.
    pub id: String,
    /// (axis key, value) in id order.
    pub values: Vec<(String, Value)>,
    /// The (sub-)grid the cell comes from: 0 the main grid, i + 1 `extra[i]`.
    pub sub: usize,
}

/// `<out>/grid.json`: what `atod report` knows of a grid beyond its cells' own files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The grid's name.
    pub name: String,
    /// The grid file as it was given on the command line.
    pub config: String,
    /// Every axis key of any cell, in id order.
    pub axes: Vec<String>,
    /// The cells in expansion order.
    pub cells: Vec<ManifestCell>,
}

/// One cell in `grid.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestCell {
    /// The cell id.
    pub id: String,
    /// Axis key to value, as text.
    pub axes: BTreeMap<String, String>,
}

/// Where a cell's run stands on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// `summary.json` says finished.
    Finished,
    /// Started but not finished: it has `metrics.jsonl` or `checkpoints/`; it continues with `--resume`.
    Partial,
    /// Nothing to resume from.
    Fresh,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    grid: GridSection,
    #[serde(default)]
    axes: Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridSection {
    name: String,
    base: PathBuf,
    out: Option<PathBuf>,
    parallel: Option<i64>,
    #[serde(default)]
    run_order: Vec<String>,
    #[serde(default)]
    extra: Vec<ExtraSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraSection {
    base: Option<PathBuf>,
    #[serde(default)]
    axes: Table,
    #[serde(default)]
    set: Table,
}

impl GridConfig {
    /// Reads and checks the grid file at `path` and its base config.
    pub fn load(path: &Path) -> anyhow::Result<GridConfig> {
        let text = fs::read_to_string(path).with_context(|| format!("reading grid config {}", path.display()))?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let config = GridConfig::parse(&text, path, |base| {
            let base_path = base_dir.join(base);
            let text = fs::read_to_string(&base_path).with_context(|| {
                format!("reading the base config {} (grid.base in {})", base_path.display(), path.display())
            })?;
            let mut table: Table = toml::from_str(&text)
                .map_err(|e| anyhow!("base config {} (grid.base in {}): {e}", base_path.display(), path.display()))?;
            // Paths in the base config mean what they mean to `atod train --config BASE`: the cells' configs
            // live elsewhere, so they get the resolved paths.
            let dir = base_path.parent().unwrap_or(Path::new(""));
            for (table_name, key) in [("teacher", "checkpoint"), ("student", "checkpoint"), ("tokenizer", "file")] {
                if let Some(toml::Value::String(value)) =
                    table.get_mut(table_name).and_then(toml::Value::as_table_mut).and_then(|t| t.get_mut(key))
                {
                    let resolved = crate::pipeline::config::resolve_path(dir, Path::new(value.as_str()));
                    *value = resolved.display().to_string();
                }
            }
            Ok((base_path, table))
        })?;
        Ok(config)
    }

    /// Parses the grid file `text` (named `path` in errors); `read_base` reads each base config it names.
    pub fn parse(
        text: &str,
        path: &Path,
        mut read_base: impl FnMut(&Path) -> anyhow::Result<(PathBuf, Table)>,
    ) -> anyhow::Result<GridConfig> {
        let file = path.display();
        let raw: GridFile = toml::from_str(text).map_err(|e| anyhow!("grid config {file}: {e}"))?;
        let parallel = match raw.grid.parallel {
            None => 1,
            Some(n) if n >= 1 => n as usize,
            Some(n) => bail!("grid config {file}: grid.parallel must be at least 1, got {n}"),
        };
        if raw.grid.name.is_empty() {
            bail!("grid config {file}: grid.name must not be empty");
        }
        let axes = parse_axes(&raw.axes, "axes", path)?;
        let mut extra = Vec::new();
        for (i, section) in raw.grid.extra.iter().enumerate() {
            let own = parse_axes(&section.axes, &format!("grid.extra[{i}].axes"), path)?;
            let mut merged = axes.clone();
            for axis in own {
                match merged.iter_mut().find(|a| a.key == axis.key) {
                    Some(existing) => *existing = axis,
                    None => merged.push(axis),
                }
            }
            sort_axes(&mut merged);
            if let Some(key) = section.set.keys().find(|k| merged.iter().any(|a| config_key(&a.key) == k.as_str())) {
                bail!("grid config {file}: grid.extra[{i}] both sets `{key}` and has it as an axis");
            }
            let base = section.base.as_deref().map(&mut read_base).transpose()?;
            let set = section.set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            extra.push(SubGrid { axes: merged, base, set });
        }
        let (base_path, base) = read_base(&raw.grid.base)?;
        let out = raw.grid.out.unwrap_or_else(|| Path::new("runs").join(&raw.grid.name));
        let config = GridConfig {
            name: raw.grid.name,
            path: path.to_owned(),
            base_path,
            base,
            out,
            parallel,
            run_order: raw.grid.run_order,
            axes,
            extra,
        };
        if let Some(unknown) = config.run_order.iter().find(|k| {
            !std::iter::once(&config.axes).chain(config.extra.iter().map(|s| &s.axes)).flatten().any(|a| &a.key == *k)
        }) {
            bail!("grid config {file}: grid.run_order names `{unknown}`, which is not an axis of the grid");
        }
        // Every cell's config is built once here, so that a key that cannot be set fails before anything runs.
        for cell in config.cells()? {
            config.cell_config(&cell)?;
        }
        Ok(config)
    }

    /// The cells of the main grid and then of each sub-grid, without repeats.
    pub fn cells(&self) -> anyhow::Result<Vec<Cell>> {
        let mut cells: Vec<Cell> = Vec::new();
        let subgrids = self.extra.iter().enumerate().map(|(i, sub)| (&sub.axes, i + 1));
        for (axes, sub) in std::iter::once((&self.axes, 0)).chain(subgrids) {
            for mut cell in expand(axes) {
                cell.sub = sub;
                match cells.iter().find(|c| c.id == cell.id) {
                    None => cells.push(cell),
                    Some(existing)
                        if existing.values == cell.values
                            && self.cell_config(existing)? == self.cell_config(&cell)? => {}
                    Some(existing) if existing.values == cell.values => bail!(
                        "grid config {}: the cell {} is in two sub-grids that give it different configs (base {} \
                         and base {}, or their `set` keys)",
                        self.path.display(),
                        cell.id,
                        self.base_of(existing).0.display(),
                        self.base_of(&cell).0.display()
                    ),
                    Some(existing) => bail!(
                        "grid config {}: two cells have the id {} ({} and {}); make the values differ in more than \
                         punctuation",
                        self.path.display(),
                        cell.id,
                        describe(&existing.values),
                        describe(&cell.values)
                    ),
                }
            }
        }
        Ok(cells)
    }

    /// `cells` in training order: as listed, or stably sorted by `run_order` (see the module's Running).
    pub fn training_order<'a>(&self, cells: &'a [Cell]) -> Vec<&'a Cell> {
        let mut ordered: Vec<&Cell> = cells.iter().collect();
        let value_of = |cell: &Cell, key: &str| cell.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let ranks: Vec<Vec<Option<Value>>> = self
            .run_order
            .iter()
            .map(|key| {
                let mut seen: Vec<Option<Value>> = Vec::new();
                for cell in cells {
                    let value = value_of(cell, key);
                    if !seen.contains(&value) {
                        seen.push(value);
                    }
                }
                seen
            })
            .collect();
        ordered.sort_by_key(|cell| {
            self.run_order
                .iter()
                .zip(&ranks)
                .map(|(key, seen)| seen.iter().position(|v| *v == value_of(cell, key)).unwrap_or(usize::MAX))
                .collect::<Vec<_>>()
        });
        ordered
    }

    /// The base config (path, table) that `cell` starts from.
    pub fn base_of(&self, cell: &Cell) -> (&Path, &Table) {
        match cell.sub.checked_sub(1).and_then(|i| self.extra.get(i)).and_then(|sub| sub.base.as_ref()) {
            Some((path, table)) => (path, table),
            None => (&self.base_path, &self.base),
        }
    }

    /// The train config of `cell`: its base config with the cell's values set and `name` set to its id.
    pub fn cell_config(&self, cell: &Cell) -> anyhow::Result<Table> {
        let (base_path, base) = self.base_of(cell);
        let mut table = base.clone();
        let set = cell.sub.checked_sub(1).and_then(|i| self.extra.get(i)).map_or(&[][..], |sub| &sub.set[..]);
        for (key, value) in set {
            set_dotted(&mut table, key, value.clone()).map_err(|e| {
                anyhow!(
                    "grid config {}: set {key}: {e} in the base config {}",
                    self.path.display(),
                    base_path.display()
                )
            })?;
        }
        for (key, value) in &cell.values {
            set_dotted(&mut table, config_key(key), value.clone()).map_err(|e| {
                anyhow!(
                    "grid config {}: axis {key}: {e} in the base config {}",
                    self.path.display(),
                    base_path.display()
                )
            })?;
        }
        table.insert("name".to_owned(), Value::String(cell.id.clone()));
        Ok(table)
    }

    /// The manifest `grid.json` of these cells; `config` is the grid file as the user named it.
    pub fn manifest(&self, cells: &[Cell], config: &str) -> Manifest {
        let mut axes: Vec<String> = Vec::new();
        for cell in cells {
            for (key, _) in &cell.values {
                if !axes.contains(key) {
                    axes.push(key.clone());
                }
            }
        }
        axes.sort_by_key(|k| axis_rank(k));
        let cells = cells
            .iter()
            .map(|c| ManifestCell {
                id: c.id.clone(),
                axes: c.values.iter().map(|(k, v)| (k.clone(), value_text(v))).collect(),
            })
            .collect();
        Manifest { name: self.name.clone(), config: config.to_owned(), axes, cells }
    }
}

/// The config key an axis sets: a shorthand's key, or the axis itself.
pub fn config_key(axis: &str) -> &str {
    SHORTHANDS.iter().find(|(short, _)| *short == axis).map_or(axis, |(_, key)| key)
}

/// The cartesian product of `axes`, first axis outermost. No axes give one cell, the base config itself, whose
/// id is `base`.
pub fn expand(axes: &[Axis]) -> Vec<Cell> {
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut combo = prefix.clone();
                    combo.push((axis.key.clone(), v.clone()));
                    combo
                })
            })
            .collect();
    }
    combos.into_iter().map(|values| Cell { id: cell_id(&values), values, sub: 0 }).collect()
}

/// The id of a cell with these (axis, value) pairs, in the order given.
pub fn cell_id(values: &[(String, Value)]) -> String {
    if values.is_empty() {
        return "base".to_owned();
    }
    let parts: Vec<String> = values
        .iter()
        .map(|(key, value)| match key.as_str() {
            "seed" => format!("s{}", value_text(value)),
            "env" | "student" | "method" => value_text(value),
            _ => format!("{key}={}", value_text(value)),
        })
        .collect();
    parts.join("-").chars().map(|c| if c.is_ascii_alphanumeric() || "._=+-".contains(c) { c } else { '_' }).collect()
}

/// A value as plain text: strings without quotes, numbers and booleans as TOML writes them.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets the dotted `key` in `table` to `value`, creating missing tables on the way. An integer replacing a float
/// becomes a float, so that `lr = [1, 2]` does not turn a float setting into an integer one.
pub fn set_dotted(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, path) = parts.split_last().expect("split yields at least one part");
    let mut current = table;
    for (depth, part) in path.iter().enumerate() {
        let entry = current.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            other => {
                return Err(format!("`{}` is {}, not a table", parts[..=depth].join("."), type_name(other)));
            }
        };
    }
    let value = match (current.get(*last), value) {
        (Some(Value::Float(_)), Value::Integer(i)) => Value::Float(i as f64),
        (_, value) => value,
    };
    current.insert(last.to_string(), value);
    Ok(())
}

/// Where the run in `dir` stands.
pub fn cell_state(dir: &Path) -> CellState {
    let finished = fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|summary| summary["status"] == "finished");
    if finished {
        CellState::Finished
    } else if dir.join("metrics.jsonl").exists() || dir.join("checkpoints").is_dir() {
        CellState::Partial
    } else {
        CellState::Fresh
    }
}

/// The child process that trains one cell: `EXE [--plugin P]... train --config CONFIG --out OUT [--resume]`.
/// Its standard streams are left to the caller.
pub fn train_command(exe: &Path, plugins: &[PathBuf], config: &Path, out: &Path, resume: bool) -> Command {
    let mut command = Command::new(exe);
    for plugin in plugins {
        command.arg("--plugin").arg(plugin);
    }
    command.arg("train").arg("--config").arg(config).arg("--out").arg(out);
    if resume {
        command.arg("--resume");
    }
    command
}

/// One cell to train: its id, its directory (where `log.txt` and `failed` go) and the command.
#[derive(Debug)]
pub struct Job {
    /// The cell id.
    pub id: String,
    /// The cell directory.
    pub dir: PathBuf,
    /// The child process to run.
    pub command: Command,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The cell id.
    pub id: String,
    /// Whether the child exited with status 0.
    pub success: bool,
    /// The exit status, or why the child did not start.
    pub status: String,
    /// The last lines of the cell's `log.txt` (empty on success).
    pub log_tail: String,
}

/// What the runner reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// A job started; the ids of all running jobs follow.
    Started(&'a str, &'a [String]),
    /// A job ended; the ids of the jobs still running follow.
    Ended(&'a Outcome, &'a [String]),
}

/// Lines of a failing cell's log shown.
const LOG_TAIL_LINES: usize = 20;

/// Runs `jobs` in order, at most `parallel` at once, each with stdout and stderr appended to `<dir>/log.txt`
/// (after a header line naming the command). A failed job writes its status to `<dir>/failed`, which a later
/// start of the cell removes. Returns the outcomes in the order the jobs ended.
pub fn run_jobs(jobs: Vec<Job>, parallel: usize, mut on_event: impl FnMut(Event)) -> Vec<Outcome> {
    let mut pending = jobs.into_iter();
    let mut running: Vec<(Job, Child)> = Vec::new();
    let mut outcomes = Vec::new();
    loop {
        while running.len() < parallel.max(1) {
            let Some(mut job) = pending.next() else { break };
            // Another process (a second `atod grid` over the same cells, say) may have finished it meanwhile.
            if cell_state(&job.dir) == CellState::Finished {
                let outcome = Outcome {
                    id: job.id.clone(),
                    success: true,
                    status: "finished meanwhile by another process; not run again".to_owned(),
                    log_tail: String::new(),
                };
                on_event(Event::Ended(&outcome, &running_ids(&running)));
                outcomes.push(outcome);
                continue;
            }
            match start(&mut job) {
                Ok(child) => {
                    running.push((job, child));
                    let ids = running_ids(&running);
                    on_event(Event::Started(&running.last().expect("just pushed").0.id, &ids));
                }
                Err(err) => {
                    let outcome = finish(&job, false, format!("did not start: {err:#}"));
                    on_event(Event::Ended(&outcome, &running_ids(&running)));
                    outcomes.push(outcome);
                }
            }
        }
        if running.is_empty() {
            return outcomes;
        }
        let mut i = 0;
        let mut ended_any = false;
        while i < running.len() {
            let result = running[i].1.try_wait();
            let ended = match result {
                Ok(None) => None,
                Ok(Some(status)) => Some((status.success(), status.to_string())),
                Err(err) => Some((false, format!("could not be waited for: {err}"))),
            };
            match ended {
                None => i += 1,
                Some((success, status)) => {
                    let (job, _) = running.remove(i);
                    let outcome = finish(&job, success, status);
                    on_event(Event::Ended(&outcome, &running_ids(&running)));
                    outcomes.push(outcome);
                    ended_any = true;
                }
            }
        }
        if !ended_any {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn running_ids(running: &[(Job, Child)]) -> Vec<String> {
    running.iter().map(|(job, _)| job.id.clone()).collect()
}

/// Opens the job's log, writes the header line and spawns the child with its output going to the log.
fn start(job: &mut Job) -> anyhow::Result<Child> {
    fs::create_dir_all(&job.dir).with_context(|| format!("creating {}", job.dir.display()))?;
    let failed = job.dir.join("failed");
    if failed.exists() {
        fs::remove_file(&failed).with_context(|| format!("removing {}", failed.display()))?;
    }
    let log_path = job.dir.join("log.txt");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // A cell another process has started since the job was planned continues from its checkpoint.
    if cell_state(&job.dir) == CellState::Partial
        && job.command.get_args().any(|a| a == "train")
        && !job.command.get_args().any(|a| a == "--resume")
    {
        job.command.arg("--resume");
    }
    writeln!(log, "== atod grid, unix time {}: {:?}", since_epoch.as_secs(), job.command)?;
    let stderr = log.try_clone()?;
    job.command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .spawn()
        .with_context(|| format!("running {:?}", job.command.get_program()))
}

fn finish(job: &Job, success: bool, status: String) -> Outcome {
    let log_tail = if success {
        String::new()
    } else {
        // A failure to record the failure must not hide it: the outcome still says what happened.
        let _ = File::create(job.dir.join("failed")).and_then(|mut f| writeln!(f, "{status}"));
        tail(&job.dir.join("log.txt"), LOG_TAIL_LINES)
    };
    Outcome { id: job.id.clone(), success, status, log_tail }
}

/// The last `n` lines of the file at `path` (empty when it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads and checks the axes of one `[axes]` table (named `section` in errors).
fn parse_axes(table: &Table, section: &str, path: &Path) -> anyhow::Result<Vec<Axis>> {
    let file = path.display();
    let mut axes: Vec<Axis> = Vec::new();
    for (raw_key, value) in table {
        // The long forms of the shorthands are the shorthands, so that `env` and `"env.name"` cannot both be set.
        let key = SHORTHANDS.iter().find(|(_, long)| long == raw_key).map_or(raw_key.as_str(), |(short, _)| short);
        if key.split('.').any(str::is_empty) {
            bail!("grid config {file}: {section}.\"{raw_key}\": not a dotted key (an empty part)");
        }
        if key == "name" {
            bail!("grid config {file}: {section}.name: the name of a cell's run is its id and cannot be an axis");
        }
        if axes.iter().any(|a| a.key == key) {
            bail!("grid config {file}: {section}.\"{raw_key}\": the axis {key} is given twice");
        }
        let Value::Array(values) = value else {
            bail!("grid config {file}: {section}.\"{raw_key}\": expected a list of values, got {}", type_name(value));
        };
        if values.is_empty() {
            bail!("grid config {file}: {section}.\"{raw_key}\": the list of values is empty");
        }
        for v in values {
            let ok = match key {
                "seed" => matches!(v, Value::Integer(i) if *i >= 0),
                "env" | "student" | "method" => matches!(v, Value::String(_)),
                _ => matches!(v, Value::String(_) | Value::Integer(_) | Value::Float(_) | Value::Boolean(_)),
            };
            if !ok {
                let expected = match key {
                    "seed" => "non-negative integers",
                    "env" | "student" | "method" => "strings",
                    _ => "strings, integers, floats or booleans",
                };
                bail!("grid config {file}: {section}.\"{raw_key}\": expected {expected}, got {v}");
            }
        }
        axes.push(Axis { key: key.to_owned(), values: values.clone() });
    }
    sort_axes(&mut axes);
    Ok(axes)
}

/// Orders axes for ids: the shorthands in their order, then other keys alphabetically.
fn sort_axes(axes: &mut [Axis]) {
    axes.sort_by_key(|a| axis_rank(&a.key));
}

fn axis_rank(key: &str) -> (usize, String) {
    let rank = SHORTHANDS.iter().position(|(short, _)| *short == key).unwrap_or(SHORTHANDS.len());
    (rank, key.to_owned())
}

fn describe(values: &[(String, Value)]) -> String {
    values.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "quickstart"
method = "atod"
seed = 0
[env]
name = "alfworld"
[student]
preset = "student-s"
[train]
steps = 10
lr = 1e-4
"#;

    fn parse(grid: &str) -> anyhow::Result<GridConfig> {
        GridConfig::parse(grid, Path::new("configs/g.toml"), |base| {
            assert_eq!(base, Path::new("quickstart.toml"));
            Ok((PathBuf::from("configs/quickstart.toml"), toml::from_str(BASE).unwrap()))
        })
    }

    fn ids(grid: &str) -> Vec<String> {
        parse(grid).unwrap().cells().unwrap().into_iter().map(|c| c.id).collect()
    }

    fn error(grid: &str) -> String {
        format!("{:#}", parse(grid).unwrap_err())
    }

    const HEAD: &str = "[grid]\nname = \"g\"\nbase = \"quickstart.toml\"\n";

    #[test]
    fn cartesian_expansion_in_stable_order_with_readable_ids() {
        let grid = format!(
            "{HEAD}[axes]\nseed = [0, 1]\n\"train.steps\" = [4]\nmethod = [\"atod\", \"grpo\"]\nenv = [\"alfworld\", \"webshop\"]\nstudent = [\"student-s\"]\n"
        );
        assert_eq!(
            ids(&grid),
            [
                "alfworld-student-s-atod-s0-train.steps=4",
                "alfworld-student-s-atod-s1-train.steps=4",
                "alfworld-student-s-grpo-s0-train.steps=4",
                "alfworld-student-s-grpo-s1-train.steps=4",
                "webshop-student-s-atod-s0-train.steps=4",
                "webshop-student-s-atod-s1-train.steps=4",
                "webshop-student-s-grpo-s0-train.steps=4",
                "webshop-student-s-grpo-s1-train.steps=4",
            ]
        );
        let config = parse(&grid).unwrap();
        assert_eq!((config.parallel, config.out.clone()), (1, PathBuf::from("runs/g")));
    }

    #[test]
    fn ids_of_odd_values_and_of_no_axes() {
        assert_eq!(ids(HEAD), ["base"]);
        let grid = format!("{HEAD}[axes]\n\"loss.kappa\" = [\"linear(1, 0)\", 0.5]\n\"train.eval\" = [true]\n");
        assert_eq!(ids(&grid), ["loss.kappa=linear_1__0_-train.eval=true", "loss.kappa=0.5-train.eval=true"]);
    }

    #[test]
    fn extra_sub_grids_replace_axes_and_skip_repeated_cells() {
        let grid = format!(
            "{HEAD}[axes]\nenv = [\"alfworld\", \"webshop\"]\nmethod = [\"atod\"]\nseed = [0, 1]\n\
             [[grid.extra]]\naxes = {{ method = [\"atod\", \"atod-const\"], env = [\"alfworld\"] }}\n\
             [[grid.extra]]\naxes = {{ env = [\"searchqa\"], seed = [7], \"train.steps\" = [2] }}\n"
        );
        assert_eq!(
            ids(&grid),
            [
                "alfworld-atod-s0",
                "alfworld-atod-s1",
                "webshop-atod-s0",
                "webshop-atod-s1",
                "alfworld-atod-const-s0",
                "alfworld-atod-const-s1",
                "searchqa-atod-s7-train.steps=2",
            ]
        );
    }

    #[test]
    fn run_order_sorts_the_training_but_not_the_cells() {
        let grid = "[grid]\nname = \"g\"\nbase = \"quickstart.toml\"\nrun_order = [\"student\"]\n\
             [axes]\nenv = [\"alfworld\", \"webshop\"]\nstudent = [\"student-s\", \"student-m\"]\n\
             [[grid.extra]]\naxes = { env = [\"alfworld\"], method = [\"opd\"] }\n";
        let config = parse(grid).unwrap();
        let cells = config.cells().unwrap();
        let listed: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            listed,
            [
                "alfworld-student-s",
                "alfworld-student-m",
                "webshop-student-s",
                "webshop-student-m",
                "alfworld-student-s-opd",
                "alfworld-student-m-opd"
            ]
        );
        let trained: Vec<&str> = config.training_order(&cells).iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            trained,
            [
                "alfworld-student-s",
                "webshop-student-s",
                "alfworld-student-s-opd",
                "alfworld-student-m",
                "webshop-student-m",
                "alfworld-student-m-opd"
            ]
        );
        let bad = "[grid]\nname = \"g\"\nbase = \"quickstart.toml\"\nrun_order = [\"size\"]\n";
        assert!(error(bad).contains("grid.run_order names `size`, which is not an axis"), "{}", error(bad));
    }

    #[test]
    fn a_sub_grids_set_keys_reach_its_cells_but_not_their_ids() {
        let grid = format!(
            "{HEAD}[axes]\nmethod = [\"opd\"]\n\
             [[grid.extra]]\naxes = {{ method = [\"atod\"] }}\nset = {{ \"loss.kappa\" = \"linear(1, 0.1, total)\", \"train.steps\" = 3 }}\n"
        );
        let config = parse(&grid).unwrap();
        let cells = config.cells().unwrap();
        assert_eq!(cells.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["opd", "atod"]);
        let (opd, atod) = (config.cell_config(&cells[0]).unwrap(), config.cell_config(&cells[1]).unwrap());
        assert!(opd.get("loss").is_none());
        assert_eq!(opd["train"]["steps"].as_integer(), Some(10));
        assert_eq!(atod["loss"]["kappa"].as_str(), Some("linear(1, 0.1, total)"));
        assert_eq!(atod["train"]["steps"].as_integer(), Some(3));

        // A key both set and an axis is refused; so is one cell id given two configs.
        let both = format!("{HEAD}[[grid.extra]]\naxes = {{ seed = [1] }}\nset = {{ seed = 2 }}\n");
        assert!(error(&both).contains("both sets `seed` and has it as an axis"), "{}", error(&both));
        let twice = format!(
            "{HEAD}[axes]\nmethod = [\"atod\"]\n[[grid.extra]]\naxes = {{ method = [\"atod\"] }}\nset = {{ \"train.steps\" = 3 }}\n"
        );
        assert!(error(&twice).contains("in two sub-grids that give it different configs"), "{}", error(&twice));
    }

    #[test]
    fn a_sub_grid_with_its_own_base_builds_its_cells_from_it() {
        let grid = format!(
            "{HEAD}[axes]\nenv = [\"alfworld\"]\nseed = [0, 1]\n\
             [[grid.extra]]\nbase = \"webshop.toml\"\naxes = {{ env = [\"webshop\"] }}\n"
        );
        let config = GridConfig::parse(&grid, Path::new("configs/g.toml"), |base| {
            let text = match base.to_str() {
                Some("quickstart.toml") => BASE.to_owned(),
                Some("webshop.toml") => "name = \"w\"\n[prompt]\nmax_new_tokens = 80\n".to_owned(),
                other => panic!("unexpected base {other:?}"),
            };
            Ok((Path::new("configs").join(base), toml::from_str(&text).unwrap()))
        })
        .unwrap();
        let cells = config.cells().unwrap();
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["alfworld-s0", "alfworld-s1", "webshop-s0", "webshop-s1"]);
        let alfworld = config.cell_config(&cells[0]).unwrap();
        let webshop = config.cell_config(&cells[3]).unwrap();
        assert_eq!(alfworld["train"]["steps"].as_integer(), Some(10));
        assert!(webshop.get("train").is_none(), "the webshop cell must not inherit the main base's keys");
        assert_eq!(webshop["prompt"]["max_new_tokens"].as_integer(), Some(80));
        assert_eq!((webshop["env"]["name"].as_str(), webshop["seed"].as_integer()), (Some("webshop"), Some(1)));
        assert_eq!(webshop["name"].as_str(), Some("webshop-s1"));
        assert_eq!(config.base_of(&cells[2]).0, Path::new("configs/webshop.toml"));

        // The same cell reached from two bases is ambiguous.
        let clash =
            format!("{HEAD}[axes]\nenv = [\"webshop\"]\n[[grid.extra]]\nbase = \"webshop.toml\"\naxes = {{}}\n");
        let err = GridConfig::parse(&clash, Path::new("configs/g.toml"), |base| {
            Ok((base.to_owned(), toml::from_str(if base == Path::new("quickstart.toml") { BASE } else { "" }).unwrap()))
        })
        .and_then(|c| c.cells())
        .unwrap_err();
        assert!(format!("{err:#}").contains("in two sub-grids that give it different configs"), "{err:#}");
    }

    #[test]
    fn cell_config_overrides_dotted_keys_creating_tables_and_keeping_types() {
        let grid = format!(
            "{HEAD}[axes]\nenv = [\"webshop\"]\nseed = [3]\n\"train.lr\" = [1]\n\"train.steps\" = [4]\n\"loss.kl.coef\" = [0.5]\n\"env.config.preset\" = [\"mini\"]\n"
        );
        let config = parse(&grid).unwrap();
        let cells = config.cells().unwrap();
        let table = config.cell_config(&cells[0]).unwrap();
        let expected: Table = toml::from_str(
            r#"
name = "webshop-s3-env.config.preset=mini-loss.kl.coef=0.5-train.lr=1-train.steps=4"
method = "atod"
seed = 3
[env]
name = "webshop"
config = { preset = "mini" }
[student]
preset = "student-s"
[train]
steps = 4
lr = 1.0
[loss.kl]
coef = 0.5
"#,
        )
        .unwrap();
        assert_eq!(table, expected);
        assert!(
            matches!(table["train"]["lr"], Value::Float(_)) && matches!(table["train"]["steps"], Value::Integer(4))
        );
    }

    #[test]
    fn set_dotted_refuses_to_go_through_a_value() {
        let mut table: Table = toml::from_str(BASE).unwrap();
        assert_eq!(
            set_dotted(&mut table, "train.steps.max", Value::Integer(1)),
            Err("`train.steps` is an integer, not a table".into())
        );
        set_dotted(&mut table, "a.b.c", Value::Boolean(true)).unwrap();
        assert_eq!(table["a"]["b"]["c"], Value::Boolean(true));
    }

    #[test]
    fn config_errors_name_the_key_and_the_file() {
        for (grid, expected) in [
            (format!("{HEAD}paralel = 2\n"), ["configs/g.toml", "unknown field `paralel`"]),
            (format!("{HEAD}parallel = 0\n"), ["configs/g.toml", "grid.parallel must be at least 1"]),
            ("[grid]\nname = \"g\"\n".to_owned(), ["configs/g.toml", "missing field `base`"]),
            (format!("{HEAD}[axes]\nseed = []\n"), ["configs/g.toml: axes.\"seed\"", "empty"]),
            (format!("{HEAD}[axes]\nseed = [\"a\"]\n"), ["axes.\"seed\"", "expected non-negative integers"]),
            (format!("{HEAD}[axes]\nmethod = \"atod\"\n"), ["axes.\"method\"", "expected a list of values"]),
            (format!("{HEAD}[axes]\nenv = [\"a\"]\n\"env.name\" = [\"b\"]\n"), ["axes.\"env.name\"", "given twice"]),
            (format!("{HEAD}[axes]\n\"x\" = [[1]]\n"), ["axes.\"x\"", "expected strings, integers"]),
            (format!("{HEAD}[[grid.extra]]\naxes = {{ seed = [] }}\n"), ["grid.extra[0].axes.\"seed\"", "empty"]),
            (format!("{HEAD}[[grid.extra]]\naxis = {{ seed = [1] }}\n"), ["configs/g.toml", "unknown field `axis`"]),
            (
                format!("{HEAD}[axes]\n\"train.steps.max\" = [1]\n"),
                ["configs/g.toml: axis train.steps.max: `train.steps` is an integer", "configs/quickstart.toml"],
            ),
        ] {
            let message = error(&grid);
            for part in expected {
                assert!(message.contains(part), "{part:?} not in {message:?}");
            }
        }
    }

    /// A base config's relative checkpoint and tokenizer paths are resolved beside it, since the cells' configs
    /// are written elsewhere; paths with nothing beside the base are left for the working directory.
    #[test]
    fn a_base_configs_checkpoint_paths_resolve_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("configs/qwen")).unwrap();
        std::fs::write(
            dir.path().join("configs/base.toml"),
            "name = \"b\"\n[teacher]\ncheckpoint = \"qwen\"\n[student]\ncheckpoint = \"elsewhere\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("configs/g.toml"), "[grid]\nname = \"g\"\nbase = \"base.toml\"\n").unwrap();
        let grid = GridConfig::load(&dir.path().join("configs/g.toml")).unwrap();
        let path = |table: &str| grid.base[table]["checkpoint"].as_str().unwrap().to_owned();
        assert_eq!(Path::new(&path("teacher")), dir.path().join("configs/qwen").canonicalize().unwrap());
        assert_eq!(path("student"), "elsewhere");
    }

    #[test]
    fn manifest_lists_every_axis_in_id_order() {
        let grid = format!(
            "{HEAD}[axes]\nseed = [0]\nmethod = [\"atod\"]\n[[grid.extra]]\naxes = {{ \"train.steps\" = [2] }}\n"
        );
        let config = parse(&grid).unwrap();
        let manifest = config.manifest(&config.cells().unwrap(), "configs/g.toml");
        assert_eq!(manifest.axes, ["method", "seed", "train.steps"]);
        assert_eq!(manifest.cells[1].id, "atod-s0-train.steps=2");
        assert_eq!(manifest.cells[1].axes["train.steps"], "2");
    }

    #[test]
    fn the_child_command_and_the_cell_state() {
        let command = train_command(
            Path::new("/bin/atod"),
            &[PathBuf::from("p.so")],
            Path::new("out/cells/a/cell.toml"),
            Path::new("out/cells/a"),
            true,
        );
        assert_eq!(command.get_program(), "/bin/atod");
        let args: Vec<_> = command.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            ["--plugin", "p.so", "train", "--config", "out/cells/a/cell.toml", "--out", "out/cells/a", "--resume"]
        );

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cell_state(dir.path()), CellState::Fresh);
        fs::write(dir.path().join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
        assert_eq!(cell_state(dir.path()), CellState::Partial);
        fs::write(dir.path().join("summary.json"), r#"{"status": "running"}"#).unwrap();
        assert_eq!(cell_state(dir.path()), CellState::Partial);
        fs::write(dir.path().join("summary.json"), r#"{"status": "finished"}"#).unwrap();
        assert_eq!(cell_state(dir.path()), CellState::Finished);
    }

    #[cfg(unix)]
    #[test]
    fn the_runner_runs_jobs_in_parallel_logs_them_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let job = |id: &str, script: &str| {
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            Job { id: id.to_owned(), dir: dir.path().join(id), command }
        };
        fs::create_dir_all(dir.path().join("bad")).unwrap();
        fs::write(dir.path().join("bad/failed"), "old").unwrap();
        let jobs = vec![
            job("ok", "echo out; echo err >&2"),
            job("bad", "echo line1; echo boom >&2; exit 3"),
            job("slow", "sleep 0.3; echo done"),
        ];
        let mut most_running = 0;
        let outcomes = run_jobs(jobs, 2, |event| {
            if let Event::Started(_, running) = event {
                most_running = most_running.max(running.len());
            }
        });
        assert_eq!(most_running, 2);
        let mut ended: Vec<(&str, bool)> = outcomes.iter().map(|o| (o.id.as_str(), o.success)).collect();
        ended.sort();
        assert_eq!(ended, [("bad", false), ("ok", true), ("slow", true)]);
        let bad = outcomes.iter().find(|o| o.id == "bad").unwrap();
        assert!(bad.status.contains('3') && bad.log_tail.ends_with("line1\nboom"), "{bad:?}");
        assert!(fs::read_to_string(dir.path().join("bad/failed")).unwrap().contains('3'));
        let log = fs::read_to_string(dir.path().join("ok/log.txt")).unwrap();
        assert!(log.starts_with("== atod grid") && log.ends_with("out\nerr\n"), "{log}");
        assert!(!dir.path().join("ok/failed").exists());

        // A cell finished by another process after the job was planned is not run again.
        fs::create_dir_all(dir.path().join("done")).unwrap();
        fs::write(dir.path().join("done/summary.json"), r#"{"status": "finished"}"#).unwrap();
        let outcomes = run_jobs(vec![job("done", "echo ran > ran.txt; exit 1")], 1, |_| {});
        assert!(outcomes[0].success && outcomes[0].status.contains("finished meanwhile"), "{outcomes:?}");
        assert!(!dir.path().join("done/log.txt").exists());
    }
}
