//! Data-parallel training through the real CLI (issue 24's acceptance): `atod orchestrator` and `atod train
//! --nodes 2 --node-index 0|1 --orchestrator 127.0.0.1:P` on the loopback. Two nodes finish with one metrics
//! line per step and the same weight hash on both at every step, and match one node's metrics up to float
//! rounding; a killed node stops the other within 60 s with one error line naming it, the last checkpoint
//! intact and resumable; a node with another config is refused when it joins; SFT stages train on every node
//! alike, as on machines that share no files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atod_tests::{atod_bin, finish, spawn_atod};
use serde_json::Value;

/// A port P whose P + 1 is free too (burn's orchestrator and atod's control service).
fn free_port_pair() -> u16 {
    loop {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
        if port < 65000 && std::net::TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn orchestrator(port: u16) -> Proc {
    let child = Command::new(atod_bin())
        .args(["orchestrator", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

fn node(config: &Path, out: &Path, nodes: usize, index: usize, port: u16, extra: &[&str]) -> Child {
    let (nodes, index, orchestrator) = (nodes.to_string(), index.to_string(), format!("127.0.0.1:{port}"));
    let mut args = vec!["train", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"];
    args.extend(["--nodes", &nodes, "--node-index", &index, "--orchestrator", &orchestrator]);
    args.extend(extra);
    spawn_atod(&args)
}

/// `configs/smoke.toml` with the committed tiny Qwen3 as teacher and student (no SFT stages), `steps` online
/// steps, checkpointed every step.
fn smoke(dir: &Path, steps: u64, lr: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../atod-models/tests/fixtures/qwen3-tiny");
    let fixture = fixture.canonicalize().unwrap();
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")).unwrap();
    let head = &base[..base.find("[teacher]").unwrap()];
    let train = base[base.find("[train]").unwrap()..]
        .replace("steps = 6", &format!("steps = {steps}"))
        .replace("lr = 3e-4", &format!("lr = {lr}"))
        .replace("checkpoint_every = 2", "checkpoint_every = 1");
    let model = format!("checkpoint = \"{}\"\neval_episodes = 4", fixture.display());
    let text = format!(
        "stages_dir = \"{}\"\n{head}[teacher]\n{model}\n\n[student]\n{model}\n\n{train}",
        dir.join("stages").display()
    );
    let path = dir.join(format!("smoke-{steps}-{lr}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn metrics(line: &Value) -> BTreeMap<String, f64> {
    line.as_object().unwrap().iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect()
}

#[test]
fn two_nodes_on_the_loopback_train_as_one_node_does() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 3;
    let config = smoke(dir.path(), steps, "3e-4");
    let port = free_port_pair();
    let _orchestrator = orchestrator(port);
    let out = dir.path().join("two");
    let nodes: Vec<Child> = (0..2).map(|i| node(&config, &out, 2, i, port, &[])).collect();
    let mut summaries = Vec::new();
    for (i, child) in nodes.into_iter().enumerate() {
        let (code, stdout, stderr) = finish(child, Duration::from_secs(600), &format!("node {i}"));
        assert_eq!(code, Some(0), "node {i}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        summaries.push(serde_json::from_str::<Value>(&stdout).unwrap());
    }
    assert_eq!(summaries[0]["final_success_rate"], summaries[1]["final_success_rate"]);
    assert_eq!(summaries[0]["teacher_success_rate"], summaries[1]["teacher_success_rate"]);

    // Node 0 wrote one metrics line per step, each with the weights' hash, which both nodes' files repeat.
    let lines = jsonl(&out.join("metrics.jsonl"));
    assert_eq!(lines.len(), steps as usize);
    let per_node: Vec<Vec<Value>> = (0..2).map(|i| jsonl(&out.join(format!("nodes/node-{i}.jsonl")))).collect();
    for (step, line) in lines.iter().enumerate() {
        let hash = line["weight_hash"].as_str().unwrap();
        assert_eq!(hash.len(), 16);
        for node in &per_node {
            assert_eq!(node[step]["step"], step);
            assert_eq!(node[step]["weight_hash"].as_str(), Some(hash), "step {step}");
        }
        assert_eq!(line["dist/nodes"], 2.0);
    }
    assert!(per_node[1].iter().all(|l| l["node"] == 1));
    assert!(out.join("summary.json").exists() && out.join("final").exists());
    assert!(!out.join("run.lock").exists());

    // Two devices of one process (`--devices cpu,cpu`, no orchestrator) are the same two nodes: every metric
    // but the timings is the same bits, and so is every step's weight hash.
    let devices = dir.path().join("devices");
    let config_arg = config.to_str().unwrap();
    let child =
        spawn_atod(&["train", "--config", config_arg, "--out", devices.to_str().unwrap(), "--devices", "cpu,cpu"]);
    let (code, _, stderr) = finish(child, Duration::from_secs(600), "two devices");
    assert_eq!(code, Some(0), "{stderr}");
    let on_devices = jsonl(&devices.join("metrics.jsonl"));
    assert_eq!(on_devices.len(), lines.len());
    for (step, (a, b)) in on_devices.iter().zip(&lines).enumerate() {
        assert_eq!(a["weight_hash"], b["weight_hash"], "step {step}");
        for (key, value) in metrics(b) {
            if !key.starts_with("time/") {
                assert_eq!(metrics(a)[&key].to_bits(), value.to_bits(), "step {step} {key}");
            }
        }
    }

    // One node, the data-parallel path alone: the same rollouts and advantages at step 0, bit for bit, and the
    // same metrics up to rounding afterwards.
    let one = dir.path().join("one");
    let child = spawn_atod(&["train", "--config", config_arg, "--out", one.to_str().unwrap(), "--nodes", "1"]);
    let (code, _, stderr) = finish(child, Duration::from_secs(600), "one node");
    assert_eq!(code, Some(0), "{stderr}");
    let single = jsonl(&one.join("metrics.jsonl"));
    for (step, (two, one)) in lines.iter().zip(&single).enumerate() {
        let (two, one) = (metrics(two), metrics(one));
        for (key, want) in &one {
            if key.starts_with("time/") || key.starts_with("dist/") {
                continue;
            }
            let got = two[key];
            if step == 0 && (key.starts_with("rollout/") || key.starts_with("adv/") || key.starts_with("tdur/")) {
                assert_eq!(got.to_bits(), want.to_bits(), "step {step} {key}: {got} vs {want}");
            } else if ["actor/approx_kl", "actor/clipfrac", "actor/entropy"].contains(&key.as_str()) {
                // Token means combined by the shards' sequence shares: their grouping moves them beyond
                // rounding, on one process as on several (the loss and the gradient are exact).
                assert!((got - want).abs() <= 0.1 + 0.25 * want.abs(), "step {step} {key}: {got} vs {want}");
            } else {
                assert!((got - want).abs() <= 1e-3 * want.abs().max(1.0), "step {step} {key}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn a_killed_node_stops_the_other_with_one_line_naming_it_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 40;
    let config = smoke(dir.path(), steps, "3e-4");
    let port = free_port_pair();
    let orchestrator_process = orchestrator(port);
    let out = dir.path().join("run");
    let leader = node(&config, &out, 2, 0, port, &[]);
    let mut second = Proc(node(&config, &out, 2, 1, port, &[]));
    // Kill node 1 once both have trained a step or two.
    let started = Instant::now();
    while jsonl(&out.join("nodes/node-1.jsonl")).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "node 1 trained no step");
        std::thread::sleep(Duration::from_millis(50));
    }
    second.0.kill().unwrap();
    let killed = Instant::now();
    let (code, _, stderr) = finish(leader, Duration::from_secs(120), "node 0 after node 1 was killed");
    assert!(killed.elapsed() < Duration::from_secs(60), "node 0 took {:?}", killed.elapsed());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("node 1 (127.0.0.1:") && errors[0].contains("left the run"), "{stderr}");

    // The last checkpoint is intact: both nodes resume from it (a fresh orchestrator) and finish the run.
    drop(orchestrator_process);
    let done = jsonl(&out.join("metrics.jsonl")).len();
    assert!(done >= 2 && done < steps as usize, "{done} steps");
    let port = free_port_pair();
    let _orchestrator = orchestrator(port);
    let nodes: Vec<Child> = (0..2).map(|i| node(&config, &out, 2, i, port, &["--resume"])).collect();
    for (i, child) in nodes.into_iter().enumerate() {
        let (code, _, stderr) = finish(child, Duration::from_secs(900), &format!("resumed node {i}"));
        assert_eq!(code, Some(0), "resumed node {i}:\n{stderr}");
        assert!(stderr.contains("resuming"), "{stderr}");
    }
    let lines = jsonl(&out.join("metrics.jsonl"));
    assert_eq!(lines.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), (0..steps).collect::<Vec<_>>());
    let hashes: Vec<Vec<Value>> = (0..2)
        .map(|i| jsonl(&out.join(format!("nodes/node-{i}.jsonl"))).iter().map(|l| l["weight_hash"].clone()).collect())
        .collect();
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(hashes[0], lines.iter().map(|l| l["weight_hash"].clone()).collect::<Vec<_>>());
}

#[test]
fn a_node_with_another_config_is_refused_when_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let _orchestrator = orchestrator(port);
    let first = Proc(node(&smoke(dir.path(), 2, "3e-4"), &dir.path().join("a"), 2, 0, port, &[]));
    std::thread::sleep(Duration::from_millis(500));
    let other = node(&smoke(dir.path(), 2, "1e-3"), &dir.path().join("b"), 2, 1, port, &[]);
    let (code, _, stderr) = finish(other, Duration::from_secs(120), "the node with another config");
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("refused node 1") && errors[0].contains("config hash"), "{stderr}");
    drop(first);

    // Flags that make no run are one-line errors too.
    let config = smoke(dir.path(), 2, "3e-4");
    let config = config.to_str().unwrap();
    for (args, needle) in [
        (vec!["--nodes", "2", "--node-index", "0"], "needs --orchestrator"),
        (vec!["--nodes", "2", "--orchestrator", "127.0.0.1:1"], "needs --node-index"),
        (vec!["--node-index", "1"], "belong to a data-parallel run"),
        (vec!["--nodes", "2", "--node-index", "2", "--orchestrator", "127.0.0.1:1"], "out of range"),
        (vec!["--nodes", "1", "--reduce", "fastest"], "unknown reduce"),
    ] {
        let output = Command::new(atod_bin())
            .args(["train", "--config", config, "--out", dir.path().join("c").to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:") && stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// `configs/smoke.toml` itself (SFT stages included, shortened), its stages in `stages`.
fn smoke_with_stages(dir: &Path, stages: &Path, name: &str) -> PathBuf {
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")).unwrap();
    let text = format!("stages_dir = \"{}\"\n{base}", stages.display())
        .replace("episodes = 100", "episodes = 24")
        .replace("steps = 300", "steps = 30")
        .replace("steps = 100", "steps = 20")
        .replace("steps = 6", "steps = 2");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// What the SFT stages under `stages` trained, by relative path: every file of their `model/` directories, and
/// the losses and gradient norms of their `metrics.jsonl`.
fn sft_files(stages: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![stages.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(stages).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if relative.starts_with("sft-") {
                    todo.push(path);
                }
            } else if relative.starts_with("sft-") && relative.contains("/model/") {
                files.insert(relative, std::fs::read(&path).unwrap());
            } else if relative.starts_with("sft-") && relative.ends_with("/metrics.jsonl") {
                // Losses and gradient norms, not the throughput.
                let losses: Vec<u8> = jsonl(&path)
                    .iter()
                    .flat_map(|l| format!("{} {} {}\n", l["step"], l["loss"], l["grad_norm"]).into_bytes())
                    .collect();
                files.insert(relative, losses);
            }
        }
    }
    files
}

#[test]
fn sft_stages_train_on_every_node_alike_without_shared_files() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let _orchestrator = orchestrator(port);
    // Two "machines": each node its own stages and run directory, so each builds (and keeps) its own copy.
    let stages: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("stages-{i}"))).collect();
    let configs: Vec<PathBuf> =
        (0..2).map(|i| smoke_with_stages(dir.path(), &stages[i], &format!("node-{i}.toml"))).collect();
    let nodes: Vec<Child> =
        (0..2).map(|i| node(&configs[i], &dir.path().join(format!("run-{i}")), 2, i, port, &[])).collect();
    for (i, child) in nodes.into_iter().enumerate() {
        let (code, _, stderr) = finish(child, Duration::from_secs(900), &format!("node {i}"));
        assert_eq!(code, Some(0), "node {i}:\n{stderr}");
    }
    let (first, second) = (sft_files(&stages[0]), sft_files(&stages[1]));
    let models = first.keys().filter(|k| k.ends_with("model.safetensors")).count();
    assert_eq!(first.keys().filter(|k| k.ends_with("metrics.jsonl")).count(), 2);
    assert_eq!(models, 2, "a teacher and a student stage: {:?}", first.keys().collect::<Vec<_>>());
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>());
    for (name, bytes) in &first {
        assert!(bytes == &second[name], "{name} differs between the nodes' stages");
    }
    let hashes: Vec<Vec<Value>> = (0..2)
        .map(|i| {
            let file = dir.path().join(format!("run-{i}/nodes/node-{i}.jsonl"));
            jsonl(&file).iter().map(|l| l["weight_hash"].clone()).collect()
        })
        .collect();
    assert_eq!(hashes[0].len(), 2);
    assert_eq!(hashes[0], hashes[1]);
}
