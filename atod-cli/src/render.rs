//! The one prompt renderer: rollouts, `atod collect` (SFT demonstrations) and `atod eval` all build their
//! prompts here, so a model is trained and evaluated on exactly the prompts its demonstrations showed.
//!
//! A prompt is two chat messages (DESIGN.md §2): the environment's system text, then one user message with the
//! task, the last `history` turns in a compact form, the current observation and, optionally, the admissible
//! actions. The history wording follows verl-agent's ALFWorld/WebShop templates ("Prior to this step, you have
//! already taken N step(s). Below are the most recent K observations and the corresponding actions you took"),
//! shortened, and orders each pair as action then what followed, which is the order the agent lived it; what
//! followed the newest action is the current observation, so it is shown once, as the current observation.
//!
//! [`render_fitted`] fits a prompt to a token budget: it drops the oldest history turns first, then keeps only
//! the end of the current observation (where ALFWorld and WebShop put what changed), and never fails.

use atod_core::{ChatMessage, PromptPieces, Role};
use atod_models::ChatTokenizer;
use serde::{Deserialize, Serialize};

/// How prompts are rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// How many past turns (action and the observation that followed) the prompt repeats.
    pub history: usize,
    /// Whether the prompt lists the admissible actions after the observation.
    pub show_admissible: bool,
    /// How many actions before those `history` turns the prompt also lists, on one line and without what
    /// followed them (0: none): a compact memory of the episode.
    pub action_history: usize,
    /// The prompt's token budget (chat template included); see [`render_fitted`].
    pub max_prompt_tokens: usize,
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self { history: 3, show_admissible: false, action_history: 0, max_prompt_tokens: 768 }
    }
}

/// One past turn as the prompt shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryItem {
    /// The action the environment understood (or a note that the response held none).
    pub action: String,
    /// The observation that followed it.
    pub observation: String,
}

/// What a truncated observation starts with.
pub const ELLIPSIS: &str = "...";

/// Renders the prompt of turn `step` (0-based): the system message, then one user message with the task, the
/// `cfg.action_history` actions before the last `cfg.history` items of `history` on one line, those last items
/// (each action and what followed), the current `observation` and (when `cfg.show_admissible`) the `admissible`
/// actions.
pub fn render(
    pieces: &PromptPieces,
    history: &[HistoryItem],
    observation: &str,
    admissible: &[String],
    step: usize,
    cfg: &RenderConfig,
) -> Vec<ChatMessage> {
    render_keeping(pieces, history, cfg.history, observation, admissible, step, cfg)
}

/// [`render`] with the last `keep` items of `history` shown in full (at most `cfg.history`) and the
/// `cfg.action_history` before them as actions only.
fn render_keeping(
    pieces: &PromptPieces,
    history: &[HistoryItem],
    keep: usize,
    observation: &str,
    admissible: &[String],
    step: usize,
    cfg: &RenderConfig,
) -> Vec<ChatMessage> {
    let split = history.len().saturating_sub(keep.min(cfg.history));
    let shown = &history[split..];
    let compact = &history[split.saturating_sub(cfg.action_history)..split];
    let mut user = pieces.task.trim_end().to_owned();
    let plural = |n: usize, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
    if !compact.is_empty() {
        let actions: Vec<&str> = compact.iter().map(|item| item.action.as_str()).collect();
        let which = if shown.is_empty() { String::new() } else { format!(" before the last {}", shown.len()) };
        user.push_str(&format!(
            "\n\nYou have taken {} so far. Your actions{which}: {}.",
            plural(step, "step"),
            actions.join(" | ")
        ));
        if !shown.is_empty() {
            user.push_str(&format!(" Your last {} and what followed:", plural(shown.len(), "action")));
        }
    } else if !shown.is_empty() {
        user.push_str(&format!(
            "\n\nYou have taken {} so far. Your last {} and what followed:",
            plural(step, "step"),
            plural(shown.len(), "action")
        ));
    }
    let first = step - shown.len().min(step);
    for (offset, item) in shown.iter().enumerate() {
        user.push_str(&format!("\n[step {}] action: {}", first + offset + 1, item.action));
        // What followed the newest action is the current observation, shown below once.
        if offset + 1 < shown.len() {
            user.push_str(&format!("\nobservation: {}", item.observation.trim()));
        }
    }
    // An empty observation (Search-QA's first, whose question is the task) is left out rather than shown blank.
    if !observation.trim().is_empty() {
        user.push_str(&format!("\n\nCurrent observation (step {}): {}", step + 1, observation.trim()));
    }
    if cfg.show_admissible && !admissible.is_empty() {
        user.push_str(&format!("\n\nAdmissible actions: {}", admissible.join(" | ")));
    }
    vec![ChatMessage::new(Role::System, pieces.system.clone()), ChatMessage::new(Role::User, user)]
}

/// [`render`] fitted to `cfg.max_prompt_tokens` under `tokenizer`'s chat template; returns the messages and
/// their prompt ids (`tokenizer.encode_prompt(&messages)`).
///
/// While the prompt is too long, the oldest history item is dropped (its action joins the compact list of
/// earlier actions when `cfg.action_history` > 0; that list is never cut); with no history left, the observation is
/// cut to its longest suffix that fits, behind [`ELLIPSIS`]. When even the system text, the task and the
/// admissible actions exceed the budget, the prompt with an empty observation is returned as it is: the
/// caller sees `ids.len() > cfg.max_prompt_tokens` and counts it (the rollout's `overlong_prompts`).
pub fn render_fitted(
    tokenizer: &ChatTokenizer,
    pieces: &PromptPieces,
    history: &[HistoryItem],
    observation: &str,
    admissible: &[String],
    step: usize,
    cfg: &RenderConfig,
) -> (Vec<ChatMessage>, Vec<u32>) {
    let encode = |keep: usize, observation: &str| {
        let messages = render_keeping(pieces, history, keep, observation, admissible, step, cfg);
        let ids = tokenizer.encode_prompt(&messages);
        (messages, ids)
    };
    let budget = cfg.max_prompt_tokens;
    let shown = history.len().min(cfg.history);
    for drop in 0..=shown {
        let fitted = encode(shown - drop, observation);
        if fitted.1.len() <= budget {
            return fitted;
        }
    }
    // No history left and still too long: binary search for the longest suffix of the observation that fits.
    // The prompt length grows with the suffix (more text never encodes to fewer tokens here, up to merges at
    // the cut, which the search tolerates: it returns a suffix that fits).
    let observation = observation.trim();
    let cuts: Vec<usize> = observation.char_indices().map(|(i, _)| i).collect();
    let with_suffix = |k: usize| {
        // k = the number of characters kept from the end.
        if k == 0 {
            String::new()
        } else {
            format!("{ELLIPSIS}{}", &observation[cuts[cuts.len() - k]..])
        }
    };
    let (mut lo, mut hi) = (0usize, cuts.len());
    let mut best = encode(0, "");
    if best.1.len() > budget {
        return best;
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let fitted = encode(0, &with_suffix(mid));
        if fitted.1.len() <= budget {
            best = fitted;
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn pieces() -> PromptPieces {
        PromptPieces {
            system: "You are an agent. Answer with <think>...</think><action>...</action>.".into(),
            task: "Your task is to: put a mug in cabinet 1.".into(),
        }
    }

    fn history(n: usize) -> Vec<HistoryItem> {
        (1..=n)
            .map(|i| HistoryItem { action: format!("go to desk {i}"), observation: format!("You arrive at desk {i}.") })
            .collect()
    }

    fn tokenizer() -> ChatTokenizer {
        let texts = ["You arrive at desk 1. On the desk 1, you see a mug 1.", "go to desk 2", "Your task is to: put"];
        ChatTokenizer::train(texts, 320).unwrap()
    }

    #[test]
    fn the_first_turn_has_task_and_observation_only() {
        let messages = render(&pieces(), &[], "You are in the middle of a room.", &[], 0, &RenderConfig::default());
        assert_eq!(messages[0], ChatMessage::new(Role::System, pieces().system));
        expect![[r#"
            Your task is to: put a mug in cabinet 1.

            Current observation (step 1): You are in the middle of a room."#]]
        .assert_eq(&messages[1].content);
    }

    #[test]
    fn later_turns_show_the_last_history_items_and_the_admissible_actions() {
        let cfg = RenderConfig { history: 2, show_admissible: true, ..RenderConfig::default() };
        let admissible = vec!["go to desk 1".to_owned(), "look".to_owned()];
        let messages = render(&pieces(), &history(4), "You arrive at desk 4.", &admissible, 4, &cfg);
        expect![[r#"
            Your task is to: put a mug in cabinet 1.

            You have taken 4 steps so far. Your last 2 actions and what followed:
            [step 3] action: go to desk 3
            observation: You arrive at desk 3.
            [step 4] action: go to desk 4

            Current observation (step 5): You arrive at desk 4.

            Admissible actions: go to desk 1 | look"#]]
        .assert_eq(&messages[1].content);
        let one = render(&pieces(), &history(1), "x", &admissible, 1, &RenderConfig::default());
        assert!(one[1].content.contains("You have taken 1 step so far. Your last 1 action and what followed:"));
    }

    #[test]
    fn the_compact_history_lists_the_actions_before_the_full_turns() {
        let cfg = RenderConfig { history: 1, action_history: 2, ..RenderConfig::default() };
        let messages = render(&pieces(), &history(4), "You arrive at desk 4.", &[], 4, &cfg);
        expect![[r#"
            Your task is to: put a mug in cabinet 1.

            You have taken 4 steps so far. Your actions before the last 1: go to desk 2 | go to desk 3. Your last 1 action and what followed:
            [step 4] action: go to desk 4

            Current observation (step 5): You arrive at desk 4."#]]
        .assert_eq(&messages[1].content);
        // With no full turns, the list holds the newest actions; with no earlier actions, the layout is unchanged.
        let none = RenderConfig { history: 0, action_history: 5, ..RenderConfig::default() };
        let messages = render(&pieces(), &history(2), "x", &[], 2, &none);
        assert!(messages[1].content.contains("Your actions: go to desk 1 | go to desk 2.\n\nCurrent"));
        let plain = RenderConfig { history: 3, ..RenderConfig::default() };
        assert_eq!(
            render(&pieces(), &history(2), "x", &[], 2, &RenderConfig { action_history: 4, ..plain.clone() }),
            render(&pieces(), &history(2), "x", &[], 2, &plain)
        );
    }

    #[test]
    fn fitting_moves_dropped_turns_into_the_compact_history() {
        let tok = tokenizer();
        let cfg = RenderConfig { history: 3, action_history: 10, ..RenderConfig::default() };
        let full = render_fitted(&tok, &pieces(), &history(5), "You see a mug.", &[], 5, &cfg);
        let tight = RenderConfig { max_prompt_tokens: full.1.len() - 1, ..cfg };
        let (messages, ids) = render_fitted(&tok, &pieces(), &history(5), "You see a mug.", &[], 5, &tight);
        assert!(ids.len() < full.1.len());
        assert!(messages[1].content.contains("go to desk 1 | go to desk 2 | go to desk 3."), "{}", messages[1].content);
        assert!(messages[1].content.contains("Your last 2 actions"));
    }

    #[test]
    fn fitting_drops_old_history_then_keeps_the_end_of_the_observation() {
        let tok = tokenizer();
        let cfg = RenderConfig { history: 3, ..RenderConfig::default() };
        let full = render_fitted(&tok, &pieces(), &history(5), "You see a mug.", &[], 5, &cfg);
        assert_eq!(full.1, tok.encode_prompt(&full.0));
        let full_len = full.1.len();

        // A budget a few tokens short drops the oldest shown item but keeps the newest.
        let tight = RenderConfig { max_prompt_tokens: full_len - 3, ..cfg.clone() };
        let (messages, ids) = render_fitted(&tok, &pieces(), &history(5), "You see a mug.", &[], 5, &tight);
        assert!(ids.len() <= tight.max_prompt_tokens);
        assert!(!messages[1].content.contains("desk 3") && messages[1].content.contains("desk 4."));
        assert!(messages[1].content.contains("[step 5] action: go to desk 5\n\nCurrent observation"));

        // A long observation under a small budget keeps its end, behind an ellipsis.
        let observation = format!("{} The mug 1 is here.", "You see a desk 1. ".repeat(200));
        // The prompt with the observation's header and an ellipsis only (an empty observation has no header).
        let bare = tok.encode_prompt(&render(&pieces(), &[], ELLIPSIS, &[], 5, &cfg)).len();
        for budget in [bare, bare + 1, bare + 7, bare + 40] {
            let cfg = RenderConfig { max_prompt_tokens: budget, ..cfg.clone() };
            let (messages, ids) = render_fitted(&tok, &pieces(), &history(5), &observation, &[], 5, &cfg);
            assert!(ids.len() <= budget, "{} > {budget}", ids.len());
            assert!(!messages[1].content.contains("[step"));
            if budget >= bare + 30 {
                assert!(messages[1].content.ends_with("mug 1 is here."), "{}", messages[1].content);
                assert!(messages[1].content.contains(ELLIPSIS));
            }
        }
    }

    #[test]
    fn an_empty_observation_is_left_out() {
        // Search-QA's first observation is empty: its question is the task, shown once.
        let messages = render(&pieces(), &[], "  ", &[], 0, &RenderConfig::default());
        assert_eq!(messages[1].content, pieces().task.trim_end());
    }

    #[test]
    fn a_budget_below_system_and_task_returns_them_unchanged() {
        let tok = tokenizer();
        let cfg = RenderConfig { max_prompt_tokens: 5, ..RenderConfig::default() };
        let (messages, ids) = render_fitted(&tok, &pieces(), &history(3), "You see a mug.", &[], 3, &cfg);
        assert!(ids.len() > 5);
        assert_eq!(messages, render(&pieces(), &[], "", &[], 3, &cfg));
    }
}
