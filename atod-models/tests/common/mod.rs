//! What the Hugging Face parity tests share: the committed fixtures (`fixtures/make_*_tiny.py`), their expected
//! logits, and the logits of our loader for right-padded rows.

use std::path::PathBuf;

use atod_models::{Layout, Transformer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// The fixture directory `tests/fixtures/{name}`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fixture's `logits.json`: the input rows and transformers' logits `[row][time][vocab]` for each alone.
pub struct Expected {
    pub inputs: Vec<Vec<u32>>,
    pub logits: Vec<Vec<Vec<f32>>>,
}

pub fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(fixture(name).join("logits.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let inputs = serde_json::from_value(value["inputs"].clone()).unwrap();
    let logits = serde_json::from_value(value["logits"].clone()).unwrap();
    Expected { inputs, logits }
}

/// Logits `[batch][time][vocab]` of right-padded rows (pads cut off).
pub fn logits<B: Backend>(model: &Transformer<B>, rows: &[Vec<u32>]) -> Vec<Vec<Vec<f32>>> {
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let layout = Layout::right_padded(&lengths);
    let width = layout.width();
    let ids: Vec<i32> = rows.iter().flat_map(|r| (0..width).map(|t| r.get(t).copied().unwrap_or(0) as i32)).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows.len(), width]), &model.device());
    let out = model.forward(ids, &layout);
    let vocab = out.dims()[2];
    let flat: Vec<f32> = out.into_data().convert::<f32>().to_vec().unwrap();
    rows.iter()
        .enumerate()
        .map(|(b, r)| (0..r.len()).map(|t| flat[(b * width + t) * vocab..][..vocab].to_vec()).collect())
        .collect()
}

/// The largest absolute difference between two `[batch][time][vocab]` arrays of the same shape.
pub fn max_abs_diff(a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f32>>]) -> f32 {
    let mut worst = 0f32;
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (ta, tb) in ra.iter().zip(rb) {
            assert_eq!(ta.len(), tb.len());
            for (x, y) in ta.iter().zip(tb) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    worst
}
