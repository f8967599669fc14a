//! The fused CPU path against the reference composition of burn ops: statistics within 1e-5, every parameter's
//! gradient within 1e-4 relative, generation token for token; on ragged rows, gapped target masks, a temperature
//! other than 1, grouped-query and plain heads, tied and untied heads, with and without q/k/v biases, and Qwen3's
//! per-head query/key norms with a `head_dim` other than `d / heads` (and, with `attention_bias`, an o bias).

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

use crate::backend::{CpuAutodiff, CpuBackend};
use crate::generate::{reference_generate, reference_sequence_stats, sequence_stats, ResponseStats, SamplingParams};
use crate::model::{ModelType, Transformer, TransformerConfig};
use crate::{generate, HotPathBackend};
use atod_core::rng::SplitMix64;

fn config(heads: usize, kv_heads: usize, tied: bool, family: ModelType) -> TransformerConfig {
    let mut c = TransformerConfig::qwen2(61, 32, 2, heads, kv_heads, 48);
    c.tie_word_embeddings = tied;
    c.model_type = family;
    if family == ModelType::Qwen3 {
        // Heads wider than d / heads (4 of 12 over d 32, 2 of 10), biases on q/k/v/o in one of the two.
        c.head_dim = Some(if heads == 4 { 12 } else { 10 });
        c.attention_bias = Some(!tied);
    }
    c
}

/// A model with every parameter drawn at a scale where attention is far from uniform and norms are not 1.
fn model<B: Backend>(config: &TransformerConfig, seed: u64) -> Transformer<B> {
    B::seed(&Default::default(), seed);
    let model = config.init::<B>(&Default::default()).unwrap();
    model.map(&mut Perturb)
}

struct Perturb;

impl<B: Backend> burn::module::ModuleMapper<B> for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let noise = Tensor::random(tensor.shape(), Distribution::Normal(0.0, 0.15), &tensor.device());
        // Detached, so that the parameters are leaves of the graph, as a trainer holds them.
        Param::from_mapped_value(id, (tensor + noise).detach().require_grad(), mapper)
    }
}

/// Ragged rows with gapped target masks; rows 6.. share prefixes (a group of three with a 20-token prefix, one of
/// them the prefix itself plus one token, and two identical rows), so that the shared-prefix packing is exercised.
fn rows(seed: u64, vocab: u64) -> Vec<(Vec<u32>, Vec<bool>)> {
    let mut rng = SplitMix64::new(seed);
    let mut draw = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(vocab) as u32).collect() };
    let prefix = draw(20);
    let other = draw(18);
    let mut ids: Vec<Vec<u32>> = [1usize, 2, 9, 23, 40, 5].iter().map(|&len| draw(len)).collect();
    for tail in [draw(7), draw(1), draw(13)] {
        ids.push([prefix.clone(), tail].concat());
    }
    let twin = [other, draw(6)].concat();
    ids.push(twin.clone());
    ids.push(twin);
    let mut rng = SplitMix64::new(seed + 99);
    ids.into_iter()
        .map(|ids| {
            let len = ids.len();
            // Targets with gaps: a prompt-like prefix without targets, then most tokens.
            let mask: Vec<bool> = (0..len).map(|t| t > len / 3 && rng.below(5) != 0).collect();
            (ids, mask)
        })
        .collect()
}

/// A batch long enough to be computed in row groups (`GROUP_MIN_TOKENS`), with a shared prefix inside each group
/// and one across the cut.
fn long_rows(seed: u64, vocab: u64) -> Vec<(Vec<u32>, Vec<bool>)> {
    let mut rng = SplitMix64::new(seed);
    let prefix: Vec<u32> = (0..40).map(|_| rng.below(vocab) as u32).collect();
    (0..9)
        .map(|r| {
            let own: Vec<u32> = (0..100 + 17 * r).map(|_| rng.below(vocab) as u32).collect();
            let ids = if r % 3 == 0 { own } else { [prefix.clone(), own].concat() };
            let mask = (0..ids.len()).map(|t| t > 30 && rng.below(4) != 0).collect();
            (ids, mask)
        })
        .collect()
}

fn host<B: HotPathBackend>(stats: &ResponseStats<B>) -> (Vec<f32>, Vec<f32>) {
    (
        stats.logp.clone().into_data().convert::<f32>().to_vec().unwrap(),
        stats.entropy.clone().into_data().convert::<f32>().to_vec().unwrap(),
    )
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const CASES: [(usize, usize, bool, ModelType); 6] = [
    (4, 2, true, ModelType::Qwen2),
    (4, 4, false, ModelType::Qwen2),
    (2, 1, true, ModelType::Llama),
    (4, 1, false, ModelType::Llama),
    (4, 2, true, ModelType::Qwen3),
    (2, 1, false, ModelType::Qwen3),
];

#[test]
fn fused_statistics_match_the_reference() {
    for (i, &(heads, kv, tied, family)) in CASES.iter().enumerate() {
        let config = config(heads, kv, tied, family);
        let model = model::<CpuBackend>(&config, i as u64);
        let data = [rows(i as u64, config.vocab_size as u64), long_rows(i as u64, config.vocab_size as u64)].concat();
        let rows: Vec<(&[u32], &[bool])> = data.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        for temperature in [1.0, 0.7] {
            let fused = host(&sequence_stats(&model, &rows, temperature).unwrap());
            let reference = host(&reference_sequence_stats(&model, &rows, temperature).unwrap());
            assert!(max_diff(&fused.0, &reference.0) < 1e-5, "case {i} logp: {}", max_diff(&fused.0, &reference.0));
            assert!(max_diff(&fused.1, &reference.1) < 1e-5, "case {i} entropy: {}", max_diff(&fused.1, &reference.1));
        }
    }
}

/// Every parameter's gradient, in the module's order.
fn gradients(model: &Transformer<CpuAutodiff>, loss: Tensor<CpuAutodiff, 1>) -> Vec<(String, Vec<f32>)> {
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let mut out = Vec::new();
    model.visit(&mut Collect { grads: &grads, out: &mut out });
    out
}

struct Collect<'a> {
    grads: &'a GradientsParams,
    out: &'a mut Vec<(String, Vec<f32>)>,
}

impl burn::module::ModuleVisitor<CpuAutodiff> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuAutodiff, D>>) {
        let grad = self.grads.get::<CpuBackend, D>(param.id).map(|g| g.into_data().to_vec::<f32>().unwrap());
        self.out.push((format!("{:?} {:?}", param.id, param.shape()), grad.unwrap_or_default()));
    }
}

#[test]
fn fused_gradients_match_burns_automatic_gradients() {
    for (i, &(heads, kv, tied, family)) in CASES.iter().enumerate() {
        let config = config(heads, kv, tied, family);
        let model = model::<CpuAutodiff>(&config, 10 + i as u64);
        // Even cases take a batch long enough for row groups.
        let data = if i % 2 == 0 {
            long_rows(20 + i as u64, config.vocab_size as u64)
        } else {
            rows(20 + i as u64, config.vocab_size as u64)
        };
        let rows: Vec<(&[u32], &[bool])> = data.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        let loss = |stats: ResponseStats<CpuAutodiff>| {
            // Different weights per position for log-probs and entropies, so that both backward paths count.
            let [n, span] = stats.logp.dims();
            let w: Vec<f32> = (0..n * span).map(|k| ((k * 7919) % 13) as f32 / 13.0 - 0.3).collect();
            let w = Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(w, [n, span]), &Default::default());
            (stats.logp * w.clone()).sum() + (stats.entropy * stats.mask * w.neg()).sum() * 0.5
        };
        let temperature = if i % 2 == 0 { 1.0 } else { 0.8 };
        let fused = gradients(&model, loss(sequence_stats(&model, &rows, temperature).unwrap()));
        let reference = gradients(&model, loss(reference_sequence_stats(&model, &rows, temperature).unwrap()));
        assert_eq!(fused.len(), reference.len());
        for ((name, a), (_, b)) in fused.iter().zip(&reference) {
            assert!(!b.is_empty(), "case {i}: {name} has no reference gradient");
            let scale = b.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
            let diff = max_diff(a, b) / scale;
            assert!(diff < 1e-4, "case {i}: parameter {name}: relative difference {diff} (scale {scale})");
        }
    }
}

#[test]
fn fused_generation_matches_the_reference_token_for_token() {
    for (i, &(heads, kv, tied, family)) in CASES.iter().enumerate() {
        let config = config(heads, kv, tied, family);
        let model = model::<CpuBackend>(&config, 30 + i as u64);
        let mut rng = SplitMix64::new(i as u64);
        let mut prompts: Vec<Vec<u32>> =
            [3usize, 17, 1, 8, 30].iter().map(|&n| (0..n).map(|_| rng.below(61) as u32).collect()).collect();
        // A group that shares a prefix: the same prompt twice and once with three more tokens.
        prompts.push(prompts[4].clone());
        prompts.push([prompts[4].clone(), vec![1, 2, 3]].concat());
        let seeds = [5, 6, 7, 8, 9, 10, 11];
        for params in [
            SamplingParams::greedy(12),
            SamplingParams { temperature: 0.9, max_new_tokens: 12, ..SamplingParams::default() },
        ] {
            // Token 4 stops rows where it is drawn, so rows leave the batch at different steps.
            let fused = generate(&model, &prompts, &params, &[4], &seeds).unwrap();
            let reference = reference_generate(&model, &prompts, &params, &[4], &seeds).unwrap();
            for (row, (a, b)) in fused.iter().zip(&reference).enumerate() {
                assert_eq!(a.ids, b.ids, "case {i} row {row}");
                assert_eq!(a.stopped, b.stopped);
                assert!(max_diff(&a.logprobs, &b.logprobs) < 1e-5, "case {i} row {row}");
            }
        }
    }
}

#[test]
fn a_long_batch_is_cut_into_row_groups_whose_slots_cover_every_target() {
    let data = long_rows(1, 61);
    let rows: Vec<(&[u32], &[bool])> = data.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    let plan = super::Plan::new(&rows);
    assert_eq!(plan.parts.len(), 2);
    let mut slots: Vec<usize> = plan.parts.iter().flat_map(|p| p.slots.clone()).collect();
    let targets: usize = data.iter().map(|(_, m)| m.iter().skip(1).filter(|&&t| t).count()).sum();
    assert_eq!(slots.len(), targets);
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), targets, "every target has its own slot");
    assert_eq!(plan.mask.iter().filter(|&&m| m == 1.0).count(), targets);
}

#[test]
fn rows_with_a_common_prefix_pack_it_once_and_index_every_token() {
    use super::engine::Packed;
    let prefix: Vec<u32> = (0..20).collect();
    let a = [prefix.clone(), vec![50, 51, 52]].concat();
    let b = [prefix[..18].to_vec(), vec![60]].concat();
    let lone = vec![7u32; 30];
    let short = vec![1u32, 2];
    let rows: Vec<&[u32]> = vec![&a, &lone, &b, &short, &a];
    let packed = Packed::rows(&rows);
    // The group {a, b, a} shares 18 tokens: 18 + (5 + 1 + 5) own tokens, then 30 and 2 for the others.
    assert_eq!(packed.len(), 18 + 11 + 30 + 2);
    assert!(packed.keys.is_some());
    for (r, row) in rows.iter().enumerate() {
        let back: Vec<u32> = (0..row.len()).map(|t| packed.ids[packed.index(r, t)]).collect();
        assert_eq!(&back[..], *row, "row {r}");
        let positions: Vec<u32> = (0..row.len()).map(|t| packed.positions[packed.index(r, t)]).collect();
        assert_eq!(positions, (0..row.len() as u32).collect::<Vec<_>>(), "row {r}");
    }
    let apart = Packed::rows(&[&lone, &short]);
    assert!(apart.keys.is_none(), "nothing shared, no virtual key array");
}

#[test]
fn generation_and_training_have_the_same_bits_on_any_number_of_threads() {
    // Generation splits rows into groups and shares prefixes within a group, a long batch trains in row groups:
    // none of it may depend on the machine's core count.
    let config = config(4, 2, true, ModelType::Qwen2);
    let trained = model::<CpuAutodiff>(&config, 77);
    let model = trained.valid();
    let mut rng = SplitMix64::new(5);
    let shared: Vec<u32> = (0..24).map(|_| rng.below(61) as u32).collect();
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|r| {
            let own: Vec<u32> = (0..3 + 5 * r).map(|_| rng.below(61) as u32).collect();
            if r % 2 == 0 {
                [shared.clone(), own].concat()
            } else {
                own
            }
        })
        .collect();
    let seeds: Vec<u64> = (0..6).collect();
    let params = SamplingParams { temperature: 0.8, max_new_tokens: 10, ..SamplingParams::default() };
    let data = long_rows(3, 61);
    let rows: Vec<(&[u32], &[bool])> = data.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let generated = generate(&model, &prompts, &params, &[4], &seeds).unwrap();
            let loss = sequence_stats(&trained, &rows, 1.0).unwrap().logp.sum();
            let grads = GradientsParams::from_grads(loss.backward(), &trained);
            let mut flat = Vec::new();
            let mut collect = Collect { grads: &grads, out: &mut flat };
            trained.visit(&mut collect);
            (generated, flat)
        })
    };
    let one = run(1);
    assert!(one.1.iter().all(|(_, g)| !g.is_empty()), "every parameter has a gradient");
    for threads in [2, 3] {
        assert_eq!(run(threads), one, "{threads} threads against one");
    }
}

#[test]
fn batches_without_targets_and_one_token_rows_work_forward_and_backward() {
    let config = config(4, 2, true, ModelType::Qwen2);
    let model = model::<CpuAutodiff>(&config, 3);
    let one: &[u32] = &[5];
    let two: &[u32] = &[5, 6];
    let cases: Vec<Vec<(&[u32], &[bool])>> = vec![
        vec![],
        vec![(one, &[true])],
        vec![(two, &[false, false]), (one, &[false])],
        vec![(two, &[false, true]), (one, &[true])],
    ];
    for (i, rows) in cases.iter().enumerate() {
        let fused = sequence_stats(&model, rows, 1.0).unwrap();
        let [n, span] = fused.logp.dims();
        assert_eq!((n, span), (rows.len(), 1), "case {i}");
        let targets: f32 = fused.mask.clone().sum().into_scalar();
        let expected = rows.iter().map(|(_, m)| m.iter().skip(1).filter(|&&t| t).count()).sum::<usize>();
        assert_eq!(targets as usize, expected, "case {i}");
        let grads = gradients(&model, fused.logp.clone().sum() + fused.entropy.clone().sum());
        let total: f32 = grads.iter().flat_map(|(_, g)| g.iter()).map(|g| g.abs()).sum();
        assert_eq!(total > 0.0, expected > 0, "case {i}: a gradient exactly where there are targets");
        if !rows.is_empty() {
            let (a, b) = (host(&fused), host(&reference_sequence_stats(&model, rows, 1.0).unwrap()));
            assert!(max_diff(&a.0, &b.0) < 1e-5 && max_diff(&a.1, &b.1) < 1e-5, "case {i}");
        }
    }
}
