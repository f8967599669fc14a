//! The TOML configs of `atod sft` and `atod train`, and how they resolve into stages.
//!
//! A train config names everything its run needs: the environment, the expert demonstrations and the tokenizer
//! trained on them, the teacher and the student initialisation (each an SFT config), the online loop and the
//! loss. Every table denies unknown keys, so a typo is an error that names the key and the file.
//!
//! ```toml
//! name = "quickstart"
//! method = "atod"          # a loss preset (atod | opd | grpo | atod-uniform | atod-const | atod-token) or sft-init
//! seed = 0
//! device = "cpu"
//!
//! [env]                    # atod_core::EnvConfig
//! name = "alfworld"
//! config = { preset = "mini" }
//!
//! [demos]                  # expert demonstrations (SFT data and tokenizer corpus)
//! episodes = 120
//!
//! [tokenizer]
//! vocab_size = 512
//!
//! [teacher]                # an SFT stage
//! preset = "student-l"
//! steps = 300
//! prompt_loss_weight = "step_at(200, 1, 0)"   # predict prompts too, then responses only
//!
//! [student]                # the student's initialisation: another SFT stage
//! preset = "student-s"
//! steps = 60
//! # or: the teacher's model after 250 of its steps (preset = the teacher's, no training keys)
//! # from_teacher_step = 250
//! # or: this stage's own model after 40 of its 60 steps
//! # from_step = 40
//!
//! [train]                  # the online loop
//! steps = 20
//!
//! [loss]                   # optional overrides of the method's loss preset (atod-losses)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use atod_core::config::EnvConfig;
use atod_core::Schedule;
use atod_losses::LossConfig;
use atod_models::optim::AdamWConfig;
use serde::{Deserialize, Serialize};

/// The method that trains nothing and evaluates the initialisation.
pub const SFT_INIT: &str = "sft-init";

/// The methods `atod train` knows: every loss preset of atod-losses (`atod`, `opd`, `grpo` and the ablations),
/// then [`SFT_INIT`].
pub fn methods() -> Vec<&'static str> {
    let mut names = atod_losses::loss::presets().names();
    names.push(SFT_INIT);
    names
}

/// Expert demonstrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemosConfig {
    /// Expert episodes played on the train split (only won episodes' turns are kept).
    #[serde(default = "default_demo_episodes")]
    pub episodes: u64,
    /// The seed of the episodes.
    #[serde(default)]
    pub seed: u64,
}

fn default_demo_episodes() -> u64 {
    120
}

impl Default for DemosConfig {
    fn default() -> Self {
        Self { episodes: default_demo_episodes(), seed: 0 }
    }
}

/// The tokenizer trained on the demonstrations, or one given as a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Vocabulary size (at least 259).
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// A Hugging Face `tokenizer.json` to use instead of training one (`vocab_size` is then ignored). When the
    /// teacher or the student is a checkpoint directory, its `tokenizer.json` is used this way, so that an SFT
    /// stage beside it shares its ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

fn default_vocab() -> usize {
    512
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self { vocab_size: default_vocab(), file: None }
    }
}

/// Prompt rendering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Prompts are cut to this many tokens (oldest history first).
    #[serde(default = "default_max_prompt_tokens")]
    pub max_prompt_tokens: usize,
    /// A response is cut at this many tokens.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// An episode ends after this many turns at the latest (the environment may end it sooner).
    #[serde(default = "default_max_turns")]
    pub max_turns: usize,
}

fn default_max_prompt_tokens() -> usize {
    768
}
fn default_max_new_tokens() -> usize {
    48
}
fn default_max_turns() -> usize {
    30
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            max_prompt_tokens: default_max_prompt_tokens(),
            max_new_tokens: default_max_new_tokens(),
            max_turns: default_max_turns(),
        }
    }
}

/// One supervised fine-tuning stage: a model preset trained on the demonstrations; or, in a train config's
/// `[teacher]` and `[student]`, a checkpoint directory in its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// The model preset (atod_models::model::PRESETS); empty (left out) when `checkpoint` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preset: String,
    /// A train config's `[teacher]` or `[student]` only: a Hugging Face checkpoint directory (`config.json`,
    /// `model*.safetensors`, `tokenizer.json`; Qwen2, Qwen3 or Llama) used as the model instead of an SFT stage.
    /// A relative path is looked up beside the config file first, then in the working directory. The training
    /// keys (`steps`, `lr`, ...) must be left out; `eval_episodes` still applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// Optimiser steps.
    #[serde(default = "default_sft_steps")]
    pub steps: u64,
    /// Transcripts per step.
    #[serde(default = "default_sft_batch")]
    pub batch_size: usize,
    /// The learning rate, a schedule over the SFT steps: an expression is used as written (`"cosine(3e-3, 3e-4,
    /// total)"`), and a bare number is the peak of the default shape, a linear warm-up over the first 5% of the
    /// steps then a cosine decay to 10% of the peak (`sft::lr_at`).
    #[serde(default = "default_sft_lr")]
    pub lr: Schedule,
    /// AdamW.
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// The seed of the weights and of the batch order.
    #[serde(default)]
    pub seed: u64,
    /// Evaluation episodes at the end (on the eval split).
    #[serde(default = "default_eval_episodes")]
    pub eval_episodes: u64,
    /// The weight of the prompt tokens in the loss, relative to the response tokens' 1: a number or a schedule
    /// over the SFT steps (DESIGN.md §4's expressions), in [0, 1] at every step (default 0: the loss is on the
    /// response tokens only). Each step draws that fraction of the prompt tokens as targets (an unbiased and
    /// cheaper form of weighting them all). A model trained from scratch learns the environment's language, and
    /// above all to copy names from it, much faster when it also predicts the prompts: the analogue of the
    /// pretraining a real teacher has had. A schedule that ends at 0, such as `"step_at(500, 1, 0)"` or
    /// `"linear(1, 0, total)"`, finishes with response tokens only, so that the model answers rather than goes on
    /// writing prompt text.
    #[serde(default = "zero_schedule", skip_serializing_if = "is_zero")]
    pub prompt_loss_weight: Schedule,
    /// Steps after which the stage also keeps its model, in `snapshots/step-K/model/` (a student's
    /// `from_teacher_step` adds its step to the teacher's list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<u64>,
    /// A train config's `[student]` only: the student is the teacher's model after this many of the teacher's SFT
    /// steps (a snapshot its stage keeps) rather than a model trained on its own. The student then shares the
    /// teacher's preset, and its own training keys (`steps`, `lr`, ...) must be left out; `eval_episodes` still
    /// applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_teacher_step: Option<u64>,
    /// A train config's `[student]` only: the student is its own SFT stage's model after this many of the
    /// stage's `steps` (a snapshot the stage keeps), rather than its final model: a student weaker by its
    /// training budget, taken from a run whose learning-rate schedule is the full stage's. The stage itself is
    /// the same for every `from_step` (its key holds the snapshot, as if `snapshots` listed it), so list the
    /// step in `snapshots` too when cells with and without it must share one stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<u64>,
    /// Each batch is split into this many shards, computed side by side on as many threads and their gradients
    /// summed (data parallelism on one machine; 2 shards ran 1.5x faster than 1 on the 2-core VM). The result
    /// depends on the count through float rounding only, but it does, so the count is part of the stage.
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// DAgger (Ross et al., 2011): during the stage, the model plays train episodes and every state it reaches
    /// is labelled with the environment's expert response, and those transcripts join the demonstrations, so
    /// that the model learns to recover from its own mistakes, which expert trajectories never show. Absent: the
    /// demonstrations alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dagger: Option<DaggerConfig>,
    /// A copying curriculum before the SFT steps: the model first learns to continue a sequence that repeats an
    /// earlier one (random spans of the demonstrations' own tokens, written twice), which is how a transformer
    /// learns induction heads, the skill of copying a name it has seen once in its prompt. A pretrained teacher
    /// has it; a model trained from scratch on a few thousand transcripts does not. Absent: no curriculum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_pretrain: Option<CopyPretrainConfig>,
}

/// The copying curriculum of an SFT stage ([`SftConfig::copy_pretrain`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyPretrainConfig {
    /// Optimiser steps (with an AdamW of their own, before the SFT steps); with `until_loss`, the most it may take.
    pub steps: u64,
    /// End the curriculum as soon as the mean loss of its last [`super::sft::COPY_WINDOW`] steps falls below this
    /// (nats), rather than after a fixed count: the induction phase change comes after a number of steps that
    /// varies widely between runs (student-l on the same ALFWorld demonstrations: under 700 steps at lr 1.5e-3,
    /// about 1,750 to past 5,000 at 3e-3), so a step count either stops some runs in the middle of it or trains
    /// others long after it. Absent: `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_loss: Option<f64>,
    /// Sequences per step.
    #[serde(default = "default_sft_batch")]
    pub batch_size: usize,
    /// The learning rate, a schedule over the curriculum's steps (a bare number: `sft::lr_at`'s default shape).
    #[serde(default = "default_sft_lr")]
    pub lr: Schedule,
    /// The length of the span a sequence repeats, drawn uniformly from `[min, max]` tokens.
    #[serde(default = "default_copy_span")]
    pub span: [usize; 2],
}

fn default_copy_span() -> [usize; 2] {
    [8, 64]
}

/// When and how an SFT stage collects DAgger transcripts ([`SftConfig::dagger`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaggerConfig {
    /// The first collection, after this many SFT steps.
    pub start: u64,
    /// Then one more every this many steps, while steps remain.
    pub every: u64,
    /// Train episodes the model plays per collection (each on fresh seeds).
    pub episodes: u64,
    /// The sampling temperature of those episodes.
    #[serde(default = "default_dagger_temperature")]
    pub temperature: f64,
}

fn default_dagger_temperature() -> f64 {
    0.7
}

impl DaggerConfig {
    /// The steps after which a collection runs, for a stage of `steps` steps: `start`, `start + every`, ... below
    /// `steps`.
    pub fn collections(&self, steps: u64) -> Vec<u64> {
        (0..).map(|k| self.start + k * self.every).take_while(|&s| s < steps).collect()
    }
}

fn default_shards() -> usize {
    2
}

impl SftConfig {
    /// What the model is, for summaries and tables: the preset, or `checkpoint:<directory name>`.
    pub fn label(&self) -> String {
        match &self.checkpoint {
            Some(dir) => format!(
                "checkpoint:{}",
                dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
            ),
            None => self.preset.clone(),
        }
    }

    /// Checks what serde cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some((step, value)) = self.prompt_loss_weight.first_step_where(self.steps, |w| !(0.0..=1.0).contains(&w))
        {
            bail!(
                "`prompt_loss_weight` must lie in [0, 1] at every step, but `{}` is {value} at step {step}",
                self.prompt_loss_weight.source()
            );
        }
        if self.steps == 0 || self.batch_size == 0 || self.shards == 0 {
            bail!("`steps`, `batch_size` and `shards` must be positive");
        }
        if let Some(&bad) = self.snapshots.iter().find(|&&k| k == 0 || k > self.steps) {
            bail!("`snapshots` holds step {bad}, outside 1..={}", self.steps);
        }
        if let Some(dagger) = &self.dagger {
            if dagger.start == 0 || dagger.start >= self.steps || dagger.every == 0 || dagger.episodes == 0 {
                bail!(
                    "`dagger` needs 1 <= start < steps ({}), every >= 1 and episodes >= 1 (got start {}, every {}, \
                     episodes {})",
                    self.steps,
                    dagger.start,
                    dagger.every,
                    dagger.episodes
                );
            }
            if !(dagger.temperature > 0.0 && dagger.temperature.is_finite()) {
                bail!("`dagger.temperature` must be positive and finite, got {}", dagger.temperature);
            }
        }
        if let Some(copy) = &self.copy_pretrain {
            if copy.steps == 0 || copy.batch_size == 0 || copy.span[0] < 2 || copy.span[0] > copy.span[1] {
                bail!(
                    "`copy_pretrain` needs steps >= 1, batch_size >= 1 and 2 <= span[0] <= span[1] (got steps {}, \
                     batch_size {}, span {:?})",
                    copy.steps,
                    copy.batch_size,
                    copy.span
                );
            }
            check_lr("copy_pretrain.lr", &copy.lr, copy.steps)?;
            if let Some(threshold) = copy.until_loss {
                if !(threshold > 0.0 && threshold.is_finite()) {
                    bail!("`copy_pretrain.until_loss` must be positive and finite, got {threshold}");
                }
            }
        }
        Ok(())
    }
}

/// A learning rate must be finite and non-negative at every step.
fn check_lr(key: &str, lr: &Schedule, total: u64) -> anyhow::Result<()> {
    if let Some((step, value)) = lr.first_step_where(total, |v| !(v >= 0.0 && v.is_finite())) {
        bail!("`{key}` must be finite and >= 0 at every step, but `{}` is {value} at step {step}", lr.source());
    }
    Ok(())
}

fn is_zero(x: &Schedule) -> bool {
    x.is_constant() && x.eval(0, 1) == 0.0
}

fn zero_schedule() -> Schedule {
    Schedule::constant(0.0)
}

fn default_sft_steps() -> u64 {
    200
}
fn default_sft_batch() -> usize {
    16
}
fn default_sft_lr() -> Schedule {
    Schedule::constant(3e-3)
}
fn default_eval_episodes() -> u64 {
    32
}

/// The online loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Training steps.
    #[serde(default = "default_steps")]
    pub steps: u64,
    /// Tasks drawn per step.
    #[serde(default = "default_tasks_per_step")]
    pub tasks_per_step: usize,
    /// Episodes per task (a GRPO group).
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// The learning rate, a number or a schedule over the online steps (`"warmup(5, 3e-4)"`,
    /// `"cosine(3e-4, 3e-5, total)"`). Default 3e-4: at 3e-3 a 0.1M-parameter student's approximate KL to its
    /// rollout policy reached 0.75 within one step and every response became invalid by the second (`counter`,
    /// mini-batches of 8).
    #[serde(default = "default_lr")]
    pub lr: Schedule,
    /// Removed: a warm-up is part of the `lr` schedule (`lr = "warmup(5, 3e-4)"`). Kept to say so, and so that
    /// the resolved configs of earlier runs, which write `warmup = 0`, still load.
    #[serde(default, skip_serializing)]
    pub warmup: Option<u64>,
    /// AdamW.
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// Turn samples per mini-batch (one optimiser step each).
    #[serde(default = "default_mini_batch")]
    pub mini_batch_size: usize,
    /// Passes over each step's samples.
    #[serde(default = "default_ppo_epochs")]
    pub ppo_epochs: usize,
    /// Sampling temperature of rollouts, a number or a schedule over the online steps; the behaviour, teacher
    /// and reference log-probs of a step are all taken at its value (positive at every step).
    #[serde(default = "default_temperature")]
    pub temperature: Schedule,
    /// Sampling temperature of evaluations.
    #[serde(default = "default_eval_temperature")]
    pub eval_temperature: f32,
    /// Evaluate every this many steps (and at the start and the end).
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Evaluation episodes (on the eval split).
    #[serde(default = "default_eval_episodes")]
    pub eval_episodes: u64,
    /// The teacher's evaluation episodes, when more than `eval_episodes` (at least that many): the teacher is
    /// evaluated once per run (once per teacher stage, cached), so its success can be known better than the
    /// student's at every evaluation cheaply. Episode `i` plays the split's task `i` (evaluation.rs), so the
    /// student's episodes are the first `eval_episodes` of the teacher's. Set it to the teacher stage's own
    /// `eval_episodes` and the stage's evaluation is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_eval_episodes: Option<u64>,
    /// Checkpoint every this many steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Each mini-batch's forward and backward, and the teacher's scoring, run in this many shards side by side,
    /// each on its own thread (and, for the update, its own replica of the student), their gradients summed
    /// with weights that keep the update the whole mini-batch's. Results depend on the count by float
    /// rounding only.
    #[serde(default = "default_shards")]
    pub shards: usize,
}

fn default_steps() -> u64 {
    20
}
fn default_tasks_per_step() -> usize {
    4
}
fn default_group_size() -> usize {
    4
}
fn default_lr() -> Schedule {
    Schedule::constant(3e-4)
}
fn default_mini_batch() -> usize {
    64
}
fn default_ppo_epochs() -> usize {
    1
}
fn default_temperature() -> Schedule {
    Schedule::constant(1.0)
}
fn default_eval_temperature() -> f32 {
    super::STAGE_EVAL_TEMPERATURE
}
fn default_eval_every() -> u64 {
    10
}
fn default_checkpoint_every() -> u64 {
    5
}

impl Default for LoopConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// `atod train --config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The run's name (its directory under `runs/` unless `--out` says otherwise).
    pub name: String,
    /// The method (see [`methods`]).
    #[serde(default = "default_method")]
    pub method: String,
    /// The seed of everything random in the online loop.
    #[serde(default)]
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// The reproducible mode (on by default): on the CPU, every result is the same bits on every x86-64 CPU
    /// with AVX2 and FMA and for any number of threads (atod_models::cpu::isa). `atod train --reproducible
    /// false` overrides it.
    #[serde(default = "default_reproducible")]
    pub reproducible: bool,
    /// Where built stages (demonstrations, tokenizers, SFT models) are kept and reused; default `runs/stages`.
    #[serde(default)]
    pub stages_dir: Option<PathBuf>,
    /// The environment.
    pub env: EnvConfig,
    /// Prompt rendering and turn limits.
    #[serde(default)]
    pub prompt: PromptConfig,
    /// Expert demonstrations.
    #[serde(default)]
    pub demos: DemosConfig,
    /// The tokenizer.
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// The teacher: an SFT stage.
    pub teacher: SftConfig,
    /// The student's initialisation: an SFT stage.
    pub student: SftConfig,
    /// The online loop.
    #[serde(default)]
    pub train: LoopConfig,
    /// Overrides of the method's loss preset (keys of atod-losses' `[loss]` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<toml::Table>,
    /// Data-parallel training across nodes (`atod train --nodes N ...` says the same; crate::distributed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<crate::distributed::DistributedConfig>,
}

fn default_method() -> String {
    "atod".to_owned()
}
fn default_device() -> String {
    "cpu".to_owned()
}
fn default_reproducible() -> bool {
    true
}

/// `atod sft --config`: one SFT stage with its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftRunConfig {
    /// The run's name.
    pub name: String,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// The reproducible mode, as in a train config.
    #[serde(default = "default_reproducible")]
    pub reproducible: bool,
    /// Where stages are kept; default `runs/stages`.
    #[serde(default)]
    pub stages_dir: Option<PathBuf>,
    /// The environment.
    pub env: EnvConfig,
    /// Prompt rendering.
    #[serde(default)]
    pub prompt: PromptConfig,
    /// Expert demonstrations.
    #[serde(default)]
    pub demos: DemosConfig,
    /// The tokenizer.
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// The model and its training.
    pub model: SftConfig,
}

/// Reads a TOML config; errors name the file (and, from serde, the key and line).
pub fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).map_err(|err| anyhow::anyhow!("config {}: {}", path.display(), err.to_string().trim_end()))
}

impl TrainConfig {
    /// Reads and checks a train config; relative checkpoint and tokenizer paths are resolved (see
    /// [`resolve_path`]).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Self = read(path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        for dir in [&mut config.teacher.checkpoint, &mut config.student.checkpoint, &mut config.tokenizer.file]
            .into_iter()
            .flatten()
        {
            *dir = resolve_path(base, dir);
        }
        config.check().with_context(|| format!("config {}", path.display()))?;
        Ok(config)
    }

    /// The `tokenizer.json` every model of the run must share, when it is not trained on the demonstrations: the
    /// teacher's checkpoint's, else the student's, else `[tokenizer] file`.
    pub fn tokenizer_file(&self) -> Option<PathBuf> {
        (self.teacher.checkpoint.as_ref().or(self.student.checkpoint.as_ref()))
            .map(|dir| dir.join(atod_models::policy::TOKENIZER_FILE))
            .or_else(|| self.tokenizer.file.clone())
    }

    /// Checks what serde cannot: names and ranges.
    pub fn check(&self) -> anyhow::Result<()> {
        if !methods().contains(&self.method.as_str()) {
            bail!("unknown method `{}` (key `method`); known methods: {}", self.method, methods().join(", "));
        }
        self.device.parse::<atod_models::DeviceSpec>().context("key `device`")?;
        for (key, sft) in [("teacher", &self.teacher), ("student", &self.student)] {
            if sft.checkpoint.is_some() {
                check_checkpoint_model(key, sft)?;
                continue;
            }
            if sft.preset.is_empty() {
                bail!("key `{key}`: give a `preset` (the model of an SFT stage) or a `checkpoint` directory");
            }
            atod_models::TransformerConfig::preset(&sft.preset, 512).with_context(|| format!("key `{key}.preset`"))?;
            sft.check().with_context(|| format!("key `{key}`"))?;
        }
        if self.teacher.from_teacher_step.is_some() {
            bail!("key `teacher.from_teacher_step`: only a student can start from the teacher");
        }
        if self.teacher.checkpoint.is_some() && self.student.from_teacher_step.is_some() {
            bail!(
                "key `student.from_teacher_step`: the teacher is a checkpoint, not an SFT stage, so it has no \
                 snapshots to start from"
            );
        }
        if self.teacher.from_step.is_some() {
            bail!("key `teacher.from_step`: only a student can start from a snapshot of its own stage");
        }
        if let Some(step) = self.student.from_step {
            if self.student.checkpoint.is_some() || self.student.from_teacher_step.is_some() {
                bail!(
                    "key `student.from_step`: the student is a checkpoint or the teacher's snapshot, not an SFT \
                     stage of its own, so it has no snapshots to start from"
                );
            }
            if step == 0 || step >= self.student.steps {
                bail!(
                    "key `student.from_step`: {step} is not a step inside the student's SFT (1..{})",
                    self.student.steps
                );
            }
        }
        if let Some(step) = self.student.from_teacher_step {
            if step == 0 || step >= self.teacher.steps {
                bail!(
                    "key `student.from_teacher_step`: {step} is not a step inside the teacher's SFT (1..{})",
                    self.teacher.steps
                );
            }
            // The student's own training keys have no effect, so any that differs from its default is a mistake.
            let mut plain: SftConfig = toml::from_str(&format!("preset = {:?}", self.teacher.preset))?;
            plain.eval_episodes = self.student.eval_episodes;
            plain.from_teacher_step = Some(step);
            let given = toml::Table::try_from(&self.student)?;
            let expected = toml::Table::try_from(&plain)?;
            let keys: std::collections::BTreeSet<String> = given.keys().chain(expected.keys()).cloned().collect();
            let differing = keys.into_iter().find(|k| given.get(k) != expected.get(k));
            if let Some(key) = differing {
                bail!(
                    "key `student.{key}`: a student with `from_teacher_step` is the teacher's snapshot ({}, {step} \
                     steps), so `{key}` {}",
                    self.teacher.preset,
                    if key == "preset" { "must be the teacher's" } else { "has no effect: leave it out" }
                );
            }
        }
        if self.train.tasks_per_step == 0
            || self.train.group_size == 0
            || self.train.mini_batch_size == 0
            || self.train.shards == 0
        {
            bail!(
                "`train.tasks_per_step`, `train.group_size`, `train.mini_batch_size` and `train.shards` must be positive"
            );
        }
        if let Some(warmup) = self.train.warmup.filter(|&w| w > 0) {
            bail!(
                "key `train.warmup` is gone: a warm-up is part of the learning-rate schedule, for example \
                 `lr = \"warmup({warmup}, {})\"`",
                self.train.lr.source()
            );
        }
        let steps = self.train.steps.max(1);
        if let Some((step, value)) = self.train.temperature.first_step_where(steps, |t| !(t > 0.0 && t.is_finite())) {
            bail!(
                "`train.temperature` must be positive at every step, but `{}` is {value} at step {step}: rollouts \
                 sample, and the on-policy log-probs are taken at that temperature",
                self.train.temperature.source()
            );
        }
        check_lr("train.lr", &self.train.lr, steps)?;
        if let Some(n) = self.train.teacher_eval_episodes.filter(|&n| n < self.train.eval_episodes) {
            bail!(
                "`train.teacher_eval_episodes` ({n}) must be at least `train.eval_episodes` ({}): the students' \
                 episodes are the first of the teacher's",
                self.train.eval_episodes
            );
        }
        if self.teacher.checkpoint.is_none() {
            check_lr("teacher.lr", &self.teacher.lr, self.teacher.steps)?;
        }
        if self.student.from_teacher_step.is_none() && self.student.checkpoint.is_none() {
            check_lr("student.lr", &self.student.lr, self.student.steps)?;
        }
        let loss = atod_losses::Loss::new(self.loss_config()?)?;
        loss.check_fed(super::trainer::FED).map_err(|err| anyhow::anyhow!("{err}"))?;
        Ok(())
    }

    /// The loss of this run: the method's preset with the `[loss]` overrides.
    pub fn loss_config(&self) -> anyhow::Result<LossConfig> {
        let preset = match self.method.as_str() {
            SFT_INIT => "atod",
            other => other,
        };
        let mut table = toml::Table::new();
        table.insert("preset".into(), toml::Value::String(preset.to_owned()));
        if let Some(overrides) = &self.loss {
            if overrides.contains_key("preset") {
                bail!("`loss.preset` cannot be set: the method chooses the preset");
            }
            table.extend(overrides.clone());
        }
        let mut doc = toml::Table::new();
        doc.insert("loss".into(), toml::Value::Table(table));
        LossConfig::from_toml(&toml::to_string(&doc)?).map_err(|err| {
            // An unknown component is named by its own key, `loss.components.<name>`.
            let key = match &err {
                atod_losses::Error::UnknownName { kind: "loss component", name, .. } => {
                    format!("loss.components.{name}")
                }
                _ => "loss".to_owned(),
            };
            anyhow::anyhow!("key `{key}`: {err}")
        })
    }

    /// The teacher's SFT config, with the snapshot a `student.from_teacher_step` asks it to keep.
    pub fn teacher_sft(&self) -> SftConfig {
        let mut teacher = self.teacher.clone();
        if let Some(step) = self.student.from_teacher_step {
            teacher.snapshots.push(step);
            teacher.snapshots.sort_unstable();
            teacher.snapshots.dedup();
        }
        teacher
    }

    /// The student's SFT config when it trains a stage of its own, with the snapshot a `student.from_step` asks
    /// it to keep (and without `from_step`, which picks a model of the stage rather than changing it).
    pub fn student_sft(&self) -> SftConfig {
        let mut student = self.student.clone();
        if let Some(step) = student.from_step.take() {
            student.snapshots.push(step);
            student.snapshots.sort_unstable();
            student.snapshots.dedup();
        }
        student
    }

    /// The SFT run config of the teacher or the student stage.
    pub fn sft_stage(&self, model: &SftConfig) -> SftRunConfig {
        SftRunConfig {
            name: format!("{}-{}", self.name, model.preset),
            device: self.device.clone(),
            reproducible: self.reproducible,
            stages_dir: self.stages_dir.clone(),
            env: self.env.clone(),
            prompt: self.prompt.clone(),
            demos: self.demos.clone(),
            tokenizer: TokenizerConfig { file: self.tokenizer_file(), ..self.tokenizer.clone() },
            model: model.clone(),
        }
    }
}

/// A path of a config file: a relative one is taken beside the config file when something is there (made
/// absolute), else as given (relative to the working directory).
pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    let beside = base.join(path);
    match beside.exists() {
        true => std::fs::canonicalize(&beside).unwrap_or(beside),
        false => path.to_owned(),
    }
}

/// Checks a `[teacher]` or `[student]` that names a checkpoint directory: it is not trained before the run, so
/// every training key must be left out (`eval_episodes` still applies).
fn check_checkpoint_model(key: &str, sft: &SftConfig) -> anyhow::Result<()> {
    let dir = sft.checkpoint.as_ref().expect("a checkpoint model");
    let plain =
        SftConfig { checkpoint: sft.checkpoint.clone(), eval_episodes: sft.eval_episodes, ..toml::from_str("")? };
    let given = toml::Table::try_from(sft)?;
    let expected = toml::Table::try_from(&plain)?;
    let keys: std::collections::BTreeSet<String> = given.keys().chain(expected.keys()).cloned().collect();
    if let Some(name) = keys.into_iter().find(|k| given.get(k) != expected.get(k)) {
        if name == "preset" {
            bail!("key `{key}`: give either `preset` (an SFT stage) or `checkpoint` (a model directory), not both");
        }
        bail!(
            "key `{key}.{name}`: the {key} is the checkpoint {}, not an SFT stage, so `{name}` has no effect: leave \
             it out",
            dir.display()
        );
    }
    for file in [atod_models::checkpoint::CONFIG_FILE, atod_models::policy::TOKENIZER_FILE] {
        if !dir.join(file).is_file() {
            bail!("key `{key}.checkpoint`: {} has no {file}", dir.display());
        }
    }
    Ok(())
}

impl SftRunConfig {
    /// Reads and checks an SFT config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Self = read(path)?;
        if let Some(file) = &mut config.tokenizer.file {
            *file = resolve_path(path.parent().unwrap_or(Path::new("")), file);
        }
        if config.model.checkpoint.is_some() {
            bail!(
                "config {}: key `model.checkpoint` applies only to a train config's [teacher] and [student]; an SFT \
                 stage trains a `preset`",
                path.display()
            );
        }
        config
            .device
            .parse::<atod_models::DeviceSpec>()
            .with_context(|| format!("config {}: key `device`", path.display()))?;
        atod_models::TransformerConfig::preset(&config.model.preset, 512)
            .with_context(|| format!("config {}: key `model.preset`", path.display()))?;
        config.model.check().with_context(|| format!("config {}: key `model`", path.display()))?;
        check_lr("model.lr", &config.model.lr, config.model.steps)
            .with_context(|| format!("config {}", path.display()))?;
        for (key, given) in
            [("from_teacher_step", config.model.from_teacher_step), ("from_step", config.model.from_step)]
        {
            if given.is_some() {
                bail!("config {}: key `model.{key}` applies only to a train config's [student]", path.display());
            }
        }
        Ok(config)
    }
}

/// The environment and prompt settings a model export was trained with: the `config.toml` of `atod train` or
/// `atod sft` in its directory or up to two levels above (a run's `final/` or `checkpoints/step-N/`, a stage's
/// `model/`).
pub fn trained_with(dir: &Path) -> anyhow::Result<Option<(PathBuf, EnvConfig, PromptConfig)>> {
    for candidate in dir.ancestors().take(3) {
        let path = candidate.join("config.toml");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        if let Ok(train) = toml::from_str::<TrainConfig>(&text) {
            return Ok(Some((path, train.env, train.prompt)));
        }
        if let Ok(sft) = toml::from_str::<SftRunConfig>(&text) {
            return Ok(Some((path, sft.env, sft.prompt)));
        }
    }
    Ok(None)
}

/// The stage directory of a config: `stages_dir` or `runs/stages`.
pub fn stages_dir(configured: &Option<PathBuf>) -> PathBuf {
    configured.clone().unwrap_or_else(|| PathBuf::from("runs/stages"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every config shipped in `configs/` loads and passes its checks, and every grid's cells make train configs
    /// that do too.
    #[test]
    fn the_shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("configs");
        for name in ["quickstart.toml", "smoke.toml"] {
            TrainConfig::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        // The resolved configs of committed runs, written by earlier versions, load too (their regenerate
        // commands depend on it). A cell that never started (no `config.toml`, no `summary.json`: a grid still
        // running or stopped in a working copy) has nothing to load.
        let results = root.parent().expect("the workspace").join("results");
        let mut resolved = 0;
        for grid in std::fs::read_dir(&results).unwrap().flatten() {
            for cell in std::fs::read_dir(grid.path().join("cells")).into_iter().flatten().flatten() {
                let path = cell.path().join("config.toml");
                if !path.exists() && !cell.path().join("summary.json").exists() {
                    continue;
                }
                TrainConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                resolved += 1;
            }
        }
        // The paper-mini grid's 81 cells, the recipe search's 18 and its first round's 3 (results/paper-mini*).
        assert!(resolved >= 102, "{resolved} committed run configs");
        let grid = crate::grid::GridConfig::load(&root.join("smoke-grid.toml")).unwrap();
        let cells = grid.cells().unwrap();
        assert_eq!(cells.len(), 4);
        for cell in &cells {
            let table = grid.cell_config(cell).unwrap();
            let config: TrainConfig = toml::from_str(&toml::to_string(&table).unwrap()).unwrap();
            config.check().unwrap();
        }
    }

    /// The paper-mini grids' cells make valid train configs, and every cell of one environment trains against
    /// the same teacher stage: a student-l cell's `from_teacher_step` must be in the teacher's `snapshots`, or
    /// its teacher would hash to a stage of its own, built again (the same bits, the grid's time twice).
    #[test]
    fn the_paper_mini_cells_share_one_teacher_per_environment() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("configs/paper-mini");
        for (name, expected) in [("grid.toml", 81), ("recipe.toml", 18)] {
            let grid = crate::grid::GridConfig::load(&root.join(name)).unwrap();
            let cells = grid.cells().unwrap();
            assert_eq!(cells.len(), expected, "{name}");
            let mut teachers: std::collections::BTreeMap<String, String> = Default::default();
            for cell in &cells {
                let table = grid.cell_config(cell).unwrap();
                let config: TrainConfig = toml::from_str(&toml::to_string(&table).unwrap()).unwrap();
                config.check().unwrap_or_else(|e| panic!("{name}, cell {}: {e:#}", cell.id));
                let teacher = toml::to_string(&config.sft_stage(&config.teacher_sft())).unwrap();
                let teacher = teacher.lines().filter(|l| !l.starts_with("name =")).collect::<Vec<_>>().join("\n");
                let first = teachers.entry(config.env.name.clone()).or_insert_with(|| teacher.clone());
                assert_eq!(*first, teacher, "{name}, cell {}: another teacher stage", cell.id);
            }
            assert_eq!(teachers.len(), if name == "grid.toml" { 3 } else { 2 }, "{name}");
        }
    }

    /// `prompt_loss_weight` takes a number or a schedule over the SFT steps, must stay in [0, 1] at every step,
    /// and serialises back as given (a number as a number, so the stage hashes of numeric configs do not move).
    #[test]
    fn the_prompt_loss_weight_is_a_schedule_in_the_unit_interval() {
        let sft = |weight: &str| -> SftConfig {
            toml::from_str(&format!("preset = \"student-s\"\nsteps = 10\n{weight}")).unwrap()
        };
        let phased = sft("prompt_loss_weight = \"step_at(6, 1, 0)\"");
        phased.check().unwrap();
        let weights: Vec<f64> = (0..10).map(|s| phased.prompt_loss_weight.eval(s, 10)).collect();
        assert_eq!(weights, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(toml::to_string(&phased).unwrap().contains("prompt_loss_weight = \"step_at(6, 1, 0)\""));
        let number = sft("prompt_loss_weight = 0.25");
        number.check().unwrap();
        assert!(toml::to_string(&number).unwrap().contains("prompt_loss_weight = 0.25\n"));
        assert!(!toml::to_string(&sft("")).unwrap().contains("prompt_loss_weight"));
        let err = sft("prompt_loss_weight = \"linear(1, 2, 10)\"").check().unwrap_err().to_string();
        assert!(err.contains("[0, 1] at every step") && err.contains("at step 1"), "{err}");
        let err = sft("prompt_loss_weight = 1.5").check().unwrap_err().to_string();
        assert!(err.contains("is 1.5 at step 0"), "{err}");
    }

    /// `dagger` collects at `start`, `start + every`, ... below `steps`; bad values are refused with the key
    /// named; an SFT config without it serialises as before (its stage hash does not move).
    #[test]
    fn dagger_collections_and_their_checks() {
        let sft = |extra: &str| -> SftConfig {
            toml::from_str(&format!("preset = \"student-s\"\nsteps = 1000\n{extra}")).unwrap()
        };
        let with = sft("dagger = { start = 400, every = 200, episodes = 64 }");
        with.check().unwrap();
        let dagger = with.dagger.as_ref().unwrap();
        assert_eq!(dagger.collections(1000), [400, 600, 800]);
        assert_eq!(dagger.temperature, 0.7);
        assert!(!toml::to_string(&sft("")).unwrap().contains("dagger"));
        for bad in [
            "dagger = { start = 0, every = 200, episodes = 64 }",
            "dagger = { start = 1000, every = 200, episodes = 64 }",
            "dagger = { start = 10, every = 0, episodes = 64 }",
            "dagger = { start = 10, every = 10, episodes = 0 }",
        ] {
            let err = sft(bad).check().unwrap_err().to_string();
            assert!(err.contains("`dagger` needs"), "{bad}: {err}");
        }
        let err = sft("dagger = { start = 10, every = 10, episodes = 4, temperature = 0 }").check().unwrap_err();
        assert!(err.to_string().contains("dagger.temperature"), "{err}");
    }

    /// `copy_pretrain` takes its defaults, refuses bad values with the key named, and leaves an SFT config without
    /// it serialised as before (its stage hash does not move).
    #[test]
    fn copy_pretrain_defaults_and_checks() {
        let sft = |extra: &str| -> SftConfig {
            toml::from_str(&format!("preset = \"student-s\"\nsteps = 1000\n{extra}")).unwrap()
        };
        let with = sft("copy_pretrain = { steps = 300 }");
        with.check().unwrap();
        let copy = with.copy_pretrain.as_ref().unwrap();
        assert_eq!((copy.batch_size, copy.span), (16, [8, 64]));
        assert!(!toml::to_string(&sft("")).unwrap().contains("copy"));
        for bad in [
            "copy_pretrain = { steps = 0 }",
            "copy_pretrain = { steps = 10, batch_size = 0 }",
            "copy_pretrain = { steps = 10, span = [1, 8] }",
            "copy_pretrain = { steps = 10, span = [9, 8] }",
        ] {
            let err = sft(bad).check().unwrap_err().to_string();
            assert!(err.contains("`copy_pretrain` needs"), "{bad}: {err}");
        }
        let err = sft("copy_pretrain = { steps = 10, lr = \"linear(1, -1, total)\" }").check().unwrap_err();
        assert!(err.to_string().contains("copy_pretrain.lr"), "{err}");
        assert_eq!(copy.until_loss, None);
        assert!(!toml::to_string(&with).unwrap().contains("until_loss"), "an absent threshold keeps the stage hash");
        sft("copy_pretrain = { steps = 10, until_loss = 0.05 }").check().unwrap();
        for bad in ["0.0", "-1.0", "nan", "inf"] {
            let err = sft(&format!("copy_pretrain = {{ steps = 10, until_loss = {bad} }}")).check().unwrap_err();
            assert!(err.to_string().contains("copy_pretrain.until_loss"), "{bad}: {err}");
        }
        let unknown = toml::from_str::<SftConfig>("preset = \"student-s\"\ncopy_pretrain = { steps = 1, spam = 2 }");
        assert!(unknown.unwrap_err().to_string().contains("spam"));
    }

    /// `configs/smoke.toml` with its `[student]` section replaced by `student`, loaded and checked.
    fn smoke_with_student(student: &str) -> anyhow::Result<TrainConfig> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("configs");
        let text = std::fs::read_to_string(root.join("smoke.toml")).unwrap();
        let student_at = text.find("[student]").unwrap();
        let train_at = text.find("[train]").unwrap();
        let config: TrainConfig = toml::from_str(&format!("{}{student}\n{}", &text[..student_at], &text[train_at..]))?;
        config.check()?;
        Ok(config)
    }

    /// A student may start as a snapshot of the teacher's SFT: the teacher's stage is then asked to keep it, and
    /// a student section that sets keys with no effect, or another preset, or a step outside the teacher's run
    /// is refused with the key named.
    #[test]
    fn a_student_from_a_teacher_snapshot() {
        let with = smoke_with_student;
        let config = with("[student]\npreset = \"student-s\"\nfrom_teacher_step = 120\neval_episodes = 8").unwrap();
        assert_eq!(config.teacher_sft().snapshots, [120]);
        assert!(config.teacher.snapshots.is_empty());
        let plain = with("[student]\npreset = \"student-s\"\nsteps = 50").unwrap();
        assert!(plain.teacher_sft().snapshots.is_empty());
        for (student, needle) in [
            ("preset = \"student-s\"\nfrom_teacher_step = 120\nsteps = 50", "`student.steps`"),
            ("preset = \"student-m\"\nfrom_teacher_step = 120", "`student.preset`"),
            ("preset = \"student-s\"\nfrom_teacher_step = 300", "not a step inside the teacher's SFT (1..300)"),
            ("preset = \"student-s\"\nfrom_teacher_step = 0", "not a step inside"),
        ] {
            let err = format!("{:#}", with(&format!("[student]\n{student}")).unwrap_err());
            assert!(err.contains(needle), "{student}: {err}");
        }
        let err = format!("{:#}", with("[student]\npreset = \"student-s\"\nsnapshots = [0]").unwrap_err());
        assert!(err.contains("`snapshots` holds step 0"), "{err}");
    }

    /// `train.teacher_eval_episodes` may widen the teacher's evaluation, never narrow it below the students'.
    #[test]
    fn the_teacher_is_evaluated_on_at_least_the_students_episodes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("configs");
        let text = std::fs::read_to_string(root.join("smoke.toml")).unwrap();
        let with = |line: &str| -> anyhow::Result<TrainConfig> {
            let config: TrainConfig = toml::from_str(&text.replace("[train]\n", &format!("[train]\n{line}\n")))?;
            config.check()?;
            Ok(config)
        };
        let episodes = with("").unwrap().train.eval_episodes;
        assert_eq!(
            with(&format!("teacher_eval_episodes = {}", episodes * 2)).unwrap().train.teacher_eval_episodes,
            Some(episodes * 2)
        );
        let err = format!("{:#}", with(&format!("teacher_eval_episodes = {}", episodes - 1)).unwrap_err());
        assert!(err.contains("`train.teacher_eval_episodes`"), "{err}");
    }

    /// `student.from_step` picks the student stage's own snapshot: the stage keeps it (its key as if
    /// `snapshots` listed the step, so listing it too changes nothing), and a step outside the stage, or on a
    /// student that has no stage of its own, or on the teacher, is refused with the key named.
    #[test]
    fn a_student_from_its_own_snapshot() {
        let with = smoke_with_student;
        let config = with("[student]\npreset = \"student-s\"\nsteps = 50\nfrom_step = 30").unwrap();
        let stage = config.student_sft();
        assert_eq!((stage.snapshots.as_slice(), stage.from_step), ([30].as_slice(), None));
        let listed = with("[student]\npreset = \"student-s\"\nsteps = 50\nsnapshots = [30]\nfrom_step = 30").unwrap();
        assert_eq!(toml::to_string(&listed.student_sft()).unwrap(), toml::to_string(&stage).unwrap());
        for (student, needle) in [
            ("preset = \"student-s\"\nsteps = 50\nfrom_step = 50", "not a step inside the student's SFT (1..50)"),
            ("preset = \"student-s\"\nsteps = 50\nfrom_step = 0", "`student.from_step`"),
            ("preset = \"student-s\"\nfrom_teacher_step = 120\nfrom_step = 10", "`student.from_step`"),
        ] {
            let err = format!("{:#}", with(&format!("[student]\n{student}")).unwrap_err());
            assert!(err.contains(needle), "{student}: {err}");
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("configs");
        let text = std::fs::read_to_string(root.join("smoke.toml")).unwrap();
        let teacher_at = text.find("[teacher]").unwrap();
        let teacher_end = teacher_at + text[teacher_at..].find("\n[").unwrap();
        let patched = format!("{}from_step = 10\n{}", &text[..teacher_end + 1], &text[teacher_end + 1..]);
        let config: TrainConfig = toml::from_str(&patched).unwrap();
        let err = format!("{:#}", config.check().unwrap_err());
        assert!(err.contains("`teacher.from_step`"), "{err}");
    }
}
