//! Tests of the searchqa environment through the Rust trait (the ABI is exercised by the bench and the `tests`
//! crate), under both protocols.

use std::collections::HashSet;

use expect_test::expect;
use proptest::prelude::*;

use super::protocol::Rules;
use super::*;

/// The default environment: verl-agent's loop.
fn env() -> SearchQaEnv {
    SearchQaEnv::create("").unwrap()
}

/// Search-R1's loop, with `max_turns` searching turns before the final response.
fn search_r1(max_turns: u32) -> SearchQaEnv {
    SearchQaEnv::create(&format!("protocol = \"search-r1\"\nmax_turns = {max_turns}")).unwrap()
}

/// The two protocols' default environments.
fn both() -> [SearchQaEnv; 2] {
    [env(), search_r1(4)]
}

fn retrieved(env: &SearchQaEnv) -> usize {
    env.episode.as_ref().unwrap().retrieved.len()
}

/// Test task 0's question and answer: "in which year was Rineltam Press founded", 1929.
const ANSWER_0: &str = "1929";

/// Plays the expert on one task; returns whether it won, the passages its searches returned, and the transcript.
fn play_expert(env: &mut SearchQaEnv, split: &str, index: u64) -> (bool, Vec<usize>, String) {
    let mut transcript = format!("obs: {:?}\n", env.reset(split, index, 0).unwrap());
    transcript += &format!("type: {}\n", env.task_type().unwrap().unwrap());
    let max_responses = env.config.protocol.rules().max_responses(env.config.max_turns);
    for _ in 0..max_responses {
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
    unreachable!("the episode ends within its responses")
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

/// verl-agent's `search_projection` on responses chosen to tell the rules apart. The expected (action, valid)
/// pairs were computed by running the projection's Python (verl-agent `agent_system/environments/env_package/
/// search/projection.py`) on the same strings.
#[test]
fn verl_agent_projects_responses_as_its_projection_does() {
    let cases = [
        ("<think>t</think><search> Rineltam Press </search>", "<search>Rineltam Press</search>", true),
        ("<think>t</think><answer> 1929 </answer> trailing", "<answer>1929</answer>", true),
        // A search anywhere in the cut response wins over an earlier answer; both tags make it invalid.
        ("<answer>1929.</answer><search>x</search>", "<search>x</search>", false),
        ("<search>x</search><answer>1929</answer>", "<search>x</search>", false),
        ("<SEARCH>x</SEARCH>", "<search>x</search>", true),
        ("<Search>x</search>", "<search>x</search>", true),
        ("<\u{17f}earch>x</search>", "<search>x</search>", true),
        ("<search>a</search><search>b</search>", "<search>a</search>", false),
        ("<answer>a</answer><answer>b</answer>", "<answer>a</answer>", false),
        ("<search></search>", "<search></search>", true),
        ("<search><answer>x</answer></search>", "<search><answer>x</answer></search>", false),
        ("<answer>x<search>q</search></answer>", "<search>q</search>", false),
        ("<search>unclosed", "", false),
        ("<answer>x</search>", "", false),
        ("<search>q</answer>", "", false),
        ("<think>hm</think>", "", false),
        ("", "", false),
    ];
    for (response, action, valid) in cases {
        let step = protocol::VerlAgent.read(response, 1, 4);
        assert_eq!((step.action.as_str(), step.valid), (action, valid), "{response:?}");
    }
}

/// Search-R1's cut and its `<(search|answer)>(.*?)</\1>`, checked against its Python (`generation.py`,
/// `_postprocess_responses` and `postprocess_predictions`) on the same strings.
#[test]
fn search_r1_reads_the_first_tag_pair_of_the_cut_response() {
    let cases = [
        (
            "<think>t</think><answer> 1929 </answer> trailing",
            "<think>t</think><answer> 1929 </answer>",
            "<answer>1929</answer>",
        ),
        (
            "<answer>1929.</answer><search>x</search>",
            "<answer>1929.</answer><search>x</search>",
            "<answer>1929.</answer>",
        ),
        ("<search>x</search><answer>1929</answer>", "<search>x</search>", "<search>x</search>"),
        ("<SEARCH>x</SEARCH>", "<SEARCH>x</SEARCH>", ""),
        ("<search>a</search><search>b</search>", "<search>a</search>", "<search>a</search>"),
        ("<answer>x<search>q</search></answer>", "<answer>x<search>q</search>", "<search>q</search>"),
        ("<search></search>", "<search></search>", "<search></search>"),
        ("<search>unclosed", "<search>unclosed", ""),
        ("<answer>x</search>", "<answer>x</search>", ""),
    ];
    for (response, cut, action) in cases {
        let step = protocol::SearchR1.read(response, 1, 4);
        assert_eq!((step.transcript.as_str(), step.action.as_str()), (cut, action), "{response:?}");
        assert_eq!(step.valid, !action.is_empty());
    }
}

#[test]
fn verl_agent_prompt_is_its_template_with_the_question_once() {
    let mut env = env();
    let observation = env.reset("train", 4, 0).unwrap();
    let prompt = env.prompt().unwrap();
    assert_eq!((prompt.system.as_str(), observation.as_str()), ("", ""));
    expect![[r#"

        You are an expert agent tasked with answering the given question step-by-step.
        Your question: in which city was the founder of Elzelul Guild born?

        Now it's your turn to respond for the current step.
        You should first conduct reasoning process. This process MUST be enclosed within <think> </think> tags. 
        After completing your reasoning, choose only one of the following actions (do not perform both):
        (1) If you find you lack some knowledge, you can call a search engine to get more external information using format: <search> your query </search>.
        (2) If you have enough knowledge to answer the question confidently, provide your final answer within <answer> </answer> tags, without detailed illustrations. For example, <answer>Beijing</answer>.
    "#]]
    .assert_eq(&prompt.task);
}

#[test]
fn search_r1_prompt_is_instruction_and_question_in_one_message() {
    let mut env = search_r1(4);
    let observation = env.reset("train", 4, 0).unwrap();
    let prompt = env.prompt().unwrap();
    assert_eq!((prompt.system.as_str(), observation.as_str()), ("", ""));
    expect![[r#"
        Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> and it will return the top searched results between <information> and </information>. You can search as many times as your want. If you find no further external knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: in which city was the founder of Elzelul Guild born?
    "#]]
    .assert_eq(&prompt.task);
}

#[test]
fn verl_agent_search_results_are_json_inside_information() {
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    let r = env.step("<think>t</think><search>Rineltam Press</search>").unwrap();
    assert_eq!((r.valid, r.done, r.reward, r.action.as_str()), (true, false, 0.0, "<search>Rineltam Press</search>"));
    expect![[r#"<information>{"result": "Doc 1: \"Rineltam Press\"\nRineltam Press is a press headquartered in Faldra. Rineltam Press was founded by Halvor Elselmi in 1929.\nIts members have included Gorzel Vorvorsav.\nRineltam Press is often compared with Cedtamsel Bank, which Lumash Tamdrafal established in 1998.\nDoc 2: \"Halvor Elselmi\"\nHalvor Elselmi was an engineer. Halvor Elselmi was born in Halbel in 1890. Halvor Elselmi worked for Rineltam Press.\nIn 1929, Halvor Elselmi started Rineltam Press.\nHalvor Elselmi later lived in Savfenel. Halvor Elselmi is not to be confused with Morwensel Wenzelul, a painter from Halul born in 1895.\nDoc 3: \"Ithbrovor Society\"\nIthbrovor Society is a society headquartered in Wenkalo. Ithbrovor Society was founded by Venven Vengorbri in 1894.\nIts members have included Kaselhal Tamelul, Isbel Narkeltam and Isra Urtorced.\nIthbrovor Society is often compared with Rineltam Press, which Halvor Elselmi established in 1929.\n"}</information>"#]].assert_eq(&r.observation);
    // The chat history the reward reads holds the projected action and the unstripped observation.
    let transcript = &env.episode.as_ref().unwrap().transcript;
    assert_eq!(*transcript, format!("<search>Rineltam Press</search>\n{}\n", r.observation));
}

#[test]
fn search_r1_search_results_are_documents_inside_information() {
    let mut env = search_r1(4);
    env.reset("test", 0, 0).unwrap();
    let r = env.step("<think>t</think><search>Rineltam Press</search>").unwrap();
    assert_eq!((r.valid, r.done, r.reward, r.action.as_str()), (true, false, 0.0, "<search>Rineltam Press</search>"));
    expect![[r#"


        <information>Doc 1(Title: "Rineltam Press") Rineltam Press is a press headquartered in Faldra. Rineltam Press was founded by Halvor Elselmi in 1929.
        Its members have included Gorzel Vorvorsav.
        Rineltam Press is often compared with Cedtamsel Bank, which Lumash Tamdrafal established in 1998.
        Doc 2(Title: "Halvor Elselmi") Halvor Elselmi was an engineer. Halvor Elselmi was born in Halbel in 1890. Halvor Elselmi worked for Rineltam Press.
        In 1929, Halvor Elselmi started Rineltam Press.
        Halvor Elselmi later lived in Savfenel. Halvor Elselmi is not to be confused with Morwensel Wenzelul, a painter from Halul born in 1895.
        Doc 3(Title: "Ithbrovor Society") Ithbrovor Society is a society headquartered in Wenkalo. Ithbrovor Society was founded by Venven Vengorbri in 1894.
        Its members have included Kaselhal Tamelul, Isbel Narkeltam and Isra Urtorced.
        Ithbrovor Society is often compared with Rineltam Press, which Halvor Elselmi established in 1929.</information>

    "#]].assert_eq(&r.observation);
}

/// What Search-QA's known problems were: `a` returned `<information></information>`.
#[test]
fn every_search_returns_top_k_passages() {
    for mut env in both() {
        env.reset("test", 0, 0).unwrap();
        for query in ["a", "", "the of", "?", "zzqxv", "Rineltam"] {
            let r = env.step(&format!("<search>{query}</search>")).unwrap();
            let observation = r.observation.trim();
            assert!(observation.starts_with("<information>") && observation.ends_with("</information>"), "{query:?}");
            assert!(observation.contains("Doc 3") && !observation.contains("Doc 4"), "{query:?}: {observation}");
            assert_eq!(env.episode.as_ref().unwrap().last.len(), 3);
            env.reset("test", 0, 0).unwrap();
        }
    }
    let mut env = SearchQaEnv::create("top_k = 7").unwrap();
    env.reset("test", 0, 0).unwrap();
    assert!(env.step("<search>a</search>").unwrap().observation.contains("Doc 7: "));
}

#[test]
fn verl_agent_invalid_responses_get_an_empty_observation_and_the_penalty() {
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    for response in ["", "<think>hm</think>", "<search>unclosed", "<answer>x</search>"] {
        let r = env.step(response).unwrap();
        assert_eq!((r.valid, r.reward, r.done, r.action.as_str()), (false, -0.01, false, ""), "{response:?}");
        assert_eq!(r.observation, "");
        env.reset("test", 0, 0).unwrap();
    }
    // An invalid response whose projection found an action still performs it, and is still penalised.
    let r = env.step("<answer>1929</answer><search>Rineltam Press</search>").unwrap();
    assert_eq!(
        (r.valid, r.reward, r.done, r.action.as_str()),
        (false, -0.01, false, "<search>Rineltam Press</search>")
    );
    assert!(r
        .observation
        .starts_with("<information>{\"result\": \"Doc 1: \\\"Rineltam Press\\\"\\nRineltam Press is "));
    let r = env.step("<answer>1929</answer><answer>x</answer>").unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward), (false, true, true, 0.99));
}

#[test]
fn search_r1_invalid_responses_get_its_message_and_no_penalty() {
    assert_eq!(
        INVALID_ACTION,
        "My previous action is invalid. If I want to search, I should put the query between <search> and </search>. \
         If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try \
         again."
    );
    let mut env = search_r1(4);
    env.reset("test", 0, 0).unwrap();
    for response in ["", "<think>hm</think>", "<SEARCH>x</SEARCH>", "<search>unclosed"] {
        let r = env.step(response).unwrap();
        assert_eq!((r.valid, r.reward, r.done, r.action.as_str()), (false, 0.0, false, ""), "{response:?}");
        assert_eq!(r.observation, format!("\n{INVALID_ACTION}\n"));
    }
    assert_eq!(retrieved(&env), 0);
    // The first tag pair is the action: here an answer, which wins.
    let r = env.step("<answer>1929.</answer><search>x</search>").unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward, r.observation.as_str()), (true, true, true, 1.0, ""));
}

#[test]
fn answers_end_the_episode_with_exact_match_reward() {
    for mut env in both() {
        env.reset("test", 0, 0).unwrap();
        let r = env.step("<think>guess</think><answer> 1930 </answer> trailing").unwrap();
        assert_eq!((r.valid, r.done, r.won, r.reward, r.score), (true, true, false, 0.0, 0.0));
        assert_eq!((r.action.as_str(), r.observation.as_str()), ("<answer>1930</answer>", ""));
        assert_eq!(env.step("<answer>x</answer>").unwrap_err(), Error::EpisodeOver);
        env.reset("test", 0, 0).unwrap();
        let r = env.step(&format!("<answer>The {ANSWER_0}.</answer>")).unwrap();
        assert_eq!((r.valid, r.done, r.won, r.reward, r.score), (true, true, true, 1.0, 1.0));
    }
}

/// verl-agent: the fourth response is the last; it can answer, but a search there ends the episode unrun.
#[test]
fn verl_agent_stops_at_max_turns_without_running_the_last_search() {
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    for turn in 1..=3 {
        let r = env.step("<search>Rineltam Press</search>").unwrap();
        assert!(!r.done && r.observation.starts_with("<information>"), "turn {turn}");
    }
    assert_eq!(retrieved(&env), 9);
    let r = env.step("<search>Rineltam Press</search>").unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward, r.observation.as_str()), (true, true, false, 0.0, ""));
    assert_eq!(retrieved(&env), 9);
    assert_eq!(env.step("<answer>x</answer>").unwrap_err(), Error::EpisodeOver);

    env.reset("test", 0, 0).unwrap();
    for _ in 1..=3 {
        env.step("<search>Rineltam Press</search>").unwrap();
    }
    let r = env.step(&format!("<answer>{ANSWER_0}</answer>")).unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward), (true, true, true, 1.0));

    // An invalid last response ends the episode too, with nothing to observe.
    env.reset("test", 0, 0).unwrap();
    for _ in 1..=3 {
        env.step("").unwrap();
    }
    let r = env.step("").unwrap();
    assert_eq!((r.valid, r.done, r.reward, r.observation.as_str()), (false, true, -0.01, ""));
}

/// Search-R1: `max_turns` turns with search, then one final response whose search is not run.
#[test]
fn search_r1_answers_once_more_after_max_turns_without_search() {
    let mut env = search_r1(2);
    env.reset("test", 0, 0).unwrap();
    for _ in 1..=2 {
        let r = env.step("<search>Rineltam Press</search>").unwrap();
        assert!(!r.done && r.observation.starts_with("\n\n<information>Doc 1(Title: \"Rineltam Press\") "));
    }
    let r = env.step("<search>Rineltam Press</search>").unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward, r.observation.as_str()), (true, true, false, 0.0, ""));
    assert_eq!(retrieved(&env), 6);
    assert_eq!(env.step("<answer>x</answer>").unwrap_err(), Error::EpisodeOver);

    // The last search's results are answered in the final response.
    env.reset("test", 0, 0).unwrap();
    for _ in 1..=2 {
        env.step("<search>Rineltam Press</search>").unwrap();
    }
    let r = env.step(&format!("<think>t</think><answer>{ANSWER_0}</answer>")).unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward), (true, true, true, 1.0));

    env.reset("test", 0, 0).unwrap();
    env.step("").unwrap();
    env.step("").unwrap();
    let r = env.step("").unwrap();
    assert_eq!((r.valid, r.done, r.reward, r.observation.as_str()), (false, true, 0.0, ""));
}

/// Both originals score the last `<answer>...</answer>` of the text they accumulate, not the action they
/// parsed; the difference shows on odd responses.
#[test]
fn the_reward_reads_the_last_answer_of_the_transcript() {
    // verl-agent: a search whose query holds an answer ends the episode (`SearchEnv._is_done`), and that answer
    // is scored.
    let mut env = env();
    env.reset("test", 0, 0).unwrap();
    let r = env.step(&format!("<search><answer>{ANSWER_0}</answer></search>")).unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward, r.observation.as_str()), (false, true, true, 0.99, ""));
    // An unclosed `<answer>` in an earlier query swallows everything up to the final answer's closing tag.
    env.reset("test", 0, 0).unwrap();
    env.step("<search>Rineltam <answer> Press</search>").unwrap();
    let r = env.step(&format!("<answer>{ANSWER_0}</answer>")).unwrap();
    assert_eq!((r.valid, r.done, r.won, r.reward), (true, true, false, 0.0));

    // Search-R1: the prompt's `<answer> and </answer>` and `<answer> Beijing </answer>` are matches too, so a
    // final response without an answer is scored as "Beijing".
    let mut env = search_r1(1);
    env.reset("test", 0, 0).unwrap();
    let transcript = &env.episode.as_ref().unwrap().transcript;
    assert_eq!(protocol::SearchR1.final_answer(transcript), Some("Beijing"));
    env.step("<search>Rineltam Press</search>").unwrap();
    let r = env.step("<search>Rineltam Press</search>").unwrap();
    assert_eq!((r.done, r.won), (true, false));
}

#[test]
fn expert_transcripts_of_each_question_type() {
    let mut env = env();
    let transcript: String = (0..3).map(|i| play_expert(&mut env, "test", i).2).collect();
    expect![[r#"
        obs: ""
        type: single-hop
        > <think>I need the founding year of Rineltam Press, so I look up Rineltam Press.</think><search>Rineltam Press</search>
        <information>{"result": "Doc 1: \"Rineltam Press\"\nRineltam Press is a press headquartered in Faldra. Rineltam Press was founded by Halvor Elselmi in 1929.\nIts members have included Gorzel Vorvorsav.\nRineltam Press is often compared with Cedtamsel Bank, which Lumash Tamdrafal established in 1998.\nDoc 2: \"Halvor Elselmi\"\nHalvor Elselmi was an engineer. Halvor Elselmi was born in Halbel in 1890. Halvor Elselmi worked for Rineltam Press.\nIn 1929, Halvor Elselmi started Rineltam Press.\nHalvor Elselmi later lived in Savfenel. Halvor Elselmi is not to be confused with Morwensel Wenzelul, a painter from Halul born in 1895.\nDoc 3: \"Ithbrovor Society\"\nIthbrovor Society is a society headquartered in Wenkalo. Ithbrovor Society was founded by Venven Vengorbri in 1894.\nIts members have included Kaselhal Tamelul, Isbel Narkeltam and Isra Urtorced.\nIthbrovor Society is often compared with Rineltam Press, which Halvor Elselmi established in 1929.\n"}</information>
        (reward 0, done false, won false, valid true)
        > <think>The passages say the founding year of Rineltam Press is 1929.</think><answer>1929</answer>

        (reward 1, done true, won true, valid true)
        obs: ""
        type: bridge
        > <think>I need the creator of Fenwennar Winter, so I look up Fenwennar Winter.</think><search>Fenwennar Winter</search>
        <information>{"result": "Doc 1: \"Fenwennar Winter\"\nFenwennar Winter is a film released in 1971. Fenwennar Winter was directed by Galsav Vorisbel.\nThe story is set in Istamka.\nIt is often compared with Halhalbel Mirrors, a novel by Raashdra Nargortor from 1978.\nDoc 2: \"Cedbeltam Orchard\"\nCedbeltam Orchard is a novel published in 1856. Cedbeltam Orchard was written by Raul Gorloced.\nThe story is set in Darnarmi.\nIt is often compared with Fenwennar Winter, a film by Galsav Vorisbel from 1971.\nDoc 3: \"Ashzelgal Crossing\"\nAshzelgal Crossing is a novel published in 1842. Ashzelgal Crossing was written by Cedrael Tamulsav.\nThe story is set in Fenmi.\nIt is often compared with Fenwennar Winter, a film by Galsav Vorisbel from 1971.\n"}</information>
        (reward 0, done false, won false, valid true)
        > <think>I need the birthplace of Galsav Vorisbel, so I look up Galsav Vorisbel.</think><search>Galsav Vorisbel</search>
        <information>{"result": "Doc 1: \"Galsav Vorisbel\"\nGalsav Vorisbel was a painter. Galsav Vorisbel was born in Savtam in 1936. Galsav Vorisbel worked for Gorwengal Bank.\nGalsav Vorisbel is remembered for Fenwennar Winter and Galnarhal Lanterns.\nGalsav Vorisbel later lived in Fengorced. Galsav Vorisbel is not to be confused with Ulnarrin Brigalis, a composer from Ulsavra born in 1871.\nDoc 2: \"Fenwennar Winter\"\nFenwennar Winter is a film released in 1971. Fenwennar Winter was directed by Galsav Vorisbel.\nThe story is set in Istamka.\nIt is often compared with Halhalbel Mirrors, a novel by Raashdra Nargortor from 1978.\nDoc 3: \"Galnarhal Lanterns\"\nGalnarhal Lanterns is a novel published in 1956. Galnarhal Lanterns was written by Galsav Vorisbel.\nThe story is set in Browenkel.\nIt is often compared with Ashselrin Voyage, a film by Yarcorqui Fentorbro from 1879.\n"}</information>
        (reward 0, done false, won false, valid true)
        > <think>The passages say the creator of Fenwennar Winter is Galsav Vorisbel, and the birthplace of Galsav Vorisbel is Savtam.</think><answer>Savtam</answer>

        (reward 1, done true, won true, valid true)
        obs: ""
        type: comparison
        > <think>I need the population of Ithselgal, so I look up Ithselgal.</think><search>Ithselgal</search>
        <information>{"result": "Doc 1: \"Ithselgal\"\nIthselgal is a city in Kaulia. Ithselgal has a population of 6461792 people. Ithselgal was first settled in 1071.\nNotable people born in Ithselgal include Narsavgor Belcedmi.\nThe nearby city of Torrinlum, in Urcoria, has about 2817092 inhabitants.\nDoc 2: \"Rinquiost Silence\"\nRinquiost Silence is a film released in 1986. Rinquiost Silence was directed by Vorjas Iscorced.\nThe story is set in Ithselgal.\nIt is often compared with Miseltor Mirrors, a film by Venkel Belhalgor from 1903.\nDoc 3: \"Belbrozel Harvest\"\nBelbrozel Harvest is a film released in 1943. Belbrozel Harvest was directed by Brokelbri Galnargal.\nThe story is set in Ithselgal.\nIt is often compared with Kapelmi Letters, a film by Sellum Raithbel from 2007.\n"}</information>
        (reward 0, done false, won false, valid true)
        > <think>I need the population of Fenjastor, so I look up Fenjastor.</think><search>Fenjastor</search>
        <information>{"result": "Doc 1: \"Fenjastor\"\nFenjastor is a city in Vorashia. Fenjastor has a population of 1325200 people. Fenjastor was first settled in 1579.\nNotable people born in Fenjastor include Rinven Raurfen and Galost Ashtorgor. The city is home to the headquarters of Gorjasyar Guild.\nThe nearby city of Narcorost, in Zelkaia, has about 4760431 inhabitants.\nDoc 2: \"Kelkello Silence\"\nKelkello Silence is a film released in 1912. Kelkello Silence was directed by Morcorur Corrinel.\nThe story is set in Fenjastor.\nIt is often compared with Vorgalbri Requiem, a film by Rinven Galbribro from 1984.\nDoc 3: \"Gorjasyar Guild\"\nGorjasyar Guild is a guild headquartered in Fenjastor. Gorjasyar Guild was founded by Kagorith Dralumbri in 1869.\nIts members have included Galcorbri Wenlumqui.\nGorjasyar Guild is often compared with Brisavrin Bank, which Ostostka Torfalkel established in 1985.\n"}</information>
        (reward 0, done false, won false, valid true)
        > <think>The population of Ithselgal is 6461792 and that of Fenjastor is 1325200, so the answer is Ithselgal.</think><answer>Ithselgal</answer>

        (reward 1, done true, won true, valid true)
    "#]].assert_eq(&transcript);
    let mut env = search_r1(4);
    expect![[r#"
        obs: ""
        type: single-hop
        > <think>I need the founding year of Rineltam Press, so I look up Rineltam Press.</think><search>Rineltam Press</search>


        <information>Doc 1(Title: "Rineltam Press") Rineltam Press is a press headquartered in Faldra. Rineltam Press was founded by Halvor Elselmi in 1929.
        Its members have included Gorzel Vorvorsav.
        Rineltam Press is often compared with Cedtamsel Bank, which Lumash Tamdrafal established in 1998.
        Doc 2(Title: "Halvor Elselmi") Halvor Elselmi was an engineer. Halvor Elselmi was born in Halbel in 1890. Halvor Elselmi worked for Rineltam Press.
        In 1929, Halvor Elselmi started Rineltam Press.
        Halvor Elselmi later lived in Savfenel. Halvor Elselmi is not to be confused with Morwensel Wenzelul, a painter from Halul born in 1895.
        Doc 3(Title: "Ithbrovor Society") Ithbrovor Society is a society headquartered in Wenkalo. Ithbrovor Society was founded by Venven Vengorbri in 1894.
        Its members have included Kaselhal Tamelul, Isbel Narkeltam and Isra Urtorced.
        Ithbrovor Society is often compared with Rineltam Press, which Halvor Elselmi established in 1929.</information>


        (reward 0, done false, won false, valid true)
        > <think>The passages say the founding year of Rineltam Press is 1929.</think><answer>1929</answer>

        (reward 1, done true, won true, valid true)
    "#]].assert_eq(&play_expert(&mut env, "test", 0).2);
}

/// Expert exact match over all of `test` (by type) and recall@3 of the gold passages for its queries, under
/// both protocols (Search-R1's with its scripts' two searching turns, which bridge questions need all of).
#[test]
fn the_expert_solves_all_of_test_and_retrieval_finds_the_gold_passages() {
    for mut env in [env(), search_r1(2)] {
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
}

#[test]
fn the_expert_solves_train_questions() {
    for mut env in [env(), search_r1(2)] {
        for index in (0..SPLITS[0].1).step_by(10) {
            let (won, _, transcript) = play_expert(&mut env, "train", index);
            assert!(won, "train {index}:\n{transcript}");
        }
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
    let err = SearchQaEnv::create("protocol = \"verl\"").unwrap_err();
    assert!(err.contains("unknown variant `verl`, expected `verl-agent` or `search-r1`"), "{err}");
    assert_eq!(search_r1(2).config.protocol, Protocol::SearchR1);
    assert_eq!(toml::from_str::<SearchQaConfig>(&SearchQaEnv::default_config()).unwrap(), SearchQaConfig::default());
    expect![[r#"
        protocol = "verl-agent"
        max_turns = 4
        top_k = 3
        bm25_k1 = 0.9
        bm25_b = 0.4
        question_types = ["single-hop", "bridge", "comparison"]
        passages = "full"
        information = "original"
        instruction = "original"
        expert_thoughts = "full"
        expert_spaces = false
    "#]]
    .assert_eq(&SearchQaEnv::default_config());
    for (config, message) in [
        ("question_types = []", "question_types must name at least one question type"),
        ("question_types = [\"bridge\", \"bridge\"]", "each type at most once, in the order"),
        ("question_types = [\"comparison\", \"single-hop\"]", "each type at most once, in the order"),
        ("question_types = [\"multi-hop\"]", "unknown variant `multi-hop`"),
        ("passages = \"short\"", "unknown variant `short`, expected `full` or `facts`"),
        ("information = \"json\"", "unknown variant `json`, expected `original` or `plain`"),
        ("expert_thoughts = \"none\"", "unknown variant `none`, expected one of `full`, `short`, `quote`"),
        ("instruction = \"short\"", "unknown variant `short`, expected `original` or `brief`"),
    ] {
        let err = SearchQaEnv::create(config).unwrap_err();
        assert!(err.contains(message), "{config}: {err}");
    }
    expect!["Search-R1-style question answering in verl-agent's loop: search a generated encyclopedia of 21,440 passages (BM25, top 3) with <search>query</search> and reply with <answer>...</answer> within 4 responses. Single-hop, bridge and comparison questions. Reward 1 for an exact-match answer; -0.01 per invalid response."]
        .assert_eq(&env().info().description);
    expect!["Search-R1-style question answering in Search-R1's loop: search a generated encyclopedia of 21,440 passages (BM25, top 3) with <search>query</search> and reply with <answer>...</answer> within 3 responses. Single-hop, bridge and comparison questions. Reward 1 for an exact-match answer; no penalty for an invalid response."].assert_eq(&search_r1(2).info().description);
}

/// The environment of the compact setting: one passage per search, shown as its first paragraph, in the plain
/// form, the brief instruction, and the expert's spaced wording with `thoughts`.
fn compact(thoughts: &str, extra: &str) -> SearchQaEnv {
    let config =
        "top_k = 1\npassages = \"facts\"\ninformation = \"plain\"\ninstruction = \"brief\"\nexpert_spaces = true";
    SearchQaEnv::create(&format!("{config}\nexpert_thoughts = \"{thoughts}\"\n{extra}")).unwrap()
}

#[test]
fn a_selection_of_question_types_is_the_split_s_own_questions_of_those_types() {
    use questions::Selection;
    use QuestionType::{Bridge, Comparison, SingleHop};
    // Sizes and indices against a plain enumeration of the split, for every selection and some split sizes.
    for types in
        [vec![SingleHop], vec![Bridge], vec![Comparison], vec![SingleHop, Comparison], QuestionType::ALL.to_vec()]
    {
        let selection = Selection::new(&types);
        for size in [1, 2, 3, 4, 10, 1_500, 10_000] {
            let own: Vec<u64> = (0..size).filter(|i| types.contains(&QuestionType::ALL[(i % 3) as usize])).collect();
            assert_eq!(selection.size(size), own.len() as u64, "{types:?} of {size}");
            let mapped: Vec<u64> = (0..selection.size(size)).map(|i| selection.split_index(i)).collect();
            assert_eq!(mapped, own, "{types:?} of {size}");
        }
    }
    // Through the environment: the split sizes shrink, and task i is the whole split's question of that type.
    let mut single = SearchQaEnv::create("question_types = [\"single-hop\"]").unwrap();
    let sizes: Vec<(String, u64)> = single.info().splits.iter().map(|s| (s.name.clone(), s.size)).collect();
    assert_eq!(sizes, [("train".to_owned(), 3_334), ("test".to_owned(), 500)]);
    let mut pair = SearchQaEnv::create("question_types = [\"bridge\", \"comparison\"]").unwrap();
    assert_eq!(pair.info().splits[1].size, 1_000);
    let mut all = env();
    let task = |env: &mut SearchQaEnv, split, index| {
        env.reset(split, index, 0).unwrap();
        (env.prompt().unwrap().task, env.task_type().unwrap().unwrap())
    };
    for (index, whole) in [(0, 0), (1, 3), (499, 1_497)] {
        assert_eq!(task(&mut single, "test", index), task(&mut all, "test", whole));
    }
    for (index, whole) in [(0, 1), (1, 2), (2, 4), (999, 1_499)] {
        assert_eq!(task(&mut pair, "test", index), task(&mut all, "test", whole));
    }
    assert_eq!(task(&mut single, "train", 3_333), task(&mut all, "train", 9_999));
    assert!(single.reset("test", 500, 0).is_err());
    expect!["Search-R1-style question answering in verl-agent's loop: search a generated encyclopedia of 21,440 passages (BM25, top 3) with <search>query</search> and reply with <answer>...</answer> within 4 responses. Bridge and comparison questions. Reward 1 for an exact-match answer; -0.01 per invalid response."]
        .assert_eq(&pair.info().description);
}

#[test]
fn compact_setting_transcripts_of_each_question_type() {
    let mut env = compact("quote", "");
    let mut transcript = format!("prompt: {:?}\n", {
        env.reset("test", 0, 0).unwrap();
        env.prompt().unwrap().task
    });
    transcript.extend((0..3).map(|i| play_expert(&mut env, "test", i).2));
    expect![[r#"
        prompt: "Answer the question. Think inside <think> </think>, then either search with <search> query </search> or answer with <answer> answer </answer>.\nQuestion: in which year was Rineltam Press founded?\n"
        obs: ""
        type: single-hop
        > <think> founding year of Rineltam Press? </think><search> Rineltam Press </search>
        <information>Doc 1 (Title: Rineltam Press) Rineltam Press is a press headquartered in Faldra. Rineltam Press was founded by Halvor Elselmi in 1929.</information>
        (reward 0, done false, won false, valid true)
        > <think> Rineltam Press was founded by Halvor Elselmi in 1929. </think><answer> 1929 </answer>

        (reward 1, done true, won true, valid true)
        obs: ""
        type: bridge
        > <think> creator of Fenwennar Winter? </think><search> Fenwennar Winter </search>
        <information>Doc 1 (Title: Fenwennar Winter) Fenwennar Winter is a film released in 1971. Fenwennar Winter was directed by Galsav Vorisbel.</information>
        (reward 0, done false, won false, valid true)
        > <think> Fenwennar Winter was directed by Galsav Vorisbel. birthplace of Galsav Vorisbel? </think><search> Galsav Vorisbel </search>
        <information>Doc 1 (Title: Galsav Vorisbel) Galsav Vorisbel was a painter. Galsav Vorisbel was born in Savtam in 1936. Galsav Vorisbel worked for Gorwengal Bank.</information>
        (reward 0, done false, won false, valid true)
        > <think> Galsav Vorisbel was born in Savtam in 1936. </think><answer> Savtam </answer>

        (reward 1, done true, won true, valid true)
        obs: ""
        type: comparison
        > <think> population of Ithselgal? </think><search> Ithselgal </search>
        <information>Doc 1 (Title: Ithselgal) Ithselgal is a city in Kaulia. Ithselgal has a population of 6461792 people. Ithselgal was first settled in 1071.</information>
        (reward 0, done false, won false, valid true)
        > <think> Ithselgal has a population of 6461792 people. population of Fenjastor? </think><search> Fenjastor </search>
        <information>Doc 1 (Title: Fenjastor) Fenjastor is a city in Vorashia. Fenjastor has a population of 1325200 people. Fenjastor was first settled in 1579.</information>
        (reward 0, done false, won false, valid true)
        > <think> Ithselgal has a population of 6461792 people. Fenjastor has a population of 1325200 people. </think><answer> Ithselgal </answer>

        (reward 1, done true, won true, valid true)
    "#]]
    .assert_eq(&transcript);
    // The short thoughts say the same facts in the relation's words.
    let mut short = compact("short", "");
    expect![[r#"
        obs: ""
        type: bridge
        > <think> creator of Fenwennar Winter? </think><search> Fenwennar Winter </search>
        <information>Doc 1 (Title: Fenwennar Winter) Fenwennar Winter is a film released in 1971. Fenwennar Winter was directed by Galsav Vorisbel.</information>
        (reward 0, done false, won false, valid true)
        > <think> creator of Fenwennar Winter is Galsav Vorisbel. birthplace of Galsav Vorisbel? </think><search> Galsav Vorisbel </search>
        <information>Doc 1 (Title: Galsav Vorisbel) Galsav Vorisbel was a painter. Galsav Vorisbel was born in Savtam in 1936. Galsav Vorisbel worked for Gorwengal Bank.</information>
        (reward 0, done false, won false, valid true)
        > <think> birthplace of Galsav Vorisbel is Savtam. </think><answer> Savtam </answer>

        (reward 1, done true, won true, valid true)
    "#]]
    .assert_eq(&play_expert(&mut short, "test", 1).2);
}

/// The expert still solves every test question when it reads only the first paragraphs of top-1 passages, in
/// both protocols, and the passages it needs are those retrieved.
#[test]
fn the_expert_solves_all_of_test_in_the_compact_setting() {
    for mut env in [compact("quote", ""), compact("short", "protocol = \"search-r1\"\nmax_turns = 2")] {
        for index in 0..SPLITS[1].1 {
            let (won, retrieved, transcript) = play_expert(&mut env, "test", index);
            assert!(won, "test {index}:\n{transcript}");
            let gold = &env.episode.as_ref().unwrap().question.gold;
            assert!(gold.iter().all(|g| retrieved.contains(g)), "test {index}:\n{transcript}");
        }
    }
}

/// Each style changes the wording only: the expert's actions (after the protocol's projection) are the same.
#[test]
fn the_expert_s_style_changes_its_wording_not_its_actions() {
    let styles = [
        "",
        "expert_spaces = true",
        "expert_thoughts = \"short\"",
        "expert_thoughts = \"quote\"\nexpert_spaces = true",
        "expert_thoughts = \"quote\"\npassages = \"facts\"",
    ];
    let actions = |config: &str| {
        let mut env = SearchQaEnv::create(&format!("top_k = 1\n{config}")).unwrap();
        let mut actions = Vec::new();
        for index in 0..60 {
            env.reset("train", index, 0).unwrap();
            loop {
                let response = env.expert_action().unwrap().unwrap();
                assert!(response.starts_with("<think>"), "{response}");
                let r = env.step(&response).unwrap();
                actions.push(r.action);
                if r.done {
                    assert!(r.won);
                    break;
                }
            }
        }
        actions
    };
    let faithful = actions(styles[0]);
    for style in &styles[1..] {
        assert_eq!(actions(style), faithful, "{style}");
    }
}

#[test]
fn facts_passages_keep_the_first_paragraph_and_its_mentions() {
    let world = world();
    for (full, facts) in world.kb.passages.iter().zip(&world.facts).step_by(97) {
        assert_eq!(facts.title, full.title);
        assert_eq!(Some(facts.text.as_str()), full.text.lines().next());
        assert!(facts.mentions.iter().all(|m| full.mentions.contains(m)));
        assert!(facts.mentions.iter().all(|&m| facts.text.contains(world.kb.name(m))));
    }
    // The plain form: one line per passage, nothing escaped.
    let passages: Vec<&kb::Passage> = world.kb.passages[..2].iter().collect();
    let plain = text::plain_information(&passages);
    assert_eq!(plain.lines().count(), 2);
    assert!(plain.starts_with("<information>Doc 1 (Title: ") && plain.ends_with("</information>"));
    assert!(!plain.contains('"') && !plain.contains('\\'));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_responses_never_panic(
        index in 0..1_500u64,
        search_r1_loop in any::<bool>(),
        responses in proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "(<think>|</think>|<search>|</search>|<answer>|</answer>|<SEARCH>|</Answer>|[a-zA-Z ]{0,8}){0,8}",
            ],
            1..7,
        ),
    ) {
        let mut env = if search_r1_loop { search_r1(4) } else { env() };
        let rules = env.config.protocol.rules();
        env.reset("test", index, 0).unwrap();
        for (n, response) in responses.iter().enumerate() {
            let r = env.step(response).unwrap();
            let observation = r.observation.trim();
            let is_information = observation.starts_with("<information>") && observation.contains("Doc 3");
            prop_assert!(observation.is_empty() || is_information || observation == INVALID_ACTION, "{observation}");
            prop_assert!(r.valid || r.reward <= rules.invalid_penalty() + 1.0);
            prop_assert!(env.admissible_actions().unwrap().iter().all(|a| a.starts_with('<')));
            prop_assert!(env.expert_action().unwrap().is_some());
            prop_assert!(n + 1 < rules.max_responses(env.config.max_turns) as usize || r.done);
            if r.done {
                prop_assert!(observation.is_empty());
                prop_assert_eq!(env.step("<answer>x</answer>").unwrap_err(), Error::EpisodeOver);
                break;
            }
        }
    }
}
