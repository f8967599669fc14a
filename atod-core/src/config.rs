//! The environment section of a config, shared by the commands; later stages (models, losses, trainer) add
//! their own sections.
//!
//! It rejects unknown keys, so a typo is an error at load time rather than a silently ignored value.

use serde::{Deserialize, Serialize};

/// Which environment to play and how prompts are built from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// The environment's name, as `atod envs` lists it.
    pub name: String,
    /// The plugin's own config, passed to its `create` as TOML text; missing keys take the plugin's defaults.
    #[serde(default)]
    pub config: toml::Table,
    /// The split rollouts draw tasks from.
    #[serde(default = "default_train_split")]
    pub train_split: String,
    /// The held-out split evaluations use.
    #[serde(default = "default_eval_split")]
    pub eval_split: String,
    /// How many past turns the prompt repeats.
    #[serde(default = "default_history")]
    pub history: usize,
    /// Whether prompts list the admissible actions.
    #[serde(default)]
    pub show_admissible: bool,
}

fn default_train_split() -> String {
    "train".to_owned()
}
fn default_eval_split() -> String {
    "test".to_owned()
}
fn default_history() -> usize {
    2
}

impl EnvConfig {
    /// The plugin config as TOML text, for [`Environment`](crate::Environment) factories.
    pub fn config_toml(&self) -> String {
        toml::to_string(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_config_parses_with_defaults() {
        let config: EnvConfig = toml::from_str("name = \"counter\"\nconfig = { target = 5 }\n").unwrap();
        assert_eq!((config.train_split.as_str(), config.eval_split.as_str()), ("train", "test"));
        assert_eq!((config.history, config.show_admissible), (2, false));
        assert_eq!(config.config_toml().trim(), "target = 5");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let err = toml::from_str::<EnvConfig>("name = \"counter\"\nhistroy = 3\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `histroy`") && err.contains("line 2"), "{err}");
    }
}
