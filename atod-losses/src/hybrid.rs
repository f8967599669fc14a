//! The ATOD hybrid advantage: annealed, turn-weighted OPD plus GRPO.
//!
//! ATOD (Annealed Turn-aware On-policy Distillation, arXiv 2606.27814), with DESIGN §3 as the contract:
//!
//! ```text
//! A_t = kappa(s) * w_k(t) * A_opd_t + rho(s) * A_grpo_i        both parts detached     ATOD Eq 8
//! ```
//!
//! with `kappa(s)` and `rho(s)` annealed over the training step s (ATOD Eqs 10 to 12), `w_k` the T-DUR weight
//! of token t's turn (ATOD Eqs 13 to 16, [`crate::tdur`]), `A_opd` the per-token OPD advantage
//! ([`crate::opd`]) and `A_grpo_i` the GRPO advantage of the trajectory ([`crate::grpo`]). OPD alone is
//! `kappa = 1, rho = 0`; GRPO alone is `kappa = 0, rho = 1`.
//!
//! Deviation in form, not in the defaults: `kappa` and `rho` are any schedule expressions of the step (DESIGN
//! §4) rather than the paper's fixed annealing; the `atod` preset writes the paper's as
//! `kappa = linear(1.0, 0.1, 80)`, `rho = linear(1.0, 2.0, 80)`.
//!
//! Computed once per training step on the host over the whole step's batch (groups and trajectories span it),
//! then sliced per mini-batch with [`Advantages::rows`].

use std::collections::BTreeMap;

use atod_core::Schedule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::batch::{host_tensor, is_real, StepBatch};
use crate::error::{Error, Result};
use crate::grpo::grpo_advantages;
use crate::opd::opd_advantages;
use crate::tdur::{turn_weights, TurnWeights, Weighting};

/// Where in training a computation happens: the schedules' `step` and `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepInfo {
    /// The current training step (0-based).
    pub step: u64,
    /// The number of steps of the run.
    pub total: u64,
}

impl StepInfo {
    /// Step `step` of `total`.
    pub fn new(step: u64, total: u64) -> Self {
        StepInfo { step, total }
    }
}

/// The advantage half of a [`crate::LossConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct HybridAdvantage {
    /// Coefficient of the (weighted) OPD term.
    pub kappa: Schedule,
    /// Coefficient of the GRPO term.
    pub rho: Schedule,
    /// How the OPD term is weighted.
    pub weighting: Weighting,
    /// Mean-preserving rescale of the weights per trajectory.
    pub rescale: bool,
    /// GRPO divides by the group's std (false: Dr.GRPO).
    pub norm_by_std: bool,
}

impl HybridAdvantage {
    /// ATOD Eqs 10 to 12: the annealed coefficients `(kappa(s), rho(s))` at step s.
    pub fn coefficients(&self, step: StepInfo) -> (f64, f64) {
        (self.kappa.eval(step.step, step.total), self.rho.eval(step.step, step.total))
    }
}

/// ATOD Eq 8 at one token: `A_t = kappa(s) w_k(t) A_opd_t + rho(s) A_grpo_i`.
pub fn hybrid(kappa: f64, rho: f64, w: f64, a_opd: f64, a_grpo: f64) -> f64 {
    kappa * w * a_opd + rho * a_grpo
}

/// Means over the real tokens of a step: `adv/opd_mean`, `adv/grpo_mean`, `adv/mean`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Means {
    opd: f64,
    grpo: f64,
    hybrid: f64,
}

/// ATOD Eq 8 at every real token of the step (`[S * T]`, 0 at padding) from the weights and the OPD advantages
/// (`[S * T]`) and the GRPO advantage of each trajectory, with the means over real tokens.
fn hybrid_per_token(
    batch: &StepBatch,
    (kappa, rho): (f64, f64),
    weights: &[f32],
    opd: &[f32],
    grpo: &[f32],
) -> (Vec<f32>, Means) {
    let t = batch.n_cols;
    let mut per_token = vec![0.0f32; batch.n_rows * t];
    let (mut sum_opd, mut sum_grpo, mut sum_adv, mut n) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for row in 0..batch.n_rows {
        let a_grpo = f64::from(grpo[batch.traj_id[row]]);
        for k in (row * t..(row + 1) * t).filter(|&k| is_real(batch.mask[k])) {
            let a_opd = f64::from(opd[k]);
            let a = hybrid(kappa, rho, f64::from(weights[k]), a_opd, a_grpo);
            per_token[k] = a as f32;
            sum_opd += a_opd;
            sum_grpo += a_grpo;
            sum_adv += a;
            n += 1;
        }
    }
    let mean = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
    (per_token, Means { opd: mean(sum_opd), grpo: mean(sum_grpo), hybrid: mean(sum_adv) })
}

/// The advantages of a whole step, all stop-gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// Rows S of the step.
    pub n_rows: usize,
    /// Padded length T of the step.
    pub n_cols: usize,
    /// The hybrid advantage `A_t`, `[S * T]`, 0 at padding.
    pub per_token: Vec<f32>,
    /// The OPD advantage `A_opd_t`, `[S * T]`, 0 at padding.
    pub opd: Vec<f32>,
    /// The GRPO advantage of each trajectory.
    pub grpo: Vec<f32>,
    /// The weights.
    pub weights: TurnWeights,
    /// Per row: one past its last real token's column (a mini-batch may be padded to no less).
    pub row_extent: Vec<usize>,
    /// `kappa(s)` and `rho(s)` as evaluated.
    pub kappa: f64,
    /// See `kappa`.
    pub rho: f64,
    /// `adv/opd_mean`, `adv/grpo_mean`, `adv/mean` (means over real tokens), `tdur/mean_w`,
    /// `tdur/frac_guarded`, `sched/kappa`, `sched/rho`.
    pub metrics: BTreeMap<String, f64>,
}

impl Advantages {
    /// Computes the advantages of the step's whole batch.
    ///
    /// # Errors
    ///
    /// Whatever [`StepBatch::layout`] finds wrong with the batch.
    pub fn compute(config: &HybridAdvantage, batch: &StepBatch, step: StepInfo) -> Result<Advantages> {
        let layout = batch.layout()?;
        let (kappa, rho) = config.coefficients(step);
        let grpo = grpo_advantages(&batch.returns, &layout.group_of_traj, config.norm_by_std);
        let opd = opd_advantages(&batch.lp_old, &batch.lp_teacher, &batch.mask);
        let weights = turn_weights(batch, &layout, config.weighting, config.rescale);
        let (per_token, means) = hybrid_per_token(batch, (kappa, rho), &weights.per_token, &opd, &grpo);
        let metrics = BTreeMap::from([
            ("adv/opd_mean".to_owned(), means.opd),
            ("adv/grpo_mean".to_owned(), means.grpo),
            ("adv/mean".to_owned(), means.hybrid),
            ("tdur/mean_w".to_owned(), weights.mean_w),
            ("tdur/frac_guarded".to_owned(), weights.frac_guarded),
            ("sched/kappa".to_owned(), kappa),
            ("sched/rho".to_owned(), rho),
        ]);
        let (s, t) = (batch.n_rows, batch.n_cols);
        let row_extent =
            (0..s).map(|row| (0..t).rev().find(|&c| is_real(batch.mask[row * t + c])).map_or(0, |c| c + 1)).collect();
        Ok(Advantages { n_rows: s, n_cols: t, per_token, opd, grpo, weights, row_extent, kappa, rho, metrics })
    }

    /// The advantages of `rows` (indices into the step's batch, in mini-batch order) as a `[rows.len(), n_cols]`
    /// tensor. `n_cols` may differ from the step's T: extra columns are zero, and columns beyond it are cut,
    /// which is allowed only where they hold no real token.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for a row out of range or a cut that would drop a real token.
    pub fn rows<B: Backend>(&self, rows: &[usize], n_cols: usize, device: &B::Device) -> Result<Tensor<B, 2>> {
        let t = self.n_cols;
        let mut out = vec![0.0f32; rows.len() * n_cols];
        for (i, &row) in rows.iter().enumerate() {
            if row >= self.n_rows {
                return Err(Error::Shape {
                    field: "rows",
                    expected: format!("row indices below {}", self.n_rows),
                    got: row.to_string(),
                });
            }
            let src = &self.per_token[row * t..(row + 1) * t];
            let keep = n_cols.min(t);
            if self.row_extent[row] > n_cols {
                return Err(Error::Shape {
                    field: "n_cols",
                    expected: format!("at least the real length of row {row}"),
                    got: n_cols.to_string(),
                });
            }
            out[i * n_cols..i * n_cols + keep].copy_from_slice(&src[..keep]);
        }
        Ok(host_tensor(out, rows.len(), n_cols, device))
    }
}
