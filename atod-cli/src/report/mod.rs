//! Reports of grids and runs (`atod report`, and the end of `atod grid`): `results.csv`, `results.md` and SVG
//! learning curves, read from the run directories alone, so that any report can be regenerated from disk.
//!
//! A run directory follows the contract of `atod train --out` (`config.toml`, `metrics.jsonl`, `evals.jsonl`,
//! `summary.json` once finished); a grid directory holds one run per cell under `cells/<id>/` and the manifest
//! `grid.json` (see `crate::grid`). Every number of `results.md` is computed from the rows written to
//! `results.csv` (the final, initial and teacher success rates of finished cells), never from other files; the
//! plots come from the cells' `evals.jsonl`.

pub mod paper;
pub mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::grid::{self, CellState, Manifest};
use crate::plot::{svg_line_chart, SvgChart, SvgSeries};

/// The columns every grid report has, whatever its axes; other axes follow them.
pub const STANDARD_COLUMNS: [&str; 4] = ["env", "student", "method", "seed"];

/// Where a cell stands, as the report sees it on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `summary.json` says finished.
    Finished,
    /// Its last attempt failed (the grid wrote `failed`).
    Failed,
    /// Started, not finished, not known to have failed (running, or interrupted).
    Partial,
    /// Not started.
    Pending,
}

impl Status {
    /// The status as written in results.csv.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Failed => "failed",
            Status::Partial => "partial",
            Status::Pending => "pending",
        }
    }
}

/// One cell of a grid: one row of results.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The cell id.
    pub cell: String,
    /// The value of each column of `Grid::columns`, in that order ("" when unknown).
    pub axes: Vec<String>,
    /// The cell's status.
    pub status: Status,
    /// Success rate of the student before training (finished cells only, like the following).
    pub initial_success_rate: Option<f64>,
    /// Success rate of the student after training.
    pub final_success_rate: Option<f64>,
    /// Success rate of the teacher.
    pub teacher_success_rate: Option<f64>,
    /// Training steps.
    pub steps: Option<u64>,
    /// Wall time of the run.
    pub wall_seconds: Option<f64>,
    /// The first and the last evaluation's other measures (finished cells only): what success alone hides when
    /// it is 0 everywhere.
    pub initial_eval: Option<EvalMeasures>,
    /// See `initial_eval`.
    pub final_eval: Option<EvalMeasures>,
}

/// An evaluation's measures besides its success rate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalMeasures {
    /// Mean final score (the environment's partial credit: WebShop's attribute match, say).
    pub mean_score: f64,
    /// Fraction of responses the environment could not parse as an action.
    pub invalid_action_rate: f64,
}

/// How a measure is read off `EvalMeasures`.
pub type Measure = fn(&EvalMeasures) -> f64;

/// The measures of `results.csv` beyond success, in column order, each with how it is read off `EvalMeasures`.
pub const MEASURE_COLUMNS: [(&str, Measure); 2] =
    [("mean_score", |m| m.mean_score), ("invalid_action_rate", |m| m.invalid_action_rate)];

/// One evaluation of a run: a point of its learning curve.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    /// The training step (0 is the student before training).
    pub step: u64,
    /// The split evaluated.
    pub split: String,
    /// Fraction of episodes won.
    pub success_rate: f64,
    /// The other measures, when the line has them.
    pub measures: Option<EvalMeasures>,
}

/// A grid directory, read.
#[derive(Debug, Clone)]
pub struct Grid {
    /// The directory.
    pub dir: PathBuf,
    /// The grid's name (the manifest's, else the directory's).
    pub name: String,
    /// The grid file as given to `atod grid`, when the manifest records it.
    pub config: Option<String>,
    /// The axis columns: `STANDARD_COLUMNS`, then the manifest's other axes.
    pub columns: Vec<String>,
    /// One row per cell: the manifest's cells in order, then cells found only on disk, by id.
    pub rows: Vec<Row>,
    /// Each cell's evaluations, by cell id.
    pub evals: BTreeMap<String, Vec<EvalPoint>>,
}

/// What a grid report wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// results.csv.
    pub csv: PathBuf,
    /// results.md.
    pub markdown: PathBuf,
    /// The SVG plots.
    pub plots: Vec<PathBuf>,
}

/// Whether `dir` is a grid directory (it has `cells/` or `grid.json`) rather than a run directory.
pub fn is_grid_dir(dir: &Path) -> bool {
    dir.join("cells").is_dir() || dir.join("grid.json").is_file()
}

/// Reads the grid directory `dir`.
pub fn load_grid(dir: &Path) -> anyhow::Result<Grid> {
    let manifest_path = dir.join("grid.json");
    let manifest: Option<Manifest> = if manifest_path.is_file() {
        let text =
            fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
        Some(serde_json::from_str(&text).with_context(|| format!("reading {}", manifest_path.display()))?)
    } else {
        None
    };
    let mut columns: Vec<String> = STANDARD_COLUMNS.iter().map(|c| c.to_string()).collect();
    let mut ids: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    if let Some(manifest) = &manifest {
        columns.extend(manifest.axes.iter().filter(|a| !STANDARD_COLUMNS.contains(&a.as_str())).cloned());
        ids.extend(manifest.cells.iter().map(|c| (c.id.clone(), c.axes.clone())));
    }
    let cells_dir = dir.join("cells");
    if cells_dir.is_dir() {
        let mut on_disk: Vec<String> = fs::read_dir(&cells_dir)
            .with_context(|| format!("listing {}", cells_dir.display()))?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .filter(|id| !ids.iter().any(|(known, _)| known == id))
            .collect();
        on_disk.sort();
        ids.extend(on_disk.into_iter().map(|id| (id, BTreeMap::new())));
    }
    let mut rows = Vec::new();
    let mut evals = BTreeMap::new();
    for (id, axes) in ids {
        let cell_dir = cells_dir.join(&id);
        let mut row = read_row(&cell_dir, &id, &columns, &axes)?;
        let cell_evals = read_evals(&cell_dir.join("evals.jsonl"))?;
        if row.status == Status::Finished {
            // The first and the last evaluation of the split evaluated first (the one the success rates are of).
            let split = cell_evals.first().map(|e| e.split.clone());
            let of_split: Vec<&EvalPoint> = cell_evals.iter().filter(|e| Some(&e.split) == split.as_ref()).collect();
            row.initial_eval = of_split.iter().filter(|e| e.step == 0).find_map(|e| e.measures);
            row.final_eval = of_split.iter().max_by_key(|e| e.step).and_then(|e| e.measures);
        }
        rows.push(row);
        evals.insert(id, cell_evals);
    }
    let name = match &manifest {
        Some(m) => m.name.clone(),
        None => dir.file_name().map_or_else(|| "grid".to_owned(), |n| n.to_string_lossy().into_owned()),
    };
    Ok(Grid { dir: dir.to_owned(), name, config: manifest.map(|m| m.config), columns, rows, evals })
}

/// Writes results.csv, results.md and the plots of the grid in `dir`, and returns the grid as read.
pub fn write_grid_report(dir: &Path) -> anyhow::Result<(Grid, Written)> {
    let grid = load_grid(dir)?;
    let csv = dir.join("results.csv");
    write(&csv, &render_csv(&grid.columns, &grid.rows))?;
    let mut plots = Vec::new();
    let mut plot_names = Vec::new();
    for (name, svg) in render_plots(&grid) {
        let path = dir.join(&name);
        write(&path, &svg)?;
        plots.push(path);
        plot_names.push(name);
    }
    let markdown = dir.join("results.md");
    write(&markdown, &render_markdown(&grid, &plot_names))?;
    Ok((grid, Written { csv, markdown, plots }))
}

/// The grid's invocations as `atod grid` logged them in `grid-log.jsonl` (none when it does not exist).
pub fn read_grid_log(dir: &Path) -> anyhow::Result<Vec<Value>> {
    read_jsonl(&dir.join("grid-log.jsonl"))
}

/// results.csv: a header and one line per row (RFC 4180 quoting; empty fields for unknown values; numbers in
/// full precision, so that results.md can be recomputed from it).
pub fn render_csv(columns: &[String], rows: &[Row]) -> String {
    let mut header = vec!["cell".to_owned()];
    header.extend(columns.iter().cloned());
    header.extend(
        ["status", "initial_success_rate", "final_success_rate", "teacher_success_rate", "steps", "wall_seconds"]
            .map(str::to_owned),
    );
    for (name, _) in MEASURE_COLUMNS {
        header.push(format!("initial_{name}"));
        header.push(format!("final_{name}"));
    }
    let mut out = csv_line(&header);
    for row in rows {
        let mut fields = vec![row.cell.clone()];
        fields.extend(row.axes.iter().cloned());
        fields.push(row.status.as_str().to_owned());
        for x in [row.initial_success_rate, row.final_success_rate, row.teacher_success_rate] {
            fields.push(x.map_or_else(String::new, |x| x.to_string()));
        }
        fields.push(row.steps.map_or_else(String::new, |s| s.to_string()));
        fields.push(row.wall_seconds.map_or_else(String::new, |s| s.to_string()));
        for (_, get) in MEASURE_COLUMNS {
            for eval in [&row.initial_eval, &row.final_eval] {
                fields.push(eval.as_ref().map_or_else(String::new, |m| get(m).to_string()));
            }
        }
        out.push_str(&csv_line(&fields));
    }
    out
}

/// The rows as one JSON array of objects (the document of `--json`).
pub fn rows_json(columns: &[String], rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| {
                let mut object = serde_json::Map::new();
                object.insert("cell".into(), json!(row.cell));
                for (column, value) in columns.iter().zip(&row.axes) {
                    object.insert(column.clone(), json!(value));
                }
                object.insert("status".into(), json!(row.status.as_str()));
                object.insert("initial_success_rate".into(), json!(row.initial_success_rate));
                object.insert("final_success_rate".into(), json!(row.final_success_rate));
                object.insert("teacher_success_rate".into(), json!(row.teacher_success_rate));
                object.insert("steps".into(), json!(row.steps));
                object.insert("wall_seconds".into(), json!(row.wall_seconds));
                for (name, get) in MEASURE_COLUMNS {
                    object.insert(format!("initial_{name}"), json!(row.initial_eval.as_ref().map(get)));
                    object.insert(format!("final_{name}"), json!(row.final_eval.as_ref().map(get)));
                }
                Value::Object(object)
            })
            .collect(),
    )
}

/// results.md: the status of the cells, the average over environments in the layout of the ATOD paper's
/// Table 1 (rows = methods, columns = students), and per environment its teacher, a table of (student, method)
/// rows and its plots. `plots` are the plot file names to link.
pub fn render_markdown(grid: &Grid, plots: &[String]) -> String {
    let col = |name: &str| grid.columns.iter().position(|c| c == name).expect("standard columns are present");
    let (env_col, student_col, seed_col) = (col("env"), col("student"), col("seed"));
    // The columns that tell rows of one environment's table apart; seeds are what a row averages over.
    let row_cols: Vec<usize> = (0..grid.columns.len()).filter(|&c| c != env_col && c != seed_col).collect();
    let finished: Vec<&Row> = grid.rows.iter().filter(|r| r.status == Status::Finished).collect();
    let envs = distinct(grid.rows.iter().map(|r| r.axes[env_col].clone()));

    let mut md = format!("# Results of the grid `{}`\n\n", grid.name);
    let _ = write!(md, "Regenerate these tables and plots with `atod report {}`", grid.dir.display());
    match &grid.config {
        Some(config) => {
            let _ = writeln!(md, "; run (or resume) the whole grid with `atod grid --config {config}`.\n");
        }
        None => md.push_str(".\n\n"),
    }
    md.push_str(
        "Success rates are in percent of evaluation episodes: `final_success_rate` of results.csv (after training) \
         and `initial_success_rate` (before training) and the teacher's as the mean ± the half-width of the 95% \
         Student-t confidence interval over seeds (no interval for n = 1); `final > initial` counts the seeds whose \
         training raised success; n counts the finished seeds.\n\n",
    );
    let count = |s: Status| grid.rows.iter().filter(|r| r.status == s).count();
    let wall: f64 = finished.iter().filter_map(|r| r.wall_seconds).sum();
    let _ = writeln!(
        md,
        "Cells: {} finished, {} failed, {} partial, {} pending, of {}. Wall time: {} summed over the finished cells.\n",
        count(Status::Finished),
        count(Status::Failed),
        count(Status::Partial),
        count(Status::Pending),
        grid.rows.len(),
        format_duration(wall)
    );

    // Per environment and row key: final success by seed, initial success, teacher success.
    let key_of = |row: &Row, cols: &[usize]| -> Vec<String> { cols.iter().map(|&c| row.axes[c].clone()).collect() };
    // The teacher's success by seed (each cell evaluates the teacher on its own seed's episodes; cells of one
    // seed share that evaluation).
    let teacher_by_seed = |env: &str| -> BTreeMap<&str, f64> {
        let mut by_seed = BTreeMap::new();
        for row in finished.iter().filter(|r| r.axes[env_col] == env) {
            if let Some(x) = row.teacher_success_rate {
                by_seed.entry(row.axes[seed_col].as_str()).or_insert(x);
            }
        }
        by_seed
    };

    // The average over environments: per seed the mean over environments, over seeds the mean and interval.
    let avg_cols: Vec<usize> = row_cols.iter().copied().filter(|&c| c != student_col).collect();
    let students = distinct(grid.rows.iter().map(|r| r.axes[student_col].clone()));
    let methods = distinct(grid.rows.iter().map(|r| key_of(r, &avg_cols)));
    md.push_str("## Average over environments\n\n");
    let _ = writeln!(
        md,
        "Final success averaged over {} (for each seed the mean over the environments, then mean ± 95% CI over \
         the seeds finished in every environment).\n",
        envs.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
    );
    let avg_header: Vec<String> = avg_cols.iter().map(|&c| grid.columns[c].clone()).collect();
    let mut table = vec![[avg_header.clone(), students.iter().map(|s| display(s)).collect()].concat()];
    for method in &methods {
        let mut line = method.clone();
        for student in &students {
            let mut by_seed: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for row in finished.iter().filter(|r| &key_of(r, &avg_cols) == method && &r.axes[student_col] == student) {
                if let Some(x) = row.final_success_rate {
                    by_seed.entry(&row.axes[seed_col]).or_default().push(x);
                }
            }
            // A seed counts when every environment has it; with one row per (env, seed) its length is the count.
            let per_seed: Vec<f64> = by_seed
                .values()
                .filter(|xs| xs.len() == envs.len())
                .map(|xs| stats::mean(xs).expect("non-empty"))
                .collect();
            line.push(match per_seed.len() {
                0 => mean_ci(&per_seed),
                n => format!("{} (n={n})", mean_ci(&per_seed)),
            });
        }
        table.push(line);
    }
    // Per seed the teacher's mean over the environments, for the seeds every environment has.
    let by_env: Vec<BTreeMap<&str, f64>> = envs.iter().map(|e| teacher_by_seed(e)).collect();
    let teachers: Vec<f64> = by_env
        .first()
        .map(|first| {
            first
                .keys()
                .filter_map(|seed| {
                    let xs: Vec<f64> = by_env.iter().filter_map(|m| m.get(seed).copied()).collect();
                    (xs.len() == envs.len()).then(|| stats::mean(&xs).expect("non-empty"))
                })
                .collect()
        })
        .unwrap_or_default();
    if !teachers.is_empty() {
        let teacher = format!("{} (n={})", mean_ci(&teachers), teachers.len());
        let mut line = vec!["teacher".to_owned()];
        line.extend(std::iter::repeat_n(String::new(), avg_cols.len().saturating_sub(1)));
        line.extend(std::iter::repeat_n(teacher, students.len()));
        table.push(line);
    }
    md.push_str(&markdown_table(&table));

    for env in &envs {
        let _ = writeln!(md, "\n## {}\n", display(env));
        let env_rows: Vec<&Row> = grid.rows.iter().filter(|r| &r.axes[env_col] == env).collect();
        let teachers: Vec<f64> = teacher_by_seed(env).into_values().collect();
        match teachers.len() {
            0 => md.push_str("Teacher: no finished cell reports it yet.\n\n"),
            n => {
                let _ = writeln!(md, "Teacher: {}% success (n={n} seeds).\n", mean_ci(&teachers));
            }
        }
        let mut header: Vec<String> = row_cols.iter().map(|&c| grid.columns[c].clone()).collect();
        header.extend(["final success", "initial success", "final > initial", "n"].map(str::to_owned));
        let mut table = vec![header];
        for key in distinct(env_rows.iter().map(|r| key_of(r, &row_cols))) {
            let done: Vec<&&Row> =
                env_rows.iter().filter(|r| key_of(r, &row_cols) == key && r.status == Status::Finished).collect();
            let finals: Vec<f64> = done.iter().filter_map(|r| r.final_success_rate).collect();
            let initials: Vec<f64> = done.iter().filter_map(|r| r.initial_success_rate).collect();
            let gains = done
                .iter()
                .filter(|r| matches!((r.final_success_rate, r.initial_success_rate), (Some(f), Some(i)) if f > i))
                .count();
            let mut line: Vec<String> = key.iter().map(|v| display(v)).collect();
            line.push(mean_ci(&finals));
            line.push(mean_ci(&initials));
            line.push(format!("{gains} of {}", done.len()));
            line.push(finals.len().to_string());
            table.push(line);
        }
        md.push_str(&markdown_table(&table));
        let prefix = format!("plot-{}-", file_part(env));
        for plot in plots.iter().filter(|p| p.starts_with(&prefix)) {
            let _ = writeln!(md, "\n![{plot}]({plot})");
        }
    }
    md
}

/// A value read off one evaluation for a chart (`None`: the evaluation did not record it).
type EvalValue = fn(&EvalPoint) -> Option<f64>;

/// The learning-curve plots of the grid: for each (env, student), evaluation success rate against step, one
/// line per method (and other axes), each point the mean over the seeds evaluated at that step and shaded by its
/// 95% confidence interval (Student's t over the seeds, where a step has two or more), in
/// `plot-<env>-<student>.svg`; and beside it, where the evaluations record it, the invalid-action rate the same
/// way in `plot-<env>-<student>-invalid.svg` (where every success rate is 0 it is the curve that moves). The
/// split is chosen per (env, student), since environments name their splits differently: `valid` when any of
/// its runs evaluated it, otherwise the first one found. Returns (file name, SVG) pairs.
pub fn render_plots(grid: &Grid) -> Vec<(String, String)> {
    let col = |name: &str| grid.columns.iter().position(|c| c == name).expect("standard columns are present");
    let (env_col, student_col, seed_col) = (col("env"), col("student"), col("seed"));
    let line_cols: Vec<usize> =
        (0..grid.columns.len()).filter(|&c| c != env_col && c != student_col && c != seed_col).collect();
    let mut out = Vec::new();
    for (env, student) in distinct(grid.rows.iter().map(|r| (r.axes[env_col].clone(), r.axes[student_col].clone()))) {
        let rows: Vec<&Row> =
            grid.rows.iter().filter(|r| r.axes[env_col] == env && r.axes[student_col] == student).collect();
        let evals_of = |row: &Row| grid.evals.get(&row.cell).into_iter().flatten();
        let Some(split) = rows
            .iter()
            .flat_map(|r| evals_of(r))
            .find(|e| e.split == "valid")
            .or_else(|| rows.iter().flat_map(|r| evals_of(r)).next())
            .map(|e| e.split.clone())
        else {
            continue;
        };
        // One series per line of the chart, for a measure read off an evaluation (None: not recorded).
        let series_of = |value: EvalValue| {
            let mut series = Vec::new();
            for line in distinct(rows.iter().map(|r| line_cols.iter().map(|&c| r.axes[c].clone()).collect::<Vec<_>>()))
            {
                let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
                for row in rows.iter().filter(|r| line_cols.iter().map(|&c| &r.axes[c]).eq(line.iter())) {
                    for e in evals_of(row).filter(|e| e.split == split) {
                        if let Some(v) = value(e) {
                            by_step.entry(e.step).or_default().push(v);
                        }
                    }
                }
                if !by_step.is_empty() {
                    // The mean over seeds at each step and, where a step has two seeds or more, its 95% interval.
                    let (mut points, mut band) = (Vec::new(), Vec::new());
                    for (&s, xs) in &by_step {
                        let m = stats::mean(xs).expect("non-empty");
                        points.push((s as f64, m));
                        band.extend(stats::ci95_half_width(xs).map(|h| (s as f64, m - h, m + h)));
                    }
                    series.push(SvgSeries { label: line.join(" "), points, band });
                }
            }
            series
        };
        let name = format!("plot-{}-{}", file_part(&env), file_part(&student));
        let charts: [(&str, &str, &str, EvalValue); 2] = [
            ("", "success", "success rate", |e| Some(e.success_rate)),
            ("-invalid", "invalid actions", "invalid-action rate", |e| {
                e.measures.as_ref().map(|m| m.invalid_action_rate)
            }),
        ];
        for (suffix, what, y_label, value) in charts {
            let series = series_of(value);
            if series.is_empty() {
                continue;
            }
            let chart = SvgChart {
                title: format!(
                    "{} · {} · {what} · {split} split (mean over seeds, 95% band)",
                    display(&env),
                    display(&student)
                ),
                x_label: "training step".to_owned(),
                y_label: y_label.to_owned(),
                y_range: Some((0.0, 1.0)),
            };
            out.push((format!("{name}{suffix}.svg"), svg_line_chart(&chart, &series)));
        }
    }
    out
}

/// A single run directory, read.
#[derive(Debug, Clone)]
pub struct Run {
    /// `summary.json`, when the run finished.
    pub summary: Option<Value>,
    /// The lines of `evals.jsonl`.
    pub evals: Vec<Value>,
}

/// Reads the run directory `dir`; an error when it holds none of a run's files.
pub fn load_run(dir: &Path) -> anyhow::Result<Run> {
    if !["config.toml", "metrics.jsonl", "evals.jsonl", "summary.json"].iter().any(|f| dir.join(f).exists()) {
        bail!(
            "{} is neither a grid directory (no cells/ or grid.json) nor a run directory (no config.toml, \
             metrics.jsonl, evals.jsonl or summary.json)",
            dir.display()
        );
    }
    let summary_path = dir.join("summary.json");
    let summary = if summary_path.is_file() {
        let text = fs::read_to_string(&summary_path).with_context(|| format!("reading {}", summary_path.display()))?;
        Some(serde_json::from_str(&text).with_context(|| format!("reading {}", summary_path.display()))?)
    } else {
        None
    };
    Ok(Run { summary, evals: read_jsonl(&dir.join("evals.jsonl"))? })
}

/// The plot of a single run: evaluation success rate against step, one line per split.
pub fn render_run_plot(name: &str, run: &Run) -> String {
    let mut by_split: Vec<SvgSeries> = Vec::new();
    for e in &run.evals {
        let (Some(step), Some(split), Some(success)) =
            (e["step"].as_u64(), e["split"].as_str(), e["success_rate"].as_f64())
        else {
            continue;
        };
        match by_split.iter_mut().find(|s| s.label == split) {
            Some(series) => series.points.push((step as f64, success)),
            None => {
                by_split.push(SvgSeries { label: split.to_owned(), points: vec![(step as f64, success)], band: vec![] })
            }
        }
    }
    let chart = SvgChart {
        title: name.to_owned(),
        x_label: "training step".to_owned(),
        y_label: "success rate".to_owned(),
        y_range: Some((0.0, 1.0)),
    };
    svg_line_chart(&chart, &by_split)
}

/// Reads one cell's row: axis values from the manifest, else from `summary.json`, else from the run's
/// `config.toml` or the grid's `cell.toml`; numbers from `summary.json` when the cell finished.
fn read_row(dir: &Path, id: &str, columns: &[String], axes: &BTreeMap<String, String>) -> anyhow::Result<Row> {
    let summary: Option<Value> =
        fs::read_to_string(dir.join("summary.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let config: Option<toml::Table> = ["config.toml", "cell.toml"]
        .iter()
        .find_map(|f| fs::read_to_string(dir.join(f)).ok())
        .and_then(|text| toml::from_str(&text).ok());
    let values = columns
        .iter()
        .map(|column| {
            if let Some(v) = axes.get(column) {
                return v.clone();
            }
            if let Some(v) = summary.as_ref().and_then(|s| json_text(&s[column.as_str()])) {
                return v;
            }
            config
                .as_ref()
                .and_then(|c| lookup(c, grid::config_key(column)))
                .map(|v| grid::value_text(&v))
                .unwrap_or_default()
        })
        .collect();
    let status = match grid::cell_state(dir) {
        CellState::Finished => Status::Finished,
        _ if dir.join("failed").exists() => Status::Failed,
        CellState::Partial => Status::Partial,
        CellState::Fresh if dir.join("config.toml").exists() => Status::Partial,
        CellState::Fresh => Status::Pending,
    };
    let finished = status == Status::Finished;
    let number = |key: &str| summary.as_ref().filter(|_| finished).and_then(|s| s[key].as_f64());
    Ok(Row {
        cell: id.to_owned(),
        axes: values,
        status,
        initial_success_rate: number("initial_success_rate"),
        final_success_rate: number("final_success_rate"),
        teacher_success_rate: number("teacher_success_rate"),
        steps: summary.as_ref().filter(|_| finished).and_then(|s| s["steps"].as_u64()),
        wall_seconds: number("wall_seconds"),
        initial_eval: None,
        final_eval: None,
    })
}

/// The evaluations in `path` (none when it does not exist).
fn read_evals(path: &Path) -> anyhow::Result<Vec<EvalPoint>> {
    Ok(read_jsonl(path)?
        .iter()
        .filter_map(|e| {
            Some(EvalPoint {
                step: e["step"].as_u64()?,
                split: e["split"].as_str()?.to_owned(),
                success_rate: e["success_rate"].as_f64()?,
                measures: match (e["mean_score"].as_f64(), e["invalid_action_rate"].as_f64()) {
                    (Some(mean_score), Some(invalid_action_rate)) => {
                        Some(EvalMeasures { mean_score, invalid_action_rate })
                    }
                    _ => None,
                },
            })
        })
        .collect())
}

/// The JSON objects of a JSONL file, one per line; none when the file does not exist. A last line that does not
/// parse is left out, since a run killed while appending leaves it torn; any other bad line is an error.
fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut values = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(v) => values.push(v),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => bail!("{} line {}: {e}", path.display(), i + 1),
        }
    }
    Ok(values)
}

fn lookup(table: &toml::Table, key: &str) -> Option<toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value.clone())
}

fn json_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn csv_line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| if f.contains([',', '"', '\n', '\r']) { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// Values in order of first appearance.
fn distinct<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// A rate in percent with two decimals, as the paper prints them.
fn pct(rate: f64) -> String {
    format!("{:.2}", 100.0 * rate)
}

/// "mean ± half-width" in percent, the mean alone for one value, "–" for none.
fn mean_ci(values: &[f64]) -> String {
    match (stats::mean(values), stats::ci95_half_width(values)) {
        (None, _) => "–".to_owned(),
        (Some(m), None) => pct(m),
        (Some(m), Some(h)) => format!("{} ± {}", pct(m), pct(h)),
    }
}

fn display(value: &str) -> String {
    if value.is_empty() {
        "?".to_owned()
    } else {
        value.to_owned()
    }
}

/// A value made safe for a file name.
fn file_part(value: &str) -> String {
    display(value).chars().map(|c| if c.is_ascii_alphanumeric() || "._=+-".contains(c) { c } else { '_' }).collect()
}

/// A GitHub-flavoured markdown table; the first line is the header. Pipes in cells are escaped.
fn markdown_table(lines: &[Vec<String>]) -> String {
    let row = |cells: &[String]| {
        format!("| {} |\n", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
    };
    let mut out = row(&lines[0]);
    out.push_str(&row(&vec!["---".to_owned(); lines[0].len()]));
    for line in &lines[1..] {
        out.push_str(&row(line));
    }
    out
}

pub(crate) fn format_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    format!("{} h {:02} min ({total} s)", total / 3600, (total % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    /// Writes a run directory that follows the contract of `atod train --out`; `final_success` None leaves it
    /// unfinished (metrics but no summary).
    fn fabricate_run(dir: &Path, env: &str, method: &str, seed: u64, final_success: Option<f64>) {
        fs::create_dir_all(dir).unwrap();
        let config = format!(
            "name = \"x\"\nmethod = \"{method}\"\nseed = {seed}\n[env]\nname = \"{env}\"\n[student]\npreset = \"student-s\"\n[train]\nsteps = 4\n"
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        fs::write(dir.join("metrics.jsonl"), "{\"step\": 1, \"loss/total\": 0.5}\n").unwrap();
        let initial = 0.1 + seed as f64 / 100.0;
        let last = final_success.unwrap_or(0.2);
        let evals: String = [(0, initial), (2, (initial + last) / 2.0), (4, last)]
            .iter()
            .map(|(step, success)| {
                // The score follows the success; the invalid rate falls 0.4, 0.3, 0.2 over the three evaluations.
                let invalid = 0.4 - f64::from(*step) * 0.05;
                format!(
                    "{{\"step\": {step}, \"split\": \"valid\", \"episodes\": 32, \"success_rate\": {success}, \
                     \"mean_score\": {success}, \"mean_return\": 1.0, \"mean_turns\": 5.0, \"invalid_action_rate\": {invalid}}}\n"
                )
            })
            .collect();
        fs::write(dir.join("evals.jsonl"), evals).unwrap();
        if let Some(final_success) = final_success {
            let summary = json!({
                "status": "finished", "name": dir.file_name().unwrap().to_str().unwrap(), "env": env,
                "student": "student-s", "method": method, "seed": seed, "steps": 4,
                "initial_success_rate": initial, "final_success_rate": final_success,
                "teacher_success_rate": if env == "alfworld" { 0.75 } else { 0.5 }, "wall_seconds": 100.0,
            });
            fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
        }
    }

    /// A 2 env × 2 method × 3 seed grid: every alfworld cell finished; on webshop atod finished and grpo has one
    /// finished seed, one failed and one never started.
    fn fabricate_grid(dir: &Path) {
        for (env, method, finals) in [
            ("alfworld", "atod", [Some(0.5), Some(0.6), Some(0.7)]),
            ("alfworld", "grpo", [Some(0.2), Some(0.2), Some(0.2)]),
            ("webshop", "atod", [Some(0.3), Some(0.4), Some(0.5)]),
            ("webshop", "grpo", [Some(0.1), None, None]),
        ] {
            for (seed, final_success) in finals.into_iter().enumerate() {
                let cell = dir.join(format!("cells/{env}-student-s-{method}-s{seed}"));
                match (seed, final_success) {
                    (2, None) => {
                        fs::create_dir_all(&cell).unwrap();
                        fs::write(cell.join("cell.toml"), format!("method = \"{method}\"\nseed = 2\n[env]\nname = \"{env}\"\n[student]\npreset = \"student-s\"\n")).unwrap();
                    }
                    _ => fabricate_run(&cell, env, method, seed as u64, final_success),
                }
                if (seed, final_success) == (1, None) {
                    fs::write(cell.join("failed"), "exit status: 1\n").unwrap();
                }
            }
        }
    }

    /// Environments name their evaluation splits differently (ALFWorld `valid_seen`, WebShop `eval`, Search-QA
    /// `test`): each environment's curves use its own split, rather than every environment the first one found.
    #[test]
    fn each_environment_plots_its_own_split() {
        let dir = tempfile::tempdir().unwrap();
        fabricate_grid(dir.path());
        let mut grid = load_grid(dir.path()).unwrap();
        for (cell, evals) in grid.evals.iter_mut() {
            let split = if cell.starts_with("webshop") { "eval" } else { "valid_seen" };
            evals.iter_mut().for_each(|e| e.split = split.to_owned());
        }
        let plots = render_plots(&grid);
        let webshop = &plots.iter().find(|(n, _)| n == "plot-webshop-student-s.svg").expect("webshop is plotted").1;
        assert!(webshop.contains("eval split") && webshop.matches("<polyline").count() == 2, "{webshop}");
        let alfworld = &plots.iter().find(|(n, _)| n == "plot-alfworld-student-s.svg").expect("alfworld is plotted").1;
        assert!(alfworld.contains("valid_seen split"), "{alfworld}");
    }

    /// Each curve is shaded by the 95% Student-t interval of its mean over the seeds. At step 4 the alfworld atod
    /// seeds end at 0.5, 0.6 and 0.7: mean 0.6, sample sd 0.1, half-width t(0.975, 2) 0.1 / sqrt(3) = 4.302653 ×
    /// 0.057735 = 0.248413, so the band runs from 0.351587 to 0.848413: y = 40 + (1 - v) × 308 on the chart, 239.7
    /// and 86.7, at x = 470 (the last step, the right edge).
    #[test]
    fn the_curves_carry_a_95_percent_band_over_seeds() {
        let dir = tempfile::tempdir().unwrap();
        fabricate_grid(dir.path());
        let plots = render_plots(&load_grid(dir.path()).unwrap());
        let alfworld = &plots.iter().find(|(n, _)| n == "plot-alfworld-student-s.svg").unwrap().1;
        assert_eq!(alfworld.matches("<polygon").count(), 2, "{alfworld}");
        let atod = alfworld.lines().find(|l| l.starts_with("<polygon fill=\"#0072B2\"")).expect("atod's band");
        assert!(atod.contains("470.0,86.7 470.0,239.7"), "{atod}");
        assert!(alfworld.contains("mean over seeds, 95% band"));
    }

    #[test]
    fn csv_and_markdown_of_a_fabricated_grid() {
        let dir = tempfile::tempdir().unwrap();
        fabricate_grid(dir.path());
        let mut grid = load_grid(dir.path()).unwrap();
        expect![[r#"
            cell,env,student,method,seed,status,initial_success_rate,final_success_rate,teacher_success_rate,steps,wall_seconds,initial_mean_score,final_mean_score,initial_invalid_action_rate,final_invalid_action_rate
            alfworld-student-s-atod-s0,alfworld,student-s,atod,0,finished,0.1,0.5,0.75,4,100,0.1,0.5,0.4,0.2
            alfworld-student-s-atod-s1,alfworld,student-s,atod,1,finished,0.11,0.6,0.75,4,100,0.11,0.6,0.4,0.2
            alfworld-student-s-atod-s2,alfworld,student-s,atod,2,finished,0.12000000000000001,0.7,0.75,4,100,0.12000000000000001,0.7,0.4,0.2
            alfworld-student-s-grpo-s0,alfworld,student-s,grpo,0,finished,0.1,0.2,0.75,4,100,0.1,0.2,0.4,0.2
            alfworld-student-s-grpo-s1,alfworld,student-s,grpo,1,finished,0.11,0.2,0.75,4,100,0.11,0.2,0.4,0.2
            alfworld-student-s-grpo-s2,alfworld,student-s,grpo,2,finished,0.12000000000000001,0.2,0.75,4,100,0.12000000000000001,0.2,0.4,0.2
            webshop-student-s-atod-s0,webshop,student-s,atod,0,finished,0.1,0.3,0.5,4,100,0.1,0.3,0.4,0.2
            webshop-student-s-atod-s1,webshop,student-s,atod,1,finished,0.11,0.4,0.5,4,100,0.11,0.4,0.4,0.2
            webshop-student-s-atod-s2,webshop,student-s,atod,2,finished,0.12000000000000001,0.5,0.5,4,100,0.12000000000000001,0.5,0.4,0.2
            webshop-student-s-grpo-s0,webshop,student-s,grpo,0,finished,0.1,0.1,0.5,4,100,0.1,0.1,0.4,0.2
            webshop-student-s-grpo-s1,webshop,student-s,grpo,1,failed,,,,,,,,,
            webshop-student-s-grpo-s2,webshop,student-s,grpo,2,pending,,,,,,,,,
        "#]].assert_eq(&render_csv(&grid.columns, &grid.rows));
        (grid.dir, grid.name) = (PathBuf::from("runs/g"), "g".to_owned());
        let plots = render_plots(&grid);
        let names: Vec<&str> = plots.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "plot-alfworld-student-s.svg",
                "plot-alfworld-student-s-invalid.svg",
                "plot-webshop-student-s.svg",
                "plot-webshop-student-s-invalid.svg"
            ]
        );
        for (_, svg) in &plots {
            assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2, "{svg}");
        }
        // The invalid-action rate is drawn on a chart of its own, apart from the success curve.
        assert!(plots[1].1.contains("invalid-action rate") && !plots[0].1.contains("invalid-action rate"));
        let names: Vec<String> = plots.into_iter().map(|(n, _)| n).collect();
        expect![[r#"
            # Results of the grid `g`

            Regenerate these tables and plots with `atod report runs/g`.

            Success rates are in percent of evaluation episodes: `final_success_rate` of results.csv (after training) and `initial_success_rate` (before training) and the teacher's as the mean ± the half-width of the 95% Student-t confidence interval over seeds (no interval for n = 1); `final > initial` counts the seeds whose training raised success; n counts the finished seeds.

            Cells: 10 finished, 1 failed, 0 partial, 1 pending, of 12. Wall time: 0 h 16 min (1000 s) summed over the finished cells.

            ## Average over environments

            Final success averaged over `alfworld`, `webshop` (for each seed the mean over the environments, then mean ± 95% CI over the seeds finished in every environment).

            | method | student-s |
            | --- | --- |
            | atod | 50.00 ± 24.84 (n=3) |
            | grpo | 15.00 (n=1) |
            | teacher | 62.50 ± 0.00 (n=3) |

            ## alfworld

            Teacher: 75.00 ± 0.00% success (n=3 seeds).

            | student | method | final success | initial success | final > initial | n |
            | --- | --- | --- | --- | --- | --- |
            | student-s | atod | 60.00 ± 24.84 | 11.00 ± 2.48 | 3 of 3 | 3 |
            | student-s | grpo | 20.00 ± 0.00 | 11.00 ± 2.48 | 3 of 3 | 3 |

            ![plot-alfworld-student-s.svg](plot-alfworld-student-s.svg)

            ![plot-alfworld-student-s-invalid.svg](plot-alfworld-student-s-invalid.svg)

            ## webshop

            Teacher: 50.00 ± 0.00% success (n=3 seeds).

            | student | method | final success | initial success | final > initial | n |
            | --- | --- | --- | --- | --- | --- |
            | student-s | atod | 40.00 ± 24.84 | 11.00 ± 2.48 | 3 of 3 | 3 |
            | student-s | grpo | 10.00 | 10.00 | 0 of 1 | 1 |

            ![plot-webshop-student-s.svg](plot-webshop-student-s.svg)

            ![plot-webshop-student-s-invalid.svg](plot-webshop-student-s-invalid.svg)
        "#]].assert_eq(&render_markdown(&grid, &names));
    }

    #[test]
    fn manifest_axes_become_columns_and_write_grid_report_writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        fabricate_run(&dir.path().join("cells/a"), "counter", "atod", 0, Some(0.5));
        fabricate_run(&dir.path().join("cells/b"), "counter", "atod", 0, Some(0.9));
        let manifest = Manifest {
            name: "g".into(),
            config: "configs/g.toml".into(),
            axes: vec!["method".into(), "train.steps".into()],
            cells: vec![
                grid::ManifestCell { id: "b".into(), axes: [("train.steps".to_owned(), "8".to_owned())].into() },
                grid::ManifestCell { id: "a".into(), axes: [("train.steps".to_owned(), "4".to_owned())].into() },
            ],
        };
        fs::write(dir.path().join("grid.json"), serde_json::to_string(&manifest).unwrap()).unwrap();
        let (grid, written) = write_grid_report(dir.path()).unwrap();
        assert_eq!(grid.columns, ["env", "student", "method", "seed", "train.steps"]);
        assert_eq!(grid.rows.iter().map(|r| r.cell.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let csv = fs::read_to_string(&written.csv).unwrap();
        assert!(csv.starts_with("cell,env,student,method,seed,train.steps,status,"), "{csv}");
        assert!(csv.contains("\nb,counter,student-s,atod,0,8,finished,0.1,0.9,0.5,4,100,0.1,0.9,0.4,0.2\n"), "{csv}");
        let md = fs::read_to_string(&written.markdown).unwrap();
        assert!(
            md.contains("atod grid --config configs/g.toml")
                && md.contains("| student-s | atod | 8 | 90.00 | 10.00 | 1 of 1 | 1 |"),
            "{md}"
        );
        assert_eq!(
            written.plots,
            [dir.path().join("plot-counter-student-s.svg"), dir.path().join("plot-counter-student-s-invalid.svg")]
        );
        let svg = fs::read_to_string(&written.plots[0]).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
        let json = rows_json(&grid.columns, &grid.rows);
        assert_eq!(json[1]["train.steps"], "4");
        assert_eq!(json[1]["final_success_rate"], 0.5);
    }

    #[test]
    fn a_single_run_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        fabricate_run(dir.path(), "alfworld", "atod", 0, None);
        let mut evals = fs::read_to_string(dir.path().join("evals.jsonl")).unwrap();
        evals.push_str("{\"step\": 6, \"spl");
        fs::write(dir.path().join("evals.jsonl"), evals).unwrap();
        let run = load_run(dir.path()).unwrap();
        assert!(run.summary.is_none());
        assert_eq!(run.evals.len(), 3);
        let svg = render_run_plot("x", &run);
        assert_eq!(svg.matches("<polyline").count(), 1);
        let empty = tempfile::tempdir().unwrap();
        assert!(format!("{:#}", load_run(empty.path()).unwrap_err()).contains("neither a grid directory"));
    }
}
