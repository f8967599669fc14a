//! The expert: searches with the instruction's key words, opens the target (or an equivalent product that
//! earns the full reward), clicks the wanted option values and buys. It decides from the current state alone, so
//! it also recovers from wherever another policy left the episode.

use std::collections::BTreeMap;

use crate::catalogue::{Catalogue, Goal, Product};
use crate::pages::Page;
use crate::reward::{normalize_color, reward, token_set_ratio};
use crate::search::tokenize;

/// Words of an instruction that carry no meaning for search.
pub const STOP_WORDS: &[&str] = &[
    "i", "m", "need", "a", "an", "the", "that", "is", "for", "looking", "find", "me", "want", "to", "buy", "which",
    "and", "with", "would", "like",
];

/// What the expert sees of an episode.
pub struct State<'a> {
    /// The catalogue.
    pub catalogue: &'a Catalogue,
    /// The goal.
    pub goal: &'a Goal,
    /// The current page.
    pub page: Page,
    /// The query of the last search, if any.
    pub query: Option<&'a str>,
    /// The ranked results of the last search.
    pub results: &'a [usize],
    /// The option values selected on the current item, by option name.
    pub selected: &'a BTreeMap<String, String>,
    /// Results shown per results page.
    pub per_page: usize,
}

/// The expert's (thought, action) in the current state.
pub fn expert_step(state: &State<'_>) -> (String, String) {
    let catalogue = state.catalogue;
    let goal = state.goal;
    let target = catalogue.target(goal);
    let keywords = key_words(goal, target);
    match state.page {
        Page::Search => (
            "I will search for the key words of the instruction: the product, its attributes and options.".to_owned(),
            format!("search[{keywords}]"),
        ),
        Page::Results { page } => {
            let target_hit = state.results.iter().position(|&id| id == goal.product);
            let hit = target_hit.or_else(|| {
                state.results.iter().position(|&id| plan(catalogue, goal, &catalogue.products[id]).is_some())
            });
            match hit {
                Some(rank) => {
                    let wanted_page = rank / state.per_page;
                    let asin = catalogue.products[state.results[rank]].asin.to_lowercase();
                    if wanted_page == page {
                        (
                            format!(
                                "{} matches every requirement of the instruction; I will open it.",
                                asin.to_uppercase()
                            ),
                            format!("click[{asin}]"),
                        )
                    } else if wanted_page > page {
                        (
                            format!(
                                "The matching product {} is on a later page; I will go to the next page.",
                                asin.to_uppercase()
                            ),
                            "click[next >]".into(),
                        )
                    } else {
                        (
                            format!(
                                "The matching product {} is on an earlier page; I will go back a page.",
                                asin.to_uppercase()
                            ),
                            "click[< prev]".into(),
                        )
                    }
                }
                None if state.query != Some(keywords.as_str()) => (
                    "No product here matches the instruction; I will search for its key words.".into(),
                    format!("search[{keywords}]"),
                ),
                None => (
                    "The key words did not find a match; I will search for the product's full title.".into(),
                    format!("search[{}]", target.title.to_lowercase()),
                ),
            }
        }
        Page::Item { product } => match plan(catalogue, goal, &catalogue.products[product]) {
            Some(choice) => {
                match choice.iter().find(|(name, value)| state.selected.get(*name).map(String::as_str) != Some(*value))
                {
                    Some((name, value)) => (
                        format!("The instruction asks for {name}: {value}; I will select it."),
                        format!("click[{value}]"),
                    ),
                    None => (
                        "This product matches and every wanted option is selected; I will buy it.".into(),
                        "click[buy now]".into(),
                    ),
                }
            }
            None => (
                "This product does not match the instruction; I will go back to the results.".into(),
                "click[< prev]".into(),
            ),
        },
        Page::Sub { .. } => ("I will go back to the product page.".into(), "click[< prev]".into()),
    }
}

/// The instruction's key words: its words and wanted option values without stop words, in order, once each.
pub fn key_words(goal: &Goal, target: &Product) -> String {
    let text = std::iter::once(target.instruction.as_str()).chain(goal.options.iter().map(|(_, v)| v.as_str()));
    let mut words: Vec<String> = Vec::new();
    for word in text.flat_map(tokenize) {
        if !STOP_WORDS.contains(&word.as_str()) && !words.contains(&word) {
            words.push(word);
        }
    }
    words.join(" ")
}

/// The option values to click on `product` for the full reward (by option name, in the goal's order), or `None`
/// when no choice of options earns reward 1.
pub fn plan<'p>(catalogue: &Catalogue, goal: &Goal, product: &'p Product) -> Option<Vec<(&'p str, &'p str)>> {
    let mut choice: Vec<(&str, &str)> = Vec::new();
    for (name, wanted) in &goal.options {
        // Prefer the exact value under the same name, then any value that the reward counts as a match.
        let exact = product.options.iter().find(|(n, vs)| n == name && vs.contains(wanted));
        let found = match exact {
            Some((n, _)) => Some((n.as_str(), product_value(product, wanted)?)),
            None => product.options.iter().find_map(|(n, vs)| {
                vs.iter()
                    .find(|v| token_set_ratio(normalize_color(v), normalize_color(wanted)) > 85)
                    .map(|v| (n.as_str(), v.as_str()))
            }),
        };
        let (n, v) = found?;
        match choice.iter_mut().find(|(m, _)| *m == n) {
            Some(slot) => slot.1 = v,
            None => choice.push((n, v)),
        }
    }
    let chosen: Vec<&str> = choice.iter().map(|(_, v)| *v).collect();
    let parts = reward(product, &chosen, goal, catalogue.target(goal));
    (parts.total == 1.0).then_some(choice)
}

fn product_value<'p>(product: &'p Product, wanted: &str) -> Option<&'p str> {
    product.options.iter().flat_map(|(_, vs)| vs.iter()).find(|v| *v == wanted).map(String::as_str)
}
