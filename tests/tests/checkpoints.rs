//! Hugging Face checkpoint directories as a run's teacher and student, through the real CLI: the committed tiny
//! Qwen3 (`atod-models/tests/fixtures/qwen3-tiny`, with its `tokenizer.json`) trains in place of SFT stages,
//! plays in `atod eval`, lends its tokenizer to an SFT stage beside it, and a student with another tokenizer is
//! refused with both files named.

use std::path::{Path, PathBuf};

use atod_models::ChatTokenizer;
use atod_tests::atod;
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../atod-models/tests/fixtures/qwen3-tiny").canonicalize().unwrap()
}

/// `configs/smoke.toml` cut to two online steps, its stages under `dir`, with `teacher` and `student` as the
/// bodies of its `[teacher]` and `[student]` tables.
fn smoke(dir: &Path, teacher: &str, student: &str) -> String {
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")).unwrap();
    let head = &base[..base.find("[teacher]").unwrap()];
    let train = &base[base.find("[train]").unwrap()..];
    let train = train.replace("steps = 6", "steps = 2");
    // `stages_dir` is a top-level key: it goes first, before `head`'s own top-level keys and tables.
    format!(
        "stages_dir = \"{}\"\n{head}[teacher]\n{teacher}\n\n[student]\n{student}\n\n{train}",
        dir.join("stages").display()
    )
}

fn run_train(dir: &Path, name: &str, config: &str) -> atod_tests::Output {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = dir.join(name);
    atod(&["train", "--config", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"], &[])
}

fn stage_kinds(dir: &Path) -> Vec<String> {
    let mut kinds: Vec<String> = std::fs::read_dir(dir.join("stages"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().split('-').next().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn a_checkpoint_teacher_and_student_train_in_place_of_sft_stages() {
    let dir = tempfile::tempdir().unwrap();
    // A relative path is found beside the config file.
    let local = dir.path().join("qwen3");
    std::fs::create_dir(&local).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), local.join(entry.file_name())).unwrap();
    }
    let model = "checkpoint = \"qwen3\"\neval_episodes = 4";
    let run = run_train(dir.path(), "ckpt", &smoke(dir.path(), model, model));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["student"], "checkpoint:qwen3");
    assert_eq!(summary["steps"], 2);
    let metrics = std::fs::read_to_string(dir.path().join("ckpt/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    for line in metrics.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert!(line["loss/total"].as_f64().unwrap().is_finite(), "{line}");
    }
    // No demonstrations, tokenizer or SFT: one stage for the checkpoint's evaluations.
    assert_eq!(stage_kinds(dir.path()), ["checkpoint"]);
    // The final export is a Qwen3 checkpoint with the same tokenizer.
    let exported: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ckpt/final/config.json")).unwrap()).unwrap();
    assert_eq!(exported["model_type"], "qwen3");
    let tokenizer = |d: &Path| ChatTokenizer::from_file(d.join("tokenizer.json")).unwrap().fingerprint();
    assert_eq!(tokenizer(&dir.path().join("ckpt/final")), tokenizer(&fixture()));
}

#[test]
fn a_checkpoint_teacher_lends_its_tokenizer_to_an_sft_student() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = format!("checkpoint = \"{}\"\neval_episodes = 2", fixture().display());
    let student = "preset = \"student-s\"\nsteps = 3\nbatch_size = 8\neval_episodes = 2";
    let run = run_train(dir.path(), "mixed", &smoke(dir.path(), &teacher, student));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(stage_kinds(dir.path()), ["checkpoint", "demos", "sft", "sftdata", "tokenizer"]);
    let stage = std::fs::read_dir(dir.path().join("stages"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("tokenizer-"))
        .unwrap();
    let fingerprint = |f: PathBuf| ChatTokenizer::from_file(f).unwrap().fingerprint();
    assert_eq!(fingerprint(stage.join("tokenizer.json")), fingerprint(fixture().join("tokenizer.json")));
}

#[test]
fn a_student_with_another_tokenizer_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    // One merge fewer: another tokenizer that still loads.
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(other.join("tokenizer.json")).unwrap()).unwrap();
    json["model"]["merges"].as_array_mut().unwrap().pop();
    std::fs::write(other.join("tokenizer.json"), json.to_string()).unwrap();
    let teacher = format!("checkpoint = \"{}\"", fixture().display());
    let student = format!("checkpoint = \"{}\"", other.display());
    let run = run_train(dir.path(), "mismatch", &smoke(dir.path(), &teacher, &student));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("differ"), "{}", run.stderr);
    for file in [fixture().join("tokenizer.json"), other.join("tokenizer.json")] {
        assert!(run.stderr.contains(&file.display().to_string()), "{} not named: {}", file.display(), run.stderr);
    }
}

#[test]
fn checkpoint_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = format!("checkpoint = \"{}\"", fixture().display());
    let cases = [
        (format!("preset = \"student-s\"\n{ckpt}"), "give either `preset`"),
        (format!("{ckpt}\nsteps = 10"), "`teacher.steps`"),
        ("eval_episodes = 2".to_owned(), "give a `preset`"),
        ("checkpoint = \"no/such/dir\"".to_owned(), "no config.json"),
    ];
    for (teacher, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, smoke(dir.path(), &teacher, &ckpt)).unwrap();
        let run = atod(&["train", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(run.code, Some(1), "{teacher}: {}", run.stderr);
        assert!(run.stderr.contains(expected) && run.stderr.contains("bad.toml"), "{teacher}: {}", run.stderr);
    }
}

#[test]
fn atod_eval_plays_a_checkpoint_directory() {
    let fixture = fixture();
    let args = ["eval", "--env", "counter", "--policy", fixture.to_str().unwrap(), "--split", "test"];
    let run = atod(&[&args[..], &["--episodes", "3", "--max-new-tokens", "8", "--json"]].concat(), &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["episodes"], 3);
    assert_eq!(report["policy"], fixture.display().to_string());
    // An untrained model: every answer is malformed, and every episode runs to the turn limit.
    assert_eq!(report["invalid_action_rate"], 1.0);
}
