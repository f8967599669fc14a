//! Tests of the alfworld environment: transcripts, the expert over the splits, a random baseline, the text
//! formats, configs, and properties of arbitrary responses.

use std::collections::BTreeMap;

use expect_test::{expect, Expect};
use proptest::prelude::*;

use super::*;
use crate::world::{Place, Rng, World};

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

        You are in the middle of a room. Looking quickly around you, you see a bed 1, a garbagecan 1, and a shelf 1.

        Your task is to: put a book in bed.
        > <think>Subgoal: find a book. I have not checked shelf 1 yet.</think><action>go to shelf 1</action>
        You arrive at shelf 1. On the shelf 1, you see a alarmclock 1, a alarmclock 2, a book 1, a book 2, a bowl 1, a bowl 2, a cellphone 1, a creditcard 1, a creditcard 2, a desklamp 1, a keychain 1, a pen 1, a pen 2, and a pencil 2.
        > <think>Subgoal: take the book 1 from shelf 1.</think><action>take book 1 from shelf 1</action>
        You pick up the book 1 from the shelf 1.
        > <think>Subgoal: put the book 1 in bed 1. I go there.</think><action>go to bed 1</action>
        You arrive at bed 1. On the bed 1, you see a basketball 1, a laptop 1, a laptop 2, and a pillow 1.
        > <think>Subgoal: put the book 1 in bed 1.</think><action>move book 1 to bed 1</action>
        You move the book 1 to the bed 1.
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

            You are in the middle of a room. Looking quickly around you, you see a bed 1, a garbagecan 1, a drawer 1, a drawer 2, a drawer 3, a drawer 4, a shelf 1, a desk 1, a box 1, a laundryhamper 1, a cabinet 1, and a diningtable 1.

            Your task is to: look at alarmclock under the desklamp.
            > <think>Subgoal: find an alarmclock. I have not checked shelf 1 yet.</think><action>go to shelf 1</action>
            You arrive at shelf 1. On the shelf 1, you see a desklamp 1, and a pencil 1.
            > <think>Subgoal: find an alarmclock. I have not checked desk 1 yet.</think><action>go to desk 1</action>
            You arrive at desk 1. On the desk 1, you see a book 1, a bowl 1, and a laptop 1.
            > <think>Subgoal: find an alarmclock. I have not checked diningtable 1 yet.</think><action>go to diningtable 1</action>
            You arrive at diningtable 1. On the diningtable 1, you see a alarmclock 1, a alarmclock 2, and a creditcard 2.
            > <think>Subgoal: take the alarmclock 1 from diningtable 1.</think><action>take alarmclock 1 from diningtable 1</action>
            You pick up the alarmclock 1 from the diningtable 1.
            > <think>I hold the alarmclock 1; the desklamp 1 is at shelf 1.</think><action>go to shelf 1</action>
            You arrive at shelf 1. On the shelf 1, you see a desklamp 1, and a pencil 1.
            > <think>I hold the alarmclock 1; now I turn on the desklamp 1.</think><action>use desklamp 1</action>
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

        You are in the middle of a room. Looking quickly around you, you see a towelholder 1, a handtowelholder 1, a sinkbasin 1, a garbagecan 1, a toilet 1, a toiletpaperhanger 1, and a countertop 1.

        Your task is to: put a clean dishsponge in countertop.
        > <think>Subgoal: find a dishsponge. I have not checked sinkbasin 1 yet.</think><action>go to sinkbasin 1</action>
        You arrive at sinkbasin 1. On the sinkbasin 1, you see a dishsponge 1.
        > <think>Subgoal: take the dishsponge 1 from sinkbasin 1.</think><action>take dishsponge 1 from sinkbasin 1</action>
        You pick up the dishsponge 1 from the sinkbasin 1.
        > <think>Subgoal: clean the dishsponge 1 with sinkbasin 1.</think><action>clean dishsponge 1 with sinkbasin 1</action>
        You clean the dishsponge 1 using the sinkbasin 1.
        > <think>Subgoal: put the dishsponge 1 in countertop 1. I go there.</think><action>go to countertop 1</action>
        You arrive at countertop 1. On the countertop 1, you see a cloth 1, a soapbar 2, and a spraybottle 2.
        > <think>Subgoal: put the dishsponge 1 in countertop 1.</think><action>move dishsponge 1 to countertop 1</action>
        You move the dishsponge 1 to the countertop 1.
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

        You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a cabinet 2, a cabinet 3, a cabinet 4, a cabinet 5, a cabinet 6, a cabinet 7, a cabinet 8, a cabinet 9, a countertop 1, a countertop 2, a stoveburner 1, a fridge 1, a microwave 1, a sinkbasin 1, a coffeemachine 1, a toaster 1, a garbagecan 1, a drawer 1, a drawer 2, a drawer 3, a drawer 4, a drawer 5, a drawer 6, and a diningtable 1.

        Your task is to: put a hot mug in fridge.
        > <think>Subgoal: find a mug. I have not checked countertop 1 yet.</think><action>go to countertop 1</action>
        You arrive at countertop 1. On the countertop 1, you see a bread 2.
        > <think>Subgoal: find a mug. I have not checked countertop 2 yet.</think><action>go to countertop 2</action>
        You arrive at countertop 2. On the countertop 2, you see a bread 1, a dishsponge 1, and a spoon 1.
        > <think>Subgoal: find a mug. I have not checked sinkbasin 1 yet.</think><action>go to sinkbasin 1</action>
        You arrive at sinkbasin 1. On the sinkbasin 1, you see a apple 1, a glassbottle 2, a spatula 1, and a tomato 1.
        > <think>Subgoal: find a mug. I have not checked coffeemachine 1 yet.</think><action>go to coffeemachine 1</action>
        You arrive at coffeemachine 1. On the coffeemachine 1, you see nothing.
        > <think>Subgoal: find a mug. I have not checked diningtable 1 yet.</think><action>go to diningtable 1</action>
        You arrive at diningtable 1. On the diningtable 1, you see nothing.
        > <think>Subgoal: find a mug. I have not checked cabinet 1 yet.</think><action>go to cabinet 1</action>
        You arrive at cabinet 1. The cabinet 1 is closed.
        > <think>Subgoal: find a mug. The cabinet 1 is closed, so I open it.</think><action>open cabinet 1</action>
        You open the cabinet 1. In it, you see nothing.
        > <think>Subgoal: find a mug. I have not checked cabinet 2 yet.</think><action>go to cabinet 2</action>
        You arrive at cabinet 2. The cabinet 2 is closed.
        > <think>Subgoal: find a mug. The cabinet 2 is closed, so I open it.</think><action>open cabinet 2</action>
        You open the cabinet 2. In it, you see a mug 1.
        > <think>Subgoal: take the mug 1 from cabinet 2.</think><action>take mug 1 from cabinet 2</action>
        You pick up the mug 1 from the cabinet 2.
        > <think>Subgoal: heat the mug 1 with microwave 1. I go to microwave 1 first.</think><action>go to microwave 1</action>
        You arrive at microwave 1. The microwave 1 is closed.
        > <think>Subgoal: heat the mug 1 with microwave 1.</think><action>heat mug 1 with microwave 1</action>
        You heat the mug 1 using the microwave 1.
        > <think>Subgoal: put the mug 1 in fridge 1. I go there.</think><action>go to fridge 1</action>
        You arrive at fridge 1. The fridge 1 is closed.
        > <think>Subgoal: put the mug 1 in fridge 1. It is closed, so I open it.</think><action>open fridge 1</action>
        You open the fridge 1. In it, you see a egg 2, a glassbottle 1, a plate 1, and a potato 2.
        > <think>Subgoal: put the mug 1 in fridge 1.</think><action>move mug 1 to fridge 1</action>
        You move the mug 1 to the fridge 1.
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

        You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a cabinet 2, a cabinet 3, a cabinet 4, a cabinet 5, a cabinet 6, a cabinet 7, a cabinet 8, a cabinet 9, a cabinet 10, a countertop 1, a stoveburner 1, a stoveburner 2, a stoveburner 3, a fridge 1, a microwave 1, a sinkbasin 1, a coffeemachine 1, a toaster 1, a garbagecan 1, a drawer 1, and a drawer 2.

        Your task is to: put a cool mug in cabinet.
        > <think>Subgoal: find a mug. I have not checked countertop 1 yet.</think><action>go to countertop 1</action>
        You arrive at countertop 1. On the countertop 1, you see a cup 1, a fork 2, a knife 1, a lettuce 1, a mug 1, a saltshaker 2, a statue 1, and a statue 2.
        > <think>Subgoal: take the mug 1 from countertop 1.</think><action>take mug 1 from countertop 1</action>
        You pick up the mug 1 from the countertop 1.
        > <think>Subgoal: cool the mug 1 with fridge 1. I go to fridge 1 first.</think><action>go to fridge 1</action>
        You arrive at fridge 1. The fridge 1 is closed.
        > <think>Subgoal: cool the mug 1 with fridge 1.</think><action>cool mug 1 with fridge 1</action>
        You cool the mug 1 using the fridge 1.
        > <think>Subgoal: put the mug 1 in cabinet 1. I go there.</think><action>go to cabinet 1</action>
        You arrive at cabinet 1. The cabinet 1 is closed.
        > <think>Subgoal: put the mug 1 in cabinet 1. It is closed, so I open it.</think><action>open cabinet 1</action>
        You open the cabinet 1. In it, you see a bowl 2, and a plate 1.
        > <think>Subgoal: put the mug 1 in cabinet 1.</think><action>move mug 1 to cabinet 1</action>
        You move the mug 1 to the cabinet 1.
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

        You are in the middle of a room. Looking quickly around you, you see a sofa 1, a box 1, a garbagecan 1, a armchair 1, a armchair 2, a coffeetable 1, a sidetable 1, a sidetable 2, a drawer 1, a drawer 2, a drawer 3, a drawer 4, a drawer 5, and a shelf 1.

        Your task is to: put two candle in drawer.
        > <think>Subgoal: find a candle. I have not checked coffeetable 1 yet.</think><action>go to coffeetable 1</action>
        You arrive at coffeetable 1. On the coffeetable 1, you see a candle 2, and a vase 1.
        > <think>Subgoal: take the candle 2 from coffeetable 1.</think><action>take candle 2 from coffeetable 1</action>
        You pick up the candle 2 from the coffeetable 1.
        > <think>Subgoal: put the candle 2 in drawer 1. I go there.</think><action>go to drawer 1</action>
        You arrive at drawer 1. The drawer 1 is closed.
        > <think>Subgoal: put the candle 2 in drawer 1. It is closed, so I open it.</think><action>open drawer 1</action>
        You open the drawer 1. In it, you see a wateringcan 1.
        > <think>Subgoal: put the candle 2 in drawer 1.</think><action>move candle 2 to drawer 1</action>
        You move the candle 2 to the drawer 1.
        > <think>Subgoal: find a candle. I have not checked sidetable 1 yet.</think><action>go to sidetable 1</action>
        You arrive at sidetable 1. On the sidetable 1, you see a candle 3.
        > <think>Subgoal: take the candle 3 from sidetable 1.</think><action>take candle 3 from sidetable 1</action>
        You pick up the candle 3 from the sidetable 1.
        > <think>Subgoal: put the candle 3 in drawer 1. I go there.</think><action>go to drawer 1</action>
        You arrive at drawer 1. The drawer 1 is open. In it, you see a candle 2, and a wateringcan 1.
        > <think>Subgoal: put the candle 3 in drawer 1.</think><action>move candle 3 to drawer 1</action>
        You move the candle 3 to the drawer 1.
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
fn splits_hold_out_layouts_and_goal_pairs() {
    let sizes: Vec<(String, u64)> = env().info().splits.into_iter().map(|s| (s.name, s.size)).collect();
    assert_eq!(sizes, [("train".into(), 3553), ("valid_seen".into(), 140), ("valid_unseen".into(), 134)]);
    let mut env = env();
    for (split, unseen) in [("train", false), ("valid_seen", false), ("valid_unseen", true)] {
        for index in 0..120 {
            env.reset(split, index, 3).unwrap();
            let world = world_of(&env);
            assert_eq!(world::is_unseen_pair(world.goal.object, world.goal.target), unseen, "{split} {index}");
            assert_eq!(world.floor_plan > 25, unseen, "{split} {index}");
        }
    }
}

#[test]
fn scenes_are_deterministic_and_depend_on_the_seed() {
    let opening = |split, index, seed| env().reset(split, index, seed).unwrap();
    assert_eq!(opening("train", 7, 1), opening("train", 7, 1));
    let distinct: std::collections::HashSet<String> = (0..10).map(|seed| opening("train", 7, seed)).collect();
    assert!(distinct.len() > 5);
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
#[test]
fn feedback_strings() {
    let mut env = env();
    let index = (0..140).find(|&i| {
        env.reset("valid_seen", i, 0).unwrap();
        world_of(&env).room == tables::Room::Kitchen
    });
    assert!(index.is_some());
    let mut say = |command: &str| {
        let r = env.step(&format!("<think>t</think><action>{command}</action>")).unwrap();
        format!("> {command}\n{}\n", r.observation)
    };
    let mut out = String::new();
    for command in [
        "look",
        "inventory",
        "go to fridge 1",
        "take egg 9 from fridge 1",
        "close fridge 1",
        "open fridge 1",
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
        "dance",
        "go to  microwave 1",
        "go to microwave 1",
    ] {
        out += &say(command);
    }
    expect![[r#"
        > look
        You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a cabinet 2, a cabinet 3, a cabinet 4, a cabinet 5, a cabinet 6, a cabinet 7, a cabinet 8, a cabinet 9, a countertop 1, a countertop 2, a stoveburner 1, a fridge 1, a microwave 1, a sinkbasin 1, a coffeemachine 1, a toaster 1, a garbagecan 1, a drawer 1, a drawer 2, a drawer 3, a drawer 4, a drawer 5, a drawer 6, and a diningtable 1.
        > inventory
        You are not carrying anything.
        > go to fridge 1
        You arrive at fridge 1. The fridge 1 is closed.
        > take egg 9 from fridge 1
        Nothing happens.
        > close fridge 1
        Nothing happens.
        > open fridge 1
        You open the fridge 1. In it, you see a egg 2, a glassbottle 1, a plate 1, and a potato 2.
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
        You arrive at sinkbasin 1. On the sinkbasin 1, you see a apple 1, a glassbottle 2, a spatula 1, and a tomato 1.
        > clean egg 2 with sinkbasin 1
        You clean the egg 2 using the sinkbasin 1.
        > examine egg 2
        This is a clean egg 2.
        > go to microwave 1
        You arrive at microwave 1. The microwave 1 is closed.
        > heat egg 2 with microwave 1
        You heat the egg 2 using the microwave 1.
        > examine egg 2
        This is a hot egg 2.
        > move egg 2 to microwave 1
        Nothing happens.
        > open microwave 1
        You open the microwave 1. In it, you see a bowl 1, a egg 1, and a potato 1.
        > move egg 2 to microwave 1
        You move the egg 2 to the microwave 1.
        > examine microwave 1
        The microwave 1 is open. In it, you see a bowl 1, a egg 1, a egg 2, and a potato 1.
        > look
        You are facing the microwave 1. Next to it, you see nothing.
        > dance
        Nothing happens.
        > go to  microwave 1
        Nothing happens.
        > go to microwave 1
        Nothing happens.
    "#]].assert_eq(&out);
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
fn invalid_responses_are_penalised_and_change_nothing() {
    let mut env = env();
    env.reset("train", 0, 0).unwrap();
    let before = world_of(&env).clone();
    for response in ["go to cabinet 1", "<action>look</action>", "<think>x</think><action> </action>", ""] {
        let r = env.step(response).unwrap();
        assert!(!r.valid && !r.done && !r.won, "{response:?}");
        assert_eq!(r.reward, -0.1);
        assert!(r.observation.starts_with("Invalid response: "), "{}", r.observation);
        assert_eq!(world_of(&env), &before);
    }
    let r = env.step("<think>x</think><action>go to nowhere 1</action>").unwrap();
    assert!(r.valid);
    assert_eq!((r.observation.as_str(), r.reward), ("Nothing happens.", 0.0));
    assert_eq!(r.action, "go to nowhere 1");
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
    assert!(AlfworldEnv::create("max_instances_per_type = 11").unwrap_err().contains("from 1 to 10"));
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
