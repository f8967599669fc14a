//! `alfworld`: a household environment faithful to ALFWorld (Shridhar et al., "ALFWorld: Aligning Text and
//! Embodied Environments for Interactive Learning", ICLR 2021; <https://github.com/alfworld/alfworld>, text
//! engine 0.4) as verl-agent plays it (Feng et al., "Group-in-Group Policy Optimization for LLM Agent Training",
//! 2025).
//!
//! ALFWorld runs TextWorld games generated from ALFRED scenes; this crate generates the game itself from (split,
//! task index) on ALFRED's real floor plans, and plays it with the rules of ALFWorld's engine (alfred.pddl through
//! TextWorld's PDDL environment) and the text of its grammar (alfred.twl2), byte for byte: the opening
//! observation, the admissible commands, every feedback string, "Nothing happens." for anything else.
//! `tests/alfworld-real/` checks this against the real engine turn by turn (`atod alfworld-export` writes any task
//! as the `game.tw-pddl` that engine loads). Responses go through verl-agent's projection (`projection`): the
//! command inside `<action>...</action>` is played, or the response's last 30 characters when the tags are
//! missing; a response without both action tags, without `<think>` and `</think>`, or with CJK text costs 0.1.
//! Solving the task gives 10 and ends the episode, which is otherwise cut off after 50 steps.
//!
//! What is ALFWorld's (see FIDELITY.md for the full table):
//! - Scenes are ALFRED's 120 floor plans (`scenes`, from the `FloorPlan*-objects.json` and `-openable.json` of
//!   ALFWorld's wheel): the receptacles of each type and the object types present. `valid_unseen` plays ALFRED's
//!   four unseen scenes (FloorPlan10, 219, 308, 424), `train` and `valid_seen` its other training scenes.
//! - A task index is one fixed game, as ALFWorld's game files are; the seed changes nothing in it.
//! - Lists are in ALFWorld's order (by type, then from the highest number down), `open` describes the contents
//!   ("You open the drawer 1. The drawer 1 is open. In it, you see ..."), only the object in hand can be examined,
//!   `look` in the middle of the room sees nothing, `help` prints TextWorld's help and is admissible (verl-agent
//!   leaves it out of the prompt's list, and so does `admissible_actions`), cleaning, heating and cooling need an
//!   object of a cleanable, heatable or coolable type, and examining reports "hot and clean", "cool and clean" and
//!   a lamp's "on" or "off" as alfred.twl2 does.
//!
//! Deviations, each forced by generating games instead of loading ALFRED's:
//! - Which objects a scene holds and where they start are our draws (each present type once or twice, at most
//!   `max_distractors` besides the goal's); ALFRED's trajectories fix them. Task types cycle with the task index
//!   (index mod 6); ALFWorld's shares are uneven. Goal objects never start in a receptacle of the goal's type, and
//!   a draw whose expert solution would exceed the step limit is redrawn, so every task is solvable within it.
//! - Receptacle counts come from the wheel's interaction points; a type present without points counts 1
//!   (StoveBurner 4). Lamps stand on a lamp stand (desk, side table, ...), floor lamps included. Openable
//!   receptacles start open with probability 1/10.
//!
//! Readings of ENVIRONMENTS.md where it leaves a choice (as in ALFWorld's engine and verl-agent): invalid steps
//! count toward the step limit; `use {lamp}` may be repeated; `go to` the receptacle the agent stands at is not
//! applicable.

pub mod actions;
mod expert;
pub mod export;
pub mod projection;
mod reward;
mod scenes;
mod tables;
mod text;
pub mod world;

use actions::Command;
use atod_core::{ActionFormat, EnvInfo, Environment, Error, PromptPieces, SplitInfo, StepResult};
use atod_envs::PluginEnvironment;
use serde::{Deserialize, Serialize};

pub use world::{TaskType, SPLITS};

/// Every task type, numbered as in ALFWorld's `env.task_types`.
const ALL_TASK_TYPES: [u8; 6] = [1, 2, 3, 4, 5, 6];

/// The plugin's config. Every key is optional; missing keys take the faithful defaults, or the preset's values
/// when `preset = "mini"` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlfworldConfig {
    /// Steps before an episode is cut off (ALFWorld and verl-agent: 50).
    pub max_steps: u32,
    /// The most receptacle instances of one type in a scene ("cabinet 1" ... "cabinet 28"): a scene keeps the first
    /// ones of each type (faithful: 30, more than any ALFRED scene has).
    pub max_instances_per_type: u32,
    /// The most objects besides the goal's objects and the lamps (faithful: 60, more than a room ever draws).
    pub max_distractors: u32,
    /// Whether each observation ends with the admissible commands (ALFWorld's observations do not; verl-agent
    /// puts them in the prompt, which can use `admissible_actions` instead).
    pub list_admissible: bool,
    /// The task types played, numbered as in ALFWorld's `env.task_types` (1 pick_and_place_simple ... 6
    /// pick_two_obj_and_place; faithful: all six). Task `index` plays type `task_types[index % len]`.
    pub task_types: Vec<u8>,
    /// Which expert plays `expert_action` (and so makes the demonstrations): `faithful`, ALFWorld's handcoded
    /// expert, which remembers every receptacle it has looked into and where it saw things; or `visible`, the same
    /// subgoals decided only from what a prompt with the compact action history shows (`expert::next_visible`),
    /// so that a model can imitate it; or `sweep`, those subgoals with a search that needs no memory
    /// (`expert::next_sweep`); or `roster`, the sweep's actions with thoughts that write out what each decision
    /// reads (`expert::next_roster`). The worlds are the same in every case.
    pub expert: ExpertKind,
}

/// The expert behind `expert_action` (see [`AlfworldConfig::expert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpertKind {
    /// ALFWorld's handcoded expert, with its memory of the whole episode.
    #[default]
    Faithful,
    /// Decides from what the prompt shows (`expert::next_visible`).
    Visible,
    /// The visible expert's subgoals with a search that needs no memory: round the candidate receptacles in the
    /// admissible list's order, from the one after where it stands (`expert::next_sweep`).
    Sweep,
    /// The sweep's decisions with thoughts that write the receptacles it goes round and what is here before each
    /// decision, so that every lookup is a copy (`expert::next_roster`).
    Roster,
}

impl Default for AlfworldConfig {
    fn default() -> Self {
        Self {
            max_steps: 50,
            max_instances_per_type: 30,
            max_distractors: 60,
            list_admissible: false,
            task_types: ALL_TASK_TYPES.to_vec(),
            expert: ExpertKind::Faithful,
        }
    }
}

impl AlfworldConfig {
    /// The `mini` preset for CPU-scale experiments: at most 2 receptacles per type, 6 distractors, admissible
    /// commands listed in every observation, and 30 steps.
    pub fn mini() -> Self {
        Self { max_steps: 30, max_instances_per_type: 2, max_distractors: 6, list_admissible: true, ..Self::default() }
    }

    /// Parses TOML config text: an optional `preset` ("default" or "mini") and then any keys overriding it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| format!("alfworld config: {e}"))?;
        let base = match table.remove("preset") {
            None => Self::default(),
            Some(toml::Value::String(name)) if name == "default" => Self::default(),
            Some(toml::Value::String(name)) if name == "mini" => Self::mini(),
            Some(other) => {
                return Err(format!("alfworld config: unknown preset {other}; expected \"default\" or \"mini\""))
            }
        };
        let mut merged = toml::Table::try_from(&base).map_err(|e| format!("alfworld config: {e}"))?;
        merged.extend(table);
        let config: Self = merged.try_into().map_err(|e| format!("alfworld config: {e}"))?;
        use atod_core::config::check_bounds;
        check_bounds("alfworld", "max_steps", config.max_steps, 1, 1000)?;
        // ALFRED's scenes hold at most 28 receptacles of a type, and a room draws fewer than 60 distractors.
        check_bounds("alfworld", "max_instances_per_type", config.max_instances_per_type, 1, 30)?;
        check_bounds("alfworld", "max_distractors", config.max_distractors, 0, 60)?;
        if config.task_types.is_empty() {
            return Err("alfworld config: task_types must name at least one task type (1 to 6)".into());
        }
        for (i, &t) in config.task_types.iter().enumerate() {
            if !(1..=6).contains(&t) {
                return Err(format!("alfworld config: task_types holds {t}; task types are numbered 1 to 6"));
            }
            if config.task_types[..i].contains(&t) {
                return Err(format!("alfworld config: task_types names {t} twice"));
            }
        }
        Ok(config)
    }
}

/// The default config as documented TOML text.
const DEFAULT_CONFIG: &str = r#"# alfworld: ALFWorld-faithful household tasks. Every key is optional.
# preset = "mini"            # start from the CPU-scale preset (max_steps 30, max_instances_per_type 2,
#                            # max_distractors 6, list_admissible true); keys below override it.
# Steps before an episode is cut off (ALFWorld and verl-agent: 50).
max_steps = 50
# The most receptacle instances of one type in a scene ("cabinet 1" ... "cabinet 28" in ALFRED's largest).
max_instances_per_type = 30
# The most objects besides the goal's objects and the lamps.
max_distractors = 60
# Whether each observation ends with the admissible commands (ALFWorld's observations do not).
list_admissible = false
# The task types played (ALFWorld's env.task_types): 1 pick_and_place_simple, 2 look_at_obj_in_light,
# 3 pick_clean_then_place_in_recep, 4 pick_heat_then_place_in_recep, 5 pick_cool_then_place_in_recep,
# 6 pick_two_obj_and_place. Task i of a split plays task_types[i % len].
task_types = [1, 2, 3, 4, 5, 6]
# Which expert makes the demonstrations: "faithful" (ALFWorld's handcoded expert, which remembers the whole
# episode) or "visible" (the same subgoals decided only from what the prompt shows: the task, the current
# observation, the admissible actions and the actions since the last take or move; it searches in the order the
# admissible list names the receptacles), or "sweep" (the visible expert's subgoals with a search that needs no
# memory: it goes round the receptacles that can hold what it looks for, in the admissible list's order, from the
# one after where it stands), or "roster" (the sweep's actions, with thoughts that first write the receptacles it
# goes round and what the one here shows, so that each decision copies a name just written).
expert = "faithful"
"#;

/// The environment.
#[derive(Debug)]
pub struct AlfworldEnv {
    config: AlfworldConfig,
    episode: Option<Episode>,
}

#[derive(Debug, Clone)]
struct Episode {
    world: world::World,
    /// Receptacles the agent has seen inside (the expert's memory).
    seen: Vec<bool>,
    /// Receptacles the agent has seen inside since it last took or put an object (the visible expert's search).
    searched: Vec<bool>,
    steps: u32,
    done: bool,
    won: bool,
}

impl AlfworldEnv {
    /// An environment with `config`.
    pub fn new(config: AlfworldConfig) -> Self {
        Self { config, episode: None }
    }

    /// The config in use.
    pub fn config(&self) -> &AlfworldConfig {
        &self.config
    }

    /// The current episode's world (for the export and the differential harness).
    pub fn world(&self) -> atod_core::Result<world::World> {
        Ok(self.episode()?.world.clone())
    }

    fn episode(&self) -> atod_core::Result<&Episode> {
        self.episode.as_ref().ok_or(Error::NotReset)
    }

    /// Appends the admissible commands to `observation` when the config asks for it.
    fn with_admissible(&self, world: &world::World, observation: String) -> String {
        if !self.config.list_admissible {
            return observation;
        }
        let quoted: Vec<String> = prompt_admissible(world).iter().map(|a| format!("'{a}'")).collect();
        format!("{observation}\n\nYour admissible actions of the current situation are: [{}].", quoted.join(", "))
    }
}

/// The admissible commands as verl-agent's prompt lists them: the engine's, without `help`.
fn prompt_admissible(world: &world::World) -> Vec<String> {
    actions::admissible(world).into_iter().filter(|a| a != "help").collect()
}

impl PluginEnvironment for AlfworldEnv {
    const NAME: &'static str = "alfworld";

    fn default_config() -> String {
        DEFAULT_CONFIG.into()
    }

    fn create(config_toml: &str) -> Result<Self, String> {
        AlfworldConfig::from_toml(config_toml).map(Self::new)
    }
}

impl Environment for AlfworldEnv {
    fn info(&self) -> EnvInfo {
        EnvInfo {
            name: Self::NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "ALFWorld-faithful household tasks: find, take, clean, heat or cool objects and put them \
                          in receptacles, or examine them under a lamp, with ALFWorld 0.4's text commands. Reward \
                          10 on success, -0.1 per response without a well-formed action; 50 steps at most."
                .into(),
            splits: SPLITS.iter().map(|&(name, size)| SplitInfo::new(name, size)).collect(),
            action_format: ActionFormat::ThinkAction,
        }
    }

    fn reset(&mut self, split: &str, index: u64, seed: u64) -> atod_core::Result<String> {
        self.info().check_task(split, index)?;
        // ALFWorld's games are fixed files: the seed drives only the policy's sampling, never the game.
        let _ = seed;
        let world = world::generate(&self.config, split, index);
        let observation = self.with_admissible(&world, text::opening(&world));
        let seen = vec![false; world.receptacles.len()];
        let searched = seen.clone();
        self.episode = Some(Episode { world, seen, searched, steps: 0, done: false, won: false });
        Ok(observation)
    }

    fn step(&mut self, response: &str) -> atod_core::Result<StepResult> {
        let max_steps = self.config.max_steps;
        let episode = self.episode.as_mut().ok_or(Error::NotReset)?;
        if episode.done {
            return Err(Error::EpisodeOver);
        }
        episode.steps += 1;
        let mut result = StepResult::continuing();
        // verl-agent plays whatever its projection extracts, a malformed response's last 30 characters included,
        // and charges the penalty for malformed responses itself.
        let projection = projection::project(response);
        let command = projection::python_strip(&projection.command);
        result.observation = match actions::parse(&episode.world, command) {
            Some(command) => {
                // The visible expert's search restarts whenever an object changes hands.
                if matches!(command, Command::Take(..) | Command::Move(..))
                    && actions::applicable(&episode.world, command)
                {
                    episode.searched.fill(false);
                }
                actions::apply(&mut episode.world, command)
            }
            None => actions::NOTHING_HAPPENS.into(),
        };
        expert::note_seen(&episode.world, &mut episode.seen);
        expert::note_seen(&episode.world, &mut episode.searched);
        result.action = command.to_owned();
        result.valid = projection.valid;
        if reward::satisfied(&episode.world) {
            result.won = true;
            result.reward = reward::SUCCESS_REWARD;
            result.score = 1.0;
        }
        if !result.valid {
            result.reward += reward::INVALID_PENALTY;
        }
        result.done = result.won || episode.steps >= max_steps;
        episode.done = result.done;
        episode.won = result.won;
        let episode = self.episode.as_ref().ok_or(Error::NotReset)?;
        result.observation = self.with_admissible(&episode.world, result.observation);
        Ok(result)
    }

    fn admissible_actions(&self) -> atod_core::Result<Vec<String>> {
        Ok(prompt_admissible(&self.episode()?.world))
    }

    fn expert_action(&self) -> atod_core::Result<Option<String>> {
        let episode = self.episode()?;
        if episode.done {
            return Ok(None);
        }
        let (thought, command) = match self.config.expert {
            ExpertKind::Faithful => expert::next(&episode.world, &episode.seen),
            ExpertKind::Visible => expert::next_visible(&episode.world, &episode.searched),
            ExpertKind::Sweep => expert::next_sweep(&episode.world),
            ExpertKind::Roster => expert::next_roster(&episode.world),
        };
        let action = actions::render(&episode.world, command);
        Ok(Some(ActionFormat::ThinkAction.wrap(&action, &thought)))
    }

    fn prompt(&self) -> atod_core::Result<PromptPieces> {
        let episode = self.episode()?;
        Ok(PromptPieces {
            system: "You are an expert agent operating in the ALFRED Embodied Environment, a household. Each turn, \
                     reason step by step inside <think>...</think>, then give exactly one command inside \
                     <action>...</action>. Commands: go to {recep}, open {recep}, close {recep}, take {obj} from \
                     {recep}, move {obj} to {recep}, use {lamp}, heat {obj} with {microwave}, clean {obj} with \
                     {sinkbasin}, cool {obj} with {fridge}, examine {recep or obj}, inventory, look."
                .into(),
            task: format!("Your task is to: {}.", episode.world.goal.text),
        })
    }

    fn task_type(&self) -> atod_core::Result<Option<String>> {
        Ok(Some(self.episode()?.world.goal.task_type.name().into()))
    }
}

atod_envs::export_environment!(AlfworldEnv);

#[cfg(test)]
mod tests;
