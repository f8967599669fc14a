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
    /// How many earlier actions, before the `history` turns, prompts also list on one line (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub action_history: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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

/// Checks one numeric key of an environment's config against its bounds, at load time, so that an absurd value
/// (a hundred million products, a NaN reward) is an error naming the key rather than an abort or a `null` in a
/// report. The message reads `webshop config: n_products is 100000000, but must be from 300 to 1200000`.
///
/// # Errors
///
/// The message above when `value` lies outside `min..=max` or is not a number.
pub fn check_bounds<T>(env: &str, key: &str, value: T, min: T, max: T) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    // Written so that NaN, which compares false with everything, fails too.
    if value >= min && value <= max {
        Ok(())
    } else {
        Err(format!("{env} config: {key} is {value}, but must be from {min} to {max}"))
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::check_bounds;

    #[test]
    fn values_outside_their_bounds_and_nan_are_errors_that_name_the_key() {
        assert_eq!(check_bounds("webshop", "n_products", 1000usize, 300, 1_200_000), Ok(()));
        assert_eq!(
            check_bounds("webshop", "n_products", 100_000_000usize, 300, 1_200_000).unwrap_err(),
            "webshop config: n_products is 100000000, but must be from 300 to 1200000"
        );
        assert!(check_bounds("webshop", "success_reward", f64::NAN, -1e6, 1e6).unwrap_err().contains("is NaN"));
        assert!(check_bounds("webshop", "invalid_reward", f64::INFINITY, -1e6, 1e6).is_err());
        assert_eq!(check_bounds("counter", "max_steps", 1u32, 1, 1000), Ok(()));
    }
}
