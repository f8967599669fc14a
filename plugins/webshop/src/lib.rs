//! `webshop`: a WebShop-faithful shopping environment (Yao et al., "WebShop: Towards Scalable Real-World Web
//! Interaction with Grounded Language Agents", NeurIPS 2022; github.com/princeton-nlp/WebShop), in the text
//! observation mode and with verl-agent's response format and rewards.
//!
//! The agent reads an instruction ("i need a heat resistant hair extension with color: dark brown, and price lower
//! than 40.00 dollars"), searches a catalogue with `search[query]`, clicks through results, item pages and their
//! sub-pages with `click[x]`, selects option values and buys with `click[buy now]`, which ends the episode with
//! WebShop's reward. Success is reward == 1.0 (scored 10), episodes last at most 15 steps. Modules: `catalogue`
//! (world generation and goals), `search` (BM25), `pages` (page text and clickables), `actions` (parsing),
//! `reward` (WebShop's reward), `expert`, and `visible` (an expert that decides from the prompt's text alone, for
//! imitation by small models: config `expert = "visible"`).
//!
//! Steps, as WebShop's text env (web_agent_site/envs/web_agent_text_env.py, `WebAgentTextEnv.step`) plays them
//! under verl-agent (agent_system/environments/env_package/webshop/projection.py):
//! - A response without `<action>...</action>` or `<think>...</think>`, or with CJK characters, is invalid (as
//!   verl-agent's `webshop_projection`): it costs `invalid_reward` (-0.1) and the observation is the unchanged page.
//! - A well-formed action the page cannot perform (`click[x]` where x is not a clickable of the page, or text that
//!   is not `search[...]` / `click[...]` by WebShop's pattern `(.+)\[(.+)\]`) is a valid step that does nothing:
//!   the page stays and the reward is 0, as `WebAgentTextEnv.step` answers it (`status = dict(reward=0,
//!   done=False)` and the current observation). The config key `explain_invalid_actions` answers both kinds with
//!   atod's explanation instead; it is off by default.
//! - `search[query]` works on every page, with any argument the pattern matches (white space too, which finds
//!   nothing), since `WebAgentTextEnv.step` searches whenever `action_arg != ''` without looking for a search bar.
//! - `click[buy now]` shows done_page.html as the text env renders it, fields that the text env leaves unset
//!   showing `None` (`pages::done_page`).
//!
//! Deviations from the original, and why:
//! - The catalogue is generated (1000 products of 16 product types over WebShop's five top categories), since the
//!   real product data cannot be downloaded here; goals are WebShop's synthetic goals over it (about 6,900), not
//!   its crowd-written human instructions. Instruction texts come from templates.
//! - Nouns for r_type come from the catalogue (head nouns and brand names as proper nouns), not from spaCy.
//! - Search is our own BM25 with pyserini's parameters, not Lucene: tokenisation is lower-cased alphanumeric runs
//!   without stemming. A query without letters or digits finds nothing, as Lucene's empty query does. WebShop's
//!   debugging prefixes (`search[<r> ...]` for 50 random products, `<c>`, `<q>`, `<a>` for a category, a query or
//!   an attribute) are not implemented: they are ordinary words here.
//! - The reviews sub-page is empty (every product is rated N.A.).
//! - An invalid (malformed) response changes nothing, where verl-agent still hands the env the text inside
//!   `<action>...</action>` (or the response's last 20 characters when the tags are missing) and only adds the
//!   penalty: atod-core's `StepResult` promises that an invalid step leaves the world unchanged, for every
//!   environment alike.
//! - Train tasks are drawn by WebShop's goal weights (favouring rare attributes) from (index, seed) when
//!   `weighted_train` is on; test and eval tasks are the goals at their indices, as in WebShop.

pub mod actions;
pub mod catalogue;
pub mod expert;
pub mod pages;
pub mod reward;
mod rng;
pub mod search;
pub mod visible;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use atod_core::{
    clip_echo, extract_think_action, ActionFormat, EnvInfo, Environment, Error, InvalidAction, PromptPieces, SplitInfo,
    StepResult,
};
use atod_envs::PluginEnvironment;
use serde::{Deserialize, Serialize};

use crate::actions::{parse, Action, ParseError};
use crate::catalogue::{Catalogue, Goal};
use crate::pages::{Page, SubPage, View};
use crate::rng::{mix, Rng};

/// The plugin's config; every key is optional and defaults to the faithful value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebShopConfig {
    /// Seed of the generated catalogue and of its goals' price caps.
    pub catalogue_seed: u64,
    /// Products in the catalogue (WebShop's common subset has 1000); at least 300, so that every split has goals.
    pub n_products: usize,
    /// Seed of the goal shuffle that fixes the splits (WebShop seeds Python's `random` with 233).
    pub goal_shuffle_seed: u64,
    /// Steps per episode before it is cut off (verl-agent: 15).
    pub max_steps: u32,
    /// Results a search keeps (WebShop: the top 50, 10 per page).
    pub top_k: usize,
    /// Results shown per results page (WebShop: 10). Fewer is a CPU-scale simplification, not WebShop: with one
    /// result a page, opening a product is a copy of the only ASIN listed, where a model that has not learnt to
    /// pick one of ten look-alike `B0...` codes by its position cannot open any (FIDELITY.md).
    pub results_per_page: usize,
    /// Reward for a purchase with WebShop reward 1.0 (verl-agent: 10).
    pub success_reward: f64,
    /// Reward for an invalid response: no `<action>...</action>` or `<think>...</think>`, or CJK characters
    /// (verl-agent's invalid-action penalty: -0.1). A well-formed action the page cannot perform earns 0.
    pub invalid_reward: f64,
    /// Whether train task (index, seed) draws a goal by WebShop's weights instead of taking goal `index`.
    pub weighted_train: bool,
    /// Whether a malformed response, or an action the page cannot perform, is answered with atod's explanation
    /// (what was wrong and what the page offers) instead of the unchanged page, which is what WebShop shows.
    /// Off by default: the explanation is extra help the original agents never had. Rewards are the same
    /// either way.
    pub explain_invalid_actions: bool,
    /// Which expert `expert_action` plays (demonstrations, `--policy expert`): `faithful` (the default) knows the
    /// target product and every product's hidden attributes, options and paid price; `visible` decides from
    /// the current page's text and the last two actions alone ([`visible`]), so that a model can imitate it,
    /// and the admissible actions then offer its search (`search[instruction]`) instead of the target's
    /// scraping query.
    pub expert: ExpertKind,
}

/// The expert variants of the config key `expert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpertKind {
    /// [`expert`]: plays from the episode's full state, and wins every goal.
    #[default]
    Faithful,
    /// [`visible`]: plays from what the prompt shows.
    Visible,
}

impl Default for WebShopConfig {
    fn default() -> Self {
        Self {
            catalogue_seed: 2022,
            n_products: 1000,
            goal_shuffle_seed: 233,
            max_steps: 15,
            top_k: 50,
            results_per_page: pages::RESULTS_PER_PAGE,
            success_reward: 10.0,
            invalid_reward: -0.1,
            weighted_train: true,
            explain_invalid_actions: false,
            expert: ExpertKind::Faithful,
        }
    }
}

impl WebShopConfig {
    /// Every numeric key against its bounds (`atod_core::config::check_bounds`): at most WebShop's full
    /// catalogue of 1.18 million products, finite rewards.
    pub fn check(&self) -> Result<(), String> {
        use atod_core::config::check_bounds;
        check_bounds("webshop", "n_products", self.n_products, 300, 1_200_000)?;
        check_bounds("webshop", "max_steps", self.max_steps, 1, 1000)?;
        check_bounds("webshop", "top_k", self.top_k, 1, 1000)?;
        check_bounds("webshop", "results_per_page", self.results_per_page, 1, 100)?;
        check_bounds("webshop", "success_reward", self.success_reward, -1e6, 1e6)?;
        check_bounds("webshop", "invalid_reward", self.invalid_reward, -1e6, 1e6)
    }
}

/// Goals `0..500` are `test`, `500..1500` are `eval`, the rest `train` (WebShop's split of its goals).
pub const TEST_GOALS: usize = 500;
/// The number of `eval` goals.
pub const EVAL_GOALS: usize = 1000;

/// The environment.
#[derive(Debug)]
pub struct WebShopEnv {
    config: WebShopConfig,
    catalogue: Arc<Catalogue>,
    /// Cumulative goal weights of the train goals, for weighted sampling.
    train_cumulative: Vec<f64>,
    episode: Option<Episode>,
}

#[derive(Debug, Clone)]
struct Episode {
    goal: usize,
    page: Page,
    query: Option<String>,
    results: Vec<usize>,
    /// The results page the item was opened from, where `< prev` on the item returns.
    results_page: usize,
    selected: BTreeMap<String, String>,
    /// Every step's action as the prompt's history shows it (empty for a malformed response).
    actions: Vec<String>,
    steps: u32,
    done: bool,
}

impl WebShopEnv {
    /// The catalogue this environment plays on.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The goal of the current episode.
    pub fn goal(&self) -> atod_core::Result<&Goal> {
        let episode = self.episode.as_ref().ok_or(Error::NotReset)?;
        Ok(&self.catalogue.goals[episode.goal])
    }

    /// The index into the shuffled goal list of task (split, index, seed).
    pub fn goal_index(&self, split: &str, index: u64, seed: u64) -> atod_core::Result<usize> {
        self.info().check_task(split, index)?;
        let index = index as usize;
        Ok(match split {
            "test" => index,
            "eval" => TEST_GOALS + index,
            _ if self.config.weighted_train => {
                let total = self.train_cumulative.last().copied().unwrap_or(0.0);
                let draw = Rng::new(mix(mix(seed) ^ index as u64)).unit() * total;
                let slot = self.train_cumulative.partition_point(|&c| c <= draw);
                TEST_GOALS + EVAL_GOALS + slot.min(self.train_cumulative.len() - 1)
            }
            _ => TEST_GOALS + EVAL_GOALS + index,
        })
    }

    fn view<'a>(&'a self, episode: &'a Episode) -> View<'a> {
        View {
            catalogue: &self.catalogue,
            instruction: &self.catalogue.goals[episode.goal].instruction,
            results: &episode.results,
            per_page: self.config.results_per_page,
        }
    }

    fn expert_state<'a>(&'a self, episode: &'a Episode) -> expert::State<'a> {
        expert::State {
            catalogue: &self.catalogue,
            goal: &self.catalogue.goals[episode.goal],
            page: episode.page,
            query: episode.query.as_deref(),
            results: &episode.results,
            selected: &episode.selected,
            per_page: self.config.results_per_page,
        }
    }
}

/// The outcome of applying one valid action.
enum Applied {
    Moved,
    Bought { product: usize },
}

/// Catalogues by (seed, products, shuffle seed): generating one takes a while, and every environment of a run
/// shares the same one.
static CATALOGUES: Mutex<Vec<(CatalogueKey, Arc<Catalogue>)>> = Mutex::new(Vec::new());

/// (catalogue seed, products, goal shuffle seed).
type CatalogueKey = (u64, usize, u64);

fn shared_catalogue(seed: u64, n_products: usize, shuffle_seed: u64) -> Arc<Catalogue> {
    let key = (seed, n_products, shuffle_seed);
    let mut cache = CATALOGUES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, catalogue)) = cache.iter().find(|(k, _)| *k == key) {
        return Arc::clone(catalogue);
    }
    let catalogue = Arc::new(Catalogue::generate(seed, n_products, shuffle_seed));
    cache.push((key, Arc::clone(&catalogue)));
    catalogue
}

impl PluginEnvironment for WebShopEnv {
    const NAME: &'static str = "webshop";

    fn default_config() -> String {
        let body = toml::to_string(&WebShopConfig::default()).unwrap_or_default();
        format!(
            "# WebShop-faithful shopping. Keys (all optional): catalogue_seed, n_products (>= 300), \
             goal_shuffle_seed,\n# max_steps, top_k (results kept per search), results_per_page, success_reward, invalid_reward, \
             weighted_train,\n# explain_invalid_actions, expert (\"faithful\" or \"visible\").\n{body}"
        )
    }

    fn create(config_toml: &str) -> Result<Self, String> {
        let config: WebShopConfig = toml::from_str(config_toml).map_err(|e| format!("webshop config: {e}"))?;
        config.check()?;
        let catalogue = shared_catalogue(config.catalogue_seed, config.n_products, config.goal_shuffle_seed);
        if catalogue.goals.len() <= TEST_GOALS + EVAL_GOALS {
            return Err(format!(
                "webshop config: {} products give only {} goals; raise n_products so that the train split is not empty",
                config.n_products,
                catalogue.goals.len()
            ));
        }
        let mut total = 0.0;
        let train_cumulative = catalogue.goals[TEST_GOALS + EVAL_GOALS..]
            .iter()
            .map(|g| {
                total += g.weight;
                total
            })
            .collect();
        Ok(Self { config, catalogue, train_cumulative, episode: None })
    }
}

const SYSTEM: &str = "You are an expert autonomous agent shopping on the WebShop e-commerce website. Pages are \
shown as text with their elements separated by [SEP]. Actions: search[your query] searches the catalogue from any \
page; click[x] clicks a button, a product's ASIN or an option value shown on the page (for example click[next >], \
click[b07xyz1234], click[large], click[buy now]). Select every option the instruction asks for before clicking \
buy now, which ends the episode. First reason step by step inside <think>...</think>, then give exactly one action \
inside <action>...</action>.";

impl Environment for WebShopEnv {
    fn info(&self) -> EnvInfo {
        let n_train = self.catalogue.goals.len().saturating_sub(TEST_GOALS + EVAL_GOALS) as u64;
        EnvInfo {
            name: Self::NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "WebShop-faithful shopping: search a generated catalogue of products, open one, select \
                          the options the instruction asks for and buy it. WebShop's reward (attributes, options, \
                          price and product type) scores the purchase; reward 10 when it is 1.0, -0.1 per malformed \
                          response, at most 15 steps."
                .into(),
            splits: vec![
                SplitInfo::new("train", n_train),
                SplitInfo::new("eval", EVAL_GOALS as u64),
                SplitInfo::new("test", TEST_GOALS as u64),
            ],
            action_format: ActionFormat::ThinkAction,
        }
    }

    fn reset(&mut self, split: &str, index: u64, seed: u64) -> atod_core::Result<String> {
        let goal = self.goal_index(split, index, seed)?;
        let episode = Episode {
            goal,
            page: Page::Search,
            query: None,
            results: Vec::new(),
            results_page: 0,
            selected: BTreeMap::new(),
            actions: Vec::new(),
            steps: 0,
            done: false,
        };
        let observation = self.view(&episode).render(Page::Search);
        self.episode = Some(episode);
        Ok(observation)
    }

    fn step(&mut self, response: &str) -> atod_core::Result<StepResult> {
        let mut episode = self.episode.take().ok_or(Error::NotReset)?;
        let outcome = self.step_episode(&mut episode, response);
        self.episode = Some(episode);
        outcome
    }

    fn admissible_actions(&self) -> atod_core::Result<Vec<String>> {
        let episode = self.episode.as_ref().ok_or(Error::NotReset)?;
        let goal = &self.catalogue.goals[episode.goal];
        let search = match self.config.expert {
            ExpertKind::Faithful => self.catalogue.target(goal).query.clone(),
            ExpertKind::Visible => goal.instruction.clone(),
        };
        let mut actions = vec![format!("search[{search}]")];
        actions.extend(self.view(episode).clickables(episode.page).into_iter().map(|c| format!("click[{c}]")));
        actions.sort();
        actions.dedup();
        Ok(actions)
    }

    fn expert_action(&self) -> atod_core::Result<Option<String>> {
        let episode = self.episode.as_ref().ok_or(Error::NotReset)?;
        let (thought, action) = match self.config.expert {
            ExpertKind::Faithful => expert::expert_step(&self.expert_state(episode)),
            ExpertKind::Visible => {
                // The page as the last observation showed it (an explanation of an invalid action replaces it in
                // the prompt; the page is the same).
                let page = self.view(episode).render(episode.page);
                let history: Vec<&str> = episode.actions.iter().map(String::as_str).collect();
                visible::visible_step(&page, &history, self.config.results_per_page)
            }
        };
        Ok(Some(ActionFormat::ThinkAction.wrap(&action, &thought)))
    }

    fn prompt(&self) -> atod_core::Result<PromptPieces> {
        let goal = self.goal()?;
        Ok(PromptPieces { system: SYSTEM.into(), task: format!("Your task is to: {}.", goal.instruction) })
    }

    fn task_type(&self) -> atod_core::Result<Option<String>> {
        // The top category (beauty, grocery, home, clothing, electronics), as WebShop breaks results down.
        let goal = self.goal()?;
        let category = &self.catalogue.target(goal).category;
        Ok(Some(category.split(" › ").next().unwrap_or_default().to_owned()))
    }
}

impl WebShopEnv {
    fn step_episode(&self, episode: &mut Episode, response: &str) -> atod_core::Result<StepResult> {
        if episode.done {
            return Err(Error::EpisodeOver);
        }
        episode.steps += 1;
        let mut result = StepResult::continuing();
        // verl-agent's projection counts an empty `<action></action>` as well formed and hands WebShop the empty
        // string, which performs nothing.
        let extracted = match extract_think_action(response, true) {
            Err(InvalidAction::Empty) => Ok(String::new()),
            other => other,
        };
        match extracted {
            Ok(text) => {
                match self.performable(episode, &text) {
                    Ok(action) => match self.apply(episode, action) {
                        Applied::Moved => result.observation = self.view(episode).render(episode.page),
                        Applied::Bought { product } => self.buy(episode, product, &mut result),
                    },
                    // WebShop's text env performs nothing: the page stays, the reward is 0, and verl-agent does
                    // not count the step as invalid, since the response was well formed.
                    Err(why) => result.observation = self.unchanged(episode, || format!("Nothing happens: {why}.")),
                }
                episode.actions.push(text.clone());
                result.action = text;
            }
            // verl-agent's projection marks the response invalid and the trainer charges the penalty; the page
            // stays as it was.
            Err(err) => {
                episode.actions.push(String::new());
                result.valid = false;
                result.reward = self.config.invalid_reward;
                result.observation = self.unchanged(episode, || {
                    let what = match err {
                        InvalidAction::MissingTag(_) => "the response has no <action>...</action>",
                        // Made a valid step that does nothing above.
                        InvalidAction::Empty => "the action is empty",
                        InvalidAction::MissingThink => "the response has no <think>...</think> before the action",
                        InvalidAction::ForeignScript => "the response contains CJK characters",
                    };
                    format!(
                        "Invalid action: {what}. Reason inside <think>...</think>, then act inside \
                         <action>...</action>."
                    )
                });
            }
        }
        result.done |= episode.steps >= self.config.max_steps;
        episode.done = result.done;
        Ok(result)
    }

    /// Ends the episode with the purchase of `product` and WebShop's reward for it.
    fn buy(&self, episode: &Episode, product: usize, result: &mut StepResult) {
        let goal = &self.catalogue.goals[episode.goal];
        let bought = &self.catalogue.products[product];
        let chosen: Vec<&str> = episode.selected.values().map(String::as_str).collect();
        let parts = reward::reward(bought, &chosen, goal, self.catalogue.target(goal));
        result.done = true;
        result.score = parts.total;
        result.won = parts.total == 1.0;
        result.reward = if result.won { self.config.success_reward } else { 0.0 };
        result.observation = pages::done_page(&bought.asin, &episode.selected, parts.total);
    }

    /// The observation of a step that changed nothing: the page again, as WebShop shows it, or with
    /// `explain_invalid_actions` the explanation followed by what the page offers.
    fn unchanged(&self, episode: &Episode, explanation: impl FnOnce() -> String) -> String {
        let view = self.view(episode);
        if !self.config.explain_invalid_actions {
            return view.render(episode.page);
        }
        let clickables = view.clickables(episode.page);
        let offer = if clickables.is_empty() {
            "On this page only search[your query] works.".to_owned()
        } else {
            format!("This page offers search[your query] and click[x] for x in: {}.", clickables.join(", "))
        };
        format!("{} {offer}", explanation())
    }

    /// The action `text` names, if the current page can perform it (as WebShop's text env decides: a search
    /// with any argument, or a click on one of the page's clickables), or why not.
    fn performable(&self, episode: &Episode, text: &str) -> Result<Action, String> {
        let action = parse(text).map_err(|err| match err {
            ParseError::Shape => format!("`{}` is not of the form search[query] or click[x]", clip_echo(text)),
            ParseError::UnknownName(name) => {
                format!("`{}` is not an action; use search[...] or click[...]", clip_echo(&name))
            }
        })?;
        if let Action::Click(target) = &action {
            if !self.view(episode).clickables(episode.page).iter().any(|c| c == target) {
                return Err(format!("`{}` is not clickable on this page", clip_echo(target)));
            }
        }
        Ok(action)
    }

    /// Applies a valid action (a click is known to be on the page).
    fn apply(&self, episode: &mut Episode, action: Action) -> Applied {
        let target = match action {
            Action::Search(query) => {
                episode.results = self.catalogue.index.search(&query, self.config.top_k);
                episode.query = Some(query);
                episode.page = Page::Results { page: 0 };
                return Applied::Moved;
            }
            Action::Click(target) => target,
        };
        if target == "back to search" {
            episode.page = Page::Search;
            return Applied::Moved;
        }
        match episode.page {
            Page::Search => {}
            Page::Results { page } => match target.as_str() {
                "next >" => episode.page = Page::Results { page: page + 1 },
                "< prev" => episode.page = Page::Results { page: page.saturating_sub(1) },
                asin => {
                    let view = self.view(episode);
                    let product = view
                        .page_results(page)
                        .iter()
                        .copied()
                        .find(|&id| self.catalogue.products[id].asin.eq_ignore_ascii_case(asin));
                    if let Some(product) = product {
                        episode.results_page = page;
                        episode.selected.clear();
                        episode.page = Page::Item { product };
                    }
                }
            },
            Page::Item { product } => match target.as_str() {
                "< prev" => episode.page = Page::Results { page: episode.results_page },
                "buy now" => return Applied::Bought { product },
                other => {
                    if let Some(kind) = SubPage::ALL.into_iter().find(|s| s.button().eq_ignore_ascii_case(other)) {
                        episode.page = Page::Sub { product, kind };
                    } else if let Some((name, _)) =
                        self.catalogue.products[product].options.iter().find(|(_, vs)| vs.iter().any(|v| v == other))
                    {
                        episode.selected.insert(name.clone(), other.to_owned());
                    }
                }
            },
            Page::Sub { product, .. } => episode.page = Page::Item { product },
        }
        Applied::Moved
    }
}

atod_envs::export_environment!(WebShopEnv);

#[cfg(test)]
mod tests;
