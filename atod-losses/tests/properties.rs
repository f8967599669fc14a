//! Properties of the losses (proptest): group advantages sum to zero, masked tokens and padding change
//! nothing, T-DUR weights lie in [0, 1] with the guards exactly where they belong, aggregation modes agree on
//! equal lengths, and the hybrid reduces to GRPO and OPD at the ends of its coefficients.
//!
//! Batches are drawn from a seed with atod-core's SplitMix64, so that proptest shrinks the sizes and the seed.

use std::collections::BTreeMap;

use atod_core::{Schedule, SplitMix64};
use atod_losses::batch::host_tensor;
use atod_losses::{
    Advantages, Aggregation, HybridAdvantage, Loss, LossConfig, Mask, StepBatch, StepInfo, TrainBatch, Weighting,
};
use atod_models::{CpuAutodiff, CpuBackend};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use proptest::prelude::*;

const WEIGHTINGS: [Weighting; 3] = [Weighting::Uniform, Weighting::Tdur, Weighting::Token];

fn uniform(rng: &mut SplitMix64, lo: f64, hi: f64) -> f32 {
    (lo + (hi - lo) * rng.unit()) as f32
}

/// A step of `n_traj` trajectories of 1 to `max_turns` turns in `n_groups` groups, rows shuffled, each row 1 to
/// `n_cols` real tokens. A trajectory "agrees" with the teacher (|lp_old - lp_T| < 0.005) with probability 1/4,
/// so that both guards occur.
fn random_step(seed: u64, n_traj: usize, n_groups: usize, max_turns: usize, n_cols: usize) -> StepBatch {
    let mut rng = SplitMix64::new(seed);
    let mut rows = Vec::new();
    for traj in 0..n_traj {
        let turns = 1 + rng.below(max_turns as u64) as usize;
        let agrees = rng.below(4) == 0;
        for turn in 0..turns {
            rows.push((traj, turn, 1 + rng.below(n_cols as u64) as usize, agrees));
        }
    }
    rng.shuffle(&mut rows);
    let s = rows.len();
    let mut b = StepBatch {
        n_rows: s,
        n_cols,
        lp_old: vec![0.0; s * n_cols],
        lp_teacher: vec![0.0; s * n_cols],
        mask: vec![0.0; s * n_cols],
        turn_idx: rows.iter().map(|r| r.1).collect(),
        traj_id: rows.iter().map(|r| r.0).collect(),
        group_id: rows.iter().map(|r| r.0 % n_groups).collect(),
        returns: (0..n_traj).map(|_| if rng.below(3) == 0 { 1.0 } else { uniform(&mut rng, -1.0, 1.0) }).collect(),
    };
    for (r, &(_, _, len, agrees)) in rows.iter().enumerate() {
        for c in 0..n_cols {
            let k = r * n_cols + c;
            if c < len {
                b.mask[k] = 1.0;
                b.lp_old[k] = uniform(&mut rng, -5.0, -0.01);
                let gap = if agrees { 0.005 } else { 2.0 };
                b.lp_teacher[k] = b.lp_old[k] + uniform(&mut rng, -gap, gap);
            } else {
                // Padding holds garbage on purpose.
                b.lp_old[k] = uniform(&mut rng, -100.0, 100.0);
                b.lp_teacher[k] = f32::NAN;
            }
        }
    }
    b
}

fn hybrid(kappa: f64, rho: f64, weighting: Weighting, rescale: bool) -> HybridAdvantage {
    HybridAdvantage {
        kappa: Schedule::constant(kappa),
        rho: Schedule::constant(rho),
        weighting,
        rescale,
        norm_by_std: true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn grpo_advantages_of_each_group_sum_to_zero(
        returns in prop::collection::vec(-10.0f32..10.0, 1..16),
        n_groups in 1usize..5,
        norm_by_std: bool,
    ) {
        let groups: Vec<usize> = (0..returns.len()).map(|i| (i * 7 + 3) % n_groups).collect();
        let adv = atod_losses::grpo::grpo_advantages(&returns, &groups, norm_by_std);
        let mut sums: BTreeMap<usize, f64> = BTreeMap::new();
        for (g, a) in groups.iter().zip(&adv) {
            *sums.entry(*g).or_default() += f64::from(*a);
        }
        for (g, sum) in sums {
            prop_assert!(sum.abs() < 1e-4, "group {g} sums to {sum}");
        }
    }

    #[test]
    fn tdur_weights_lie_in_the_unit_interval_and_guards_apply_exactly_when_they_should(
        seed: u64, n_traj in 1usize..6, max_turns in 1usize..7, n_cols in 1usize..6, token: bool,
    ) {
        let b = random_step(seed, n_traj, 2, max_turns, n_cols);
        let weighting = if token { Weighting::Token } else { Weighting::Tdur };
        let a = Advantages::compute(&hybrid(1.0, 1.0, weighting, false), &b, StepInfo::new(0, 1)).unwrap();
        for (k, &w) in a.weights.per_token.iter().enumerate() {
            prop_assert!((0.0..=1.0).contains(&w), "weight {w} at {k}");
        }
        let layout = b.layout().unwrap();
        for (traj, rows) in layout.rows_of_traj.iter().enumerate() {
            // The guard, restated: fewer than 3 turns, or the largest mean |lp_old - lp_T| of a turn below 0.01.
            let max_d = rows.iter().map(|&r| {
                let cells: Vec<usize> = (r * n_cols..(r + 1) * n_cols).filter(|&k| b.mask[k] > 0.5).collect();
                cells.iter().map(|&k| f64::from((b.lp_old[k] - b.lp_teacher[k]).abs())).sum::<f64>() / cells.len() as f64
            }).fold(f64::NEG_INFINITY, f64::max);
            let want = rows.len() < 3 || max_d < 0.01;
            prop_assert_eq!(a.weights.guarded[traj], want, "trajectory {}", traj);
            if want {
                for &r in rows {
                    for k in r * n_cols..(r + 1) * n_cols {
                        prop_assert!(b.mask[k] < 0.5 || a.weights.per_token[k] == 1.0);
                    }
                }
            }
        }
        // With rescaling, weights stay within its clip bounds.
        let r = Advantages::compute(&hybrid(1.0, 1.0, weighting, true), &b, StepInfo::new(0, 1)).unwrap();
        for (k, &w) in r.weights.per_token.iter().enumerate() {
            prop_assert!(b.mask[k] < 0.5 || (0.5..=2.0).contains(&w), "rescaled weight {w} at {k}");
        }
    }

    #[test]
    fn hybrid_with_kappa_0_is_grpo_and_with_rho_0_is_weighted_opd(
        seed: u64, n_traj in 1usize..6, n_cols in 1usize..5, which in 0usize..3, rescale: bool, coef in 0.1f64..3.0,
    ) {
        let b = random_step(seed, n_traj, 2, 5, n_cols);
        let weighting = WEIGHTINGS[which];
        let grpo = Advantages::compute(&hybrid(0.0, coef, weighting, rescale), &b, StepInfo::default()).unwrap();
        let opd = Advantages::compute(&hybrid(coef, 0.0, weighting, rescale), &b, StepInfo::default()).unwrap();
        for r in 0..b.n_rows {
            for k in r * n_cols..(r + 1) * n_cols {
                let real = b.mask[k] > 0.5;
                let want_grpo = if real { (coef * f64::from(grpo.grpo[b.traj_id[r]])) as f32 } else { 0.0 };
                let want_opd = if real {
                    (coef * f64::from(opd.weights.per_token[k]) * f64::from(b.lp_teacher[k] - b.lp_old[k])) as f32
                } else { 0.0 };
                prop_assert_eq!(grpo.per_token[k], want_grpo);
                prop_assert_eq!(opd.per_token[k], want_opd);
            }
        }
    }

    #[test]
    fn padding_rows_and_columns_change_no_advantage(
        seed: u64, n_traj in 1usize..5, n_cols in 1usize..5, extra_cols in 1usize..4, which in 0usize..3, rescale: bool,
    ) {
        let b = random_step(seed, n_traj, 2, 5, n_cols);
        let t2 = n_cols + extra_cols;
        let mut p = b.clone();
        p.n_cols = t2;
        let widen = |x: &[f32], fill: f32| -> Vec<f32> {
            x.chunks(n_cols).flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(fill, extra_cols))).collect()
        };
        p.lp_old = widen(&b.lp_old, 7.0);
        p.lp_teacher = widen(&b.lp_teacher, f32::NAN);
        p.mask = widen(&b.mask, 0.0);
        // A padding row: an empty extra turn of trajectory 0.
        p.n_rows += 1;
        p.lp_old.extend(std::iter::repeat_n(3.0, t2));
        p.lp_teacher.extend(std::iter::repeat_n(-9.0, t2));
        p.mask.extend(std::iter::repeat_n(0.0, t2));
        p.turn_idx.push(100);
        p.traj_id.push(0);
        p.group_id.push(0);
        let h = hybrid(0.7, 1.3, WEIGHTINGS[which], rescale);
        let a = Advantages::compute(&h, &b, StepInfo::default()).unwrap();
        let ap = Advantages::compute(&h, &p, StepInfo::default()).unwrap();
        for r in 0..b.n_rows {
            prop_assert_eq!(&a.per_token[r * n_cols..(r + 1) * n_cols], &ap.per_token[r * t2..r * t2 + n_cols]);
            prop_assert!(ap.per_token[r * t2 + n_cols..(r + 1) * t2].iter().all(|&x| x == 0.0));
        }
        prop_assert_eq!(&a.metrics, &ap.metrics);
        // The rows' advantages re-padded to the mini-batch's width are the same tensor either way.
        let rows: Vec<usize> = (0..b.n_rows).rev().collect();
        let x: Vec<f32> = a.rows::<CpuBackend>(&rows, t2, &Default::default()).unwrap().into_data().to_vec().unwrap();
        let y: Vec<f32> = ap.rows::<CpuBackend>(&rows, t2, &Default::default()).unwrap().into_data().to_vec().unwrap();
        prop_assert_eq!(x, y);
    }
}

/// A mini-batch: per-token inputs `[S, T]` plus `[S, T, V]` logits, drawn from `seed`; `lengths` per row.
struct Mini {
    s: usize,
    t: usize,
    v: usize,
    lengths: Vec<usize>,
    fields: [Vec<f32>; 5], // lp, lp_old, entropy, lp_ref, advantages
    logits: [Vec<f32>; 2],
}

fn random_mini(seed: u64, lengths: Vec<usize>, t: usize) -> Mini {
    let mut rng = SplitMix64::new(seed);
    let (s, v) = (lengths.len(), 3);
    let mut field = |lo: f64, hi: f64| (0..s * t).map(|_| uniform(&mut rng, lo, hi)).collect::<Vec<f32>>();
    let lp_old = field(-4.0, -0.05);
    let lp: Vec<f32> = lp_old.iter().zip(field(-0.5, 0.5)).map(|(a, d)| a + d).collect();
    let fields = [lp, lp_old, field(0.0, 2.0), field(-4.0, -0.05), field(-2.0, 2.0)];
    let logits = [0, 1].map(|_| (0..s * t * v).map(|_| uniform(&mut rng, -3.0, 3.0)).collect());
    Mini { s, t, v, lengths, fields, logits }
}

impl Mini {
    fn mask(&self) -> Vec<f32> {
        (0..self.s * self.t).map(|k| if k % self.t < self.lengths[k / self.t] { 1.0 } else { 0.0 }).collect()
    }

    /// The same batch with garbage (`junk`) at every padded position, `extra_cols` more padded columns and
    /// `extra_rows` more padding rows.
    fn padded(&self, junk: f32, extra_cols: usize, extra_rows: usize) -> Mini {
        let (t2, s2) = (self.t + extra_cols, self.s + extra_rows);
        let grow = |x: &Vec<f32>, per: usize| -> Vec<f32> {
            let mut out = vec![junk; s2 * t2 * per];
            for r in 0..self.s {
                for c in 0..self.lengths[r] {
                    for u in 0..per {
                        out[(r * t2 + c) * per + u] = x[(r * self.t + c) * per + u];
                    }
                }
            }
            out
        };
        let mut lengths = self.lengths.clone();
        lengths.resize(s2, 0);
        Mini {
            s: s2,
            t: t2,
            v: self.v,
            lengths,
            fields: self.fields.each_ref().map(|f| grow(f, 1)),
            logits: self.logits.each_ref().map(|f| grow(f, self.v)),
        }
    }

    /// The objective's metrics and d loss / d lp at the real tokens (row-major over real tokens).
    fn run(&self, loss: &Loss) -> (BTreeMap<String, f64>, Vec<f32>) {
        let d = Default::default();
        let t2 = |x: &Vec<f32>| host_tensor::<CpuAutodiff>(x.clone(), self.s, self.t, &d);
        let t3 = |x: &Vec<f32>| {
            log_softmax(
                Tensor::<CpuAutodiff, 3>::from_data(TensorData::new(x.clone(), [self.s, self.t, self.v]), &d),
                2,
            )
        };
        let lp = t2(&self.fields[0]).require_grad();
        let batch = TrainBatch::new(lp.clone(), t2(&self.fields[1]), t2(&self.fields[2]), t2(&self.mask()))
            .with_ref(t2(&self.fields[3]))
            .with_vocab(t3(&self.logits[0]), t3(&self.logits[1]));
        let out = loss.objective(&batch, t2(&self.fields[4]), StepInfo::new(3, 10)).unwrap();
        let grads = out.loss.backward();
        let grad: Vec<f32> = lp.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let real =
            grad.iter().enumerate().filter(|(k, _)| k % self.t < self.lengths[k / self.t]).map(|(_, &g)| g).collect();
        let padded_grad_is_zero =
            grad.iter().enumerate().all(|(k, &g)| k % self.t < self.lengths[k / self.t] || g == 0.0);
        assert!(padded_grad_is_zero, "gradient at a padded position");
        (out.metrics, real)
    }
}

fn full_loss(aggregation: Aggregation) -> Loss {
    let mut c = LossConfig { aggregation, max_response_len: Some(8), clip_high: 0.28, ..LossConfig::atod() };
    c.components =
        [("kl", 0.1), ("entropy", 0.01), ("gkd", 0.5)].map(|(n, v)| (n.to_owned(), Schedule::constant(v))).into();
    Loss::new(c).unwrap()
}

fn assert_same(
    a: &(BTreeMap<String, f64>, Vec<f32>),
    b: &(BTreeMap<String, f64>, Vec<f32>),
) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.0.keys().collect::<Vec<_>>(), b.0.keys().collect::<Vec<_>>());
    for (k, x) in &a.0 {
        let y = b.0[k];
        prop_assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{k}: {x} vs {y}");
    }
    for (x, y) in a.1.iter().zip(&b.1) {
        prop_assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "gradient {x} vs {y}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn masked_tokens_and_padding_change_neither_loss_nor_gradient(
        seed: u64,
        lengths in prop::collection::vec(0usize..5, 1..5),
        junk in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), -1e3f32..1e3],
        extra_cols in 0usize..3,
        extra_rows in 0usize..2,
        which in 0usize..4,
    ) {
        let loss = full_loss(Aggregation::ALL[which].1);
        let base = random_mini(seed, lengths, 4);
        let clean = base.run(&loss);
        prop_assert!(clean.0["loss/total"].is_finite());
        assert_same(&clean, &base.padded(junk, 0, 0).run(&loss))?;
        assert_same(&clean, &base.padded(junk, extra_cols, extra_rows).run(&loss))?;
    }

    /// With every row of length n and C = max_response_len: `token-mean` = `seq-mean-token-mean` exactly (up to
    /// rounding), `seq-mean-token-sum` = n x `token-mean`, `seq-mean-token-sum-norm` = (n / C) x `token-mean`.
    #[test]
    fn aggregation_modes_agree_when_every_sequence_has_the_same_length(
        seed: u64, s in 1usize..6, n in 1usize..5, extra in 0usize..3, c in 1usize..9, padding_rows in 0usize..2,
    ) {
        let t = n + extra;
        let mut rng = SplitMix64::new(seed);
        let values: Vec<f32> = (0..(s + padding_rows) * t).map(|_| uniform(&mut rng, -3.0, 3.0)).collect();
        let mask: Vec<f32> = (0..(s + padding_rows) * t).map(|k| if k / t < s && k % t < n { 1.0 } else { 0.0 }).collect();
        let d = Default::default();
        let m = Mask::<CpuBackend>::new(&host_tensor(mask, s + padding_rows, t, &d));
        let agg = |mode: Aggregation| {
            atod_losses::batch::scalar(mode.aggregate(host_tensor::<CpuBackend>(values.clone(), s + padding_rows, t, &d), &m, Some(c)))
        };
        let token_mean = agg(Aggregation::TokenMean);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + a.abs());
        prop_assert!(close(agg(Aggregation::SeqMeanTokenMean), token_mean));
        prop_assert!(close(agg(Aggregation::SeqMeanTokenSum), n as f64 * token_mean));
        prop_assert!(close(agg(Aggregation::SeqMeanTokenSumNorm), n as f64 / c as f64 * token_mean));
    }
}
