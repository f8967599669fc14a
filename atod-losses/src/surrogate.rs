//! The clipped surrogate of PPO with asymmetric clipping ("clip-higher").
//!
//! PPO (Schulman et al., arXiv 1707.06347, Eq 7) with DAPO's decoupled clip range (Yu et al., arXiv 2503.14476,
//! Eq 10, "clip-higher"), per response token, with `A_t` the hybrid advantage of ATOD (arXiv 2606.27814) Eq 8,
//! as DESIGN §3 fixes it:
//!
//! ```text
//! ratio_t = exp(lp - lp_old)
//! L_t     = -min(ratio_t * A_t, clip(ratio_t, 1 - eps_lo, 1 + eps_hi) * A_t)
//! ```
//!
//! `eps_lo = eps_hi = 0.2` by default. Reduced by an [`crate::Aggregation`]. Metrics, over real tokens:
//! `actor/clipfrac`, the fraction where the clipped term is the larger loss (verl's `pg_clipfrac`), and
//! `actor/approx_kl`, `mean(lp_old - lp)` (verl's `ppo_kl`, the k1 estimate of KL(old || current)).
//! No deviation; no dual clip.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::batch::Mask;

/// Clip range of the ratio: `[1 - low, 1 + high]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    /// eps_lo.
    pub low: f64,
    /// eps_hi.
    pub high: f64,
}

impl Default for Clip {
    fn default() -> Self {
        Clip { low: 0.2, high: 0.2 }
    }
}

/// The per-token surrogate loss and its metrics.
#[derive(Debug, Clone)]
pub struct Surrogate<B: Backend> {
    /// `L_t`, `[S, T]`, 0 at padding.
    pub per_token: Tensor<B, 2>,
    /// Fraction of real tokens where clipping is active.
    pub clipfrac: f64,
    /// `mean(lp_old - lp)` over real tokens.
    pub approx_kl: f64,
}

/// The clipped surrogate of `lp` (with gradient) against `lp_old` for advantages `adv` (all `[S, T]`; `lp_old`
/// and `adv` are detached here).
pub fn clipped_surrogate<B: Backend>(
    lp: Tensor<B, 2>,
    lp_old: Tensor<B, 2>,
    adv: Tensor<B, 2>,
    clip: Clip,
    mask: &Mask<B>,
) -> Surrogate<B> {
    let lp = mask.clean(lp);
    let lp_old = mask.clean(lp_old.detach());
    let adv = mask.clean(adv.detach());
    let log_ratio = lp - lp_old;
    let ratio = log_ratio.clone().exp();
    let unclipped = -(ratio.clone() * adv.clone());
    let clipped = -(ratio.clamp(1.0 - clip.low, 1.0 + clip.high) * adv);
    let n = mask.n_tokens().max(1) as f64;
    let clip_active = clipped.clone().greater(unclipped.clone()).float() * mask.real.clone();
    let clipfrac = crate::exact::host_sum(clip_active.detach()) / n;
    let approx_kl = -crate::exact::host_sum(mask.clean(log_ratio.detach())) / n;
    let per_token = mask.clean(unclipped.max_pair(clipped));
    Surrogate { per_token, clipfrac, approx_kl }
}

/// The `pg` component: the aggregated clipped surrogate of the precomputed advantages; always on.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PolicyGradient {
    /// The clip range.
    pub clip: Clip,
}

impl PolicyGradient {
    /// `agg(L)` with metrics `loss/pg`, `actor/clipfrac`, `actor/approx_kl`.
    pub fn compute<B: Backend>(&self, ctx: &crate::loss::Ctx<'_, B>) -> crate::Result<crate::LossOutput<B>> {
        let s = clipped_surrogate(
            ctx.batch.lp.clone(),
            ctx.batch.lp_old.clone(),
            ctx.advantages.clone(),
            self.clip,
            ctx.mask,
        );
        let mut out = crate::LossOutput::term("loss/pg", ctx.aggregate(s.per_token), 1.0);
        out.metrics.insert("actor/clipfrac".to_owned(), s.clipfrac);
        out.metrics.insert("actor/approx_kl".to_owned(), s.approx_kl);
        Ok(out)
    }
}
