//! T-DUR: turn-aware weights of the OPD term from teacher Disagreement and student Uncertainty.
//!
//! ATOD (arXiv 2606.27814): the turn weight `w_k` of the hybrid advantage (ATOD Eq 8), with DESIGN §3 as the
//! contract. For the turns k of one trajectory (stop-gradient, from behaviour and teacher log-probs of the
//! sampled tokens):
//!
//! ```text
//! d_k  = mean_t |lp_old - lp_T|          disagreement                                    ATOD Eq 13
//! h_k  = mean_t (-lp_old)                uncertainty (sampled-token NLL, an unbiased     ATOD Eq 14
//!                                        entropy estimate)
//! d~_k = (d_k - min_j d_j) / (max_j d_j - min_j d_j), or 0.5 when the range <= 1e-8;     ATOD Eq 15
//!        same for h~_k
//! w_k  = 1 - (1 - d~_k)(1 - h~_k)        soft OR, in [0, 1]                              ATOD Eq 16
//! ```
//!
//! Guards: a trajectory with fewer than 3 turns, or with `max_k d_k < 0.01`, keeps `w_k = 1` for all its turns.
//!
//! Variants ([`Weighting`]): `uniform` (w = 1), `tdur` (above), and `token`: the same soft OR per token, with
//! `d_t = |lp_old - lp_T|` and `h_t = -lp_old` clipped at its 0.98 quantile (NumPy's default linear
//! interpolation), both min-max normalised over all real tokens of the step's batch. Optional mean-preserving
//! rescale: within each trajectory, `w <- clip(w / mean(w), 0.5, 2)`, the mean over turns for `tdur` and over
//! real tokens for `token` (a trajectory whose mean weight is below 1e-8 gets 1). Each formula is its own
//! function below ([`disagreement`], [`uncertainty`], [`min_max`], [`soft_or`]), composed by [`turn_weights`].
//!
//! Choices the paper and DESIGN §3 leave open, named here:
//! - `token` applies the same trajectory guards as `tdur` (turn-level `d_k` and turn count), so that
//!   `tdur/frac_guarded` means the same in both; the batch min-max still includes guarded trajectories' tokens.
//! - `token` estimates the entropy by the sampled-token NLL `-lp_old`, the same estimator as `h_k`, since the
//!   behaviour distribution's full entropy is not kept from the rollout.
//! - A turn without real tokens (an empty response) is not a turn for the guard count or the min-max and
//!   gets weight 1; it carries no loss anyway.
//! - `tdur/mean_w` is the mean weight over real tokens (a token-weighted mean of the turn weights).

use serde::{Deserialize, Serialize};

use crate::batch::{is_real, Layout, StepBatch};

/// Fewer turns than this keeps `w = 1` (the min-max of one or two turns says nothing).
pub const MIN_TURNS: usize = 3;
/// A trajectory whose largest turn disagreement is below this keeps `w = 1` (the teacher agrees everywhere).
pub const MIN_DISAGREEMENT: f64 = 0.01;
/// Below this range, min-max normalisation gives 0.5.
pub const RANGE_EPS: f64 = 1e-8;
/// The quantile at which the token variant clips the uncertainty.
pub const TOKEN_ENTROPY_QUANTILE: f64 = 0.98;
/// The bounds of the mean-preserving rescale.
pub const RESCALE_BOUNDS: (f64, f64) = (0.5, 2.0);

/// How the OPD term is weighted across turns and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// w = 1 everywhere.
    Uniform,
    /// T-DUR turn weights.
    #[default]
    Tdur,
    /// The soft OR per token, min-max over the batch.
    Token,
}

impl Weighting {
    /// Every weighting, with its name.
    pub const ALL: [(&'static str, Weighting); 3] =
        [("uniform", Weighting::Uniform), ("tdur", Weighting::Tdur), ("token", Weighting::Token)];

    /// The registered name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, w)| *w == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

/// The weights of a whole step.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnWeights {
    /// Per token `[S * T]`: the weight of its turn (`tdur`) or its own (`token`); 0 at padding.
    pub per_token: Vec<f32>,
    /// Per row: the turn weight (`tdur`, `uniform`); for `token`, the mean over the row's real tokens.
    pub per_row: Vec<f32>,
    /// Per trajectory: whether a guard forced w = 1 (always false for `uniform`).
    pub guarded: Vec<bool>,
    /// Mean weight over real tokens.
    pub mean_w: f64,
    /// Fraction of trajectories guarded.
    pub frac_guarded: f64,
}

/// Computes the weights of `batch` (whose `layout` the caller already derived): ATOD Eqs 13 to 16 for `tdur`,
/// their per-token form for `token`, 1 for `uniform`; then the optional rescale and the metrics.
pub fn turn_weights(batch: &StepBatch, layout: &Layout, weighting: Weighting, rescale: bool) -> TurnWeights {
    let stats = turn_stats(batch, layout);
    let guarded = match weighting {
        Weighting::Uniform => vec![false; layout.rows_of_traj.len()],
        Weighting::Tdur | Weighting::Token => guards(layout, &stats),
    };
    let per_token = match weighting {
        Weighting::Uniform => uniform_weights(batch),
        Weighting::Tdur => tdur_weights(batch, layout, &stats, &guarded, rescale),
        Weighting::Token => token_weights(batch, layout, &guarded, rescale),
    };
    summarize(batch, layout, per_token, guarded)
}

/// ATOD Eq 13 at one token: the teacher's disagreement with the sampled token, `|lp_old - lp_T|`.
fn token_disagreement(lp_old: f32, lp_teacher: f32) -> f64 {
    f64::from((lp_old - lp_teacher).abs())
}

/// ATOD Eq 14 at one token: the student's uncertainty, estimated by the sampled token's NLL `-lp_old`.
fn token_uncertainty(lp_old: f32) -> f64 {
    -f64::from(lp_old)
}

/// ATOD Eq 13: the disagreement of turn `row`, `d_k = mean_t |lp_old - lp_T|` over its real tokens (NaN for a
/// row without any).
pub fn disagreement(batch: &StepBatch, row: usize) -> f64 {
    turn_mean(batch, row, token_disagreement)
}

/// ATOD Eq 14: the uncertainty of turn `row`, `h_k = mean_t (-lp_old)` over its real tokens (NaN for a row
/// without any).
pub fn uncertainty(batch: &StepBatch, row: usize) -> f64 {
    turn_mean(batch, row, |lp_old, _| token_uncertainty(lp_old))
}

/// The mean of `term(lp_old, lp_teacher)` over the real tokens of `row` (NaN for a row without any).
fn turn_mean(batch: &StepBatch, row: usize, term: impl Fn(f32, f32) -> f64) -> f64 {
    let (sum, n) =
        batch.real_tokens(row).fold((0.0, 0usize), |(sum, n), (_, old, teacher)| (sum + term(old, teacher), n + 1));
    sum / n as f64
}

/// `(d_k, h_k)` of every row (ATOD Eqs 13 and 14); None for a row without real tokens, which is no turn.
fn turn_stats(batch: &StepBatch, layout: &Layout) -> Vec<Option<(f64, f64)>> {
    (0..batch.n_rows)
        .map(|row| (layout.row_tokens[row] > 0).then(|| (disagreement(batch, row), uncertainty(batch, row))))
        .collect()
}

/// Per trajectory, whether a guard keeps `w = 1`: fewer than [`MIN_TURNS`] turns, or `max_k d_k` below
/// [`MIN_DISAGREEMENT`].
fn guards(layout: &Layout, stats: &[Option<(f64, f64)>]) -> Vec<bool> {
    let guarded = |rows: &Vec<usize>| {
        let turns: Vec<(f64, f64)> = rows.iter().filter_map(|&r| stats[r]).collect();
        let max_d = turns.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
        turns.len() < MIN_TURNS || max_d < MIN_DISAGREEMENT
    };
    layout.rows_of_traj.iter().map(guarded).collect()
}

/// ATOD Eq 15: min-max normalisation to [0, 1]; 0.5 everywhere when the range is at most [`RANGE_EPS`].
pub fn min_max(x: &[f64]) -> Vec<f64> {
    let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi - lo <= RANGE_EPS || !(hi - lo).is_finite() {
        return vec![0.5; x.len()];
    }
    x.iter().map(|v| (v - lo) / (hi - lo)).collect()
}

/// ATOD Eq 16: the soft OR of the normalised disagreement and uncertainty, `w = 1 - (1 - d~)(1 - h~)`.
pub fn soft_or(d: f64, h: f64) -> f64 {
    1.0 - (1.0 - d) * (1.0 - h)
}

/// The `uniform` variant: `w = 1` at every real token, 0 at padding, `[S * T]`.
fn uniform_weights(batch: &StepBatch) -> Vec<f64> {
    let mut per_token = vec![0.0; batch.n_rows * batch.n_cols];
    fill_real(batch, &mut per_token, |_, _| 1.0);
    per_token
}

/// The `tdur` variant (ATOD Eqs 15 and 16 over each unguarded trajectory's turns): every real token carries
/// its turn's `w_k`, optionally rescaled over the trajectory's turns; 0 at padding, `[S * T]`.
fn tdur_weights(
    batch: &StepBatch,
    layout: &Layout,
    stats: &[Option<(f64, f64)>],
    guarded: &[bool],
    rescale: bool,
) -> Vec<f64> {
    let mut row_w = vec![1.0f64; batch.n_rows];
    for (rows, &guarded) in layout.rows_of_traj.iter().zip(guarded) {
        let turns: Vec<(usize, (f64, f64))> = rows.iter().filter_map(|&r| stats[r].map(|x| (r, x))).collect();
        if !guarded {
            let d = min_max(&turns.iter().map(|(_, x)| x.0).collect::<Vec<_>>());
            let h = min_max(&turns.iter().map(|(_, x)| x.1).collect::<Vec<_>>());
            for (i, &(r, _)) in turns.iter().enumerate() {
                row_w[r] = soft_or(d[i], h[i]);
            }
        }
        if rescale {
            rescale_at(&mut row_w, &turns.iter().map(|&(r, _)| r).collect::<Vec<_>>());
        }
    }
    let mut per_token = vec![0.0; batch.n_rows * batch.n_cols];
    fill_real(batch, &mut per_token, |row, _| row_w[row]);
    per_token
}

/// The `token` variant: ATOD Eqs 13 to 16 per token, with `h_t` clipped at its [`TOKEN_ENTROPY_QUANTILE`] and
/// both min-max normalised over the batch's real tokens; a guarded trajectory's tokens get 1, the others are
/// optionally rescaled over the trajectory's real tokens; 0 at padding, `[S * T]`.
fn token_weights(batch: &StepBatch, layout: &Layout, guarded: &[bool], rescale: bool) -> Vec<f64> {
    let t = batch.n_cols;
    let (mut d, mut h, mut index) = (Vec::new(), Vec::new(), Vec::new());
    for row in 0..batch.n_rows {
        for (col, old, teacher) in batch.real_tokens(row) {
            d.push(token_disagreement(old, teacher));
            h.push(token_uncertainty(old));
            index.push(row * t + col);
        }
    }
    if !h.is_empty() {
        let cap = quantile(&h, TOKEN_ENTROPY_QUANTILE);
        h.iter_mut().for_each(|x| *x = x.min(cap));
    }
    let mut per_token = vec![0.0; batch.n_rows * t];
    let (dn, hn) = (min_max(&d), min_max(&h));
    for (i, &k) in index.iter().enumerate() {
        per_token[k] = soft_or(dn[i], hn[i]);
    }
    for (rows, &guarded) in layout.rows_of_traj.iter().zip(guarded) {
        let cells: Vec<usize> =
            rows.iter().flat_map(|&r| (0..t).map(move |c| r * t + c)).filter(|&k| is_real(batch.mask[k])).collect();
        if guarded {
            cells.iter().for_each(|&k| per_token[k] = 1.0);
        } else if rescale {
            rescale_at(&mut per_token, &cells);
        }
    }
    per_token
}

/// The metrics of the weights: per row the mean over its real tokens (1 for a row without any), `mean_w` over
/// the batch's real tokens and the fraction of trajectories guarded.
fn summarize(batch: &StepBatch, layout: &Layout, per_token: Vec<f64>, guarded: Vec<bool>) -> TurnWeights {
    let t = batch.n_cols;
    let per_row = (0..batch.n_rows)
        .map(|row| {
            let n = layout.row_tokens[row];
            if n == 0 {
                1.0
            } else {
                (batch.real_tokens(row).map(|(c, _, _)| per_token[row * t + c]).sum::<f64>() / n as f64) as f32
            }
        })
        .collect();
    let n_real: usize = layout.row_tokens.iter().sum();
    let mean_w = if n_real == 0 { 1.0 } else { per_token.iter().sum::<f64>() / n_real as f64 };
    let n_traj = guarded.len();
    let frac_guarded = if n_traj == 0 { 0.0 } else { guarded.iter().filter(|&&g| g).count() as f64 / n_traj as f64 };
    TurnWeights { per_token: per_token.into_iter().map(|w| w as f32).collect(), per_row, guarded, mean_w, frac_guarded }
}

/// Sets every real token's weight to `f(row, col)`.
fn fill_real(batch: &StepBatch, out: &mut [f64], f: impl Fn(usize, usize) -> f64) {
    let t = batch.n_cols;
    for row in 0..batch.n_rows {
        for c in 0..t {
            if is_real(batch.mask[row * t + c]) {
                out[row * t + c] = f(row, c);
            }
        }
    }
}

/// The mean-preserving rescale of the weights `w[i]` for `i` in `at` (one trajectory's turns or tokens):
/// [`rescale_mean`] of them, written back.
fn rescale_at(w: &mut [f64], at: &[usize]) {
    let mut part: Vec<f64> = at.iter().map(|&i| w[i]).collect();
    rescale_mean(&mut part);
    for (&i, x) in at.iter().zip(part) {
        w[i] = x;
    }
}

/// `w / mean(w)` clipped to [`RESCALE_BOUNDS`]; 1 when the mean is below 1e-8.
fn rescale_mean(w: &mut [f64]) {
    if w.is_empty() {
        return;
    }
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    for x in w.iter_mut() {
        *x = if mean < 1e-8 { 1.0 } else { (*x / mean).clamp(RESCALE_BOUNDS.0, RESCALE_BOUNDS.1) };
    }
}

/// NumPy's `np.quantile(x, q)` with the default linear interpolation.
pub(crate) fn quantile(x: &[f64], q: f64) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    if lo + 1 < v.len() {
        v[lo] + (v[lo + 1] - v[lo]) * frac
    } else {
        v[lo]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_and_soft_or() {
        assert_eq!(min_max(&[1.0, 3.0, 2.0]), [0.0, 1.0, 0.5]);
        assert_eq!(min_max(&[2.0, 2.0 + 1e-9]), [0.5, 0.5], "a range within RANGE_EPS");
        assert_eq!(min_max(&[1.0, f64::INFINITY]), [0.5, 0.5], "an infinite range");
        assert_eq!([soft_or(0.0, 0.0), soft_or(1.0, 0.0), soft_or(0.0, 1.0), soft_or(0.5, 0.5)], [0.0, 1.0, 1.0, 0.75]);
    }

    #[test]
    fn turn_statistics_are_means_over_real_tokens() {
        let batch = StepBatch::from_ragged(
            &[vec![-1.0, -3.0]],
            &[vec![-2.0, -2.5]],
            Some(3),
            vec![0],
            vec![0],
            vec![0],
            vec![0.0],
        )
        .unwrap();
        assert_eq!((disagreement(&batch, 0), uncertainty(&batch, 0)), (0.75, 2.0));
    }
}
