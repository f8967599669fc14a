//! The chat tokenizer on the real transcripts of the bundled environments: expert episodes of ALFWorld, WebShop
//! and Search-QA, played through the same root-module ABI as the CLI. A tokenizer trained on half of the texts
//! must round-trip every text exactly and compress the held-out half.

use std::time::Instant;

use atod_core::policy::{ChatMessage, Role};
use atod_envs::EnvPlugin;
use atod_models::ChatTokenizer;

/// Expert episodes per environment.
const EPISODES: u64 = 6;
/// A bound on turns, far above any expert episode, so a broken expert cannot hang the test.
const MAX_TURNS: usize = 200;

/// One episode's texts: system text, task, every observation and every expert response.
fn play_expert(plugin: &EnvPlugin, index: u64) -> Vec<String> {
    let mut env = plugin.create(&plugin.default_config()).expect("the bundled environment builds");
    let mut observation = env.reset("train", index, 7).expect("reset");
    let prompt = env.prompt().expect("prompt");
    let mut texts = vec![prompt.system, prompt.task];
    for _ in 0..MAX_TURNS {
        texts.push(observation);
        // The expert's answer is already a complete response in the environment's `ActionFormat`.
        let Some(response) = env.expert_action().expect("expert") else { break };
        let step = env.step(&response).expect("step");
        texts.push(response);
        observation = step.observation;
        if step.done {
            texts.push(observation);
            break;
        }
        assert!(step.valid, "{}: the expert's response was invalid", plugin.name());
    }
    texts
}

#[test]
fn the_tokenizer_round_trips_and_compresses_every_environment_transcript() {
    let plugins = [
        EnvPlugin::bundled(atod_plugin_alfworld::atod_root_module()),
        EnvPlugin::bundled(atod_plugin_webshop::atod_root_module()),
        EnvPlugin::bundled(atod_plugin_searchqa::atod_root_module()),
    ];
    // Even episodes train, odd ones are held out, so every environment is on both sides.
    let (mut train, mut held_out) = (Vec::new(), Vec::new());
    for plugin in &plugins {
        for index in 0..EPISODES {
            let texts = play_expert(plugin, index);
            assert!(texts.len() > 4, "{} task {index}: too short an episode", plugin.name());
            if index % 2 == 0 { &mut train } else { &mut held_out }.extend(texts);
        }
    }

    let started = Instant::now();
    let tokenizer = ChatTokenizer::train(&train, 512).unwrap();
    let train_time = started.elapsed();
    assert_eq!(tokenizer.vocab_size(), 512);

    for text in train.iter().chain(&held_out) {
        assert_eq!(tokenizer.decode(&tokenizer.encode_response(text)), *text);
    }

    // Compression on texts the tokenizer has not seen (the system texts repeat across episodes, so they and any
    // other repeated text are counted on the training side only).
    let unseen: Vec<&String> = held_out.iter().filter(|t| !train.contains(t)).collect();
    let bytes: usize = unseen.iter().map(|t| t.len()).sum();
    // `encode_response` adds `<|im_end|>`; it is not part of the text.
    let tokens: usize = unseen.iter().map(|t| tokenizer.encode_response(t).len() - 1).sum();
    let tokens_per_byte = tokens as f64 / bytes as f64;
    eprintln!(
        "trained on {} texts in {train_time:?}; held out {} texts, {bytes} bytes, {tokens_per_byte:.3} tokens per byte",
        train.len(),
        unseen.len()
    );
    assert!(bytes > 10_000, "too little held-out text to measure: {bytes} bytes");
    assert!(tokens_per_byte < 0.6, "{tokens_per_byte:.3} tokens per byte on held-out transcripts");

    // A whole conversation of real texts keeps the prompt / response boundary.
    let conversation = [
        ChatMessage::new(Role::System, train[0].clone()),
        ChatMessage::new(Role::User, format!("{}\n\n{}", train[1], train[2])),
        ChatMessage::new(Role::Assistant, train[3].clone()),
    ];
    let chat = tokenizer.encode_chat(&conversation);
    let mut expected = tokenizer.encode_prompt(&conversation[..2]);
    expected.extend(tokenizer.encode_response(&conversation[2].content));
    assert!(chat.ids.starts_with(&expected));
}
