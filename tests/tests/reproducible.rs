//! The reproducible mode end to end: the same short pipeline (demonstrations, tokenizer, the teacher's and the
//! student's SFT, online ATOD steps with evaluations) trained at two instruction-set levels of atod's kernels
//! (forced with `--isa`) and with 1 and 2 rayon threads gives the same metrics, evaluations and weights, bit for
//! bit.
//!
//! What forcing covers: atod's own kernels (the fused model's matrix products of `cpu::fixed`, attention, the
//! few-row decode products) run their AVX-512, AVX2 or portable builds as told. The dependencies' SIMD (gemm's
//! and burn-flex's) cannot be capped at run time; the reproducible mode keeps every operation whose result
//! would depend on it off them (ARCHITECTURE.md, "Reproducible mode"), which is what makes the bits the same on
//! another CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atod_models::cpu::isa::{detected, Level};
use atod_tests::atod;
use serde_json::Value;

fn config(dir: &Path, name: &str) -> String {
    format!(
        r#"name = "repro"
method = "atod"
seed = 3
reproducible = true
stages_dir = "{stages}"
[env]
name = "alfworld"
config = {{ preset = "mini", task_types = [1] }}
eval_split = "valid_seen"
history = 1
[prompt]
max_prompt_tokens = 512
max_new_tokens = 24
max_turns = 4
[demos]
episodes = 200
[tokenizer]
vocab_size = 512
[teacher]
preset = "student-s"
steps = 12
batch_size = 8
eval_episodes = 4
[student]
preset = "student-s"
steps = 4
batch_size = 8
eval_episodes = 4
[train]
steps = 3
tasks_per_step = 2
group_size = 4
mini_batch_size = 8
temperature = 0.9
eval_every = 1
eval_episodes = 4
checkpoint_every = 1
"#,
        stages = dir.join(format!("stages-{name}")).display()
    )
}

/// Every `.safetensors` file under `root`, by its path relative to `root`, with its bytes.
fn weights(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "safetensors") {
                out.insert(path.strip_prefix(root).unwrap().to_owned(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The lines of a JSONL file without their `time/*` keys (wall times differ from run to run).
fn lines_without_times(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(map) = v.as_object_mut() {
                map.retain(|k, _| !k.starts_with("time/") && k != "wall_seconds");
            }
            v
        })
        .collect()
}

struct Run {
    name: String,
    summary: Value,
    metrics: Vec<Value>,
    evals: Vec<Value>,
    run_weights: BTreeMap<PathBuf, Vec<u8>>,
    stage_weights: BTreeMap<PathBuf, Vec<u8>>,
}

fn train(dir: &Path, level: Level, threads: usize) -> Run {
    let name = format!("{}-{threads}t", level.name());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config(dir, &name)).unwrap();
    let out = dir.join(&name);
    let threads = threads.to_string();
    let args =
        ["--isa", level.name(), "train", "--config", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"];
    let run = atod(&args, &[("RAYON_NUM_THREADS", &threads)]);
    assert_eq!(run.code, Some(0), "{name}: {}", run.stderr);
    let mut summary = run.json();
    assert_eq!(summary["reproducible"], true, "{name}");
    assert_eq!(summary["isa"], level.name(), "{name}");
    let map = summary.as_object_mut().unwrap();
    map.remove("wall_seconds");
    map.remove("isa");
    let stages = dir.join(format!("stages-{name}"));
    // The stage directories' names are keys of their configs, the same in every run.
    let run = Run {
        summary,
        metrics: lines_without_times(&out.join("metrics.jsonl")),
        evals: lines_without_times(&out.join("evals.jsonl")),
        run_weights: weights(&out),
        stage_weights: weights(&stages),
        name,
    };
    assert!(run.metrics.len() == 3 && run.evals.len() >= 3, "{}: {} metrics lines", run.name, run.metrics.len());
    assert!(!run.run_weights.is_empty() && !run.stage_weights.is_empty(), "{}: no weights written", run.name);
    run
}

fn assert_same(a: &Run, b: &Run) {
    let what = format!("{} against {}", b.name, a.name);
    assert_eq!(a.summary, b.summary, "summary, {what}");
    for (step, (x, y)) in a.metrics.iter().zip(&b.metrics).enumerate() {
        assert_eq!(x, y, "metrics of step {}, {what}", step + 1);
    }
    assert_eq!(a.metrics.len(), b.metrics.len(), "metrics lines, {what}");
    assert_eq!(a.evals, b.evals, "evaluations, {what}");
    for (label, x, y) in [("run", &a.run_weights, &b.run_weights), ("stage", &a.stage_weights, &b.stage_weights)] {
        assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{label} weight files, {what}");
        for (file, bytes) in x {
            assert!(bytes == &y[file], "{label} weights {} differ, {what}", file.display());
        }
    }
}

#[test]
fn training_is_bit_identical_across_instruction_set_levels_and_thread_counts() {
    let best = detected();
    let lower = match best {
        Level::V4 => Level::V3,
        Level::V3 | Level::Portable => Level::Portable,
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = train(dir.path(), best, 2);
    // The runs learn something to compare: the loss moves the weights away from the student's start.
    assert!(reference.metrics.iter().all(|m| m["loss/total"].as_f64().is_some_and(f64::is_finite)));
    let one_thread = train(dir.path(), best, 1);
    assert_same(&reference, &one_thread);
    let lower_level = train(dir.path(), lower, 2);
    assert_same(&reference, &lower_level);
}
