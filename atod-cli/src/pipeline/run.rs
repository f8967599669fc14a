//! A training run in a run directory, as `atod train` makes it: the stages it needs (demonstrations,
//! tokenizer, teacher, student initialisation), the [`Trainer`] built from them, and the files of the run
//! directory contract (the grid's): `config.toml`, `metrics.jsonl` (one line per step), `evals.jsonl`
//! (evaluations at temperature `train.eval_temperature` on fixed tasks and seeds), `checkpoints/step-K/`
//! (weights, optimiser moments, state; written atomically, the two newest kept), `final/` and `summary.json`
//! (written last: a run is finished iff it exists). `<out>/run.lock` keeps a second process out.
//!
//! A run resumed from the checkpoint of step s replays steps s, s+1, ... exactly as the uninterrupted run does,
//! since every random stream of step s is seeded by (seed, s).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use atod_envs::Registry;
use atod_losses::Loss;
use atod_models::optim::AdamW;
use atod_models::{checkpoint, DeviceSpec, HotPathBackend, LmPolicy, SamplingParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::trainer::{Models, Settings, Trainer};
use super::{stages, EvalSummary};
use crate::distributed::Cluster;
use crate::progress::Progress;

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
    /// Episodes behind `initial_success_rate`, `final_success_rate` and `teacher_success_rate` (0 when unknown,
    /// in summaries written before these counts were kept).
    #[serde(default)]
    pub initial_episodes: u64,
    /// Episodes behind `final_success_rate`.
    #[serde(default)]
    pub final_episodes: u64,
    /// Episodes behind `teacher_success_rate`.
    #[serde(default)]
    pub teacher_episodes: u64,
    /// Whether the run trained in the reproducible mode (absent in summaries written before the mode existed).
    #[serde(default)]
    pub reproducible: bool,
    /// The instruction-set level atod's CPU kernels ran at (`x86-64-v4`, `x86-64-v3`, `portable`); empty when
    /// unknown.
    #[serde(default)]
    pub isa: String,
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
    /// Episodes behind the two rates (0 in checkpoints written before they were kept).
    #[serde(default)]
    initial_episodes: u64,
    #[serde(default)]
    teacher_episodes: u64,
    /// Nodes of a data-parallel run (absent, 1, for a single process): a run resumes with the same count.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    nodes: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// What the nodes of a data-parallel run agree on before the first step: where they start, and node 0's
/// evaluations before training (so that every node's summary carries them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NodeStart {
    start: u64,
    initial_success_rate: f64,
    teacher_success_rate: f64,
    initial_episodes: u64,
    teacher_episodes: u64,
}

/// Node 0's final evaluation, for the other nodes' summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NodeFinal {
    final_success_rate: f64,
    final_episodes: u64,
}

/// One line of `nodes/node-<i>.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct NodeLine<'a> {
    step: u64,
    node: usize,
    weight_hash: &'a str,
    samples: f64,
    #[serde(rename = "time/step")]
    time_step: f64,
    #[serde(rename = "time/collective")]
    time_collective: f64,
}

/// Runs (or resumes) a training run into `out`, reporting its stages and steps to `progress`.
pub fn run(
    registry: &Registry,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: &dyn Progress,
) -> anyhow::Result<RunSummary> {
    run_as(registry, config, out, resume, progress, None)
}

/// [`run`] as one node of a data-parallel run (crate::distributed): every node trains the same steps, each on
/// its share of the tasks (Trainer::step_on); node 0 writes the run directory (config, metrics with the weights'
/// hash, evaluations, checkpoints, final policy, summary) and evaluates, while the others wait for it. Every
/// node appends `nodes/node-<i>.jsonl` (step, weight hash, timings) to `out`. Resuming needs the same node count
/// and every node's `out` holding the same checkpoints (one shared directory, or copies).
pub fn run_distributed(
    registry: &Registry,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: &dyn Progress,
    cluster: &Cluster,
) -> anyhow::Result<RunSummary> {
    run_as(registry, config, out, resume, progress, Some(cluster))
}

fn run_as(
    registry: &Registry,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: &dyn Progress,
    cluster: Option<&Cluster>,
) -> anyhow::Result<RunSummary> {
    let device: DeviceSpec = config.device.parse()?;
    atod_models::cpu::isa::set_reproducible(config.reproducible);
    match device {
        DeviceSpec::Cpu => {
            run_on::<atod_models::CpuAutodiff>(registry, config, out, resume, progress, &Default::default(), cluster)
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            atod_models::backend::check_cuda(&device)?;
            let cuda = device.cuda_device().expect("a CUDA spec");
            run_on::<atod_models::CudaAutodiff>(registry, config, out, resume, progress, &cuda, cluster)
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

/// What a run starts from: its stages built (or found) and its models loaded.
pub struct Start<B: AutodiffBackend + HotPathBackend>
where
    B::InnerBackend: HotPathBackend,
{
    /// The teacher's SFT stage directory.
    pub teacher_stage: PathBuf,
    /// The student's initialisation: its own SFT stage's directory, or the teacher's snapshot.
    pub student_stage: PathBuf,
    /// The models: the student from its initialisation (or from `checkpoint`), the teacher, and the reference
    /// policy when the loss has a `kl` term (the student's initialisation, also after a resume). The teacher
    /// and the reference sample at the config's evaluation temperature.
    pub models: Models<B>,
    /// The optimiser, fresh or from `checkpoint`.
    pub optim: AdamW<B>,
    /// The loss of the config's method.
    pub loss: Loss,
}

/// Builds the stages a train config needs (demonstrations, tokenizer, teacher and student initialisation),
/// unless they exist, and loads the run's models; the student and its optimiser from `checkpoint` when given.
pub fn start<B>(
    registry: &Registry,
    config: &TrainConfig,
    checkpoint: Option<&Path>,
    progress: &dyn Progress,
    device: &B::Device,
    cluster: Option<&Cluster>,
) -> anyhow::Result<Start<B>>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    // Each model is an SFT stage's `model/`, or a checkpoint directory with a stage of its own for evaluations.
    // A student with a stage of its own is built before the teacher: the two are independent, and a grid's
    // parallel cells then build one environment's student and teacher side by side instead of one cell waiting
    // on the other's teacher (the order changes no stage).
    let own_student = match (&config.student.checkpoint, config.student.from_teacher_step) {
        (None, None) => {
            let stage = stages::sft_on(registry, &config.sft_stage(&config.student_sft()), progress, cluster)?.dir;
            Some(match config.student.from_step {
                Some(step) => super::sft::snapshot_dir(&stage, step),
                None => stage,
            })
        }
        _ => None,
    };
    let (teacher_stage, teacher_dir) = match &config.teacher.checkpoint {
        Some(dir) => (stages::checkpoint(&config.stages_dir, dir)?.dir, dir.clone()),
        None => {
            let stage = stages::sft_on(registry, &config.sft_stage(&config.teacher_sft()), progress, cluster)?.dir;
            let model = stage.join("model");
            (stage, model)
        }
    };
    let (student_stage, student_init) = match (&config.student.checkpoint, config.student.from_teacher_step) {
        (Some(dir), _) => (stages::checkpoint(&config.stages_dir, dir)?.dir, dir.clone()),
        (None, Some(step)) => {
            let stage = super::sft::snapshot_dir(&teacher_stage, step);
            let model = stage.join("model");
            (stage, model)
        }
        (None, None) => {
            let stage = own_student.expect("built above");
            let model = stage.join("model");
            (stage, model)
        }
    };
    let inner_device = Tensor::<B, 1>::zeros([1], device).inner().device();
    let sampling = eval_sampling(config);
    let teacher = LmPolicy::<B::InnerBackend>::load(&teacher_dir, &inner_device, sampling.clone(), 0)
        .with_context(|| format!("loading the teacher from {}", teacher_dir.display()))?;
    let student_dir = checkpoint.map_or_else(|| student_init.clone(), Path::to_path_buf);
    let (student_config, student) = checkpoint::load::<B>(&student_dir, device)
        .with_context(|| format!("loading the student from {}", student_dir.display()))?;
    let student_tokenizer = student_dir.join(atod_models::policy::TOKENIZER_FILE);
    let tokenizer = atod_models::ChatTokenizer::from_file(&student_tokenizer)?;
    if tokenizer.fingerprint() != teacher.tokenizer.fingerprint() {
        bail!(
            "the teacher's tokenizer {} and the student's tokenizer {} differ: the teacher scores the student's \
             tokens, so both models must use one tokenizer",
            teacher_dir.join(atod_models::policy::TOKENIZER_FILE).display(),
            student_tokenizer.display()
        );
    }
    if tokenizer.vocab_size() > student_config.vocab_size {
        bail!(
            "the tokenizer {} has {} tokens but the student's vocabulary has only {}",
            student_tokenizer.display(),
            tokenizer.vocab_size(),
            student_config.vocab_size
        );
    }
    let loss = Loss::new(config.loss_config()?)?;
    let needs_reference = loss.needs().iter().any(|&(_, input)| input == atod_losses::Input::LpRef);
    if atod_models::cpu::isa::reproducible()
        && loss.needs().iter().any(|&(_, input)| input == atod_losses::Input::Vocab)
    {
        // The full-vocabulary distributions come from burn's `log_softmax`, whose max and sum over the vocabulary
        // run in burn-flex's SIMD at the CPU's own width (ARCHITECTURE.md, "Reproducible mode").
        eprintln!(
            "warning: the `gkd` loss component reads full-vocabulary log-probabilities computed by burn's \
             log_softmax, whose reductions follow the CPU's SIMD width: this run is deterministic on this machine, \
             not bit-identical across CPUs"
        );
    }
    let reference =
        needs_reference.then(|| LmPolicy::load(&student_init, &inner_device, sampling.clone(), 0)).transpose()?;
    let optim = match checkpoint {
        Some(dir) => AdamW::<B>::load(&dir.join("optimizer.safetensors"), &inner_device)?,
        None => AdamW::<B>::new(config.train.optimizer.clone()),
    };
    let models = Models { student, student_config, tokenizer, teacher, reference };
    Ok(Start { teacher_stage, student_stage, models, optim, loss })
}

/// The sampling of a run's evaluations: `train.eval_temperature` with the prompt's response budget.
fn eval_sampling(config: &TrainConfig) -> SamplingParams {
    SamplingParams {
        temperature: config.train.eval_temperature,
        max_new_tokens: config.prompt.max_new_tokens,
        ..SamplingParams::default()
    }
}

fn run_on<B>(
    registry: &Registry,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: &dyn Progress,
    device: &B::Device,
    cluster: Option<&Cluster>,
) -> anyhow::Result<RunSummary>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let started = Instant::now();
    let settings = Settings::of(config);
    let steps = settings.steps;
    // The leader writes the run directory; the other nodes of a data-parallel run only their own node file.
    let leader = cluster.is_none_or(Cluster::is_leader);
    let nodes = cluster.map_or(1, Cluster::nodes) as u64;
    if leader && out.join("summary.json").exists() && !resume {
        bail!("{} already holds a finished run; choose another --out or delete it", out.display());
    }
    let checkpoint = if resume { latest_checkpoint(out) } else { None };
    if leader && !resume && out.join("metrics.jsonl").exists() {
        bail!("{} already holds a run; pass --resume to continue it", out.display());
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let _lock = if leader { Some(RunLock::acquire(out)?) } else { None };
    if leader {
        checkpoint::write_file_atomic(&out.join("config.toml"), toml::to_string(config)?.as_bytes())?;
    }
    let node_file = cluster.map(|c| out.join("nodes").join(format!("node-{}.jsonl", c.index())));
    if let Some(file) = &node_file {
        fs::create_dir_all(out.join("nodes"))?;
        if checkpoint.is_none() {
            let _ = fs::remove_file(file);
        }
    }

    let checkpoint_dir = checkpoint.as_ref().map(|(_, dir)| dir.as_path());
    let Start { teacher_stage, student_stage, models, optim, loss } =
        start::<B>(registry, config, checkpoint_dir, progress, device, cluster)?;
    let plugin = registry.get(&config.env.name)?;
    let mut trainer = Trainer::new(plugin, &config.env.config_toml(), models, optim, loss, settings)?;
    let eval_sampling = eval_sampling(config);

    // Where the run starts: fresh (evaluate the teacher and the student first) or from a checkpoint.
    let eval_seed = 0;
    let mut begin = match &checkpoint {
        Some((step, dir)) => {
            let state: CheckpointState = serde_json::from_str(&fs::read_to_string(dir.join("state.json"))?)?;
            if state.nodes != nodes {
                bail!(
                    "{} was trained on {} node(s) and this run has {nodes}: resume it with --nodes {} (the step's \
                     tasks are shared out by node, and its sampling follows)",
                    out.display(),
                    state.nodes,
                    state.nodes
                );
            }
            if leader {
                truncate_jsonl(&out.join("metrics.jsonl"), |s| s < *step)?;
                truncate_jsonl(&out.join("evals.jsonl"), |s| s <= *step)?;
            }
            if let Some(file) = &node_file {
                truncate_jsonl(file, |s| s < *step)?;
            }
            eprintln!("resuming {} at step {step}", out.display());
            NodeStart {
                start: *step,
                initial_success_rate: state.initial_success_rate,
                teacher_success_rate: state.teacher_success_rate,
                initial_episodes: state.initial_episodes,
                teacher_episodes: state.teacher_episodes,
            }
        }
        None if leader => {
            for file in ["metrics.jsonl", "evals.jsonl"] {
                let _ = fs::remove_file(out.join(file));
            }
            let teacher = &mut trainer.teacher;
            let teacher_eval = match config.train.teacher_eval_episodes {
                Some(episodes) => {
                    let mut wider = config.clone();
                    wider.train.eval_episodes = episodes;
                    super::cached_stage_eval(&teacher_stage, teacher, plugin, &wider, eval_seed, progress)?
                }
                None => super::cached_stage_eval(&teacher_stage, teacher, plugin, config, eval_seed, progress)?,
            };
            let mut before = trainer.policy(eval_sampling.clone(), 0)?;
            let initial = super::cached_stage_eval(&student_stage, &mut before, plugin, config, eval_seed, progress)?;
            append_jsonl(
                &out.join("evals.jsonl"),
                &EvalLine { step: 0, split: config.env.eval_split.clone(), summary: initial.clone() },
            )?;
            eprintln!(
                "teacher success {:.3}, student before training {:.3}",
                teacher_eval.success_rate, initial.success_rate
            );
            NodeStart {
                start: 0,
                initial_success_rate: initial.success_rate,
                teacher_success_rate: teacher_eval.success_rate,
                initial_episodes: initial.episodes,
                teacher_episodes: teacher_eval.episodes,
            }
        }
        None => NodeStart {
            start: 0,
            initial_success_rate: 0.0,
            teacher_success_rate: 0.0,
            initial_episodes: 0,
            teacher_episodes: 0,
        },
    };
    if let Some(cluster) = cluster {
        let starts = cluster.gather("the nodes' start", &begin)?;
        if let Some((node, other)) = starts.iter().enumerate().find(|(_, s)| s.start != begin.start) {
            bail!(
                "node {node} starts at step {} and node {} at step {}: every node's {} must hold the same \
                 checkpoints",
                other.start,
                cluster.index(),
                begin.start,
                out.display()
            );
        }
        begin = starts.into_iter().next().expect("node 0's");
    }
    let NodeStart { start, initial_success_rate, teacher_success_rate, initial_episodes, teacher_episodes } = begin;

    let label = format!("{} {}", config.method, config.env.name);
    let mut last_eval = None;
    progress.start(steps, &label);
    progress.set_position(start);
    for step in start..steps {
        let (metrics, hash) = match cluster {
            Some(cluster) => {
                let (metrics, hash) = trainer.step_on(step, cluster).with_context(|| format!("step {step}"))?;
                (metrics, Some(hash))
            }
            None => (trainer.step(step)?, None),
        };
        let skipped = metrics["train/skipped_updates"];
        if skipped > 0.0 && leader {
            eprintln!("warning: step {step}: {skipped} update(s) skipped for a non-finite loss or gradient");
        }
        if let (Some(cluster), Some(file), Some(hash)) = (cluster, &node_file, &hash) {
            let line = NodeLine {
                step,
                node: cluster.index(),
                weight_hash: hash,
                samples: metrics["dist/node_samples"],
                time_step: metrics["time/step"],
                time_collective: metrics["time/collective"],
            };
            append_jsonl(file, &line)?;
        }
        let done = step + 1;
        if leader {
            let mut line = serde_json::Map::new();
            line.insert("step".into(), step.into());
            line.extend(metrics.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))));
            if let Some(hash) = &hash {
                line.insert("weight_hash".into(), hash.clone().into());
            }
            append_jsonl(&out.join("metrics.jsonl"), &line)?;

            if done % config.train.eval_every.max(1) == 0 || done == steps {
                let mut policy = trainer.policy(eval_sampling.clone(), 0)?;
                let summary = super::evaluate_train(&mut policy, plugin, config, eval_seed, &())?;
                last_eval = Some(summary.success_rate);
                append_jsonl(
                    &out.join("evals.jsonl"),
                    &EvalLine { step: done, split: config.env.eval_split.clone(), summary },
                )?;
            }
            if done % config.train.checkpoint_every.max(1) == 0 || done == steps {
                let state = CheckpointState {
                    step: done,
                    initial_success_rate,
                    teacher_success_rate,
                    initial_episodes,
                    teacher_episodes,
                    nodes,
                };
                save_checkpoint(out, &trainer, &state)?;
            }
        }
        progress.set_position(done);
        progress.set_message(&format!(
            "rollout success {:.2} | eval {} | {:.0} tok/s",
            metrics["rollout/success_rate"],
            last_eval.map_or("-".to_owned(), |s| format!("{s:.2}")),
            metrics["rollout/response_tokens"] / metrics["time/step"]
        ));
    }
    progress.finish();

    // The final policy and the summary.
    let mut ending = NodeFinal { final_success_rate: initial_success_rate, final_episodes: initial_episodes };
    if leader {
        let final_policy = trainer.policy(eval_sampling, 0)?;
        final_policy.save(&out.join("final"))?;
        if steps > 0 {
            if let Some((rate, episodes)) = last_eval_success(out)? {
                ending = NodeFinal { final_success_rate: rate, final_episodes: episodes };
            }
        }
    }
    if let Some(cluster) = cluster {
        ending = cluster.gather("the final evaluation", &ending)?.into_iter().next().expect("node 0's");
    }
    let NodeFinal { final_success_rate, final_episodes } = ending;
    let summary = RunSummary {
        status: "finished".into(),
        name: config.name.clone(),
        env: config.env.name.clone(),
        student: config.student.label(),
        method: config.method.clone(),
        seed: config.seed,
        steps,
        initial_success_rate,
        final_success_rate,
        teacher_success_rate,
        initial_episodes,
        final_episodes,
        teacher_episodes,
        reproducible: atod_models::cpu::isa::reproducible(),
        isa: atod_models::cpu::isa::level().name().to_owned(),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    if leader {
        checkpoint::write_file_atomic(
            &out.join("summary.json"),
            (serde_json::to_string_pretty(&summary)? + "\n").as_bytes(),
        )?;
    }
    Ok(summary)
}

fn last_eval_success(out: &Path) -> anyhow::Result<Option<(f64, u64)>> {
    let text = fs::read_to_string(out.join("evals.jsonl")).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<EvalLine>(l).ok())
        .next_back()
        .map(|e| (e.summary.success_rate, e.summary.episodes)))
}

/// Writes `checkpoints/step-K/` atomically: the student (an export), the optimiser's moments and the run's state.
fn save_checkpoint<B>(out: &Path, trainer: &Trainer<B>, state: &CheckpointState) -> anyhow::Result<()>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let step = state.step;
    let dir = out.join("checkpoints").join(format!("step-{step}"));
    let scratch = out.join("checkpoints").join(format!(".optimizer-{step}.safetensors"));
    trainer.optim.save(&scratch)?;
    let optimizer = fs::read(&scratch)?;
    let _ = fs::remove_file(&scratch);
    let state = serde_json::to_string_pretty(state)?;
    let tokenizer = trainer.tokenizer.to_json()?;
    checkpoint::save(
        trainer.student(),
        &trainer.student_config,
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
