//! Tests of the alfworld environment: transcripts, the expert over the splits, a random baseline, the text
//! formats, configs, and properties of arbitrary responses.

use std::collections::BTreeMap;

use expect_test::{expect, Expect};
use proptest::prelude::*;

use super::*;
use crate::world::{Object, Place, Receptacle, Rng, World};

fn env() -> AlfworldEnv {
    AlfworldEnv::create("").unwrap()
}

fn world_of(env: &AlfworldEnv) -> &World {
    &env.episode.as_ref().unwrap().world
}

/// Plays the expert on one task; returns the transcript and whether it won.
fn expert_episode(env: &mut dyn Environment, split: &str, index: u64, seed: u64) -> (String, bool) {
    let mut out = format!("{}\n", env.reset(split, index, seed).unwrap());
    loop {
        let response = env.expert_action().unwrap().expect("the expert acts until the episode ends");
        let r = env.step(&response).unwrap();
        assert!(r.valid, "expert response invalid: {response}");
        out += &format!("> {response}\n{}\n", r.observation);
        if r.done {
            let task_type = env.task_type().unwrap().unwrap();
            out += &format!("[reward {}, won {}, score {}, task type {task_type}]\n", r.reward, r.won, r.score);
            return (out, r.won);
        }
    }
}

fn check_transcript(index: u64, expected: Expect) {
    let (transcript, won) = expert_episode(&mut env(), "valid_seen", index, 0);
    assert!(won);
    expected.assert_eq(&transcript);
}

#[test]
fn transcript_pick_and_place_simple() {
    check_transcript(
        0,
        expect![[r#"
            -= Welcome to TextWorld, ALFRED! =-

            You are in the middle of a room. Looking quickly around you, you see a cabinet 28, a cabinet 27, a cabinet 26, a cabinet 25, a cabinet 24, a cabinet 23, a cabinet 22, a cabinet 21, a cabinet 20, a cabinet 19, a cabinet 18, a cabinet 17, a cabinet 16, a cabinet 15, a cabinet 14, a cabinet 13, a cabinet 12, a cabinet 11, a cabinet 10, a cabinet 9, a cabinet 8, a cabinet 7, a cabinet 6, a cabinet 5, a cabinet 4, a cabinet 3, a cabinet 2, a cabinet 1, a coffeemachine 1, a countertop 3, a countertop 2, a countertop 1, a diningtable 1, a drawer 11, a drawer 10, a drawer 9, a drawer 8, a drawer 7, a drawer 6, a drawer 5, a drawer 4, a drawer 3, a drawer 2, a drawer 1, a fridge 1, a garbagecan 1, a microwave 1, a sinkbasin 1, a stoveburner 4, a stoveburner 3, a stoveburner 2, a stoveburner 1, and a toaster 1.

            Your task is to: put some knife on countertop.
            > <think>Subgoal: find a knife. I have not checked diningtable 1 yet.</think><action>go to diningtable 1</action>
            You arrive at diningtable 1. On the diningtable 1, you see a potato 1, a spatula 2, and a tomato 2.
            > <think>Subgoal: find a knife. I have not checked sinkbasin 1 yet.</think><action>go to sinkbasin 1</action>
            You arrive at sinkbasin 1. On the sinkbasin 1, you see a egg 1, and a lettuce 1.
            > <think>Subgoal: find a knife. I have not checked drawer 1 yet.</think><action>go to drawer 1</action>
            You arrive at drawer 1. The drawer 1 is closed.
            > <think>Subgoal: find a knife. The drawer 1 is closed, so I open it.</think><action>open drawer 1</action>
            You open the drawer 1. The drawer 1 is open. In it, you see nothing.
            > <think>Subgoal: find a knife. I have not checked drawer 2 yet.</think><action>go to drawer 2</action>
            You arrive at drawer 2. The drawer 2 is closed.
            > <think>Subgoal: find a knife. The drawer 2 is closed, so I open it.</think><action>open drawer 2</action>
            You open the drawer 2. The drawer 2 is open. In it, you see nothing.
            > <think>Subgoal: find a knife. I have not checked drawer 3 yet.</think><action>go to drawer 3</action>
            You arrive at drawer 3. The drawer 3 is closed.
            > <think>Subgoal: find a knife. The drawer 3 is closed, so I open it.</think><action>open drawer 3</action>
            You open the drawer 3. The drawer 3 is open. In it, you see nothing.
            > <think>Subgoal: find a knife. I have not checked drawer 4 yet.</think><action>go to drawer 4</action>
            You arrive at drawer 4. The drawer 4 is closed.
            > <think>Subgoal: find a knife. The drawer 4 is closed, so I open it.</think><action>open drawer 4</action>
            You open the drawer 4. The drawer 4 is open. In it, you see nothing.
            > <think>Subgoal: find a knife. I have not checked drawer 5 yet.</think><action>go to drawer 5</action>
            You arrive at drawer 5. The drawer 5 is closed.
            > <think>Subgoal: find a knife. The drawer 5 is closed, so I open it.</think><action>open drawer 5</action>
            You open the drawer 5. The drawer 5 is open. In it, you see nothing.
            > <think>Subgoal: find a knife. I have not checked drawer 6 yet.</think><action>go to drawer 6</action>
            You arrive at drawer 6. The drawer 6 is closed.
            > <think>Subgoal: find a knife. The drawer 6 is closed, so I open it.</think><action>open drawer 6</action>
            You open the drawer 6. The drawer 6 is open. In it, you see a knife 2, and a spoon 1.
            > <think>Subgoal: take the knife 2 from drawer 6.</think><action>take knife 2 from drawer 6</action>
            You pick up the knife 2 from the drawer 6.
            > <think>Subgoal: put the knife 2 in countertop 1. I go there.</think><action>go to countertop 1</action>
            You arrive at countertop 1. On the countertop 1, you see a lettuce 2, a potato 2, and a tomato 1.
            > <think>Subgoal: put the knife 2 in countertop 1.</think><action>move knife 2 to countertop 1</action>
            You move the knife 2 to the countertop 1.
            [reward 10, won true, score 1, task type pick_and_place_simple]
        "#]],
    );
}

#[test]
fn transcript_look_at_obj_in_light() {
    check_transcript(
        1,
        expect![[r#"
            -= Welcome to TextWorld, ALFRED! =-

            You are in the middle of a room. Looking quickly around you, you see a bed 1, a box 1, a drawer 10, a drawer 9, a drawer 8, a drawer 7, a drawer 6, a drawer 5, a drawer 4, a drawer 3, a drawer 2, a drawer 1, a dresser 1, a garbagecan 1, a shelf 8, a shelf 7, a shelf 6, a shelf 5, a shelf 4, a shelf 3, a shelf 2, and a shelf 1.

            Your task is to: examine the cellphone with the desklamp.
            > <think>Subgoal: find a cellphone. I have not checked bed 1 yet.</think><action>go to bed 1</action>
            You arrive at bed 1. On the bed 1, you see a pillow 1.
            > <think>Subgoal: find a cellphone. I have not checked dresser 1 yet.</think><action>go to dresser 1</action>
            You arrive at dresser 1. On the dresser 1, you see a basketball 1, a laptop 2, a laptop 1, and a pen 2.
            > <think>Subgoal: find a cellphone. I have not checked shelf 1 yet.</think><action>go to shelf 1</action>
            You arrive at shelf 1. On the shelf 1, you see a pen 1.
            > <think>Subgoal: find a cellphone. I have not checked shelf 2 yet.</think><action>go to shelf 2</action>
            You arrive at shelf 2. On the shelf 2, you see a alarmclock 2.
            > <think>Subgoal: find a cellphone. I have not checked shelf 3 yet.</think><action>go to shelf 3</action>
            You arrive at shelf 3. On the shelf 3, you see nothing.
            > <think>Subgoal: find a cellphone. I have not checked shelf 4 yet.</think><action>go to shelf 4</action>
            You arrive at shelf 4. On the shelf 4, you see a desklamp 1, and a keychain 2.
            > <think>Subgoal: find a cellphone. I have not checked shelf 5 yet.</think><action>go to shelf 5</action>
            You arrive at shelf 5. On the shelf 5, you see a book 1.
            > <think>Subgoal: find a cellphone. I have not checked shelf 6 yet.</think><action>go to shelf 6</action>
            You arrive at shelf 6. On the shelf 6, you see a alarmclock 1, a creditcard 1, and a keychain 1.
            > <think>Subgoal: find a cellphone. I have not checked shelf 7 yet.</think><action>go to shelf 7</action>
            You arrive at shelf 7. On the shelf 7, you see nothing.
            > <think>Subgoal: find a cellphone. I have not checked shelf 8 yet.</think><action>go to shelf 8</action>
            You arrive at shelf 8. On the shelf 8, you see nothing.
            > <think>Subgoal: find a cellphone. I have not checked box 1 yet.</think><action>go to box 1</action>
            You arrive at box 1. The box 1 is closed.
            > <think>Subgoal: find a cellphone. The box 1 is closed, so I open it.</think><action>open box 1</action>
            You open the box 1. The box 1 is open. In it, you see a cellphone 1, and a statue 1.
            > <think>Subgoal: take the cellphone 1 from box 1.</think><action>take cellphone 1 from box 1</action>
            You pick up the cellphone 1 from the box 1.
            > <think>I hold the cellphone 1; the desklamp 1 is at shelf 4.</think><action>go to shelf 4</action>
            You arrive at shelf 4. On the shelf 4, you see a desklamp 1, and a keychain 2.
            > <think>I hold the cellphone 1; now I turn on the desklamp 1.</think><action>use desklamp 1</action>
            You turn on the desklamp 1.
            [reward 10, won true, score 1, task type look_at_obj_in_light]
        "#]],
    );
}

#[test]
fn transcript_pick_clean_then_place_in_recep() {
    check_transcript(
        2,
        expect![[r#"
            -= Welcome to TextWorld, ALFRED! =-

            You are in the middle of a room. Looking quickly around you, you see a bathtubbasin 1, a cabinet 4, a cabinet 3, a cabinet 2, a cabinet 1, a countertop 1, a garbagecan 1, a handtowelholder 1, a sinkbasin 2, a sinkbasin 1, a toilet 1, a toiletpaperhanger 1, and a towelholder 1.

            Your task is to: put a clean soapbar in garbagecan.
            > <think>Subgoal: find a soapbar. I have not checked bathtubbasin 1 yet.</think><action>go to bathtubbasin 1</action>
            You arrive at bathtubbasin 1. On the bathtubbasin 1, you see nothing.
            > <think>Subgoal: find a soapbar. I have not checked countertop 1 yet.</think><action>go to countertop 1</action>
            You arrive at countertop 1. On the countertop 1, you see nothing.
            > <think>Subgoal: find a soapbar. I have not checked sinkbasin 1 yet.</think><action>go to sinkbasin 1</action>
            You arrive at sinkbasin 1. On the sinkbasin 1, you see a cloth 1, and a soapbar 2.
            > <think>Subgoal: take the soapbar 2 from sinkbasin 1.</think><action>take soapbar 2 from sinkbasin 1</action>
            You pick up the soapbar 2 from the sinkbasin 1.
            > <think>Subgoal: clean the soapbar 2 with sinkbasin 1.</think><action>clean soapbar 2 with sinkbasin 1</action>
            You clean the soapbar 2 using the sinkbasin 1.
            > <think>Subgoal: put the soapbar 2 in garbagecan 1. I go there.</think><action>go to garbagecan 1</action>
            You arrive at garbagecan 1. On the garbagecan 1, you see a spraybottle 2.
            > <think>Subgoal: put the soapbar 2 in garbagecan 1.</think><action>move soapbar 2 to garbagecan 1</action>
            You move the soapbar 2 to the garbagecan 1.
            [reward 10, won true, score 1, task type pick_clean_then_place_in_recep]
        "#]],
    );
}

#[test]
fn transcript_pick_heat_then_place_in_recep() {
    check_transcript(
        3,
        expect![[r#"
            -= Welcome to TextWorld, ALFRED! =-

            You are in the middle of a room. Looking quickly around you, you see a cabinet 21, a cabinet 20, a cabinet 19, a cabinet 18, a cabinet 17, a cabinet 16, a cabinet 15, a cabinet 14, a cabinet 13, a cabinet 12, a cabinet 11, a cabinet 10, a cabinet 9, a cabinet 8, a cabinet 7, a cabinet 6, a cabinet 5, a cabinet 4, a cabinet 3, a cabinet 2, a cabinet 1, a coffeemachine 1, a countertop 3, a countertop 2, a countertop 1, a diningtable 1, a drawer 3, a drawer 2, a drawer 1, a fridge 1, a garbagecan 1, a microwave 1, a sinkbasin 1, a stoveburner 4, a stoveburner 3, a stoveburner 2, a stoveburner 1, and a toaster 1.

            Your task is to: put a hot mug in coffeemachine.
            > <think>Subgoal: find a mug. I have not checked countertop 1 yet.</think><action>go to countertop 1</action>
            You arrive at countertop 1. On the countertop 1, you see a butterknife 2, a fork 2, a plate 1, and a tomato 1.
            > <think>Subgoal: find a mug. I have not checked countertop 2 yet.</think><action>go to countertop 2</action>
            You arrive at countertop 2. On the countertop 2, you see a mug 1.
            > <think>Subgoal: take the mug 1 from countertop 2.</think><action>take mug 1 from countertop 2</action>
            You pick up the mug 1 from the countertop 2.
            > <think>Subgoal: heat the mug 1 with microwave 1. I go to microwave 1 first.</think><action>go to microwave 1</action>
            You arrive at microwave 1. The microwave 1 is closed.
            > <think>Subgoal: heat the mug 1 with microwave 1.</think><action>heat mug 1 with microwave 1</action>
            You heat the mug 1 using the microwave 1.
            > <think>Subgoal: put the mug 1 in coffeemachine 1. I go there.</think><action>go to coffeemachine 1</action>
            You arrive at coffeemachine 1. On the coffeemachine 1, you see nothing.
            > <think>Subgoal: put the mug 1 in coffeemachine 1.</think><action>move mug 1 to coffeemachine 1</action>
            You move the mug 1 to the coffeemachine 1.
            [reward 10, won true, score 1, task type pick_heat_then_place_in_recep]
        "#]],
    );
}

#[test]
fn transcript_pick_cool_then_place_in_recep() {
    check_transcript(
        4,
        expect![[r#"
            -= Welcome to TextWorld, ALFRED! =-

            You are in the middle of a room. Looking quickly around you, you see a cabinet 5, a cabinet 4, a cabinet 3, a cabinet 2, a cabinet 1, a coffeemachine 1, a countertop 2, a countertop 1, a diningtable 2, a diningtable 1, a drawer 3, a drawer 2, a drawer 1, a fridge 1, a garbagecan 1, a microwave 1, a sinkbasin 1, a stoveburner 4, a stoveburner 3, a stoveburner 2, a stoveburner 1, and a toaster 1.

            Your task is to: put a cool apple in diningtable.
            > <think>Subgoal: find an apple. I have not checked countertop 1 yet.</think><action>go to countertop 1</action>
            You arrive at countertop 1. On the countertop 1, you see a bowl 1, a butterknife 2, a mug 2, a pan 1, and a spoon 1.
            > <think>Subgoal: find an apple. I have not checked countertop 2 yet.</think><action>go to countertop 2</action>
            You arrive at countertop 2. On the countertop 2, you see a bowl 2, a cup 1, and a soapbottle 1.
            > <think>Subgoal: find an apple. I have not checked garbagecan 1 yet.</think><action>go to garbagecan 1</action>
            You arrive at garbagecan 1. On the garbagecan 1, you see a bread 1, a lettuce 2, and a lettuce 1.
            > <think>Subgoal: find an apple. I have not checked sinkbasin 1 yet.</think><action>go to sinkbasin 1</action>
            You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing.
            > <think>Subgoal: find an apple. I have not checked fridge 1 yet.</think><action>go to fridge 1</action>
            You arrive at fridge 1. The fridge 1 is closed.
            > <think>Subgoal: find an apple. The fridge 1 is closed, so I open it.</think><action>open fridge 1</action>
            You open the fridge 1. The fridge 1 is open. In it, you see a apple 2, a apple 1, a plate 1, a pot 2, and a potato 1.
            > <think>Subgoal: take the apple 1 from fridge 1.</think><action>take apple 1 from fridge 1</action>
            You pick up the apple 1 from the fridge 1.
            > <think>Subgoal: cool the apple 1 with fridge 1.</think><action>cool apple 1 with fridge 1</action>
            You cool the apple 1 using the fridge 1.
            > <think>Subgoal: put the apple 1 in diningtable 1. I go there.</think><action>go to diningtable 1</action>
            You arrive at diningtable 1. On the diningtable 1, you see a egg 1, a fork 1, a knife 1, a mug 1, and a tomato 1.
            > <think>Subgoal: put the apple 1 in diningtable 1.</think><action>move apple 1 to diningtable 1</action>
            You move the apple 1 to the diningtable 1.
            [reward 10, won true, score 1, task type pick_cool_then_place_in_recep]
        "#]],
    );
}

#[test]
fn transcript_pick_two_obj_and_place() {
    check_transcript(
        5,
        expect![[r#"
            -= Welcome to TextWorld, ALFRED! =-

            You are in the middle of a room. Looking quickly around you, you see a bathtubbasin 1, a countertop 2, a countertop 1, a drawer 4, a drawer 3, a drawer 2, a drawer 1, a garbagecan 1, a handtowelholder 1, a sinkbasin 1, a toilet 1, a toiletpaperhanger 1, and a towelholder 1.

            Your task is to: put two handtowel in bathtubbasin.
            > <think>Subgoal: find a handtowel. I have not checked countertop 1 yet.</think><action>go to countertop 1</action>
            You arrive at countertop 1. On the countertop 1, you see a candle 1, and a soapbar 1.
            > <think>Subgoal: find a handtowel. I have not checked countertop 2 yet.</think><action>go to countertop 2</action>
            You arrive at countertop 2. On the countertop 2, you see a soapbottle 1.
            > <think>Subgoal: find a handtowel. I have not checked garbagecan 1 yet.</think><action>go to garbagecan 1</action>
            You arrive at garbagecan 1. On the garbagecan 1, you see nothing.
            > <think>Subgoal: find a handtowel. I have not checked handtowelholder 1 yet.</think><action>go to handtowelholder 1</action>
            You arrive at handtowelholder 1. On the handtowelholder 1, you see nothing.
            > <think>Subgoal: find a handtowel. I have not checked sinkbasin 1 yet.</think><action>go to sinkbasin 1</action>
            You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing.
            > <think>Subgoal: find a handtowel. I have not checked toilet 1 yet.</think><action>go to toilet 1</action>
            You arrive at toilet 1. On the toilet 1, you see a handtowel 1, a soapbar 2, and a spraybottle 1.
            > <think>Subgoal: take the handtowel 1 from toilet 1.</think><action>take handtowel 1 from toilet 1</action>
            You pick up the handtowel 1 from the toilet 1.
            > <think>Subgoal: put the handtowel 1 in bathtubbasin 1. I go there.</think><action>go to bathtubbasin 1</action>
            You arrive at bathtubbasin 1. On the bathtubbasin 1, you see nothing.
            > <think>Subgoal: put the handtowel 1 in bathtubbasin 1.</think><action>move handtowel 1 to bathtubbasin 1</action>
            You move the handtowel 1 to the bathtubbasin 1.
            > <think>Subgoal: find a handtowel. I have not checked drawer 1 yet.</think><action>go to drawer 1</action>
            You arrive at drawer 1. The drawer 1 is closed.
            > <think>Subgoal: find a handtowel. The drawer 1 is closed, so I open it.</think><action>open drawer 1</action>
            You open the drawer 1. The drawer 1 is open. In it, you see nothing.
            > <think>Subgoal: find a handtowel. I have not checked drawer 2 yet.</think><action>go to drawer 2</action>
            You arrive at drawer 2. The drawer 2 is closed.
            > <think>Subgoal: find a handtowel. The drawer 2 is closed, so I open it.</think><action>open drawer 2</action>
            You open the drawer 2. The drawer 2 is open. In it, you see a handtowel 3.
            > <think>Subgoal: take the handtowel 3 from drawer 2.</think><action>take handtowel 3 from drawer 2</action>
            You pick up the handtowel 3 from the drawer 2.
            > <think>Subgoal: put the handtowel 3 in bathtubbasin 1. I go there.</think><action>go to bathtubbasin 1</action>
            You arrive at bathtubbasin 1. On the bathtubbasin 1, you see a handtowel 1.
            > <think>Subgoal: put the handtowel 3 in bathtubbasin 1.</think><action>move handtowel 3 to bathtubbasin 1</action>
            You move the handtowel 3 to the bathtubbasin 1.
            [reward 10, won true, score 1, task type pick_two_obj_and_place]
        "#]],
    );
}

/// Runs the expert on tasks `0..count` of `split` and checks that it wins each, that the task type is the one the
/// index asks for (so no draw fell back to the emergency scene), and that every type occurs.
fn expert_solves(split: &str, count: u64, seed: u64) {
    let mut env = env();
    let mut per_type = BTreeMap::new();
    for index in 0..count {
        let (transcript, won) = expert_episode(&mut env, split, index, seed);
        assert!(won, "{split} {index}:\n{transcript}");
        let task_type = env.task_type().unwrap().unwrap();
        assert_eq!(task_type, TaskType::ALL[(index % 6) as usize].name(), "{split} {index}");
        *per_type.entry(task_type).or_insert(0) += 1;
    }
    assert_eq!(per_type.len(), 6, "{split}: {per_type:?}");
}

#[test]
fn expert_solves_every_valid_seen_task() {
    expert_solves("valid_seen", 140, 0);
}

#[test]
fn expert_solves_every_valid_unseen_task() {
    expert_solves("valid_unseen", 134, 0);
}

#[test]
fn expert_solves_every_train_task() {
    expert_solves("train", 3553, 0);
}

#[test]
fn expert_solves_other_seeds_and_the_mini_preset() {
    expert_solves("valid_unseen", 134, 12345);
    let mut mini = AlfworldEnv::create("preset = \"mini\"").unwrap();
    for index in 0..300 {
        assert!(expert_episode(&mut mini, "train", index, 1).1, "mini train {index}");
    }
}

/// The visible expert solves every task of the mini preset. In the faithful rooms, with up to 28 cabinets, a
/// search in a fixed order that forgets nothing it has not just seen runs past the 50 steps on a few tasks.
#[test]
fn the_visible_expert_solves_every_mini_task_within_the_step_limit() {
    let mut mini = AlfworldEnv::create("preset = \"mini\"\nexpert = \"visible\"").unwrap();
    let mut faithful = AlfworldEnv::create("expert = \"visible\"").unwrap();
    let (mut won, mut played) = (0, 0);
    for (split, count) in SPLITS {
        for index in 0..count {
            let (transcript, mini_won) = expert_episode(&mut mini, split, index, 0);
            assert!(mini_won, "mini {split} {index}:\n{transcript}");
            won += u32::from(expert_episode(&mut faithful, split, index, 0).1);
            played += 1;
        }
    }
    eprintln!("the visible expert in the faithful rooms: {won} of {played}");
    assert!(won * 100 >= played * 99, "{won} of {played}");
}

/// The sweep expert solves every task of the mini preset within its step limit, although it remembers nothing, and
/// its episodes are about as long as the visible expert's (which skips what it searched since the last take).
#[test]
fn the_sweep_expert_solves_every_mini_task_within_the_step_limit() {
    let mut sweep = AlfworldEnv::create("preset = \"mini\"\nexpert = \"sweep\"").unwrap();
    let mut visible = AlfworldEnv::create("preset = \"mini\"\nexpert = \"visible\"").unwrap();
    let (mut sweep_steps, mut visible_steps) = (0, 0);
    for (split, count) in SPLITS {
        for index in 0..count {
            let (transcript, won) = expert_episode(&mut sweep, split, index, 0);
            assert!(won, "mini {split} {index}:\n{transcript}");
            sweep_steps += transcript.matches("\n> ").count() + 1;
            visible_steps += expert_episode(&mut visible, split, index, 0).0.matches("\n> ").count() + 1;
        }
    }
    eprintln!("expert steps on the mini preset: sweep {sweep_steps}, visible {visible_steps}");
    assert!(sweep_steps * 4 <= visible_steps * 5, "sweep {sweep_steps}, visible {visible_steps}");
}

/// The roster expert acts as the sweep does, command for command, on every mini task; its thoughts write the
/// roster it goes round and what is here, and every receptacle it names after "After X:" follows X in the roster
/// its thought has just written (round to the first after the last), so that the choice is a copy.
#[test]
fn the_roster_expert_acts_as_the_sweep_and_its_next_receptacle_follows_in_its_roster() {
    let mut roster = AlfworldEnv::create("preset = \"mini\"\nexpert = \"roster\"").unwrap();
    let mut sweep = AlfworldEnv::create("preset = \"mini\"\nexpert = \"sweep\"").unwrap();
    let action = |response: &str| response.split("<action>").nth(1).unwrap().trim_end_matches("</action>").to_string();
    let (mut afters, mut longest) = (0, 0);
    for (split, count) in SPLITS {
        for index in 0..count {
            roster.reset(split, index, 0).unwrap();
            sweep.reset(split, index, 0).unwrap();
            loop {
                let (ours, theirs) =
                    (roster.expert_action().unwrap().unwrap(), sweep.expert_action().unwrap().unwrap());
                assert_eq!(action(&ours), action(&theirs), "{split} {index}");
                longest = longest.max(ours.len());
                if let Some((list, rest)) = ours.split_once(" in: ").and_then(|(_, r)| r.split_once('.')) {
                    let names: Vec<&str> = list.split(", ").collect();
                    if let Some(after) = rest.split(" After ").nth(1) {
                        let (here, next) = after.split_once(": ").unwrap();
                        let next = next.split('.').next().unwrap();
                        let at = names.iter().position(|n| *n == here).unwrap_or_else(|| panic!("{ours}"));
                        assert_eq!(names[(at + 1) % names.len()], next, "{ours}");
                        assert!(action(&ours).ends_with(next), "{ours}");
                        afters += 1;
                    }
                }
                let step = roster.step(&ours).unwrap();
                assert_eq!(sweep.step(&theirs).unwrap().done, step.done);
                if step.done {
                    assert!(step.won, "{split} {index}");
                    break;
                }
            }
        }
    }
    eprintln!("roster: {afters} moves on, the longest response {longest} bytes");
    assert!(afters > 10_000, "{afters}");
}

/// The visible expert's decisions do not change when the objects the agent cannot see are moved: every object in
/// a receptacle other than the one it stands at (or in that one while it is closed) is put somewhere else.
#[test]
fn the_visible_expert_ignores_what_the_prompt_does_not_show() {
    decides_from_what_the_prompt_shows("visible", |episode| expert::next_visible(&episode.world, &episode.searched));
}

/// The same for the sweep expert, which reads nothing but the world as the prompt shows it.
#[test]
fn the_sweep_expert_ignores_what_the_prompt_does_not_show() {
    decides_from_what_the_prompt_shows("sweep", |episode| expert::next_sweep(&episode.world));
}

/// The same for the roster expert, whose thoughts also list what is here.
#[test]
fn the_roster_expert_ignores_what_the_prompt_does_not_show() {
    decides_from_what_the_prompt_shows("roster", |episode| expert::next_roster(&episode.world));
}

fn decides_from_what_the_prompt_shows(expert: &str, decide: impl Fn(&Episode) -> (String, Command)) {
    let mut env = AlfworldEnv::create(&format!("preset = \"mini\"\nexpert = \"{expert}\"")).unwrap();
    let mut rng = Rng::new(&[21]);
    let mut checked = 0;
    for index in 0..300 {
        env.reset("train", index, 0).unwrap();
        loop {
            let episode = env.episode.as_ref().unwrap();
            let world = &episode.world;
            let decided = decide(episode);
            let visible = |r: usize| world.at == Some(r) && world.receptacles[r].open;
            for _ in 0..4 {
                let mut moved = world.clone();
                for object in &mut moved.objects {
                    if let Place::In(r) = object.place {
                        if !visible(r) {
                            let mut other = rng.below(world.receptacles.len() as u64) as usize;
                            while visible(other) {
                                other = rng.below(world.receptacles.len() as u64) as usize;
                            }
                            object.place = Place::In(other);
                        }
                    }
                }
                let moved = Episode { world: moved, ..episode.clone() };
                assert_eq!(decide(&moved), decided, "{expert}: train {index}");
                checked += 1;
            }
            let response = env.expert_action().unwrap().unwrap();
            if env.step(&response).unwrap().done {
                break;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

/// A uniform random choice among the admissible actions, wrapped as a policy would wrap it.
fn random_success_rate(split: &str, count: u64) -> f64 {
    let mut env = env();
    let mut rng = Rng::new(&[42]);
    let mut wins = 0;
    for index in 0..count {
        env.reset(split, index, 0).unwrap();
        loop {
            let actions = env.admissible_actions().unwrap();
            let action = rng.pick(&actions).unwrap();
            let r = env.step(&env.info().action_format.wrap(action, "I try something.")).unwrap();
            assert!(r.valid && r.observation != actions::NOTHING_HAPPENS, "{action}");
            if r.done {
                wins += r.won as u32;
                break;
            }
        }
    }
    wins as f64 / count as f64
}

#[test]
fn random_policy_rarely_succeeds() {
    let rate = random_success_rate("valid_seen", 140);
    assert!(rate < 0.1, "random success rate {rate}");
}

#[test]
fn splits_hold_out_alfreds_unseen_scenes() {
    let sizes: Vec<(String, u64)> = env().info().splits.into_iter().map(|s| (s.name, s.size)).collect();
    assert_eq!(sizes, [("train".into(), 3553), ("valid_seen".into(), 140), ("valid_unseen".into(), 134)]);
    let mut env = env();
    for (split, unseen) in [("train", false), ("valid_seen", false), ("valid_unseen", true)] {
        let mut plans = std::collections::BTreeSet::new();
        for index in 0..120 {
            env.reset(split, index, 3).unwrap();
            let world = world_of(&env);
            assert_eq!(world::UNSEEN_FLOOR_PLANS.contains(&(world.floor_plan as u32)), unseen, "{split} {index}");
            assert!(world.floor_plan % 100 >= 7 || unseen, "{split} {index}: a scene ALFRED keeps for its tests");
            assert_eq!(world::room_of(world.floor_plan as u32), world.room, "{split} {index}");
            plans.insert(world.floor_plan);
        }
        // The unseen split plays ALFRED's four unseen scenes; the others spread over its training scenes.
        assert!(if unseen { plans.len() == 4 } else { plans.len() > 40 }, "{split}: {plans:?}");
    }
}

#[test]
fn scenes_are_alfreds_floor_plans() {
    // FloorPlan1: 8 cabinets, 3 countertops, 8 drawers, 2 shelves, 4 stove burners, one of each other kind.
    let scene = crate::scenes::SCENES.iter().find(|scene| scene.0 == 1).unwrap();
    let count = |kind: &str| scene.1.iter().find(|(k, _)| *k == kind).map(|&(_, n)| n);
    assert_eq!((count("Cabinet"), count("CounterTop"), count("Drawer")), (Some(8), Some(3), Some(8)));
    assert_eq!((count("Shelf"), count("StoveBurner"), count("SinkBasin")), (Some(2), Some(4), Some(1)));
    assert_eq!(crate::scenes::SCENES.len(), 120);
    // A generated scene holds exactly its floor plan's receptacles.
    let mut env = env();
    for index in (3..600).step_by(6) {
        env.reset("train", index, 0).unwrap();
        let world = world_of(&env);
        let scene = crate::scenes::SCENES.iter().find(|scene| u64::from(scene.0) == world.floor_plan).unwrap();
        let total: u32 = scene.1.iter().map(|&(_, n)| n).sum();
        assert_eq!(world.receptacles.len() as u32, total, "train {index}");
    }
}

#[test]
fn a_task_index_is_one_game_whatever_the_seed() {
    let opening = |split, index, seed| env().reset(split, index, seed).unwrap();
    assert_eq!(opening("train", 7, 1), opening("train", 7, 1));
    assert_eq!(opening("valid_unseen", 0, 0), opening("valid_unseen", 0, 1));
    let distinct: std::collections::HashSet<String> = (0..10).map(|seed| opening("train", 7, seed)).collect();
    assert_eq!(distinct.len(), 1);
    let tasks: std::collections::HashSet<String> = (0..10).map(|index| opening("train", index, 0)).collect();
    assert_eq!(tasks.len(), 10);
    assert_ne!(opening("train", 7, 1), opening("valid_seen", 7, 1));
    assert!(env().reset("train", 3553, 0).is_err());
    assert!(env().reset("test", 0, 0).is_err());
    assert!(env().step("<think>x</think><action>look</action>").is_err());
    assert!(env().admissible_actions().is_err());
}

#[test]
fn objects_are_placed_only_where_their_receptacle_can_hold_them() {
    let mut env = env();
    for index in 0..600 {
        env.reset("train", index, 9).unwrap();
        let world = world_of(&env);
        for object in &world.objects {
            let Place::In(r) = object.place else { panic!("an object starts held") };
            let kind = world.receptacles[r].kind;
            if object.pickable {
                assert!(tables::holds(kind, object.kind), "{} in {kind}", object.name);
            } else {
                assert!(tables::LAMP_STANDS.contains(&kind), "{} on {kind}", object.name);
            }
        }
        assert!(world.goal.task_type.rooms().contains(&world.room));
        assert!(!reward::satisfied(world), "train {index} starts solved");
    }
}

/// One scripted episode in the first valid_seen kitchen, exercising the feedback strings.
/// A small kitchen built by hand, so that the feedback test does not depend on scene generation.
fn hand_built_kitchen() -> AlfworldEnv {
    let recep = |kind: &'static str, number: u32| Receptacle {
        kind,
        name: format!("{} {number}", kind.to_lowercase()),
        openable: tables::openable(kind),
        open: !tables::openable(kind),
    };
    let object = |kind: &'static str, number: u32, r: usize| Object {
        kind,
        name: format!("{} {number}", kind.to_lowercase()),
        place: Place::In(r),
        pickable: true,
        hot: false,
        cold: false,
        clean: false,
        on: false,
    };
    let receptacles = vec![
        recep("Fridge", 1),
        recep("Microwave", 1),
        recep("SinkBasin", 1),
        recep("CounterTop", 1),
        recep("Cabinet", 1),
        recep("Cabinet", 2),
        recep("CounterTop", 2),
    ];
    let objects = vec![
        object("Egg", 1, 1),
        object("Egg", 2, 0),
        object("Potato", 1, 0),
        object("Bowl", 1, 1),
        object("Fork", 1, 3),
        object("Apple", 1, 3),
    ];
    let goal = world::Goal {
        task_type: TaskType::PickHeatThenPlace,
        object: "Egg",
        target: "CounterTop",
        text: "put a hot egg in countertop".into(),
    };
    let world = World { room: tables::Room::Kitchen, floor_plan: 7, receptacles, objects, at: None, goal };
    let seen = vec![false; world.receptacles.len()];
    AlfworldEnv {
        config: AlfworldConfig::default(),
        episode: Some(Episode { world, searched: seen.clone(), seen, steps: 0, done: false, won: false }),
    }
}

#[test]
fn feedback_strings() {
    // Every string below was checked against ALFWorld's engine (alfred.twl2 through TextWorld's PDDL
    // environment); tests/alfworld-real compares the same on 600 generated tasks.
    let mut env = hand_built_kitchen();
    let mut say = |command: &str| {
        let r = env.step(&format!("<think>t</think><action>{command}</action>")).unwrap();
        format!("> {command}\n{}\n", r.observation)
    };
    let mut out = text::opening(world_of(&hand_built_kitchen())) + "\n";
    for command in [
        "look",
        "inventory",
        "go to fridge 1",
        "take egg 9 from fridge 1",
        "close fridge 1",
        "open fridge 1",
        "examine egg 2",
        "take egg 2 from fridge 1",
        "inventory",
        "examine egg 2",
        "cool egg 2 with fridge 1",
        "examine egg 2",
        "close fridge 1",
        "examine fridge 1",
        "go to sinkbasin 1",
        "clean egg 2 with sinkbasin 1",
        "examine egg 2",
        "go to microwave 1",
        "heat egg 2 with microwave 1",
        "examine egg 2",
        "move egg 2 to microwave 1",
        "open microwave 1",
        "move egg 2 to microwave 1",
        "examine microwave 1",
        "look",
        "go to countertop 1",
        "take fork 1 from countertop 1",
        "heat fork 1 with countertop 1",
        "go to microwave 1",
        "heat fork 1 with microwave 1",
        "dance",
        "go to  microwave 1",
        "go to microwave 1",
    ] {
        out += &say(command);
    }
    expect![[r#"
        -= Welcome to TextWorld, ALFRED! =-

        You are in the middle of a room. Looking quickly around you, you see a cabinet 2, a cabinet 1, a countertop 2, a countertop 1, a fridge 1, a microwave 1, and a sinkbasin 1.

        Your task is to: put a hot egg in countertop.
        > look
        You are in the middle of a room. Looking quickly around you, you see nothing.
        > inventory
        You are not carrying anything.
        > go to fridge 1
        You arrive at fridge 1. The fridge 1 is closed.
        > take egg 9 from fridge 1
        Nothing happens.
        > close fridge 1
        Nothing happens.
        > open fridge 1
        You open the fridge 1. The fridge 1 is open. In it, you see a egg 2, and a potato 1.
        > examine egg 2
        Nothing happens.
        > take egg 2 from fridge 1
        You pick up the egg 2 from the fridge 1.
        > inventory
        You are carrying: a egg 2.
        > examine egg 2
        There's nothing special about egg 2.
        > cool egg 2 with fridge 1
        You cool the egg 2 using the fridge 1.
        > examine egg 2
        This is a cold egg 2.
        > close fridge 1
        You close the fridge 1.
        > examine fridge 1
        The fridge 1 is closed.
        > go to sinkbasin 1
        You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing.
        > clean egg 2 with sinkbasin 1
        You clean the egg 2 using the sinkbasin 1.
        > examine egg 2
        This is a cool and clean egg 2.
        > go to microwave 1
        You arrive at microwave 1. The microwave 1 is closed.
        > heat egg 2 with microwave 1
        You heat the egg 2 using the microwave 1.
        > examine egg 2
        This is a hot and clean egg 2.
        > move egg 2 to microwave 1
        Nothing happens.
        > open microwave 1
        You open the microwave 1. The microwave 1 is open. In it, you see a bowl 1, and a egg 1.
        > move egg 2 to microwave 1
        You move the egg 2 to the microwave 1.
        > examine microwave 1
        The microwave 1 is open. In it, you see a bowl 1, a egg 2, and a egg 1.
        > look
        You are facing the microwave 1. Next to it, you see nothing.
        > go to countertop 1
        You arrive at countertop 1. On the countertop 1, you see a apple 1, and a fork 1.
        > take fork 1 from countertop 1
        You pick up the fork 1 from the countertop 1.
        > heat fork 1 with countertop 1
        Nothing happens.
        > go to microwave 1
        You arrive at microwave 1. The microwave 1 is open. In it, you see a bowl 1, a egg 2, and a egg 1.
        > heat fork 1 with microwave 1
        Nothing happens.
        > dance
        Nothing happens.
        > go to  microwave 1
        Nothing happens.
        > go to microwave 1
        Nothing happens.
    "#]].assert_eq(&out);
}

#[test]
fn help_is_answered_as_alfworld_and_left_out_of_the_prompt_list() {
    let mut env = hand_built_kitchen();
    let r = env.step("<think>t</think><action>help</action>").unwrap();
    assert!(r.valid && r.observation.starts_with("Available commands:\n  look:"), "{}", r.observation);
    assert!(r.observation.ends_with("slice (object) with (object):     slice an object using a sharp object\n"));
    assert!(actions::admissible(world_of(&env)).contains(&"help".to_owned()));
    assert!(!env.admissible_actions().unwrap().contains(&"help".to_owned()));
}

#[test]
fn list_formatting() {
    let list = |names: &[&str]| text::list(names.iter().copied());
    assert_eq!(list(&[]), "nothing");
    assert_eq!(list(&["apple 1"]), "a apple 1");
    assert_eq!(list(&["apple 1", "mug 2"]), "a apple 1, and a mug 2");
    assert_eq!(list(&["apple 1", "mug 2", "egg 1"]), "a apple 1, a mug 2, and a egg 1");
}

#[test]
fn malformed_responses_are_played_and_penalised_as_verl_agent_does() {
    // verl-agent's alfworld_projection: without both action tags the last 30 characters are played; a response
    // is valid only with both action tags, <think> and </think>, and no CJK. Invalid costs 0.1 either way.
    let mut env = hand_built_kitchen();
    let before = world_of(&env).clone();
    for response in [
        "Let me think. I will go to the fridge",
        "",
        "<action>nowhere</action>",
        "<think>思考</think><action>look 1</action>",
    ] {
        let r = env.step(response).unwrap();
        assert!(!r.valid && !r.done && !r.won, "{response:?}");
        assert_eq!((r.observation.as_str(), r.reward), ("Nothing happens.", -0.1), "{response:?}");
        assert_eq!(world_of(&env), &before);
    }
    let r = env.step("Let me think. I will go to the fridge").unwrap();
    assert_eq!(r.action, "think. i will go to the fridge");
    // A bare command is its own last 30 characters, so it is played, and penalised.
    let r = env.step("go to fridge 1").unwrap();
    assert!(!r.valid);
    assert_eq!((r.observation.as_str(), r.reward), ("You arrive at fridge 1. The fridge 1 is closed.", -0.1));
    // Without <think> the action is played too.
    let r = env.step("<ACTION>Open Fridge 1</ACTION>").unwrap();
    assert!(!r.valid && r.observation.starts_with("You open the fridge 1."), "{}", r.observation);
    // The closing tag before the opening one gives an empty command: valid, and nothing happens.
    let r = env.step("<think>x</think></action>look<action>").unwrap();
    assert!(r.valid);
    assert_eq!((r.observation.as_str(), r.reward, r.action.as_str()), ("Nothing happens.", 0.0, ""));
    let r = env.step("<think>x</think><action>go to nowhere 1</action>").unwrap();
    assert!(r.valid);
    assert_eq!((r.observation.as_str(), r.reward), ("Nothing happens.", 0.0));
    assert_eq!(r.action, "go to nowhere 1");
}

#[test]
fn projection_matches_verl_agent() {
    use crate::projection::{project, Projection};
    let p = |command: &str, valid| Projection { command: command.into(), valid };
    assert_eq!(project("<think>a</think><action> Go To Cabinet 1 </action>"), p("go to cabinet 1", true));
    assert_eq!(project("<THINK>a</THINK><action>look</action>"), p("look", false));
    assert_eq!(project("<think>a</think><action>look</action><action>inventory</action>"), p("look", true));
    assert_eq!(project("abcdefghijklmnopqrstuvwxyz0123456789"), p("ghijklmnopqrstuvwxyz0123456789", false));
    assert_eq!(project("</think><think><action>x\u{1c}</action>"), p("x", true));
    assert_eq!(project("<think>\u{9fff}</think><action>x</action>"), p("x", false));
    assert_eq!(project("<think>\u{a000}</think><action>x</action>"), p("x", true));
}

#[test]
fn the_step_limit_ends_the_episode() {
    let mut env = AlfworldEnv::create("max_steps = 3").unwrap();
    env.reset("train", 0, 0).unwrap();
    for step in 1..=3 {
        let r = env.step("<think>x</think><action>look</action>").unwrap();
        assert_eq!(r.done, step == 3);
    }
    assert!(env.step("<think>x</think><action>look</action>").is_err());
    assert_eq!(env.expert_action().unwrap(), None);
}

#[test]
fn config_presets_and_errors() {
    assert_eq!(AlfworldConfig::from_toml(&AlfworldEnv::default_config()).unwrap(), AlfworldConfig::default());
    assert_eq!(AlfworldConfig::from_toml("preset = \"mini\"").unwrap(), AlfworldConfig::mini());
    let mini = AlfworldConfig::from_toml("preset = \"mini\"\nmax_steps = 40").unwrap();
    assert_eq!((mini.max_steps, mini.max_instances_per_type), (40, 2));
    let err = AlfworldEnv::create("max_step = 3").unwrap_err();
    assert!(err.contains("unknown field `max_step`") && err.contains("max_steps"), "{err}");
    let err = AlfworldEnv::create("preset = \"huge\"").unwrap_err();
    assert!(err.contains("expected \"default\" or \"mini\""), "{err}");
    assert!(AlfworldEnv::create("max_steps = 0").is_err());
    assert!(AlfworldEnv::create("max_steps = -1").is_err());
    assert_eq!(
        AlfworldEnv::create("max_distractors = 61").unwrap_err(),
        "alfworld config: max_distractors is 61, but must be from 0 to 60"
    );
    assert!(AlfworldEnv::create("max_instances_per_type = 31").unwrap_err().contains("from 1 to 30"));
    assert!(AlfworldEnv::create("max_steps = 100000").unwrap_err().contains("max_steps is 100000"));
}

#[test]
fn task_types_select_what_is_played() {
    let mut two = AlfworldEnv::create("preset = \"mini\"\ntask_types = [2, 1]").unwrap();
    for index in 0..8 {
        let (_, won) = expert_episode(&mut two, "valid_seen", index, 0);
        assert!(won, "valid_seen {index}");
        let expected = if index % 2 == 0 { TaskType::LookAtObjInLight } else { TaskType::PickAndPlaceSimple };
        assert_eq!(two.task_type().unwrap().unwrap(), expected.name(), "task {index}");
    }
    // All six in the default order play exactly what the faithful default plays.
    let mut all = AlfworldEnv::create("task_types = [1, 2, 3, 4, 5, 6]").unwrap();
    for index in 0..6 {
        assert_eq!(all.reset("train", index, 3).unwrap(), env().reset("train", index, 3).unwrap());
    }
    for (bad, needle) in [
        ("task_types = []", "at least one task type"),
        ("task_types = [0]", "numbered 1 to 6"),
        ("task_types = [7]", "numbered 1 to 6"),
        ("task_types = [1, 1]", "names 1 twice"),
    ] {
        let err = AlfworldEnv::create(bad).unwrap_err();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

#[test]
fn the_mini_preset_lists_admissible_actions() {
    let mut env = AlfworldEnv::create("preset = \"mini\"").unwrap();
    let opening = env.reset("train", 0, 0).unwrap();
    assert!(opening.contains("\n\nYour admissible actions of the current situation are: ['go to "), "{opening}");
    assert!(opening.ends_with(", 'inventory', 'look']."), "{opening}");
}

#[test]
fn the_plugin_abi_plays_like_the_direct_call() {
    let plugin = atod_envs::EnvPlugin::bundled(crate::atod_root_module());
    assert_eq!(plugin.name(), "alfworld");
    let mut wrapped = plugin.create("").unwrap();
    assert_eq!(wrapped.info(), env().info());
    for index in 0..6 {
        let via_abi = expert_episode(&mut wrapped, "valid_unseen", index, 5);
        let direct = expert_episode(&mut env(), "valid_unseen", index, 5);
        assert!(via_abi.1);
        assert_eq!(via_abi, direct);
    }
    assert!(plugin.create("max_steps = \"many\"").is_err());
}

#[test]
fn adversarial_responses() {
    let huge = format!("<think>{}</think><action>look</action>", "x".repeat(1 << 20));
    let lossy = String::from_utf8_lossy(&[0x3c, 0xff, 0xfe, 0x61, 0x63, 0x74, 0xc3, 0x28, 0x3e]).into_owned();
    let responses = [
        String::new(),
        "x".repeat(1 << 20),
        huge,
        lossy,
        "<think><think></think><action><action>look</action></action>".into(),
        "<think>x</think><action>go to".into(),
        "<think>x</think></action>look<action>".into(),
        "<think>x</think><action>take \u{0} from \u{0}</action>".into(),
        "<think>x</think><action>move  to </action>".into(),
        "<think>x</think><action>heat with</action>".into(),
        "<think>x</think><action>examine </action>".into(),
        "<think>我</think><action>look</action>".into(),
        "<think>x</think><action>GO TO CABINET 1</action>".into(),
    ];
    let mut env = env();
    env.reset("train", 2, 0).unwrap();
    for response in &responses {
        let before = world_of(&env).clone();
        let r = env.step(response).unwrap();
        check_invariants(&env, &r.observation);
        if !r.valid {
            assert_eq!(world_of(&env), &before);
        }
    }
}

/// World invariants: every object in exactly one valid place, at most one held, lamps never held, and no object
/// of a closed receptacle named in the observation.
fn check_invariants(env: &AlfworldEnv, observation: &str) {
    let world = world_of(env);
    assert!(world.objects.iter().filter(|o| o.place == Place::Held).count() <= 1);
    assert!(world.at.is_none_or(|r| r < world.receptacles.len()));
    for object in &world.objects {
        match object.place {
            Place::In(r) => {
                assert!(r < world.receptacles.len());
                if !world.receptacles[r].open {
                    assert!(
                        !mentions(observation, &object.name),
                        "{} of a closed receptacle in {observation:?}",
                        object.name
                    );
                }
            }
            Place::Held => assert!(object.pickable),
        }
    }
}

/// Whether `text` names `name` as a whole ("knife 1" is not named by "butterknife 1" or "knife 12").
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        !text[..i].ends_with(|c: char| c.is_alphanumeric())
            && !text[i + name.len()..].starts_with(|c: char| c.is_ascii_digit())
    })
}

/// One input of a property test: an arbitrary string, a structured command, or an admissible action.
#[derive(Debug, Clone)]
enum Input {
    Raw(String),
    Command(String),
    Admissible(prop::sample::Index),
}

fn input() -> impl Strategy<Value = Input> {
    let names = prop::sample::select(vec![
        "cabinet 1",
        "fridge 1",
        "microwave 1",
        "sinkbasin 1",
        "countertop 1",
        "drawer 2",
        "desklamp 1",
        "floorlamp 1",
        "apple 1",
        "mug 1",
        "book 1",
        "",
        "cabinet 99",
    ]);
    let verbs = prop::sample::select(vec![
        "go to",
        "open",
        "close",
        "take",
        "move",
        "use",
        "heat",
        "clean",
        "cool",
        "examine",
        "inventory",
        "look",
    ]);
    let command = (verbs, names.clone(), prop::sample::select(vec!["from", "to", "with", ""]), names)
        .prop_map(|(v, a, p, b)| format!("<think>t</think><action>{v} {a} {p} {b}</action>").replace("  ", " "));
    prop_oneof![
        any::<String>().prop_map(Input::Raw),
        "(<think>|</think>|<action>|</action>|look|go to|[a-z ]{1,6}){0,8}".prop_map(Input::Raw),
        command.prop_map(Input::Command),
        any::<prop::sample::Index>().prop_map(Input::Admissible),
        any::<prop::sample::Index>().prop_map(Input::Admissible),
    ]
}

fn play(env: &mut AlfworldEnv, response: &str) -> Result<bool, TestCaseError> {
    let before = world_of(env).clone();
    let admissible = env.admissible_actions().unwrap();
    let r = env.step(response).map_err(|e| TestCaseError::fail(e.to_string()))?;
    check_invariants(env, &r.observation);
    if !r.valid {
        prop_assert_eq!(world_of(env), &before);
        prop_assert_eq!(r.reward, -0.1);
    } else if admissible.contains(&r.action) {
        prop_assert_ne!(r.observation.as_str(), actions::NOTHING_HAPPENS);
    } else {
        prop_assert_eq!(r.observation.as_str(), actions::NOTHING_HAPPENS);
        prop_assert_eq!(world_of(env), &before);
    }
    Ok(r.done)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// 1000 cases of 10 to 12 arbitrary strings each: at least 10,000 arbitrary responses.
    #[test]
    fn arbitrary_strings_never_break_the_world(
        index in 0..3553u64,
        responses in prop::collection::vec(any::<String>(), 10..=12),
    ) {
        let mut env = env();
        env.reset("train", index, index)?;
        for response in responses {
            if play(&mut env, &response)? {
                break;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Mixed inputs reach deep states (things held, receptacles opened); admissible commands always act, and
    /// anything else either is invalid or answers "Nothing happens." with the world unchanged.
    #[test]
    fn mixed_inputs_keep_the_invariants(
        split in prop::sample::select(vec!["train", "valid_seen", "valid_unseen"]),
        index in 0..134u64,
        inputs in prop::collection::vec(input(), 1..60),
    ) {
        let mut env = env();
        env.reset(split, index, 1)?;
        for input in inputs {
            let response = match input {
                Input::Raw(text) | Input::Command(text) => text,
                Input::Admissible(i) => {
                    let actions = env.admissible_actions()?;
                    ActionFormat::ThinkAction.wrap(i.get(&actions).as_str(), "t")
                }
            };
            if play(&mut env, &response)? {
                break;
            }
        }
    }
}
