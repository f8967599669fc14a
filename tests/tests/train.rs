//! The pipeline end to end through the real CLI: demonstrations → tokenizer → SFT (teacher and student) → a
//! step of each method on each environment, with metrics, checkpoints and evaluations checked for finite
//! numbers; and a resumed run reproducing the metrics of an uninterrupted one.

use std::path::Path;

use atod_tests::atod;
use serde_json::Value;

/// A train config small enough for CI: tiny models, few demonstrations, short episodes.
fn config(dir: &Path, env: &str, env_config: &str, eval_split: &str, method: &str, steps: u64) -> String {
    format!(
        r#"name = "e2e"
method = "{method}"
seed = 1
stages_dir = "{stages}"
[env]
name = "{env}"
config = {env_config}
eval_split = "{eval_split}"
history = 1
[prompt]
max_prompt_tokens = 640
max_new_tokens = 24
max_turns = 4
[demos]
# Only episodes the expert wins within max_turns are kept: about 1 in 30 of ALFWorld's mini tasks.
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
steps = 3
batch_size = 8
eval_episodes = 2
[train]
steps = {steps}
tasks_per_step = 2
group_size = 2
mini_batch_size = 8
eval_every = 1
eval_episodes = 2
checkpoint_every = 1
"#,
        stages = dir.join("stages").display()
    )
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_finite(line: &Value, what: &str) {
    for (key, value) in line.as_object().unwrap() {
        if let Some(x) = value.as_f64() {
            assert!(x.is_finite(), "{what}: {key} = {x}");
        }
    }
}

fn train(dir: &Path, name: &str, config: &str, extra: &[&str]) -> Value {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = dir.join(name);
    let mut args = vec!["train", "--config", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let run = atod(&args, &[]);
    assert_eq!(run.code, Some(0), "{name}: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

fn every_method_on(env: &str, env_config: &str, eval_split: &str) {
    let dir = tempfile::tempdir().unwrap();
    for method in ["atod", "opd", "grpo"] {
        let summary = train(dir.path(), method, &config(dir.path(), env, env_config, eval_split, method, 1), &[]);
        assert_eq!(summary["status"], "finished");
        // The episodes behind each rate, for its interval: all three are played under the run's evaluation plan
        // ([train] eval_episodes).
        let episodes = ["teacher_episodes", "initial_episodes", "final_episodes"].map(|k| summary[k].as_u64());
        assert_eq!(episodes, [Some(2), Some(2), Some(2)], "{method}");
        let run = dir.path().join(method);
        let metrics = jsonl(&run.join("metrics.jsonl"));
        assert_eq!(metrics.len(), 1);
        assert_finite(&metrics[0], method);
        assert!(metrics[0]["loss/total"].as_f64().is_some(), "{method}: {:?}", metrics[0]);
        let evals = jsonl(&run.join("evals.jsonl"));
        assert_eq!(evals.iter().map(|e| e["step"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1]);
        evals.iter().for_each(|e| assert_finite(e, method));
        for file in
            ["checkpoints/step-1/model.safetensors", "checkpoints/step-1/optimizer.safetensors", "final/config.json"]
        {
            assert!(run.join(file).exists(), "{method}: no {file}");
        }
    }
    // The stages were built once and shared by the three runs: one teacher, one student initialisation.
    let sft: Vec<_> = std::fs::read_dir(dir.path().join("stages"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("sft-"))
        .collect();
    assert_eq!(sft.len(), 2);
}

#[test]
fn every_method_trains_on_alfworld() {
    every_method_on("alfworld", r#"{ preset = "mini" }"#, "valid_seen");
}

#[test]
fn every_method_trains_on_webshop() {
    every_method_on("webshop", "{}", "eval");
}

#[test]
fn every_method_trains_on_searchqa() {
    every_method_on("searchqa", "{}", "test");
}

/// A student distilled from itself (teacher and student the same stage) sees no OPD advantage, at a rollout
/// temperature other than 1 too: the teacher scores at the temperature of the behaviour log-probs. (Scored at 1
/// against a student sampled at 0.6, every confident token's advantage was biased down.)
#[test]
fn a_student_distilled_from_itself_sees_no_opd_advantage() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), "alfworld", r#"{ preset = "mini" }"#, "valid_seen", "opd", 1);
    let student = base.find("[student]").unwrap();
    let loop_at = base.find("[train]").unwrap();
    let teacher = &base[base.find("[teacher]").unwrap()..student];
    let same = format!("{}{}{}", &base[..student], teacher.replace("[teacher]", "[student]"), &base[loop_at..])
        .replace("[train]\n", "[train]\ntemperature = 0.6\n");
    train(dir.path(), "self", &same, &[]);
    let metrics = jsonl(&dir.path().join("self/metrics.jsonl"));
    let opd = metrics[0]["adv/opd_mean"].as_f64().unwrap();
    assert!(opd.abs() < 1e-3, "adv/opd_mean = {opd}");
    // The same check fails for a genuinely different teacher: the test can tell the two apart.
    train(dir.path(), "differ", &base.replace("[train]\n", "[train]\ntemperature = 0.6\n"), &[]);
    let metrics = jsonl(&dir.path().join("differ/metrics.jsonl"));
    let opd = metrics[0]["adv/opd_mean"].as_f64().unwrap();
    assert!(opd.abs() > 1e-2, "adv/opd_mean = {opd}");
}

/// A student that starts as a snapshot of the teacher's SFT: the teacher's stage keeps the snapshot (a model
/// other than its final one), and the run's student before training is that snapshot, evaluated as `atod eval`
/// evaluates it.
#[test]
fn a_student_can_start_from_a_snapshot_of_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), "alfworld", r#"{ preset = "mini" }"#, "valid_seen", "atod", 1);
    let text = format!(
        "{}[student]\npreset = \"student-s\"\nfrom_teacher_step = 6\neval_episodes = 2\n{}",
        &base[..base.find("[student]").unwrap()],
        &base[base.find("[train]").unwrap()..]
    );
    train(dir.path(), "snap", &text, &[]);
    let stages: Vec<_> = std::fs::read_dir(dir.path().join("stages"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("sft-") && p.is_dir())
        .collect();
    assert_eq!(stages.len(), 1, "only the teacher is trained: {stages:?}");
    let snapshot = stages[0].join("snapshots/step-6");
    let weights = |d: &Path| std::fs::read(d.join("model/model.safetensors")).unwrap();
    assert!(snapshot.join("config.toml").exists());
    assert_ne!(weights(&snapshot), weights(&stages[0]), "the snapshot is not the final teacher");
    let run = atod(
        &[
            "eval",
            "--env",
            "alfworld",
            "--policy",
            snapshot.to_str().unwrap(),
            "--split",
            "valid_seen",
            "--episodes",
            "2",
            "--json",
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let direct: Value = serde_json::from_str(&run.stdout).unwrap();
    let before = &jsonl(&dir.path().join("snap/evals.jsonl"))[0];
    assert_eq!(before["step"], 0);
    for key in ["success_rate", "invalid_action_rate", "mean_turns"] {
        assert_eq!(before[key], direct[key], "{key}: {direct}");
    }
}

/// A run killed with SIGKILL once its first checkpoint is on disk, then restarted with `--resume`, loses only
/// the steps after that checkpoint and replays them exactly as the uninterrupted run did (same random streams).
#[test]
fn a_run_killed_with_sigkill_resumes_and_reproduces_the_uninterrupted_metrics() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "alfworld", r#"{ preset = "mini" }"#, "valid_seen", "atod", 4);
    train(dir.path(), "straight", &text, &[]);
    let straight = dir.path().join("straight");

    let path = dir.path().join("cut.toml");
    std::fs::write(&path, &text).unwrap();
    let cut = dir.path().join("cut");
    let args = ["train", "--config", path.to_str().unwrap(), "--out", cut.to_str().unwrap()];
    let mut child =
        Command::new(atod_tests::atod_bin()).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while !cut.join("checkpoints/step-1/state.json").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(started.elapsed() < Duration::from_secs(600), "no checkpoint in 10 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!cut.join("summary.json").exists(), "the run finished before it could be killed");

    let resumed = atod(&[&args[..], &["--resume"]].concat(), &[]);
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert!(resumed.stderr.contains("resuming"), "{}", resumed.stderr);
    let a = jsonl(&straight.join("metrics.jsonl"));
    let b = jsonl(&cut.join("metrics.jsonl"));
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        for (key, value) in x.as_object().unwrap() {
            if !key.starts_with("time/") {
                assert_eq!(Some(value), y.get(key), "step {}: {key}", x["step"]);
            }
        }
    }
    let evals = |run: &Path| -> Vec<(u64, f64)> {
        jsonl(&run.join("evals.jsonl"))
            .iter()
            .map(|e| (e["step"].as_u64().unwrap(), e["success_rate"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(evals(&straight), evals(&cut));
    // Without --resume, an existing run is refused rather than overwritten.
    let again = atod(&args, &[]);
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("already holds a finished run"), "{}", again.stderr);
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config(dir.path(), "alfworld", "{}", "valid_seen", "ppo", 1);
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let run = atod(&["train", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("bad.toml") && run.stderr.contains("unknown method `ppo`"), "{}", run.stderr);
    assert!(run.stderr.contains("atod, opd, grpo"), "{}", run.stderr);
    let typo =
        config(dir.path(), "alfworld", "{}", "valid_seen", "atod", 1).replace("[train]\n", "[train]\nstepz = 3\n");
    std::fs::write(&path, typo).unwrap();
    let run = atod(&["train", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("bad.toml") && run.stderr.contains("stepz"), "{}", run.stderr);
}

/// Writes `dir/sft.toml`: an SFT stage of `student-s` on `counter` (targets up to 5), `max_turns` turns a
/// turn limit, `episodes` demonstration episodes, and `model` as the rest of its `[model]` table.
fn counter_sft(dir: &Path, max_turns: usize, episodes: u64, model: &str) -> std::path::PathBuf {
    let config = dir.join("sft.toml");
    let text = format!(
        r#"name = "counter-sft"
stages_dir = "{}"
[env]
name = "counter"
config = {{ max_target = 5 }}
eval_split = "test"
history = 1
[prompt]
max_prompt_tokens = 256
max_new_tokens = 32
max_turns = {max_turns}
[demos]
episodes = {episodes}
[tokenizer]
vocab_size = 384
[model]
preset = "student-s"
{model}
"#,
        dir.join("stages").display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Supervised fine-tuning on the expert's demonstrations beats a uniformly random policy: on `counter`, where a
/// tiny model learns the task in a hundred-odd steps (22% against random's 3% here), on the same held-out tasks.
#[test]
fn sft_beats_a_random_policy() {
    let dir = tempfile::tempdir().unwrap();
    let config = counter_sft(dir.path(), 8, 100, "steps = 150\nbatch_size = 16\neval_episodes = 32");
    let sft = atod(&["sft", "--config", config.to_str().unwrap(), "--json"], &[]);
    assert_eq!(sft.code, Some(0), "{}", sft.stderr);
    let sft = sft.json();
    let trained = sft["result"]["eval"]["success_rate"].as_f64().unwrap();
    let env_config = dir.path().join("counter.toml");
    std::fs::write(&env_config, "max_target = 5\n").unwrap();
    let random = atod(
        &[
            "eval",
            "--env",
            "counter",
            "--config",
            env_config.to_str().unwrap(),
            "--policy",
            "random",
            "--split",
            "test",
            "--episodes",
            "32",
            "--json",
        ],
        &[],
    );
    assert_eq!(random.code, Some(0), "{}", random.stderr);
    let random = random.json()["success_rate"].as_f64().unwrap();
    assert!(trained > random + 0.1, "SFT {trained} vs random {random}");
    // The model evaluates the same way through `atod eval`, which reads the stage's config.toml.
    let model = sft["model"].as_str().unwrap();
    let eval =
        atod(&["eval", "--env", "counter", "--policy", model, "--split", "test", "--episodes", "32", "--json"], &[]);
    assert_eq!(eval.code, Some(0), "{}", eval.stderr);
    assert_eq!(eval.json()["success_rate"].as_f64().unwrap(), trained);
}

/// DAgger in an SFT stage: the rounds run where the config says, each adds the labelled states the model reached
/// (every one of its turns, so at least one per episode), and the stage still trains and evaluates.
#[test]
fn an_sft_stage_with_dagger_adds_the_states_its_model_reached() {
    let dir = tempfile::tempdir().unwrap();
    let model = "steps = 30\nbatch_size = 8\neval_episodes = 8\ndagger = { start = 10, every = 15, episodes = 6 }";
    let config = counter_sft(dir.path(), 4, 40, model);
    let sft = atod(&["sft", "--config", config.to_str().unwrap(), "--json"], &[]);
    assert_eq!(sft.code, Some(0), "{}", sft.stderr);
    let sft = sft.json();
    let stage = Path::new(sft["stage"].as_str().unwrap());
    let rounds = jsonl(&stage.join("dagger.jsonl"));
    assert_eq!(rounds.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [10, 25]);
    let mut before = None;
    for (k, round) in rounds.iter().enumerate() {
        assert_eq!(round["round"].as_u64(), Some(k as u64 + 1));
        assert_eq!(round["episodes"].as_u64(), Some(6));
        let added = round["transcripts_added"].as_u64().unwrap();
        assert!((6..=24).contains(&added), "{round}");
        let total = round["transcripts"].as_u64().unwrap();
        if let Some(before) = before {
            assert_eq!(total, before + added);
        }
        before = Some(total);
    }
    assert_eq!(sft["result"]["transcripts"].as_u64(), before);
    assert_eq!(jsonl(&stage.join("metrics.jsonl")).len(), 30);
}

/// The update split into shards (each on its own replica and thread, gradients summed with the aggregation's
/// weights) is the whole mini-batch's update: one and three shards give the same first step, loss and gradient
/// norm included, for token-mean and for a sequence-mean aggregation.
#[test]
fn sharded_updates_equal_whole_mini_batch_updates() {
    let dir = tempfile::tempdir().unwrap();
    for aggregation in ["token-mean", "seq-mean-token-mean"] {
        let mut firsts = Vec::new();
        for shards in [1, 3] {
            let text = config(dir.path(), "alfworld", r#"{ preset = "mini" }"#, "valid_seen", "atod", 1)
                .replace("checkpoint_every = 1\n", &format!("checkpoint_every = 1\nshards = {shards}\n"))
                + &format!("[loss]\naggregation = \"{aggregation}\"\n");
            let name = format!("{aggregation}-{shards}");
            train(dir.path(), &name, &text, &[]);
            firsts.push(jsonl(&dir.path().join(&name).join("metrics.jsonl")).remove(0));
        }
        for key in ["loss/total", "loss/pg", "actor/grad_norm", "actor/entropy", "adv/mean", "train/updates"] {
            let (a, b) = (firsts[0][key].as_f64().unwrap(), firsts[1][key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{aggregation} {key}: {a} vs {b}");
        }
    }
}

/// Every component the `[loss]` table accepts trains end to end: `kl` (k3 KL to the frozen student of step 0)
/// and `gkd` (the full-vocabulary reverse KL to the teacher), each reported under its own key, non-negative.
#[test]
fn the_kl_and_gkd_components_train() {
    let dir = tempfile::tempdir().unwrap();
    for (name, component, key) in [("kl", "kl = 0.01", "loss/kl"), ("gkd", "gkd = 0.1", "loss/gkd")] {
        // One mini-batch a step, so that step 0's update sees the student exactly as the reference.
        let text = config(dir.path(), "counter", "{ max_target = 5 }", "test", "atod", 2)
            .replace("mini_batch_size = 8", "mini_batch_size = 64")
            + &format!("[loss.components]\n{component}\n");
        let summary = train(dir.path(), name, &text, &[]);
        assert_eq!(summary["status"], "finished", "{name}");
        let metrics = jsonl(&dir.path().join(name).join("metrics.jsonl"));
        assert_eq!(metrics.len(), 2, "{name}");
        for line in &metrics {
            assert_finite(line, name);
            let value = line[key].as_f64().unwrap_or_else(|| panic!("{name}: no {key} in {line}"));
            assert!(value >= -1e-6, "{name}: {key} = {value}");
        }
        // At step 0 the student is its own reference: the k3 KL is (numerically) zero, and then it is not.
        if name == "kl" {
            assert!(metrics[0][key].as_f64().unwrap() < 1e-5, "{:?}", metrics[0]);
            assert!(metrics[1][key].as_f64().unwrap() > 1e-5, "{:?}", metrics[1]);
        }
    }
}

/// The learning rate and the rollout temperature are schedules over the online steps like every other scalar:
/// `actor/lr` follows the expression step by step; a schedule that is not positive is refused at load, as is the
/// removed `train.warmup` key (with the schedule that replaces it), all before any stage is built.
#[test]
fn the_learning_rate_and_temperature_are_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), "counter", "{ max_target = 5 }", "test", "atod", 3);
    let text = base.replace(
        "[train]\n",
        "[train]\nlr = \"cosine(3e-4, 3e-5, total)\"\ntemperature = \"linear(1.0, 0.7, total)\"\n",
    );
    train(dir.path(), "scheduled", &text, &[]);
    let lrs: Vec<f64> =
        jsonl(&dir.path().join("scheduled/metrics.jsonl")).iter().map(|m| m["actor/lr"].as_f64().unwrap()).collect();
    let expected = [3e-4, 3e-5 + 2.7e-4 * 0.5 * (1.0 + (std::f64::consts::PI / 3.0).cos()), 3e-5 + 2.7e-4 * 0.25];
    for (got, want) in lrs.iter().zip(expected) {
        assert!((got - want).abs() < 1e-12, "{lrs:?} vs {expected:?}");
    }
    for (setting, needle) in [
        ("temperature = \"linear(1, -1, total)\"", "`train.temperature` must be positive at every step"),
        ("warmup = 5", "lr = \"warmup(5, 0.0003)\""),
        ("lr = \"linear(1e-3, -1e-3, total)\"", "`train.lr` must be finite and >= 0 at every step"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, base.replace("[train]\n", &format!("[train]\n{setting}\n"))).unwrap();
        let started = std::time::Instant::now();
        let run = atod(&["train", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(run.code, Some(1), "{setting}");
        assert!(run.stderr.contains(needle), "{setting}: {}", run.stderr);
        assert!(started.elapsed().as_secs_f64() < 2.0, "{setting}: refused only after {:?}", started.elapsed());
    }
}

/// A `[loss.components]` entry the trainer cannot feed, or does not know, is refused when the config loads,
/// naming the key, before any stage is built.
#[test]
fn a_loss_component_the_trainer_cannot_feed_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "counter", "{ max_target = 5 }", "test", "atod", 1)
        + "[loss.components]\nentropy = 0.01\nbogus = 0.1\n";
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let started = std::time::Instant::now();
    let run = atod(&["train", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("loss.components.bogus") && run.stderr.contains("kl, entropy, gkd"), "{}", run.stderr);
    assert!(started.elapsed().as_secs_f64() < 2.0);
    assert!(!dir.path().join("stages").exists(), "no stage was built");
}

/// `atod bench step` builds a config's stages (untimed), then times its first online steps phase by phase:
/// the phases add up to the step, every phase with tokens has a rate, and the peak memory is reported.
#[test]
fn bench_step_times_the_phases_of_online_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config(dir.path(), "counter", "{ max_target = 5 }", "test", "atod", 4)).unwrap();
    let run = atod(&["bench", "step", "--config", path.to_str().unwrap(), "--steps", "2", "--json"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["steps"], 2);
    assert_eq!(report["step_seconds"].as_array().unwrap().len(), 2);
    let mean = report["mean_step_seconds"].as_f64().unwrap();
    let phases = report["phases"].as_object().unwrap();
    let names: Vec<&str> = phases.keys().map(String::as_str).collect();
    assert_eq!(names, ["environment", "generation", "other", "scoring", "update"]);
    let sum: f64 = phases.values().map(|p| p["seconds"].as_f64().unwrap()).sum();
    assert!(mean > 0.0 && (sum - mean).abs() < 1e-6 * mean.max(1.0) + 1e-9, "{sum} vs {mean}");
    for name in ["generation", "scoring", "update"] {
        assert!(phases[name]["tokens_per_s"].as_f64().unwrap() > 0.0, "{name}: {}", phases[name]);
    }
    assert!(phases["other"]["tokens_per_s"].is_null());
    assert!(report["mean_prompt_tokens"].as_f64().unwrap() > report["mean_response_tokens"].as_f64().unwrap());
    if std::path::Path::new("/proc/self/status").exists() {
        assert!(report["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    }
}
