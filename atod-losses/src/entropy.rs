//! The entropy bonus.
//!
//! The usual PPO entropy bonus (Schulman et al., arXiv 1707.06347, Eq 9): `- coef * agg(H_t)`, with `H_t` the
//! current student's entropy at each response position (from `atod_models::token_logprobs`), through which
//! the gradient flows. Metric `loss/entropy` is `agg(H_t)`. No deviation.

use atod_core::Schedule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::batch::Mask;
use crate::error::Result;
use crate::loss::{Ctx, LossOutput};

/// Per-token entropy with padding zeroed, `[S, T]`.
pub fn masked_entropy<B: Backend>(entropy: Tensor<B, 2>, mask: &Mask<B>) -> Tensor<B, 2> {
    mask.clean(entropy)
}

/// The `entropy` component.
#[derive(Debug, Clone, PartialEq)]
pub struct EntropyBonus {
    /// Its coefficient (the bonus is subtracted from the loss).
    pub coef: Schedule,
}

impl EntropyBonus {
    /// `- coef * agg(H)`.
    pub fn compute<B: Backend>(&self, ctx: &Ctx<'_, B>, coef: f64) -> Result<LossOutput<B>> {
        let value = ctx.aggregate(masked_entropy(ctx.batch.entropy.clone(), ctx.mask));
        Ok(LossOutput::term("loss/entropy", value, -coef))
    }
}
