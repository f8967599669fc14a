//! `counter`: the smallest complete atod environment, bundled with atod and the example of README.md.
//!
//! The agent starts at 0 and must bring a counter to a target number, then submit it. Actions are `inc`, `dec`
//! and `submit`, written as `<think>...</think><action>inc</action>`. Reward: 10 for submitting the target,
//! -0.1 for each invalid response; submitting another number ends the episode unsolved.

use atod_core::{
    extract_think_action, ActionFormat, EnvInfo, Environment, Error, PromptPieces, SplitInfo, SplitMix64, StepResult,
};
use atod_envs::PluginEnvironment;
use serde::{Deserialize, Serialize};

/// The plugin's config; every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CounterConfig {
    /// Targets are drawn from 1..=max_target.
    pub max_target: u64,
    /// Steps before the episode is cut off.
    pub max_steps: u32,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self { max_target: 9, max_steps: 20 }
    }
}

/// The environment.
#[derive(Debug)]
pub struct CounterEnv {
    config: CounterConfig,
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    target: u64,
    value: u64,
    steps: u32,
    done: bool,
}

const SPLITS: [(&str, u64); 2] = [("train", 1000), ("test", 100)];

impl PluginEnvironment for CounterEnv {
    const NAME: &'static str = "counter";

    fn default_config() -> String {
        toml::to_string(&CounterConfig::default()).expect("the default config serialises")
    }

    fn create(config_toml: &str) -> Result<Self, String> {
        let config: CounterConfig = toml::from_str(config_toml).map_err(|e| format!("counter config: {e}"))?;
        atod_core::config::check_bounds("counter", "max_target", config.max_target, 1, 1_000_000)?;
        atod_core::config::check_bounds("counter", "max_steps", config.max_steps, 1, 1000)?;
        Ok(Self { config, episode: None })
    }
}

impl Environment for CounterEnv {
    fn info(&self) -> EnvInfo {
        EnvInfo {
            name: Self::NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Bring a counter from 0 to a target with inc/dec, then submit. Reward 10 on success, \
                          -0.1 per invalid response."
                .into(),
            splits: SPLITS.iter().map(|&(name, size)| SplitInfo::new(name, size)).collect(),
            action_format: ActionFormat::ThinkAction,
        }
    }

    fn reset(&mut self, split: &str, index: u64, seed: u64) -> atod_core::Result<String> {
        self.info().check_task(split, index)?;
        // Deterministic in (split, index, seed): the splits draw from disjoint streams.
        let stream = SPLITS.iter().position(|&(name, _)| name == split).unwrap_or(0) as u64;
        let target = 1 + SplitMix64::for_task(stream, index, seed).below(self.config.max_target);
        self.episode = Some(Episode { target, value: 0, steps: 0, done: false });
        Ok("The counter shows 0.".into())
    }

    fn step(&mut self, response: &str) -> atod_core::Result<StepResult> {
        let max_steps = self.config.max_steps;
        let episode = self.episode.as_mut().ok_or(Error::NotReset)?;
        if episode.done {
            return Err(Error::EpisodeOver);
        }
        episode.steps += 1;
        let mut result = StepResult::continuing();
        let action = extract_think_action(response, true);
        match action.as_deref() {
            Ok("inc") => episode.value += 1,
            Ok("dec") => episode.value = episode.value.saturating_sub(1),
            Ok("submit") => {
                result.done = true;
                result.won = episode.value == episode.target;
            }
            _ => result.valid = false,
        }
        if result.valid {
            result.action = action.unwrap_or_default();
            result.observation = format!("The counter shows {}.", episode.value);
        } else {
            result.reward = -0.1;
            result.observation = "Invalid response. Think in <think>...</think>, then act with <action>inc</action>, \
                 <action>dec</action> or <action>submit</action>."
                .into();
        }
        if result.won {
            result.reward = 10.0;
            result.score = 1.0;
        }
        result.done |= episode.steps >= max_steps;
        episode.done = result.done;
        Ok(result)
    }

    fn admissible_actions(&self) -> atod_core::Result<Vec<String>> {
        self.episode.as_ref().ok_or(Error::NotReset)?;
        Ok(vec!["dec".into(), "inc".into(), "submit".into()])
    }

    fn expert_action(&self) -> atod_core::Result<Option<String>> {
        let episode = self.episode.as_ref().ok_or(Error::NotReset)?;
        let (thought, action) = match episode.value.cmp(&episode.target) {
            std::cmp::Ordering::Less => ("below the target", "inc"),
            std::cmp::Ordering::Greater => ("above the target", "dec"),
            std::cmp::Ordering::Equal => ("at the target", "submit"),
        };
        Ok(Some(format!("<think>The counter is {thought}.</think><action>{action}</action>")))
    }

    fn prompt(&self) -> atod_core::Result<PromptPieces> {
        let episode = self.episode.as_ref().ok_or(Error::NotReset)?;
        Ok(PromptPieces {
            system: "You operate a counter. Reason inside <think>...</think>, then give exactly one action inside \
                     <action>...</action>: inc, dec or submit."
                .into(),
            task: format!("Your task is to: bring the counter to {} and submit it.", episode.target),
        })
    }
}

atod_envs::export_environment!(CounterEnv);

#[cfg(test)]
mod tests;
