//! The online trainer as a library (DESIGN.md §2): a [`Trainer`] holds the student, its optimiser, the teacher,
//! the loss and the environments, and [`Trainer::step`] reads top to bottom as the algorithm does:
//!
//! 1. [`Trainer::rollout`]: draw `tasks_per_step` train tasks, play each `group_size` times with the student
//!    (a GRPO group; batched generation across every live episode);
//! 2. [`Trainer::score`]: the teacher (and, for the `kl` component, the frozen reference policy) scores every
//!    response token under the student's prompt;
//! 3. [`Trainer::advantages`]: atod-losses turns the step's samples into advantages, once over whole groups;
//! 4. [`Trainer::update`]: `ppo_epochs` passes of mini-batches of turn samples, each one AdamW update of the
//!    loss's objective, its backward sharded across threads ([`super::update`]).
//!
//! Each part is public, so a loop of one's own can reuse the others (`examples/custom_loop.rs` computes its
//! own advantage). The trainer knows no files, stages or progress bars: [`super::run`] drives it into a run
//! directory. Every random choice of step s comes from streams seeded by (seed, s), so a trainer rebuilt from a
//! checkpoint of step s replays steps s, s+1, ... exactly as the uninterrupted one does.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::bail;
use atod_core::rng::{mix, SplitMix64};
use atod_core::{Environment, Schedule, TaskRef};
use atod_envs::EnvPlugin;
use atod_losses::{Advantages, Input, Loss, StepBatch, StepInfo, TrainBatch};
use atod_models::optim::AdamW;
use atod_models::{
    response_stats, response_vocab_stats, ChatTokenizer, HotPathBackend, LmPolicy, SamplingParams, Transformer,
    TransformerConfig,
};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::config::TrainConfig;
use super::update::sharded_backward;

#[path = "data_parallel.rs"]
mod data_parallel;
use crate::render::RenderConfig;
use crate::rollout::{run_episodes, EpisodeSpec, Rollout};

/// The inputs of the loss beyond the surrogate's that the trainer provides: the frozen reference policy's
/// log-probs (`kl`) and the teacher's and student's full-vocabulary log-probs (`gkd`). A config whose loss needs
/// anything else is refused when it loads.
pub const FED: &[Input] = &[Input::LpRef, Input::Vocab];

/// What the online loop needs to know: no paths, no stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The seed of every random stream of the loop.
    pub seed: u64,
    /// The number of steps of the run (the schedules' `total`).
    pub steps: u64,
    /// The split tasks are drawn from.
    pub train_split: String,
    /// Tasks drawn per step.
    pub tasks_per_step: usize,
    /// Episodes per task (a GRPO group).
    pub group_size: usize,
    /// Turn samples per mini-batch (one optimiser step each).
    pub mini_batch_size: usize,
    /// Passes over each step's samples.
    pub ppo_epochs: usize,
    /// Shards of each mini-batch's backward and of the teacher's scoring.
    pub shards: usize,
    /// The learning rate over the steps.
    pub lr: Schedule,
    /// The rollout temperature over the steps (also that of every log-prob the loss compares).
    pub temperature: Schedule,
    /// Prompt rendering.
    pub render: RenderConfig,
    /// Turns after which an episode is cut off.
    pub max_turns: usize,
    /// A response's token budget.
    pub max_new_tokens: usize,
}

impl Settings {
    /// The settings of a train config.
    pub fn of(config: &TrainConfig) -> Self {
        let train = &config.train;
        Settings {
            seed: config.seed,
            steps: if config.method == super::config::SFT_INIT { 0 } else { train.steps },
            train_split: config.env.train_split.clone(),
            tasks_per_step: train.tasks_per_step,
            group_size: train.group_size,
            mini_batch_size: train.mini_batch_size,
            ppo_epochs: train.ppo_epochs,
            shards: train.shards,
            lr: train.lr.clone(),
            temperature: train.temperature.clone(),
            render: super::render_config(config),
            max_turns: config.prompt.max_turns,
            max_new_tokens: config.prompt.max_new_tokens,
        }
    }

    /// The rollout temperature at `step`.
    pub fn temperature_at(&self, step: u64) -> f32 {
        self.temperature.eval(step, self.steps) as f32
    }
}

/// The models of a run: the student (with gradient), the teacher and, when the loss has a `kl` term, the frozen
/// reference policy (the student as it was at step 0, as verl's reference model).
pub struct Models<B: AutodiffBackend + HotPathBackend>
where
    B::InnerBackend: HotPathBackend,
{
    /// The student.
    pub student: Transformer<B>,
    /// Its shape, for exports.
    pub student_config: TransformerConfig,
    /// The tokenizer teacher and student share.
    pub tokenizer: ChatTokenizer,
    /// The teacher.
    pub teacher: LmPolicy<B::InnerBackend>,
    /// The reference policy; required when the loss needs [`Input::LpRef`].
    pub reference: Option<LmPolicy<B::InnerBackend>>,
}

/// The log-probs of a step's response tokens under the scoring models, one row per turn sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The teacher's.
    pub teacher: Vec<Vec<f32>>,
    /// The reference policy's, when the trainer has one.
    pub reference: Option<Vec<Vec<f32>>>,
    /// Seconds spent scoring.
    pub seconds: f64,
}

/// What [`Trainer::update`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateReport {
    /// The objective's metrics averaged over mini-batches (by rows), and `actor/grad_norm` over updates.
    pub metrics: BTreeMap<String, f64>,
    /// Optimiser steps taken.
    pub updates: u32,
    /// Mini-batches skipped for a non-finite loss or gradient.
    pub skipped: u32,
    /// The learning rate of the step.
    pub lr: f64,
    /// Seconds spent.
    pub seconds: f64,
}

/// The online trainer; see the [module documentation](self).
pub struct Trainer<B: AutodiffBackend + HotPathBackend>
where
    B::InnerBackend: HotPathBackend,
{
    /// The loop's settings.
    pub settings: Settings,
    /// The loss.
    pub loss: Loss,
    /// The optimiser (its moments are part of a checkpoint).
    pub optim: AdamW<B>,
    /// The teacher.
    pub teacher: LmPolicy<B::InnerBackend>,
    /// The reference policy of the `kl` term.
    pub reference: Option<LmPolicy<B::InnerBackend>>,
    /// The student's shape.
    pub student_config: TransformerConfig,
    /// The shared tokenizer.
    pub tokenizer: ChatTokenizer,
    student: Option<Transformer<B>>,
    envs: Vec<Box<dyn Environment>>,
    train_size: u64,
}

impl<B: AutodiffBackend + HotPathBackend> Trainer<B>
where
    B::InnerBackend: HotPathBackend,
{
    /// A trainer on environments of `plugin` made from `env_config`. Refuses a teacher whose tokenizer differs
    /// from the student's, and a loss that needs an input these models cannot feed.
    pub fn new(
        plugin: &EnvPlugin,
        env_config: &str,
        models: Models<B>,
        optim: AdamW<B>,
        loss: Loss,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        if models.tokenizer.fingerprint() != models.teacher.tokenizer.fingerprint() {
            bail!("the teacher and the student use different tokenizers; they must share one (DESIGN.md §2)");
        }
        let fed: Vec<Input> =
            FED.iter().copied().filter(|&i| i != Input::LpRef || models.reference.is_some()).collect();
        loss.check_fed(&fed).map_err(|err| anyhow::anyhow!("{err}"))?;
        let envs = (0..settings.tasks_per_step * settings.group_size)
            .map(|_| plugin.create(env_config))
            .collect::<Result<_, _>>()?;
        let train_size = plugin.create(env_config)?.info().split_size(&settings.train_split)?;
        Ok(Trainer {
            settings,
            loss,
            optim,
            teacher: models.teacher,
            reference: models.reference,
            student_config: models.student_config,
            tokenizer: models.tokenizer,
            student: Some(models.student),
            envs,
            train_size,
        })
    }

    /// The student being trained.
    pub fn student(&self) -> &Transformer<B> {
        self.student.as_ref().expect("the student is only out during an optimiser step")
    }

    /// The student as a policy (without gradient), sampling with `sampling` from stream `seed`.
    pub fn policy(&self, sampling: SamplingParams, seed: u64) -> anyhow::Result<LmPolicy<B::InnerBackend>> {
        let model = self.student().valid();
        Ok(LmPolicy::new("student", model, self.student_config.clone(), self.tokenizer.clone(), sampling, seed)?)
    }

    /// One training step: rollout, scoring, advantages, update; returns its metrics (`time/*` included).
    pub fn step(&mut self, step: u64) -> anyhow::Result<BTreeMap<String, f64>> {
        let started = Instant::now();
        let info = StepInfo { step, total: self.settings.steps };
        let rollout = self.rollout(step)?;
        let scores = self.score(&rollout, step)?;
        let advantages = self.advantages(&rollout, &scores, info)?;
        let update = self.update(&rollout, &scores, &per_sample(&advantages, &rollout), info)?;

        let mut metrics = advantages.metrics;
        metrics.extend(update.metrics);
        metrics.extend(rollout_metrics(&rollout));
        metrics.insert("time/score".into(), scores.seconds);
        metrics.insert("time/update".into(), update.seconds);
        metrics.insert("time/step".into(), started.elapsed().as_secs_f64());
        metrics.insert("actor/lr".into(), update.lr);
        metrics.insert("train/updates".into(), f64::from(update.updates));
        metrics.insert("train/skipped_updates".into(), f64::from(update.skipped));
        Ok(metrics)
    }

    /// The episodes of `step`: `tasks_per_step` train tasks drawn with their seeds, each `group_size` times.
    pub fn tasks(&self, step: u64) -> Vec<EpisodeSpec> {
        let mut rng = SplitMix64::new(mix(self.settings.seed ^ 0x7a5c) ^ mix(step));
        (0..self.settings.tasks_per_step)
            .flat_map(|group| {
                let split = self.settings.train_split.clone();
                let task = TaskRef { split, index: rng.below(self.train_size.max(1)), seed: rng.next_u64() >> 1 };
                (0..self.settings.group_size).map(move |_| EpisodeSpec { task: task.clone(), group })
            })
            .collect()
    }

    /// Plays the episodes of `step` with the student at the step's temperature. Episodes whose environment was
    /// gone before their first turn are dropped ([`Rollout::retain_played`]; `rollout/env_errors` counts them),
    /// and a step that lost every episode so is an error.
    pub fn rollout(&mut self, step: u64) -> anyhow::Result<Rollout> {
        let specs = self.tasks(step);
        let sampling = self.sampling(step);
        let mut student = self.policy(sampling, mix(self.settings.seed ^ 0x51) ^ mix(step + 1))?;
        let mut rollout =
            run_episodes(&mut self.envs, &specs, &mut student, &self.settings.render, self.settings.max_turns)?;
        let dropped = rollout.retain_played();
        if rollout.episodes.is_empty() {
            if let Some(reason) = dropped.iter().find_map(|e| e.env_error.as_deref()) {
                bail!(
                    "step {step}: every episode ended by an environment error before its first turn; the first: \
                     {reason}"
                );
            }
        }
        Ok(rollout)
    }

    /// The teacher's (and the reference policy's) log-probs of every response token of `rollout`, at the
    /// step's rollout temperature: the temperature of the behaviour log-probs they are compared with (verl
    /// scores its reference policy likewise; scored at 1 against a student sampled at 0.7, `A_opd` would be
    /// biased down on every confident token).
    pub fn score(&mut self, rollout: &Rollout, step: u64) -> anyhow::Result<Scores> {
        let started = Instant::now();
        let pairs = pairs_of(rollout);
        let sampling = self.sampling(step);
        let shards = self.settings.shards;
        let mut score = |policy: &mut LmPolicy<B::InnerBackend>| -> anyhow::Result<Vec<Vec<f32>>> {
            policy.sampling = sampling.clone();
            Ok(policy.score_sharded(&pairs, shards)?.into_iter().map(|s| s.logprobs).collect())
        };
        // A loss that cannot read the teacher (GRPO) gets the behaviour log-probs in its place, so that its OPD
        // advantage is 0 rather than a number it multiplies by 0: the same loss without the teacher's forward pass,
        // about 40% of an ALFWorld step.
        let teacher = match self.loss.reads_teacher(self.settings.steps) {
            true => score(&mut self.teacher)?,
            false => rollout.samples.iter().map(|s| s.behaviour_logprobs.clone()).collect(),
        };
        let reference = self.reference.as_mut().map(&mut score).transpose()?;
        Ok(Scores { teacher, reference, seconds: started.elapsed().as_secs_f64() })
    }

    /// The loss's advantages of the step (ATOD Eq 8 with T-DUR's weights for the `atod` preset), computed once
    /// over the whole step, since GRPO groups and T-DUR trajectories span it.
    pub fn advantages(&self, rollout: &Rollout, scores: &Scores, info: StepInfo) -> anyhow::Result<Advantages> {
        let samples = &rollout.samples;
        let batch = StepBatch::from_ragged(
            &samples.iter().map(|s| s.behaviour_logprobs.clone()).collect::<Vec<_>>(),
            &scores.teacher,
            None,
            samples.iter().map(|s| s.turn_idx).collect(),
            samples.iter().map(|s| s.traj).collect(),
            samples.iter().map(|s| s.group).collect(),
            rollout.episodes.iter().map(|e| e.total_return as f32).collect(),
        )?;
        Ok(self.loss.advantages(&batch, info)?)
    }

    /// `ppo_epochs` shuffled passes of mini-batches over the step's samples, each one AdamW step of the loss's
    /// objective given `advantages` (per sample, aligned with its response tokens). A mini-batch whose loss or
    /// gradient is not finite is skipped and counted.
    pub fn update(
        &mut self,
        rollout: &Rollout,
        scores: &Scores,
        advantages: &[Vec<f32>],
        info: StepInfo,
    ) -> anyhow::Result<UpdateReport> {
        let started = Instant::now();
        let lr = self.settings.lr.eval(info.step, info.total);
        let mut report = UpdateReport { lr, ..UpdateReport::default() };
        let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut order: Vec<usize> = (0..rollout.samples.len()).collect();
        let mut shuffle = SplitMix64::new(mix(self.settings.seed ^ 0xb47c) ^ mix(info.step));
        for _ in 0..self.settings.ppo_epochs {
            shuffle.shuffle(&mut order);
            for rows in order.chunks(self.settings.mini_batch_size) {
                let all_tokens: Vec<usize> = rows.iter().map(|&r| rollout.samples[r].response_ids.len()).collect();
                let Some((grads, metrics)) =
                    self.mini_batch_grads(rollout, scores, advantages, rows, &all_tokens, info)?
                else {
                    report.skipped += 1;
                    continue;
                };
                self.apply(grads, metrics, rows.len(), &mut report, &mut sums);
            }
        }
        report.metrics = sums.into_iter().map(|(k, (sum, n))| (k, sum / n.max(1.0))).collect();
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// One mini-batch's end: its metrics into `sums` (weighted by its `rows`), then the AdamW step of `grads`
    /// at `report.lr`, or a skip (counted) when their norm is not finite.
    fn apply(
        &mut self,
        grads: GradientsParams,
        metrics: BTreeMap<String, f64>,
        rows: usize,
        report: &mut UpdateReport,
        sums: &mut BTreeMap<String, (f64, f64)>,
    ) {
        for (k, v) in metrics {
            let entry = sums.entry(k).or_default();
            entry.0 += v * rows as f64;
            entry.1 += rows as f64;
        }
        let student = self.student.take().expect("the student is here");
        if !AdamW::<B>::grad_norm(&student, &grads).is_finite() {
            self.student = Some(student);
            report.skipped += 1;
            return;
        }
        let (next, step) = self.optim.step(report.lr, student, grads);
        self.student = Some(next);
        report.updates += 1;
        let entry = sums.entry("actor/grad_norm".into()).or_default();
        entry.0 += step.grad_norm;
        entry.1 += 1.0;
    }

    /// The gradient of one mini-batch `rows` and its metrics, the backward sharded across threads: every
    /// shard's objective is weighted by its share of the aggregation's normaliser, so that the summed gradients
    /// are the whole mini-batch's. `all_tokens` are the response lengths of the whole mini-batch, of which
    /// `rows` may be only this node's part (the data-parallel update). `None` when a shard's loss is not finite.
    fn mini_batch_grads(
        &self,
        rollout: &Rollout,
        scores: &Scores,
        advantages: &[Vec<f32>],
        rows: &[usize],
        all_tokens: &[usize],
        info: StepInfo,
    ) -> anyhow::Result<Option<(GradientsParams, BTreeMap<String, f64>)>> {
        let samples = &rollout.samples;
        let tokens = |rs: &[usize]| -> Vec<usize> { rs.iter().map(|&r| samples[r].response_ids.len()).collect() };
        let temperature = self.settings.temperature_at(info.step);
        let (loss, teacher) = (&self.loss, &self.teacher.model);
        let needs_vocab = loss.needs().iter().any(|&(_, input)| input == Input::Vocab);
        let result = sharded_backward(self.student(), rows, self.settings.shards, |student, shard| {
            let pairs: Vec<(&[u32], &[u32])> =
                shard.iter().map(|&r| (&samples[r].prompt_ids[..], &samples[r].response_ids[..])).collect();
            let (stats, vocab) = if needs_vocab {
                let (stats, vocab) = response_vocab_stats(student, &pairs, temperature)?;
                (stats, Some(vocab))
            } else {
                (response_stats(student, &pairs, temperature)?, None)
            };
            let [n, t] = stats.mask.dims();
            let device = stats.mask.device();
            let rows_of = |values: &[Vec<f32>]| padded::<B>(shard.iter().map(|&r| &values[r][..]), n, t, &device);
            let behaviour: Vec<&[f32]> = shard.iter().map(|&r| &samples[r].behaviour_logprobs[..]).collect();
            let lp_old = padded::<B>(behaviour.into_iter(), n, t, &device);
            let mut batch = TrainBatch::new(stats.logp, lp_old, stats.entropy, stats.mask);
            if let Some(reference) = &scores.reference {
                batch = batch.with_ref(rows_of(reference));
            }
            if let Some(vocab) = vocab {
                let teacher_vocab = response_vocab_stats(teacher, &pairs, temperature)?.1;
                batch = batch.with_vocab(vocab, Tensor::from_inner(teacher_vocab));
            }
            let output = loss.objective(&batch, rows_of(advantages), info)?;
            if !output.is_finite() {
                return Ok(None);
            }
            let weight = loss.config().aggregation.shard_weight(&tokens(shard), all_tokens);
            Ok(Some((output.loss * weight as f32, (weight, output.metrics))))
        })?;
        Ok(result.map(|(grads, shards)| {
            let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
            for (weight, shard_metrics) in shards {
                for (k, v) in shard_metrics {
                    *metrics.entry(k).or_default() += weight * v;
                }
            }
            (grads, metrics)
        }))
    }

    /// The sampling of rollouts (and the scoring temperature) at `step`.
    fn sampling(&self, step: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.settings.temperature_at(step),
            max_new_tokens: self.settings.max_new_tokens,
            ..SamplingParams::default()
        }
    }
}

/// The `(prompt, response)` id pairs of a rollout's samples.
pub fn pairs_of(rollout: &Rollout) -> Vec<(&[u32], &[u32])> {
    rollout.samples.iter().map(|s| (&s.prompt_ids[..], &s.response_ids[..])).collect()
}

/// The step's advantages per sample, aligned with its response tokens (the form [`Trainer::update`] takes).
pub fn per_sample(advantages: &Advantages, rollout: &Rollout) -> Vec<Vec<f32>> {
    let t = advantages.n_cols;
    let rows = rollout.samples.iter().enumerate();
    rows.map(|(r, s)| advantages.per_token[r * t..r * t + s.response_ids.len()].to_vec()).collect()
}

/// The rollout's statistics and timings: `rollout/*`, `time/generate`, `time/env`.
pub fn rollout_metrics(rollout: &Rollout) -> BTreeMap<String, f64> {
    let episodes = rollout.episodes.len().max(1) as f64;
    let samples = rollout.samples.len().max(1) as f64;
    let response_tokens: usize = rollout.samples.iter().map(|s| s.response_ids.len()).sum();
    BTreeMap::from([
        ("rollout/success_rate".into(), rollout.episodes.iter().filter(|e| e.won).count() as f64 / episodes),
        ("rollout/mean_return".into(), rollout.episodes.iter().map(|e| e.total_return).sum::<f64>() / episodes),
        ("rollout/mean_turns".into(), rollout.episodes.iter().map(|e| e.turns as f64).sum::<f64>() / episodes),
        ("rollout/invalid_rate".into(), rollout.samples.iter().filter(|s| !s.valid).count() as f64 / samples),
        ("rollout/samples".into(), rollout.samples.len() as f64),
        ("rollout/response_tokens".into(), response_tokens as f64),
        ("rollout/env_errors".into(), rollout.env_errors as f64),
        ("time/generate".into(), rollout.timing.generate_s),
        ("time/env".into(), rollout.timing.env_s),
    ])
}

/// Rows of values, zero-padded to `[n, t]`.
fn padded<'a, B: Backend>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use atod_models::optim::AdamWConfig;
    use atod_models::CpuAutodiff;

    fn models(reference: bool) -> Models<CpuAutodiff> {
        let tokenizer = ChatTokenizer::train(["<think>below</think><action>inc</action>", "The counter shows 3."], 300)
            .expect("a tokenizer");
        let shape = TransformerConfig::student_s(tokenizer.vocab_size());
        let device = Default::default();
        let student = shape.init::<CpuAutodiff>(&device).expect("a model");
        let policy = |name: &str| {
            let model = student.valid();
            LmPolicy::new(name, model, shape.clone(), tokenizer.clone(), SamplingParams::default(), 0)
                .expect("a policy")
        };
        let (teacher, reference) = (policy("teacher"), reference.then(|| policy("reference")));
        Models { student, student_config: shape.clone(), tokenizer: tokenizer.clone(), teacher, reference }
    }

    /// A loss that needs an input these models cannot feed is refused when the trainer is built, naming the key:
    /// `kl` without a reference policy. With one, the same loss is accepted.
    #[test]
    fn a_loss_the_models_cannot_feed_is_refused() {
        let plugin = EnvPlugin::bundled(atod_plugin_counter::atod_root_module());
        let loss = || Loss::from_toml("[loss]\npreset = \"opd\"\n[loss.components]\nkl = 0.1\n").expect("a loss");
        let settings = Settings {
            seed: 0,
            steps: 1,
            train_split: "train".into(),
            tasks_per_step: 1,
            group_size: 2,
            mini_batch_size: 4,
            ppo_epochs: 1,
            shards: 1,
            lr: 1e-4.into(),
            temperature: 1.0.into(),
            render: RenderConfig::default(),
            max_turns: 2,
            max_new_tokens: 4,
        };
        let build = |reference| {
            let optim = AdamW::new(AdamWConfig::default());
            Trainer::new(&plugin, "max_target = 3", models(reference), optim, loss(), settings.clone())
        };
        let err = build(false).err().expect("kl without a reference is refused").to_string();
        assert!(err.contains("loss.components.kl") && err.contains("lp_ref"), "{err}");
        build(true).expect("kl with a reference trains");
    }
}
