//! Parity with Hugging Face transformers for Qwen3: the committed tiny Qwen3 (made by
//! `fixtures/make_qwen3_tiny.py`: per-head q/k norms, head_dim 16 over d 32 and 4 heads, biases on q/k/v/o, tied
//! embeddings, rotary base 1e6) loads through our loader and reproduces transformers' logits within 1e-4, alone
//! and in a right-padded batch; an export loads back with identical logits and says what transformers needs
//! (`model_type` qwen3, `head_dim` 16, no `lm_head.weight`); KV-cached decoding of a left-padded batch gives,
//! step by step, the logits of the uncached forward, and greedy generation (fused and reference) the tokens of
//! uncached greedy decoding; the scoring statistics of the fused CPU path (flex and `Autodiff<flex>`) are the
//! log-softmax of the forward's logits.

mod common;

use std::path::PathBuf;

use atod_models::generate::{reference_generate, reference_sequence_stats};
use atod_models::{checkpoint, generate, sequence_stats, CpuAutodiff, CpuBackend, KvCache, SamplingParams};
use atod_models::{HotPathBackend, ModelType, ResponseStats, Transformer};
use burn::tensor::{Int, Tensor, TensorData};
use checkpoint::{ExportDtype, ExportOptions};
use common::{logits, max_abs_diff, Expected};

const VOCAB: usize = 320;

fn fixture() -> PathBuf {
    common::fixture("qwen3-tiny")
}

fn expected() -> Expected {
    common::expected("qwen3-tiny")
}

fn model() -> Transformer<CpuBackend> {
    checkpoint::load::<CpuBackend>(&fixture(), &Default::default()).unwrap().1
}

#[test]
fn loader_reproduces_transformers_logits() {
    let (config, model) = checkpoint::load::<CpuBackend>(&fixture(), &Default::default()).unwrap();
    assert_eq!(config.model_type, ModelType::Qwen3);
    assert_eq!((config.vocab_size, config.head_dim(), config.rope_theta), (VOCAB, 16, 1e6));
    assert!(config.tie_word_embeddings && config.qkv_bias() && config.o_bias() && config.qk_norm());
    assert_eq!(burn::module::Module::num_params(&model), config.num_params());
    let want = expected();
    for (row, expected) in want.inputs.iter().zip(&want.logits) {
        let got = logits(&model, std::slice::from_ref(row));
        let diff = max_abs_diff(&got, std::slice::from_ref(expected));
        assert!(diff < 1e-4, "single row of {} tokens: max |diff| = {diff}", row.len());
    }
    // Both rows at once, the shorter one right-padded: padding changes nothing.
    let got = logits(&model, &want.inputs);
    let diff = max_abs_diff(&got, &want.logits);
    assert!(diff < 1e-4, "padded batch: max |diff| = {diff}");
}

#[test]
fn export_then_load_gives_identical_logits_and_a_config_transformers_reads() {
    let (config, model) = checkpoint::load::<CpuBackend>(&fixture(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    checkpoint::save(&model, &config, &out, &[]).unwrap();
    let (config2, model2) = checkpoint::load::<CpuBackend>(&out, &Default::default()).unwrap();
    assert_eq!(config, config2);
    let rows = expected().inputs;
    assert_eq!(max_abs_diff(&logits(&model, &rows), &logits(&model2, &rows)), 0.0);

    let text = std::fs::read_to_string(out.join(checkpoint::CONFIG_FILE)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["model_type"], "qwen3");
    assert_eq!(json["architectures"][0], "Qwen3ForCausalLM");
    assert_eq!(json["head_dim"], 16);
    assert_eq!(json["attention_bias"], true);
    assert_eq!(json["tie_word_embeddings"], true);
    // The tied head is the embedding: no `lm_head.weight` in the file, the head norms under their HF names.
    let bytes = std::fs::read(out.join(checkpoint::MODEL_FILE)).unwrap();
    let names: Vec<String> =
        safetensors::SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(str::to_owned).collect();
    assert!(!names.iter().any(|n| n.starts_with("lm_head")), "{names:?}");
    for layer in 0..2 {
        for norm in ["q_norm", "k_norm"] {
            assert!(names.contains(&format!("model.layers.{layer}.self_attn.{norm}.weight")), "{names:?}");
        }
    }
    assert_eq!(names.len(), 1 + 2 * 15 + 1, "embedding, 15 tensors a layer, final norm");
}

/// Half-precision and sharded exports: every weight comes back as its f16/bf16 rounding (nearest even), and a
/// checkpoint split into shards with an index loads to the very same model as the single file.
#[test]
fn exports_in_f16_bf16_and_shards_load_back() {
    let (config, model) = checkpoint::load::<CpuBackend>(&fixture(), &Default::default()).unwrap();
    let original = checkpoint::named_tensors(&model);
    let dir = tempfile::tempdir().unwrap();
    type Case = (ExportDtype, fn(f32) -> f32, &'static str);
    let round: [Case; 3] = [
        (ExportDtype::F32, |x| x, "float32"),
        (ExportDtype::F16, |x| half::f16::from_f32(x).to_f32(), "float16"),
        (ExportDtype::BF16, |x| half::bf16::from_f32(x).to_f32(), "bfloat16"),
    ];
    for (dtype, rounded, torch_name) in round {
        for shard in [None, Some(20_000)] {
            let out = dir.path().join(format!("{dtype:?}-{shard:?}"));
            let options = ExportOptions { dtype, max_shard_bytes: shard };
            checkpoint::save_with(&model, &config, &out, &[], options).unwrap();
            let (config2, model2) = checkpoint::load::<CpuBackend>(&out, &Default::default()).unwrap();
            assert_eq!(config, config2);
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join(checkpoint::CONFIG_FILE)).unwrap()).unwrap();
            assert_eq!(json["torch_dtype"], torch_name);
            for (name, (shape, values)) in checkpoint::named_tensors(&model2) {
                let (shape0, values0) = &original[&name];
                assert_eq!(&shape, shape0, "{name}");
                let expected: Vec<f32> = values0.iter().map(|&x| rounded(x)).collect();
                assert_eq!(values, expected, "{name} in {dtype:?}");
            }
            let shards = std::fs::read_dir(&out)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".safetensors"))
                .count();
            let index = out.join(checkpoint::INDEX_FILE);
            match shard {
                None => assert!(shards == 1 && !index.exists() && out.join(checkpoint::MODEL_FILE).exists()),
                Some(limit) => {
                    assert!(shards > 1, "{dtype:?}: {shards} shard(s)");
                    let index: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(index).unwrap()).unwrap();
                    assert_eq!(index["weight_map"].as_object().unwrap().len(), original.len());
                    for entry in std::fs::read_dir(&out).unwrap().flatten() {
                        let size = entry.metadata().unwrap().len();
                        let name = entry.file_name().to_string_lossy().into_owned();
                        // A shard may pass the limit only by the header, or when it holds a single tensor.
                        if name.ends_with(".safetensors") && size > limit {
                            let bytes = std::fs::read(entry.path()).unwrap();
                            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
                            let data: usize = st.tensors().iter().map(|(_, v)| v.data().len()).sum();
                            assert!(data as u64 <= limit || st.len() == 1, "{name}: {data} bytes of data");
                        }
                    }
                }
            }
        }
    }
    // A shard the index lists but the directory lacks is named.
    let out = dir.path().join("BF16-Some(20000)");
    let first =
        std::fs::read_dir(&out).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("model-00001"));
    std::fs::remove_file(first.unwrap().path()).unwrap();
    let err = checkpoint::load::<CpuBackend>(&out, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("model-00001-of-") && err.contains("missing"), "{err}");
}

/// The uncached forward's logits of the last token of `seq`.
fn last_logits(model: &Transformer<CpuBackend>, seq: &[u32]) -> Vec<f32> {
    logits(model, &[seq.to_vec()]).remove(0).pop().unwrap()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn cached_decoding_of_a_left_padded_batch_equals_the_uncached_forward() {
    let model = model();
    let prompts: Vec<Vec<u32>> = vec![vec![1, 17, 42, 5, 88, 3], vec![95, 0, 44]];
    let steps = 8;
    // Greedy decoding by re-running the whole sequence each step.
    let uncached: Vec<Vec<u32>> = prompts
        .iter()
        .map(|prompt| {
            let mut seq = prompt.clone();
            for _ in 0..steps {
                seq.push(argmax(&last_logits(&model, &seq)));
            }
            seq[prompt.len()..].to_vec()
        })
        .collect();
    // The crate's generation (the fused CPU decoder on flex) and the reference composition both agree with it.
    let params = SamplingParams::greedy(steps);
    for (path, generated) in [
        ("fused", generate(&model, &prompts, &params, &[], &[0, 0]).unwrap()),
        ("reference", reference_generate(&model, &prompts, &params, &[], &[0, 0]).unwrap()),
    ] {
        for (row, g) in generated.iter().enumerate() {
            assert_eq!(g.ids, uncached[row], "{path} generation, row {row}");
        }
    }

    // forward_cached step by step: a left-padded prefill of both prompts, then one generated token per row.
    let width = prompts.iter().map(Vec::len).max().unwrap();
    let padded: Vec<i32> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(0, width - p.len()).chain(p.iter().map(|&t| t as i32)))
        .collect();
    let ids = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(padded, [2, width]), &Default::default());
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut cache = KvCache::new(model.num_layers());
    let mut cached = model.forward_cached(ids, &lengths, &mut cache);
    for step in 0..=steps {
        let rows: Vec<f32> = cached.into_data().to_vec().unwrap();
        for (row, prompt) in prompts.iter().enumerate() {
            let seq = [&prompt[..], &uncached[row][..step]].concat();
            let got = &rows[row * VOCAB..(row + 1) * VOCAB];
            let diff = max_diff(got, &last_logits(&model, &seq));
            assert!(diff < 1e-4, "step {step}, row {row}: cached against uncached logits, max |diff| = {diff}");
        }
        if step == steps {
            break;
        }
        let next: Vec<i32> = uncached.iter().map(|g| g[step] as i32).collect();
        let ids = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(next, [2, 1]), &Default::default());
        cached = model.forward_cached(ids, &[1, 1], &mut cache);
    }
    assert_eq!(cache.len(), width + steps);
}

/// Log-prob of each target and the entropy at it, from the uncached forward's logits at `temperature`.
fn from_logits(
    model: &Transformer<CpuBackend>,
    rows: &[(Vec<u32>, Vec<bool>)],
    temperature: f32,
) -> Vec<Vec<(f32, f32)>> {
    rows.iter()
        .map(|(ids, mask)| {
            let all = logits(model, std::slice::from_ref(ids)).remove(0);
            (1..ids.len())
                .filter(|&t| mask[t])
                .map(|t| {
                    let z: Vec<f64> = all[t - 1].iter().map(|&x| f64::from(x / temperature)).collect();
                    let max = z.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                    let entropy = -z.iter().map(|x| (x - lse).exp() * (x - lse)).sum::<f64>();
                    ((z[ids[t] as usize] - lse) as f32, entropy as f32)
                })
                .collect()
        })
        .collect()
}

/// Each row's `(logp, entropy)` at its targets.
fn per_target<B: HotPathBackend>(stats: &ResponseStats<B>) -> Vec<Vec<(f32, f32)>> {
    let [rows, span] = stats.logp.dims();
    let get = |t: &Tensor<B, 2>| -> Vec<f32> { t.clone().into_data().convert::<f32>().to_vec().unwrap() };
    let (logp, entropy, mask) = (get(&stats.logp), get(&stats.entropy), get(&stats.mask));
    (0..rows)
        .map(|r| {
            (0..span)
                .filter(|&j| mask[r * span + j] > 0.5)
                .map(|j| (logp[r * span + j], entropy[r * span + j]))
                .collect()
        })
        .collect()
}

fn assert_close(got: &[Vec<(f32, f32)>], want: &[Vec<(f32, f32)>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (row, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}, row {row}: number of targets");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a.0 - b.0).abs() < 1e-4 && (a.1 - b.1).abs() < 1e-4,
                "{what}, row {row} target {j}: (logp, entropy) {a:?} against {b:?}"
            );
        }
    }
}

#[test]
fn fused_and_reference_scoring_agree_with_the_forwards_logits() {
    let model = model();
    let autodiff = checkpoint::load::<CpuAutodiff>(&fixture(), &Default::default()).unwrap().1;
    // Two rows sharing a 20-token prefix (the fused path packs it once), one short row; targets with gaps.
    let prefix: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % VOCAB as u32).collect();
    let data: Vec<(Vec<u32>, Vec<bool>)> = [
        [prefix.clone(), vec![3, 9, 27, 81, 50]].concat(),
        [prefix, vec![60, 61]].concat(),
        vec![95, 0, 44, 44, 7, 63, 21],
    ]
    .into_iter()
    .map(|ids| {
        let mask = (0..ids.len()).map(|t| t >= 3 && t % 4 != 1).collect();
        (ids, mask)
    })
    .collect();
    let rows: Vec<(&[u32], &[bool])> = data.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    for temperature in [1.0, 0.7] {
        let want = from_logits(&model, &data, temperature);
        assert_close(&per_target(&sequence_stats(&model, &rows, temperature).unwrap()), &want, "flex");
        assert_close(&per_target(&reference_sequence_stats(&model, &rows, temperature).unwrap()), &want, "reference");
        assert_close(&per_target(&sequence_stats(&autodiff, &rows, temperature).unwrap()), &want, "autodiff");
    }
}
