//! The online loop of `atod train`: rollouts, teacher scoring, advantages, clipped updates (DESIGN.md §2).
//!
//! One step: draw `tasks_per_step` train tasks, play each `group_size` times with the student (batched
//! generation across every live episode); the teacher scores every response token under the same prompt;
//! atod-losses turns the step's samples into advantages (once, over whole groups); then `ppo_epochs` passes of
//! mini-batches of turn samples, each one AdamW update of the clipped surrogate. Metrics go to
//! `metrics.jsonl`, evaluations (greedy-ish, temperature 0.4, fixed tasks and seeds) to `evals.jsonl`, and
//! checkpoints (weights, optimiser moments, step) are written atomically.
//!
//! Every random choice of step s comes from streams seeded by (seed, s), so a run resumed from the checkpoint
//! of step s replays steps s, s+1, ... exactly as the uninterrupted run does.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use atod_core::rng::{mix, SplitMix64};
use atod_core::TaskRef;
use atod_envs::Registry;
use atod_losses::{Loss, StepBatch, StepInfo, TrainBatch};
use atod_models::optim::AdamW;
use atod_models::{checkpoint, response_stats, DeviceSpec, HotPathBackend, LmPolicy, SamplingParams};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::{stages, EvalSummary};
use crate::rollout::{run_episodes, EpisodeSpec};

/// What `summary.json` holds at the end of a run (the grid's contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// `finished`.
    pub status: String,
    /// The run's name.
    pub name: String,
    /// The environment.
    pub env: String,
    /// The student preset.
    pub student: String,
    /// The method.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// Training steps.
    pub steps: u64,
    /// The student's evaluation success before training.
    pub initial_success_rate: f64,
    /// The student's evaluation success after training.
    pub final_success_rate: f64,
    /// The teacher's evaluation success.
    pub teacher_success_rate: f64,
    /// Wall time of this process's part of the run.
    pub wall_seconds: f64,
}

/// One evaluation line of `evals.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalLine {
    /// Steps completed when it ran.
    pub step: u64,
    /// The split.
    pub split: String,
    /// The figures.
    #[serde(flatten)]
    pub summary: EvalSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    /// Steps completed.
    step: u64,
    initial_success_rate: f64,
    teacher_success_rate: f64,
}

/// Runs (or resumes) a training run into `out`.
pub fn run(registry: &Registry, config: &TrainConfig, out: &Path, resume: bool) -> anyhow::Result<RunSummary> {
    let device: DeviceSpec = config.device.parse()?;
    match device {
        DeviceSpec::Cpu => run_on::<atod_models::CpuAutodiff>(registry, config, out, resume, &Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            atod_models::backend::check_cuda(&device)?;
            let cuda = device.cuda_device().expect("a CUDA spec");
            run_on::<atod_models::CudaAutodiff>(registry, config, out, resume, &cuda)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("DeviceSpec refuses CUDA without the cuda feature"),
    }
}

/// `<out>/run.lock`, held while a process trains into `out`: two processes training one run (a grid and a second
/// grid over the same cells, say) would interleave their metrics and checkpoints. It holds the owner's pid, so
/// that the lock of a process that was killed is taken over.
struct RunLock(PathBuf);

impl RunLock {
    fn acquire(out: &Path) -> anyhow::Result<RunLock> {
        let path = out.join("run.lock");
        for _ in 0..2 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    use std::io::Write as _;
                    writeln!(file, "{}", std::process::id())?;
                    return Ok(RunLock(path));
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    if stages::builder_is_gone(&path) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    let owner = fs::read_to_string(&path).unwrap_or_default();
                    bail!(
                        "{} is being trained by another process (pid {}); wait for it to end, or delete {} if no such \
                         process is running",
                        out.display(),
                        owner.trim(),
                        path.display()
                    );
                }
                Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        bail!("cannot take {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn latest_checkpoint(out: &Path) -> Option<(u64, PathBuf)> {
    let dir = out.join("checkpoints");
    fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().join("state.json").exists().then_some((step, e.path()))
        })
        .max_by_key(|(step, _)| *step)
}

/// Keeps the lines of a JSONL file whose `step` passes `keep` (used when resuming).
fn truncate_jsonl(path: &Path, keep: impl Fn(u64) -> bool) -> anyhow::Result<()> {
    let Ok(text) = fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(&keep)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    atod_models::checkpoint::write_file_atomic(path, kept.as_bytes())?;
    Ok(())
}

fn append_jsonl(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{}", serde_json::to_string(value)?)?;
    file.sync_data()?;
    Ok(())
}

fn run_on<B>(
    registry: &Registry,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> anyhow::Result<RunSummary>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let started = Instant::now();
    let steps = if config.method == "sft-init" { 0 } else { config.train.steps };
    if out.join("summary.json").exists() && !resume {
        bail!("{} already holds a finished run; choose another --out or delete it", out.display());
    }
    let checkpoint = if resume { latest_checkpoint(out) } else { None };
    if !resume && out.join("metrics.jsonl").exists() {
        bail!("{} already holds a run; pass --resume to continue it", out.display());
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let _lock = RunLock::acquire(out)?;
    checkpoint::write_file_atomic(&out.join("config.toml"), toml::to_string(config)?.as_bytes())?;

    // The stages: demonstrations, tokenizer, teacher and student initialisation.
    let teacher_stage = stages::sft(registry, &config.sft_stage(&config.teacher_sft()))?;
    // The student's initialisation: its own SFT stage, or a snapshot the teacher's stage kept.
    let student_stage_dir = match config.student.from_teacher_step {
        Some(step) => super::sft::snapshot_dir(&teacher_stage.dir, step),
        None => stages::sft(registry, &config.sft_stage(&config.student))?.dir,
    };
    let plugin = registry.get(&config.env.name)?;
    let inner_device = {
        let probe = Tensor::<B, 1>::zeros([1], device);
        probe.inner().device()
    };
    let rollout_sampling = SamplingParams {
        temperature: config.train.temperature,
        max_new_tokens: config.prompt.max_new_tokens,
        ..SamplingParams::default()
    };
    let mut teacher = LmPolicy::<B::InnerBackend>::load(
        &teacher_stage.dir.join("model"),
        &inner_device,
        rollout_sampling.clone(),
        0,
    )?;
    let student_dir = match &checkpoint {
        Some((_, dir)) => dir.clone(),
        None => student_stage_dir.join("model"),
    };
    let (student_config, mut model) = checkpoint::load::<B>(&student_dir, device)?;
    let tokenizer = atod_models::ChatTokenizer::from_file(student_dir.join("tokenizer.json"))?;
    if tokenizer.fingerprint() != teacher.tokenizer.fingerprint() {
        bail!("the teacher and the student use different tokenizers; they must share one (DESIGN.md §2)");
    }
    let loss = Loss::new(config.loss_config()?)?;
    let mut optim = match &checkpoint {
        Some((_, dir)) => AdamW::<B>::load(&dir.join("optimizer.safetensors"), &inner_device)?,
        None => AdamW::<B>::new(config.train.optimizer.clone()),
    };

    let eval_seed = 0;
    let eval_sampling = SamplingParams {
        temperature: config.train.eval_temperature,
        max_new_tokens: config.prompt.max_new_tokens,
        ..SamplingParams::default()
    };
    let make_student = |model: &atod_models::Transformer<B>, sampling: SamplingParams, seed: u64| {
        LmPolicy::new("student", model.valid(), student_config.clone(), tokenizer.clone(), sampling, seed)
    };
    let evaluate = |policy: &mut LmPolicy<B::InnerBackend>| -> anyhow::Result<EvalSummary> {
        super::evaluate_train(policy, plugin, config, eval_seed)
    };

    // Where the run starts: fresh (evaluate the teacher and the student first) or from a checkpoint.
    let (start, initial_success_rate, teacher_success_rate) = match &checkpoint {
        Some((step, dir)) => {
            let state: CheckpointState = serde_json::from_str(&fs::read_to_string(dir.join("state.json"))?)?;
            truncate_jsonl(&out.join("metrics.jsonl"), |s| s < *step)?;
            truncate_jsonl(&out.join("evals.jsonl"), |s| s <= *step)?;
            eprintln!("resuming {} at step {step}", out.display());
            (*step, state.initial_success_rate, state.teacher_success_rate)
        }
        None => {
            for file in ["metrics.jsonl", "evals.jsonl"] {
                let _ = fs::remove_file(out.join(file));
            }
            teacher.sampling = eval_sampling.clone();
            let teacher_eval = super::cached_stage_eval(&teacher_stage.dir, &mut teacher, plugin, config, eval_seed)?;
            let mut before = make_student(&model, eval_sampling.clone(), 0)?;
            let initial = super::cached_stage_eval(&student_stage_dir, &mut before, plugin, config, eval_seed)?;
            append_jsonl(
                &out.join("evals.jsonl"),
                &EvalLine { step: 0, split: config.env.eval_split.clone(), summary: initial.clone() },
            )?;
            eprintln!(
                "teacher success {:.3}, student before training {:.3}",
                teacher_eval.success_rate, initial.success_rate
            );
            (0, initial.success_rate, teacher_eval.success_rate)
        }
    };
    // The teacher scores at the rollout temperature, the temperature of the behaviour log-probs it is compared
    // with (verl scores its reference policy likewise): scored at 1 against a student sampled at 0.7, A_opd would
    // be biased down on every confident token.
    teacher.sampling = rollout_sampling.clone();

    let mut envs: Vec<Box<dyn atod_core::Environment>> = (0..config.train.tasks_per_step * config.train.group_size)
        .map(|_| plugin.create(&config.env.config_toml()))
        .collect::<Result<_, _>>()?;
    let train_size = plugin.create(&config.env.config_toml())?.info().split_size(&config.env.train_split)?;
    let bar = crate::progress::bar(steps, &format!("{} {}", config.method, config.env.name));
    bar.set_position(start);
    let mut last_eval = None;
    for step in start..steps {
        let t_step = Instant::now();
        let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
        // Tasks and seeds of this step.
        let mut rng = SplitMix64::new(mix(config.seed ^ 0x7a5c) ^ mix(step));
        let specs: Vec<EpisodeSpec> = (0..config.train.tasks_per_step)
            .flat_map(|group| {
                let task = TaskRef {
                    split: config.env.train_split.clone(),
                    index: rng.below(train_size.max(1)),
                    seed: rng.next_u64() >> 1,
                };
                (0..config.train.group_size).map(move |_| EpisodeSpec { task: task.clone(), group })
            })
            .collect();
        let mut student = make_student(&model, rollout_sampling.clone(), mix(config.seed ^ 0x51) ^ mix(step + 1))?;
        let rollout =
            run_episodes(&mut envs, &specs, &mut student, &super::render_config(config), config.prompt.max_turns)?;
        drop(student);

        // The teacher scores every response token under the student's prompt.
        let t_score = Instant::now();
        let pairs: Vec<(&[u32], &[u32])> =
            rollout.samples.iter().map(|s| (&s.prompt_ids[..], &s.response_ids[..])).collect();
        let teacher_scores = teacher.score_sharded(&pairs, config.train.shards)?;
        let score_s = t_score.elapsed().as_secs_f64();

        // Advantages over the whole step (groups span it).
        let returns: Vec<f32> = rollout.episodes.iter().map(|e| e.total_return as f32).collect();
        let step_batch = StepBatch::from_ragged(
            &rollout.samples.iter().map(|s| s.behaviour_logprobs.clone()).collect::<Vec<_>>(),
            &teacher_scores.iter().map(|s| s.logprobs.clone()).collect::<Vec<_>>(),
            None,
            rollout.samples.iter().map(|s| s.turn_idx).collect(),
            rollout.samples.iter().map(|s| s.traj).collect(),
            rollout.samples.iter().map(|s| s.group).collect(),
            returns,
        )?;
        let info = StepInfo { step, total: steps };
        let advantages = loss.advantages(&step_batch, info)?;
        metrics.extend(advantages.metrics.iter().map(|(k, v)| (k.clone(), *v)));

        // Clipped updates over mini-batches of turn samples.
        let t_update = Instant::now();
        let mut order: Vec<usize> = (0..rollout.samples.len()).collect();
        let mut shuffle = SplitMix64::new(mix(config.seed ^ 0xb47c) ^ mix(step));
        let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let (mut updates, mut skipped) = (0u32, 0u32);
        let lr = if step < config.train.warmup {
            config.train.lr * (step + 1) as f64 / config.train.warmup as f64
        } else {
            config.train.lr
        };
        for _ in 0..config.train.ppo_epochs {
            shuffle.shuffle(&mut order);
            for rows in order.chunks(config.train.mini_batch_size) {
                // The mini-batch in shards, each on its own replica and thread; every shard's objective is
                // weighted by its share of the aggregation's normaliser (tokens for token-mean, sequences
                // otherwise), so the summed gradients are the whole mini-batch's.
                let share = |shard: &[usize]| -> f64 {
                    let tokens =
                        |rs: &[usize]| rs.iter().map(|&r| rollout.samples[r].response_ids.len()).sum::<usize>();
                    let seqs =
                        |rs: &[usize]| rs.iter().filter(|&&r| !rollout.samples[r].response_ids.is_empty()).count();
                    match loss.config().aggregation {
                        atod_losses::Aggregation::TokenMean => tokens(shard) as f64 / tokens(rows).max(1) as f64,
                        _ => seqs(shard) as f64 / seqs(rows).max(1) as f64,
                    }
                };
                let run_shard = |replica: &atod_models::Transformer<B>, shard: &[usize]| -> anyhow::Result<_> {
                    let mb_pairs: Vec<(&[u32], &[u32])> = shard.iter().map(|&r| pairs[r]).collect();
                    let stats = response_stats(replica, &mb_pairs, config.train.temperature)?;
                    let [n, t] = stats.mask.dims();
                    let lp_old =
                        padded::<B>(shard.iter().map(|&r| &rollout.samples[r].behaviour_logprobs[..]), n, t, device);
                    let lp_teacher = padded::<B>(shard.iter().map(|&r| &teacher_scores[r].logprobs[..]), n, t, device);
                    let adv = advantages.rows::<B>(shard, t, device)?;
                    let batch = TrainBatch::new(stats.logp, lp_old, lp_teacher, stats.entropy, stats.mask);
                    let output = loss.objective(&batch, adv, info)?;
                    if !output.is_finite() {
                        return Ok(None);
                    }
                    let weight = share(shard);
                    let grads = GradientsParams::from_grads((output.loss * weight as f32).backward(), replica);
                    Ok(Some((weight, output.metrics, grads)))
                };
                let results = if config.train.shards <= 1 {
                    vec![run_shard(&model, rows)?]
                } else {
                    atod_models::parallel::map_shards(rows, config.train.shards, |shard| {
                        run_shard(&atod_models::optim::replica(&model), shard)
                    })?
                };
                let mut grads = GradientsParams::new();
                let mut finite = true;
                let mut mb_metrics: BTreeMap<String, f64> = BTreeMap::new();
                for result in results {
                    match result {
                        None => finite = false,
                        Some((weight, shard_metrics, shard_grads)) => {
                            for (k, v) in shard_metrics {
                                *mb_metrics.entry(k).or_default() += weight * v;
                            }
                            atod_models::optim::add_grads(&model, &mut grads, shard_grads);
                        }
                    }
                }
                if !finite {
                    skipped += 1;
                    continue;
                }
                for (k, v) in &mb_metrics {
                    let entry = sums.entry(k.clone()).or_default();
                    entry.0 += v * rows.len() as f64;
                    entry.1 += rows.len() as f64;
                }
                let grad_norm = AdamW::<B>::grad_norm(&model, &grads);
                if !grad_norm.is_finite() {
                    skipped += 1;
                    continue;
                }
                let (next, report) = optim.step(lr, model, grads);
                model = next;
                updates += 1;
                let entry = sums.entry("actor/grad_norm".into()).or_default();
                entry.0 += report.grad_norm;
                entry.1 += 1.0;
            }
        }
        metrics.extend(sums.into_iter().map(|(k, (sum, n))| (k, sum / n.max(1.0))));
        let update_s = t_update.elapsed().as_secs_f64();

        // Rollout statistics and timings.
        let episodes = rollout.episodes.len().max(1) as f64;
        let response_tokens: usize = rollout.samples.iter().map(|s| s.response_ids.len()).sum();
        metrics
            .insert("rollout/success_rate".into(), rollout.episodes.iter().filter(|e| e.won).count() as f64 / episodes);
        metrics.insert(
            "rollout/mean_return".into(),
            rollout.episodes.iter().map(|e| e.total_return).sum::<f64>() / episodes,
        );
        metrics.insert(
            "rollout/mean_turns".into(),
            rollout.episodes.iter().map(|e| e.turns as f64).sum::<f64>() / episodes,
        );
        metrics.insert(
            "rollout/invalid_rate".into(),
            rollout.samples.iter().filter(|s| !s.valid).count() as f64 / rollout.samples.len().max(1) as f64,
        );
        metrics.insert("rollout/samples".into(), rollout.samples.len() as f64);
        metrics.insert("rollout/response_tokens".into(), response_tokens as f64);
        metrics.insert("time/generate".into(), rollout.timing.generate_s);
        metrics.insert("time/env".into(), rollout.timing.env_s);
        metrics.insert("time/score".into(), score_s);
        metrics.insert("time/update".into(), update_s);
        metrics.insert("time/step".into(), t_step.elapsed().as_secs_f64());
        metrics.insert("actor/lr".into(), lr);
        metrics.insert("train/updates".into(), f64::from(updates));
        metrics.insert("train/skipped_updates".into(), f64::from(skipped));
        if skipped > 0 {
            eprintln!("warning: step {step}: {skipped} update(s) skipped for a non-finite loss or gradient");
        }
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        for (k, v) in &metrics {
            line.insert(k.clone(), serde_json::Value::from(*v));
        }
        append_jsonl(&out.join("metrics.jsonl"), &line)?;

        let done = step + 1;
        if done % config.train.eval_every.max(1) == 0 || done == steps {
            let mut policy = make_student(&model, eval_sampling.clone(), 0)?;
            let summary = evaluate(&mut policy)?;
            last_eval = Some(summary.success_rate);
            append_jsonl(
                &out.join("evals.jsonl"),
                &EvalLine { step: done, split: config.env.eval_split.clone(), summary },
            )?;
        }
        if done % config.train.checkpoint_every.max(1) == 0 || done == steps {
            save_checkpoint(
                out,
                done,
                &model,
                &student_config,
                &tokenizer,
                &optim,
                initial_success_rate,
                teacher_success_rate,
            )?;
        }
        bar.set_message(format!(
            "rollout success {:.2} | eval {} | {:.0} tok/s",
            metrics["rollout/success_rate"],
            last_eval.map_or("-".to_owned(), |s| format!("{s:.2}")),
            response_tokens as f64 / metrics["time/step"]
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();

    // The final policy and the summary.
    let final_policy = make_student(&model, eval_sampling, 0)?;
    final_policy.save(&out.join("final"))?;
    let final_success_rate =
        if steps == 0 { initial_success_rate } else { last_eval_success(out)?.unwrap_or(initial_success_rate) };
    let summary = RunSummary {
        status: "finished".into(),
        name: config.name.clone(),
        env: config.env.name.clone(),
        student: config.student.preset.clone(),
        method: config.method.clone(),
        seed: config.seed,
        steps,
        initial_success_rate,
        final_success_rate,
        teacher_success_rate,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    checkpoint::write_file_atomic(
        &out.join("summary.json"),
        (serde_json::to_string_pretty(&summary)? + "\n").as_bytes(),
    )?;
    Ok(summary)
}

/// Rows of values, zero-padded to `[n, t]`.
fn padded<'a, B: burn::tensor::backend::Backend>(
    rows: impl Iterator<Item = &'a [f32]>,
    n: usize,
    t: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut flat = vec![0f32; n * t];
    for (i, row) in rows.enumerate() {
        for (j, v) in row.iter().enumerate().take(t) {
            flat[i * t + j] = *v;
        }
    }
    Tensor::from_data(TensorData::new(flat, [n, t]), device)
}

fn last_eval_success(out: &Path) -> anyhow::Result<Option<f64>> {
    let text = fs::read_to_string(out.join("evals.jsonl")).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<EvalLine>(l).ok())
        .next_back()
        .map(|e| e.summary.success_rate))
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint<B: AutodiffBackend + HotPathBackend>(
    out: &Path,
    step: u64,
    model: &atod_models::Transformer<B>,
    config: &atod_models::TransformerConfig,
    tokenizer: &atod_models::ChatTokenizer,
    optim: &AdamW<B>,
    initial_success_rate: f64,
    teacher_success_rate: f64,
) -> anyhow::Result<()> {
    let dir = out.join("checkpoints").join(format!("step-{step}"));
    let scratch = out.join("checkpoints").join(format!(".optimizer-{step}.safetensors"));
    optim.save(&scratch)?;
    let optimizer = fs::read(&scratch)?;
    let _ = fs::remove_file(&scratch);
    let state = serde_json::to_string_pretty(&CheckpointState { step, initial_success_rate, teacher_success_rate })?;
    let tokenizer = tokenizer.to_json()?;
    checkpoint::save(
        model,
        config,
        &dir,
        &[
            ("tokenizer.json", tokenizer.as_bytes()),
            ("optimizer.safetensors", &optimizer),
            ("state.json", state.as_bytes()),
        ],
    )?;
    // Keep the two newest checkpoints.
    let mut all: Vec<(u64, PathBuf)> = fs::read_dir(out.join("checkpoints"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix("step-")?.parse().ok()?, e.path()))
        })
        .collect();
    all.sort();
    for (_, old) in all.iter().rev().skip(2) {
        let _ = fs::remove_dir_all(old);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_at_a_time_trains_into_a_run_directory() {
        let out = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(out.path()).unwrap();
        let text = fs::read_to_string(out.path().join("run.lock")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let err = format!("{:#}", RunLock::acquire(out.path()).err().expect("a second holder is refused"));
        assert!(err.contains("is being trained by another process"), "{err}");
        drop(lock);
        assert!(!out.path().join("run.lock").exists(), "dropping the lock removes it");

        // The lock of a process that was killed is taken over (where /proc tells).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        fs::write(out.path().join("run.lock"), format!("{pid}\n")).unwrap();
        if Path::new("/proc/self").exists() {
            let _lock = RunLock::acquire(out.path()).unwrap();
        }
    }
}
