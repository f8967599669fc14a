//! Stages that resolve themselves: demonstrations, the tokenizer, SFT models.
//!
//! Each stage lives in `<stages_dir>/<kind>-<key>/`, where the key hashes the stage's resolved config together
//! with the keys of the stages it consumes. A present stage (its `done` marker written last) is reused; a
//! missing one is built. Concurrent builders of one stage (grid cells in parallel processes) take a lock file;
//! the others wait for the marker. So one `atod train` runs the whole pipeline, and a grid builds each teacher
//! once.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use atod_envs::Registry;
use atod_models::ChatTokenizer;
use serde::Serialize;

use super::config::{stages_dir, SftRunConfig};
use crate::progress::Progress;

/// Bumped whenever a stage's output would change for the same config.
const STAGE_VERSION: u32 = 1;

/// FNV-1a over the JSON of `value`: stable across runs and machines.
pub fn key_of(kind: &str, value: &impl Serialize) -> String {
    let text = format!("{kind}/{STAGE_VERSION}/{}", serde_json::to_string(value).expect("configs serialise"));
    let mut hash = atod_models::tokenizer::Fnv1a::new();
    hash.write(text.as_bytes());
    format!("{:016x}", hash.finish())
}

/// A built (or reused) stage.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its directory.
    pub dir: PathBuf,
    /// Its key.
    pub key: String,
    /// Whether this call built it.
    pub built: bool,
}

/// Returns the stage `kind` with `key`, building it with `build(dir)` if it is missing. `build` writes into a
/// fresh directory; the stage becomes visible (the `done` marker) only when it returns Ok.
pub fn resolve(
    root: &Path,
    kind: &str,
    key: &str,
    build: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<Stage> {
    let dir = root.join(format!("{kind}-{key}"));
    let done = dir.join("done");
    if done.exists() {
        return Ok(Stage { dir, key: key.to_owned(), built: false });
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let lock = root.join(format!("{kind}-{key}.lock"));
    let start = Instant::now();
    loop {
        match fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(mut file) => {
                use std::io::Write as _;
                // The builder's pid, so that a waiter can tell a lock whose builder was killed (Ctrl-C on a grid).
                let _ = writeln!(file, "{}", std::process::id());
                break;
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                if done.exists() {
                    return Ok(Stage { dir, key: key.to_owned(), built: false });
                }
                // A lock whose builder is no longer running (where the system says, through /proc), or older
                // than two hours, belongs to a builder that died.
                let stale = builder_is_gone(&lock)
                    || fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(7200))
                        .unwrap_or(false);
                if stale {
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if start.elapsed().as_secs().is_multiple_of(60) {
                    eprintln!("waiting for another process to build {kind}-{key} ...");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(err) => return Err(err).with_context(|| format!("cannot create {}", lock.display())),
        }
    }
    let result: anyhow::Result<bool> = (|| {
        if done.exists() {
            return Ok(false);
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        build(&dir)?;
        atod_models::checkpoint::write_file_atomic(&done, b"")?;
        Ok(true)
    })();
    let _ = fs::remove_file(&lock);
    let built = result.with_context(|| format!("building stage {}", dir.display()))?;
    Ok(Stage { dir, key: key.to_owned(), built })
}

/// Whether the process that wrote the lock file `lock` (its pid is the file's text) is known to have exited:
/// only where `/proc` lists processes, and never for a lock still being written (no pid yet).
pub(crate) fn builder_is_gone(lock: &Path) -> bool {
    let Ok(text) = fs::read_to_string(lock) else { return false };
    let Ok(pid) = text.trim().parse::<u32>() else { return false };
    Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists()
}

/// A fingerprint of what an environment does under its config: its name, version and splits, and the expert's
/// episode (observations, rewards, admissible actions) on the first task of each split. It enters the
/// demonstrations' key, so that a stage built on an environment whose behaviour has since changed (a fix to its
/// text or rules, with the same version number) is built again instead of silently reused.
pub fn env_fingerprint(registry: &Registry, env: &atod_core::config::EnvConfig) -> anyhow::Result<String> {
    let plugin = registry.get(&env.name)?;
    let mut instance = plugin.create(&env.config_toml())?;
    let info = instance.info();
    let mut trace = vec![format!("{}/{}", info.name, info.version)];
    for split in &info.splits {
        trace.push(format!("{}:{}", split.name, split.size));
        if split.size == 0 {
            continue;
        }
        trace.push(instance.reset(&split.name, 0, 0)?);
        for _ in 0..200 {
            trace.push(instance.admissible_actions()?.join("|"));
            let Some(response) = instance.expert_action()? else { break };
            let result = instance.step(&response)?;
            trace.push(format!("{response}\n{}\n{}/{}/{}", result.observation, result.reward, result.done, result.won));
            if result.done {
                break;
            }
        }
    }
    Ok(key_of("env", &trace))
}

/// Whether a config lists no earlier actions (the key then leaves the field out, as before it existed).
fn no_actions(n: &usize) -> bool {
    *n == 0
}

/// The demonstrations of a config: `demos-<key>/demos.jsonl`.
pub fn demos(registry: &Registry, config: &SftRunConfig, progress: &dyn Progress) -> anyhow::Result<Stage> {
    #[derive(Serialize)]
    struct Key<'a> {
        env: &'a str,
        env_fingerprint: String,
        env_config: &'a toml::Table,
        train_split: &'a str,
        history: usize,
        show_admissible: bool,
        #[serde(skip_serializing_if = "no_actions")]
        action_history: usize,
        max_prompt_tokens: usize,
        demos: &'a super::config::DemosConfig,
    }
    let key = key_of(
        "demos",
        &Key {
            env: &config.env.name,
            env_fingerprint: env_fingerprint(registry, &config.env)?,
            env_config: &config.env.config,
            train_split: &config.env.train_split,
            history: config.env.history,
            show_admissible: config.env.show_admissible,
            action_history: config.env.action_history,
            max_prompt_tokens: config.prompt.max_prompt_tokens,
            demos: &config.demos,
        },
    );
    resolve(&stages_dir(&config.stages_dir), "demos", &key, |dir| {
        let plugin = registry.get(&config.env.name)?;
        let summary = super::collect_demos(plugin, config, &dir.join("demos.jsonl"), None, progress)?;
        if summary.lines == 0 {
            bail!("the expert won no episode of `{}`: no demonstrations", config.env.name);
        }
        fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
        Ok(())
    })
}

/// The tokenizer of a config, trained on its demonstrations: `tokenizer-<key>/tokenizer.json`.
pub fn tokenizer(
    registry: &Registry,
    config: &SftRunConfig,
    progress: &dyn Progress,
) -> anyhow::Result<(Stage, ChatTokenizer)> {
    let demos = demos(registry, config, progress)?;
    if let Some(file) = &config.tokenizer.file {
        // A given tokenizer: the stage holds a copy, keyed by what the tokenizer does (its fingerprint), not by
        // where the file is.
        let given =
            ChatTokenizer::from_file(file).with_context(|| format!("key `tokenizer.file`: {}", file.display()))?;
        let key = key_of("tokenizer-file", &(&demos.key, format!("{:016x}", given.fingerprint())));
        let stage = resolve(&stages_dir(&config.stages_dir), "tokenizer", &key, |dir| {
            given.save(dir.join("tokenizer.json"))?;
            Ok(())
        })?;
        return Ok((stage, given));
    }
    let key = key_of("tokenizer", &(&demos.key, &config.tokenizer));
    let stage = resolve(&stages_dir(&config.stages_dir), "tokenizer", &key, |dir| {
        let texts = crate::demos::read_texts(&demos.dir.join("demos.jsonl"))?;
        let tokenizer = ChatTokenizer::train(&texts, config.tokenizer.vocab_size)?;
        tokenizer.save(dir.join("tokenizer.json"))?;
        Ok(())
    })?;
    let tokenizer = ChatTokenizer::from_file(stage.dir.join("tokenizer.json"))?;
    Ok((stage, tokenizer))
}

/// The SFT data of a config: the same expert episodes as the demonstrations, replayed with prompts fitted to the
/// token budget by the config's tokenizer (`sftdata-<key>/demos.jsonl`).
pub fn sft_data(
    registry: &Registry,
    config: &SftRunConfig,
    progress: &dyn Progress,
) -> anyhow::Result<(Stage, ChatTokenizer)> {
    let (tokenizer_stage, tokenizer) = tokenizer(registry, config, progress)?;
    let key = key_of("sftdata", &(&tokenizer_stage.key, &config.prompt));
    let stage = resolve(&stages_dir(&config.stages_dir), "sftdata", &key, |dir| {
        let plugin = registry.get(&config.env.name)?;
        super::collect_demos(plugin, config, &dir.join("demos.jsonl"), Some(&tokenizer), progress)?;
        Ok(())
    })?;
    Ok((stage, tokenizer))
}

/// The stage of a checkpoint directory used as a teacher or a student: `checkpoint-<key>/`, which holds no model
/// (the model stays in its directory) but keeps the evaluations of it ([`super::cached_stage_eval`]) so that
/// runs and grid cells share them, and `source.json` naming the directory. The key follows the checkpoint's
/// files (names, sizes and modification times) and its tokenizer's fingerprint, so a checkpoint rewritten in
/// place gets a fresh stage.
pub fn checkpoint(config_stages_dir: &Option<PathBuf>, dir: &Path) -> anyhow::Result<Stage> {
    let dir = fs::canonicalize(dir).with_context(|| format!("checkpoint directory {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() {
            let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            files.push((entry.file_name().to_string_lossy().into_owned(), meta.len(), modified.map(|d| d.as_nanos())));
        }
    }
    files.sort();
    let key = key_of("checkpoint", &(&dir, &files));
    resolve(&stages_dir(config_stages_dir), "checkpoint", &key, |stage| {
        let source = serde_json::json!({ "checkpoint": dir, "files": files });
        fs::write(stage.join("source.json"), serde_json::to_string_pretty(&source)? + "\n")?;
        Ok(())
    })
}

/// The SFT model of a config: `sft-<key>/model/` (an export directory) with its metrics and evaluation.
pub fn sft(registry: &Registry, config: &SftRunConfig, progress: &dyn Progress) -> anyhow::Result<Stage> {
    sft_on(registry, config, progress, None)
}

/// [`sft`] for the nodes of a data-parallel run. When every node already holds the stage, each uses its own;
/// otherwise all of them train it together (super::sft::train_with), each into a scratch directory of its own
/// (`sft-<key>.node<i>-<pid>`, no lock: the nodes build it at once on purpose), and each then publishes its copy
/// by renaming it into place unless a complete stage is already there: nodes that share a stages directory end
/// with one copy, nodes on other machines each with their own, bit for bit the same.
pub fn sft_on(
    registry: &Registry,
    config: &SftRunConfig,
    progress: &dyn Progress,
    cluster: Option<&crate::distributed::Cluster>,
) -> anyhow::Result<Stage> {
    let (demos, tokenizer) = sft_data(registry, config, progress)?;
    // A model trained in the reproducible mode has other bits than one trained with the CPU's native kernels:
    // the mode is part of the key (left out when off, so that those stages keep their earlier keys).
    let key = if config.reproducible {
        key_of("sft", &(&demos.key, &config.model, &config.env.eval_split, &config.prompt, "reproducible"))
    } else {
        key_of("sft", &(&demos.key, &config.model, &config.env.eval_split, &config.prompt))
    };
    let root = stages_dir(&config.stages_dir);
    let Some(cluster) = cluster.filter(|c| c.nodes() > 1) else {
        return resolve(&root, "sft", &key, |dir| {
            super::sft::train(registry, config, &demos.dir.join("demos.jsonl"), tokenizer.clone(), dir, progress)
        });
    };
    let dir = root.join(format!("sft-{key}"));
    let done = dir.join("done");
    let held = cluster.gather("whether every node holds the SFT stage", &done.exists())?;
    if held.iter().all(|&h| h) {
        return Ok(Stage { dir, key, built: false });
    }
    let scratch = root.join(format!("sft-{key}.node{}-{}", cluster.index(), std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let demos_file = demos.dir.join("demos.jsonl");
    super::sft::train_with(registry, config, &demos_file, tokenizer, &scratch, progress, Some(cluster))
        .with_context(|| format!("building stage {} on {} nodes", dir.display(), cluster.nodes()))?;
    atod_models::checkpoint::write_file_atomic(&scratch.join("done"), b"")?;
    if !done.exists() {
        let _ = fs::remove_dir_all(&dir);
        if fs::rename(&scratch, &dir).is_err() && !done.exists() {
            bail!("cannot move {} to {}", scratch.display(), dir.display());
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(Stage { dir, key, built: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_fingerprint_follows_what_the_environment_does() {
        let registry = crate::registry::build(&[]).unwrap();
        let env = |config: &str| -> atod_core::config::EnvConfig {
            toml::from_str(&format!("name = \"alfworld\"\n[config]\n{config}")).unwrap()
        };
        let mini = env("preset = \"mini\"");
        assert_eq!(env_fingerprint(&registry, &mini).unwrap(), env_fingerprint(&registry, &mini).unwrap());
        // A config that changes the episodes (here the step limit, the admissible list) changes the fingerprint.
        let other = env("preset = \"mini\"\nlist_admissible = false");
        assert_ne!(env_fingerprint(&registry, &mini).unwrap(), env_fingerprint(&registry, &other).unwrap());
        let unknown = atod_core::config::EnvConfig { name: "nope".into(), ..mini };
        assert!(env_fingerprint(&registry, &unknown).is_err());
    }

    #[test]
    fn a_lock_left_by_a_killed_builder_is_taken_over() {
        let root = tempfile::tempdir().unwrap();
        let lock = root.path().join("demo-k.lock");
        // A lock still being written, or held by a live process (this one), is respected.
        fs::write(&lock, "").unwrap();
        assert!(!builder_is_gone(&lock));
        fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
        assert!(!builder_is_gone(&lock));
        // The lock of a process that has exited is stale: the stage is built at once instead of in two hours.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        fs::write(&lock, format!("{pid}\n")).unwrap();
        if !Path::new("/proc/self").exists() {
            return; // no process list to consult here
        }
        assert!(builder_is_gone(&lock));
        let stage = resolve(root.path(), "demo", "k", |dir| Ok(fs::write(dir.join("x"), "built")?)).unwrap();
        assert!(stage.built);
        assert_eq!(fs::read_to_string(stage.dir.join("x")).unwrap(), "built");
        assert!(!lock.exists(), "the builder removes its lock");
    }
}
