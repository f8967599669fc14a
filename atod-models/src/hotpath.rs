//! The hot path: per-token log-probability and entropy over the vocabulary.
//!
//! Scoring, generation and every training step need, for each response token, `log_softmax(logits)`, the
//! log-prob of the chosen token and the entropy of the distribution. It is written once, here: the public
//! [`token_logprobs`] is the only entry point the code base calls, and [`HotPathBackend`] is the backend
//! extension whose provided method is the reference composition of burn ops (used by flex and by `CpuAutodiff`,
//! so burn differentiates it). Under the `cuda` feature the CUDA backend overrides it with a CubeCL kernel
//! (`hotpath/cuda.rs`: one plane per row, reached from burn's fused backend through a custom fusion operation), and
//! `Autodiff<CudaBackend>` pairs that kernel with the hand-written backward of [`autodiff`]. Every other autodiff
//! backend keeps the reference composition and burn's automatic gradients.

pub mod autodiff;
#[cfg(feature = "cuda")]
mod cuda;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::generate::{Generation, ResponseStats, SamplingParams};
use crate::model::Transformer;

/// Per-token statistics of a batch of rows: `logp[r]` is the log-prob of `targets[r]` and `entropy[r]` the entropy
/// of row r's distribution, both in nats.
#[derive(Debug, Clone)]
pub struct TokenStats<B: Backend, const D: usize> {
    /// Log-probability of the chosen token.
    pub logp: Tensor<B, D>,
    /// Entropy of the whole distribution.
    pub entropy: Tensor<B, D>,
}

/// A backend that can compute [`TokenStats`] over rows of logits.
///
/// The provided method is the reference: `log_softmax`, a gather of the chosen token, and `-sum(p * log p)`.
pub trait HotPathBackend: Backend {
    /// `logits` is `[rows, vocab]`, `targets` is `[rows]` (every target must lie in `0..vocab`).
    fn token_stats(logits: Tensor<Self, 2>, targets: Tensor<Self, 1, Int>) -> TokenStats<Self, 1> {
        reference_token_stats(logits, targets)
    }

    /// The whole model's [`sequence_stats`](crate::sequence_stats) as one fused operation, where the backend has
    /// one (`None`: the reference composition of burn ops). Inputs are already checked.
    fn fused_sequence_stats(
        _model: &Transformer<Self>,
        _rows: &[(&[u32], &[bool])],
        _temperature: f32,
    ) -> Option<ResponseStats<Self>> {
        None
    }

    /// [`generate`](crate::generate) as one fused loop, where the backend has one (`None`: the reference
    /// composition). Inputs are already checked.
    fn fused_generate(
        _model: &Transformer<Self>,
        _prompts: &[Vec<u32>],
        _params: &SamplingParams,
        _stop: &[u32],
        _seeds: &[u64],
    ) -> Option<Vec<Generation>> {
        None
    }
}

/// The reference composition of burn ops; also the CPU path.
pub fn reference_token_stats<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> TokenStats<B, 1> {
    let [rows, _] = logits.dims();
    let logsm = log_softmax(logits, 1);
    let logp = logsm.clone().gather(1, targets.reshape([rows, 1])).reshape([rows]);
    let entropy = (logsm.clone().exp() * logsm).sum_dim(1).neg().reshape([rows]);
    TokenStats { logp, entropy }
}

/// flex: the reference token stats; the model's forward and generation through the fused CPU path
/// ([`crate::cpu`]).
impl HotPathBackend for burn::backend::Flex {
    fn fused_sequence_stats(
        model: &Transformer<Self>,
        rows: &[(&[u32], &[bool])],
        temperature: f32,
    ) -> Option<ResponseStats<Self>> {
        Some(crate::cpu::sequence_stats_flex(model, rows, temperature))
    }

    fn fused_generate(
        model: &Transformer<Self>,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        stop: &[u32],
        seeds: &[u64],
    ) -> Option<Vec<Generation>> {
        Some(crate::cpu::generate_flex(model, prompts, params, stop, seeds))
    }
}

/// The CPU training backend: the fused CPU model as one node of burn's graph, with its hand-written backward
/// ([`crate::cpu`]); the token stats elsewhere are the reference composition, differentiated by burn. Autodiff
/// backends are listed one by one rather than by a blanket impl over `Autodiff<B>`, because the CUDA one has its
/// own body.
impl<C: CheckpointStrategy> HotPathBackend for burn::backend::Autodiff<crate::backend::CpuBackend, C> {
    fn fused_sequence_stats(
        model: &Transformer<Self>,
        rows: &[(&[u32], &[bool])],
        temperature: f32,
    ) -> Option<ResponseStats<Self>> {
        Some(crate::cpu::sequence_stats_autodiff(model, rows, temperature))
    }
}

/// The CUDA backend: the CubeCL kernel of `hotpath/cuda.rs`, through a custom operation of burn's fusion stream.
#[cfg(feature = "cuda")]
impl HotPathBackend for crate::backend::CudaBackend {
    fn token_stats(logits: Tensor<Self, 2>, targets: Tensor<Self, 1, Int>) -> TokenStats<Self, 1> {
        use burn::tensor::TensorPrimitive;
        use cuda::TokenStatsKernel;
        let (logp, entropy) = Self::kernel_token_stats(logits.into_primitive().tensor(), targets.into_primitive());
        TokenStats {
            logp: Tensor::from_primitive(TensorPrimitive::Float(logp)),
            entropy: Tensor::from_primitive(TensorPrimitive::Float(entropy)),
        }
    }
}

/// The CUDA training backend: the kernel forward and the hand-written backward of [`autodiff`].
#[cfg(feature = "cuda")]
impl<C: CheckpointStrategy> HotPathBackend for burn::backend::Autodiff<crate::backend::CudaBackend, C> {
    fn token_stats(logits: Tensor<Self, 2>, targets: Tensor<Self, 1, Int>) -> TokenStats<Self, 1> {
        autodiff::token_stats_with_backward(logits, targets, crate::backend::CudaBackend::token_stats)
    }
}

/// Log-prob of each target and entropy of each position for `logits` `[batch, time, vocab]` and `targets`
/// `[batch, time]`: the one function scoring and training call.
pub fn token_logprobs<B: HotPathBackend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> TokenStats<B, 2> {
    let [batch, time, vocab] = logits.dims();
    let stats = B::token_stats(logits.reshape([batch * time, vocab]), targets.reshape([batch * time]));
    TokenStats { logp: stats.logp.reshape([batch, time]), entropy: stats.entropy.reshape([batch, time]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use burn::tensor::TensorData;

    #[test]
    fn reference_matches_hand_computed_values() {
        // Row [0, ln 2, ln 3]: p = [1/6, 2/6, 3/6]; logp(target 2) = ln(1/2); H = -sum p ln p.
        let device = Default::default();
        let logits = Tensor::<CpuBackend, 2>::from_data(TensorData::from([[0.0f32, 2f32.ln(), 3f32.ln()]]), &device);
        let targets = Tensor::<CpuBackend, 1, Int>::from_data(TensorData::from([2i32]), &device);
        let stats = CpuBackend::token_stats(logits, targets);
        let logp: Vec<f32> = stats.logp.into_data().to_vec().unwrap();
        let entropy: Vec<f32> = stats.entropy.into_data().to_vec().unwrap();
        let p = [1.0f64 / 6.0, 2.0 / 6.0, 3.0 / 6.0];
        let h: f64 = -p.iter().map(|p| p * p.ln()).sum::<f64>();
        assert!((logp[0] as f64 - 0.5f64.ln()).abs() < 1e-6);
        assert!((entropy[0] as f64 - h).abs() < 1e-6);
    }
}
