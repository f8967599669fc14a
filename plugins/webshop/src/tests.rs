//! Tests of the webshop environment through the Rust trait (the ABI is exercised by the bench and the `tests`
//! crate).

use expect_test::expect;
use proptest::prelude::*;

use super::*;
use crate::catalogue::{PriceTag, Product};
use crate::reward::{normalize_color, reward, token_set_ratio};

fn env() -> WebShopEnv {
    WebShopEnv::create("").unwrap()
}

fn think(action: &str) -> String {
    ActionFormat::ThinkAction.wrap(action, "t")
}

/// Plays the expert on one task and returns the last step.
fn run_expert(env: &mut WebShopEnv, split: &str, index: u64, seed: u64) -> StepResult {
    env.reset(split, index, seed).unwrap();
    loop {
        let r = env.step(&env.expert_action().unwrap().unwrap()).unwrap();
        assert!(r.valid, "{split} {index}: {}", r.observation);
        if r.done {
            return r;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The reward, term by term. The target and goal below are built by hand so that every expected value can be
// worked out in the comments.

fn product(title: &str, nouns: &[&str], category: &str, query: &str, attributes: &[&str], price: f64) -> Product {
    Product {
        asin: "B000000000".into(),
        title: title.into(),
        category: category.into(),
        query: query.into(),
        description: String::new(),
        features: Vec::new(),
        attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
        options: vec![
            ("color".into(), vec!["dark brown".into(), "ash blonde".into(), "chocolate brown".into()]),
            ("size".into(), vec!["14 inch".into(), "18 inch".into()]),
        ],
        price_tag: PriceTag::Single(price),
        price,
        title_nouns: nouns.iter().map(|n| (*n).to_owned()).collect(),
        instruction_attributes: Vec::new(),
        instruction: String::new(),
    }
}

const HAIR: &str = "beauty & personal care › hair care › hair extensions";

/// The target: five title nouns, so that one shared noun gives title_score 0.2 exactly.
fn target() -> Product {
    product(
        "Lumo Hair Extension Clip Set",
        &["lumo", "hair", "extension", "clip", "set"],
        HAIR,
        "hair extensions",
        &["tangle free", "natural looking"],
        25.0,
    )
}

/// Two attributes, two options and a price cap of 30: the denominator is 2 + 2 + 1 = 5.
fn goal() -> Goal {
    Goal {
        product: 0,
        instruction: String::new(),
        attributes: vec!["tangle free".into(), "natural looking".into()],
        options: vec![("color".into(), "dark brown".into()), ("size".into(), "18 inch".into())],
        price_upper: 30.0,
        weight: 1.0,
    }
}

const WANTED: [&str; 2] = ["dark brown", "18 inch"];

#[test]
fn token_set_ratio_follows_fuzzywuzzy() {
    // Intersection "black", rests "onyx" / "matte": ratio("black", "black onyx") = 2*5/15 = 66.7 -> 67 is the max.
    assert_eq!(token_set_ratio("black onyx", "matte black"), 67);
    // "easy to" vs "easy to use": 2*7/18 = 77.8 -> 78.
    assert_eq!(token_set_ratio("easy to clean", "easy to use"), 78);
    // One token set inside the other scores 100; punctuation and case are processed away.
    assert_eq!(token_set_ratio("natural", "Natural Looking"), 100);
    assert_eq!(token_set_ratio("non-slip", "non slip"), 100);
    // "water resistant" vs "water resistent": LCS 14 of 30 characters, 28/30 = 93.3 -> 93.
    assert_eq!(token_set_ratio("water resistant", "water resistent"), 93);
    assert_eq!(token_set_ratio("", "x"), 0);
    // WebShop's own normalize_color tests.
    for (text, expected) in [
        ("", ""),
        ("black forest", "black"),
        ("violet lavender", "lavender"),
        ("steelivy fuchsia", "fuchsia"),
        ("123alabaster", "alabaster"),
        ("webshop", "webshop"),
    ] {
        assert_eq!(normalize_color(text), expected);
    }
}

#[test]
fn reward_full_match_is_one() {
    // (2 attributes + 2 options + price) / 5 * r_type 1 = 1.
    let parts = reward(&target(), &WANTED, &goal(), &target());
    assert_eq!(
        (parts.n_attr_match, parts.n_opt_match, parts.r_price, parts.r_type, parts.total),
        (2, 2, true, 1.0, 1.0)
    );
}

#[test]
fn reward_attribute_by_fuzzy_match() {
    // "natural lookin" vs "natural looking": 2*14/29 = 96.6 -> 97 > 85, so it matches; "tangle free" is nowhere
    // in the product (its text is empty): (1 + 2 + 1) / 5 = 0.8.
    let bought = product(
        "Lumo Hair Extension Clip Set",
        &["lumo", "hair", "extension", "clip", "set"],
        HAIR,
        "hair extensions",
        &["natural lookin"],
        25.0,
    );
    let parts = reward(&bought, &WANTED, &goal(), &target());
    assert_eq!((parts.n_attr_match, parts.total), (1, 0.8));
    // "easy to clean" vs "tangle free" shares nothing: 0 + 2 + 1 over 5 = 0.6.
    let bought = product(
        "Lumo Hair Extension Clip Set",
        &["lumo", "hair", "extension", "clip", "set"],
        HAIR,
        "hair extensions",
        &["easy to clean"],
        25.0,
    );
    assert_eq!(reward(&bought, &WANTED, &goal(), &target()).total, 0.6);
}

#[test]
fn reward_attribute_by_substring() {
    // No attributes at all, but the description holds both phrases: 5 / 5.
    let mut bought = product(
        "Lumo Hair Extension Clip Set",
        &["lumo", "hair", "extension", "clip", "set"],
        HAIR,
        "hair extensions",
        &[],
        25.0,
    );
    bought.description = "A Tangle Free wig that is natural looking.".into();
    assert_eq!(reward(&bought, &WANTED, &goal(), &target()).n_attr_match, 2);
    // Only the title (lower-cased) holds one: 4 / 5.
    bought.description.clear();
    bought.title = "Lumo Tangle Free Hair Extension Clip Set".into();
    let parts = reward(&bought, &WANTED, &goal(), &target());
    assert_eq!((parts.n_attr_match, parts.total), (1, 0.8));
    // Only a feature holds it.
    bought.title = "Lumo Hair Extension Clip Set".into();
    bought.features = vec!["NATURAL LOOKING - soft".into()];
    assert_eq!(reward(&bought, &WANTED, &goal(), &target()).n_attr_match, 1);
}

#[test]
fn reward_option_after_colour_normalisation() {
    // "chocolate brown" and "dark brown" both normalise to "brown" (it precedes "chocolate" and "dark" in
    // COLOR_SET), so they match, although their raw token-set ratio is only 67.
    assert_eq!(token_set_ratio("chocolate brown", "dark brown"), 67);
    let parts = reward(&target(), &["chocolate brown", "18 inch"], &goal(), &target());
    assert_eq!((parts.n_opt_match, parts.total), (2, 1.0));
    // "ash blonde" normalises to "ash": no match, (2 + 1 + 1) / 5 = 0.8.
    assert_eq!(reward(&target(), &["ash blonde", "18 inch"], &goal(), &target()).total, 0.8);
    // Nothing selected: (2 + 0 + 1) / 5 = 0.6.
    assert_eq!(reward(&target(), &[], &goal(), &target()).total, 0.6);
}

#[test]
fn reward_price() {
    // Price 35 above the cap 30: (2 + 2 + 0) / 5 = 0.8; exactly at the cap passes.
    let mut bought = target();
    bought.price = 35.0;
    let parts = reward(&bought, &WANTED, &goal(), &target());
    assert_eq!((parts.r_price, parts.total), (false, 0.8));
    bought.price = 30.0;
    assert_eq!(reward(&bought, &WANTED, &goal(), &target()).total, 1.0);
}

#[test]
fn reward_type_levels() {
    let attrs = &["tangle free", "natural looking"];
    let r_type = |bought: &Product, target: &Product| {
        let parts = reward(bought, &WANTED, &goal(), target);
        // Every other term is full, so the total is r_type itself.
        assert_eq!(parts.total, parts.r_type);
        (parts.r_type, parts.title_score)
    };
    let other_category = "clothing › hair accessories › clips";
    // One of five goal nouns shared: title_score 0.2, not above 0.2.
    let one_noun = &["hair", "bow"][..];
    // Same query: 1.0.
    assert_eq!(r_type(&product("x", one_noun, other_category, "hair extensions", attrs, 25.0), &target()), (1.0, 0.2));
    // Category paths share two parts ("beauty & personal care", "hair care"): 1.0.
    let near = "beauty & personal care › hair care › wigs";
    assert_eq!(r_type(&product("x", one_noun, near, "wigs", attrs, 25.0), &target()), (1.0, 0.2));
    // Neither, and title_score 0.2 is not above 0.2: 0.5.
    assert_eq!(r_type(&product("x", one_noun, other_category, "hair clips", attrs, 25.0), &target()), (0.5, 0.2));
    // Two of five nouns: 0.4 > 0.2 is enough on its own: 1.0.
    assert_eq!(
        r_type(&product("x", &["hair", "clip"], other_category, "hair clips", attrs, 25.0), &target()),
        (1.0, 0.4)
    );
    // One of eleven goal nouns: 1/11 = 0.09 < 0.1 gives 0.1 even with the same query.
    let eleven = &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "hair"][..];
    let big = product("x", eleven, HAIR, "hair extensions", attrs, 25.0);
    assert_eq!(r_type(&product("x", one_noun, HAIR, "hair extensions", attrs, 25.0), &big), (0.1, 1.0 / 11.0));
    // No shared noun: 0 even with the same query and category.
    assert_eq!(r_type(&product("x", &["bow"], HAIR, "hair extensions", attrs, 25.0), &target()), (0.0, 0.0));
    // A goal title without nouns scores 0.2: 0.5 without a query or category match.
    let no_nouns = product("x", &[], HAIR, "hair extensions", attrs, 25.0);
    assert_eq!(r_type(&product("x", &["bow"], other_category, "bows", attrs, 25.0), &no_nouns), (0.5, 0.2));
}

// ---------------------------------------------------------------------------------------------------------------
// Pages.

/// Runs `actions` (bare, wrapped in the think-action format) on test task 0 and shows each observation.
fn walk(actions: &[&str]) -> String {
    let mut env = env();
    let mut out = format!("{}\n", env.reset("test", 0, 0).unwrap());
    for action in actions {
        let r = env.step(&think(action)).unwrap();
        out += &format!("> {action} (valid {}, reward {}, done {})\n{}\n", r.valid, r.reward, r.done, r.observation);
    }
    out
}

#[test]
fn search_and_results_pages() {
    let env = env();
    let goal = &env.catalogue().goals[0];
    let query = expert::key_words(goal, env.catalogue().target(goal));
    expect![[r#"
        WebShop [SEP] Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Search
        > search[wrinkle free bed sheet set navy king] (valid true, reward 0, done false)
        Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] B0U5HDHVFW [SEP] Dorso Hypoallergenic Bed Sheet Set, Wrinkle Free [SEP] $57.48 [SEP] B02K42AUUS [SEP] Dorso Hypoallergenic Bed Sheet Set, Wrinkle Free [SEP] $63.32 [SEP] B0337935BL [SEP] Xasta Fade Resistant Bed Sheet Set, Wrinkle Free [SEP] $37.80 to $54.72 [SEP] B06KEH7FR4 [SEP] Xasta Fade Resistant Bed Sheet Set, Wrinkle Free [SEP] $44.13 to $63.89 [SEP] B02SHMP060 [SEP] Xasta Fade Resistant Bed Sheet Set, Wrinkle Free [SEP] $47.87 to $69.31 [SEP] B0RNVKGQ26 [SEP] Trisoco Fade Resistant Bed Sheet Set, Hypoallergenic [SEP] $33.46 to $48.73 [SEP] B0BD2GSHU8 [SEP] Nolumi Machine Washable Bed Sheet Set, Hypoallergenic [SEP] $80.62 [SEP] B08ZA4Y3EU [SEP] Nolumi Machine Washable Bed Sheet Set, Hypoallergenic [SEP] $90.13 [SEP] B0TCVKLQS9 [SEP] Mokiso Hypoallergenic Bed Sheet Set, Machine Washable [SEP] $67.91 [SEP] B0V07867U6 [SEP] Mokiso Hypoallergenic Bed Sheet Set, Machine Washable [SEP] $79.29
        > click[next >] (valid true, reward 0, done false)
        Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Back to Search [SEP] Page 2 (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] B0YZQGY2H5 [SEP] Nolumi Machine Washable Bed Sheet Set, Hypoallergenic [SEP] $77.37 [SEP] B0DU3TK2PV [SEP] Vera Deep Pocket Bed Sheet Set, Breathable Cotton [SEP] $85.77 [SEP] B0D8HFQX4M [SEP] Vera Deep Pocket Bed Sheet Set, Breathable Cotton [SEP] $77.37 [SEP] B0VF5F9PLA [SEP] Vera Deep Pocket Bed Sheet Set, Breathable Cotton [SEP] $80.33 [SEP] B0L3WKA9FF [SEP] Quilu Machine Washable Bed Sheet Set, Hypoallergenic [SEP] $27.97 [SEP] B0HAHYXZL8 [SEP] Dormo Fade Resistant Bed Sheet Set, Breathable Cotton [SEP] $57.59 [SEP] B0DR5QK32U [SEP] Dorlu Wrinkle Free Bed Sheet Set, Machine Washable [SEP] $86.32 to $132.46 [SEP] B0MAFSNVZ6 [SEP] Xacofa Wrinkle Free Bed Sheet Set, Deep Pocket [SEP] $26.81 to $40.20 [SEP] B0EN5KZTN9 [SEP] Dorlu Wrinkle Free Bed Sheet Set, Machine Washable [SEP] $80.15 to $122.99 [SEP] B03B68UW34 [SEP] Dorlu Wrinkle Free Bed Sheet Set, Machine Washable [SEP] $93.93 to $144.13
    "#]].assert_eq(&walk(&[&format!("search[{query}]"), "click[next >]"]));
}

#[test]
fn item_and_sub_pages() {
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    let goal = env.goal().unwrap().clone();
    let asin = env.catalogue().target(&goal).asin.to_lowercase();
    let query = expert::key_words(&goal, env.catalogue().target(&goal));
    let search = format!("search[{query}]");
    // The expert's query finds the target on the first page.
    let click = format!("click[{asin}]");
    let text =
        walk(&[&search, &click, "click[description]", "click[< prev]", "click[features]", "click[back to search]"]);
    expect![[r#"
        WebShop [SEP] Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Search
        > search[wrinkle free bed sheet set navy king] (valid true, reward 0, done false)
        Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] B0U5HDHVFW [SEP] Dorso Hypoallergenic Bed Sheet Set, Wrinkle Free [SEP] $57.48 [SEP] B02K42AUUS [SEP] Dorso Hypoallergenic Bed Sheet Set, Wrinkle Free [SEP] $63.32 [SEP] B0337935BL [SEP] Xasta Fade Resistant Bed Sheet Set, Wrinkle Free [SEP] $37.80 to $54.72 [SEP] B06KEH7FR4 [SEP] Xasta Fade Resistant Bed Sheet Set, Wrinkle Free [SEP] $44.13 to $63.89 [SEP] B02SHMP060 [SEP] Xasta Fade Resistant Bed Sheet Set, Wrinkle Free [SEP] $47.87 to $69.31 [SEP] B0RNVKGQ26 [SEP] Trisoco Fade Resistant Bed Sheet Set, Hypoallergenic [SEP] $33.46 to $48.73 [SEP] B0BD2GSHU8 [SEP] Nolumi Machine Washable Bed Sheet Set, Hypoallergenic [SEP] $80.62 [SEP] B08ZA4Y3EU [SEP] Nolumi Machine Washable Bed Sheet Set, Hypoallergenic [SEP] $90.13 [SEP] B0TCVKLQS9 [SEP] Mokiso Hypoallergenic Bed Sheet Set, Machine Washable [SEP] $67.91 [SEP] B0V07867U6 [SEP] Mokiso Hypoallergenic Bed Sheet Set, Machine Washable [SEP] $79.29
        > click[b0v07867u6] (valid true, reward 0, done false)
        Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Back to Search [SEP] < Prev [SEP] color [SEP] white [SEP] light grey [SEP] sage green [SEP] navy [SEP] ivory [SEP] size [SEP] twin [SEP] full [SEP] queen [SEP] king [SEP] Mokiso Hypoallergenic Bed Sheet Set, Machine Washable [SEP] Price: $79.29 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now
        > click[description] (valid true, reward 0, done false)
        Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Back to Search [SEP] < Prev [SEP] The Mokiso bed sheet set is hypoallergenic, machine washable and wrinkle free. Every piece is made to a high standard and packed with care.
        > click[< prev] (valid true, reward 0, done false)
        Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Back to Search [SEP] < Prev [SEP] color [SEP] white [SEP] light grey [SEP] sage green [SEP] navy [SEP] ivory [SEP] size [SEP] twin [SEP] full [SEP] queen [SEP] king [SEP] Mokiso Hypoallergenic Bed Sheet Set, Machine Washable [SEP] Price: $79.29 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now
        > click[features] (valid true, reward 0, done false)
        Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Back to Search [SEP] < Prev [SEP] HYPOALLERGENIC - designed with care for daily life [SEP] MACHINE WASHABLE - quality checked before shipping [SEP] WRINKLE FREE - backed by a 30-day return policy
        > click[back to search] (valid true, reward 0, done false)
        WebShop [SEP] Instruction: [SEP] find me a wrinkle free bed sheet set with color: navy, and size: king, and price lower than 100.00 dollars [SEP] Search
    "#]].assert_eq(&text);
}

#[test]
fn prev_from_a_sub_page_returns_to_the_item_with_its_selection() {
    let mut env = env();
    env.reset("test", 3, 0).unwrap();
    let goal = env.goal().unwrap().clone();
    let target = env.catalogue().target(&goal).clone();
    env.step(&think(&format!("search[{}]", target.title.to_lowercase()))).unwrap();
    let item = env.step(&think(&format!("click[{}]", target.asin.to_lowercase()))).unwrap().observation;
    let value = &target.options[0].1[0];
    env.step(&think(&format!("click[{value}]"))).unwrap();
    let reviews = env.step(&think("click[reviews]")).unwrap().observation;
    assert!(reviews.ends_with("Back to Search [SEP] < Prev"), "{reviews}");
    let back = env.step(&think("click[< prev]")).unwrap().observation;
    assert_eq!(back, item);
    assert_eq!(env.episode.as_ref().unwrap().selected.values().next(), Some(value));
    // `< prev` on the item returns to the results page it was opened from.
    let results = env.step(&think("click[< prev]")).unwrap().observation;
    assert!(results.contains("Page 1 (Total results: "), "{results}");
}

#[test]
fn paging_shows_ten_results_and_next_on_every_page_as_webshop() {
    let mut env = env();
    env.reset("test", 1, 0).unwrap();
    let r = env.step(&think("search[free]")).unwrap();
    assert!(r.observation.contains("Page 1 (Total results: 50) [SEP] Next > [SEP]"), "{}", r.observation);
    let mut seen = Vec::new();
    for page in 1..=5 {
        let view = env.view(env.episode.as_ref().unwrap());
        seen.extend(view.page_results(page - 1).to_vec());
        assert_eq!(view.page_results(page - 1).len(), 10, "page {page}");
        let r = env.step(&think("click[next >]")).unwrap();
        assert!(r.valid);
        let header = format!("Page {} (Total results: 50) [SEP] < Prev [SEP] Next >", page + 1);
        assert!(r.observation.contains(&header), "{}", r.observation);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 50);
    // Past the last page, as WebShop's results_page.html (whose "Next >" is outside any condition): an empty page
    // that still offers "Next >".
    let view = env.view(env.episode.as_ref().unwrap());
    let past = view.render(env.episode.as_ref().unwrap().page);
    assert!(past.ends_with("Page 6 (Total results: 50) [SEP] < Prev [SEP] Next >"), "{past}");
    assert!(view.page_results(5).is_empty());
    let r = env.step(&think("click[< prev]")).unwrap();
    assert!(r.observation.contains("Page 5 (Total results: 50)"));
}

// ---------------------------------------------------------------------------------------------------------------
// Actions, invalid actions, determinism.

#[test]
fn malformed_responses_are_penalised_and_repeat_the_page() {
    // As verl-agent's webshop_projection: no <action>...</action>, no <think>...</think> or CJK text is invalid.
    let mut env = env();
    let start = env.reset("test", 2, 0).unwrap();
    for response in ["search[x]", "<action>search[x]</action>", "<think>\u{4e70}</think><action>search[x]</action>"] {
        let r = env.step(response).unwrap();
        assert_eq!(
            (r.valid, r.reward, r.done, r.observation.as_str(), r.action.as_str()),
            (false, -0.1, false, start.as_str(), "")
        );
    }
}

#[test]
fn actions_the_page_cannot_perform_do_nothing_unpenalised() {
    // As WebAgentTextEnv.step: `status = dict(reward=0, done=False)` and the current page, a valid step.
    let mut env = env();
    let start = env.reset("test", 2, 0).unwrap();
    for action in ["buy it", "look[x]", "click[buy now]", "click[search]", "search[]", ""] {
        let r = env.step(&think(action)).unwrap();
        assert_eq!(
            (r.valid, r.reward, r.done, r.observation.as_str(), r.action.as_str()),
            (true, 0.0, false, start.as_str(), action)
        );
    }
    // On an item page: an unknown option value and a results-page ASIN leave the page and its selection alone.
    let goal = env.goal().unwrap().clone();
    let target = env.catalogue().target(&goal).clone();
    env.step(&think(&format!("search[{}]", target.title.to_lowercase()))).unwrap();
    env.step(&think(&format!("click[{}]", target.asin.to_lowercase()))).unwrap();
    let value = target.options[0].1[0].clone();
    let item = env.step(&think(&format!("click[{value}]"))).unwrap().observation;
    for action in ["click[no such colour]", &format!("click[{}]", target.asin.to_lowercase()), "click[next >]"] {
        let r = env.step(&think(action)).unwrap();
        assert_eq!((r.valid, r.reward, r.observation.as_str()), (true, 0.0, item.as_str()), "{action}");
    }
    assert_eq!(env.episode.as_ref().unwrap().selected.values().collect::<Vec<_>>(), [&value]);
}

#[test]
fn explain_invalid_actions_says_what_was_wrong() {
    let mut env = WebShopEnv::create("explain_invalid_actions = true").unwrap();
    let start = env.reset("test", 2, 0).unwrap();
    let offer = "On this page only search[your query] works.";
    let retry = "Reason inside <think>...</think>, then act inside <action>...</action>.";
    let cases = [
        (
            "search[x]".to_owned(),
            false,
            format!("Invalid action: the response has no <action>...</action>. {retry} {offer}"),
        ),
        (
            "<action>search[x]</action>".to_owned(),
            false,
            format!("Invalid action: the response has no <think>...</think> before the action. {retry} {offer}"),
        ),
        (
            think("buy it"),
            true,
            format!("Nothing happens: `buy it` is not of the form search[query] or click[x]. {offer}"),
        ),
        (think(""), true, format!("Nothing happens: `` is not of the form search[query] or click[x]. {offer}")),
        (
            think("look[x]"),
            true,
            format!("Nothing happens: `look` is not an action; use search[...] or click[...]. {offer}"),
        ),
        (think("click[buy now]"), true, format!("Nothing happens: `buy now` is not clickable on this page. {offer}")),
    ];
    for (response, valid, expected) in cases {
        let r = env.step(&response).unwrap();
        let reward = if valid { 0.0 } else { -0.1 };
        assert_eq!((r.valid, r.reward, r.done, r.observation.as_str()), (valid, reward, false, expected.as_str()));
        let view = env.view(env.episode.as_ref().unwrap());
        assert_eq!(view.render(env.episode.as_ref().unwrap().page), start);
    }
    // An echoed argument is cut: a 100 KB click does not come back as a 100 KB observation.
    let huge = format!("click[{}]", "x".repeat(100_000));
    let r = env.step(&think(&huge)).unwrap();
    assert!(r.observation.len() < 400, "{} bytes", r.observation.len());
    assert!(r.observation.starts_with(&format!("Nothing happens: `{}…` is not clickable", "x".repeat(80))));
    // On a results page the explanation lists the clickables.
    env.step(&think("search[free]")).unwrap();
    let r = env.step(&think("click[nope]")).unwrap();
    let expected = "Nothing happens: `nope` is not clickable on this page. This page offers search[your query] and \
                    click[x] for x in: back to search, next >, b0";
    assert!(r.observation.starts_with(expected), "{}", r.observation);
}

#[test]
fn a_search_for_white_space_finds_nothing() {
    // WebShop's pattern matches `search[   ]` and its text env searches for "   " (`action_arg != ''`), which
    // Lucene answers with no hits; a query without letters or digits is the same.
    let mut env = env();
    env.reset("test", 2, 0).unwrap();
    let instruction = env.goal().unwrap().instruction.clone();
    for action in ["search[   ]", "search[!!!]"] {
        let r = env.step(&think(action)).unwrap();
        // results_page.html offers "Next >" even with no results.
        let results = format!(
            "Instruction: [SEP] {instruction} [SEP] Back to Search [SEP] Page 1 (Total results: 0) [SEP] Next >"
        );
        assert_eq!((r.valid, r.reward, r.observation), (true, 0.0, results));
        assert_eq!(env.admissible_actions().unwrap().iter().filter(|a| a.starts_with("click")).count(), 2);
    }
    // The expert searches again from there.
    loop {
        let r = env.step(&env.expert_action().unwrap().unwrap()).unwrap();
        if r.done {
            assert!(r.won);
            break;
        }
    }
}

#[test]
fn the_done_page_has_the_fields_of_done_page_html() {
    // The target of test task 0 with a wrong colour and no size.
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    let goal = env.goal().unwrap().clone();
    let target = env.catalogue().target(&goal).clone();
    let open = [format!("search[{}]", target.title.to_lowercase()), format!("click[{}]", target.asin.to_lowercase())];
    for action in &open {
        env.step(&think(action)).unwrap();
    }
    env.step(&think("click[white]")).unwrap();
    let r = env.step(&think("click[buy now]")).unwrap();
    // One attribute and the price match, neither option: (1 + 0 + 1) / (1 + 2 + 1) = 0.5.
    assert_eq!((goal.attributes.len(), goal.options.len()), (1, 2));
    assert_eq!((r.done, r.won, r.reward, r.score), (true, false, 0.0, 0.5));
    // done_page.html's text nodes in order; the options as Flask's tojson writes them, the reward as str(float).
    expect![[r#"
        Thank you for shopping with us! [SEP] Your code: [SEP] None [SEP] (Paste it in your MTurk interface.) [SEP] Purchased [SEP] asin [SEP] B0V07867U6 [SEP] options [SEP] {"color": "white"} [SEP] attrs [SEP] None [SEP] category [SEP] None [SEP] query [SEP] None [SEP] product category [SEP] None [SEP] Target [SEP] asin [SEP] options [SEP] attrs [SEP] price upper [SEP] instuction text [SEP] category [SEP] product category [SEP] query [SEP] Goal [SEP] None [SEP] Reward [SEP] Your score (min 0.0, max 1.0) [SEP] 0.5 [SEP] Reward Details [SEP] None
    "#]]
    .assert_eq(&format!("{}\n", r.observation));
    // Nothing selected shows `{}`, as `{{ options | tojson }}` of an empty dict.
    env.reset("test", 0, 0).unwrap();
    for action in &open {
        env.step(&think(action)).unwrap();
    }
    let r = env.step(&think("click[buy now]")).unwrap();
    assert!(r.observation.contains("[SEP] options [SEP] {} [SEP] attrs [SEP]"), "{}", r.observation);
}

#[test]
fn the_done_page_writes_json_and_floats_as_flask_and_python() {
    // Flask's tojson: sorted keys, ASCII only (UTF-16 escapes), `<>&'` escaped; Python's str(float).
    let options: BTreeMap<String, &str> = [
        ("size".to_owned(), "28\" x 28\""),
        ("color".to_owned(), "caf\u{e9} & <cr\u{e8}me>'s"),
        ("Z".to_owned(), "\u{1f600}\\\n"),
    ]
    .into_iter()
    .collect();
    // Python: json.dumps(options, sort_keys=True), then jinja2's htmlsafe replacements.
    let expected = concat!(
        r#"{"Z": "\ud83d\ude00\\\n", "#,
        r#""color": "caf\u00e9 \u0026 \u003ccr\u00e8me\u003e\u0027s", "#,
        r#""size": "28\" x 28\""}"#
    );
    assert_eq!(pages::flask_tojson(&options), expected);
    assert_eq!(pages::flask_tojson(&BTreeMap::new()), "{}");
    for (value, python) in [
        (0.0, "0.0"),
        (1.0, "1.0"),
        (0.75, "0.75"),
        (2.0 / 3.0, "0.6666666666666666"),
        (0.1 / 3.0, "0.03333333333333333"),
        (0.0001, "0.0001"),
        (0.00005, "5e-05"),
        (1e16, "1e+16"),
    ] {
        assert_eq!(pages::python_float(value), python);
    }
}

#[test]
fn the_step_limit_ends_the_episode() {
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    for step in 1..=15 {
        let r = env.step(&think("search[socks]")).unwrap();
        assert_eq!(r.done, step == 15);
    }
    assert!(env.step(&think("search[socks]")).is_err());
}

#[test]
fn splits_config_and_determinism() {
    let env = env();
    let info = env.info();
    let sizes: Vec<(String, u64)> = info.splits.iter().map(|s| (s.name.clone(), s.size)).collect();
    let total = env.catalogue().goals.len() as u64;
    assert_eq!(sizes, [("train".to_owned(), total - 1500), ("eval".into(), 1000), ("test".into(), 500)]);
    assert!((6500..7500).contains(&total), "{total}");
    assert_eq!(env.catalogue().products.len(), 1000);
    let task = |split, index, seed| {
        let mut env = WebShopEnv::create("").unwrap();
        env.reset(split, index, seed).unwrap();
        env.prompt().unwrap().task
    };
    assert_eq!(task("train", 5, 1), task("train", 5, 1));
    assert_eq!(task("test", 5, 1), task("test", 5, 2));
    let err = WebShopEnv::create("max_step = 3").unwrap_err();
    assert!(err.contains("unknown field `max_step`"), "{err}");
    assert!(WebShopEnv::create("n_products = 10").unwrap_err().contains("n_products is 10, but must be from 300"));
    // Refused at load, before any catalogue is built (it used to abort on a 29.6 GB allocation).
    let started = std::time::Instant::now();
    let err = WebShopEnv::create("n_products = 100000000").unwrap_err();
    assert_eq!(err, "webshop config: n_products is 100000000, but must be from 300 to 1200000");
    assert!(started.elapsed().as_secs_f64() < 1.0);
    assert!(WebShopEnv::create("success_reward = nan").unwrap_err().contains("success_reward is NaN"));
    assert!(WebShopEnv::create("invalid_reward = inf").unwrap_err().contains("invalid_reward is inf"));
    let default: WebShopConfig = toml::from_str(&WebShopEnv::default_config()).unwrap();
    assert_eq!(default, WebShopConfig::default());
    let mut env = WebShopEnv::create("").unwrap();
    assert!(env.reset("test", 500, 0).is_err());
    assert!(env.reset("valid", 0, 0).is_err());
    assert!(env.step("x").is_err());
}

#[test]
fn the_catalogue_has_near_duplicates() {
    let env = env();
    let products = &env.catalogue().products;
    let twins = products.windows(2).filter(|w| w[0].title == w[1].title && w[0].asin != w[1].asin).count();
    assert!(twins > 200, "{twins}");
}

// ---------------------------------------------------------------------------------------------------------------
// Policies.

#[test]
fn expert_transcript_snapshot() {
    let mut env = env();
    let mut out = format!("{}\ntask: {}\n", env.reset("test", 7, 0).unwrap(), env.prompt().unwrap().task);
    loop {
        let response = env.expert_action().unwrap().unwrap();
        let r = env.step(&response).unwrap();
        out += &format!(
            "{response}\n(reward {}, score {}, done {}, won {})\n{}\n",
            r.reward, r.score, r.done, r.won, r.observation
        );
        if r.done {
            break;
        }
    }
    expect![[r#"
        WebShop [SEP] Instruction: [SEP] i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars [SEP] Search
        task: Your task is to: i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars.
        <think>I will search for the key words of the instruction: the product, its attributes and options.</think><action>search[green tea box fair trade lemon ginger 100 count]</action>
        (reward 0, score 0, done false, won false)
        Instruction: [SEP] i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] B0NHRRBEMW [SEP] Mive Fair Trade Green Tea Box, Caffeine Free [SEP] $18.72 [SEP] B0Z6UKDLLN [SEP] Somi Fair Trade Green Tea Box, Sugar Free [SEP] $5.77 to $7.60 [SEP] B0GHF8XMKD [SEP] Somi Fair Trade Green Tea Box, Sugar Free [SEP] $6.76 to $8.90 [SEP] B08ZVNU859 [SEP] Somi Fair Trade Green Tea Box, Sugar Free [SEP] $5.05 to $6.65 [SEP] B0K31BVM9S [SEP] Dorxa Fair Trade Green Tea Box, Usda Organic [SEP] $10.20 to $14.26 [SEP] B00Q7TDFKB [SEP] Dorxa Fair Trade Green Tea Box, Usda Organic [SEP] $10.90 to $15.24 [SEP] B0KP89LKC3 [SEP] Faraco Fair Trade Green Tea Box, Natural Ingredients [SEP] $4.31 to $6.94 [SEP] B0BCVXNP1E [SEP] Faraco Fair Trade Green Tea Box, Natural Ingredients [SEP] $4.06 to $6.54 [SEP] B0MZ91B3B8 [SEP] Faraco Fair Trade Green Tea Box, Natural Ingredients [SEP] $3.91 to $6.30 [SEP] B0XHM77SND [SEP] Xalu Natural Ingredients Green Tea Box, Fair Trade [SEP] $17.30 to $30.71
        <think>B0XHM77SND matches every requirement of the instruction; I will open it.</think><action>click[b0xhm77snd]</action>
        (reward 0, score 0, done false, won false)
        Instruction: [SEP] i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars [SEP] Back to Search [SEP] < Prev [SEP] flavor name [SEP] jasmine [SEP] peppermint [SEP] lemon ginger [SEP] original [SEP] matcha [SEP] size [SEP] 20 count [SEP] 40 count [SEP] 100 count [SEP] Xalu Natural Ingredients Green Tea Box, Fair Trade [SEP] Price: $17.30 to $30.71 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now
        <think>The instruction asks for flavor name: lemon ginger; I will select it.</think><action>click[lemon ginger]</action>
        (reward 0, score 0, done false, won false)
        Instruction: [SEP] i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars [SEP] Back to Search [SEP] < Prev [SEP] flavor name [SEP] jasmine [SEP] peppermint [SEP] lemon ginger [SEP] original [SEP] matcha [SEP] size [SEP] 20 count [SEP] 40 count [SEP] 100 count [SEP] Xalu Natural Ingredients Green Tea Box, Fair Trade [SEP] Price: $17.30 to $30.71 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now
        <think>The instruction asks for size: 100 count; I will select it.</think><action>click[100 count]</action>
        (reward 0, score 0, done false, won false)
        Instruction: [SEP] i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars [SEP] Back to Search [SEP] < Prev [SEP] flavor name [SEP] jasmine [SEP] peppermint [SEP] lemon ginger [SEP] original [SEP] matcha [SEP] size [SEP] 20 count [SEP] 40 count [SEP] 100 count [SEP] Xalu Natural Ingredients Green Tea Box, Fair Trade [SEP] Price: $17.30 to $30.71 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now
        <think>This product matches and every wanted option is selected; I will buy it.</think><action>click[buy now]</action>
        (reward 10, score 1, done true, won true)
        Thank you for shopping with us! [SEP] Your code: [SEP] None [SEP] (Paste it in your MTurk interface.) [SEP] Purchased [SEP] asin [SEP] B0XHM77SND [SEP] options [SEP] {"flavor name": "lemon ginger", "size": "100 count"} [SEP] attrs [SEP] None [SEP] category [SEP] None [SEP] query [SEP] None [SEP] product category [SEP] None [SEP] Target [SEP] asin [SEP] options [SEP] attrs [SEP] price upper [SEP] instuction text [SEP] category [SEP] product category [SEP] query [SEP] Goal [SEP] None [SEP] Reward [SEP] Your score (min 0.0, max 1.0) [SEP] 1.0 [SEP] Reward Details [SEP] None
    "#]].assert_eq(&out);
}

#[test]
fn the_expert_solves_every_test_and_eval_task() {
    let mut env = env();
    for (split, size) in [("test", 500), ("eval", 1000)] {
        for index in 0..size {
            let r = run_expert(&mut env, split, index, 0);
            assert!(r.won && r.score == 1.0 && r.reward == 10.0, "{split} {index}: {}", r.observation);
        }
    }
}

#[test]
fn the_expert_solves_every_train_goal() {
    let mut env = WebShopEnv::create("weighted_train = false").unwrap();
    let size = env.info().split_size("train").unwrap();
    for index in 0..size {
        assert!(run_expert(&mut env, "train", index, 0).won, "train {index}");
    }
}

#[test]
fn the_expert_recovers_from_a_wrong_item() {
    let mut env = env();
    env.reset("test", 4, 0).unwrap();
    env.step(&think("search[free]")).unwrap();
    let other = env.admissible_actions().unwrap().into_iter().find(|a| a.starts_with("click[b0")).unwrap();
    env.step(&think(&other)).unwrap();
    env.step(&think("click[features]")).unwrap();
    loop {
        let r = env.step(&env.expert_action().unwrap().unwrap()).unwrap();
        if r.done {
            assert!(r.won, "{}", r.observation);
            break;
        }
    }
}

/// A uniform choice among admissible actions, wrapped as a policy would; returns the success rate.
fn random_success(split: &str, n: u64, seed: u64) -> (f64, f64) {
    let mut env = env();
    let mut rng = crate::rng::Rng::new(seed);
    let mut wins = 0;
    let mut score = 0.0;
    for index in 0..n {
        env.reset(split, index, seed).unwrap();
        loop {
            let actions = env.admissible_actions().unwrap();
            let mut sorted = actions.clone();
            sorted.sort();
            assert_eq!(actions, sorted);
            let r = env.step(&ActionFormat::ThinkAction.wrap(&actions[rng.below(actions.len())], "random")).unwrap();
            assert!(r.valid, "{}", r.observation);
            if r.done {
                wins += u32::from(r.won);
                score += r.score;
                break;
            }
        }
    }
    (f64::from(wins) / n as f64, score / n as f64)
}

#[test]
fn a_random_policy_rarely_succeeds() {
    let (rate, score) = random_success("test", 500, 1);
    eprintln!("random policy on test: success {rate}, mean score {score}");
    assert!(rate < 0.05, "{rate}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_actions_never_panic_nor_change_the_goal(
        index in 0u64..500,
        actions in proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "[a-z<> \\[\\]0-9]{0,20}".prop_map(|a| format!("<think>x</think><action>{a}</action>")),
                "(click|search)\\[[a-z0-9 <>]{0,12}\\]".prop_map(|a| format!("<think>x</think><action>{a}</action>")),
            ],
            1..20,
        ),
    ) {
        let mut env = env();
        env.reset("test", index, 0).unwrap();
        let task = env.prompt().unwrap().task;
        let goal = env.episode.as_ref().unwrap().goal;
        for action in actions {
            let before = env.view(env.episode.as_ref().unwrap()).render(env.episode.as_ref().unwrap().page);
            let r = env.step(&action).unwrap();
            // Only a malformed response costs -0.1, and it leaves the page as it was; other steps earn 0 until a
            // purchase.
            if r.valid {
                prop_assert!(r.reward == 0.0 || (r.done && r.reward == 10.0));
            } else {
                prop_assert_eq!((r.reward, &r.observation), (-0.1, &before));
            }
            prop_assert_eq!(env.episode.as_ref().unwrap().goal, goal);
            prop_assert_eq!(&env.prompt().unwrap().task, &task);
            if r.done {
                break;
            }
            env.admissible_actions().unwrap();
            env.expert_action().unwrap();
        }
    }
}

#[test]
fn the_expert_wins_through_the_plugin_abi() {
    let plugin = atod_envs::EnvPlugin::bundled(crate::atod_root_module());
    let mut env = plugin.create("").unwrap();
    assert_eq!(env.info(), self::env().info());
    for index in 0..20 {
        env.reset("test", index, 0).unwrap();
        loop {
            let r = env.step(&env.expert_action().unwrap().unwrap()).unwrap();
            if r.done {
                assert!(r.won, "test {index}");
                break;
            }
        }
    }
    assert!(plugin.create("nope = 1").is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// The visible expert (`expert = "visible"`).

fn visible_env() -> WebShopEnv {
    WebShopEnv::create("expert = \"visible\"").unwrap()
}

#[test]
fn the_expert_key_is_parsed_and_checked() {
    assert_eq!(env().config.expert, ExpertKind::Faithful);
    assert_eq!(visible_env().config.expert, ExpertKind::Visible);
    assert_eq!(WebShopEnv::create("expert = \"faithful\"").unwrap().config, WebShopConfig::default());
    let err = WebShopEnv::create("expert = \"oracle\"").unwrap_err();
    assert!(err.contains("unknown variant `oracle`, expected `faithful` or `visible`"), "{err}");
    assert!(WebShopEnv::default_config().contains("expert = \"faithful\""));
}

#[test]
fn instructions_are_read_from_their_text() {
    use crate::visible::Instruction;
    let parsed = Instruction::parse(
        "i'm looking for a touch control wireless earbud headset with color: navy blue, and style: with charging \
         case, and price lower than 40.00 dollars",
    );
    assert!(parsed.text.starts_with("i'm looking") && parsed.text.ends_with("40.00 dollars"));
    assert_eq!(parsed.base, "i'm looking for a touch control wireless earbud headset");
    assert_eq!(
        parsed.options,
        [("color".to_owned(), "navy blue".to_owned()), ("style".to_owned(), "with charging case".to_owned())]
    );
    assert_eq!(parsed.price_cap, Some(40.0));
    assert_eq!(parsed.key_words(), "touch control wireless earbud headset navy blue charging case");
    let bare = Instruction::parse("find me a soy wax scented candle");
    assert_eq!((bare.base.as_str(), bare.options.len(), bare.price_cap), ("find me a soy wax scented candle", 0, None));
    // The key words are the faithful expert's query for every goal: its search is already a visible function.
    let env = env();
    for goal in &env.catalogue().goals {
        let key_words = expert::key_words(goal, env.catalogue().target(goal));
        assert_eq!(Instruction::parse(&goal.instruction).key_words(), key_words, "{}", goal.instruction);
    }
}

/// A results page as pages.rs renders one, listing (ASIN, price text) pairs under the same title.
fn results_page(instruction: &str, page: usize, total: usize, listed: &[(&str, &str)]) -> String {
    let mut parts = vec![
        "Instruction:".to_owned(),
        instruction.to_owned(),
        "Back to Search".into(),
        format!("Page {page} (Total results: {total})"),
    ];
    if page > 1 {
        parts.push("< Prev".into());
    }
    parts.push("Next >".into());
    for (asin, price) in listed {
        parts.extend([(*asin).to_owned(), "Lumo Soy Wax Scented Candle, Gift Set".into(), (*price).to_owned()]);
    }
    parts.join(" [SEP] ")
}

#[test]
fn the_visible_expert_follows_its_rules() {
    use crate::visible::visible_step;
    let instruction = "find me a soy wax scented candle with scent: vanilla, and size: 8 oz, and price lower than \
                       20.00 dollars";
    let act = |page: &str, history: &[&str]| visible_step(page, history, 10).1;
    let search = format!("WebShop [SEP] Instruction: [SEP] {instruction} [SEP] Search");
    assert_eq!(act(&search, &[]), format!("search[{instruction}]"));
    // The first product whose price, or the upper end of its range, is at most the cap.
    let listed = [
        ("B0AAAAAAA1", "$25.00"),
        ("B0AAAAAAA2", "$15.00 to $21.00"),
        ("B0AAAAAAA3", "$20.00"),
        ("B0AAAAAAA4", "$9.99"),
    ];
    let page1 = results_page(instruction, 1, 12, &listed);
    assert_eq!(act(&page1, &[&format!("search[{instruction}]")]), "click[B0AAAAAAA3]");
    // Back from a product that lacked a wanted value, the products listed after it.
    assert_eq!(act(&page1, &["click[b0aaaaaaa3]", "click[< prev]"]), "click[B0AAAAAAA4]");
    assert_eq!(act(&page1, &["click[b0aaaaaaa4]", "click[< prev]"]), "click[next >]");
    // On the last page, the first product left when none is cheap enough.
    let page2 = results_page(instruction, 2, 12, &[("B0AAAAAAA5", "$30.00"), ("B0AAAAAAA6", "$40.00")]);
    assert_eq!(act(&page2, &["click[< prev]", "click[next >]"]), "click[B0AAAAAAA5]");
    assert!(act(&page2, &["click[b0aaaaaaa6]", "click[< prev]"]).starts_with("search["));
    // Item pages: the wanted values in the instruction's order, then buy; a missing value sends it back.
    let item = |values: &str| {
        format!(
            "Instruction: [SEP] {instruction} [SEP] Back to Search [SEP] < Prev [SEP] scent [SEP] {values} [SEP] size \
             [SEP] 8 oz [SEP] 14 oz [SEP] Lumo Soy Wax Scented Candle, Gift Set [SEP] Price: $9.99 [SEP] Rating: N.A. \
             [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now"
        )
    };
    let full = item("vanilla [SEP] cinnamon");
    assert_eq!(act(&full, &["click[b0aaaaaaa4]"]), "click[vanilla]");
    assert_eq!(act(&full, &["click[b0aaaaaaa4]", "click[vanilla]"]), "click[8 oz]");
    assert_eq!(act(&full, &["click[vanilla]", "click[8 oz]"]), "click[buy now]");
    assert_eq!(act(&item("sandalwood [SEP] cinnamon"), &["click[b0aaaaaaa4]"]), "click[< prev]");
    // A sub-page, and a page without an instruction.
    let sub = format!("Instruction: [SEP] {instruction} [SEP] Back to Search [SEP] < Prev [SEP] The Lumo candle.");
    assert_eq!(act(&sub, &["click[description]"]), "click[< prev]");
    assert_eq!(act("Thank you for shopping with us!", &[]), "click[< prev]");
}

/// Plays the visible expert on (split, 0..n) and returns its wins, checking at every step that its response is
/// what `visible_step` makes of the observation the agent was shown and the actions the environment reported
/// (so its decisions use nothing else), and that its action is one of the admissible actions.
fn visible_wins(split: &str, n: u64) -> u64 {
    visible_wins_in(&mut visible_env(), 10, split, n).0
}

/// [`visible_wins`] in `env`, whose results pages show `per_page` results; also the steps it took.
fn visible_wins_in(env: &mut WebShopEnv, per_page: usize, split: &str, n: u64) -> (u64, u64) {
    let (mut wins, mut steps) = (0, 0);
    for index in 0..n {
        let mut observation = env.reset(split, index, 0).unwrap();
        let mut history: Vec<String> = Vec::new();
        loop {
            let shown: Vec<&str> = history.iter().map(String::as_str).collect();
            let (thought, action) = visible::visible_step(&observation, &shown, per_page);
            let response = env.expert_action().unwrap().unwrap();
            assert_eq!(response, ActionFormat::ThinkAction.wrap(&action, &thought), "{split} {index}");
            assert!(env.admissible_actions().unwrap().contains(&action.to_lowercase()), "{split} {index}: {action}");
            let r = env.step(&response).unwrap();
            assert!(r.valid);
            steps += 1;
            history.push(r.action);
            observation = r.observation;
            if r.done {
                wins += u64::from(r.won);
                break;
            }
        }
    }
    (wins, steps)
}

/// With one result a page (`results_per_page = 1`, the CPU regime's simplification), a results page lists one
/// ASIN and the visible expert still wins nearly every goal (it pages on past results above the price cap), in
/// about as many steps. The faithful expert, which pages to the target's rank, loses the goals whose target ranks
/// too deep for one page a step within the step limit.
#[test]
fn one_result_a_page_lists_one_asin_and_the_experts_still_win() {
    let config = "expert = \"visible\"\nresults_per_page = 1";
    let mut env = WebShopEnv::create(config).unwrap();
    let (wins, steps) = visible_wins_in(&mut env, 1, "eval", 300);
    let (wins_ten, steps_ten) = visible_wins_in(&mut visible_env(), 10, "eval", 300);
    eprintln!("visible expert, eval 0..300: {wins} wins in {steps} steps with 1 result a page, {wins_ten} in {steps_ten} with 10");
    assert!(wins >= 295, "{wins}");
    assert!(steps * 10 <= steps_ten * 12, "{steps} against {steps_ten}");
    env.reset("eval", 3, 0).unwrap();
    let results = env.step("<think>.</think><action>search[red shoes]</action>").unwrap().observation;
    assert_eq!(results.matches(" [SEP] B0").count(), 1, "{results}");
    let mut faithful = WebShopEnv::create("results_per_page = 1").unwrap();
    let mut faithful_wins = 0;
    for index in 0..100 {
        faithful.reset("eval", index, 0).unwrap();
        faithful_wins += loop {
            let r = faithful.step(&faithful.expert_action().unwrap().unwrap()).unwrap();
            if r.done {
                break u32::from(r.won);
            }
        };
    }
    eprintln!("faithful expert, eval 0..100, 1 result a page: {faithful_wins} wins");
    assert!(faithful_wins >= 75, "{faithful_wins}");
    assert!(WebShopEnv::create("results_per_page = 0").unwrap_err().contains("results_per_page"));
}

#[test]
fn the_visible_expert_decides_from_the_prompt_and_nearly_always_wins() {
    // Measured: 999 of the 1000 eval goals, 500 of the 500 test goals, 1998 of train tasks 0..2000.
    assert!(visible_wins("eval", 1000) >= 990);
    assert!(visible_wins("test", 300) >= 297);
    assert!(visible_wins("train", 300) >= 297);
}

#[test]
fn the_visible_expert_transcript_snapshot() {
    let mut env = visible_env();
    let mut out = format!("{}\n", env.reset("test", 7, 0).unwrap());
    out += &format!("admissible: {}\n", env.admissible_actions().unwrap().join(" | "));
    loop {
        let response = env.expert_action().unwrap().unwrap();
        let r = env.step(&response).unwrap();
        out += &format!("{response}\n(reward {}, won {})\n", r.reward, r.won);
        if r.done {
            break;
        }
    }
    expect![[r#"
        WebShop [SEP] Instruction: [SEP] i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars [SEP] Search
        admissible: search[i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars]
        <think>I will search for the instruction.</think><action>search[i need a green tea box that is fair trade with flavor name: lemon ginger, and size: 100 count, and price lower than 60.00 dollars]</action>
        (reward 0, won false)
        <think>The first result at most 60.00 dollars.</think><action>click[B0NHRRBEMW]</action>
        (reward 0, won false)
        <think>The instruction asks for lemon ginger.</think><action>click[lemon ginger]</action>
        (reward 0, won false)
        <think>The instruction asks for 100 count.</think><action>click[100 count]</action>
        (reward 0, won false)
        <think>Every wanted option is selected; I will buy it.</think><action>click[buy now]</action>
        (reward 10, won true)
    "#]].assert_eq(&out);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_visible_expert_acts_admissibly_from_anywhere(
        index in 0u64..500,
        actions in proptest::collection::vec("(click|search)\\[[a-z0-9 <>]{0,12}\\]", 0..8),
    ) {
        let mut env = visible_env();
        env.reset("test", index, 0).unwrap();
        let mut done = false;
        for action in actions {
            done = env.step(&think(&action)).unwrap().done;
            if done {
                break;
            }
        }
        while !done {
            let response = env.expert_action().unwrap().unwrap();
            let action = atod_core::extract_think_action(&response, true).unwrap();
            prop_assert!(env.admissible_actions().unwrap().contains(&action.to_lowercase()), "{}", action);
            let r = env.step(&response).unwrap();
            prop_assert!(r.valid);
            done = r.done;
        }
    }
}
