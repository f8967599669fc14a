//! Parity with Hugging Face transformers: the committed tiny Qwen2 (made by `fixtures/make_qwen2_tiny.py`)
//! loads through our loader and reproduces transformers' logits within 1e-4, alone and in a padded batch; an
//! export loads back with identical logits.

mod common;

use std::path::PathBuf;

use atod_models::checkpoint;
use atod_models::CpuBackend;
use common::{logits, max_abs_diff, Expected};

fn fixture() -> PathBuf {
    common::fixture("qwen2-tiny")
}

fn expected() -> Expected {
    common::expected("qwen2-tiny")
}

#[test]
fn loader_reproduces_transformers_logits() {
    let (config, model) = checkpoint::load::<CpuBackend>(&fixture(), &Default::default()).unwrap();
    assert_eq!(config.vocab_size, 96);
    assert!(!config.tie_word_embeddings);
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
fn export_then_load_gives_identical_logits() {
    let (config, model) = checkpoint::load::<CpuBackend>(&fixture(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    checkpoint::save(&model, &config, &out, &[("tokenizer.json", b"{}")]).unwrap();
    // A second save over the first replaces it whole.
    checkpoint::save(&model, &config, &out, &[]).unwrap();
    assert!(!out.join("tokenizer.json").exists());
    let (config2, model2) = checkpoint::load::<CpuBackend>(&out, &Default::default()).unwrap();
    assert_eq!(config, config2);
    let rows = expected().inputs;
    assert_eq!(max_abs_diff(&logits(&model, &rows), &logits(&model2, &rows)), 0.0);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("export")]);
}

#[test]
fn checkpoint_errors_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let err = checkpoint::load::<CpuBackend>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::copy(fixture().join("config.json"), dir.path().join("config.json")).unwrap();
    let err = checkpoint::load::<CpuBackend>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(err.ends_with("no model*.safetensors file"), "{err}");
    // A config with a different width than the weights.
    let text = std::fs::read_to_string(fixture().join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    std::fs::copy(fixture().join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let err = checkpoint::load::<CpuBackend>(dir.path(), &Default::default()).unwrap_err().to_string();
    assert!(
        err.contains(
            "tensor `model.layers.0.mlp.gate_proj.weight` has shape [64, 32], but the config implies [48, 32]"
        ),
        "{err}"
    );
}
