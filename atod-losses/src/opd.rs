//! The OPD advantage: on-policy distillation as a dense per-token reward.
//!
//! On-policy distillation (Agarwal et al., "On-Policy Distillation of Language Models: Learning from
//! Self-Generated Mistakes" (GKD), arXiv 2306.13649; Thinking Machines, "On-Policy Distillation", 2025): the
//! student samples, the teacher scores the sampled tokens, and the per-token reward is the negative reverse-KL
//! estimate on the sampled token, `A_opd_t = lp_T(a_t) - lp_old(a_t)`: the OPD term of the hybrid advantage
//! (ATOD, arXiv 2606.27814, Eq 8; DESIGN §3 the contract).
//!
//! It uses the behaviour log-prob `lp_old`, not the current one, so the advantage is a constant of the whole
//! step (stop-gradient), as in Thinking Machines' recipe; no discounting across tokens (their discount 0).
//! No deviation.

use crate::batch::is_real;

/// `A_opd_t = lp_teacher_t - lp_old_t` at real tokens, 0 at padding; all `[S * T]`.
pub fn opd_advantages(lp_old: &[f32], lp_teacher: &[f32], mask: &[f32]) -> Vec<f32> {
    lp_old
        .iter()
        .zip(lp_teacher)
        .zip(mask)
        .map(|((&old, &teacher), &m)| if is_real(m) { teacher - old } else { 0.0 })
        .collect()
}
