//! `atod grid` and `atod report` end to end on fabricated run directories that follow the contract of
//! `atod train --out` (config.toml, metrics.jsonl, evals.jsonl, summary.json). The grid here never trains: its
//! cells are finished already, or fail on a method no trainer knows, so these tests do not depend on the trainer.

use std::fs;
use std::path::Path;

use atod_tests::atod;

/// Writes a finished run of `method` with `seed` whose final success rate is `success`.
fn fabricate_run(dir: &Path, env: &str, method: &str, seed: u64, success: f64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("config.toml"),
        format!("name = \"x\"\nmethod = \"{method}\"\nseed = {seed}\n[env]\nname = \"{env}\"\n[student]\npreset = \"student-s\"\n"),
    )
    .unwrap();
    fs::write(dir.join("metrics.jsonl"), "{\"step\": 1, \"loss/total\": 0.25}\n{\"step\": 2, \"loss/total\": 0.2}\n")
        .unwrap();
    let evals: String = [(0, 0.1), (1, success / 2.0), (2, success)]
        .iter()
        .map(|(step, rate)| {
            format!(
                "{{\"step\": {step}, \"split\": \"valid\", \"episodes\": 8, \"success_rate\": {rate}, \"mean_score\": 0.5, \
                 \"mean_return\": 1.0, \"mean_turns\": 4.0, \"invalid_action_rate\": 0.0}}\n"
            )
        })
        .collect();
    fs::write(dir.join("evals.jsonl"), evals).unwrap();
    fs::write(
        dir.join("summary.json"),
        format!(
            "{{\"status\": \"finished\", \"name\": \"x\", \"env\": \"{env}\", \"student\": \"student-s\", \"method\": \"{method}\", \
             \"seed\": {seed}, \"steps\": 2, \"initial_success_rate\": 0.1, \"final_success_rate\": {success}, \
             \"teacher_success_rate\": 0.8, \"wall_seconds\": 12.5}}"
        ),
    )
    .unwrap();
}

#[test]
fn report_regenerates_tables_and_plots_of_a_grid_and_shows_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid");
    for (method, seed, success) in [("atod", 0, 0.5), ("atod", 1, 0.7), ("grpo", 0, 0.25), ("grpo", 1, 0.25)] {
        fabricate_run(
            &grid.join(format!("cells/counter-student-s-{method}-s{seed}")),
            "counter",
            method,
            seed,
            success,
        );
    }
    let out = atod(&["report", grid.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let md = fs::read_to_string(grid.join("results.md")).unwrap();
    assert_eq!(out.stdout.split("\nwrote ").next().unwrap().trim_end(), md.trim_end());
    // t_{0.975,1} = 12.7062 times s/sqrt(2) = 0.1 gives 127.06 points.
    assert!(md.contains("| student-s | atod | 60.00 ± 127.06 | 10.00 ± 0.00 | 2 of 2 | 2 |"), "{md}");
    assert!(
        md.contains("| atod | 60.00 ± 127.06 (n=2) |") && md.contains("Teacher: 80.00 ± 0.00% success (n=2 seeds)."),
        "{md}"
    );
    let csv = fs::read_to_string(grid.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(
        csv.contains("\ncounter-student-s-atod-s1,counter,student-s,atod,1,finished,0.1,0.7,0.8,2,12.5,0.5,0.5,0,0\n"),
        "{csv}"
    );
    let svg = fs::read_to_string(grid.join("plot-counter-student-s.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2);

    let out = atod(&["report", grid.to_str().unwrap(), "--json"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let rows = out.json();
    assert_eq!(rows.as_array().unwrap().len(), 4);
    assert_eq!(rows[0]["cell"], "counter-student-s-atod-s0");
    assert_eq!(rows[3]["final_success_rate"], 0.25);

    // The paper-layout report, with notes, written where asked and linking the grid's plots from there.
    let notes = dir.path().join("notes.md");
    fs::write(&notes, "## Notes\n\nwritten by hand\n").unwrap();
    let results = dir.path().join("RESULTS.md");
    let args = ["report", grid.to_str().unwrap(), "--markdown", results.to_str().unwrap(), "--notes"];
    let out = atod(&[&args[..], &[notes.to_str().unwrap()]].concat(), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let paper = fs::read_to_string(&results).unwrap();
    assert!(
        paper.contains("| atod | 60.00 ± 127.06 (n=2) |") && paper.contains("| teacher | 80.00 ± 0.00 (n=2) |"),
        "{paper}"
    );
    assert!(paper.contains("](grid/plot-counter-student-s.svg)"), "{paper}");
    assert!(paper.contains("train --config") && paper.trim_end().ends_with("written by hand"), "{paper}");
    assert!(paper.contains("One cell, `counter-student-s-atod-s0`"), "the first finished atod cell: {paper}");

    // --cell names the regenerate-one-cell command's cell; one that is not a finished cell is refused.
    let out = atod(&[&args[..], &[notes.to_str().unwrap(), "--cell", "counter-student-s-atod-s1"]].concat(), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let paper = fs::read_to_string(&results).unwrap();
    assert!(paper.contains("One cell, `counter-student-s-atod-s1`"), "{paper}");
    assert!(paper.contains("--cell counter-student-s-atod-s1\n```"), "the report's own command keeps it: {paper}");
    assert!(paper.contains("--out runs/regen-counter-student-s-atod-s1"), "{paper}");
    let out = atod(&[&args[..], &[notes.to_str().unwrap(), "--cell", "no-such-cell"]].concat(), &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("--cell no-such-cell: not a cell of the grid"), "{}", out.stderr);

    let run = grid.join("cells/counter-student-s-atod-s1");
    let out = atod(&["report", run.to_str().unwrap(), "--markdown", results.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("--markdown needs a grid directory"), "{}", out.stderr);
    let out = atod(&["report", run.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("final_success_rate") && out.stdout.contains("valid"), "{}", out.stdout);
    assert!(fs::read_to_string(run.join("plot.svg")).unwrap().starts_with("<svg"));

    let out = atod(&["report", dir.path().join("nothing").to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("neither a grid directory"), "{}", out.stderr);
}

#[test]
fn grid_skips_finished_cells_reports_a_failing_one_and_still_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("base.toml"),
        "name = \"base\"\nmethod = \"atod\"\nseed = 0\n[env]\nname = \"counter\"\n[student]\npreset = \"student-s\"\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let grid_file = dir.path().join("g.toml");
    fs::write(
        &grid_file,
        format!(
            "[grid]\nname = \"g\"\nbase = \"base.toml\"\nout = \"{}\"\n[axes]\nmethod = [\"atod\"]\nseed = [0, 1]\n\
             [[grid.extra]]\naxes = {{ method = [\"no-such-method\"], seed = [0] }}\n",
            out_dir.display()
        ),
    )
    .unwrap();
    for seed in [0, 1] {
        fabricate_run(&out_dir.join(format!("cells/atod-s{seed}")), "counter", "atod", seed, 0.5);
    }

    let out = atod(&["grid", "--config", grid_file.to_str().unwrap(), "--parallel", "2"], &[]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("cell no-such-method-s0 failed"), "{}", out.stderr);
    assert!(out.stderr.contains("1 of 3 cells failed: no-such-method-s0"), "{}", out.stderr);
    assert!(out.stdout.contains("3 cells: 2 already finished, 0 trained now, 1 failed"), "{}", out.stdout);
    let cell = out_dir.join("cells/no-such-method-s0");
    let cell_toml = fs::read_to_string(cell.join("cell.toml")).unwrap();
    assert!(cell_toml.contains("name = \"no-such-method-s0\"") && cell_toml.contains("method = \"no-such-method\""));
    assert!(fs::read_to_string(cell.join("log.txt")).unwrap().contains("train"));
    assert!(cell.join("failed").exists());
    let csv = fs::read_to_string(out_dir.join("results.csv")).unwrap();
    assert!(csv.contains("\nno-such-method-s0,counter,student-s,no-such-method,0,failed,"), "{csv}");
    assert!(out_dir.join("results.md").exists() && out_dir.join("plot-counter-student-s.svg").exists());
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("grid.json")).unwrap()).unwrap();
    assert_eq!(manifest["axes"], serde_json::json!(["method", "seed"]));

    // A config error names the key and the file, and runs nothing.
    fs::write(&grid_file, "[grid]\nname = \"g\"\nbase = \"base.toml\"\nparalel = 2\n").unwrap();
    let out = atod(&["grid", "--config", grid_file.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("g.toml") && out.stderr.contains("unknown field `paralel`"), "{}", out.stderr);
}

#[test]
fn grid_and_report_have_help() {
    for command in [["grid", "--help"], ["report", "--help"]] {
        let out = atod(&command, &[]);
        assert_eq!(out.code, Some(0), "{command:?}: {}", out.stderr);
        assert!(out.stdout.contains("Usage: atod"), "{command:?}");
    }
}

/// A real 2×2 grid (method × seed) of tiny runs on `counter`: interrupted with Ctrl-C (SIGINT to its process
/// group, as a terminal sends it) once its first cell has finished, then run again, it leaves the finished cell
/// alone, trains (or resumes) the rest and writes the tables and the plot.
#[test]
fn a_real_grid_is_interrupted_resumes_and_writes_tables_and_plots() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let stages = dir.path().join("stages");
    fs::write(
        dir.path().join("base.toml"),
        format!(
            r#"name = "base"
stages_dir = "{}"
[env]
name = "counter"
eval_split = "test"
history = 1
[prompt]
max_prompt_tokens = 256
max_new_tokens = 32
max_turns = 4
[demos]
episodes = 12
[teacher]
preset = "student-s"
steps = 6
batch_size = 8
eval_episodes = 2
[student]
preset = "student-s"
steps = 2
batch_size = 8
eval_episodes = 2
[train]
steps = 3
tasks_per_step = 2
group_size = 2
mini_batch_size = 8
eval_every = 1
eval_episodes = 2
checkpoint_every = 1
"#,
            stages.display()
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let grid_file = dir.path().join("g.toml");
    fs::write(
        &grid_file,
        format!(
            "[grid]\nname = \"g\"\nbase = \"base.toml\"\nout = \"{}\"\n[axes]\nmethod = [\"atod\", \"grpo\"]\nseed = [0, 1]\n",
            out_dir.display()
        ),
    )
    .unwrap();
    let cells = ["atod-s0", "atod-s1", "grpo-s0", "grpo-s1"];
    let summary = |cell: &str| out_dir.join("cells").join(cell).join("summary.json");

    // First attempt: interrupted as soon as one cell has finished.
    let mut child = Command::new(atod_tests::atod_bin())
        .args(["grid", "--config", grid_file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let first = loop {
        if let Some(cell) = cells.iter().find(|c| summary(c).exists()) {
            break *cell;
        }
        assert!(child.try_wait().unwrap().is_none(), "the grid ended before any cell finished");
        assert!(started.elapsed() < Duration::from_secs(600), "no cell finished in 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    };
    // SIGTERM to the whole process group, as Ctrl-C's SIGINT would be, but not ignorable by inheritance: a shell
    // starts background commands with SIGINT ignored, and children keep that, so the test would depend on how it
    // was launched.
    let status = Command::new("kill").args(["-TERM", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(status.success());
    let _ = child.wait().unwrap();
    // Let any child that outlived its parent finish before the grid runs again: wait until no cell's run lock
    // names a live process (on a loaded machine a dying child can take seconds, not the 500 ms once assumed).
    let waiting = Instant::now();
    let live_lock = || {
        cells.iter().any(|c| {
            let lock = out_dir.join("cells").join(c).join("run.lock");
            fs::read_to_string(lock)
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    while live_lock() {
        assert!(waiting.elapsed() < Duration::from_secs(120), "a cell's process outlived the grid by 2 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let finished_before: Vec<&str> = cells.iter().copied().filter(|c| summary(c).exists()).collect();
    assert!(finished_before.contains(&first) && finished_before.len() < cells.len(), "{finished_before:?}");
    let stamp = fs::read_to_string(summary(first)).unwrap();

    // Second attempt: the finished cells are skipped, the others run to the end.
    let out = atod(&["grid", "--config", grid_file.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let expected =
        format!("4 cells: {} already finished, {} trained now", finished_before.len(), 4 - finished_before.len());
    assert!(out.stdout.contains(&expected), "{}", out.stdout);
    assert_eq!(fs::read_to_string(summary(first)).unwrap(), stamp, "a finished cell was run again");
    // Both invocations are in the grid's log: the killed one from the heartbeat it left, then this one.
    assert!(out.stderr.contains("an earlier invocation of this grid was interrupted after"), "{}", out.stderr);
    let log: Vec<serde_json::Value> = fs::read_to_string(out_dir.join("grid-log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["interrupted"], true, "{log:?}");
    assert!(log[0]["seconds"].as_f64().unwrap() >= 0.0, "{log:?}");
    assert_eq!(log[1]["interrupted"], false, "{log:?}");
    assert_eq!(log[1]["trained"].as_u64().unwrap() as usize, 4 - finished_before.len(), "{log:?}");
    let heartbeats: Vec<_> = fs::read_dir(&out_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("grid-running-"))
        .collect();
    assert!(heartbeats.is_empty(), "a heartbeat outlived its grid: {heartbeats:?}");
    for cell in cells {
        let run: serde_json::Value = serde_json::from_str(&fs::read_to_string(summary(cell)).unwrap()).unwrap();
        assert_eq!(run["status"], "finished", "{cell}");
        assert!(run["final_success_rate"].as_f64().unwrap().is_finite(), "{cell}");
        assert_eq!(
            fs::read_to_string(out_dir.join("cells").join(cell).join("metrics.jsonl")).unwrap().lines().count(),
            3
        );
    }
    let csv = fs::read_to_string(out_dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert_eq!(csv.matches(",finished,").count(), 4, "{csv}");
    let md = fs::read_to_string(out_dir.join("results.md")).unwrap();
    assert!(md.contains("| atod |") && md.contains("| grpo |"), "{md}");
    let svg = fs::read_to_string(out_dir.join("plot-counter-student-s.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2, "{svg}");
}
