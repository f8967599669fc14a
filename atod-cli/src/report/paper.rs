//! The paper-layout report of a grid (`atod report DIR --markdown FILE`): the ATOD paper's Table 1 (rows =
//! methods, columns = student sizes) per environment and averaged over environments, its ALFWorld ablation table,
//! the paper's findings checked one by one against this grid's numbers, the learning curves, the wall time and the
//! commands that regenerate everything.
//!
//! Like `results.md`, every number comes from the rows of `results.csv` (one per cell, each read from that cell's
//! `summary.json`); the wall time of the grid's own invocations comes from `grid-log.jsonl`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::{display, markdown_table, mean_ci, stats, Grid, Row, Status};

/// The paper's Table 1, averaged over ALFWorld, WebShop and Search-QA, for its students (0.6B, 1.7B, 4B): the
/// reference this grid's findings are set against.
pub const PAPER_AVERAGE: [(&str, [f64; 3]); 4] = [
    ("atod", [70.62, 71.58, 71.06]),
    ("opd", [67.73, 64.91, 68.13]),
    ("grpo", [33.17, 40.30, 68.93]),
    ("sft-init", [6.66, 15.59, 19.24]),
];
/// The paper's teachers, averaged the same way.
pub const PAPER_TEACHER: f64 = 68.93;
/// The paper's student sizes, matched to atod's presets `student-s`, `student-m` (or `student-ml`, `student-l2`,
/// `student-l3`) and `student-l`, and to other students by their order on the axis.
pub const PAPER_SIZES: [&str; 3] = ["0.6B", "1.7B", "4B"];

/// The index into `PAPER_SIZES` (and the paper's columns) of the grid's `i`-th student `student`.
fn paper_index(student: &str, i: usize) -> usize {
    match student {
        "student-s" => 0,
        "student-m" | "student-ml" | "student-l2" | "student-l3" => 1,
        "student-l" => 2,
        _ => i,
    }
}

/// The ALFWorld ablation: what removing each component cost the paper's two small students, in points (read
/// off its ablation table, so approximate).
pub const PAPER_ABLATION: [(&str, &str, f64); 3] = [
    ("atod-const", "no annealing (constant α)", 7.0),
    ("atod-uniform", "uniform turn weights (no T-DUR)", 4.0),
    ("atod-token", "token-level instead of turn-level weights", 3.0),
];

/// What the paper-layout report needs beyond the grid.
#[derive(Debug, Clone, Default)]
pub struct PaperInputs {
    /// Link prefix from the markdown file's directory to the grid directory (ends with `/`, or empty).
    pub link_prefix: String,
    /// The plot file names in the grid directory.
    pub plots: Vec<String>,
    /// The notes file's text, included as it is.
    pub notes: Option<String>,
    /// The grid's invocations, from `grid-log.jsonl`.
    pub sessions: Vec<Value>,
    /// The command lines that regenerate the report (the grid, the report, one cell).
    pub commands: Vec<(String, String)>,
}

/// How a method's label reads in the tables.
fn label(method: &str) -> String {
    match method {
        "sft-init" => "vanilla (sft-init)".to_owned(),
        other => other.to_owned(),
    }
}

/// A column of the tables: in each environment, the student it stands for. A column is one student when every
/// student ran in every environment. When an environment has a student of its own (paper-mini's WebShop trains
/// `student-l2` where the others train `student-m`), the tables averaged over environments group the students by
/// the paper's size they are matched to, so that the smaller students of all environments make one column.
#[derive(Debug, Clone)]
struct Column {
    /// The heading: the student, or the students of the group joined by " / ".
    label: String,
    /// The index into `PAPER_SIZES` (and the paper's columns).
    paper: usize,
    /// Environment -> the student this column reads there.
    by_env: BTreeMap<String, String>,
}

impl Column {
    /// The column of one student in `envs`.
    fn single(student: &str, paper: usize, envs: &[String]) -> Self {
        Column {
            label: student.to_owned(),
            paper,
            by_env: envs.iter().map(|e| (e.clone(), student.to_owned())).collect(),
        }
    }

    /// How the findings name the column: its label and the paper's size it is matched to.
    fn with_size(&self) -> String {
        match PAPER_SIZES.get(self.paper) {
            Some(size) => format!("{} ({size} in the paper)", self.label),
            None => self.label.clone(),
        }
    }
}

struct Index<'a> {
    env: usize,
    student: usize,
    method: usize,
    seed: usize,
    finished: Vec<&'a Row>,
}

impl<'a> Index<'a> {
    fn new(grid: &'a Grid) -> Self {
        let col = |name: &str| grid.columns.iter().position(|c| c == name).expect("standard columns are present");
        Index {
            env: col("env"),
            student: col("student"),
            method: col("method"),
            seed: col("seed"),
            finished: grid.rows.iter().filter(|r| r.status == Status::Finished).collect(),
        }
    }

    /// Per seed (in seed order), the final success of (method, the column's student in each environment) averaged
    /// over `envs`; a seed counts only when every one of `envs` has it finished.
    fn per_seed(&self, envs: &[String], method: &str, column: &Column) -> BTreeMap<String, f64> {
        self.per_seed_of(envs, method, column, |r| r.final_success_rate)
    }

    /// `per_seed` of any measure of a row.
    fn per_seed_of(
        &self,
        envs: &[String],
        method: &str,
        column: &Column,
        measure: impl Fn(&Row) -> Option<f64>,
    ) -> BTreeMap<String, f64> {
        let mut by_seed: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for row in &self.finished {
            if row.axes[self.method] == method
                && envs.contains(&row.axes[self.env])
                && column.by_env.get(&row.axes[self.env]) == Some(&row.axes[self.student])
            {
                if let Some(x) = measure(row) {
                    by_seed.entry(row.axes[self.seed].clone()).or_default().push(x);
                }
            }
        }
        by_seed
            .into_iter()
            .filter(|(_, xs)| xs.len() == envs.len())
            .map(|(seed, xs)| (seed, stats::mean(&xs).expect("non-empty")))
            .collect()
    }

    /// The teacher's success by seed, averaged over `envs` (seeds every environment reports; each cell evaluates
    /// the teacher on its own seed's episodes, and cells of one seed share that evaluation).
    fn teacher_by_seed(&self, envs: &[String]) -> BTreeMap<String, f64> {
        let mut by_seed: BTreeMap<String, BTreeMap<&str, f64>> = BTreeMap::new();
        for row in &self.finished {
            if let (true, Some(x)) = (envs.contains(&row.axes[self.env]), row.teacher_success_rate) {
                by_seed.entry(row.axes[self.seed].clone()).or_default().entry(row.axes[self.env].as_str()).or_insert(x);
            }
        }
        by_seed
            .into_iter()
            .filter(|(_, per_env)| per_env.len() == envs.len())
            .map(|(seed, per_env)| (seed, stats::mean(&per_env.into_values().collect::<Vec<_>>()).expect("non-empty")))
            .collect()
    }

    /// The teacher's success averaged over `envs` (None unless every one reports it).
    fn teacher(&self, envs: &[String]) -> Option<f64> {
        let per_env: Vec<f64> = envs
            .iter()
            .filter_map(|env| {
                let xs: Vec<f64> = self
                    .finished
                    .iter()
                    .filter(|r| &r.axes[self.env] == env)
                    .filter_map(|r| r.teacher_success_rate)
                    .collect();
                stats::mean(&xs)
            })
            .collect();
        (per_env.len() == envs.len() && !per_env.is_empty()).then(|| stats::mean(&per_env).expect("non-empty"))
    }
}

/// The (methods × students) table over `envs`, with the teacher's row.
fn method_table(ix: &Index, envs: &[String], methods: &[String], columns: &[Column]) -> String {
    let mut lines = vec![[vec!["method".to_owned()], columns.iter().map(|c| display(&c.label)).collect()].concat()];
    for method in methods {
        let mut line = vec![label(method)];
        for column in columns {
            let xs: Vec<f64> = ix.per_seed(envs, method, column).into_values().collect();
            line.push(if xs.is_empty() { "–".to_owned() } else { format!("{} (n={})", mean_ci(&xs), xs.len()) });
        }
        lines.push(line);
    }
    let teachers: Vec<f64> = ix.teacher_by_seed(envs).into_values().collect();
    if !teachers.is_empty() {
        let teacher = format!("{} (n={})", mean_ci(&teachers), teachers.len());
        lines.push([vec!["teacher".to_owned()], vec![teacher; columns.len()]].concat());
    }
    markdown_table(&lines)
}

/// A (methods × students) table of a measure after training over one environment.
fn measure_table(ix: &Index, env: &str, methods: &[String], columns: &[Column], measure: super::Measure) -> String {
    let envs = [env.to_owned()];
    let mut lines = vec![[vec!["method".to_owned()], columns.iter().map(|c| display(&c.label)).collect()].concat()];
    for method in methods {
        let mut line = vec![label(method)];
        for column in columns {
            let xs: Vec<f64> =
                ix.per_seed_of(&envs, method, column, |r| r.final_eval.as_ref().map(measure)).into_values().collect();
            line.push(if xs.is_empty() { "–".to_owned() } else { mean_ci(&xs) });
        }
        lines.push(line);
    }
    markdown_table(&lines)
}

/// The verdict on a difference measured per seed: the mean difference with its 95% CI and whether it is
/// resolved in either direction.
fn verdict(diffs: &[f64]) -> (String, &'static str) {
    let text = mean_ci(diffs);
    let word = match (stats::mean(diffs), stats::ci95_half_width(diffs)) {
        (None, _) => "no data",
        (Some(_), None) => "one seed only",
        (Some(m), Some(h)) if h == 0.0 && m == 0.0 => "no difference (every seed equal)",
        (Some(m), Some(h)) if m - h > 0.0 => "holds (95% CI above 0)",
        (Some(m), Some(h)) if m + h < 0.0 => "reversed (95% CI below 0)",
        _ => "not resolved (95% CI spans 0)",
    };
    (text, word)
}

/// Paired differences `a_s - b_s` over the seeds both have.
fn paired(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> Vec<f64> {
    a.iter().filter_map(|(seed, x)| b.get(seed).map(|y| x - y)).collect()
}

/// The paper-layout markdown of `grid`.
pub fn render(grid: &Grid, inputs: &PaperInputs) -> String {
    let ix = Index::new(grid);
    let envs = super::distinct(grid.rows.iter().map(|r| r.axes[ix.env].clone()));
    let students = super::distinct(grid.rows.iter().map(|r| r.axes[ix.student].clone()));
    let methods = super::distinct(grid.rows.iter().map(|r| r.axes[ix.method].clone()));
    let in_every_env =
        |m: &String| envs.iter().all(|e| grid.rows.iter().any(|r| &r.axes[ix.method] == m && &r.axes[ix.env] == e));
    let main_methods: Vec<String> = methods.iter().filter(|m| in_every_env(m)).cloned().collect();
    // The methods that ran in one environment.
    let methods_of_env = |env: &String| -> Vec<String> {
        methods
            .iter()
            .filter(|m| grid.rows.iter().any(|r| &r.axes[ix.method] == *m && &r.axes[ix.env] == env))
            .cloned()
            .collect()
    };
    let ablations: Vec<String> = methods.iter().filter(|m| !in_every_env(m)).cloned().collect();
    // The environments the ablations ran in.
    let ab_envs: Vec<String> = envs
        .iter()
        .filter(|e| grid.rows.iter().any(|r| ablations.contains(&r.axes[ix.method]) && &r.axes[ix.env] == *e))
        .cloned()
        .collect();
    // The students the ablations ran on, as columns over `ab_envs`.
    let ablated = |student: &str| {
        grid.rows.iter().any(|r| {
            ablations.contains(&r.axes[ix.method]) && ab_envs.contains(&r.axes[ix.env]) && r.axes[ix.student] == student
        })
    };

    // The students in the order of the paper's sizes (within a size, the axis's), as the tables' columns: one per
    // student, or, when some student did not run in every environment, one per paper size for the tables that
    // average over environments.
    let mut ranked: Vec<(usize, &String)> = students.iter().enumerate().map(|(i, s)| (paper_index(s, i), s)).collect();
    ranked.sort_by_key(|(paper, _)| *paper);
    let ran =
        |env: &str, student: &str| grid.rows.iter().any(|r| r.axes[ix.env] == env && r.axes[ix.student] == student);
    let grouped = !students.iter().all(|s| envs.iter().all(|e| ran(e, s)));
    let columns: Vec<Column> = if grouped {
        let mut by_size: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
        for (paper, student) in &ranked {
            by_size.entry(*paper).or_default().push(student);
        }
        by_size
            .into_iter()
            .map(|(paper, group)| {
                let by_env = envs
                    .iter()
                    .filter_map(|e| {
                        let here: Vec<&&String> = group.iter().filter(|s| ran(e, s)).collect();
                        (here.len() == 1).then(|| (e.clone(), (*here[0]).clone()))
                    })
                    .collect();
                let label = group.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" / ");
                Column { label, paper, by_env }
            })
            .collect()
    } else {
        ranked.iter().map(|(paper, s)| Column::single(s, *paper, &envs)).collect()
    };
    // One environment's columns: the students that ran there.
    let columns_of_env = |env: &String| -> Vec<Column> {
        ranked
            .iter()
            .filter(|(_, s)| ran(env, s))
            .map(|(paper, s)| Column::single(s, *paper, std::slice::from_ref(env)))
            .collect()
    };

    let ab_columns: Vec<Column> =
        ranked.iter().filter(|(_, s)| ablated(s)).map(|(paper, s)| Column::single(s, *paper, &ab_envs)).collect();

    let mut md = format!("# Results: the grid `{}`\n\n", grid.name);
    md.push_str(
        "Generated by `atod report`; do not edit by hand (the notes at the end come from the file named below). \
         Success rates are in percent of evaluation episodes, as mean ± the half-width of the 95% Student-t \
         confidence interval over seeds; n counts the seeds finished (in every environment, for averages). Every \
         number is computed from `results.csv`, whose rows are read from each cell's `summary.json` under \
         `cells/<id>/` beside its resolved config (`config.toml`), `metrics.jsonl` and `evals.jsonl`.\n\n",
    );
    md.push_str("## Regenerate\n\n");
    for (what, command) in &inputs.commands {
        let _ = writeln!(md, "{what}:\n\n```\n{command}\n```\n");
    }

    // Status and cost.
    let count = |s: Status| grid.rows.iter().filter(|r| r.status == s).count();
    let wall: f64 = ix.finished.iter().filter_map(|r| r.wall_seconds).sum();
    md.push_str("## Cells and wall time\n\n");
    let _ = write!(
        md,
        "{} cells: {} finished, {} failed, {} partial, {} pending. The finished cells' runs took {} in all \
         (each run's own wall time, summed).",
        grid.rows.len(),
        count(Status::Finished),
        count(Status::Failed),
        count(Status::Partial),
        count(Status::Pending),
        super::format_duration(wall)
    );
    let sessions: Vec<(f64, u64, u64)> = inputs
        .sessions
        .iter()
        .filter_map(|s| Some((s["seconds"].as_f64()?, s["trained"].as_u64()?, s["parallel"].as_u64()?)))
        .collect();
    if !sessions.is_empty() {
        let total: f64 = sessions.iter().map(|s| s.0).sum();
        let trained: u64 = sessions.iter().map(|s| s.1).sum();
        let interrupted = inputs.sessions.iter().filter(|s| s["interrupted"].as_bool() == Some(true)).count();
        let interrupted = match interrupted {
            0 => String::new(),
            n => format!(" ({n} of them interrupted, each counted up to its last heartbeat)"),
        };
        let _ = write!(
            md,
            " The grid ran in {} invocation(s) of `atod grid`{interrupted} that took {} of wall-clock time and \
             trained {trained} cells (with {} cells at once; `grid-log.jsonl`).",
            sessions.len(),
            super::format_duration(total),
            sessions.iter().map(|s| s.2.to_string()).collect::<Vec<_>>().join("/")
        );
    }
    md.push_str("\n\n");

    // Table 1.
    md.push_str("## Table 1 layout: average over environments\n\n");
    let _ = writeln!(
        md,
        "Final success of each method and student, averaged over {} (per seed the mean over the environments, \
         then mean ± 95% CI over the seeds). `vanilla (sft-init)` is the student before any online training.\n",
        envs.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
    );
    if grouped {
        let _ = writeln!(
            md,
            "Not every student ran in every environment, so each column averages one student per environment, \
             matched by the paper's size: {}.\n",
            columns
                .iter()
                .map(|c| {
                    let per_env: Vec<String> = c.by_env.iter().map(|(e, s)| format!("`{s}` on `{e}`")).collect();
                    format!("{} is {}", c.with_size(), per_env.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    md.push_str(&method_table(&ix, &envs, &main_methods, &columns));
    for env in &envs {
        let _ = writeln!(md, "\n### {}\n", display(env));
        md.push_str(&method_table(&ix, std::slice::from_ref(env), &methods_of_env(env), &columns_of_env(env)));
    }

    // The ablation.
    if !ablations.is_empty() {
        let _ = writeln!(
            md,
            "\n## Ablation ({})\n\nFinal success of ATOD and of each variant, and what removing the component \
             cost: `atod` minus the variant, paired by seed (mean ± 95% CI; positive means the component \
             helped).\n",
            ab_envs.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
        );
        let mut lines =
            vec![[vec!["variant".to_owned()], ab_columns.iter().map(|c| display(&c.label)).collect()].concat()];
        let atod: Vec<BTreeMap<String, f64>> = ab_columns.iter().map(|c| ix.per_seed(&ab_envs, "atod", c)).collect();
        lines.push(
            [
                vec!["atod".to_owned()],
                atod.iter().map(|xs| mean_ci(&xs.values().copied().collect::<Vec<_>>())).collect(),
            ]
            .concat(),
        );
        for method in &ablations {
            let mut line = vec![method.clone()];
            for (column, base) in ab_columns.iter().zip(&atod) {
                let own = ix.per_seed(&ab_envs, method, column);
                let xs: Vec<f64> = own.values().copied().collect();
                line.push(format!("{} (Δ {})", mean_ci(&xs), mean_ci(&paired(base, &own))));
            }
            lines.push(line);
        }
        md.push_str(&markdown_table(&lines));
    }

    // The findings.
    md.push_str("\n## The paper's findings, checked\n\n");
    md.push_str(
        "Each finding is a difference of final success in points, paired by seed and averaged over the \
         environments (the teacher is one number per environment). It *holds* here when the 95% CI of the \
         difference lies above 0, is *reversed* when it lies below, and is *not resolved* otherwise. The paper's \
         0.6B, 1.7B and 4B students are matched to `student-s`, `student-m` (and the presets between it and \
         `student-l`: `student-ml`, `student-l2`, `student-l3`) and `student-l` (other students by their order).\n\n",
    );
    let mut lines = vec![["finding", "student", "paper", "here", "verdict"].map(str::to_owned).to_vec()];
    let paper_of =
        |method: &str, i: usize| PAPER_AVERAGE.iter().find(|(m, _)| *m == method).and_then(|(_, v)| v.get(i).copied());
    for column in &columns {
        let i = column.paper;
        let atod = ix.per_seed(&envs, "atod", column);
        for other in ["opd", "grpo", "sft-init"] {
            if !main_methods.iter().any(|m| m == other) {
                continue;
            }
            let diffs = paired(&atod, &ix.per_seed(&envs, other, column));
            let (here, word) = verdict(&diffs);
            let paper = match (paper_of("atod", i), paper_of(other, i)) {
                (Some(a), Some(b)) => format!("{:+.2}", a - b),
                _ => "–".to_owned(),
            };
            lines.push(vec![format!("ATOD beats {}", label(other)), column.with_size(), paper, here, word.to_owned()]);
        }
        if let Some(t) = ix.teacher(&envs) {
            let diffs: Vec<f64> = atod.values().map(|x| x - t).collect();
            let (here, word) = verdict(&diffs);
            let paper = paper_of("atod", i).map_or_else(|| "–".to_owned(), |a| format!("{:+.2}", a - PAPER_TEACHER));
            lines.push(vec!["ATOD beats its teacher".to_owned(), column.with_size(), paper, here, word.to_owned()]);
        }
    }
    if !ablations.is_empty() {
        for column in &ab_columns {
            let atod = ix.per_seed(&ab_envs, "atod", column);
            for (method, what, cost) in PAPER_ABLATION {
                if !ablations.iter().any(|m| m == method) {
                    continue;
                }
                let (here, word) = verdict(&paired(&atod, &ix.per_seed(&ab_envs, method, column)));
                let paper = if column.paper < 2 { format!("about +{cost:.0}") } else { "–".to_owned() };
                lines.push(vec![format!("{what} costs points"), column.with_size(), paper, here, word.to_owned()]);
            }
        }
    }
    md.push_str(&markdown_table(&lines));

    // The same comparisons on the invalid-action rate, which moves where success does not.
    md.push_str(
        "\nThe same comparisons on the last evaluation's invalid-action rate, where lower is better: the \
         difference is the other method's rate minus ATOD's, so that a positive difference again favours ATOD (not \
         a finding of the paper, which does not report the rate).\n\n",
    );
    let mut lines =
        vec![["ATOD has fewer invalid actions than", "student", "here", "verdict"].map(str::to_owned).to_vec()];
    let invalid = |r: &Row| r.final_eval.as_ref().map(|m| m.invalid_action_rate);
    for column in &columns {
        let atod = ix.per_seed_of(&envs, "atod", column, invalid);
        for other in ["opd", "grpo", "sft-init"] {
            if !main_methods.iter().any(|m| m == other) {
                continue;
            }
            let diffs = paired(&ix.per_seed_of(&envs, other, column, invalid), &atod);
            let (here, word) = verdict(&diffs);
            lines.push(vec![label(other), column.label.clone(), here, word.to_owned()]);
        }
    }
    md.push_str(&markdown_table(&lines));

    // Beyond success.
    md.push_str(
        "\n## Beyond success: invalid actions and score\n\nWhere every success rate is 0, these still move. Each \
         cell is the last evaluation's value (percent, mean ± 95% CI over seeds; the vanilla row is the students \
         before training): the fraction of responses the environment could not parse as an action, and the mean \
         final score (the environment's partial credit: WebShop's attribute match; success itself elsewhere).\n",
    );
    for (name, measure) in super::MEASURE_COLUMNS {
        for env in &envs {
            let _ = writeln!(md, "\n### {} · `{name}` after training\n", display(env));
            md.push_str(&measure_table(&ix, env, &methods_of_env(env), &columns_of_env(env), measure));
        }
    }

    // The learning curves.
    if !inputs.plots.is_empty() {
        md.push_str(
            "\n## Learning curves\n\nSuccess on each environment's evaluation split against the training step, one \
             line per method, each point the mean over seeds with a shaded 95% band; beside it (`-invalid`), the \
             invalid-action rate the same way.\n\n",
        );
        // In the tables' order: by environment, then by the students' paper size; any other plot last.
        let order: Vec<String> = envs
            .iter()
            .flat_map(|env| ranked.iter().map(move |(_, student)| format!("plot-{env}-{student}")))
            .flat_map(|stem| [format!("{stem}.svg"), format!("{stem}-invalid.svg")])
            .collect();
        let mut plots: Vec<&String> = inputs.plots.iter().collect();
        plots.sort_by_key(|p| order.iter().position(|o| o == *p).unwrap_or(usize::MAX));
        for plot in plots {
            let _ = writeln!(md, "![{plot}]({}{plot})", inputs.link_prefix);
        }
    }

    if let Some(notes) = &inputs.notes {
        md.push('\n');
        md.push_str(notes.trim_end());
        md.push('\n');
    }
    md
}

/// The link prefix from the directory of `markdown` to `grid_dir`, both given relative to the same working
/// directory: `grid_dir` itself when `markdown` lies in the working directory, else `grid_dir` as given (an
/// absolute path when either is absolute).
pub fn link_prefix(markdown: &Path, grid_dir: &Path) -> String {
    let parent = markdown.parent().filter(|p| !p.as_os_str().is_empty());
    let prefix = match parent {
        None => grid_dir.to_path_buf(),
        Some(parent) => match grid_dir.strip_prefix(parent) {
            Ok(rest) => rest.to_path_buf(),
            Err(_) => std::path::absolute(grid_dir).unwrap_or_else(|_| grid_dir.to_path_buf()),
        },
    };
    let text = prefix.to_string_lossy().replace('\\', "/");
    if text.is_empty() || text.ends_with('/') {
        text
    } else {
        format!("{text}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn row(env: &str, method: &str, seed: u64, final_success: f64, teacher: f64) -> Row {
        row_of(env, "student-s", method, seed, final_success, teacher)
    }

    fn row_of(env: &str, student: &str, method: &str, seed: u64, final_success: f64, teacher: f64) -> Row {
        Row {
            cell: format!("{env}-{student}-{method}-s{seed}"),
            axes: vec![env.to_owned(), student.to_owned(), method.to_owned(), seed.to_string()],
            status: Status::Finished,
            initial_success_rate: Some(0.1),
            final_success_rate: Some(final_success),
            teacher_success_rate: Some(teacher),
            steps: Some(3),
            wall_seconds: Some(60.0),
            initial_eval: None,
            final_eval: Some(super::super::EvalMeasures {
                mean_score: final_success,
                invalid_action_rate: 0.5 - final_success / 2.0,
            }),
        }
    }

    /// Two environments × {sft-init, opd, atod} × 3 seeds, and atod-const on `a` only. The expected numbers
    /// below were worked out by hand: atod per seed (mean over a and b) 0.4, 0.5, 0.6: mean 50.00, sample sd
    /// 0.1, half-width t(0.975, 2) 0.1 / sqrt(3) = 4.302653 × 0.057735 = 24.84 points; atod - opd per seed
    /// 0.10, 0.10, 0.15: mean 11.67, sd 0.028868, half-width 7.17; atod - teacher (0.625) per seed -0.225,
    /// -0.125, -0.025: -12.50 ± 24.84; atod - atod-const on a: 0, 0.1, 0.2: 10.00 ± 24.84.
    fn grid() -> Grid {
        let mut rows = Vec::new();
        for (env, teacher, atod, opd) in
            [("a", 0.75, [0.5, 0.6, 0.7], [0.4, 0.5, 0.6]), ("b", 0.5, [0.3, 0.4, 0.5], [0.2, 0.3, 0.3])]
        {
            for seed in 0..3 {
                rows.push(row(env, "sft-init", seed, 0.1, teacher));
                rows.push(row(env, "opd", seed, opd[seed as usize], teacher));
                rows.push(row(env, "atod", seed, atod[seed as usize], teacher));
            }
        }
        for seed in 0..3 {
            rows.push(row("a", "atod-const", seed, 0.5, 0.75));
        }
        let mut pending = row("b", "opd", 3, 0.0, 0.5);
        (pending.status, pending.final_success_rate) = (Status::Pending, None);
        rows.push(pending);
        Grid {
            dir: PathBuf::from("results/g"),
            name: "g".to_owned(),
            config: Some("configs/g.toml".to_owned()),
            columns: super::super::STANDARD_COLUMNS.iter().map(|c| c.to_string()).collect(),
            rows,
            evals: BTreeMap::new(),
        }
    }

    #[test]
    fn tables_findings_and_ablation_of_a_hand_computed_grid() {
        let inputs = PaperInputs {
            link_prefix: "results/g/".to_owned(),
            plots: vec!["plot-a-student-s.svg".to_owned()],
            notes: Some("## Notes\n\nby hand\n".to_owned()),
            sessions: vec![serde_json::json!({"seconds": 3600.0, "trained": 21, "parallel": 2})],
            commands: vec![("The grid".to_owned(), "atod grid --config configs/g.toml".to_owned())],
        };
        let md = render(&grid(), &inputs);
        // The average table: the ablation, absent from b, is left out; the pending seed 3 is not counted.
        assert!(md.contains("| vanilla (sft-init) | 10.00 ± 0.00 (n=3) |"), "{md}");
        assert!(md.contains("| opd | 38.33 ± "), "{md}");
        assert!(md.contains("| atod | 50.00 ± 24.84 (n=3) |"), "{md}");
        assert!(md.contains("| teacher | 62.50 ± 0.00 (n=3) |"), "{md}");
        let average = &md[md.find("## Table 1").unwrap()..md.find("### a").unwrap()];
        assert!(!average.contains("atod-const"), "{average}");
        // Per environment, the ablation appears where it ran.
        let env_a = &md[md.find("### a").unwrap()..md.find("### b").unwrap()];
        assert!(env_a.contains("| atod-const | 50.00 ± 0.00 (n=3) |"), "{env_a}");
        assert!(env_a.contains("| atod | 60.00 ± 24.84 (n=3) |"), "{env_a}");
        // The ablation table: atod minus the variant, paired by seed.
        assert!(md.contains("| atod-const | 50.00 ± 0.00 (Δ 10.00 ± 24.84) |"), "{md}");
        // The findings, with the paper's differences for its smallest student.
        assert!(
            md.contains(
                "| ATOD beats opd | student-s (0.6B in the paper) | +2.89 | 11.67 ± 7.17 | holds (95% CI above 0) |"
            ),
            "{md}"
        );
        assert!(md.contains(
            "| ATOD beats vanilla (sft-init) | student-s (0.6B in the paper) | +63.96 | 40.00 ± 24.84 | holds"
        ));
        assert!(md.contains(
            "| ATOD beats its teacher | student-s (0.6B in the paper) | +1.69 | -12.50 ± 24.84 | not resolved (95% CI spans 0) |"
        ));
        assert!(md.contains("| no annealing (constant α) costs points | student-s (0.6B in the paper) | about +7 | 10.00 ± 24.84 | not resolved"));
        // Cost, curves, notes.
        assert!(md.contains("22 cells: 21 finished, 0 failed, 0 partial, 1 pending"), "{md}");
        assert!(md.contains("took 0 h 21 min (1260 s) in all"), "{md}");
        assert!(md.contains("1 invocation(s) of `atod grid` that took 1 h 00 min (3600 s)"), "{md}");
        assert!(md.contains("![plot-a-student-s.svg](results/g/plot-a-student-s.svg)"));
        assert!(md.contains("```\natod grid --config configs/g.toml\n```"));
        assert!(md.trim_end().ends_with("by hand"));
        // opd's invalid rate is 0.5 - success / 2 too: opd - atod = (atod - opd) / 2 per seed, 5.83 ± 3.59.
        assert!(md.contains("| opd | student-s | 5.83 ± 3.59 | holds (95% CI above 0) |"), "{md}");
        // Beyond success: invalid rate 0.5 - success / 2 per cell, so atod on a (0.5, 0.6, 0.7) gives 20.00 ± 12.42.
        let invalid_a = &md[md.find("### a · `invalid_action_rate` after training").unwrap()..];
        assert!(invalid_a.contains("| atod | 20.00 ± 12.42 |"), "{invalid_a}");
    }

    /// An invocation killed before it ended is logged from its heartbeat and counted in the wall time, and the
    /// report says how many were.
    #[test]
    fn interrupted_invocations_count_in_the_wall_time() {
        let inputs = PaperInputs {
            link_prefix: "results/g/".to_owned(),
            plots: Vec::new(),
            notes: None,
            sessions: vec![
                serde_json::json!({"seconds": 1800.0, "trained": 5, "parallel": 2, "interrupted": true}),
                serde_json::json!({"seconds": 1200.0, "trained": 16, "parallel": 2, "interrupted": false}),
            ],
            commands: Vec::new(),
        };
        let md = render(&grid(), &inputs);
        assert!(
            md.contains(
                "2 invocation(s) of `atod grid` (1 of them interrupted, each counted up to its last heartbeat) that \
                 took 0 h 50 min (3000 s) of wall-clock time and trained 21 cells (with 2/2 cells at once"
            ),
            "{md}"
        );
    }

    /// Environment `b` trains `student-l2` where `a` trains `student-m` (both matched to the paper's 1.7B), and
    /// both train `student-l`: the averaged tables and the findings group the two smaller students into one
    /// column, each environment's own tables show only its students. By hand: the smaller students' atod per seed
    /// (mean of a's student-m 0.4, 0.5, 0.6 and b's student-l2 0.2, 0.3, 0.4) is 0.3, 0.4, 0.5: 40.00 ± 24.84; opd
    /// is 0.1 lower in both environments on every seed: atod - opd = 10.00 ± 0.00.
    #[test]
    fn students_of_one_size_make_one_column_across_environments() {
        let mut rows = Vec::new();
        for seed in 0..3u64 {
            let x = 0.1 * seed as f64;
            for (env, small, base) in [("a", "student-m", 0.4), ("b", "student-l2", 0.2)] {
                rows.push(row_of(env, small, "atod", seed, base + x, 0.8));
                rows.push(row_of(env, small, "opd", seed, base + x - 0.1, 0.8));
                rows.push(row_of(env, "student-l", "atod", seed, 0.5, 0.8));
                rows.push(row_of(env, "student-l", "opd", seed, 0.5, 0.8));
            }
            rows.push(row_of("a", "student-m", "atod-const", seed, 0.4, 0.8));
        }
        let grid = Grid { rows, ..grid() };
        let md = render(&grid, &PaperInputs::default());
        let average = &md[md.find("## Table 1").unwrap()..md.find("### a").unwrap()];
        assert!(average.contains("| method | student-m / student-l2 | student-l |"), "{average}");
        assert!(average.contains("| atod | 40.00 ± 24.84 (n=3) | 50.00 ± 0.00 (n=3) |"), "{average}");
        assert!(
            average.contains(
                "student-m / student-l2 (1.7B in the paper) is `student-m` on `a`, `student-l2` on `b`; student-l \
                 (4B in the paper) is `student-l` on `a`, `student-l` on `b`."
            ),
            "{average}"
        );
        let env_a = &md[md.find("### a").unwrap()..md.find("### b").unwrap()];
        assert!(env_a.contains("| method | student-m | student-l |"), "{env_a}");
        assert!(env_a.contains("| atod | 50.00 ± 24.84 (n=3) | 50.00 ± 0.00 (n=3) |"), "{env_a}");
        let env_b = &md[md.find("### b").unwrap()..md.find("## Ablation").unwrap()];
        assert!(env_b.contains("| method | student-l2 | student-l |"), "{env_b}");
        // The ablation ran on a's student-m only, so its table has that column alone.
        assert!(md.contains("| variant | student-m |"), "{md}");
        assert!(md.contains("| atod-const | 40.00 ± 0.00 (Δ 10.00 ± 24.84) |"), "{md}");
        assert!(
            md.contains(
                "| ATOD beats opd | student-m / student-l2 (1.7B in the paper) | +6.67 | 10.00 ± 0.00 | holds (95% CI \
                 above 0) |"
            ),
            "{md}"
        );
        assert!(md.contains("| ATOD beats opd | student-l (4B in the paper) | +2.93 | 0.00 ± 0.00 | no difference"));
        assert!(md.contains("| no annealing (constant α) costs points | student-m (1.7B in the paper) | about +7 |"));
    }

    #[test]
    fn the_paper_sizes_follow_the_presets() {
        assert_eq!([paper_index("student-m", 0), paper_index("student-l", 0), paper_index("student-s", 2)], [1, 2, 0]);
        assert_eq!(paper_index("student-ml", 0), 1);
        assert_eq!(paper_index("student-l2", 0), 1);
        assert_eq!(paper_index("student-l3", 2), 1);
        assert_eq!(paper_index("my-model", 1), 1);
    }

    #[test]
    fn verdicts_cover_every_case() {
        assert_eq!(verdict(&[]).1, "no data");
        assert_eq!(verdict(&[0.1]).1, "one seed only");
        assert_eq!(verdict(&[0.0, 0.0, 0.0]).1, "no difference (every seed equal)");
        assert_eq!(verdict(&[0.1, 0.1, 0.1]).1, "holds (95% CI above 0)");
        assert_eq!(verdict(&[-0.1, -0.12, -0.11]).1, "reversed (95% CI below 0)");
        assert_eq!(verdict(&[-0.1, 0.2, 0.0]).1, "not resolved (95% CI spans 0)");
    }

    #[test]
    fn links_from_the_markdown_file_to_the_grid() {
        assert_eq!(link_prefix(Path::new("RESULTS.md"), Path::new("results/g")), "results/g/");
        assert_eq!(link_prefix(Path::new("results/R.md"), Path::new("results/g")), "g/");
        assert_eq!(link_prefix(Path::new("results/g/R.md"), Path::new("results/g")), "");
    }
}
