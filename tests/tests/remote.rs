//! Served environments through the real CLI: `atod serve` in one process, `atod eval` and `atod train` on
//! `FAMILY@URL` in another. The expert's evaluation of a served ALFWorld equals the in-process one (issue 23's
//! acceptance), a server killed during `atod eval` ends it with a one-line error or reported losses and never a
//! panic, and a training run whose only server dies stops with a one-line error, its last checkpoint intact and
//! resumable once the server is back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atod_tests::{atod, atod_bin, finish, spawn_atod};
use serde_json::Value;

/// `atod serve` as a child process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `atod serve ENV --port PORT [extra]` (port 0: a free one) and waits until it listens.
    fn start(env: &str, port: u16, extra: &[&str]) -> Self {
        let port = port.to_string();
        let mut child = Command::new(atod_bin())
            .args(["serve", env, "--port", &port])
            .args(extra)
            .env_remove("ATOD_PLUGIN_PATH")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("serving ") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "atod serve {env} ended before listening");
        }
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { child, url }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asserts an `atod` that failed printed exactly one error line, with `needle`, and no panic.
fn assert_one_line_error(stderr: &str, needle: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line:\n{stderr}");
    assert!(lines[0].contains(needle), "`{needle}` in:\n{stderr}");
    let after: Vec<&str> = stderr.lines().skip_while(|l| !l.starts_with("error")).skip(1).collect();
    assert!(after.iter().all(|l| l.trim().is_empty()), "nothing after the error line:\n{stderr}");
}

fn eval_json(env: &str, policy: &str, split: &str, episodes: &str) -> Value {
    let out =
        atod(&["eval", "--env", env, "--policy", policy, "--split", split, "--episodes", episodes, "--json"], &[]);
    assert_eq!(out.code, Some(0), "atod eval --env {env}: {}", out.stderr);
    out.json()
}

#[test]
fn the_expert_on_a_served_alfworld_scores_as_in_process() {
    let server = Server::start("alfworld", 0, &[]);
    let local = eval_json("alfworld", "expert", "valid_unseen", "134");
    let family = eval_json(&format!("alfworld@{}", server.url), "expert", "valid_unseen", "134");
    let plain = eval_json(&format!("atod@{}", server.url), "expert", "valid_unseen", "134");
    // The overall summary's fields are at the top level of `atod eval --json`.
    let overall = |v: &Value, key: &str| v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"));
    assert!(overall(&local, "success_rate") > 0.5, "{local}");
    for (name, served) in [("alfworld@", &family), ("atod@", &plain)] {
        for key in ["success_rate", "mean_turns", "invalid_action_rate", "episodes"] {
            assert_eq!(overall(served, key), overall(&local, key), "{name} {key}");
        }
    }
    // atod's protocol reproduces atod's own rewards too, and every task type's row.
    for key in ["mean_score", "mean_return"] {
        assert_eq!(overall(&plain, key), overall(&local, key), "atod@ {key}");
    }
    assert_eq!(plain["by_task_type"], local["by_task_type"]);
    // Through AgentGym's routes the rewards are AgentGym's: 1 for a won episode, not atod's success reward.
    assert_eq!(overall(&family, "mean_return"), overall(&local, "success_rate"));
}

#[test]
fn killing_the_server_during_eval_ends_it_cleanly() {
    let mut server = Server::start("alfworld", 0, &[]);
    let env = format!("alfworld@{}", server.url);
    // Random play of 8 passes over the split: long enough that the server dies in the middle.
    let eval = spawn_atod(&[
        "eval",
        "--env",
        &env,
        "--policy",
        "random",
        "--split",
        "valid_unseen",
        "--episodes",
        "1072",
        "--json",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    let (code, stdout, stderr) = finish(eval, Duration::from_secs(120), "atod eval after its server died");
    assert!(!stderr.contains("panicked"), "{stderr}");
    match code {
        Some(0) => {
            let report: Value = serde_json::from_str(&stdout).unwrap();
            assert!(report["env_errors"].as_u64().unwrap_or(0) > 0, "{report}");
        }
        Some(1) => assert_one_line_error(&stderr, "environment unavailable at http://127.0.0.1:"),
        other => panic!("atod eval ended with {other:?}:\n{stderr}"),
    }
}

/// `configs/smoke.toml` on a served counter, teacher and student the committed tiny Qwen3 (no SFT stages),
/// checkpointed every step, with `steps` online steps.
fn served_smoke(dir: &Path, url: &str, steps: u64) -> String {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../atod-models/tests/fixtures/qwen3-tiny");
    let fixture = fixture.canonicalize().unwrap();
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")).unwrap();
    let head = &base[..base.find("[teacher]").unwrap()];
    let head = head.replace("name = \"counter\"", &format!("name = \"atod@{url}\"")).replace(
        "config = { max_target = 5 }",
        // The environment's own config is the server's; the client's keys only.
        "config = { timeout_s = 5 }",
    );
    let train = &base[base.find("[train]").unwrap()..];
    let train = train
        .replace("steps = 6", &format!("steps = {steps}"))
        .replace("eval_every = 2", "eval_every = 1000")
        .replace("checkpoint_every = 2", "checkpoint_every = 1");
    let model = format!("checkpoint = \"{}\"\neval_episodes = 4", fixture.display());
    format!(
        "stages_dir = \"{}\"\n{head}[teacher]\n{model}\n\n[student]\n{model}\n\n{train}",
        dir.join("stages").display()
    )
}

fn checkpoints(out: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(out.join("checkpoints"))
        .map(|entries| {
            entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok()).collect()
        })
        .unwrap_or_default();
    steps.sort_unstable();
    steps
}

#[test]
fn a_run_whose_server_dies_stops_with_one_line_and_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let counter_config = dir.path().join("counter.toml");
    std::fs::write(&counter_config, "max_target = 5\n").unwrap();
    let mut server = Server::start("counter", 0, &["--config", counter_config.to_str().unwrap()]);
    let port = server.port();
    let config_path = dir.path().join("served.toml");
    let steps = 30;
    std::fs::write(&config_path, served_smoke(dir.path(), &server.url, steps)).unwrap();
    let out = dir.path().join("run");
    let (config, out_dir) = (config_path.to_str().unwrap(), out.to_str().unwrap());
    let train = spawn_atod(&["train", "--config", config, "--out", out_dir]);

    // The server dies once the run has written its second checkpoint.
    let started = Instant::now();
    while checkpoints(&out).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "no second checkpoint within 5 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    let (code, _, stderr) = finish(train, Duration::from_secs(120), "atod train after its server died");
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_line_error(&stderr, "environment unavailable at http://127.0.0.1:");
    let kept = checkpoints(&out);
    let last = *kept.last().unwrap();
    assert!(last < steps, "the run stopped before its end: {kept:?}");
    assert!(!out.join("summary.json").exists());

    // Served again at the same address, the run resumes from its last checkpoint and finishes.
    let _server = Server::start("counter", port, &["--config", counter_config.to_str().unwrap()]);
    let resumed = atod(&["train", "--config", config, "--out", out_dir, "--resume", "--json"], &[]);
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps_logged: Vec<u64> =
        metrics.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert_eq!(steps_logged.last(), Some(&(steps - 1)), "the resumed run reaches the end");
    assert!(out.join("summary.json").exists());
}

#[test]
fn the_python_example_plays_a_served_environment() {
    // The README's Python trainer template, standard library only.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/play_served.py");
    let Ok(python) = Command::new("python3").arg("--version").output() else {
        panic!("python3 is needed to check examples/python/play_served.py");
    };
    assert!(python.status.success());
    let server = Server::start("alfworld", 0, &[]);
    let expected = eval_json("alfworld", "expert", "valid_unseen", "10");
    for policy in ["expert", "random"] {
        let out = Command::new("python3")
            .arg(&script)
            .args(["--url", &server.url, "--split", "valid_unseen", "--episodes", "10", "--policy", policy])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{policy}: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 11, "{stdout}");
        let summary = lines.last().unwrap();
        assert_eq!(summary["env"], "alfworld");
        if policy == "expert" {
            assert_eq!(summary["success_rate"], expected["success_rate"], "{stdout}");
        }
    }
}
