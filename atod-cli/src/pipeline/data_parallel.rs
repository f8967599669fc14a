//! The data-parallel step ([`Trainer::step_on`]): the step of [`Trainer::step`] split across the nodes of a
//! [`Cluster`].
//!
//! 1. Node i plays its share of the step's GRPO groups ([`distributed::share`]: contiguous, whole groups), each
//!    episode's turns sampled from streams keyed by the episode's place in the whole step, so that an episode
//!    plays the same tokens on any number of nodes ([`rollout::run_episodes_keyed`]).
//! 2. Its teacher replica scores its samples.
//! 3. The nodes gather what the advantages and the metrics need (per sample: turn, trajectory, group, validity,
//!    behaviour and teacher log-probs; per episode: return and outcome), in node order, which is the
//!    single-process rollout's order (trajectory by trajectory). Every node then computes the step's advantages
//!    over the whole step: identical on every node and identical to one node's, for every weighting (`token`'s
//!    batch-wide min-max included).
//! 4. The update walks the same shuffled mini-batches of the whole step as one process does; each node computes
//!    the gradient of its own rows of each, weighted by their share of the whole mini-batch's normaliser; the
//!    nodes sum the gradients ([`Cluster::sum_gradients`]) and take the same AdamW step.
//! 5. Every node hashes its weights; the hashes are gathered and must agree.
//!
//! What differs from one process is the grouping of the gradient sums (rows by node, then by thread shard),
//! hence float rounding only.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::bail;
use atod_core::rng::{mix, SplitMix64};
use atod_losses::StepInfo;
use atod_models::HotPathBackend;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{per_sample, rollout_metrics, Scores, Trainer, UpdateReport};
use crate::distributed::{self, Cluster};
use crate::rollout::{self, EpisodeOutcome, Rollout, TurnSample};

/// One node's part of a step, as gathered: what the advantages and the rollout metrics need.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRollout {
    episodes: Vec<EpisodeOutcome>,
    samples: Vec<SampleLine>,
    env_errors: usize,
    overlong_prompts: usize,
    generate_s: f64,
    env_s: f64,
    render_s: f64,
    score_s: f64,
}

/// Log-probs travel as their bits, so that every node computes on the same values.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SampleLine {
    traj: usize,
    turn_idx: usize,
    group: usize,
    valid: bool,
    behaviour: Vec<u32>,
    teacher: Vec<u32>,
}

/// One node's part of a mini-batch's update, as gathered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeUpdate {
    finite: bool,
    /// The objective's metrics, each weighted by this node's share of the mini-batch (summed over nodes).
    metrics: BTreeMap<String, f64>,
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn floats(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

impl<B: AutodiffBackend + HotPathBackend> Trainer<B>
where
    B::InnerBackend: HotPathBackend,
{
    /// One training step as node `cluster.index()` of `cluster.nodes()` (the [module documentation](self));
    /// returns the step's metrics (the whole step's, the same on every node but for `time/*`, which are the
    /// slowest node's) and the weights' hash after the step.
    pub fn step_on(&mut self, step: u64, cluster: &Cluster) -> anyhow::Result<(BTreeMap<String, f64>, String)> {
        let started = Instant::now();
        cluster.take_seconds();
        let info = StepInfo { step, total: self.settings.steps };
        let (nodes, me) = (cluster.nodes(), cluster.index());
        if self.settings.tasks_per_step < nodes {
            bail!(
                "train.tasks_per_step = {} is below the {nodes} nodes: every node plays whole GRPO groups",
                self.settings.tasks_per_step
            );
        }

        // 1-2. This node's groups, played and scored.
        let specs = self.tasks(step);
        let groups = distributed::share(self.settings.tasks_per_step, nodes, me);
        let first = specs.iter().position(|s| s.group >= groups.start).unwrap_or(specs.len());
        let end = specs.iter().position(|s| s.group >= groups.end).unwrap_or(specs.len());
        let mine = &specs[first..end];
        let sampling = self.sampling(step);
        let mut student = self.policy(sampling, 0)?;
        let base = mix(self.settings.seed ^ 0x51) ^ mix(step + 1);
        let (render, max_turns) = (self.settings.render.clone(), self.settings.max_turns);
        let mut local = rollout::run_episodes_keyed(
            &mut self.envs[..mine.len()],
            mine,
            &mut student,
            base,
            first,
            &render,
            max_turns,
        )?;
        local.retain_played();
        let scores = self.score(&local, step)?;

        // 3. The whole step's rollout, as far as advantages and metrics need it, on every node.
        let part = NodeRollout {
            episodes: local.episodes.clone(),
            samples: local
                .samples
                .iter()
                .zip(&scores.teacher)
                .map(|(s, teacher)| SampleLine {
                    traj: s.traj,
                    turn_idx: s.turn_idx,
                    group: s.group,
                    valid: s.valid,
                    behaviour: bits(&s.behaviour_logprobs),
                    teacher: bits(teacher),
                })
                .collect(),
            env_errors: local.env_errors,
            overlong_prompts: local.overlong_prompts,
            generate_s: local.timing.generate_s,
            env_s: local.timing.env_s,
            render_s: local.timing.render_s,
            score_s: scores.seconds,
        };
        let parts = cluster.gather("the step's rollout gather", &part)?;
        let (whole, whole_scores, my_rows) = assemble(&parts, me);
        if whole.episodes.is_empty() {
            bail!("step {step}: every episode of every node ended by an environment error before its first turn");
        }
        let advantages = self.advantages(&whole, &whole_scores, info)?;
        let all_advantages = per_sample(&advantages, &whole);
        let lens: Vec<usize> = whole.samples.iter().map(|s| s.response_ids.len()).collect();

        // 4. The update over the whole step's mini-batches, each node computing its own rows.
        let update =
            self.update_on(&local, &scores, &all_advantages[my_rows.clone()], &lens, my_rows.start, info, cluster)?;

        // 5. The weights must agree.
        let hash = distributed::weight_hash(self.student());
        let hashes = cluster.gather("the weight hashes' gather", &hash)?;
        if let Some((node, other)) = hashes.iter().enumerate().find(|(_, h)| **h != hash) {
            bail!("step {step}: node {node}'s weights (hash {other}) differ from node {me}'s ({hash})");
        }

        let mut metrics = advantages.metrics;
        metrics.extend(update.metrics);
        metrics.extend(rollout_metrics(&whole));
        let slowest = |f: fn(&NodeRollout) -> f64| parts.iter().map(f).fold(0.0, f64::max);
        metrics.insert("time/generate".into(), slowest(|p| p.generate_s));
        metrics.insert("time/env".into(), slowest(|p| p.env_s));
        metrics.insert("time/score".into(), slowest(|p| p.score_s));
        metrics.insert("time/update".into(), update.seconds);
        metrics.insert("time/collective".into(), cluster.take_seconds());
        metrics.insert("time/step".into(), started.elapsed().as_secs_f64());
        metrics.insert("actor/lr".into(), update.lr);
        metrics.insert("train/updates".into(), f64::from(update.updates));
        metrics.insert("train/skipped_updates".into(), f64::from(update.skipped));
        metrics.insert("dist/nodes".into(), nodes as f64);
        metrics.insert("dist/node_samples".into(), local.samples.len() as f64);
        Ok((metrics, hash))
    }

    /// [`Trainer::update`] over the whole step's samples (response lengths `lens`), of which this node holds
    /// rows `offset..offset + local.samples.len()` (`advantages` are theirs).
    #[allow(clippy::too_many_arguments)]
    fn update_on(
        &mut self,
        local: &Rollout,
        scores: &Scores,
        advantages: &[Vec<f32>],
        lens: &[usize],
        offset: usize,
        info: StepInfo,
        cluster: &Cluster,
    ) -> anyhow::Result<UpdateReport> {
        let started = Instant::now();
        let lr = self.settings.lr.eval(info.step, info.total);
        let mut report = UpdateReport { lr, ..UpdateReport::default() };
        let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut order: Vec<usize> = (0..lens.len()).collect();
        let mut shuffle = SplitMix64::new(mix(self.settings.seed ^ 0xb47c) ^ mix(info.step));
        let held = offset..offset + local.samples.len();
        for _ in 0..self.settings.ppo_epochs {
            shuffle.shuffle(&mut order);
            for rows in order.chunks(self.settings.mini_batch_size) {
                let all_tokens: Vec<usize> = rows.iter().map(|&r| lens[r]).collect();
                let mine: Vec<usize> = rows.iter().filter(|r| held.contains(r)).map(|&r| r - offset).collect();
                let computed = if mine.is_empty() {
                    Some((GradientsParams::new(), BTreeMap::new()))
                } else {
                    self.mini_batch_grads(local, scores, advantages, &mine, &all_tokens, info)?
                };
                let part = NodeUpdate {
                    finite: computed.is_some(),
                    metrics: computed.as_ref().map(|(_, m)| m.clone()).unwrap_or_default(),
                };
                let grads = computed.map(|(grads, _)| grads).unwrap_or_default();
                let flat = distributed::flatten_grads(self.student(), &grads);
                let (parts, summed) = cluster.gather_with_gradients(&part, flat)?;
                if parts.iter().any(|p| !p.finite) {
                    report.skipped += 1;
                    continue;
                }
                let grads = distributed::unflatten_grads(self.student(), &summed)?;
                let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
                for part in &parts {
                    for (k, v) in &part.metrics {
                        *metrics.entry(k.clone()).or_default() += v;
                    }
                }
                self.apply(grads, metrics, rows.len(), &mut report, &mut sums);
            }
        }
        report.metrics = sums.into_iter().map(|(k, (sum, n))| (k, sum / n.max(1.0))).collect();
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// The whole step's rollout and teacher scores from every node's part (in node order), and the rows of node
/// `me`'s samples in it. Episodes come whole; samples carry only what advantages and metrics read: lengths,
/// log-probs, validity.
fn assemble(parts: &[NodeRollout], me: usize) -> (Rollout, Scores, std::ops::Range<usize>) {
    let mut whole = Rollout::default();
    let mut teacher = Vec::new();
    let mut my_rows = 0..0;
    for (node, part) in parts.iter().enumerate() {
        let offset = whole.episodes.len();
        if node == me {
            my_rows = whole.samples.len()..whole.samples.len() + part.samples.len();
        }
        whole.episodes.extend(part.episodes.iter().map(|e| EpisodeOutcome { traj: offset + e.traj, ..e.clone() }));
        for s in &part.samples {
            let behaviour = floats(&s.behaviour);
            whole.samples.push(TurnSample {
                traj: offset + s.traj,
                group: s.group,
                turn_idx: s.turn_idx,
                prompt_ids: Vec::new(),
                response_ids: vec![0; behaviour.len()],
                behaviour_logprobs: behaviour,
                messages: Vec::new(),
                response: String::new(),
                action: String::new(),
                valid: s.valid,
                reward: 0.0,
                expert_response: None,
            });
            teacher.push(floats(&s.teacher));
        }
        whole.env_errors += part.env_errors;
        whole.overlong_prompts += part.overlong_prompts;
        whole.timing.generate_s = whole.timing.generate_s.max(part.generate_s);
        whole.timing.env_s = whole.timing.env_s.max(part.env_s);
        whole.timing.render_s = whole.timing.render_s.max(part.render_s);
    }
    (whole, Scores { teacher, reference: None, seconds: 0.0 }, my_rows)
}

#[cfg(test)]
mod tests {
    use atod_envs::EnvPlugin;
    use atod_losses::Loss;
    use atod_models::optim::{AdamW, AdamWConfig};
    use atod_models::{ChatTokenizer, CpuAutodiff, LmPolicy, SamplingParams, Transformer, TransformerConfig};
    use burn::module::AutodiffModule;

    use super::*;
    use crate::pipeline::trainer::{Models, Settings};
    use crate::render::RenderConfig;

    fn trainer(
        teacher: &Transformer<atod_models::CpuBackend>,
        student: &Transformer<CpuAutodiff>,
        shape: &TransformerConfig,
        tokenizer: &ChatTokenizer,
        weighting: &str,
    ) -> Trainer<CpuAutodiff> {
        let plugin = EnvPlugin::bundled(atod_plugin_counter::atod_root_module());
        let teacher =
            LmPolicy::new("teacher", teacher.clone(), shape.clone(), tokenizer.clone(), SamplingParams::default(), 0)
                .expect("a policy");
        let models = Models {
            student: student.clone(),
            student_config: shape.clone(),
            tokenizer: tokenizer.clone(),
            teacher,
            reference: None,
        };
        let loss =
            Loss::from_toml(&format!("[loss]\npreset = \"atod\"\nweighting = \"{weighting}\"\n")).expect("a loss");
        let settings = Settings {
            seed: 3,
            steps: 2,
            train_split: "train".into(),
            tasks_per_step: 3,
            group_size: 2,
            mini_batch_size: 5,
            ppo_epochs: 1,
            shards: 2,
            lr: 1e-3.into(),
            temperature: 1.0.into(),
            render: RenderConfig::default(),
            max_turns: 3,
            max_new_tokens: 6,
        };
        Trainer::new(&plugin, "max_target = 3", models, AdamW::new(AdamWConfig::default()), loss, settings)
            .expect("a trainer")
    }

    /// A step on 1, 2 and 3 nodes (threads of this process): the rollouts are the same bits on any node count
    /// (each episode samples from its own keyed stream), the advantages (computed over the gathered step), the
    /// update's metrics differ by float rounding only (and the weights where that rounding decides AdamW's
    /// direction), and every node of a run holds the same
    /// weights (step_on checks the hashes itself). One step: this process's default arithmetic is not batch
    /// invariant, so a later step may sample other tokens; tests/tests/distributed.rs runs several steps in the
    /// reproducible mode.
    #[test]
    fn any_number_of_nodes_trains_as_one_does_up_to_rounding() {
        let tokenizer =
            ChatTokenizer::train(["<think>below</think><action>inc</action>", "The counter shows 3."], 300).unwrap();
        let shape = TransformerConfig::student_s(tokenizer.vocab_size());
        let student = shape.init::<CpuAutodiff>(&Default::default()).unwrap();
        // A teacher of its own: with the student as its own teacher, A_opd and T-DUR's disagreements are pure
        // rounding noise, which the min-max normalisation blows up.
        let teacher = shape.init::<CpuAutodiff>(&Default::default()).unwrap();
        // burn initialises parameters lazily, and a clone of an uninitialised one draws its own values: read the
        // student and the teacher once so that every node's clones start from the same weights.
        let _ = weights_of(&student);
        let _ = weights_of(&teacher);
        let teacher = teacher.valid();

        for weighting in ["tdur", "token"] {
            let runs: Vec<Vec<NodeRun>> = [1usize, 2, 3]
                .iter()
                .map(|&nodes| {
                    let clusters = Cluster::local(nodes);
                    std::thread::scope(|scope| {
                        let handles: Vec<_> = clusters
                            .iter()
                            .map(|cluster| {
                                let (teacher, student, shape, tokenizer) = (&teacher, &student, &shape, &tokenizer);
                                scope.spawn(move || {
                                    let mut trainer = trainer(teacher, student, shape, tokenizer, weighting);
                                    let metrics: Vec<_> =
                                        (0..1).map(|step| trainer.step_on(step, cluster).unwrap().0).collect();
                                    (metrics, weights_of(trainer.student()))
                                })
                            })
                            .collect();
                        handles.into_iter().map(|h| h.join().unwrap()).collect()
                    })
                })
                .collect();
            let (reference, reference_weights) = &runs[0][0];
            for run in &runs[1..] {
                for (metrics, weights) in run {
                    assert_eq!(weights, &run[0].1, "every node of a run holds the same weights");
                    for (step, (got, want)) in metrics.iter().zip(reference).enumerate() {
                        for (key, w) in want {
                            let g = got[key];
                            if key.starts_with("time/") || key == "dist/nodes" || key == "dist/node_samples" {
                                continue;
                            }
                            // The sampled tokens are the same bits; the log-probs behind the advantages are
                            // too in the reproducible mode (tests/tests/distributed.rs checks that through the
                            // CLI), not in this process's default mode, whose products block by batch size.
                            let exact = key.starts_with("rollout/");
                            if exact && step == 0 {
                                assert_eq!(g.to_bits(), w.to_bits(), "{weighting} step {step} {key}: {g} vs {w}");
                            } else if TOKEN_MEANS.contains(&key.as_str()) {
                                // Token means combined by the shards' sequence shares (and a count of clipped tokens, which
                                // flips with a ratio at the clip): estimates whose
                                // grouping (rows by node, then by thread) moves it beyond rounding.
                                assert!(
                                    (g - w).abs() <= 0.1 + 0.25 * w.abs(),
                                    "{weighting} step {step} {key}: {g} vs {w}"
                                );
                            } else {
                                assert!(
                                    (g - w).abs() <= 1e-4 * w.abs().max(1e-2),
                                    "{weighting} step {step} {key}: {g} vs {w}"
                                );
                            }
                        }
                    }
                    // AdamW's first steps move a weight by about lr * sign(gradient), so a gradient within
                    // rounding of 0 may move it either way: almost every weight agrees, not all.
                    let apart = weights.iter().zip(reference_weights).filter(|(a, b)| (*a - *b).abs() > 1e-5).count();
                    assert!(apart * 100 < weights.len(), "{weighting}: {apart} of {} weights differ", weights.len());
                }
            }
            assert_eq!(
                runs[1][0].0[0]["dist/node_samples"] + runs[1][1].0[0]["dist/node_samples"],
                reference[0]["rollout/samples"]
            );
        }
    }

    /// The objective's token-mean diagnostics: each shard's mean weighted by the shard's share of the
    /// aggregation's normaliser (sequences, for the `atod` preset), so their value depends on how rows are
    /// grouped into shards, on one process as on several; the loss and the gradient do not.
    const TOKEN_MEANS: [&str; 3] = ["actor/approx_kl", "actor/clipfrac", "actor/entropy"];

    /// One node's metrics per step and final weights.
    type NodeRun = (Vec<BTreeMap<String, f64>>, Vec<f32>);

    fn weights_of(model: &Transformer<CpuAutodiff>) -> Vec<f32> {
        use burn::module::{ModuleVisitor, Param};
        use burn::tensor::Tensor;
        struct Collect(Vec<f32>);
        impl ModuleVisitor<CpuAutodiff> for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuAutodiff, D>>) {
                self.0.extend(param.val().into_data().iter::<f32>());
            }
        }
        let mut visitor = Collect(Vec::new());
        burn::module::Module::visit(model, &mut visitor);
        visitor.0
    }
}
