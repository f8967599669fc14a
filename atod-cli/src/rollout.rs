//! The batched rollout engine (DESIGN.md §2, step 2): plays many episodes at once, with one generation call
//! per turn over every live episode, and stores each turn as its own sample.
//!
//! Every caller goes through one episode loop: the trainer's rollouts and `atod eval` with a language model
//! ([`run_episodes`]), and `atod eval` with the expert or random policy and `atod collect`
//! ([`run_episodes_with`], for policies that answer with text only). Prompts come from [`crate::render`], so
//! the same state renders to the same prompt everywhere. A language model's prompts are fitted to the token
//! budget; a text policy's are rendered whole (it has no tokenizer to measure them with).
//!
//! Members of a GRPO group are simply episodes with identical [`TaskRef`]s; the engine does not treat them
//! differently, so a group's members differ only through the policy's samples.
//!
//! An environment that is gone mid-episode ([`atod_core::Error::EnvUnavailable`]: a remote environment's server
//! died or did not answer in time) ends that episode as failed, not won, with the rewards it had so far and the
//! reason in [`EpisodeOutcome::env_error`], and the other episodes play on; [`Rollout::env_errors`] counts such
//! episodes. Any other environment error, and one at `reset` (where a remote environment has already tried
//! every server), stops the rollout as before.

use std::ops::Range;
use std::time::Instant;

use anyhow::{bail, Context};
use atod_core::{ChatMessage, Environment, Policy, PolicyResponse, PromptPieces, TaskRef, TurnInput};
use atod_envs::EnvPlugin;
use atod_models::{ChatTokenizer, HotPathBackend, LmPolicy};
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::render::{render, render_fitted, HistoryItem, RenderConfig};

/// What the history shows for a turn whose response held no action.
pub const INVALID_ACTION_NOTE: &str = "(no valid action)";

/// One episode to play: which task, and which GRPO group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpisodeSpec {
    /// The task; members of a group pass identical task refs (split, index and seed).
    pub task: TaskRef,
    /// The group's index within the step (for evaluations, the episode's own index).
    pub group: usize,
}

/// One turn of one episode, the unit the trainer learns from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnSample {
    /// The trajectory: the index of its episode in the specs given to the engine.
    pub traj: usize,
    /// The trajectory's GRPO group.
    pub group: usize,
    /// The turn's position in its trajectory, from 0.
    pub turn_idx: usize,
    /// The prompt's ids, `tokenizer.encode_prompt(&messages)`; empty for text-only policies.
    pub prompt_ids: Vec<u32>,
    /// The sampled ids, the end-of-turn id included when generation stopped on it; empty for text policies.
    pub response_ids: Vec<u32>,
    /// The behaviour log-prob of each response id, aligned with `response_ids`.
    pub behaviour_logprobs: Vec<f32>,
    /// The rendered prompt, as `atod collect` writes it.
    pub messages: Vec<ChatMessage>,
    /// The response text fed to the environment.
    pub response: String,
    /// The action the environment extracted (empty when invalid).
    pub action: String,
    /// Whether the response held a well-formed action.
    pub valid: bool,
    /// The reward of this step.
    pub reward: f64,
    /// The environment's expert response in this state, for actors that ask for it (text policies, DAgger).
    #[serde(skip)]
    pub expert_response: Option<String>,
}

/// How one episode ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeOutcome {
    /// The index of the episode in the specs.
    pub traj: usize,
    /// Its GRPO group.
    pub group: usize,
    /// The task played.
    pub task: TaskRef,
    /// The environment's kind of task, where it has several.
    pub task_type: Option<String>,
    /// Whether the task was solved.
    pub won: bool,
    /// The environment's score after the last step.
    pub score: f64,
    /// The sum of the rewards of all turns (success reward and invalid-action penalties).
    pub total_return: f64,
    /// Turns played.
    pub turns: usize,
    /// Turns whose response held no valid action.
    pub invalid: usize,
    /// Whether the environment ended the episode (false when it was cut off at `max_turns` or ended by an
    /// environment error).
    pub done: bool,
    /// Why the episode ended early, when its environment was gone (the error's text); such an episode is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_error: Option<String>,
}

/// Where the time of a rollout went, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Timing {
    /// Generating responses (the policy's `act` or `generate_ids`).
    pub generate_s: f64,
    /// The environments: reset, step and the queries for prompt pieces, admissible actions and experts.
    pub env_s: f64,
    /// Rendering and tokenizing prompts.
    pub render_s: f64,
}

/// Everything a batch of episodes produced.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Rollout {
    /// Every turn of every episode, ordered by trajectory then turn.
    pub samples: Vec<TurnSample>,
    /// One outcome per spec, in the order of the specs.
    pub episodes: Vec<EpisodeOutcome>,
    /// Where the time went.
    pub timing: Timing,
    /// Prompts that exceeded `max_prompt_tokens` even with no history and an empty observation.
    pub overlong_prompts: usize,
    /// Episodes ended by an environment error ([`EpisodeOutcome::env_error`]), those dropped by
    /// [`Rollout::retain_played`] included.
    #[serde(skip_serializing_if = "is_zero")]
    pub env_errors: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Rollout {
    /// Appends `other`, whose trajectory indices count from 0, after the episodes already here.
    pub fn extend(&mut self, other: Rollout) {
        let offset = self.episodes.len();
        self.samples.extend(other.samples.into_iter().map(|s| TurnSample { traj: s.traj + offset, ..s }));
        self.episodes.extend(other.episodes.into_iter().map(|e| EpisodeOutcome { traj: e.traj + offset, ..e }));
        self.timing.generate_s += other.timing.generate_s;
        self.timing.env_s += other.timing.env_s;
        self.timing.render_s += other.timing.render_s;
        self.overlong_prompts += other.overlong_prompts;
        self.env_errors += other.env_errors;
    }

    /// Ends episode `traj` as failed because its environment is gone.
    fn end_by_env_error(&mut self, traj: usize, err: &atod_core::Error) {
        let outcome = &mut self.episodes[traj];
        outcome.env_error = Some(err.to_string());
        outcome.won = false;
        outcome.done = false;
        self.env_errors += 1;
    }

    /// Drops the episodes an environment error ended before their first turn, renumbering the trajectories
    /// (the losses need a turn in every trajectory), and returns them; [`Rollout::env_errors`] still counts them.
    pub fn retain_played(&mut self) -> Vec<EpisodeOutcome> {
        let mut renumbered = vec![usize::MAX; self.episodes.len()];
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for (traj, outcome) in std::mem::take(&mut self.episodes).into_iter().enumerate() {
            if outcome.turns == 0 && outcome.env_error.is_some() {
                dropped.push(outcome);
            } else {
                renumbered[traj] = kept.len();
                kept.push(EpisodeOutcome { traj: kept.len(), ..outcome });
            }
        }
        self.episodes = kept;
        for sample in &mut self.samples {
            sample.traj = renumbered[sample.traj];
        }
        dropped
    }

    /// An error when any episode was ended by an environment error: for artifacts that must not depend on
    /// whether a server was up (demonstrations, DAgger data).
    pub fn require_no_env_errors(&self, what: &str) -> anyhow::Result<()> {
        if let Some(reason) = self.episodes.iter().find_map(|e| e.env_error.as_deref()) {
            bail!(
                "{what}: {} of {} episodes ended by an environment error; the first: {reason}",
                self.env_errors,
                self.episodes.len()
            );
        }
        Ok(())
    }
}

/// Whether `err` says the environment is gone (the episode is lost) rather than that a request was wrong.
pub fn is_env_gone(err: &atod_core::Error) -> bool {
    matches!(err, atod_core::Error::EnvUnavailable { .. })
}

/// Plays every spec with a language model: env `i` plays spec `i`, all at once, with one `generate_ids` call
/// over the live episodes per turn. Episodes end when their environment says so or after `max_turns` turns.
///
/// Sampling uses the policy's own random stream; reseed it ([`LmPolicy::reseed`]) for a reproducible rollout.
pub fn run_episodes<B: HotPathBackend>(
    envs: &mut [Box<dyn Environment>],
    specs: &[EpisodeSpec],
    policy: &mut LmPolicy<B>,
    cfg: &RenderConfig,
    max_turns: usize,
) -> anyhow::Result<Rollout> {
    run(envs, specs, &mut LmActor { policy, expert: false, keys: None }, cfg, max_turns)
}

/// [`run_episodes`] whose sampling does not depend on how episodes are batched: episode `i` (of `specs`) samples
/// its turn `k` from the stream [`episode_turn_seed`]`(base, offset + i, k)`. The data-parallel trainer plays
/// each node's share of a step's episodes so, `offset` being the share's first episode in the whole step, and
/// the step plays the same tokens on any number of nodes.
pub fn run_episodes_keyed<B: HotPathBackend>(
    envs: &mut [Box<dyn Environment>],
    specs: &[EpisodeSpec],
    policy: &mut LmPolicy<B>,
    base: u64,
    offset: usize,
    cfg: &RenderConfig,
    max_turns: usize,
) -> anyhow::Result<Rollout> {
    run(envs, specs, &mut LmActor { policy, expert: false, keys: Some((base, offset)) }, cfg, max_turns)
}

/// A rendered prompt and the expert's response to it: one DAgger transcript.
pub type Labelled = (Vec<ChatMessage>, String);

/// [`run_episodes`] that also labels every state the model reaches with the environment's expert response
/// (DAgger): the returned pairs are each turn's rendered prompt and the expert's response to it, in play order.
pub fn run_episodes_labelled<B: HotPathBackend>(
    envs: &mut [Box<dyn Environment>],
    specs: &[EpisodeSpec],
    policy: &mut LmPolicy<B>,
    cfg: &RenderConfig,
    max_turns: usize,
) -> anyhow::Result<(Rollout, Vec<Labelled>)> {
    let rollout = run(envs, specs, &mut LmActor { policy, expert: true, keys: None }, cfg, max_turns)?;
    let labels = rollout
        .samples
        .iter()
        .filter_map(|sample| Some((sample.messages.clone(), sample.expert_response.clone()?)))
        .collect();
    Ok((rollout, labels))
}

/// [`run_episodes`] for a policy that answers with text only (the expert, the random policy): prompts are
/// rendered whole, samples carry no ids, and each turn's input carries the expert's response.
pub fn run_episodes_with(
    envs: &mut [Box<dyn Environment>],
    specs: &[EpisodeSpec],
    policy: &mut dyn Policy,
    cfg: &RenderConfig,
    max_turns: usize,
) -> anyhow::Result<Rollout> {
    run(envs, specs, &mut TextActor(policy, None), cfg, max_turns)
}

/// [`run_episodes_with`] with prompts fitted to `cfg.max_prompt_tokens` by `tokenizer`, as a language model's
/// are: expert demonstrations for SFT then show exactly the prompts the trained model will see.
pub fn run_episodes_fitted(
    envs: &mut [Box<dyn Environment>],
    specs: &[EpisodeSpec],
    policy: &mut dyn Policy,
    tokenizer: &ChatTokenizer,
    cfg: &RenderConfig,
    max_turns: usize,
) -> anyhow::Result<Rollout> {
    run(envs, specs, &mut TextActor(policy, Some(tokenizer)), cfg, max_turns)
}

/// The specs of episodes `range` of a sweep over a split of `size` tasks: episode `i` plays task `i mod size`
/// with seed `seed + i div size` (so more episodes than tasks replay the tasks with fresh seeds) and is its
/// own group.
pub fn sweep_specs(split: &str, size: u64, seed: u64, range: Range<u64>) -> Vec<EpisodeSpec> {
    range
        .map(|i| EpisodeSpec {
            task: TaskRef { split: split.to_owned(), index: i % size, seed: seed + i / size },
            group: i as usize,
        })
        .collect()
}

/// A sweep over a split: which episodes to play and how many at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep<'a> {
    /// The split.
    pub split: &'a str,
    /// The number of episodes (see [`sweep_specs`]).
    pub episodes: u64,
    /// The base seed.
    pub seed: u64,
    /// Episodes played side by side.
    pub batch: usize,
}

/// Plays the episodes of `sweep` in batches, with `play` running each batch on fresh environments of
/// `plugin`, and advances `progress` by episodes. Trajectory indices of the result are episode indices.
pub fn sweep(
    plugin: &EnvPlugin,
    env_config: &str,
    sweep: &Sweep<'_>,
    progress: &dyn Progress,
    mut play: impl FnMut(&mut [Box<dyn Environment>], &[EpisodeSpec]) -> anyhow::Result<Rollout>,
) -> anyhow::Result<Rollout> {
    let Sweep { split, episodes, seed, batch } = *sweep;
    let probe = plugin.create(env_config)?;
    let size = probe.info().split_size(split)?;
    if size == 0 {
        bail!("split `{split}` of `{}` has no tasks", plugin.name());
    }
    let mut envs: Vec<Box<dyn Environment>> = vec![probe];
    let mut all = Rollout::default();
    let mut next = 0u64;
    while next < episodes {
        let count = (episodes - next).min(batch.max(1) as u64);
        while envs.len() < count as usize {
            envs.push(plugin.create(env_config)?);
        }
        let specs = sweep_specs(split, size, seed, next..next + count);
        all.extend(play(&mut envs[..count as usize], &specs)?);
        next += count;
        progress.set_position(next);
    }
    Ok(all)
}

/// The two kinds of policy behind one episode loop.
trait Actor {
    /// The tokenizer prompts are fitted with, for policies that take ids.
    fn tokenizer(&self) -> Option<&ChatTokenizer>;
    /// Whether each turn's input needs the environment's expert response.
    fn wants_expert(&self) -> bool;
    /// One response per turn, in order; `rows[k]` is the episode (index into the specs) of turn `k`, all at turn
    /// `turn_idx`.
    fn act(
        &mut self,
        inputs: &[TurnInput],
        prompt_ids: &[Vec<u32>],
        rows: &[usize],
        turn_idx: usize,
    ) -> anyhow::Result<Vec<PolicyResponse>>;
}

struct TextActor<'a>(&'a mut dyn Policy, Option<&'a ChatTokenizer>);

impl Actor for TextActor<'_> {
    fn tokenizer(&self) -> Option<&ChatTokenizer> {
        self.1
    }
    fn wants_expert(&self) -> bool {
        true
    }
    fn act(
        &mut self,
        inputs: &[TurnInput],
        _: &[Vec<u32>],
        _: &[usize],
        _: usize,
    ) -> anyhow::Result<Vec<PolicyResponse>> {
        Ok(self.0.act(inputs)?)
    }
}

/// A language model acting: with each state's expert response asked for (and kept in its sample) when `expert`
/// (DAgger labels), and, with `keys = Some((base, offset))`, the row of episode `i` at turn `k` sampled from a
/// stream keyed by (`base`, `offset + i`, `k`), so that an episode plays the same tokens whichever other episodes
/// share its batches (the data-parallel trainer's rollouts, split across nodes); else from the policy's stream.
struct LmActor<'a, B: HotPathBackend> {
    policy: &'a mut LmPolicy<B>,
    expert: bool,
    keys: Option<(u64, usize)>,
}

impl<B: HotPathBackend> Actor for LmActor<'_, B> {
    fn tokenizer(&self) -> Option<&ChatTokenizer> {
        Some(&self.policy.tokenizer)
    }
    fn wants_expert(&self) -> bool {
        self.expert
    }
    fn act(
        &mut self,
        _: &[TurnInput],
        prompt_ids: &[Vec<u32>],
        rows: &[usize],
        turn_idx: usize,
    ) -> anyhow::Result<Vec<PolicyResponse>> {
        match self.keys {
            None => Ok(self.policy.generate_ids(prompt_ids)?),
            Some((base, offset)) => {
                let seeds: Vec<u64> = rows.iter().map(|&i| episode_turn_seed(base, offset + i, turn_idx)).collect();
                Ok(self.policy.generate_ids_seeded(prompt_ids, &seeds)?)
            }
        }
    }
}

/// The sampling seed of episode `episode`'s turn `turn` under base seed `base` ([`run_episodes_keyed`]).
pub fn episode_turn_seed(base: u64, episode: usize, turn: usize) -> u64 {
    use atod_core::rng::mix;
    mix(base ^ mix(episode as u64 ^ 0x6570_6973_6f64_6500) ^ mix((turn as u64).wrapping_add(0x7475_726e)))
}

/// The most threads [`call_each`] calls environments on.
const ENV_THREADS: usize = 16;

/// `call(k, env)` for the environment of each index `indices[k]` (ascending), the results in that order: one
/// after another, or,
/// when `concurrent` (environments that wait on I/O, [`Environment::waits_on_io`]), on up to [`ENV_THREADS`]
/// threads at once. Each environment is called by one thread only, so results never depend on it.
fn call_each<T: Send>(
    envs: &mut [Box<dyn Environment>],
    indices: &[usize],
    concurrent: bool,
    call: impl Fn(usize, &mut Box<dyn Environment>) -> T + Sync,
) -> Vec<T> {
    let mut wanted = indices.iter().copied().peekable();
    let mut picked: Vec<(usize, &mut Box<dyn Environment>)> = Vec::with_capacity(indices.len());
    for (i, env) in envs.iter_mut().enumerate() {
        if wanted.peek() == Some(&i) {
            wanted.next();
            picked.push((picked.len(), env));
        }
    }
    assert!(wanted.next().is_none(), "call_each takes ascending indices of existing environments");
    if !concurrent || picked.len() < 2 {
        return picked.into_iter().map(|(i, env)| call(i, env)).collect();
    }
    let per_thread = picked.len().div_ceil(ENV_THREADS);
    let call = &call;
    std::thread::scope(|scope| {
        let handles: Vec<_> = picked
            .chunks_mut(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter_mut().map(|(i, env)| call(*i, env)).collect::<Vec<T>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// The state of one episode between turns.
struct Live {
    pieces: PromptPieces,
    observation: String,
    history: Vec<HistoryItem>,
}

/// The episode loop.
fn run(
    envs: &mut [Box<dyn Environment>],
    specs: &[EpisodeSpec],
    actor: &mut dyn Actor,
    cfg: &RenderConfig,
    max_turns: usize,
) -> anyhow::Result<Rollout> {
    if envs.len() != specs.len() {
        bail!("{} environments for {} episodes; the rollout engine needs one per episode", envs.len(), specs.len());
    }
    let mut rollout = Rollout::default();
    let clock = Instant::now();
    let concurrent = envs.first().is_some_and(|env| env.waits_on_io());
    let all: Vec<usize> = (0..envs.len()).collect();
    let opened = call_each(envs, &all, concurrent, |traj, env| {
        let TaskRef { split, index, seed } = &specs[traj].task;
        let observation = env.reset(split, *index, *seed);
        let described = observation.is_ok().then(|| env.prompt().and_then(|pieces| Ok((pieces, env.task_type()?))));
        (observation, described)
    });
    let mut states = Vec::with_capacity(specs.len());
    for (traj, (spec, (observation, described))) in specs.iter().zip(opened).enumerate() {
        let TaskRef { split, index, seed } = &spec.task;
        let observation = observation
            .with_context(|| format!("episode {traj}: reset to task {index} of `{split}` with seed {seed}"))?;
        rollout.episodes.push(EpisodeOutcome {
            traj,
            group: spec.group,
            task: spec.task.clone(),
            task_type: None,
            won: false,
            score: 0.0,
            total_return: 0.0,
            turns: 0,
            invalid: 0,
            done: false,
            env_error: None,
        });
        let pieces = match described.expect("described after a reset that succeeded") {
            Ok((pieces, task_type)) => {
                rollout.episodes[traj].task_type = task_type;
                pieces
            }
            Err(err) if is_env_gone(&err) => {
                rollout.end_by_env_error(traj, &err);
                PromptPieces::default()
            }
            Err(err) => return Err(err.into()),
        };
        states.push(Live { pieces, observation, history: Vec::new() });
    }
    rollout.timing.env_s += clock.elapsed().as_secs_f64();

    let mut live: Vec<usize> = (0..specs.len()).filter(|&i| rollout.episodes[i].env_error.is_none()).collect();
    for turn_idx in 0..max_turns {
        let mut inputs = Vec::with_capacity(live.len());
        let mut prompt_ids = Vec::with_capacity(live.len());
        let mut acting = Vec::with_capacity(live.len());
        let clock = Instant::now();
        let wants_expert = actor.wants_expert();
        let queried = call_each(envs, &live, concurrent, |_, env| {
            let admissible = env.admissible_actions()?;
            let expert_response = if wants_expert { env.expert_action()? } else { None };
            Ok::<_, atod_core::Error>((admissible, expert_response))
        });
        rollout.timing.env_s += clock.elapsed().as_secs_f64();
        for (&i, queried) in live.iter().zip(queried) {
            let rendered = Instant::now();
            let (admissible, expert_response) = match queried {
                Ok(queried) => queried,
                Err(err) if is_env_gone(&err) => {
                    rollout.end_by_env_error(i, &err);
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            acting.push(i);
            let state = &states[i];
            let (messages, ids) = match actor.tokenizer() {
                Some(tokenizer) => render_fitted(
                    tokenizer,
                    &state.pieces,
                    &state.history,
                    &state.observation,
                    &admissible,
                    turn_idx,
                    cfg,
                ),
                None => {
                    (render(&state.pieces, &state.history, &state.observation, &admissible, turn_idx, cfg), Vec::new())
                }
            };
            if actor.tokenizer().is_some() && ids.len() > cfg.max_prompt_tokens {
                rollout.overlong_prompts += 1;
            }
            rollout.timing.render_s += rendered.elapsed().as_secs_f64();
            inputs.push(TurnInput { messages, admissible_actions: admissible, expert_response });
            prompt_ids.push(ids);
        }
        live = acting;
        if live.is_empty() {
            break;
        }

        let clock = Instant::now();
        let responses = actor.act(&inputs, &prompt_ids, &live, turn_idx)?;
        rollout.timing.generate_s += clock.elapsed().as_secs_f64();
        if responses.len() != live.len() {
            bail!("the policy answered {} of {} turns", responses.len(), live.len());
        }

        let clock = Instant::now();
        let mut still_live = Vec::with_capacity(live.len());
        let results = call_each(envs, &live, concurrent, |k, env| env.step(&responses[k].text));
        for (((&i, response), (input, ids)), result) in
            live.iter().zip(responses).zip(inputs.into_iter().zip(prompt_ids)).zip(results)
        {
            let result = match result {
                Ok(result) => result,
                Err(err) if is_env_gone(&err) => {
                    rollout.end_by_env_error(i, &err);
                    continue;
                }
                Err(err) => return Err(anyhow::Error::new(err).context(format!("episode {i}, turn {turn_idx}"))),
            };
            let outcome = &mut rollout.episodes[i];
            outcome.turns += 1;
            outcome.invalid += usize::from(!result.valid);
            outcome.total_return += result.reward;
            outcome.score = result.score;
            outcome.won = result.won;
            outcome.done = result.done;
            let shown_action = if result.valid && !result.action.is_empty() {
                result.action.clone()
            } else {
                INVALID_ACTION_NOTE.to_owned()
            };
            let state = &mut states[i];
            state.history.push(HistoryItem { action: shown_action, observation: result.observation.clone() });
            state.observation = result.observation;
            rollout.samples.push(TurnSample {
                traj: i,
                group: specs[i].group,
                turn_idx,
                prompt_ids: ids,
                response_ids: response.token_ids,
                behaviour_logprobs: response.logprobs,
                messages: input.messages,
                response: response.text,
                action: result.action,
                valid: result.valid,
                reward: result.reward,
                expert_response: input.expert_response,
            });
            if !result.done {
                still_live.push(i);
            }
        }
        live = still_live;
        rollout.timing.env_s += clock.elapsed().as_secs_f64();
    }
    // Samples were produced turn by turn across episodes; the trainer wants each trajectory contiguous.
    rollout.samples.sort_by_key(|s| (s.traj, s.turn_idx));
    Ok(rollout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::ExpertPolicy;
    use atod_models::{CpuBackend, SamplingParams, TransformerConfig};

    fn counter_envs(n: usize) -> Vec<Box<dyn Environment>> {
        let plugin = EnvPlugin::bundled(atod_plugin_counter::atod_root_module());
        (0..n).map(|_| plugin.create(&plugin.default_config()).unwrap()).collect()
    }

    /// A random-init student-s policy with a tokenizer trained on counter transcripts.
    pub(crate) fn tiny_policy(max_new_tokens: usize) -> LmPolicy<CpuBackend> {
        let texts = [
            "<think>The counter is below the target.</think><action>inc</action>",
            "<think>The counter shows the target.</think><action>submit</action>",
            "The counter shows 3. Bring the counter to 5, then submit.",
        ];
        let tokenizer = ChatTokenizer::train(texts, 300).unwrap();
        let config = TransformerConfig::student_s(tokenizer.vocab_size());
        let model = config.init::<CpuBackend>(&Default::default()).unwrap();
        let sampling = SamplingParams { max_new_tokens, ..SamplingParams::default() };
        LmPolicy::new("tiny", model, config, tokenizer, sampling, 11).unwrap()
    }

    /// Two groups of three members each on the counter's training split.
    fn group_specs() -> Vec<EpisodeSpec> {
        (0..6)
            .map(|j| EpisodeSpec {
                task: TaskRef { split: "train".into(), index: 4 + j / 3, seed: 9 },
                group: j as usize / 3,
            })
            .collect()
    }

    #[test]
    fn a_language_model_rollout_records_aligned_consecutive_turns() {
        let mut policy = tiny_policy(6);
        let specs = group_specs();
        let mut envs = counter_envs(specs.len());
        let cfg = RenderConfig { max_prompt_tokens: 200, ..RenderConfig::default() };
        let rollout = run_episodes(&mut envs, &specs, &mut policy, &cfg, 4).unwrap();

        assert_eq!(rollout.episodes.len(), 6);
        // A random model almost never writes a valid action, so every episode runs to the turn limit.
        for outcome in &rollout.episodes {
            let turns: Vec<&TurnSample> = rollout.samples.iter().filter(|s| s.traj == outcome.traj).collect();
            assert_eq!(turns.iter().map(|s| s.turn_idx).collect::<Vec<_>>(), (0..outcome.turns).collect::<Vec<_>>());
            let total: f64 = turns.iter().map(|s| s.reward).sum();
            assert!((outcome.total_return - total).abs() < 1e-12);
            assert_eq!(outcome.invalid, turns.iter().filter(|s| !s.valid).count());
            assert_eq!((outcome.group, &outcome.task), (specs[outcome.traj].group, &specs[outcome.traj].task));
            assert!(outcome.turns == 4 || outcome.done, "{outcome:?}");
        }
        for sample in &rollout.samples {
            assert!(!sample.response_ids.is_empty() && sample.response_ids.len() <= 6);
            assert_eq!(sample.response_ids.len(), sample.behaviour_logprobs.len());
            assert!(sample.behaviour_logprobs.iter().all(|lp| lp.is_finite() && *lp <= 0.0));
            assert_eq!(sample.prompt_ids, policy.tokenizer.encode_prompt(&sample.messages));
            assert!(sample.prompt_ids.len() <= 200);
            assert_eq!(sample.group, specs[sample.traj].group);
        }
        assert!(rollout.samples.windows(2).all(|w| (w[0].traj, w[0].turn_idx) < (w[1].traj, w[1].turn_idx)));
        assert!(rollout.timing.generate_s > 0.0 && rollout.timing.env_s > 0.0);
        assert_eq!(rollout.overlong_prompts, 0);
    }

    /// A counter environment that says it waits on I/O, so that the engine calls a batch of them on threads.
    struct Waiting(Box<dyn Environment>);

    impl Environment for Waiting {
        fn info(&self) -> atod_core::EnvInfo {
            self.0.info()
        }
        fn reset(&mut self, split: &str, index: u64, seed: u64) -> atod_core::Result<String> {
            // A little wait, so that the threads interleave.
            std::thread::sleep(std::time::Duration::from_micros(200 * (index % 3)));
            self.0.reset(split, index, seed)
        }
        fn step(&mut self, response: &str) -> atod_core::Result<atod_core::StepResult> {
            self.0.step(response)
        }
        fn admissible_actions(&self) -> atod_core::Result<Vec<String>> {
            self.0.admissible_actions()
        }
        fn expert_action(&self) -> atod_core::Result<Option<String>> {
            self.0.expert_action()
        }
        fn prompt(&self) -> atod_core::Result<PromptPieces> {
            self.0.prompt()
        }
        fn waits_on_io(&self) -> bool {
            true
        }
    }

    #[test]
    fn environments_called_on_threads_give_the_same_rollout() {
        let specs: Vec<EpisodeSpec> = (0..40)
            .map(|j| EpisodeSpec { task: TaskRef { split: "train".into(), index: j, seed: j / 7 }, group: j as usize })
            .collect();
        let cfg = RenderConfig::default();
        for policy in ["expert", "random"] {
            let play = |envs: &mut Vec<Box<dyn Environment>>| {
                let mut policy: Box<dyn Policy> = match policy {
                    "expert" => Box::new(ExpertPolicy),
                    _ => Box::new(crate::policies::RandomPolicy::new(3, atod_core::ActionFormat::ThinkAction)),
                };
                run_episodes_with(envs, &specs, &mut *policy, &cfg, 12).unwrap()
            };
            let one_by_one = play(&mut counter_envs(specs.len()));
            let mut waiting: Vec<Box<dyn Environment>> =
                counter_envs(specs.len()).into_iter().map(|e| Box::new(Waiting(e)) as Box<dyn Environment>).collect();
            let threaded = play(&mut waiting);
            assert_eq!(threaded.samples, one_by_one.samples, "{policy}");
            assert_eq!(threaded.episodes, one_by_one.episodes, "{policy}");
            assert!(one_by_one.samples.len() > specs.len(), "{policy}: episodes of several turns");
        }
    }

    /// DAgger labels: one per turn the model played, each the prompt the model saw and the expert's response in
    /// the state the model had reached (not the expert's own trajectory).
    #[test]
    fn a_labelled_rollout_pairs_each_prompt_the_model_saw_with_the_experts_response() {
        let mut policy = tiny_policy(6);
        let specs = group_specs();
        let cfg = RenderConfig { max_prompt_tokens: 200, ..RenderConfig::default() };
        policy.reseed(7);
        let (rollout, labels) =
            run_episodes_labelled(&mut counter_envs(specs.len()), &specs, &mut policy, &cfg, 3).unwrap();
        assert_eq!(labels.len(), rollout.samples.len());
        for (sample, (messages, label)) in rollout.samples.iter().zip(&labels) {
            assert_eq!(&sample.messages, messages);
            // Replay the model's actions on a fresh environment: the label is the expert's answer there.
            let mut env = counter_envs(1).pop().unwrap();
            let task = &specs[sample.traj].task;
            env.reset(&task.split, task.index, task.seed).unwrap();
            for earlier in rollout.samples.iter().filter(|s| s.traj == sample.traj && s.turn_idx < sample.turn_idx) {
                env.step(&earlier.response).unwrap();
            }
            assert_eq!(Some(label.clone()), env.expert_action().unwrap());
        }
        policy.reseed(7);
        let plain = run_episodes(&mut counter_envs(specs.len()), &specs, &mut policy, &cfg, 3).unwrap();
        let unlabelled: Vec<TurnSample> =
            rollout.samples.iter().map(|s| TurnSample { expert_response: None, ..s.clone() }).collect();
        assert_eq!(plain.samples, unlabelled, "labelling does not change what the model plays");
    }

    #[test]
    fn the_same_seed_gives_the_same_rollout() {
        let specs = group_specs();
        let cfg = RenderConfig::default();
        let mut policy = tiny_policy(5);
        let mut play = |seed| {
            policy.reseed(seed);
            let mut rollout = run_episodes(&mut counter_envs(specs.len()), &specs, &mut policy, &cfg, 3).unwrap();
            rollout.timing = Timing::default();
            rollout
        };
        let (first, again, other) = (play(3), play(3), play(4));
        assert_eq!(first, again);
        assert_ne!(first.samples, other.samples);
    }

    #[test]
    fn text_policies_share_the_loop_and_stop_at_the_turn_limit() {
        let specs = sweep_specs("test", 100, 0, 0..5);
        let cfg = RenderConfig::default();
        let rollout = run_episodes_with(&mut counter_envs(5), &specs, &mut ExpertPolicy, &cfg, 1_000).unwrap();
        assert!(rollout.episodes.iter().all(|o| o.won && o.done && o.invalid == 0));
        assert!(rollout.samples.iter().all(|s| s.prompt_ids.is_empty() && s.valid));
        let last = rollout.samples.iter().rfind(|s| s.traj == 0).unwrap();
        assert_eq!(last.action, "submit");
        // Later prompts repeat the history.
        let second = rollout.samples.iter().find(|s| s.traj == 0 && s.turn_idx == 1).unwrap();
        assert!(second.messages[1].content.contains("[step 1] action: inc"), "{}", second.messages[1].content);

        // Cut off after 2 turns: not done, not won.
        let cut = run_episodes_with(&mut counter_envs(5), &specs, &mut ExpertPolicy, &cfg, 2).unwrap();
        let long = cut.episodes.iter().find(|o| o.turns == 2 && !o.done).expect("a target above 1");
        assert!(!long.won);
        assert!(cut.samples.iter().all(|s| s.turn_idx < 2));
    }

    #[test]
    fn mismatched_envs_and_specs_are_an_error() {
        let specs = sweep_specs("test", 100, 0, 0..3);
        let err = run_episodes_with(&mut counter_envs(2), &specs, &mut ExpertPolicy, &RenderConfig::default(), 5)
            .unwrap_err();
        assert!(err.to_string().contains("2 environments for 3 episodes"), "{err}");
    }

    /// Which call of an environment fails.
    #[derive(Clone, Copy, PartialEq)]
    enum Call {
        Reset,
        Prompt,
        Admissible,
        Step,
    }

    /// A counter environment whose `call` fails with `error` from its `nth` time (from 1) on.
    struct Failing {
        inner: Box<dyn Environment>,
        call: Call,
        nth: usize,
        error: atod_core::Error,
        calls: std::cell::Cell<usize>,
    }

    impl Failing {
        fn boxed(call: Call, nth: usize, error: atod_core::Error) -> Box<dyn Environment> {
            let inner = counter_envs(1).pop().unwrap();
            Box::new(Failing { inner, call, nth, error, calls: std::cell::Cell::new(0) })
        }

        fn check(&self, call: Call) -> atod_core::Result<()> {
            if call != self.call {
                return Ok(());
            }
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() >= self.nth {
                Err(self.error.clone())
            } else {
                Ok(())
            }
        }
    }

    impl Environment for Failing {
        fn info(&self) -> atod_core::EnvInfo {
            self.inner.info()
        }
        fn reset(&mut self, split: &str, index: u64, seed: u64) -> atod_core::Result<String> {
            self.check(Call::Reset)?;
            self.inner.reset(split, index, seed)
        }
        fn step(&mut self, response: &str) -> atod_core::Result<atod_core::StepResult> {
            self.check(Call::Step)?;
            self.inner.step(response)
        }
        fn admissible_actions(&self) -> atod_core::Result<Vec<String>> {
            self.check(Call::Admissible)?;
            self.inner.admissible_actions()
        }
        fn expert_action(&self) -> atod_core::Result<Option<String>> {
            self.inner.expert_action()
        }
        fn prompt(&self) -> atod_core::Result<PromptPieces> {
            self.check(Call::Prompt)?;
            self.inner.prompt()
        }
    }

    fn gone() -> atod_core::Error {
        atod_core::Error::EnvUnavailable {
            server: "http://h:1".into(),
            message: "POST /step: no answer within 30s".into(),
        }
    }

    /// A server that dies mid-episode loses that episode (not won, its rewards so far, the reason kept) while
    /// the others play on; episodes lost before their first turn can be dropped for the trainer.
    #[test]
    fn an_environment_gone_mid_episode_ends_that_episode_and_the_others_play_on() {
        let specs = sweep_specs("test", 100, 0, 0..5);
        let mut envs = counter_envs(5);
        envs[1] = Failing::boxed(Call::Step, 2, gone());
        envs[2] = Failing::boxed(Call::Admissible, 1, gone());
        envs[3] = Failing::boxed(Call::Prompt, 1, gone());
        let mut rollout =
            run_episodes_with(&mut envs, &specs, &mut ExpertPolicy, &RenderConfig::default(), 1_000).unwrap();
        let lost: Vec<usize> = rollout.episodes.iter().filter(|e| e.env_error.is_some()).map(|e| e.traj).collect();
        assert_eq!((lost, rollout.env_errors), (vec![1, 2, 3], 3));
        assert!([0, 4].iter().all(|&i| rollout.episodes[i].won && rollout.episodes[i].done));
        let one = &rollout.episodes[1];
        assert_eq!(
            one.env_error.as_deref(),
            Some("environment unavailable at http://h:1: POST /step: no answer within 30s")
        );
        assert!(!one.won && !one.done && one.turns == 1, "{one:?}");
        assert_eq!(rollout.samples.iter().filter(|s| s.traj == 1).count(), 1);
        assert_eq!(crate::evaluation::summarise(&rollout.episodes).env_errors, 3);
        assert_eq!(crate::pipeline::trainer::rollout_metrics(&rollout)["rollout/env_errors"], 3.0);
        let err = rollout.require_no_env_errors("demonstrations").unwrap_err().to_string();
        assert!(err.starts_with("demonstrations: 3 of 5 episodes ended by an environment error; the first: "));

        let (samples, kept) = (rollout.samples.len(), rollout.episodes[4].clone());
        let dropped = rollout.retain_played();
        assert_eq!(dropped.iter().map(|e| e.traj).collect::<Vec<_>>(), [2, 3]);
        assert_eq!((rollout.episodes.len(), rollout.samples.len(), rollout.env_errors), (3, samples, 3));
        assert_eq!(rollout.episodes[2], EpisodeOutcome { traj: 2, ..kept });
        assert!(rollout.samples.iter().all(|s| rollout.episodes[s.traj].task == specs[s.group].task));
    }

    /// An ordinary environment error stops the rollout as before, and so does a gone environment at reset
    /// (where a remote environment has already tried every server).
    #[test]
    fn ordinary_errors_and_a_gone_environment_at_reset_stop_the_rollout() {
        let specs = sweep_specs("test", 100, 0, 0..2);
        let cases = [
            (Call::Step, atod_core::Error::Environment("bad".into()), "episode 1, turn 0: bad"),
            (Call::Admissible, atod_core::Error::NotReset, "the environment has no episode: call reset first"),
            (Call::Reset, gone(), "episode 1: reset to task 1 of `test` with seed 0: environment unavailable at"),
        ];
        for (call, error, message) in cases {
            let mut envs = counter_envs(1);
            envs.push(Failing::boxed(call, 1, error));
            let err =
                run_episodes_with(&mut envs, &specs, &mut ExpertPolicy, &RenderConfig::default(), 10).unwrap_err();
            assert!(format!("{err:#}").starts_with(message), "{err:#}");
        }
    }

    #[test]
    fn sweeps_cycle_tasks_with_fresh_seeds() {
        let specs = sweep_specs("test", 3, 10, 2..5);
        let tasks: Vec<(u64, u64, usize)> = specs.iter().map(|s| (s.task.index, s.task.seed, s.group)).collect();
        assert_eq!(tasks, [(2, 10, 2), (0, 11, 3), (1, 11, 4)]);
    }
}
