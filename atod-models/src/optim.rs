//! AdamW with global gradient-norm clipping and a state that saves and loads exactly.
//!
//! AdamW is Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (arXiv 1711.05101), with PyTorch's
//! `torch.optim.AdamW` update: `p -= lr * wd * p`, then `p -= lr * m_hat / (sqrt(v_hat) + eps)`. Clipping is by
//! the global L2 norm of all gradients, as `torch.nn.utils.clip_grad_norm_` (verl's `grad_clip`) does; burn's
//! built-in clipping works per tensor, which is why this exists.
//!
//! The moments are kept per parameter in the module's visiting order (deterministic for one architecture), so
//! they save to a safetensors file by position and a resumed run continues bit for bit; burn's optimizer
//! records key the state by parameter ids, which a model loaded from a checkpoint does not keep.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// AdamW's hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// First-moment decay.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Second-moment decay.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Denominator epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_grad_clip() -> f64 {
    1.0
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: default_weight_decay(),
            grad_clip: default_grad_clip(),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The factor gradients were scaled by (1 when not clipped).
    pub clip_scale: f64,
}

/// A parameter's first and second moments, flattened.
type Moments<B> = (Tensor<B, 1>, Tensor<B, 1>);

/// AdamW and its state for one model.
#[derive(Debug)]
pub struct AdamW<B: AutodiffBackend> {
    config: AdamWConfig,
    /// Steps taken.
    step: u64,
    /// Per parameter (visiting order): first and second moments, flattened.
    moments: HashMap<usize, Moments<B::InnerBackend>>,
}

impl<B: AutodiffBackend> AdamW<B> {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, step: 0, moments: HashMap::new() }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The global L2 norm of `grads` over `module`'s parameters.
    pub fn grad_norm<M: AutodiffModule<B>>(module: &M, grads: &GradientsParams) -> f64 {
        let mut visitor = NormVisitor::<B> { grads, sum: 0.0, _b: std::marker::PhantomData };
        module.visit(&mut visitor);
        visitor.sum.sqrt()
    }

    /// Clips `grads` by their global norm and applies one AdamW update with learning rate `lr`.
    pub fn step<M: AutodiffModule<B>>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> (M, StepReport) {
        let grad_norm = Self::grad_norm(&module, &grads);
        let clip_scale = if self.config.grad_clip > 0.0 && grad_norm > self.config.grad_clip {
            self.config.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let mut mapper = AdamWMapper { opt: self, grads: &mut grads, lr, scale: clip_scale, index: 0 };
        let module = module.map(&mut mapper);
        (module, StepReport { grad_norm, clip_scale })
    }

    /// Saves the state (moments by position and the step count) to a safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (&i, (m, v)) in &self.moments {
            for (name, t) in [("m", m), ("v", v)] {
                let data = t.clone().into_data().convert::<f32>();
                let values: Vec<f32> = data.to_vec().map_err(|e| Error::checkpoint(path, format!("{e:?}")))?;
                entries.push((
                    format!("{name}.{i}"),
                    vec![values.len()],
                    values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ));
            }
        }
        let views = entries
            .iter()
            .map(|(n, s, d)| safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d).map(|v| (n.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        // One metadata entry: safetensors writes its metadata map in the order of a `HashMap`, which differs
        // from process to process, so two entries would make the same state's file differ in its bytes.
        let state = serde_json::json!({ "step": self.step, "config": self.config });
        let meta = HashMap::from([(STATE_KEY.to_owned(), state.to_string())]);
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::checkpoint(path, e.to_string()))?;
        crate::checkpoint::write_file_atomic(path, &bytes)
    }

    /// Loads a state saved by [`AdamW::save`]; the config of the file is used.
    pub fn load(path: &Path, device: &burn::tensor::Device<B::InnerBackend>) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::checkpoint(path, e.to_string()))?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        // Files written before the state became one entry keep `step` and `config` apart.
        let (step, config) = match meta.get(STATE_KEY) {
            Some(state) => {
                let state: serde_json::Value = serde_json::from_str(state)
                    .map_err(|e| Error::checkpoint(path, format!("bad optimizer state: {e}")))?;
                (state["step"].as_u64(), serde_json::from_value(state["config"].clone()).ok())
            }
            None => (
                meta.get("step").and_then(|s| s.parse().ok()),
                meta.get("config").and_then(|s| serde_json::from_str(s).ok()),
            ),
        };
        let step = step.ok_or_else(|| Error::checkpoint(path, "no step"))?;
        let config = config.ok_or_else(|| Error::checkpoint(path, "no optimizer config"))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::checkpoint(path, e.to_string()))?;
        let mut halves: HashMap<usize, [Option<Tensor<B::InnerBackend, 1>>; 2]> = HashMap::new();
        for (name, view) in st.tensors() {
            let (kind, index) =
                name.split_once('.').ok_or_else(|| Error::checkpoint(path, format!("bad name {name}")))?;
            let index: usize = index.parse().map_err(|_| Error::checkpoint(path, format!("bad name {name}")))?;
            let values: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let n = values.len();
            let t = Tensor::from_data(TensorData::new(values, [n]), device);
            let slot = halves.entry(index).or_default();
            match kind {
                "m" => slot[0] = Some(t),
                "v" => slot[1] = Some(t),
                _ => return Err(Error::checkpoint(path, format!("bad name {name}"))),
            }
        }
        let mut moments = HashMap::new();
        for (i, [m, v]) in halves {
            match (m, v) {
                (Some(m), Some(v)) => moments.insert(i, (m, v)),
                _ => return Err(Error::checkpoint(path, format!("parameter {i} lacks a moment"))),
            };
        }
        Ok(Self { config, step, moments })
    }
}

/// The metadata key of an optimizer file's step and config.
const STATE_KEY: &str = "atod_adamw";

struct NormVisitor<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for NormVisitor<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            // On the host in f64 in index order: burn-flex's SIMD sum differs in its low bits from CPU to CPU
            // (its accumulators are as wide as the CPU's vectors), and the norm decides the clipping factor
            // every weight is scaled by.
            let values = grad.into_data().convert::<f32>().to_vec::<f32>().expect("f32 gradients");
            self.sum += values.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        }
    }
}

struct AdamWMapper<'a, B: AutodiffBackend> {
    opt: &'a mut AdamW<B>,
    grads: &'a mut GradientsParams,
    lr: f64,
    scale: f64,
    index: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for AdamWMapper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let index = self.index;
        self.index += 1;
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let c = &self.opt.config;
        let shape = tensor.shape();
        let n = shape.num_elements();
        let grad = grad.reshape([n]) * self.scale;
        let value = tensor.inner().reshape([n]);
        let (m, v) = match self.opt.moments.remove(&index) {
            Some((m, v)) => {
                (m * c.beta1 + grad.clone() * (1.0 - c.beta1), v * c.beta2 + grad.square() * (1.0 - c.beta2))
            }
            None => (grad.clone() * (1.0 - c.beta1), grad.square() * (1.0 - c.beta2)),
        };
        let t = self.opt.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let decayed = value * (1.0 - self.lr * c.weight_decay);
        let update = (m.clone() / bias1) / ((v.clone() / bias2).sqrt() + c.eps);
        let value = decayed - update * self.lr;
        self.opt.moments.insert(index, (m, v));
        let value = Tensor::<B, D>::from_inner(value.reshape(shape)).require_grad();
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Adds the gradients of `other` into `into`, parameter by parameter of `module` (gradients of data-parallel
/// shards of one batch, each computed on its own replica of the module).
pub fn add_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    into: &mut GradientsParams,
    mut other: GradientsParams,
) {
    struct Adder<'a, B: AutodiffBackend> {
        into: &'a mut GradientsParams,
        other: &'a mut GradientsParams,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Adder<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(add) = self.other.remove::<B::InnerBackend, D>(param.id) else { return };
            let sum = match self.into.remove::<B::InnerBackend, D>(param.id) {
                Some(grad) => grad + add,
                None => add,
            };
            self.into.register::<B::InnerBackend, D>(param.id, sum);
        }
    }
    module.visit(&mut Adder::<B> { into, other: &mut other, _b: std::marker::PhantomData });
}

/// A replica of `module` for one data-parallel shard: the same parameters (same ids, values shared, not
/// copied) as fresh autodiff leaves that require gradients, so that its autodiff graph stays apart from those
/// of the other shards and of `module` itself.
pub fn replica<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> M {
    struct RequireGrad;
    impl<B: AutodiffBackend> ModuleMapper<B> for RequireGrad {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, _) = param.consume();
            Param::initialized(id, tensor.require_grad())
        }
    }
    M::from_inner(module.valid()).map(&mut RequireGrad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuAutodiff;
    use burn::nn::Linear;

    fn linear(w: [f32; 2]) -> Linear<CpuAutodiff> {
        let weight = Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(w.to_vec(), [2, 1]), &Default::default());
        Linear { weight: Param::from_tensor(weight), bias: None }
    }

    /// loss = w . x, so dloss/dw = x.
    fn grads(model: &Linear<CpuAutodiff>, x: [f32; 2]) -> GradientsParams {
        let input = Tensor::<CpuAutodiff, 2>::from_data(TensorData::new(x.to_vec(), [1, 2]), &Default::default());
        GradientsParams::from_grads(model.forward(input).sum().backward(), model)
    }

    fn weights(model: &Linear<CpuAutodiff>) -> Vec<f32> {
        model.weight.val().into_data().to_vec().unwrap()
    }

    #[test]
    fn first_step_matches_the_formula_and_clipping_uses_the_global_norm() {
        let config = AdamWConfig { weight_decay: 0.1, grad_clip: 1.0, ..AdamWConfig::default() };
        let mut optim = AdamW::<CpuAutodiff>::new(config);
        let model = linear([0.5, -2.0]);
        let g = grads(&model, [3.0, 4.0]);
        let (model, report) = optim.step(0.01, model, g);
        assert!((report.grad_norm - 5.0).abs() < 1e-6);
        assert!((report.clip_scale - 1.0 / (5.0 + 1e-6)).abs() < 1e-9);
        // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g) (clipping only
        // rescales g, which this ratio ignores up to eps); decay first: p * (1 - lr * wd).
        let want = [0.5 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) - 0.01];
        for (got, want) in weights(&model).iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn saved_state_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optim.safetensors");
        let mut optim = AdamW::<CpuAutodiff>::new(AdamWConfig::default());
        let model = linear([0.3, 0.7]);
        let (model, _) = optim.step(0.05, model.clone(), grads(&model, [1.0, -0.5]));
        optim.save(&path).unwrap();
        // The same state writes the same bytes (its metadata is one entry, not a map in hash order).
        let again = dir.path().join("again.safetensors");
        optim.save(&again).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
        let (straight, _) = optim.step(0.05, model.clone(), grads(&model, [0.2, 0.9]));
        let mut loaded = AdamW::<CpuAutodiff>::load(&path, &Default::default()).unwrap();
        assert_eq!(loaded.steps(), 1);
        let (resumed, _) = loaded.step(0.05, model.clone(), grads(&model, [0.2, 0.9]));
        assert_eq!(weights(&straight), weights(&resumed));
    }
}
