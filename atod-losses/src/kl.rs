//! The k3 KL penalty to a reference policy.
//!
//! The k3 estimator of KL(current || reference) on the sampled token (J. Schulman, "Approximating KL
//! Divergence", 2020, <http://joschu.net/blog/kl-approx.html>): with `x = lp_ref - lp`, `k3 = exp(x) - x - 1`,
//! unbiased and non-negative. Added as `+ coef * agg(k3)`; metric `loss/kl` is `agg(k3)`. ATOD's paper uses no
//! KL-to-reference term (coefficient 0 in every preset).
//!
//! Deviation from verl's `low_var_kl`: no clamp to [-10, 10]; a huge value is reported by the non-finite check
//! instead of silently capped.

use atod_core::Schedule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::batch::{Input, Mask};
use crate::error::{Error, Result};
use crate::loss::{Ctx, LossOutput};

/// Per-token k3 estimate of KL(current || reference), `[S, T]`, 0 at padding.
pub fn k3_kl<B: Backend>(lp: Tensor<B, 2>, lp_ref: Tensor<B, 2>, mask: &Mask<B>) -> Tensor<B, 2> {
    let x = mask.clean(lp_ref.detach()) - mask.clean(lp);
    mask.clean(x.clone().exp() - x - 1.0)
}

/// The `kl` component.
#[derive(Debug, Clone, PartialEq)]
pub struct KlPenalty {
    /// Its coefficient.
    pub coef: Schedule,
}

impl KlPenalty {
    /// `coef * agg(k3)`; needs `TrainBatch::lp_ref`.
    pub fn compute<B: Backend>(&self, ctx: &Ctx<'_, B>, coef: f64) -> Result<LossOutput<B>> {
        let lp_ref =
            ctx.batch.lp_ref.clone().ok_or(Error::MissingInput { component: "kl", input: Input::LpRef.name() })?;
        let value = ctx.aggregate(k3_kl(ctx.batch.lp.clone(), lp_ref, ctx.mask));
        Ok(LossOutput::term("loss/kl", value, coef))
    }
}
