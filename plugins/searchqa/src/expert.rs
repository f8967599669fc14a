//! The expert: searches each entity it needs by name, reads the fact from the returned passage, and answers.
//!
//! It sees what the agent sees: the question's plan names only entities written in the question, and every
//! further fact (the founder, the birthplace, a year) is read out of a passage that a search of this episode
//! returned, as the observation showed it. When retrieval misses a passage, the expert therefore fails, which is
//! what the tests use it to catch. It is stateless: each call replays the plan over the passages retrieved so far.
//!
//! How it words its responses is the config's `expert_thoughts` and `expert_spaces` ([`Style`]); what it searches
//! and answers is the same in every style.

use serde::{Deserialize, Serialize};

use crate::kb::Passage;
use crate::questions::{Plan, Question};

/// How long the expert's `<think>` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Thoughts {
    /// Full sentences: "I need the birthplace of X, so I look up X." and "The passages say the founder of X is
    /// Y, and the birthplace of Y is Z."
    #[default]
    Full,
    /// Only what the next action rests on: the fact the latest passage gave, if any, and what is looked up next
    /// before a search ("founder of X is Y. birthplace of Y?"); the last fact read before an answer
    /// ("birthplace of Y is Z.", or both values of a comparison).
    Short,
    /// As `short`, with each fact written as the passage's own sentence ("Y was born in Z in 1901."), so that a
    /// model copies the value after the same words it follows in the passage.
    Quote,
}

/// The wording of the expert's responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    pub thoughts: Thoughts,
    /// Whether a tag's content is written with a space on each side (`<search> X </search>`, and so `<think>`),
    /// as Search-R1's instruction writes its examples; both protocols strip it. With a byte-level BPE this makes
    /// a name inside a tag the same tokens as in the question and the passages (` X`), where `<search>X` encodes
    /// it otherwise.
    pub spaces: bool,
}

impl Style {
    fn tag(self, tag: &str, content: &str) -> String {
        if self.spaces {
            format!("<{tag}> {content} </{tag}>")
        } else {
            format!("<{tag}>{content}</{tag}>")
        }
    }

    /// A search for `name`'s `relation`; `read` is the fact read last, if any, in this style's words.
    fn search(self, relation: &str, name: &str, read: Option<&str>) -> String {
        let think = match (self.thoughts, read) {
            (Thoughts::Full, _) => format!("I need the {relation} of {name}, so I look up {name}."),
            (Thoughts::Short | Thoughts::Quote, None) => format!("{relation} of {name}?"),
            (Thoughts::Short | Thoughts::Quote, Some(fact)) => format!("{fact} {relation} of {name}?"),
        };
        format!("{}{}", self.tag("think", &think), self.tag("search", name))
    }
}

/// The expert's complete response, given the passages returned by this episode's searches.
pub fn respond(question: &Question, retrieved: &[&Passage], style: Style) -> String {
    let read = |title: &str| retrieved.iter().rev().find(|p| p.title == title);
    match &question.plan {
        Plan::Chain { start, relations } => {
            let mut current = start.clone();
            // Each fact as "birthplace of X is Y", and as the short thoughts write it.
            let mut facts: Vec<String> = Vec::new();
            let mut written: Vec<String> = Vec::new();
            for relation in relations {
                let Some(passage) = read(&current) else {
                    return style.search(relation.describe(), &current, written.last().map(String::as_str));
                };
                let (Some(value), Some(quote)) =
                    (relation.read(&current, &passage.text), relation.quote(&current, &passage.text))
                else {
                    return give_up(&current, style);
                };
                let fact = format!("{} of {current} is {value}", relation.describe());
                written.push(if style.thoughts == Thoughts::Quote { quote.to_owned() } else { format!("{fact}.") });
                facts.push(fact);
                current = value;
            }
            let think = match style.thoughts {
                Thoughts::Full => {
                    let facts: Vec<String> = facts.iter().map(|f| format!("the {f}")).collect();
                    format!("The passages say {}.", facts.join(", and "))
                }
                Thoughts::Short | Thoughts::Quote => written.last().cloned().unwrap_or_default(),
            };
            format!("{}{}", style.tag("think", &think), style.tag("answer", &current))
        }
        Plan::Compare { names, relation, smaller_wins } => {
            let mut values = Vec::new();
            let mut quotes = Vec::new();
            for name in names {
                let Some(passage) = read(name) else {
                    let fact = match style.thoughts {
                        Thoughts::Quote => quotes.last().map(|q: &&str| (*q).to_owned()),
                        _ => values.last().map(|v| format!("{} of {} is {v}.", relation.describe(), names[0])),
                    };
                    return style.search(relation.describe(), name, fact.as_deref());
                };
                let value = relation.read(name, &passage.text).and_then(|v| v.parse::<u64>().ok());
                let (Some(value), Some(quote)) = (value, relation.quote(name, &passage.text)) else {
                    return give_up(name, style);
                };
                values.push(value);
                quotes.push(quote);
            }
            let first_wins = (values[0] < values[1]) == *smaller_wins;
            let winner = if first_wins { &names[0] } else { &names[1] };
            let (rel, [a, b], [va, vb]) = (relation.describe(), names, [values[0], values[1]]);
            let think = match style.thoughts {
                Thoughts::Full => {
                    format!("The {rel} of {a} is {va} and that of {b} is {vb}, so the answer is {winner}.")
                }
                Thoughts::Short => format!("{rel} of {a} is {va}, of {b} is {vb}."),
                Thoughts::Quote => quotes.join(" "),
            };
            format!("{}{}", style.tag("think", &think), style.tag("answer", winner))
        }
    }
}

/// What the expert says when a passage does not state the fact it needs (a retrieval or writing bug).
fn give_up(name: &str, style: Style) -> String {
    let think = format!("The passage about {name} does not say what I need.");
    format!("{}{}", style.tag("think", &think), style.tag("answer", "unknown"))
}
