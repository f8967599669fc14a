//! Generation and scoring agree with each other and with the uncached model: KV-cached greedy decoding equals
//! uncached greedy decoding token for token, behaviour log-probs equal scoring's, and padding (other prompts
//! of other lengths in the batch) changes no token and no log-prob.

use std::path::PathBuf;

use atod_models::{checkpoint, generate, score, CpuBackend, Layout, SamplingParams, Transformer};
use burn::tensor::{Int, Tensor, TensorData};
use proptest::prelude::*;

fn model() -> Transformer<CpuBackend> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2-tiny");
    checkpoint::load::<CpuBackend>(&dir, &Default::default()).unwrap().1
}

/// Greedy decoding by re-running the whole sequence every step (no cache).
fn uncached_greedy(model: &Transformer<CpuBackend>, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..steps {
        let layout = Layout::right_padded(&[seq.len()]);
        let ids: Vec<i32> = seq.iter().map(|&t| t as i32).collect();
        let ids = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(ids, [1, seq.len()]), &Default::default());
        let logits: Vec<f32> = model.forward(ids, &layout).into_data().to_vec().unwrap();
        let last = &logits[(seq.len() - 1) * 96..seq.len() * 96];
        let best = (0..96).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        seq.push(best as u32);
    }
    seq[prompt.len()..].to_vec()
}

const PROMPTS: [&[u32]; 4] = [&[1, 17, 42, 5, 88, 3], &[95, 0, 44], &[7, 7, 7, 7, 7, 7, 7, 7, 7, 12], &[50]];

#[test]
fn cached_greedy_equals_uncached_greedy() {
    let model = model();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    let got = generate(&model, &prompts, &SamplingParams::greedy(12), &[], &[0; 4]).unwrap();
    for (prompt, generation) in prompts.iter().zip(&got) {
        assert_eq!(generation.ids, uncached_greedy(&model, prompt, 12), "prompt {prompt:?}");
        assert!(!generation.stopped);
    }
}

#[test]
fn behaviour_logprobs_equal_scoring_and_padding_changes_nothing() {
    let model = model();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    let params = SamplingParams { temperature: 0.7, max_new_tokens: 10, ..SamplingParams::default() };
    let seeds = [11, 12, 13, 14];
    // Token 9 stops a row early where it is drawn, so rows leave the batch at different steps.
    let batched = generate(&model, &prompts, &params, &[9], &seeds).unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = generate(&model, std::slice::from_ref(prompt), &params, &[9], &seeds[i..=i]).unwrap();
        assert_eq!(alone[0].ids, batched[i].ids, "row {i}: tokens depend on the batch");
        for (a, b) in alone[0].logprobs.iter().zip(&batched[i].logprobs) {
            assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
        }
    }
    let pairs: Vec<(&[u32], &[u32])> = prompts.iter().zip(&batched).map(|(p, g)| (&p[..], &g.ids[..])).collect();
    let scored = score(&model, &pairs, 0.7, 8).unwrap();
    for (i, (s, g)) in scored.iter().zip(&batched).enumerate() {
        assert_eq!(s.logprobs.len(), g.ids.len());
        for (a, b) in s.logprobs.iter().zip(&g.logprobs) {
            assert!((a - b).abs() < 1e-5, "row {i}: scoring {a} vs generation {b}");
        }
        assert!(s.entropies.iter().all(|h| h.is_finite() && *h >= 0.0 && *h <= (96f32).ln() + 1e-4));
    }
    // Same seed, same samples.
    assert_eq!(generate(&model, &prompts, &params, &[9], &seeds).unwrap(), batched);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = model();
    let err = generate(&model, &[vec![]], &SamplingParams::default(), &[], &[0]).unwrap_err();
    assert_eq!(err.to_string(), "prompt 0 is empty");
    let err = generate(&model, &[vec![200]], &SamplingParams::default(), &[], &[0]).unwrap_err();
    assert_eq!(err.to_string(), "token id 200 is outside the model's vocabulary of 96");
    let err = score(&model, &[(&[1][..], &[2][..])], 0.0, 4).unwrap_err();
    assert_eq!(err.to_string(), "scoring temperature must be positive, got 0");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Scoring a pair alone or beside others of other lengths gives the same log-probs.
    #[test]
    fn scoring_padding_changes_no_logprob(
        rows in prop::collection::vec((prop::collection::vec(0u32..96, 1..9), prop::collection::vec(0u32..96, 1..7)), 1..5)
    ) {
        let model = model();
        let pairs: Vec<(&[u32], &[u32])> = rows.iter().map(|(p, r)| (&p[..], &r[..])).collect();
        let together = score(&model, &pairs, 1.0, 16).unwrap();
        for (i, pair) in pairs.iter().enumerate() {
            let alone = score(&model, std::slice::from_ref(pair), 1.0, 1).unwrap();
            for (a, b) in alone[0].logprobs.iter().zip(&together[i].logprobs) {
                prop_assert!((a - b).abs() < 1e-5, "row {}: {} vs {}", i, a, b);
            }
        }
    }
}

/// A policy's batch split into shards on threads generates exactly what `generate` gives for each shard with
/// that row's own seed (the policy's stream, one seed per row in order), in order; and scores the same as in one
/// piece, within rounding. (Tokens sampled from a near-uniform untrained model may differ from the unsharded
/// batch's by rounding, since the padding differs: the split is part of a run's determinism.)
#[test]
fn a_policy_generates_and_scores_the_same_in_shards() {
    use atod_core::rng::SplitMix64;
    use atod_models::{ChatTokenizer, LmPolicy, TransformerConfig};
    use burn::tensor::backend::Backend;
    let tokenizer = ChatTokenizer::train(["go to desk 1", "<think>the mug</think><action>look</action>"], 300).unwrap();
    let config = TransformerConfig::preset("student-s", tokenizer.vocab_size()).unwrap();
    let device = Default::default();
    CpuBackend::seed(&device, 7);
    let model = config.init::<CpuBackend>(&device).unwrap();
    let sampling = SamplingParams { temperature: 1.0, max_new_tokens: 10, ..SamplingParams::default() };
    let prompts: Vec<Vec<u32>> =
        (0..7u32).map(|i| (0..3 + i).map(|t| (t * 37 + i * 11) % tokenizer.vocab_size() as u32).collect()).collect();
    // (The policy owns the model: a clone of a freshly initialised model would initialise its lazy parameters
    // separately, from the backend's random stream.)
    let mut policy = LmPolicy::new("p", model, config, tokenizer.clone(), sampling.clone(), 3).unwrap();
    policy.shards = 3;
    let got = policy.generate_ids(&prompts).unwrap();
    let mut rng = SplitMix64::new(3);
    let seeds: Vec<u64> = prompts.iter().map(|_| rng.next_u64()).collect();
    let stop = [tokenizer.eot_id()];
    let expected: Vec<_> = prompts
        .chunks(3)
        .zip(seeds.chunks(3))
        .flat_map(|(rows, seeds)| generate(&policy.model, rows, &sampling, &stop, seeds).unwrap())
        .collect();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.token_ids, e.ids, "row {i}");
        assert_eq!(g.logprobs, e.logprobs, "row {i}");
    }
    let pairs: Vec<(&[u32], &[u32])> = prompts.iter().zip(&got).map(|(p, g)| (&p[..], &g.token_ids[..])).collect();
    let whole = policy.score(&pairs).unwrap();
    let sharded = policy.score_sharded(&pairs, 3).unwrap();
    assert_eq!(whole.len(), sharded.len());
    for (x, y) in whole.iter().zip(&sharded) {
        assert_eq!(x.logprobs.len(), y.logprobs.len());
        assert!(x.logprobs.iter().zip(&y.logprobs).all(|(p, q)| (p - q).abs() < 1e-5));
    }
}
