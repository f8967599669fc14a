//! Tests of the counter environment, through the Rust trait (the ABI is tested in the `tests` crate).

use expect_test::expect;
use proptest::prelude::*;

use super::*;

fn env() -> CounterEnv {
    CounterEnv::create("").unwrap()
}

/// Plays the expert on one task and returns the transcript.
fn expert_transcript(split: &str, index: u64, seed: u64) -> String {
    let mut env = env();
    let mut out = format!("obs: {}\n", env.reset(split, index, seed).unwrap());
    out += &format!("task: {}\n", env.prompt().unwrap().task);
    loop {
        let response = env.expert_action().unwrap().unwrap();
        let r = env.step(&response).unwrap();
        out += &format!("> {}\n{} (reward {}, done {}, won {})\n", r.action, r.observation, r.reward, r.done, r.won);
        if r.done {
            return out;
        }
    }
}

#[test]
fn expert_transcript_snapshot() {
    expect![[r#"
        obs: The counter shows 0.
        task: Your task is to: bring the counter to 2 and submit it.
        > inc
        The counter shows 1. (reward 0, done false, won false)
        > inc
        The counter shows 2. (reward 0, done false, won false)
        > submit
        The counter shows 2. (reward 10, done true, won true)
    "#]]
    .assert_eq(&expert_transcript("test", 0, 0));
}

#[test]
fn the_expert_solves_every_task_of_every_split() {
    for (split, size) in SPLITS {
        for index in 0..size {
            let mut env = env();
            env.reset(split, index, 7).unwrap();
            let mut last = None;
            for _ in 0..20 {
                let r = env.step(&env.expert_action().unwrap().unwrap()).unwrap();
                let done = r.done;
                last = Some(r);
                if done {
                    break;
                }
            }
            assert!(last.unwrap().won, "{split} {index}");
        }
    }
}

#[test]
fn invalid_responses_are_penalised_and_change_nothing() {
    let mut env = env();
    env.reset("train", 0, 0).unwrap();
    let r = env.step("inc").unwrap();
    assert!(!r.valid && !r.done);
    assert_eq!(r.reward, -0.1);
    let r = env.step("<think>x</think><action>inc</action>").unwrap();
    assert_eq!(r.observation, "The counter shows 1.");
}

#[test]
fn config_errors_name_the_key() {
    let err = CounterEnv::create("max_targe = 3").unwrap_err();
    assert!(err.contains("unknown field `max_targe`"), "{err}");
    assert_eq!(
        CounterEnv::create("max_target = 0").unwrap_err(),
        "counter config: max_target is 0, but must be from 1 to 1000000"
    );
    assert!(CounterEnv::create("max_steps = 5000").unwrap_err().contains("max_steps is 5000"));
    assert_eq!(toml::from_str::<CounterConfig>(&CounterEnv::default_config()).unwrap(), CounterConfig::default());
}

#[test]
fn tasks_are_deterministic_and_checked() {
    let target = |split, index, seed| {
        let mut env = env();
        env.reset(split, index, seed).unwrap();
        env.prompt().unwrap().task
    };
    assert_eq!(target("train", 5, 1), target("train", 5, 1));
    assert!(env().reset("train", 1000, 0).is_err());
    assert!(env().reset("valid", 0, 0).is_err());
    assert!(env().step("x").is_err());
}

proptest! {
    #[test]
    fn any_response_is_a_valid_or_invalid_step(responses in proptest::collection::vec(any::<String>(), 1..30)) {
        let mut env = env();
        env.reset("train", 3, 3).unwrap();
        for response in responses {
            match env.step(&response) {
                Ok(r) => {
                    prop_assert!(r.valid || r.reward == -0.1);
                    if r.done {
                        break;
                    }
                }
                Err(e) => prop_assert!(false, "step failed: {e}"),
            }
        }
    }
}
