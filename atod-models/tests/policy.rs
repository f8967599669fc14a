//! A language model as a policy: responses carry aligned ids and behaviour log-probs, the text is the decoded
//! ids without the end-of-turn token, sampling is reproducible from the seed, and an export loads back as the
//! same policy.

use atod_core::policy::{ChatMessage, Policy, Role, TurnInput};
use atod_models::{ChatTokenizer, CpuBackend, LmPolicy, SamplingParams, TransformerConfig};
use burn::tensor::backend::Backend;

fn policy(sampling: SamplingParams, seed: u64) -> LmPolicy<CpuBackend> {
    let texts = ["go to desk 1", "take apple 1 from countertop 2", "You arrive at desk 1.", "<think>find it</think>"];
    let tokenizer = ChatTokenizer::train(texts, 300).unwrap();
    let config = TransformerConfig::student_s(tokenizer.vocab_size());
    let device = Default::default();
    CpuBackend::seed(&device, 3);
    let model = config.init::<CpuBackend>(&device).unwrap();
    LmPolicy::new("test", model, config, tokenizer, sampling, seed).unwrap()
}

fn inputs() -> Vec<TurnInput> {
    ["You are in a room.", "Nothing happens.", "You arrive at desk 1. On the desk 1, you see a pen 2."]
        .iter()
        .map(|obs| TurnInput {
            messages: vec![ChatMessage::new(Role::System, "Act."), ChatMessage::new(Role::User, *obs)],
            ..TurnInput::default()
        })
        .collect()
}

#[test]
fn responses_align_ids_logprobs_and_text() {
    let sampling = SamplingParams { max_new_tokens: 12, ..SamplingParams::default() };
    let mut policy = policy(sampling.clone(), 5);
    let responses = policy.act(&inputs()).unwrap();
    assert_eq!(responses.len(), 3);
    let eot = policy.tokenizer.eot_id();
    for r in &responses {
        assert!(!r.token_ids.is_empty() && r.token_ids.len() <= 12);
        assert_eq!(r.token_ids.len(), r.logprobs.len());
        assert!(r.logprobs.iter().all(|lp| lp.is_finite() && *lp <= 0.0));
        let body: Vec<u32> = r.token_ids.iter().copied().filter(|&t| t != eot).collect();
        assert_eq!(r.text, policy.tokenizer.decode(&body));
    }
    // The same seed gives the same samples; scoring agrees with the behaviour log-probs.
    // (A second policy over the same weights: re-initialising would race other tests for burn's global seed.)
    let mut twin =
        LmPolicy::new("twin", policy.model.clone(), policy.config.clone(), policy.tokenizer.clone(), sampling, 5)
            .unwrap();
    let again = twin.act(&inputs()).unwrap();
    assert_eq!(again, responses);
    let prompts: Vec<Vec<u32>> = inputs().iter().map(|i| policy.encode(i)).collect();
    let pairs: Vec<(&[u32], &[u32])> =
        prompts.iter().zip(&responses).map(|(p, r)| (&p[..], &r.token_ids[..])).collect();
    for (scored, r) in policy.score(&pairs).unwrap().iter().zip(&responses) {
        for (a, b) in scored.logprobs.iter().zip(&r.logprobs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn an_export_loads_back_as_the_same_policy() {
    let mut policy = policy(SamplingParams::greedy(8), 0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policy");
    policy.save(&out).unwrap();
    let mut loaded = LmPolicy::<CpuBackend>::load(&out, &Default::default(), SamplingParams::greedy(8), 0).unwrap();
    assert_eq!(loaded.act(&inputs()).unwrap(), policy.act(&inputs()).unwrap());
    assert_eq!(loaded.tokenizer.fingerprint(), policy.tokenizer.fingerprint());
}
