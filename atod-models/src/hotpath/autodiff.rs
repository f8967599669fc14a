//! A hand-written backward for token stats, so that a backend whose forward is a kernel (burn's autodiff cannot
//! see inside a kernel) still trains through the hot path.
//!
//! With `p = softmax(x)` over a row, `logp = log p[target]` and `H = -Σ p log p`, the gradient of the logits is
//!
//! `dL/dx[j] = g_logp · (onehot(target)[j] - p[j]) + g_H · (-p[j] · (log p[j] + H))`,
//!
//! computed here with plain burn ops on the inner backend (one `log_softmax` and a few element-wise ops over
//! `[rows, vocab]`, then a scatter-add of `g_logp` at the targets). The two statistics leave the autodiff graph as
//! one `[rows, 2]` node (column 0 `logp`, column 1 `entropy`), split afterwards by ordinary slices whose own
//! backward routes each upstream gradient to its column. The logits are kept for the backward with burn's
//! `checkpoint` (as `float_matmul` does), so the checkpointing strategy decides whether they are stored or
//! recomputed.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorPrimitive};

use super::TokenStats;

/// Token stats on `Autodiff<B, C>` with `forward` (typically a kernel) on the inner backend and the hand-written
/// backward of this module.
///
/// # Shapes
/// - `logits`: `[rows, vocab]`; `targets`: `[rows]`, every target in `0..vocab`
/// - output `logp` and `entropy`: `[rows]`
pub fn token_stats_with_backward<B, C, Fwd>(
    logits: Tensor<Autodiff<B, C>, 2>,
    targets: Tensor<Autodiff<B, C>, 1, Int>,
    forward: Fwd,
) -> TokenStats<Autodiff<B, C>, 1>
where
    B: Backend,
    C: CheckpointStrategy,
    Fwd: FnOnce(Tensor<B, 2>, Tensor<B, 1, Int>) -> TokenStats<B, 1>,
{
    let [rows, _] = logits.dims();
    let logits = logits.into_primitive().tensor();
    let targets: IntTensor<B> = targets.into_primitive();

    let inner = forward(
        Tensor::from_primitive(TensorPrimitive::Float(logits.primitive.clone())),
        Tensor::from_primitive(targets.clone()),
    );
    let stats = Tensor::stack::<2>(vec![inner.logp, inner.entropy], 1).into_primitive().tensor();

    let stats = match TokenStatsBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let logits_id = prep.checkpoint(&logits);
            prep.finish((logits_id, targets, stats.clone()), stats)
        }
        OpsKind::UnTracked(prep) => prep.finish(stats),
    };
    let stats = Tensor::<Autodiff<B, C>, 2>::from_primitive(TensorPrimitive::Float(stats));
    TokenStats {
        logp: stats.clone().slice([0..rows, 0..1]).reshape([rows]),
        entropy: stats.slice([0..rows, 1..2]).reshape([rows]),
    }
}

/// The backward node of [`token_stats_with_backward`]; its state is the logits' checkpoint, the targets and the
/// forward's `[rows, 2]` output.
#[derive(Debug)]
struct TokenStatsBackward;

impl<B: Backend> Backward<B, 1> for TokenStatsBackward {
    type State = (NodeId, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let (logits_id, targets, stats) = ops.state;
        let logits: FloatTensor<B> = checkpointer.retrieve_node_output(logits_id);
        unary::<B, _>(ops.parents, ops.node, grads, |grad| logits_grad::<B>(logits, targets, stats, grad));
    }
}

/// The gradient of the logits from the upstream gradient `grad` `[rows, 2]` of (`logp`, `entropy`).
///
/// # Shapes
/// - `logits`: `[rows, vocab]`; `targets`: `[rows]`; `stats`, `grad`: `[rows, 2]`
/// - output: `[rows, vocab]`
fn logits_grad<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    stats: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    let stats = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(stats));
    let grad = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad));
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    let [rows, _] = logits.dims();

    let g_logp = grad.clone().slice([0..rows, 0..1]); // [rows, 1]
    let g_entropy = grad.slice([0..rows, 1..2]); // [rows, 1]
    let entropy = stats.slice([0..rows, 1..2]); // [rows, 1]
    let log_p = log_softmax(logits, 1); // [rows, vocab]
    let p = log_p.clone().exp();
    // -p · (g_logp + g_H · (log p + H)), then + g_logp at each row's target.
    let dx = p.neg() * (g_logp.clone() + g_entropy * (log_p + entropy));
    let dx = dx.scatter(1, targets.reshape([rows, 1]), g_logp, IndexingUpdateOp::Add);
    dx.into_primitive().tensor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CpuAutodiff, CpuBackend};
    use crate::hotpath::reference_token_stats;
    use burn::tensor::{Distribution, TensorData};

    /// `sum(w_logp · logp + w_entropy · entropy)` for upstream weights that differ per row, and its gradient.
    fn weighted_grad(stats: TokenStats<CpuAutodiff, 1>, logits: &Tensor<CpuAutodiff, 2>, rows: usize) -> Vec<f32> {
        let device = Default::default();
        let w_logp: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 * 0.25).collect();
        let w_entropy: Vec<f32> = (0..rows).map(|r| 1.5 - r as f32 * 0.5).collect();
        let w_logp = Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(w_logp, [rows]), &device);
        let w_entropy = Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(w_entropy, [rows]), &device);
        let loss = (stats.logp * w_logp).sum() + (stats.entropy * w_entropy).sum();
        let grads = loss.backward();
        logits.grad(&grads).expect("logits are tracked").into_data().to_vec().unwrap()
    }

    fn check(rows: usize, vocab: usize) {
        let device = Default::default();
        let data = Tensor::<CpuBackend, 2>::random([rows, vocab], Distribution::Normal(0.0, 3.0), &device).into_data();
        let targets: Vec<i32> = (0..rows).map(|r| ((r * 7919 + 3) % vocab) as i32).collect();
        let targets = TensorData::new(targets, [rows]);

        let auto_logits = Tensor::<CpuAutodiff, 2>::from_data(data.clone(), &device).require_grad();
        let auto_targets = Tensor::<CpuAutodiff, 1, Int>::from_data(targets.clone(), &device);
        let auto = reference_token_stats(auto_logits.clone(), auto_targets);
        let auto_values: Vec<f32> =
            Tensor::cat(vec![auto.logp.clone(), auto.entropy.clone()], 0).into_data().to_vec().unwrap();
        let auto_grad = weighted_grad(auto, &auto_logits, rows);

        let hand_logits = Tensor::<CpuAutodiff, 2>::from_data(data, &device).require_grad();
        let hand_targets = Tensor::<CpuAutodiff, 1, Int>::from_data(targets, &device);
        let hand = token_stats_with_backward(hand_logits.clone(), hand_targets, reference_token_stats::<CpuBackend>);
        let hand_values: Vec<f32> =
            Tensor::cat(vec![hand.logp.clone(), hand.entropy.clone()], 0).into_data().to_vec().unwrap();
        let hand_grad = weighted_grad(hand, &hand_logits, rows);

        let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(max_diff(&auto_values, &hand_values) < 1e-6, "forward values, rows {rows} vocab {vocab}");
        let diff = max_diff(&auto_grad, &hand_grad);
        assert!(diff < 1e-5, "gradients differ by {diff}, rows {rows} vocab {vocab}");
    }

    #[test]
    fn hand_written_backward_matches_automatic_gradients() {
        check(1, 1);
        check(3, 7);
        check(5, 33);
        check(8, 100);
    }
}
