//! Full-vocabulary reverse-KL distillation (GKD with beta = 1), an alternative to the sampled-token OPD.
//!
//! GKD (Agarwal et al., "On-Policy Distillation of Language Models", arXiv 2306.13649, §3, Eq 2 with the
//! generalised JSD of §3 at beta = 1, which is KL(student || teacher) in TRL's `generalized_jsd_loss`
//! convention), on the student's own samples:
//! `D_t = sum_v p_S(v) (log p_S(v) - log p_T(v))`, added as `+ coef * agg(D_t)`; metric `loss/gkd` is
//! `agg(D_t)`. The teacher is detached; the gradient flows through both the student's probabilities and its
//! log-probabilities.
//!
//! Deviations from GKD: on-policy data only (their lambda = 1), no temperature, and no token-level clipping.

use atod_core::Schedule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::batch::{Input, Mask, VocabLogProbs};
use crate::error::{Error, Result};
use crate::loss::{Ctx, LossOutput};

/// Per-token reverse KL(student || teacher) over the vocabulary, `[S, T]`, 0 at padding.
///
/// # Shapes
/// `vocab.student`, `vocab.teacher`: `[S, T, V]` log-softmax.
pub fn reverse_kl<B: Backend>(vocab: &VocabLogProbs<B>, mask: &Mask<B>) -> Tensor<B, 2> {
    let student = mask.clean3(vocab.student.clone());
    let teacher = mask.clean3(vocab.teacher.clone().detach());
    let [s, t, _] = student.dims();
    let kl = (student.clone().exp() * (student - teacher)).sum_dim(2).reshape([s, t]);
    mask.clean(kl)
}

/// The `gkd` component.
#[derive(Debug, Clone, PartialEq)]
pub struct GkdDistill {
    /// Its coefficient.
    pub coef: Schedule,
}

impl GkdDistill {
    /// `coef * agg(D)`; needs `TrainBatch::vocab`.
    pub fn compute<B: Backend>(&self, ctx: &Ctx<'_, B>, coef: f64) -> Result<LossOutput<B>> {
        let vocab =
            ctx.batch.vocab.as_ref().ok_or(Error::MissingInput { component: "gkd", input: Input::Vocab.name() })?;
        let value = ctx.aggregate(reverse_kl(vocab, ctx.mask));
        Ok(LossOutput::term("loss/gkd", value, coef))
    }
}
