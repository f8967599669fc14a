//! The `visible` expert (config `expert = "visible"`): every decision is a function of what an agent's prompt
//! shows, namely the current page's text and the last two actions of the history, so that a small model can
//! imitate it. The faithful expert ([`crate::expert`]) knows the goal's target product and every product's hidden
//! attributes, options and paid price: the product it opens sits at a nearly uniform rank of the results (13% at
//! rank 1, 30% on a later page), often beside near-duplicates with the same title, and its thoughts name ASINs
//! the page does not show.
//!
//! The rules, read from the page alone (every page but the done page repeats the instruction):
//! - The instruction is `{base}{ with n: v, and n: v}{, and price lower than U dollars}`.
//! - Search page: `search[instruction]`, the instruction as the page shows it: a verbatim copy, which BM25 ranks
//!   as well as the faithful expert's key words (the instruction's words without stop words; the same success
//!   and turns on the eval goals), and which a small model learns more easily than a copy with gaps.
//! - Results page: open the first listed product whose shown price (the upper end of a range) is at most the
//!   cap. BM25 on the key words, which name the wanted attributes and option values, ranks a product with the
//!   full reward first for 88% of the eval goals, and the first affordable one has it for 97%. If the last two
//!   actions were `click[x]` and `click[< prev]` (the agent came back from product x, which lacked a wanted
//!   option value), only the products listed after x count. With none, `click[next >]` while the page count
//!   ("Page p (Total results: n)") says more results follow, and on the last page the first product it lists
//!   (after x).
//! - Item page: when every wanted value is listed, click them in the instruction's order (the one after the value
//!   the last action clicked, else the first), then `click[buy now]`; when a wanted value is not listed,
//!   `click[< prev]`.
//! - Any other page (a description, features or reviews page): `click[< prev]`.
//!
//! Its thoughts are short and name nothing the action does not; it writes an ASIN as the page shows it, in
//! upper case (actions are lower-cased when extracted, so `click[B0ABC12345]` clicks `b0abc12345`): a copy of
//! the page, where the faithful expert's `click[b0abc12345]` asks a model to change the case of every letter.
//!
//! It reads the whole rendered page, so a model imitating it needs the whole page in its prompt (a results page
//! is about 490 tokens under a 1024-token byte-level BPE) and the last two actions of the history.

use crate::expert::STOP_WORDS;
use crate::search::tokenize;

/// An instruction as its text shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// The whole text, trimmed.
    pub text: String,
    /// The part before the options and the price: "i need a heat resistant hair extension".
    pub base: String,
    /// The wanted (option name, value) pairs, in the text's order.
    pub options: Vec<(String, String)>,
    /// The price cap, when the text names one.
    pub price_cap: Option<f64>,
}

impl Instruction {
    /// Reads `{base}{ with n: v, and n: v}{, and price lower than U dollars}`.
    pub fn parse(text: &str) -> Self {
        let mut rest = text.trim().trim_end_matches('.');
        let mut price_cap = None;
        if let Some(at) = rest.rfind(", and price lower than ") {
            let tail = &rest[at + ", and price lower than ".len()..];
            if let Some(number) = tail.strip_suffix(" dollars") {
                if let Ok(cap) = number.trim().parse::<f64>() {
                    price_cap = Some(cap);
                    rest = &rest[..at];
                }
            }
        }
        // The options start at the first " with " whose remainder is a list of "name: value" items.
        let mut options = Vec::new();
        let mut base = rest;
        for (at, _) in rest.match_indices(" with ") {
            let items: Vec<&str> = rest[at + " with ".len()..].split(", and ").collect();
            let parsed: Option<Vec<(String, String)>> = items
                .iter()
                .map(|item| item.split_once(": ").map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
                .collect();
            if let Some(parsed) = parsed {
                options = parsed;
                base = &rest[..at];
                break;
            }
        }
        Self { text: text.trim().to_owned(), base: base.trim().to_owned(), options, price_cap }
    }

    /// The key words: the base's and the wanted values' words without the faithful expert's stop words, in order,
    /// once each. The faithful expert's query, to the letter.
    pub fn key_words(&self) -> String {
        let values = self.options.iter().map(|(_, v)| v.as_str());
        content_words(std::iter::once(self.base.as_str()).chain(values)).join(" ")
    }

    /// Whether a shown price is at most the cap (a range by its upper end, so that any paid price is), as
    /// WebShop's reward compares (`price <= price_upper`).
    pub fn affordable(&self, listing: &Listing) -> bool {
        self.price_cap.is_none_or(|cap| listing.high <= cap)
    }
}

fn content_words<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in texts.flat_map(tokenize) {
        if !STOP_WORDS.contains(&word.as_str()) && !words.contains(&word) {
            words.push(word);
        }
    }
    words
}

/// A product as a results page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The ASIN as shown (upper case).
    pub asin: String,
    /// The title.
    pub title: String,
    /// The shown price, or the lower end of a range.
    pub low: f64,
    /// The shown price, or the upper end of a range.
    pub high: f64,
}

/// What a page shows, read from its text.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// The search page.
    Search,
    /// A results page: its number (from 1), the total of results, and its listings in order.
    Results { page: usize, total: usize, listings: Vec<Listing> },
    /// An item page: the elements between `< Prev` and the title (option names and values).
    Item { elements: Vec<String> },
    /// A description, features or reviews page, or anything else.
    Other,
}

/// Reads a page's text: its instruction and what it shows (`None` for a page without an instruction, such as
/// the done page or an explanation of an invalid action).
pub fn read_page(observation: &str) -> Option<(Instruction, Shown)> {
    let parts: Vec<&str> = observation.trim().split(" [SEP] ").collect();
    let start = parts.iter().position(|p| *p == "Instruction:")?;
    let instruction = Instruction::parse(parts.get(start + 1)?);
    let rest = &parts[start + 2..];
    if rest == ["Search"] {
        return Some((instruction, Shown::Search));
    }
    if let Some((page, total)) = rest.iter().find_map(|p| page_count(p)) {
        let first = rest.iter().position(|p| *p == "Next >").map_or(rest.len(), |i| i + 1);
        let listings = rest[first..]
            .chunks_exact(3)
            .filter_map(|c| {
                let (low, high) = price_text(c[2])?;
                Some(Listing { asin: c[0].to_owned(), title: c[1].to_owned(), low, high })
            })
            .collect();
        return Some((instruction, Shown::Results { page, total, listings }));
    }
    if rest.last() == Some(&"Buy Now") {
        let from = rest.iter().position(|p| *p == "< Prev").map_or(0, |i| i + 1);
        // The title precedes "Price: ...".
        let to = rest.iter().position(|p| p.starts_with("Price: ")).map_or(from, |i| i.saturating_sub(1)).max(from);
        let elements = rest[from..to].iter().map(|p| (*p).to_owned()).collect();
        return Some((instruction, Shown::Item { elements }));
    }
    Some((instruction, Shown::Other))
}

/// "Page 2 (Total results: 50)" -> (2, 50).
fn page_count(text: &str) -> Option<(usize, usize)> {
    let rest = text.strip_prefix("Page ")?;
    let (page, rest) = rest.split_once(" (Total results: ")?;
    Some((page.parse().ok()?, rest.strip_suffix(')')?.parse().ok()?))
}

/// "$12.50" -> (12.5, 12.5); "$10.00 to $14.20" -> (10.0, 14.2).
fn price_text(text: &str) -> Option<(f64, f64)> {
    let dollars = |t: &str| t.trim().strip_prefix('$')?.parse::<f64>().ok();
    match text.split_once(" to ") {
        Some((low, high)) => Some((dollars(low)?, dollars(high)?)),
        None => dollars(text).map(|p| (p, p)),
    }
}

/// The argument of `click[x]`.
fn clicked(action: &str) -> Option<&str> {
    action.strip_prefix("click[")?.strip_suffix(']')
}

/// The visible expert's (thought, action) given the current page's text, the actions taken so far as the
/// prompt's history shows them (only the last two are read) and the results a page shows (the config's
/// `results_per_page`, which says whether a results page is the last one).
pub fn visible_step(observation: &str, history: &[&str], per_page: usize) -> (String, String) {
    let last = history.last().copied().unwrap_or_default();
    let before_last = history.len().checked_sub(2).map_or("", |i| history[i]);
    let Some((instruction, shown)) = read_page(observation) else {
        return ("I will go back.".into(), "click[< prev]".into());
    };
    let query = &instruction.text;
    match shown {
        Shown::Search => ("I will search for the instruction.".into(), format!("search[{query}]")),
        Shown::Results { page, total, listings } => {
            // Back from a product that lacked a wanted value: only the products listed after it count.
            let skip = match (clicked(before_last), last) {
                (Some(previous), "click[< prev]") => {
                    listings.iter().position(|l| l.asin.eq_ignore_ascii_case(previous)).map_or(0, |i| i + 1)
                }
                _ => 0,
            };
            let candidates = &listings[skip.min(listings.len())..];
            if let Some(hit) = candidates.iter().find(|l| instruction.affordable(l)) {
                let thought = match instruction.price_cap {
                    Some(cap) => format!("The first result at most {cap:.2} dollars."),
                    None => "The first result.".to_owned(),
                };
                return (thought, format!("click[{}]", hit.asin));
            }
            if page * per_page < total {
                return ("No result here is cheap enough; next page.".into(), "click[next >]".into());
            }
            match candidates.first() {
                Some(hit) => ("The first result left.".into(), format!("click[{}]", hit.asin)),
                None => ("Nothing is left here; I will search again.".into(), format!("search[{query}]")),
            }
        }
        Shown::Item { elements } => {
            let wanted: Vec<&str> = instruction.options.iter().map(|(_, v)| v.as_str()).collect();
            if let Some(missing) = wanted.iter().find(|v| !elements.iter().any(|e| e == *v)) {
                return (format!("It has no {missing}; I will go back."), "click[< prev]".into());
            }
            let next = wanted.iter().position(|v| clicked(last) == Some(*v)).map_or(0, |i| i + 1);
            match wanted.get(next) {
                Some(value) => (format!("The instruction asks for {value}."), format!("click[{value}]")),
                None => ("Every wanted option is selected; I will buy it.".into(), "click[buy now]".into()),
            }
        }
        Shown::Other => ("I will go back.".into(), "click[< prev]".into()),
    }
}
