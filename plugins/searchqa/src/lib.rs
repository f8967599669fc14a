//! `searchqa`: Search-R1-style question answering with a search tool over a generated encyclopedia.
//!
//! Search-QA has two originals that differ, and the config's `protocol` picks whose loop an episode follows (see
//! `protocol` for the rules of each, with file paths):
//!
//! - `protocol = "verl-agent"` (the default): the setting the ATOD paper trains in, langfengQ/verl-agent's search
//!   environment (SkyRL-gym's `SearchEnv` under `agent_system/environments/env_package/search`, the search branch
//!   of `env_manager.py`, `prompts/search.py`, `examples/gigpo_trainer/run_search.sh`). Follows its prompt
//!   (`SEARCH_TEMPLATE_NO_HIS`, the question once), its projection of a response to `<search>q</search>` or
//!   `<answer>a</answer>` and which responses it counts invalid, its observation after a search
//!   (`<information>{"result": "Doc 1: \"title\"\ntext\n..."}</information>`, the results JSON-encoded), an
//!   empty observation after an invalid response, the end of the episode at an answer or at `max_turns` = 4
//!   responses (a search in the last one is not run), the reward (exact match of the last answer in its chat
//!   history: 1 or 0) and the penalty of 0.01 per invalid response.
//! - `protocol = "search-r1"`: PeterGriffinJin/Search-R1's own loop (`search_r1/llm_agent/generation.py`):
//!   instruction and question in one message (`scripts/data_process/nq_search.py`), the first
//!   `<search>q</search>` or `<answer>a</answer>` of the response, results as
//!   `\n\n<information>Doc 1(Title: "title") text\n...</information>\n\n`, its invalid-action text, `max_turns`
//!   turns with search and then one final response without search, exact match of the last answer in the whole
//!   sequence (`verl/utils/reward_score/qa_em.py`) and no penalty.
//!
//! Both retrieve the top 3 passages and normalise answers alike (`reward`). Where the plugin interface stops
//! short of an original: the renderer (atod-cli) always sends a system message, here empty, where both originals
//! send none (so a Qwen chat template would add its default one); it renders the earlier turns in its own words
//! after the whole user message, where verl-agent re-renders its template with "Prior to this step, you have
//! already taken N step(s)..." and the last 4 steps between the question and the instructions, and Search-R1
//! appends each response and observation to one growing sequence; it always writes "Current observation (step
//! N):", which on the first turn is empty; and it keeps each response whole, where Search-R1 trains on the response
//! cut after its first `</search>` or `</answer>`.
//!
//! Deviations from both originals, all because their data cannot be used here:
//! - The corpus is a generated encyclopedia of 21,440 fictional entities (countries, cities, organisations,
//!   people, films and novels), one multi-paragraph passage each, instead of the 21M-passage 2018 Wikipedia dump;
//!   a passage's `contents` is `"title"`, a newline and the text, as that dump's are.
//! - Retrieval is BM25 (Search-R1's sparse baseline, Pyserini's k1 = 0.9, b = 0.4) instead of the E5 dense
//!   retriever, implemented in this crate (see `retrieval`). Like E5, it returns `top_k` passages for every query:
//!   passages sharing no term with the query fill the places BM25 leaves empty.
//! - Questions are generated from templates: single-hop (as NQ), bridge and comparison (as HotpotQA); the train
//!   and test splits replace NQ/HotpotQA's, and test answers' entities never occur in train questions. The seed
//!   does not change a task: a question is fixed by (split, index), as a dataset row is.
//!
//! Keys that leave both originals, for models too small to imitate the faithful setting (all off by default):
//! `question_types` plays a sub-split of one or two question types; `passages = "facts"` shows each retrieved
//! passage as its first paragraph only; `information = "plain"` writes results one line per passage, unescaped;
//! `instruction = "brief"` shortens the instruction; `expert_thoughts` (`"short"`, `"quote"`) and `expert_spaces`
//! change only the wording of the expert's responses.
//! With `top_k = 1` (a key both originals have) they bring every prompt of an episode under 400 tokens of a
//! 1,024-token BPE (under 270 with the brief instruction), where the faithful passages overflow a 512-token budget
//! and the fitted prompt loses the passages a comparison or a second hop needs.

mod expert;
mod kb;
mod protocol;
mod questions;
mod retrieval;
mod reward;
mod tags;
mod text;

use std::sync::OnceLock;

use atod_core::{ActionFormat, EnvInfo, Environment, Error, PromptPieces, SplitInfo, StepResult};
use atod_envs::PluginEnvironment;
use serde::{Deserialize, Serialize};

pub use expert::Thoughts;
pub use protocol::Protocol;
pub use questions::{QuestionType, SPLITS};
pub use reward::{exact_match, normalize_answer};
pub use text::{INSTRUCTION, INVALID_ACTION};

/// verl-agent's penalty of an invalid response (`invalid_action_penalty_coef=0.01` in its `run_search.sh`);
/// Search-R1 has none.
pub const INVALID_PENALTY: f64 = -0.01;

/// The plugin's config; every key is optional and defaults to verl-agent's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchQaConfig {
    /// Whose loop to follow: `"verl-agent"` (the ATOD paper's setting) or `"search-r1"`.
    pub protocol: Protocol,
    /// verl-agent: responses per episode (its `env.max_steps`), the last of which can answer but not search.
    /// search-r1: searching turns before the one final response without search (its `max_turns`; Search-R1's
    /// training scripts use 2), so an episode has up to `max_turns + 1` responses.
    pub max_turns: u32,
    /// Passages a search returns.
    pub top_k: usize,
    /// BM25's term-frequency saturation.
    pub bm25_k1: f64,
    /// BM25's length normalisation, from 0 to 1.
    pub bm25_b: f64,
    /// The question types played (faithful: all three). A split then holds its own questions of these types, in
    /// their order: `test` with `["single-hop"]` is its 500 single-hop questions (tasks 0, 3, 6, ... of the whole
    /// split), and the split sizes shrink to match. Names: `single-hop`, `bridge`, `comparison`, each at most once
    /// and in that order.
    pub question_types: Vec<QuestionType>,
    /// How a retrieved passage is shown (and read by the expert): `"full"` (faithful: the whole passage) or
    /// `"facts"` (its first paragraph, the sentences about its own title; see `text::facts_passage`). Retrieval
    /// still ranks the whole passages, so a query returns the same passages either way.
    pub passages: PassageForm,
    /// How search results are written: `"original"` (faithful: the protocol's own form) or `"plain"`
    /// (`text::plain_information`: one line per passage, nothing escaped, in both protocols).
    pub information: InformationForm,
    /// The user message: `"original"` (faithful: the protocol's instruction and the question) or `"brief"`
    /// (`text::brief_prompt`: the same request in two lines, about 40 tokens where verl-agent's takes 180).
    pub instruction: Instruction,
    /// The expert's thoughts: `"full"` (faithful to this crate's expert so far), `"short"` or `"quote"` (see
    /// [`Thoughts`]).
    pub expert_thoughts: Thoughts,
    /// Whether the expert writes `<think> t </think>`, `<search> X </search>` and `<answer> X </answer>` (both
    /// protocols strip the spaces) instead of `<search>X</search>` (see `expert::Style`).
    pub expert_spaces: bool,
}

/// How a retrieved passage is shown; see [`SearchQaConfig::passages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassageForm {
    #[default]
    Full,
    Facts,
}

/// The user message; see [`SearchQaConfig::instruction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Instruction {
    #[default]
    Original,
    Brief,
}

/// How search results are written; see [`SearchQaConfig::information`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InformationForm {
    #[default]
    Original,
    Plain,
}

impl Default for SearchQaConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::VerlAgent,
            max_turns: 4,
            top_k: 3,
            bm25_k1: 0.9,
            bm25_b: 0.4,
            question_types: QuestionType::ALL.to_vec(),
            passages: PassageForm::Full,
            information: InformationForm::Original,
            instruction: Instruction::Original,
            expert_thoughts: Thoughts::Full,
            expert_spaces: false,
        }
    }
}

/// The environment.
#[derive(Debug)]
pub struct SearchQaEnv {
    config: SearchQaConfig,
    selection: questions::Selection,
    world: &'static World,
    episode: Option<Episode>,
}

/// The encyclopedia and its index, built once per process and shared by every environment.
#[derive(Debug)]
struct World {
    kb: kb::Kb,
    index: retrieval::Bm25Index,
    /// The passages cut to their first paragraph (`passages = "facts"`), by passage id.
    facts: Vec<kb::Passage>,
}

impl World {
    /// The passages as `form` shows them, by passage id.
    fn passages(&self, form: PassageForm) -> &[kb::Passage] {
        match form {
            PassageForm::Full => &self.kb.passages,
            PassageForm::Facts => &self.facts,
        }
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let kb = kb::Kb::generate();
        let index = retrieval::Bm25Index::build(kb.passages.iter().map(|p| format!("{}\n{}", p.title, p.text)));
        let facts = kb.passages.iter().map(|p| text::facts_passage(&kb, p)).collect();
        World { kb, index, facts }
    })
}

#[derive(Debug)]
struct Episode {
    question: questions::Question,
    /// The user message of every turn.
    prompt: String,
    /// The text the reward reads: what the original accumulates over the episode (see `protocol`).
    transcript: String,
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

    /// "Single-hop, bridge and comparison", or the types the config keeps.
    fn question_types_text(&self) -> String {
        let names: Vec<&str> = self.config.question_types.iter().map(|t| t.name()).collect();
        let text = match names.as_slice() {
            [] => String::new(),
            [one] => (*one).to_owned(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        };
        let mut chars = text.chars();
        chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
    }
}

/// The top passages for `query` under `config`'s retrieval settings.
fn search(world: &World, config: &SearchQaConfig, query: &str) -> Vec<usize> {
    let params = retrieval::Bm25Params { k1: config.bm25_k1 as f32, b: config.bm25_b as f32 };
    world.index.search(query, config.top_k, params)
}

impl PluginEnvironment for SearchQaEnv {
    const NAME: &'static str = "searchqa";

    fn default_config() -> String {
        toml::to_string(&SearchQaConfig::default()).expect("the default config serialises")
    }

    fn create(config_toml: &str) -> Result<Self, String> {
        let config: SearchQaConfig = toml::from_str(config_toml).map_err(|e| format!("searchqa config: {e}"))?;
        use atod_core::config::check_bounds;
        // verl-agent's run_search.sh uses 4 steps; both originals retrieve the top 3; Pyserini's BM25 has k1 0.9
        // and b 0.4.
        check_bounds("searchqa", "max_turns", config.max_turns, 1, 100)?;
        check_bounds("searchqa", "top_k", config.top_k, 1, 10)?;
        check_bounds("searchqa", "bm25_k1", config.bm25_k1, 0.0, 100.0)?;
        check_bounds("searchqa", "bm25_b", config.bm25_b, 0.0, 1.0)?;
        if config.question_types.is_empty() {
            return Err("searchqa config: question_types must name at least one question type".into());
        }
        if !config.question_types.windows(2).all(|w| w[0] < w[1]) {
            return Err("searchqa config: question_types must name each type at most once, in the order \
                        single-hop, bridge, comparison"
                .into());
        }
        let selection = questions::Selection::new(&config.question_types);
        Ok(Self { config, selection, world: world(), episode: None })
    }
}

impl Environment for SearchQaEnv {
    fn info(&self) -> EnvInfo {
        let rules = self.config.protocol.rules();
        EnvInfo {
            name: Self::NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!(
                "Search-R1-style question answering in {}'s loop: search a generated encyclopedia of 21,440 \
                 passages (BM25, top {}) with <search>query</search> and reply with <answer>...</answer> within {} \
                 responses. {} questions. Reward 1 for an exact-match answer; {}.",
                rules.name(),
                self.config.top_k,
                rules.max_responses(self.config.max_turns),
                self.question_types_text(),
                match rules.invalid_penalty() {
                    0.0 => "no penalty for an invalid response".to_owned(),
                    penalty => format!("{penalty} per invalid response"),
                },
            ),
            splits: SPLITS.iter().map(|&(name, size)| SplitInfo::new(name, self.selection.size(size))).collect(),
            action_format: ActionFormat::SearchAnswer,
        }
    }

    fn reset(&mut self, split: &str, index: u64, _seed: u64) -> atod_core::Result<String> {
        self.info().check_task(split, index)?;
        let split_idx = SPLITS.iter().position(|&(name, _)| name == split).unwrap_or(0);
        let question = questions::question(&self.world.kb, split_idx, self.selection.split_index(index));
        let rules = self.config.protocol.rules();
        let prompt = match self.config.instruction {
            Instruction::Original => rules.prompt(&question.text),
            Instruction::Brief => text::brief_prompt(&question.text),
        };
        let transcript = rules.transcript_start(&prompt);
        self.episode = Some(Episode {
            question,
            prompt,
            transcript,
            retrieved: Vec::new(),
            last: Vec::new(),
            turns: 0,
            done: false,
        });
        // The question is in the prompt's user message; neither original observes anything before the first
        // response.
        Ok(String::new())
    }

    fn step(&mut self, response: &str) -> atod_core::Result<StepResult> {
        let rules = self.config.protocol.rules();
        let episode = self.episode.as_mut().ok_or(Error::NotReset)?;
        if episode.done {
            return Err(Error::EpisodeOver);
        }
        episode.turns += 1;
        let step = rules.read(response, episode.turns, self.config.max_turns);
        episode.transcript += &step.transcript;
        let mut result = StepResult::continuing();
        if let Some(query) = &step.query {
            let ids = search(self.world, &self.config, query);
            let shown_passages = self.world.passages(self.config.passages);
            let passages: Vec<_> = ids.iter().map(|&i| &shown_passages[i]).collect();
            let (recorded, shown) = match self.config.information {
                InformationForm::Original => rules.information(&passages),
                InformationForm::Plain => {
                    let plain = text::plain_information(&passages);
                    (plain.clone(), plain)
                }
            };
            episode.transcript += &recorded;
            result.observation = shown;
            episode.retrieved.extend_from_slice(&ids);
            episode.last = ids;
        } else if !step.done {
            result.observation = rules.no_search(step.valid);
        }
        if step.done {
            let correct =
                rules.final_answer(&episode.transcript).is_some_and(|a| exact_match(a, &episode.question.answers));
            result.won = correct;
            result.score = if correct { 1.0 } else { 0.0 };
            result.reward = if correct { reward::SUCCESS_REWARD } else { 0.0 };
        }
        if !step.valid {
            result.reward += rules.invalid_penalty();
        }
        result.valid = step.valid;
        result.done = step.done;
        result.action = step.action;
        episode.done = step.done;
        Ok(result)
    }

    fn admissible_actions(&self) -> atod_core::Result<Vec<String>> {
        // Search-R1's action space is open text; this list offers searching the question, and searching or
        // answering any entity the latest passages name (titles included). Guessing among these rarely succeeds.
        let episode = self.episode()?;
        let kb = &self.world.kb;
        let shown = self.world.passages(self.config.passages);
        let mut actions = vec![format!("<search>{}</search>", episode.question.text)];
        for &id in &episode.last {
            let passage = &shown[id];
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
        let shown = self.world.passages(self.config.passages);
        let retrieved: Vec<_> = episode.retrieved.iter().map(|&i| &shown[i]).collect();
        let style = expert::Style { thoughts: self.config.expert_thoughts, spaces: self.config.expert_spaces };
        Ok(Some(expert::respond(&episode.question, &retrieved, style)))
    }

    fn prompt(&self) -> atod_core::Result<PromptPieces> {
        // Both originals send one user message and no system message of their own (the chat template's default
        // one aside), so the system text is empty and the task is the whole message.
        Ok(PromptPieces { system: String::new(), task: self.episode()?.prompt.clone() })
    }

    fn task_type(&self) -> atod_core::Result<Option<String>> {
        Ok(Some(self.episode()?.question.kind.name().to_owned()))
    }
}

atod_envs::export_environment!(SearchQaEnv);

#[cfg(test)]
mod tests;
