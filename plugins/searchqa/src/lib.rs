//! `searchqa`: Search-R1-style question answering with a search tool over a generated encyclopedia.
//!
//! Follows Search-R1 (Jin et al., 2025, "Search-R1: Training LLMs to Reason and Leverage Search Engines with
//! Reinforcement Learning", github.com/PeterGriffinJin/Search-R1): the same instruction prompt, the first
//! `<search>q</search>` or `<answer>a</answer>` of a response as the action, the top 3 passages formatted as
//! `Doc i(Title: ...) text` inside `<information>...</information>`, the same invalid-action text, exact match
//! after Search-R1's answer normalisation as the reward, and at most 4 turns.
//!
//! Deviations from the original, all because its data cannot be used here:
//! - The corpus is a generated encyclopedia of 21,440 fictional entities (countries, cities, organisations,
//!   people, films and novels), one multi-paragraph passage each, instead of the 21M-passage 2018 Wikipedia dump.
//! - Retrieval is BM25 (Search-R1's sparse baseline, Pyserini's k1 = 0.9, b = 0.4) instead of the E5 dense
//!   retriever, implemented in this crate (see `retrieval`).
//! - Questions are generated from templates: single-hop (as NQ), bridge and comparison (as HotpotQA); the train
//!   and test splits replace NQ/HotpotQA's, and test answers' entities never occur in train questions.
//! - The question is the task and the instruction the system text ([`atod_core::PromptPieces`]), where Search-R1
//!   puts both in one user message; the question line is Search-R1's `Question: {question}?`.
//! - Rewards follow verl-agent's shaping of the environment: 1 for a correct answer, 0 otherwise, and -0.01 for
//!   each invalid response (Search-R1 itself gives no penalty). An invalid response uses up a turn, as there.
//! - The observation after an answer is empty, as Search-R1 appends nothing after the final answer. The seed
//!   does not change a task: a question is fixed by (split, index), as a dataset row is.

mod expert;
mod kb;
mod questions;
mod retrieval;
mod reward;
mod text;

use std::sync::OnceLock;

use atod_core::{
    extract_search_or_answer, ActionFormat, EnvInfo, Environment, Error, PromptPieces, SearchOrAnswer, SplitInfo,
    StepResult,
};
use atod_envs::PluginEnvironment;
use serde::{Deserialize, Serialize};

pub use questions::{QuestionType, SPLITS};
pub use reward::{exact_match, normalize_answer};
pub use text::{INSTRUCTION, INVALID_ACTION};

/// The reward (a penalty) of an invalid response.
pub const INVALID_PENALTY: f64 = -0.01;

/// The plugin's config; every key is optional and defaults to Search-R1's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchQaConfig {
    /// Responses per episode (searches, answers and invalid responses alike) before it is cut off unanswered.
    pub max_turns: u32,
    /// Passages a search returns.
    pub top_k: usize,
    /// BM25's term-frequency saturation.
    pub bm25_k1: f64,
    /// BM25's length normalisation, from 0 to 1.
    pub bm25_b: f64,
}

impl Default for SearchQaConfig {
    fn default() -> Self {
        Self { max_turns: 4, top_k: 3, bm25_k1: 0.9, bm25_b: 0.4 }
    }
}

/// The environment.
#[derive(Debug)]
pub struct SearchQaEnv {
    config: SearchQaConfig,
    world: &'static World,
    episode: Option<Episode>,
}

/// The encyclopedia and its index, built once per process and shared by every environment.
#[derive(Debug)]
struct World {
    kb: kb::Kb,
    index: retrieval::Bm25Index,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let kb = kb::Kb::generate();
        let index = retrieval::Bm25Index::build(kb.passages.iter().map(|p| format!("{}\n{}", p.title, p.text)));
        World { kb, index }
    })
}

#[derive(Debug)]
struct Episode {
    question: questions::Question,
    /// Every passage a search of this episode returned, in order.
    retrieved: Vec<usize>,
    /// The passages of the latest search.
    last: Vec<usize>,
    turns: u32,
    done: bool,
}

impl SearchQaEnv {
    fn episode(&self) -> atod_core::Result<&Episode> {
        self.episode.as_ref().ok_or(Error::NotReset)
    }

    fn search(&self, query: &str) -> Vec<usize> {
        let params = retrieval::Bm25Params { k1: self.config.bm25_k1 as f32, b: self.config.bm25_b as f32 };
        self.world.index.search(query, self.config.top_k, params)
    }
}

impl PluginEnvironment for SearchQaEnv {
    const NAME: &'static str = "searchqa";

    fn default_config() -> String {
        toml::to_string(&SearchQaConfig::default()).expect("the default config serialises")
    }

    fn create(config_toml: &str) -> Result<Self, String> {
        let config: SearchQaConfig = toml::from_str(config_toml).map_err(|e| format!("searchqa config: {e}"))?;
        use atod_core::config::check_bounds;
        // Search-R1 uses 4 turns, top 3 passages, k1 0.9 and b 0.4.
        check_bounds("searchqa", "max_turns", config.max_turns, 1, 100)?;
        check_bounds("searchqa", "top_k", config.top_k, 1, 10)?;
        check_bounds("searchqa", "bm25_k1", config.bm25_k1, 0.0, 100.0)?;
        check_bounds("searchqa", "bm25_b", config.bm25_b, 0.0, 1.0)?;
        Ok(Self { config, world: world(), episode: None })
    }
}

impl Environment for SearchQaEnv {
    fn info(&self) -> EnvInfo {
        EnvInfo {
            name: Self::NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Search-R1-style question answering: search a generated encyclopedia of 21,440 passages \
                          (BM25, top 3) with <search>query</search> and reply with <answer>...</answer> within 4 \
                          turns. Single-hop, bridge and comparison questions. Reward 1 for an exact-match answer, \
                          -0.01 per invalid response."
                .into(),
            splits: SPLITS.iter().map(|&(name, size)| SplitInfo::new(name, size)).collect(),
            action_format: ActionFormat::SearchAnswer,
        }
    }

    fn reset(&mut self, split: &str, index: u64, _seed: u64) -> atod_core::Result<String> {
        self.info().check_task(split, index)?;
        let split_idx = SPLITS.iter().position(|&(name, _)| name == split).unwrap_or(0);
        let question = questions::question(&self.world.kb, split_idx, index);
        let observation = text::question_line(&question.text);
        self.episode = Some(Episode { question, retrieved: Vec::new(), last: Vec::new(), turns: 0, done: false });
        Ok(observation)
    }

    fn step(&mut self, response: &str) -> atod_core::Result<StepResult> {
        let episode = self.episode.as_ref().ok_or(Error::NotReset)?;
        if episode.done {
            return Err(Error::EpisodeOver);
        }
        let mut result = StepResult::continuing();
        let mut found = None;
        match extract_search_or_answer(response) {
            Ok(SearchOrAnswer::Search(query)) => {
                let ids = self.search(&query);
                let passages: Vec<_> = ids.iter().map(|&i| &self.world.kb.passages[i]).collect();
                result.observation = text::information(&passages);
                result.action = format!("<search>{query}</search>");
                found = Some(ids);
            }
            Ok(SearchOrAnswer::Answer(answer)) => {
                result.won = exact_match(&answer, &episode.question.answers);
                result.done = true;
                result.action = format!("<answer>{answer}</answer>");
            }
            Err(_) => {
                result.valid = false;
                result.reward = INVALID_PENALTY;
                result.observation = INVALID_ACTION.to_owned();
            }
        }
        if result.won {
            result.reward = reward::SUCCESS_REWARD;
            result.score = 1.0;
        }
        let max_turns = self.config.max_turns;
        let episode = self.episode.as_mut().ok_or(Error::NotReset)?;
        if let Some(ids) = found {
            episode.retrieved.extend_from_slice(&ids);
            episode.last = ids;
        }
        episode.turns += 1;
        result.done |= episode.turns >= max_turns;
        episode.done = result.done;
        Ok(result)
    }

    fn admissible_actions(&self) -> atod_core::Result<Vec<String>> {
        // Search-R1's action space is open text; this list offers searching the question, and searching or
        // answering any entity the latest passages name (titles included). Guessing among these rarely succeeds.
        let episode = self.episode()?;
        let kb = &self.world.kb;
        let mut actions = vec![format!("<search>{}</search>", episode.question.text)];
        for &id in &episode.last {
            let passage = &kb.passages[id];
            actions.push(format!("<search>{}</search>", passage.title));
            actions.push(format!("<answer>{}</answer>", passage.title));
            for &entity in &passage.mentions {
                actions.push(format!("<search>{}</search>", kb.name(entity)));
                actions.push(format!("<answer>{}</answer>", kb.name(entity)));
            }
        }
        actions.sort();
        actions.dedup();
        Ok(actions)
    }

    fn expert_action(&self) -> atod_core::Result<Option<String>> {
        let episode = self.episode()?;
        let retrieved: Vec<_> = episode.retrieved.iter().map(|&i| &self.world.kb.passages[i]).collect();
        Ok(Some(expert::respond(&episode.question, &retrieved)))
    }

    fn prompt(&self) -> atod_core::Result<PromptPieces> {
        let episode = self.episode()?;
        Ok(PromptPieces { system: INSTRUCTION.to_owned(), task: text::question_line(&episode.question.text) })
    }

    fn task_type(&self) -> atod_core::Result<Option<String>> {
        Ok(Some(self.episode()?.question.kind.name().to_owned()))
    }
}

atod_envs::export_environment!(SearchQaEnv);

#[cfg(test)]
mod tests;
