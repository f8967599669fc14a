//! The GRPO advantage: group-normalised trajectory returns.
//!
//! GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300, §4.1.2, outcome supervision):
//! `A_i = (R_i - mean_g R) / std_g R`, broadcast to every token of trajectory i: the `A_grpo_i` of the hybrid
//! advantage (ATOD, arXiv 2606.27814, Eq 8). As DESIGN §3 fixes it (and as
//! verl computes it): `std` is the sample standard deviation (n - 1 in the denominator, `torch.std`) and
//! `eps = 1e-6` is added to it. Dr.GRPO (Liu et al., arXiv 2503.20783, §3.1) drops the division:
//! `norm_by_std = false` gives `A_i = R_i - mean_g R`.
//!
//! Deviations, all in degenerate groups where the formula is undefined or numerically meaningless:
//! - a group of size 1 gets advantage 0 (its sample std is 0/0; verl sets std to 1 there, which gives
//!   `R - R = 0` as well);
//! - a group whose returns are all equal gets exactly 0, rather than `(R - mean) / eps`, which rounding in the
//!   mean could turn into a spurious ±1e-10/1e-6.
//!
//! In atod a trajectory is split into one row per turn, so "broadcast" means every real token of every turn
//! row of the trajectory carries `A_i`. The group statistics are over trajectories, not rows (DESIGN §3).

use std::collections::BTreeMap;

/// The `eps` added to the group's standard deviation.
pub const GRPO_EPS: f64 = 1e-6;

/// GRPO advantage of each trajectory.
///
/// `returns[i]` is trajectory i's return and `group_of_traj[i]` its group; both have one entry a trajectory.
/// Returns one advantage a trajectory.
pub fn grpo_advantages(returns: &[f32], group_of_traj: &[usize], norm_by_std: bool) -> Vec<f32> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (traj, &g) in group_of_traj.iter().enumerate() {
        groups.entry(g).or_default().push(traj);
    }
    let mut adv = vec![0.0f32; returns.len()];
    for members in groups.values() {
        let n = members.len();
        let r: Vec<f64> = members.iter().map(|&i| f64::from(returns[i])).collect();
        if n < 2 || r.iter().all(|&x| x == r[0]) {
            continue;
        }
        let mean = r.iter().sum::<f64>() / n as f64;
        let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let scale = if norm_by_std { var.sqrt() + GRPO_EPS } else { 1.0 };
        for (&i, x) in members.iter().zip(&r) {
            adv[i] = ((x - mean) / scale) as f32;
        }
    }
    adv
}
