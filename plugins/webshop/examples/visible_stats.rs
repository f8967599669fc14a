//! Success and decision statistics of WebShop policies that read only the page text (`expert = "visible"` and
//! simpler ones), against the faithful expert:
//! `cargo run --release -p atod-plugin-webshop --example visible_stats [-- SPLIT EPISODES [why | queries]]`.

use std::collections::BTreeMap;

use atod_core::{ActionFormat, Environment};
use atod_envs::PluginEnvironment;
use atod_plugin_webshop::visible::{read_page, visible_step, Instruction, Shown};
use atod_plugin_webshop::WebShopEnv;

/// A policy: (page text, history of actions) -> action.
type Policy = fn(&str, &[&str]) -> String;

fn visible(observation: &str, history: &[&str]) -> String {
    visible_step(observation, history, atod_plugin_webshop::pages::RESULTS_PER_PAGE).1
}

/// Search the key words, open the first result, click the wanted values the item lists, buy.
fn simple(observation: &str, history: &[&str]) -> String {
    let last = history.last().copied().unwrap_or_default();
    match read_page(observation) {
        Some((instruction, Shown::Search)) => format!("search[{}]", instruction.key_words()),
        Some((_, Shown::Results { listings, .. })) => {
            listings.first().map_or("click[back to search]".into(), |l| format!("click[{}]", l.asin.to_lowercase()))
        }
        Some((instruction, Shown::Item { elements })) => item_options(&instruction, &elements, last),
        _ => "click[< prev]".into(),
    }
}

/// Search the key words, open the first result under the cap, click the wanted values the item lists, buy.
fn first_affordable(observation: &str, history: &[&str]) -> String {
    let last = history.last().copied().unwrap_or_default();
    match read_page(observation) {
        Some((instruction, Shown::Results { listings, .. })) => listings
            .iter()
            .find(|l| instruction.affordable(l))
            .or(listings.first())
            .map_or("click[back to search]".into(), |l| format!("click[{}]", l.asin.to_lowercase())),
        Some((instruction, Shown::Item { elements })) => item_options(&instruction, &elements, last),
        _ => simple(observation, history),
    }
}

fn item_options(instruction: &Instruction, elements: &[String], last: &str) -> String {
    let wanted: Vec<&str> = instruction.options.iter().map(|(_, v)| v.as_str()).collect();
    let next = wanted.iter().position(|v| last == format!("click[{v}]")).map_or(0, |i| i + 1);
    match wanted[next..].iter().find(|v| elements.iter().any(|e| e == *v)) {
        Some(v) => format!("click[{v}]"),
        None => "click[buy now]".into(),
    }
}

#[derive(Default)]
struct Stats {
    episodes: usize,
    won: usize,
    score: f64,
    turns: usize,
    max_turns: usize,
    actions: BTreeMap<String, usize>,
    /// Rank (1-based, over all pages) of the products opened.
    opened_rank: BTreeMap<usize, usize>,
    turn_hist: BTreeMap<usize, usize>,
}

fn kind(action: &str) -> String {
    let arg = action.strip_prefix("click[").and_then(|a| a.strip_suffix(']'));
    match arg {
        None => "search".into(),
        Some(a) if a.len() == 10 && a.to_lowercase().starts_with("b0") => "click asin".into(),
        Some(a @ ("buy now" | "next >" | "< prev" | "back to search")) => a.into(),
        Some(_) => "click option".into(),
    }
}

fn play(env: &mut WebShopEnv, split: &str, n: u64, policy: Option<Policy>) -> Stats {
    let mut stats = Stats::default();
    for index in 0..n {
        let mut observation = env.reset(split, index, 0).unwrap();
        let mut history: Vec<String> = Vec::new();
        let mut turns = 0;
        loop {
            let action = match policy {
                Some(policy) => {
                    let h: Vec<&str> = history.iter().map(String::as_str).collect();
                    policy(&observation, &h)
                }
                None => {
                    let response = env.expert_action().unwrap().unwrap();
                    atod_core::extract_think_action(&response, true).unwrap()
                }
            };
            *stats.actions.entry(kind(&action)).or_default() += 1;
            if kind(&action) == "click asin" {
                if let Some((_, Shown::Results { page, listings, .. })) = read_page(&observation) {
                    let i = listings.iter().position(|l| l.asin.eq_ignore_ascii_case(&action[6..16])).unwrap();
                    *stats.opened_rank.entry((page - 1) * 10 + i + 1).or_default() += 1;
                }
            }
            let r = env.step(&ActionFormat::ThinkAction.wrap(&action, "t")).unwrap();
            turns += 1;
            history.push(if r.valid { r.action.clone() } else { String::new() });
            observation = r.observation;
            if r.done {
                stats.won += usize::from(r.won);
                stats.score += r.score;
                break;
            }
        }
        stats.episodes += 1;
        stats.turns += turns;
        stats.max_turns = stats.max_turns.max(turns);
        *stats.turn_hist.entry(turns).or_default() += 1;
    }
    stats
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let split = args.get(1).map_or("eval", String::as_str);
    let n: u64 = args.get(2).map_or(1000, |a| a.parse().unwrap());
    let policies: [(&str, &str, Option<Policy>); 5] = [
        ("faithful expert", "", None),
        ("visible expert (env)", "expert = \"visible\"", None),
        ("visible_step", "", Some(visible)),
        ("simple: first result", "", Some(simple)),
        ("first result under the cap", "", Some(first_affordable)),
    ];
    if args.get(3).map(String::as_str) == Some("queries") {
        for (name, policy) in
            [("query = whole instruction", verbatim as Policy), ("query = instruction without price", no_price)]
        {
            let s = play(&mut WebShopEnv::create("").unwrap(), split, n, Some(policy));
            println!(
                "{name:36} {split} n={} success {:.1}% turns {:.2}",
                s.episodes,
                100.0 * s.won as f64 / s.episodes as f64,
                s.turns as f64 / s.episodes as f64
            );
        }
        return;
    }
    if args.get(3).map(String::as_str) == Some("why") {
        failures(split, n, first_affordable);
        failures(split, n, visible);
        return;
    }
    for (name, config, policy) in policies {
        let mut env = WebShopEnv::create(config).unwrap();
        let s = play(&mut env, split, n, policy);
        let top: Vec<String> = s.opened_rank.iter().take(12).map(|(r, c)| format!("{r}:{c}")).collect();
        println!(
            "{name:28} {split} n={} success {:.1}% score {:.3} turns mean {:.2} max {} | turns {:?} | actions {:?} | opened rank {}",
            s.episodes,
            100.0 * s.won as f64 / s.episodes as f64,
            s.score / s.episodes as f64,
            s.turns as f64 / s.episodes as f64,
            s.max_turns,
            s.turn_hist,
            s.actions,
            top.join(" ")
        );
    }
}

/// Why `policy` loses: the reward terms of its failed purchases.
fn failures(split: &str, n: u64, policy: Policy) {
    let mut env = WebShopEnv::create("").unwrap();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for index in 0..n {
        let mut observation = env.reset(split, index, 0).unwrap();
        let goal = env.goal().unwrap().clone();
        let mut history: Vec<String> = Vec::new();
        let mut opened = None;
        let mut chosen: Vec<String> = Vec::new();
        loop {
            let h: Vec<&str> = history.iter().map(String::as_str).collect();
            let action = policy(&observation, &h);
            if kind(&action) == "click asin" {
                opened = Some(action[6..16].to_uppercase());
                chosen.clear();
            }
            if kind(&action) == "click option" {
                chosen.push(action[6..action.len() - 1].to_owned());
            }
            let r = env.step(&ActionFormat::ThinkAction.wrap(&action, "t")).unwrap();
            history.push(r.action.clone());
            observation = r.observation;
            if r.done {
                if !r.won {
                    let cat = env.catalogue();
                    let reason = match &opened {
                        None => "never opened".to_owned(),
                        Some(asin) => {
                            let bought = cat.products.iter().find(|p| &p.asin == asin).unwrap();
                            let c: Vec<&str> = chosen.iter().map(String::as_str).collect();
                            let p = atod_plugin_webshop::reward::reward(bought, &c, &goal, cat.target(&goal));
                            let range = matches!(bought.price_tag, atod_plugin_webshop::catalogue::PriceTag::Range(..));
                            format!(
                                "attr {}/{} opt {}/{} price {} (range {range}) r_type {}",
                                p.n_attr_match,
                                goal.attributes.len(),
                                p.n_opt_match,
                                goal.options.len(),
                                p.r_price,
                                p.r_type
                            )
                        }
                    };
                    *reasons.entry(reason).or_default() += 1;
                }
                break;
            }
        }
    }
    println!("failure reasons: {reasons:#?}");
}

/// The visible expert, searching with the whole instruction as the page shows it.
fn verbatim(observation: &str, history: &[&str]) -> String {
    match read_page(observation) {
        Some((_, Shown::Search)) => {
            let instruction = observation.split(" [SEP] ").nth(2).unwrap_or_default();
            format!("search[{instruction}]")
        }
        _ => visible(observation, history),
    }
}

/// The visible expert, searching with the instruction without its price clause.
fn no_price(observation: &str, history: &[&str]) -> String {
    match read_page(observation) {
        Some((_, Shown::Search)) => {
            let instruction = observation.split(" [SEP] ").nth(2).unwrap_or_default();
            let cut = instruction.rfind(", and price lower than").unwrap_or(instruction.len());
            format!("search[{}]", &instruction[..cut])
        }
        _ => visible(observation, history),
    }
}
