//! Supervised fine-tuning on expert demonstrations: the teachers, and the students' initialisation.
//!
//! The loss is the mean negative log-likelihood of the assistant tokens (the tokenizer's chat loss mask: the
//! response and its end-of-turn token), never of the prompt, unless `prompt_loss_weight` > 0 asks for the
//! prompt's tokens too, each weighing that much against a response token's 1. Batches are drawn without
//! replacement, epoch by epoch, from a seeded shuffle. The learning rate is a schedule ([`lr_at`]): a bare number
//! is the peak of a linear warm-up over the first 5% of steps and a cosine decay to 10% of it.
//!
//! [`SftTrainer`] is the loop as a library (no files); [`train`] builds an SFT stage's directory with it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use atod_core::policy::ChatMessage;
use atod_core::rng::SplitMix64;
use atod_envs::Registry;
use atod_models::optim::AdamW;
use atod_models::{
    sequence_stats, ChatTokenizer, DeviceSpec, HotPathBackend, LmPolicy, SamplingParams, TransformerConfig,
};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::config::SftRunConfig;
use crate::distributed::Cluster;
use crate::progress::Progress;

/// One logged SFT step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftMetrics {
    /// The step (1-based: after this many updates).
    pub step: u64,
    /// Mean NLL per assistant token (per weighted token with `prompt_loss_weight` > 0).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Assistant tokens per second of this step.
    pub tokens_per_s: f64,
}

/// The learning rate of an SFT stage at `step` of `total`: `lr` as written when it is an expression, and the
/// default shape when it is a bare number (the peak of a linear warm-up over the first 5% of the steps and a
/// cosine decay to 10% of it, [`warmup_cosine`]), so that `lr = 5e-3` keeps the meaning it has always had.
pub fn lr_at(lr: &atod_core::Schedule, step: u64, total: u64) -> f64 {
    match lr.expr() {
        atod_core::schedule::Expr::Number(peak) => warmup_cosine(step, total, *peak),
        _ => lr.eval(step, total),
    }
}

/// The default SFT learning rate at `step` of `total` for peak `lr`: warm-up over 5%, cosine to 10%.
pub fn warmup_cosine(step: u64, total: u64, lr: f64) -> f64 {
    let warmup = (total / 20).max(1);
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()))
}

/// Trains the SFT model of `config` on `demos` and writes `out/config.toml`, `out/model/` (an export),
/// `out/metrics.jsonl` and `out/eval.json`.
pub fn train(
    registry: &Registry,
    config: &SftRunConfig,
    demos: &Path,
    tokenizer: ChatTokenizer,
    out: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    train_with(registry, config, demos, tokenizer, out, progress, None)
}

/// [`train`] as one node of a data-parallel run: every node draws the same batches, computes the gradient of its
/// contiguous share of each batch's rows (each weighted by the whole batch's target count), and the nodes sum
/// them before every AdamW step ([`SftTrainer::step_on`]); everything else (DAgger rounds, snapshots, the
/// evaluation) every node does alike, so every node writes the same stage.
pub fn train_with(
    registry: &Registry,
    config: &SftRunConfig,
    demos: &Path,
    tokenizer: ChatTokenizer,
    out: &Path,
    progress: &dyn Progress,
    cluster: Option<&Cluster>,
) -> anyhow::Result<()> {
    let device: DeviceSpec = config.device.parse()?;
    match device {
        DeviceSpec::Cpu => train_on::<atod_models::CpuAutodiff>(
            registry,
            config,
            demos,
            tokenizer,
            out,
            progress,
            &Default::default(),
            cluster,
        ),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            atod_models::backend::check_cuda(&device)?;
            let cuda = device.cuda_device().expect("a CUDA spec");
            train_on::<atod_models::CudaAutodiff>(registry, config, demos, tokenizer, out, progress, &cuda, cluster)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("DeviceSpec refuses CUDA without the cuda feature"),
    }
}

/// The SFT targets of transcripts `(ids, assistant mask)`: the assistant tokens, and each prompt token with
/// probability `prompt_weight` (none at 0, all at 1), drawn from `rng`. Averaged over draws, the mean NLL over
/// these targets weighs a prompt token `prompt_weight` against an assistant token's 1, at a fraction of the cost
/// of computing the head at every prompt position.
pub fn sft_targets(pairs: &[(&[u32], &[bool])], prompt_weight: f64, rng: &mut SplitMix64) -> Vec<Vec<bool>> {
    pairs
        .iter()
        .map(|(_, mask)| {
            mask.iter()
                .map(|&assistant| {
                    assistant || (prompt_weight >= 1.0 || (prompt_weight > 0.0 && rng.unit() < prompt_weight))
                })
                .collect()
        })
        .collect()
}

/// The SFT loss of `rows` and its gradients, the rows split into `shards` shards computed side by side
/// ([`super::update::sharded_backward`]). Every shard's loss is its NLL sum over the whole batch's target count,
/// so the sum is the batch's mean whatever the split.
pub fn sft_grads<B>(
    model: &atod_models::Transformer<B>,
    rows: &[(&[u32], &[bool])],
    shards: usize,
) -> anyhow::Result<(f64, GradientsParams)>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    sft_grads_of(model, rows, shards, target_count(rows))
}

/// The targets of `rows` that a loss counts (each row's first token predicts nothing).
fn target_count(rows: &[(&[u32], &[bool])]) -> usize {
    rows.iter().map(|(_, m)| m.iter().skip(1).filter(|&&x| x).count()).sum()
}

/// [`sft_grads`] of `rows`, part of a batch of `n_tokens` targets: the NLL sum over `n_tokens`.
fn sft_grads_of<B>(
    model: &atod_models::Transformer<B>,
    rows: &[(&[u32], &[bool])],
    shards: usize,
    n_tokens: usize,
) -> anyhow::Result<(f64, GradientsParams)>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let scale = 1.0 / n_tokens.max(1) as f32;
    let result = super::update::sharded_backward(model, rows, shards, |model, shard| {
        let stats = sequence_stats(model, shard, 1.0)?;
        // The value summed on the host in a fixed order, the same on every CPU (atod_losses::exact).
        let value = -atod_losses::exact::host_sum(stats.logp.clone()) * f64::from(scale);
        let loss = atod_losses::exact::with_value(stats.logp.sum().neg() * scale, value);
        Ok(Some((loss, value)))
    })?;
    let (grads, values) = result.expect("an SFT shard always returns its loss");
    Ok((values.into_iter().sum(), grads))
}

/// Reads the demonstrations and encodes them: ids and the assistant-token mask of each transcript.
pub fn encode_demos(
    path: &Path,
    tokenizer: &ChatTokenizer,
    max_len: usize,
) -> anyhow::Result<Vec<(Vec<u32>, Vec<bool>)>> {
    #[derive(Deserialize)]
    struct Line {
        messages: Vec<ChatMessage>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: Line = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let encoded = tokenizer.encode_chat(&line.messages);
        if encoded.ids.len() <= max_len && encoded.loss_mask.iter().any(|&m| m) {
            rows.push((encoded.ids, encoded.loss_mask));
        }
    }
    Ok(rows)
}

/// How many encoded transcripts have a response (its end-of-turn token included) longer than `budget` tokens: a
/// model trained on them cannot finish such a response within a rollout's `max_new_tokens`.
pub fn responses_over_budget(rows: &[(Vec<u32>, Vec<bool>)], budget: usize) -> usize {
    rows.iter().filter(|(_, mask)| mask.iter().filter(|&&m| m).count() > budget).count()
}

/// Where an SFT stage keeps its model after `step` steps (`SftConfig::snapshots`): a directory laid out like a
/// stage (`model/`, `config.toml`, and the evaluation cache).
pub fn snapshot_dir(stage_dir: &Path, step: u64) -> std::path::PathBuf {
    stage_dir.join("snapshots").join(format!("step-{step}"))
}

/// Supervised fine-tuning as a library: a model, its optimiser and encoded transcripts `(ids, assistant
/// mask)`, stepped one batch at a time. Batches are drawn without replacement, epoch by epoch, from a shuffle
/// seeded by the config's seed, so a stage is deterministic given its config.
pub struct SftTrainer<B: AutodiffBackend + HotPathBackend>
where
    B::InnerBackend: HotPathBackend,
{
    /// Its optimiser.
    pub optim: AdamW<B>,
    /// The encoded transcripts.
    pub rows: Vec<(Vec<u32>, Vec<bool>)>,
    model: Option<atod_models::Transformer<B>>,
    config: super::config::SftConfig,
    rng: SplitMix64,
    order: Vec<usize>,
}

impl<B: AutodiffBackend + HotPathBackend> SftTrainer<B>
where
    B::InnerBackend: HotPathBackend,
{
    /// Fine-tunes `model` on `rows` as `config` says (batch size, learning rate, prompt weight, shards, seed).
    pub fn new(
        model: atod_models::Transformer<B>,
        rows: Vec<(Vec<u32>, Vec<bool>)>,
        config: &super::config::SftConfig,
    ) -> Self {
        let optim = AdamW::<B>::new(config.optimizer.clone());
        let rng = SplitMix64::new(config.seed ^ 0x5f7);
        SftTrainer { optim, rows, model: Some(model), config: config.clone(), rng, order: Vec::new() }
    }

    /// Starts a new epoch at the next step: the rows (which may have grown) are shuffled afresh.
    pub fn restart_epoch(&mut self) {
        self.order.clear();
    }

    /// The model, once training is over.
    pub fn into_model(self) -> atod_models::Transformer<B> {
        self.model.expect("the model is only out during an optimiser step")
    }

    /// The model being trained.
    pub fn model(&self) -> &atod_models::Transformer<B> {
        self.model.as_ref().expect("the model is only out during an optimiser step")
    }

    /// Step `step` (0-based) of the config's `steps`: one batch, its loss, one AdamW update.
    pub fn step(&mut self, step: u64) -> anyhow::Result<SftMetrics> {
        self.step_on(step, None)
    }

    /// [`SftTrainer::step`] as a node of `cluster`: every node draws the same batch; each computes the gradient
    /// of its contiguous share of the rows, and the nodes sum gradients and losses.
    pub fn step_on(&mut self, step: u64, cluster: Option<&Cluster>) -> anyhow::Result<SftMetrics> {
        let t0 = Instant::now();
        let sft = &self.config;
        let mut batch = Vec::with_capacity(sft.batch_size);
        while batch.len() < sft.batch_size.min(self.rows.len()) {
            if self.order.is_empty() {
                self.order = (0..self.rows.len()).collect();
                self.rng.shuffle(&mut self.order);
            }
            batch.push(self.order.pop().expect("refilled"));
        }
        let rows = &self.rows;
        let pairs: Vec<(&[u32], &[bool])> = batch.iter().map(|&i| (&rows[i].0[..], &rows[i].1[..])).collect();
        let n_tokens: f32 = pairs.iter().map(|(_, m)| m.iter().skip(1).filter(|&&x| x).count() as f32).sum();
        let targets = sft_targets(&pairs, sft.prompt_loss_weight.eval(step, sft.steps), &mut self.rng);
        let rows_of: Vec<(&[u32], &[bool])> = pairs.iter().zip(&targets).map(|((ids, _), t)| (*ids, &t[..])).collect();
        let (loss, grads) = match cluster {
            None => sft_grads(self.model(), &rows_of, sft.shards)?,
            Some(cluster) => {
                let mine = &rows_of[crate::distributed::share(rows_of.len(), cluster.nodes(), cluster.index())];
                let (loss, grads) = if mine.is_empty() {
                    (0.0, GradientsParams::new())
                } else {
                    sft_grads_of(self.model(), mine, sft.shards, target_count(&rows_of))?
                };
                let flat = crate::distributed::flatten_grads(self.model(), &grads);
                let (losses, summed) = cluster.gather_with_gradients(&loss, flat)?;
                (losses.into_iter().sum(), crate::distributed::unflatten_grads(self.model(), &summed)?)
            }
        };
        let lr = lr_at(&sft.lr, step, sft.steps);
        let model = self.model.take().expect("the model is here");
        let (next, report) = self.optim.step(lr, model, grads);
        self.model = Some(next);
        let tokens_per_s = f64::from(n_tokens) / t0.elapsed().as_secs_f64();
        Ok(SftMetrics { step: step + 1, loss, lr, grad_norm: report.grad_norm, tokens_per_s })
    }
}

#[allow(clippy::too_many_arguments)]
fn train_on<B>(
    registry: &Registry,
    config: &SftRunConfig,
    demos: &Path,
    tokenizer: ChatTokenizer,
    out: &Path,
    progress: &dyn Progress,
    device: &B::Device,
    cluster: Option<&Cluster>,
) -> anyhow::Result<()>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let sft = &config.model;
    // The config beside the model, so that `atod eval --policy` plays it with the prompts it was trained on.
    atod_models::checkpoint::write_file_atomic(&out.join("config.toml"), toml::to_string(config)?.as_bytes())?;
    let max_len = config.prompt.max_prompt_tokens + config.prompt.max_new_tokens + 8;
    let rows = encode_demos(demos, &tokenizer, max_len)?;
    if rows.is_empty() {
        anyhow::bail!("no demonstration fits in {max_len} tokens");
    }
    let over_budget = responses_over_budget(&rows, config.prompt.max_new_tokens);
    if over_budget > 0 {
        eprintln!(
            "warning: {over_budget} of {} demonstration responses are longer than prompt.max_new_tokens = {} tokens \
             (end-of-turn token included): the model will not be able to finish them in rollouts or evaluations",
            rows.len(),
            config.prompt.max_new_tokens
        );
    }
    let model_config = TransformerConfig::preset(&sft.preset, tokenizer.vocab_size())?;
    B::seed(device, sft.seed);
    let mut model = model_config.init::<B>(device)?;
    if let Some(copy) = &sft.copy_pretrain {
        model = copy_pretrain(model, &rows, copy, sft, out, progress, cluster)?;
    }
    let mut trainer = SftTrainer::new(model, rows, sft);
    let mut metrics = std::fs::File::create(out.join("metrics.jsonl"))?;
    let collections = sft.dagger.as_ref().map(|d| d.collections(sft.steps)).unwrap_or_default();
    let mut dagger_log = match sft.dagger {
        Some(_) => Some(std::fs::File::create(out.join("dagger.jsonl"))?),
        None => None,
    };
    progress.start(sft.steps, &format!("sft {}", sft.preset));
    let started = Instant::now();
    for step in 0..sft.steps {
        if let (Some(dagger), Some(round), Some(log)) =
            (&sft.dagger, collections.iter().position(|&s| s == step), dagger_log.as_mut())
        {
            progress.set_message(&format!("dagger round {}: playing {} episodes", round + 1, dagger.episodes));
            let round =
                dagger_round(registry, config, &tokenizer, &model_config, &mut trainer, dagger, round, step, max_len)?;
            writeln!(log, "{}", serde_json::to_string(&round)?)?;
        }
        let record = trainer.step_on(step, cluster)?;
        let loss_value = record.loss;
        writeln!(metrics, "{}", serde_json::to_string(&record)?)?;
        if sft.snapshots.contains(&(step + 1)) {
            let dir = snapshot_dir(out, step + 1);
            std::fs::create_dir_all(&dir)?;
            atod_models::checkpoint::write_file_atomic(&dir.join("config.toml"), toml::to_string(config)?.as_bytes())?;
            let snapshot = LmPolicy::new(
                format!("sft-{}-step-{}", sft.preset, step + 1),
                trainer.model().valid(),
                model_config.clone(),
                tokenizer.clone(),
                SamplingParams::default(),
                sft.seed,
            )?;
            snapshot.save(&dir.join("model"))?;
        }
        progress.set_message(&format!("loss {loss_value:.3}"));
        progress.set_position(step + 1);
    }
    progress.finish();
    let policy = LmPolicy::new(
        format!("sft-{}", sft.preset),
        trainer.model().valid(),
        model_config,
        tokenizer,
        SamplingParams {
            temperature: super::STAGE_EVAL_TEMPERATURE,
            max_new_tokens: config.prompt.max_new_tokens,
            ..SamplingParams::default()
        },
        sft.seed,
    )?;
    policy.save(&out.join("model"))?;
    let mut policy = policy;
    let plugin = registry.get(&config.env.name)?;
    let eval = super::evaluate_stage(out, &mut policy, plugin, config, sft.eval_episodes, 0, progress)?;
    let summary = serde_json::json!({
        "preset": sft.preset,
        "steps": sft.steps,
        "transcripts": trainer.rows.len(),
        "responses_over_budget": over_budget,
        "wall_seconds": started.elapsed().as_secs_f64(),
        "eval": eval,
    });
    std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    Ok(())
}

/// The copying curriculum's sequences ([`super::config::CopyPretrainConfig`]): each is a span of `span[0]..=span[1]`
/// distinct tokens, drawn uniformly from the tokens the demonstrations use, written twice. The targets are the
/// second copy's tokens after its first: each is predictable only by finding where the token before it occurred in
/// the first copy and copying what followed, which is what an induction head does.
pub fn copy_rows(
    source: &[(Vec<u32>, Vec<bool>)],
    count: usize,
    span: [usize; 2],
    rng: &mut SplitMix64,
) -> Vec<(Vec<u32>, Vec<bool>)> {
    let vocab: Vec<u32> = source
        .iter()
        .flat_map(|(ids, _)| ids.iter().copied())
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    if vocab.len() < span[0] {
        return Vec::new();
    }
    let span = [span[0], span[1].min(vocab.len())];
    (0..count)
        .map(|_| {
            let n = span[0] + rng.below((span[1] - span[0] + 1) as u64) as usize;
            // A partial Fisher-Yates shuffle: the first n of a fresh permutation of the vocabulary.
            let mut pool = vocab.clone();
            for i in 0..n {
                let j = i + rng.below((pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            let first = &pool[..n];
            let ids = [first, first].concat();
            let mask = (0..2 * n).map(|i| i > n).collect();
            (ids, mask)
        })
        .collect()
}

/// The copying curriculum's loss (nats) below which the model copies: the phase change takes it from several
/// nats to well under 0.1 within a few hundred steps (configs/paper-mini/REGIME-LOG.md).
pub const COPY_LEARNT_BELOW: f64 = 0.5;

/// The steps whose mean loss the curriculum's end is judged on ([`super::config::CopyPretrainConfig::until_loss`]
/// and the warning for a curriculum that ended before the model copies).
pub const COPY_WINDOW: usize = 50;

/// Runs the copying curriculum on `model` and returns it; `out/copy.jsonl` logs its steps (the loss falls from
/// about ln(vocabulary) towards 0 once the model copies).
fn copy_pretrain<B>(
    model: atod_models::Transformer<B>,
    demos: &[(Vec<u32>, Vec<bool>)],
    copy: &super::config::CopyPretrainConfig,
    sft: &super::config::SftConfig,
    out: &Path,
    progress: &dyn Progress,
    cluster: Option<&Cluster>,
) -> anyhow::Result<atod_models::Transformer<B>>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let mut rng = SplitMix64::new(sft.seed ^ 0xc0b1);
    let rows = copy_rows(demos, (copy.steps as usize) * copy.batch_size, copy.span, &mut rng);
    let config = super::config::SftConfig {
        steps: copy.steps,
        batch_size: copy.batch_size,
        lr: copy.lr.clone(),
        prompt_loss_weight: atod_core::Schedule::constant(0.0),
        snapshots: Vec::new(),
        dagger: None,
        copy_pretrain: None,
        ..sft.clone()
    };
    let mut trainer = SftTrainer::new(model, rows, &config);
    let mut log = std::fs::File::create(out.join("copy.jsonl"))?;
    progress.start(copy.steps, &format!("copy curriculum {}", sft.preset));
    let mut last = Vec::new();
    let window_mean = |losses: &[f64]| {
        let tail = &losses[losses.len().saturating_sub(COPY_WINDOW)..];
        tail.iter().sum::<f64>() / tail.len() as f64
    };
    let below = |threshold: f64, losses: &[f64]| losses.len() >= COPY_WINDOW && window_mean(losses) < threshold;
    let mut stopped_after = None;
    for step in 0..copy.steps {
        let record = trainer.step_on(step, cluster)?;
        writeln!(log, "{}", serde_json::to_string(&record)?)?;
        progress.set_message(&format!("loss {:.3}", record.loss));
        progress.set_position(step + 1);
        last.push(record.loss);
        if copy.until_loss.is_some_and(|threshold| below(threshold, &last)) {
            stopped_after = Some(step + 1);
            break;
        }
    }
    progress.finish();
    if let (Some(done), Some(threshold)) = (stopped_after, copy.until_loss) {
        eprintln!(
            "copy curriculum {}: the mean loss of the last {COPY_WINDOW} steps is below {threshold} after {done} of at \
             most {} steps",
            sft.preset, copy.steps
        );
        return Ok(trainer.into_model());
    }
    // A model that copies predicts the second copy almost surely; one that has not grown induction heads stays
    // near the entropy of a draw from the span (a few nats), and the SFT after it will not copy names either.
    let mean = window_mean(&last);
    if mean > COPY_LEARNT_BELOW {
        eprintln!(
            "warning: the copying curriculum ended at a loss of {mean:.2} nats (mean of its last {} steps, \
             {}/copy.jsonl): the model has not learnt to copy (a model that has is below {COPY_LEARNT_BELOW}); \
             give `copy_pretrain` more steps",
            last.len().min(COPY_WINDOW),
            out.display()
        );
    }
    Ok(trainer.into_model())
}

/// One DAgger collection, as `dagger.jsonl` records it.
#[derive(Debug, Clone, Serialize)]
pub struct DaggerRound {
    /// The SFT steps done before it.
    pub step: u64,
    /// Its number, from 1.
    pub round: usize,
    /// Train episodes the model played.
    pub episodes: u64,
    /// The model's success rate on them.
    pub success_rate: f64,
    /// Labelled transcripts added (those that fit the token budget).
    pub transcripts_added: usize,
    /// Transcripts trained on from now on.
    pub transcripts: usize,
}

/// One DAgger collection ([`super::config::DaggerConfig`]), the `round`-th (from 0), after `step` steps: the
/// current model plays `dagger.episodes` train episodes (seeds of their own per round), every state it reaches is
/// labelled with the expert's response, and the labelled transcripts that fit in `max_len` tokens join the
/// trainer's rows (its shuffle starts afresh).
#[allow(clippy::too_many_arguments)]
fn dagger_round<B>(
    registry: &Registry,
    config: &SftRunConfig,
    tokenizer: &ChatTokenizer,
    model_config: &TransformerConfig,
    trainer: &mut SftTrainer<B>,
    dagger: &super::config::DaggerConfig,
    round: usize,
    step: u64,
    max_len: usize,
) -> anyhow::Result<DaggerRound>
where
    B: AutodiffBackend + HotPathBackend,
    B::InnerBackend: HotPathBackend,
{
    let sft = &config.model;
    let sampling = SamplingParams {
        temperature: dagger.temperature as f32,
        max_new_tokens: config.prompt.max_new_tokens,
        ..SamplingParams::default()
    };
    // Seeds far from the demonstrations' (which start at `demos.seed`) and from other rounds'.
    let seed = sft.seed.wrapping_mul(0x9E37_79B9).wrapping_add(1_000_003 * (round as u64 + 1));
    let mut policy =
        LmPolicy::new("dagger", trainer.model().valid(), model_config.clone(), tokenizer.clone(), sampling, seed)?;
    let plugin = registry.get(&config.env.name)?;
    let render = super::render_of(&config.env, &config.prompt);
    let plan = crate::rollout::Sweep {
        split: &config.env.train_split,
        episodes: dagger.episodes,
        seed,
        batch: crate::evaluation::BATCH,
    };
    let mut labels = Vec::new();
    let rollout = crate::rollout::sweep(plugin, &config.env.config_toml(), &plan, &(), |envs, specs| {
        let (rollout, pairs) =
            crate::rollout::run_episodes_labelled(envs, specs, &mut policy, &render, config.prompt.max_turns)?;
        labels.extend(pairs);
        Ok(rollout)
    })?;
    rollout.require_no_env_errors("DAgger round")?;
    let won = rollout.episodes.iter().filter(|e| e.won).count();
    let before = trainer.rows.len();
    for (mut messages, response) in labels {
        messages.push(ChatMessage::new(atod_core::Role::Assistant, response));
        let encoded = tokenizer.encode_chat(&messages);
        if encoded.ids.len() <= max_len && encoded.loss_mask.iter().any(|&m| m) {
            trainer.rows.push((encoded.ids, encoded.loss_mask));
        }
    }
    trainer.restart_epoch();
    let played = rollout.episodes.len() as u64;
    Ok(DaggerRound {
        step,
        round: round + 1,
        episodes: played,
        success_rate: won as f64 / played.max(1) as f64,
        transcripts_added: trainer.rows.len() - before,
        transcripts: trainer.rows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use atod_models::score;

    /// Golden values from per-token log-probs scored independently (`atod_models::score`, host side): the loss
    /// is the mean NLL over the target tokens; the targets are the assistant tokens plus a `prompt_weight`
    /// fraction of the prompt's.
    #[test]
    fn the_sft_loss_is_the_mean_nll_of_its_targets() {
        let device = Default::default();
        let config = TransformerConfig::preset("student-s", 300).unwrap();
        <atod_models::CpuAutodiff as burn::tensor::backend::Backend>::seed(&device, 3);
        let model = config.init::<atod_models::CpuAutodiff>(&device).unwrap();
        let rows: Vec<(Vec<u32>, Vec<bool>)> = vec![
            (vec![5, 9, 17, 3, 44, 2], vec![false, false, false, true, true, true]),
            (vec![7, 8, 100, 101], vec![false, false, true, true]),
        ];
        let pairs: Vec<(&[u32], &[bool])> = rows.iter().map(|(i, m)| (&i[..], &m[..])).collect();
        // Every token t >= 1 scored given tokens < t: the pair (ids[..1], ids[1..]).
        let prefixes: Vec<(&[u32], &[u32])> = rows.iter().map(|(i, _)| (&i[..1], &i[1..])).collect();
        let scored = score(&model.valid(), &prefixes, 1.0, 8).unwrap();
        let mut rng = SplitMix64::new(1);
        for w in [0.0f64, 0.5, 1.0] {
            let targets = sft_targets(&pairs, w, &mut rng);
            for ((_, mask), t) in rows.iter().zip(&targets) {
                assert!(mask.iter().zip(t).all(|(&m, &t)| !m || t), "assistant tokens are always targets");
                if w == 0.0 {
                    assert_eq!(mask, t);
                }
                if w == 1.0 {
                    assert!(t.iter().all(|&x| x));
                }
            }
            let (mut num, mut den) = (0f64, 0f64);
            for (t, s) in targets.iter().zip(&scored) {
                for (j, lp) in s.logprobs.iter().enumerate() {
                    if t[j + 1] {
                        num -= f64::from(*lp);
                        den += 1.0;
                    }
                }
            }
            let with: Vec<(&[u32], &[bool])> = rows.iter().zip(&targets).map(|((i, _), t)| (&i[..], &t[..])).collect();
            let got = sft_grads(&model, &with, 1).unwrap().0;
            assert!((got - num / den).abs() < 1e-5, "w {w}: {got} vs {}", num / den);
        }
        // About half of many prompt tokens are drawn at weight 0.5.
        let long = (vec![1u32; 2000], vec![false; 2000]);
        let drawn = sft_targets(&[(&long.0[..], &long.1[..])], 0.5, &mut rng)[0].iter().filter(|&&x| x).count();
        assert!((900..1100).contains(&drawn), "{drawn}");
    }

    /// Sharded gradients (each shard on its own replica, on its own thread) equal the unsharded ones.
    #[test]
    fn sharded_sft_gradients_equal_the_whole_batch_gradients() {
        type B = atod_models::CpuAutodiff;
        let device = Default::default();
        let config = TransformerConfig::preset("student-s", 300).unwrap();
        <B as burn::tensor::backend::Backend>::seed(&device, 5);
        let model = config.init::<B>(&device).unwrap();
        let rows: Vec<(Vec<u32>, Vec<bool>)> = (0..5)
            .map(|r| {
                let ids: Vec<u32> = (0..7 + r).map(|t| (t * 31 + r * 7) as u32 % 300).collect();
                let mask = (0..ids.len()).map(|t| t >= 3).collect();
                (ids, mask)
            })
            .collect();
        let pairs: Vec<(&[u32], &[bool])> = rows.iter().map(|(i, m)| (&i[..], &m[..])).collect();
        let (loss1, grads1) = sft_grads(&model, &pairs, 1).unwrap();
        let (loss3, grads3) = sft_grads(&model, &pairs, 3).unwrap();
        assert!((loss1 - loss3).abs() < 1e-5, "{loss1} vs {loss3}");
        let norm1 = AdamW::<B>::grad_norm(&model, &grads1);
        let norm3 = AdamW::<B>::grad_norm(&model, &grads3);
        assert!(norm1 > 0.0 && (norm1 - norm3).abs() < 1e-5 * norm1, "{norm1} vs {norm3}");
        // The difference of the two gradients is (numerically) zero, parameter by parameter.
        let mut diff = grads1;
        let mut negated = GradientsParams::new();
        struct Neg<'a>(&'a GradientsParams, &'a mut GradientsParams);
        impl burn::module::ModuleVisitor<B> for Neg<'_> {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<B, D>>) {
                if let Some(g) = self.0.get::<atod_models::CpuBackend, D>(param.id) {
                    self.1.register::<atod_models::CpuBackend, D>(param.id, g.neg());
                }
            }
        }
        burn::module::Module::visit(&model, &mut Neg(&grads3, &mut negated));
        atod_models::optim::add_grads(&model, &mut diff, negated);
        assert!(AdamW::<B>::grad_norm(&model, &diff) < 1e-5 * norm1);
    }

    /// A response counts against the budget with its end-of-turn token, and the prompt's tokens never do.
    #[test]
    fn responses_over_the_budget_are_counted() {
        let row = |prompt: usize, response: usize| {
            (vec![0u32; prompt + response], [vec![false; prompt], vec![true; response]].concat())
        };
        let rows = vec![row(50, 3), row(2, 4), row(9, 5)];
        assert_eq!(responses_over_budget(&rows, 5), 0);
        assert_eq!(responses_over_budget(&rows, 4), 1);
        assert_eq!(responses_over_budget(&rows, 3), 2);
        assert_eq!(responses_over_budget(&rows, 0), 3);
    }

    /// The copying curriculum's rows: a span of distinct tokens the demonstrations use, written twice, of a
    /// length within `span`; the targets are the second copy's tokens after its first; the same seed gives the
    /// same rows.
    #[test]
    fn copy_rows_repeat_a_span_of_distinct_demonstration_tokens() {
        let demos = vec![(vec![3u32, 5, 7, 7, 9], vec![false; 5]), ((10..60).collect(), vec![false; 50])];
        let used: std::collections::BTreeSet<u32> = demos.iter().flat_map(|(ids, _)| ids.clone()).collect();
        let rows = copy_rows(&demos, 200, [4, 12], &mut SplitMix64::new(7));
        assert_eq!(rows.len(), 200);
        let mut lengths = std::collections::BTreeSet::new();
        for (ids, mask) in &rows {
            let n = ids.len() / 2;
            assert!((4..=12).contains(&n) && ids.len() == 2 * n, "{ids:?}");
            lengths.insert(n);
            assert_eq!(ids[..n], ids[n..]);
            let distinct: std::collections::BTreeSet<u32> = ids[..n].iter().copied().collect();
            assert_eq!(distinct.len(), n, "the span's tokens are distinct: {ids:?}");
            assert!(distinct.is_subset(&used));
            let targets: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
            assert_eq!(targets, (n + 1..2 * n).collect::<Vec<_>>());
        }
        assert_eq!(lengths.len(), 9, "every length of the span is drawn");
        assert_eq!(rows, copy_rows(&demos, 200, [4, 12], &mut SplitMix64::new(7)));
        assert_ne!(rows, copy_rows(&demos, 200, [4, 12], &mut SplitMix64::new(8)));
        // A span longer than the vocabulary is cut to it; a vocabulary smaller than the shortest span gives none.
        let tiny = vec![(vec![1u32, 2, 3], vec![false; 3])];
        assert!(copy_rows(&tiny, 5, [2, 10], &mut SplitMix64::new(1)).iter().all(|(ids, _)| ids.len() <= 6));
        assert!(copy_rows(&tiny, 5, [4, 10], &mut SplitMix64::new(1)).is_empty());
    }

    /// The curriculum does what it is for: a fresh model that cannot copy (its loss on the second copy is the
    /// entropy of a draw from the vocabulary) learns to, the loss falling below [`COPY_LEARNT_BELOW`]; and
    /// `copy.jsonl` logs every step.
    #[test]
    fn the_copying_curriculum_teaches_a_fresh_model_to_copy() {
        type B = atod_models::CpuAutodiff;
        let device = Default::default();
        let config = TransformerConfig::preset("student-s", 128).unwrap();
        <B as burn::tensor::backend::Backend>::seed(&device, 11);
        let model = config.init::<B>(&device).unwrap();
        let demos = vec![((4..124).collect::<Vec<u32>>(), vec![false; 120])];
        let copy = super::super::config::CopyPretrainConfig {
            steps: 900,
            batch_size: 32,
            lr: atod_core::Schedule::parse("warmup(50, 3e-3)").unwrap(),
            span: [8, 16],
            until_loss: None,
        };
        let sft: super::super::config::SftConfig = toml::from_str("preset = \"student-s\"\nseed = 3").unwrap();
        let out = tempfile::tempdir().unwrap();
        let model = copy_pretrain(model, &demos, &copy, &sft, out.path(), &(), None).unwrap();
        let log = std::fs::read_to_string(out.path().join("copy.jsonl")).unwrap();
        let losses: Vec<f64> = log.lines().map(|l| serde_json::from_str::<SftMetrics>(l).unwrap().loss).collect();
        assert_eq!(losses.len(), 900);
        assert!(losses[0] > 4.0, "a fresh model cannot copy: {}", losses[0]);
        let tail = losses[850..].iter().sum::<f64>() / 50.0;
        assert!(tail < COPY_LEARNT_BELOW, "the curriculum ended at {tail}");
        // Copying held-out spans: the loss of fresh rows, scored by the trained model.
        let held_out = copy_rows(&demos, 16, [8, 16], &mut SplitMix64::new(99));
        let pairs: Vec<(&[u32], &[bool])> = held_out.iter().map(|(i, m)| (&i[..], &m[..])).collect();
        let (loss, _) = sft_grads(&model, &pairs, 1).unwrap();
        assert!(loss < COPY_LEARNT_BELOW, "held-out copy loss {loss}");
    }

    /// `until_loss` ends the curriculum at the first step where the mean loss of the last [`COPY_WINDOW`] steps is
    /// below the threshold, and not before [`COPY_WINDOW`] steps: a run with the threshold set to a value its own
    /// losses cross stops exactly where an uncut run's losses say it should, with the same losses up to there.
    #[test]
    fn the_copying_curriculum_stops_once_its_loss_is_below_until_loss() {
        type B = atod_models::CpuAutodiff;
        let device = Default::default();
        let config = TransformerConfig::preset("student-s", 64).unwrap();
        // Every run starts from the same weights: burn initialises parameters lazily, at their first use, from the
        // backend's shared random state (which tests running beside this one reseed), and a clone of an unused
        // model draws its own, so the model is used once (a loss) before it is cloned for each run.
        let model = config.init::<B>(&device).unwrap();
        let probe = [(vec![4u32, 5, 6, 4, 5, 6], vec![false, false, false, false, true, true])];
        let pairs: Vec<(&[u32], &[bool])> = probe.iter().map(|(i, m)| (&i[..], &m[..])).collect();
        sft_grads(&model, &pairs, 1).unwrap();
        let fresh = || model.clone();
        let demos = vec![((4..60).collect::<Vec<u32>>(), vec![false; 56])];
        let sft: super::super::config::SftConfig = toml::from_str("preset = \"student-s\"\nseed = 3").unwrap();
        let run = |until_loss: f64, steps: u64| -> Vec<f64> {
            let copy = super::super::config::CopyPretrainConfig {
                steps,
                batch_size: 4,
                lr: atod_core::Schedule::parse("warmup(10, 3e-3)").unwrap(),
                span: [4, 8],
                until_loss: Some(until_loss),
            };
            let out = tempfile::tempdir().unwrap();
            copy_pretrain(fresh(), &demos, &copy, &sft, out.path(), &(), None).unwrap();
            let log = std::fs::read_to_string(out.path().join("copy.jsonl")).unwrap();
            log.lines().map(|l| serde_json::from_str::<SftMetrics>(l).unwrap().loss).collect()
        };
        // A threshold no loss is under runs every step; one every loss is under stops after the first window.
        let full = run(1e-12, 120);
        assert_eq!(full.len(), 120);
        assert_eq!(run(1e12, 120).len(), COPY_WINDOW);
        let window = |i: usize| full[i + 1 - COPY_WINDOW..=i].iter().sum::<f64>() / COPY_WINDOW as f64;
        let threshold = window(99) + 1e-9;
        let expected = (COPY_WINDOW - 1..120).find(|&i| window(i) < threshold).unwrap() + 1;
        assert!(expected <= 100);
        let cut = run(threshold, 120);
        assert_eq!(cut.len(), expected, "the curriculum stops at the first window below {threshold}");
        assert_eq!(cut[..], full[..expected], "and runs the same steps up to there");
    }
}
