//! The backward pass both training loops share: one batch's gradient computed in shards side by side.
//!
//! flex keeps about one core busy on these small models, so SFT and the online update split each batch into
//! `shards` contiguous shards, each computed on its own thread and its own replica of the model (so that the
//! autodiff graphs stay apart), and sum the shards' gradients. Each shard's loss is weighted by the caller so
//! that the sum is the whole batch's gradient: the shard's share of the loss's normaliser. Results depend on the
//! shard count through float rounding only.

use atod_models::optim::{add_grads, replica};
use atod_models::parallel::map_shards;
use atod_models::Transformer;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

/// What one shard's loss function returns: the scalar to differentiate (already weighted by the shard's share
/// of the batch), and whatever the caller wants back from the shard (a loss value, metrics); `None` when the
/// shard's loss is not finite, which skips the whole batch.
pub type ShardLoss<B, R> = Option<(Tensor<B, 1>, R)>;

/// The summed gradient of `rows` and each shard's output in shard order, or `None` when a shard's loss was not
/// finite. `shard_loss(model, shard)` computes a shard's loss on the model (or replica) it is handed; one shard
/// (or fewer than two rows) runs on `model` itself on the caller's thread.
pub fn sharded_backward<B, T, R>(
    model: &Transformer<B>,
    rows: &[T],
    shards: usize,
    shard_loss: impl Fn(&Transformer<B>, &[T]) -> anyhow::Result<ShardLoss<B, R>> + Sync,
) -> anyhow::Result<Option<(GradientsParams, Vec<R>)>>
where
    B: AutodiffBackend,
    T: Sync,
    R: Send,
{
    let backward = |model: &Transformer<B>, part: &[T]| -> anyhow::Result<Option<(GradientsParams, R)>> {
        Ok(shard_loss(model, part)?.map(|(loss, out)| (GradientsParams::from_grads(loss.backward(), model), out)))
    };
    let results = if shards <= 1 || rows.len() < 2 {
        vec![backward(model, rows)?]
    } else {
        map_shards(rows, shards, |part| backward(&replica(model), part))?
    };
    let mut grads = GradientsParams::new();
    let mut outputs = Vec::with_capacity(results.len());
    for result in results {
        let Some((shard_grads, output)) = result else { return Ok(None) };
        add_grads(model, &mut grads, shard_grads);
        outputs.push(output);
    }
    Ok(Some((grads, outputs)))
}
