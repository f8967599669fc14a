//! Tests of the searchqa environment through the Rust trait (the ABI is exercised by the bench and the `tests`
//! crate).

use std::collections::HashSet;

use expect_test::expect;
use proptest::prelude::*;

use super::*;

fn env() -> SearchQaEnv {
    SearchQaEnv::create("").unwrap()
}

/// Plays the expert on one task; returns whether it won, the passages its searches returned, and the transcript.
fn play_expert(env: &mut SearchQaEnv, split: &str, index: u64) -> (bool, Vec<usize>, String) {
    let mut transcript = format!("obs: {}\n", env.reset(split, index, 0).unwrap());
    transcript += &format!("type: {}\n", env.task_type().unwrap().unwrap());
    for _ in 0..env.config.max_turns {
        let response = env.expert_action().unwrap().unwrap();
        let r = env.step(&response).unwrap();
        transcript += &format!(
            "> {response}\n{}\n(reward {}, done {}, won {}, valid {})\n",
            r.observation, r.reward, r.done, r.won, r.valid
        );
        if r.done {
            let retrieved = env.episode.as_ref().unwrap().retrieved.clone();
            return (r.won, retrieved, transcript);
        }
    }
    unreachable!("the episode ends within max_turns")
}

#[test]
fn normalisation_follows_search_r1() {
    let cases = [
        ("Beijing", "beijing"),
        ("  The  Beijing. ", "beijing"),
        ("An apple, a day!", "apple day"),
        ("the-end", "theend"),
        ("Theatre of the Absurd", "theatre of absurd"),
        ("A", ""),
        ("1,929", "1929"),
        ("«the»", "« »"),
        ("Halvor\tElselmi\n", "halvor elselmi"),
        ("ÉCOLE the_best", "école thebest"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalize_answer(input), expected, "input: {input:?}");
    }
    assert!(exact_match(" the rineltam press ", &["Rineltam Press".into()]));
    assert!(!exact_match("Rineltam", &["Rineltam Press".into()]));
}

#[test]
fn invalid_responses_get_search_r1s_message_and_the_penalty() {
    assert_eq!(
        INVALID_ACTION,
        "My previous action is invalid. If I want to search, I should put the query between <search> and </search>. \
         If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try \
         again."
    );
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    for response in ["", "<think>hm</think>", "<SEARCH>x</SEARCH>", "<search>unclosed", "<answer>x</search>"] {
        let r = env.step(response).unwrap();
        assert_eq!((r.valid, r.reward, r.done, r.action.as_str()), (false, -0.01, false, ""), "{response:?}");
        assert_eq!(r.observation, INVALID_ACTION);
        assert!(env.episode.as_ref().unwrap().retrieved.is_empty());
        if env.episode.as_ref().unwrap().turns == 3 {
            break;
        }
    }
    // The fourth response is the last one: even a correct answer still counts.
    let answer = env.episode.as_ref().unwrap().question.answers[0].clone();
    let r = env.step(&format!("<answer>{answer}</answer>")).unwrap();
    assert!(r.won && r.done && r.reward == 1.0);
    assert_eq!(env.step("<answer>x</answer>").unwrap_err(), Error::EpisodeOver);
}

#[test]
fn answers_end_the_episode_with_exact_match_reward() {
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    let r = env.step("<think>guess</think><answer> 1930 </answer> trailing").unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward, r.score), (true, true, false, 0.0, 0.0));
    assert_eq!((r.action.as_str(), r.observation.as_str()), ("<answer>1930</answer>", ""));
    env.reset("test", 0, 0).unwrap();
    let r = env.step("<answer>1929.</answer><search>x</search>").unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward, r.score), (true, true, true, 1.0, 1.0));
}

#[test]
fn search_returns_top_three_in_search_r1_format() {
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    let r = env.step("<search>Rineltam Press</search>").unwrap();
    assert_eq!((r.valid, r.done, r.reward, r.action.as_str()), (true, false, 0.0, "<search>Rineltam Press</search>"));
    assert!(r.observation.starts_with("<information>Doc 1(Title: Rineltam Press) Rineltam Press is "));
    assert!(r.observation.ends_with("\n</information>"));
    assert_eq!(r.observation.matches("(Title: ").count(), 3);
    // A query without a known word retrieves nothing, as an empty Pyserini hit list would.
    let r = env.step("<search>  </search>").unwrap();
    assert_eq!((r.valid, r.observation.as_str()), (true, "<information></information>"));
}

#[test]
fn expert_transcripts_of_each_question_type() {
    let mut env = env();
    let transcript: String = (0..3).map(|i| play_expert(&mut env, "test", i).2).collect();
    expect![[r#"
        obs: Question: in which year was Rineltam Press founded?
        type: single-hop
        > <think>I need the founding year of Rineltam Press, so I look up Rineltam Press.</think><search>Rineltam Press</search>
        <information>Doc 1(Title: Rineltam Press) Rineltam Press is a press headquartered in Faldra. Rineltam Press was founded by Halvor Elselmi in 1929.
        Its members have included Gorzel Vorvorsav.
        Rineltam Press is often compared with Cedtamsel Bank, which Lumash Tamdrafal established in 1998.
        Doc 2(Title: Halvor Elselmi) Halvor Elselmi was an engineer. Halvor Elselmi was born in Halbel in 1890. Halvor Elselmi worked for Rineltam Press.
        In 1929, Halvor Elselmi started Rineltam Press.
        Halvor Elselmi later lived in Savfenel. Halvor Elselmi is not to be confused with Morwensel Wenzelul, a painter from Halul born in 1895.
        Doc 3(Title: Ithbrovor Society) Ithbrovor Society is a society headquartered in Wenkalo. Ithbrovor Society was founded by Venven Vengorbri in 1894.
        Its members have included Kaselhal Tamelul, Isbel Narkeltam and Isra Urtorced.
        Ithbrovor Society is often compared with Rineltam Press, which Halvor Elselmi established in 1929.
        </information>
        (reward 0, done false, won false, valid true)
        > <think>The passages say the founding year of Rineltam Press is 1929.</think><answer>1929</answer>

        (reward 1, done true, won true, valid true)
        obs: Question: in which city was the director of Fenwennar Winter born?
        type: bridge
        > <think>I need the creator of Fenwennar Winter, so I look up Fenwennar Winter.</think><search>Fenwennar Winter</search>
        <information>Doc 1(Title: Fenwennar Winter) Fenwennar Winter is a film released in 1971. Fenwennar Winter was directed by Galsav Vorisbel.
        The story is set in Istamka.
        It is often compared with Halhalbel Mirrors, a novel by Raashdra Nargortor from 1978.
        Doc 2(Title: Cedbeltam Orchard) Cedbeltam Orchard is a novel published in 1856. Cedbeltam Orchard was written by Raul Gorloced.
        The story is set in Darnarmi.
        It is often compared with Fenwennar Winter, a film by Galsav Vorisbel from 1971.
        Doc 3(Title: Ashzelgal Crossing) Ashzelgal Crossing is a novel published in 1842. Ashzelgal Crossing was written by Cedrael Tamulsav.
        The story is set in Fenmi.
        It is often compared with Fenwennar Winter, a film by Galsav Vorisbel from 1971.
        </information>
        (reward 0, done false, won false, valid true)
        > <think>I need the birthplace of Galsav Vorisbel, so I look up Galsav Vorisbel.</think><search>Galsav Vorisbel</search>
        <information>Doc 1(Title: Galsav Vorisbel) Galsav Vorisbel was a painter. Galsav Vorisbel was born in Savtam in 1936. Galsav Vorisbel worked for Gorwengal Bank.
        Galsav Vorisbel is remembered for Fenwennar Winter and Galnarhal Lanterns.
        Galsav Vorisbel later lived in Fengorced. Galsav Vorisbel is not to be confused with Ulnarrin Brigalis, a composer from Ulsavra born in 1871.
        Doc 2(Title: Fenwennar Winter) Fenwennar Winter is a film released in 1971. Fenwennar Winter was directed by Galsav Vorisbel.
        The story is set in Istamka.
        It is often compared with Halhalbel Mirrors, a novel by Raashdra Nargortor from 1978.
        Doc 3(Title: Galnarhal Lanterns) Galnarhal Lanterns is a novel published in 1956. Galnarhal Lanterns was written by Galsav Vorisbel.
        The story is set in Browenkel.
        It is often compared with Ashselrin Voyage, a film by Yarcorqui Fentorbro from 1879.
        </information>
        (reward 0, done false, won false, valid true)
        > <think>The passages say the creator of Fenwennar Winter is Galsav Vorisbel, and the birthplace of Galsav Vorisbel is Savtam.</think><answer>Savtam</answer>

        (reward 1, done true, won true, valid true)
        obs: Question: which city has a larger population, Ithselgal or Fenjastor?
        type: comparison
        > <think>I need the population of Ithselgal, so I look up Ithselgal.</think><search>Ithselgal</search>
        <information>Doc 1(Title: Ithselgal) Ithselgal is a city in Kaulia. Ithselgal has a population of 6461792 people. Ithselgal was first settled in 1071.
        Notable people born in Ithselgal include Narsavgor Belcedmi.
        The nearby city of Torrinlum, in Urcoria, has about 2817092 inhabitants.
        Doc 2(Title: Rinquiost Silence) Rinquiost Silence is a film released in 1986. Rinquiost Silence was directed by Vorjas Iscorced.
        The story is set in Ithselgal.
        It is often compared with Miseltor Mirrors, a film by Venkel Belhalgor from 1903.
        Doc 3(Title: Belbrozel Harvest) Belbrozel Harvest is a film released in 1943. Belbrozel Harvest was directed by Brokelbri Galnargal.
        The story is set in Ithselgal.
        It is often compared with Kapelmi Letters, a film by Sellum Raithbel from 2007.
        </information>
        (reward 0, done false, won false, valid true)
        > <think>I need the population of Fenjastor, so I look up Fenjastor.</think><search>Fenjastor</search>
        <information>Doc 1(Title: Fenjastor) Fenjastor is a city in Vorashia. Fenjastor has a population of 1325200 people. Fenjastor was first settled in 1579.
        Notable people born in Fenjastor include Rinven Raurfen and Galost Ashtorgor. The city is home to the headquarters of Gorjasyar Guild.
        The nearby city of Narcorost, in Zelkaia, has about 4760431 inhabitants.
        Doc 2(Title: Kelkello Silence) Kelkello Silence is a film released in 1912. Kelkello Silence was directed by Morcorur Corrinel.
        The story is set in Fenjastor.
        It is often compared with Vorgalbri Requiem, a film by Rinven Galbribro from 1984.
        Doc 3(Title: Gorjasyar Guild) Gorjasyar Guild is a guild headquartered in Fenjastor. Gorjasyar Guild was founded by Kagorith Dralumbri in 1869.
        Its members have included Galcorbri Wenlumqui.
        Gorjasyar Guild is often compared with Brisavrin Bank, which Ostostka Torfalkel established in 1985.
        </information>
        (reward 0, done false, won false, valid true)
        > <think>The population of Ithselgal is 6461792 and that of Fenjastor is 1325200, so the answer is Ithselgal.</think><answer>Ithselgal</answer>

        (reward 1, done true, won true, valid true)
    "#]].assert_eq(&transcript);
}

#[test]
fn prompt_is_search_r1s() {
    let mut env = env();
    env.reset("train", 4, 0).unwrap();
    let prompt = env.prompt().unwrap();
    expect![[r#"
        Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> and it will return the top searched results between <information> and </information>. You can search as many times as your want. If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>.
        Question: in which city was the founder of Elzelul Guild born?"#]].assert_eq(&format!("{}\n{}", prompt.system, prompt.task));
}

/// Expert exact match over all of `test` (by type) and recall@3 of the gold passages for its queries.
#[test]
fn the_expert_solves_all_of_test_and_retrieval_finds_the_gold_passages() {
    let mut env = env();
    let mut by_type: Vec<(String, u32, u32)> = Vec::new();
    let (mut gold_total, mut gold_found) = (0, 0);
    for index in 0..SPLITS[1].1 {
        let (won, retrieved, transcript) = play_expert(&mut env, "test", index);
        let kind = env.task_type().unwrap().unwrap();
        let gold = env.episode.as_ref().unwrap().question.gold.clone();
        gold_total += gold.len();
        gold_found += gold.iter().filter(|g| retrieved.contains(g)).count();
        match by_type.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += u32::from(won);
            }
            None => by_type.push((kind, 1, u32::from(won))),
        }
        assert!(won, "test {index}:\n{transcript}");
    }
    let recall = gold_found as f64 / gold_total as f64;
    assert!(recall >= 0.99, "recall@3 {recall}");
    let summary = format!("{by_type:?} recall@3 {gold_found}/{gold_total}");
    expect![[r#"[("single-hop", 500, 500), ("bridge", 500, 500), ("comparison", 500, 500)] recall@3 2500/2500"#]]
        .assert_eq(&summary);
}

#[test]
fn the_expert_solves_train_questions() {
    let mut env = env();
    for index in (0..SPLITS[0].1).step_by(10) {
        let (won, _, transcript) = play_expert(&mut env, "train", index);
        assert!(won, "train {index}:\n{transcript}");
    }
}

/// A random policy: uniform among the admissible actions, wrapped as `ActionFormat::wrap` does.
#[test]
fn a_random_policy_almost_never_succeeds() {
    let mut env = env();
    let mut rng = kb::Rng::new(42);
    let (mut wins, mut episodes) = (0, 0);
    for index in 0..SPLITS[1].1 {
        env.reset("test", index, 0).unwrap();
        episodes += 1;
        loop {
            let actions = env.admissible_actions().unwrap();
            let action = &actions[rng.below(actions.len() as u64) as usize];
            let r = env.step(&env.info().action_format.wrap(action, "random")).unwrap();
            assert!(r.valid, "{action}");
            if r.done {
                wins += u32::from(r.won);
                break;
            }
        }
    }
    let rate = f64::from(wins) / f64::from(episodes);
    assert!(rate < 0.05, "random success rate {rate}");
    expect!["random success 38/1500"].assert_eq(&format!("random success {wins}/{episodes}"));
}

#[test]
fn the_encyclopedia_is_large_with_unique_titles() {
    let kb = &world().kb;
    assert!(kb.passages.len() >= 20_000);
    let titles: HashSet<&str> = kb.passages.iter().map(|p| p.title.as_str()).collect();
    assert_eq!(titles.len(), kb.passages.len());
    assert!(kb.passages.iter().all(|p| p.text.lines().count() >= 2));
}

/// No test answer names an entity that occurs in a train question or answer.
#[test]
fn test_answers_are_unseen_in_train() {
    let kb = &world().kb;
    // One text of every train question and answer, words separated by single spaces, so that a name is found
    // only as whole words.
    let mut train_text = String::from(" ");
    for index in 0..SPLITS[0].1 {
        let q = questions::question(kb, 0, index);
        for text in q.answers.iter().chain([&q.text]) {
            train_text += &text.replace(',', " ");
            train_text += " | ";
        }
    }
    let mut checked = 0;
    for index in 0..SPLITS[1].1 {
        let q = questions::question(kb, 1, index);
        for answer in q.answers.iter().filter(|a| a.parse::<u32>().is_err()) {
            assert!(!train_text.contains(&format!(" {answer} ")), "test {index}: {answer}");
            checked += 1;
        }
    }
    assert!(checked > 1_000);
}

#[test]
fn tasks_are_deterministic_and_checked() {
    let question = |split, index, seed| {
        let mut env = env();
        env.reset(split, index, seed).unwrap();
        env.prompt().unwrap().task
    };
    assert_eq!(question("train", 5, 1), question("train", 5, 9));
    assert_ne!(question("train", 5, 1), question("test", 5, 1));
    assert!(env().reset("train", 10_000, 0).is_err());
    assert!(env().reset("valid", 0, 0).is_err());
    assert_eq!(env().step("<answer>x</answer>").unwrap_err(), Error::NotReset);
    assert_eq!(env().admissible_actions().unwrap_err(), Error::NotReset);
}

#[test]
fn config_errors_name_the_key() {
    let err = SearchQaEnv::create("max_turn = 3").unwrap_err();
    assert!(err.contains("unknown field `max_turn`"), "{err}");
    assert_eq!(
        SearchQaEnv::create("max_turns = 0").unwrap_err(),
        "searchqa config: max_turns is 0, but must be from 1 to 100"
    );
    assert!(SearchQaEnv::create("top_k = 0").unwrap_err().contains("top_k is 0, but must be from 1 to 10"));
    assert!(SearchQaEnv::create("bm25_k1 = nan").unwrap_err().contains("bm25_k1 is NaN"));
    assert!(SearchQaEnv::create("bm25_b = 2.0").is_err());
    assert_eq!(toml::from_str::<SearchQaConfig>(&SearchQaEnv::default_config()).unwrap(), SearchQaConfig::default());
    expect![[r#"
        max_turns = 4
        top_k = 3
        bm25_k1 = 0.9
        bm25_b = 0.4
    "#]]
    .assert_eq(&SearchQaEnv::default_config());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_responses_never_panic(
        index in 0..1_500u64,
        responses in proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "(<think>|</think>|<search>|</search>|<answer>|</answer>|[a-zA-Z ]{0,8}){0,8}",
            ],
            1..6,
        ),
    ) {
        let mut env = env();
        env.reset("test", index, 0).unwrap();
        for response in responses {
            let r = env.step(&response).unwrap();
            prop_assert!(r.valid || (r.reward == INVALID_PENALTY && r.observation == INVALID_ACTION));
            prop_assert!(env.admissible_actions().unwrap().iter().all(|a| a.starts_with('<')));
            prop_assert!(env.expert_action().unwrap().is_some());
            if r.done {
                break;
            }
        }
    }
}
