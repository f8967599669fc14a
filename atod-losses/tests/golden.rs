//! Golden values: every component on one hand-made batch against NumPy.
//!
//! The batch: 3 trajectories of 4, 2 and 5 turns (trajectory 1 is guarded by its turn count); trajectories 0
//! and 1 form group 0, trajectory 2 alone group 1 (a group of one: GRPO advantage 0); 11 turn rows in
//! interleaved order padded to T = 4; V = 5 for GKD. The expected numbers were printed by the script below
//! (NumPy 2.4, float64), run as `python golden.py`; its output is pasted verbatim into `mod numpy` below.
//!
//! ```python
//! import numpy as np
//! rng = np.random.default_rng(7)
//! # rows in batch order: (traj, turn, length); traj 0,1 in group 0, traj 2 in group 1
//! rows = [(0,0,3),(1,0,2),(2,0,4),(0,1,2),(1,1,3),(2,1,1),(0,2,4),(2,2,3),(0,3,1),(2,3,2),(2,4,4)]
//! group = {0:0, 1:0, 2:1}
//! returns = np.array([1.0, -0.5, 0.7])
//! S, T, V = len(rows), 4, 5
//! mask = np.zeros((S,T))
//! for r,(_,_,n) in enumerate(rows): mask[r,:n] = 1
//! r2 = lambda x: np.round(x, 2)
//! lp_old = r2(rng.uniform(-3.0, -0.05, (S,T))) * mask
//! lp_t = r2(lp_old + rng.uniform(-1.0, 1.0, (S,T))).clip(max=-0.01) * mask
//! lp = r2(lp_old + rng.uniform(-0.4, 0.4, (S,T))) * mask
//! lp_ref = r2(lp_old + rng.uniform(-0.3, 0.3, (S,T))) * mask
//! ent = r2(rng.uniform(0.1, 2.0, (S,T))) * mask
//! logit_s = r2(rng.normal(size=(S,T,V))); logit_t = r2(rng.normal(size=(S,T,V)))
//! traj = np.array([r[0] for r in rows]); m = mask > 0
//!
//! def grpo(R, groups, norm):
//!     out = np.zeros(len(R))
//!     for g in set(groups):
//!         idx = [i for i in range(len(R)) if groups[i] == g]
//!         x = R[idx]
//!         if len(x) < 2 or np.all(x == x[0]): continue
//!         out[idx] = (x - x.mean()) / ((x.std(ddof=1) + 1e-6) if norm else 1.0)
//!     return out
//! A_grpo = grpo(returns, [group[i] for i in range(3)], True)
//! A_drgrpo = grpo(returns, [group[i] for i in range(3)], False)
//! R6, G6 = np.array([1.0, -0.5, 0.3, 0.9, 0.9, 0.4]), [0, 0, 0, 1, 1, 2]  # sizes 3, 2 (all equal), 1
//! A_opd = (lp_t - lp_old) * mask
//!
//! def mm(x):
//!     lo, hi = x.min(), x.max()
//!     return np.full_like(x, 0.5) if hi - lo <= 1e-8 else (x - lo) / (hi - lo)
//! def rescale(w):
//!     mu = w.mean(); return np.ones_like(w) if mu < 1e-8 else np.clip(w / mu, 0.5, 2.0)
//! d_row = np.array([np.abs(lp_old[r] - lp_t[r])[m[r]].mean() for r in range(S)])
//! h_row = np.array([(-lp_old[r])[m[r]].mean() for r in range(S)])
//! guard = {i: (sum(traj == i) < 3 or d_row[traj == i].max() < 0.01) for i in range(3)}
//! def tdur(resc):
//!     w = np.ones(S)
//!     for i in range(3):
//!         rr = np.where(traj == i)[0]
//!         if guard[i]: continue
//!         w[rr] = 1 - (1 - mm(d_row[rr])) * (1 - mm(h_row[rr]))
//!         if resc: w[rr] = rescale(w[rr])
//!     return w[:, None] * mask
//! def token(resc):
//!     d = np.abs(lp_old - lp_t)[m]; h = (-lp_old)[m]
//!     h = np.minimum(h, np.quantile(h, 0.98))
//!     w = np.zeros((S,T)); w[m] = 1 - (1 - mm(d)) * (1 - mm(h))
//!     for i in range(3):
//!         rr = traj == i
//!         cell = m & rr[:, None]
//!         if guard[i]: w[cell] = 1.0
//!         elif resc: w[cell] = rescale(w[cell])
//!     return w
//! def lin(a, b, n, s): return a + (b - a) * min(s / n, 1.0)
//! def hybrid(step, w):
//!     k, rho = lin(1.0, 0.1, 80, step), lin(1.0, 2.0, 80, step)
//!     return (k * w * A_opd + rho * A_grpo[traj][:, None]) * mask
//! W = tdur(False)
//! A40 = hybrid(40, W); A0 = hybrid(0, W); A100 = hybrid(100, W)
//! def surrogate(A, lo=0.2, hi=0.28):
//!     ratio = np.exp(lp - lp_old)
//!     l1 = -ratio * A; l2 = -np.clip(ratio, 1 - lo, 1 + hi) * A
//!     return np.maximum(l1, l2) * mask, ((l2 > l1) & m).sum() / m.sum()
//! def agg(L, mode, C=6):
//!     n = mask.sum(1); seq = n > 0
//!     if mode == "token-mean": return L.sum() / mask.sum()
//!     if mode == "seq-mean-token-mean": return (L.sum(1)[seq] / n[seq]).mean()
//!     if mode == "seq-mean-token-sum": return L.sum(1)[seq].mean()
//!     if mode == "seq-mean-token-sum-norm": return L.sum() / (seq.sum() * C)
//! L, clipfrac = surrogate(A40)
//! approx_kl = (lp_old - lp)[m].mean()
//! x = lp_ref - lp; k3 = (np.exp(x) - x - 1) * mask
//! def lsm(z): z = z - z.max(-1, keepdims=True); return z - np.log(np.exp(z).sum(-1, keepdims=True))
//! ls, lt = lsm(logit_s), lsm(logit_t)
//! gkd = (np.exp(ls) * (ls - lt)).sum(-1) * mask
//! ratio = np.exp(lp - lp_old)
//! grad = np.where(-np.clip(ratio, 0.8, 1.28) * A40 > -ratio * A40, 0.0, -ratio * A40) * mask / mask.sum()
//! def rs(name, a):
//!     v = [repr(float(x) + 0.0) for x in np.ravel(a)]
//!     lines = [", ".join(v[i:i + 8]) for i in range(0, len(v), 8)]
//!     print(f"const {name}: [f64; {len(v)}] = [\n    " + ",\n    ".join(lines) + ",\n];")
//! for name, a in [("LP_OLD", lp_old), ("LP_T", lp_t), ("LP", lp), ("LP_REF", lp_ref), ("ENT", ent), ("LOGIT_S", logit_s), ("LOGIT_T", logit_t)]: rs(name, a)
//! for name, a in [("GRPO", A_grpo), ("DRGRPO", A_drgrpo), ("GRPO6", grpo(R6, G6, True)), ("DRGRPO6", grpo(R6, G6, False)), ("OPD", A_opd), ("W_TDUR", W), ("W_TDUR_RESCALED", tdur(True)),
//!                 ("W_TOKEN", token(False)), ("W_TOKEN_RESCALED", token(True)), ("ADV_STEP0", A0), ("ADV_STEP40", A40), ("ADV_STEP100", A100),
//!                 ("SURROGATE", L), ("K3", k3), ("GKD", gkd), ("GRAD_TOKEN_MEAN", grad)]: rs(name, a)
//! rs("AGG", [agg(L, k) for k in ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]])
//! rs("SCALARS", [clipfrac, approx_kl, agg(k3, "token-mean"), agg(ent, "token-mean"), agg(gkd, "token-mean"), W[m].mean()])
//! print("// guards", guard)
//! ```

use atod_core::Schedule;
use atod_losses::batch::host_tensor;
use atod_losses::{Aggregation, HybridAdvantage, Loss, LossConfig, StepBatch, StepInfo, TrainBatch, Weighting};
use atod_models::{CpuAutodiff, CpuBackend};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};

const TOL: f64 = 1e-5;
const S: usize = 11;
const T: usize = 4;
const V: usize = 5;
/// (trajectory, turn, length) of each row, as in the script.
const ROWS: [(usize, usize, usize); S] = [
    (0, 0, 3),
    (1, 0, 2),
    (2, 0, 4),
    (0, 1, 2),
    (1, 1, 3),
    (2, 1, 1),
    (0, 2, 4),
    (2, 2, 3),
    (0, 3, 1),
    (2, 3, 2),
    (2, 4, 4),
];
const GROUP_OF_TRAJ: [usize; 3] = [0, 0, 1];
const RETURNS: [f32; 3] = [1.0, -0.5, 0.7];

/// The script's output.
#[rustfmt::skip]
mod numpy {
    pub const LP_OLD: [f64; 44] = [
        -1.16, -0.35, -0.71, 0.0, -2.11, -0.42, 0.0, 0.0,
        -0.65, -1.62, -2.11, -2.18, -2.25, -1.69, 0.0, 0.0,
        -0.06, -0.66, -1.16, 0.0, -2.36, 0.0, 0.0, 0.0,
        -2.89, -1.48, -1.62, -0.29, -1.14, -1.48, -1.53, 0.0,
        -2.97, 0.0, 0.0, 0.0, -1.91, -2.99, 0.0, 0.0,
        -2.21, -0.4, -1.5, -0.5,
    ];
    pub const LP_T: [f64; 44] = [
        -0.88, -0.01, -1.53, 0.0, -2.09, -0.01, 0.0, 0.0,
        -1.53, -1.84, -2.46, -2.88, -1.62, -1.93, 0.0, 0.0,
        -0.01, -0.38, -0.81, 0.0, -2.48, 0.0, 0.0, 0.0,
        -1.95, -2.05, -1.28, -0.69, -0.39, -1.16, -2.27, 0.0,
        -2.08, 0.0, 0.0, 0.0, -2.53, -2.13, 0.0, 0.0,
        -1.44, -0.12, -1.36, -0.75,
    ];
    pub const LP: [f64; 44] = [
        -1.23, -0.56, -1.08, 0.0, -2.14, -0.38, 0.0, 0.0,
        -1.03, -1.72, -2.49, -2.48, -1.88, -1.56, 0.0, 0.0,
        0.24, -0.78, -1.09, 0.0, -2.48, 0.0, 0.0, 0.0,
        -3.17, -1.13, -2.02, -0.09, -0.89, -1.77, -1.59, 0.0,
        -3.36, 0.0, 0.0, 0.0, -1.73, -3.21, 0.0, 0.0,
        -2.47, -0.52, -1.14, -0.44,
    ];
    pub const LP_REF: [f64; 44] = [
        -1.26, -0.49, -0.44, 0.0, -1.82, -0.41, 0.0, 0.0,
        -0.5, -1.57, -2.15, -1.95, -2.3, -1.44, 0.0, 0.0,
        -0.05, -0.39, -1.31, 0.0, -2.25, 0.0, 0.0, 0.0,
        -2.99, -1.54, -1.8, -0.56, -1.31, -1.23, -1.33, 0.0,
        -2.91, 0.0, 0.0, 0.0, -2.03, -2.71, 0.0, 0.0,
        -2.13, -0.59, -1.76, -0.55,
    ];
    pub const ENT: [f64; 44] = [
        1.55, 1.65, 1.49, 0.0, 1.84, 1.62, 0.0, 0.0,
        1.84, 0.19, 0.16, 0.14, 0.58, 0.57, 0.0, 0.0,
        0.17, 1.22, 0.42, 0.0, 0.14, 0.0, 0.0, 0.0,
        1.64, 1.35, 1.26, 0.46, 1.19, 0.18, 1.62, 0.0,
        1.72, 0.0, 0.0, 0.0, 0.31, 1.29, 0.0, 0.0,
        1.74, 1.61, 0.35, 1.56,
    ];
    pub const LOGIT_S: [f64; 220] = [
        0.04, -0.86, -1.51, -0.17, -0.97, -1.64, 0.51, -0.06,
        0.41, -0.99, -0.66, -1.0, -0.89, 0.2, -0.78, 0.36,
        0.34, 2.03, -1.39, 0.89, -0.09, -0.01, -1.45, -0.46,
        0.74, -0.08, 0.08, -0.29, 1.15, -0.02, -2.2, -0.69,
        -1.97, -3.25, -0.53, 1.33, 0.05, -1.17, -0.94, 1.13,
        0.16, 0.05, -0.05, 0.04, 0.81, 0.55, 0.22, -1.04,
        0.51, -0.68, 1.09, -1.27, -0.14, -0.01, -1.32, 1.72,
        1.46, -0.46, 0.77, 0.38, -2.61, 0.25, -0.06, 0.08,
        -1.08, -0.27, -0.18, 1.19, 0.33, -0.01, 1.53, -0.56,
        -0.39, -1.82, 1.57, 0.96, 0.92, 0.67, 0.11, 0.22,
        -0.25, -0.2, 0.05, 1.51, 0.56, -0.06, -0.58, -0.63,
        1.6, 0.51, 0.07, -0.35, -1.11, -0.07, 0.87, -0.39,
        -0.23, -0.22, 0.11, -1.59, -0.24, -0.85, 0.88, -0.77,
        0.58, 1.52, -0.31, -0.6, 0.19, 0.0, -0.99, 0.46,
        2.02, -0.26, -0.2, -1.04, 0.32, -1.25, -1.11, 1.28,
        -0.91, 1.08, 1.52, 0.26, 0.55, 1.95, -0.2, -0.59,
        -1.35, 0.04, 1.48, 0.96, -0.94, -0.86, -0.5, 0.29,
        -0.21, 0.21, 0.3, -0.3, -0.04, 0.21, -0.08, 0.5,
        1.87, 0.59, 0.06, -1.69, 0.39, -1.95, -1.41, 0.85,
        0.71, -0.15, -1.71, -0.37, -0.68, 0.64, 2.26, 0.22,
        -0.78, -1.17, -0.06, -0.18, -1.15, 0.12, -1.15, 1.11,
        1.06, 1.08, -0.47, 0.51, -0.13, -0.39, -0.34, -1.3,
        -1.44, 0.79, -0.19, 0.22, 1.0, -1.73, -0.78, 0.18,
        0.39, -0.38, 1.03, 0.21, -1.21, -0.93, 0.81, 0.46,
        -1.9, 1.35, 0.6, 1.34, -0.38, -0.3, -1.13, 2.54,
        -0.18, 1.59, -0.65, 0.16, -1.67, -0.38, 0.98, -1.25,
        1.07, 0.34, -1.04, -0.5, -0.46, -0.05, -0.54, -0.83,
        -0.3, -1.03, -1.29, -0.05,
    ];
    pub const LOGIT_T: [f64; 220] = [
        0.88, -1.53, 0.0, -0.65, -0.98, 0.85, -0.52, 1.5,
        -0.78, 0.39, -0.23, -0.75, 0.59, -0.15, 0.6, -0.05,
        -1.09, -0.1, 0.05, 0.96, -0.91, -0.04, -1.72, 0.65,
        -1.08, -1.81, -0.06, 1.11, -1.52, -1.09, -0.74, -1.13,
        0.38, -0.81, -0.72, 0.58, -0.76, 0.43, -0.97, -1.21,
        -1.84, 1.86, -0.32, 0.24, -0.03, 0.16, 0.05, 1.91,
        -1.04, -1.56, -1.01, -1.33, 0.75, 0.82, -0.96, -1.39,
        -0.35, 1.39, -2.82, 0.53, -1.08, 1.04, -1.08, -0.29,
        -1.51, -0.98, 1.39, 0.82, -0.4, -0.87, -1.89, -0.39,
        -0.03, -0.08, -0.09, -1.12, -0.07, -0.04, 1.29, 1.87,
        -0.14, -0.77, -0.06, -0.61, -0.74, -0.06, -1.04, 0.61,
        -0.1, 0.25, -0.18, -0.73, -0.95, -0.24, -0.55, 0.23,
        0.0, -1.36, 0.07, -1.34, -0.62, -0.29, -2.08, 0.09,
        0.15, -0.16, -0.42, -0.37, -0.98, -0.27, -0.55, 0.09,
        -1.2, 0.24, 0.14, -0.14, -0.44, 0.55, -1.66, 0.46,
        0.24, 0.28, 0.38, -0.65, -0.26, 0.64, 0.43, 0.21,
        -1.51, 0.54, 1.17, 1.01, 0.23, -1.56, 0.94, -0.15,
        -2.53, 0.38, -1.49, -1.3, -0.63, 1.27, -0.37, 0.27,
        1.75, 1.59, -0.1, -0.24, -1.26, -0.69, 0.43, 0.4,
        0.11, 0.99, -0.77, -0.06, 0.73, 0.58, 1.07, 0.4,
        -0.31, 0.36, -1.0, -1.64, 0.58, -0.06, 0.31, -1.7,
        -0.37, -0.6, -0.86, -2.26, -0.33, 0.9, 0.38, -0.6,
        -0.01, 0.76, -2.76, -0.12, 0.54, 0.68, 1.7, 1.14,
        0.31, 0.3, 0.79, -0.54, -0.04, 0.91, 1.96, -0.16,
        -0.05, 0.2, 1.34, -0.03, 1.47, -0.97, -0.19, -0.2,
        0.79, 1.05, -1.51, -0.92, 0.34, -0.66, -1.52, 1.04,
        0.49, 0.49, -0.48, 1.03, -0.24, 1.1, -0.91, -0.85,
        0.2, -0.7, 0.68, 0.26,
    ];
    pub const GRPO: [f64; 3] = [
        0.7071061145205095, -0.7071061145205095, 0.0,
    ];
    pub const DRGRPO: [f64; 3] = [
        0.75, -0.75, 0.0,
    ];
    pub const GRPO6: [f64; 6] = [
        0.977052999932107, -1.0214644999290208, 0.04441149999691394, 0.0, 0.0, 0.0,
    ];
    pub const DRGRPO6: [f64; 6] = [
        0.7333333333333334, -0.7666666666666666, 0.033333333333333326, 0.0, 0.0, 0.0,
    ];
    pub const OPD: [f64; 44] = [
        0.2799999999999999, 0.33999999999999997, -0.8200000000000001, 0.0, 0.020000000000000018, 0.41, 0.0, 0.0,
        -0.88, -0.21999999999999997, -0.3500000000000001, -0.6999999999999997, 0.6299999999999999, -0.24, 0.0, 0.0,
        0.049999999999999996, 0.28, 0.34999999999999987, 0.0, -0.1200000000000001, 0.0, 0.0, 0.0,
        0.9400000000000002, -0.5699999999999998, 0.3400000000000001, -0.39999999999999997, 0.7499999999999999, 0.32000000000000006, -0.74, 0.0,
        0.8900000000000001, 0.0, 0.0, 0.0, -0.6199999999999999, 0.8600000000000003, 0.0, 0.0,
        0.77, 0.28, 0.1399999999999999, -0.25,
    ];
    pub const W_TDUR: [f64; 44] = [
        0.098901098901099, 0.098901098901099, 0.098901098901099, 0.0, 1.0, 1.0, 0.0, 0.0,
        0.7961029274659704, 0.7961029274659704, 0.7961029274659704, 0.7961029274659704, 0.5515695067264573, 0.5515695067264573, 0.0, 0.0,
        1.0, 1.0, 1.0, 0.0, 0.9306358381502888, 0.0, 0.0, 0.0,
        0.548120041393584, 0.548120041393584, 0.548120041393584, 0.548120041393584, 0.8187857818661471, 0.8187857818661471, 0.8187857818661471, 0.0,
        1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
        0.38709677419354827, 0.38709677419354827, 0.38709677419354827, 0.38709677419354827,
    ];
    pub const W_TDUR_RESCALED: [f64; 44] = [
        0.5, 0.5, 0.5, 0.0, 1.0, 1.0, 0.0, 0.0,
        1.0121784712374715, 1.0121784712374715, 1.0121784712374715, 1.0121784712374715, 1.0034965034965035, 1.0034965034965035, 0.0, 0.0,
        1.0, 1.0, 1.0, 0.0, 1.183225846105216, 0.0, 0.0, 0.0,
        0.9972207279899588, 0.9972207279899588, 0.9972207279899588, 0.9972207279899588, 1.0410178286848217, 1.0410178286848217, 1.0410178286848217, 0.0,
        1.8193473193473195, 0.0, 0.0, 0.0, 1.2714165923987728, 1.2714165923987728, 0.0, 0.0,
        0.5, 0.5, 0.5, 0.5,
    ];
    pub const W_TOKEN: [f64; 44] = [
        0.5529699519159154, 0.41262341283791426, 0.8986122945105492, 0.0, 1.0, 1.0, 0.0, 0.0,
        0.947965512926694, 0.6356692148649534, 0.8091115467345127, 0.928606753221991, 0.9158647687256823, 0.6640370372577176, 0.0, 0.0,
        1.0, 1.0, 1.0, 0.0, 0.8110390809802718, 0.0, 0.0, 0.0,
        1.0, 0.7934842192443587, 0.6963910123874613, 0.45929536259689796, 0.8698944175986556, 0.6539465295446014, 0.892093832486251, 0.0,
        0.9998361446931735, 0.0, 0.0, 0.0, 0.8726337804100552, 1.0, 0.0, 0.0,
        0.9513290154977327, 0.36617490213369397, 0.5594377677544672, 0.363060161710292,
    ];
    pub const W_TOKEN_RESCALED: [f64; 44] = [
        0.7479526714250455, 0.5581185430697084, 1.215471950918515, 0.0, 1.0, 1.0, 0.0, 0.0,
        1.2448704477878874, 0.8347622454226375, 1.062527106480964, 1.2194484809192727, 1.23880781959129, 0.8981831186689972, 0.0, 0.0,
        1.0, 1.0, 1.0, 0.0, 1.065058348796137, 0.0, 0.0, 0.0,
        1.3526099724470728, 1.0732746679292993, 0.9419454280777931, 0.6212474877472585, 1.1423473094721779, 0.8587640562473452, 1.1714996311283001, 0.0,
        1.352388340125021, 0.0, 0.0, 0.0, 1.1459446468891819, 1.3132022534707473, 0.0, 0.0,
        1.24928740694373, 0.5, 0.7346549372918109, 0.5,
    ];
    pub const ADV_STEP0: [f64; 44] = [
        0.7347984222128172, 0.7407324881468832, 0.6260072134216084, 0.0, -0.6871061145205095, -0.29710611452050956, 0.0, 0.0,
        -0.700570576170054, -0.17514264404251348, -0.27863602461308973, -0.5572720492261791, 1.0545949037581777, 0.5747294329061597, 0.0, 0.0,
        -0.6571061145205095, -0.4271061145205095, -0.35710611452050967, 0.0, -0.11167630057803477, 0.0, 0.0, 0.0,
        1.2223389534304785, 0.3946776909261668, 0.8934669285943281, 0.487858097963076, 0.6140893363996103, 0.26201145019716715, -0.6059014785809489, 0.0,
        1.5971061145205097, 0.0, 0.0, 0.0, -0.6199999999999999, 0.8600000000000003, 0.0, 0.0,
        0.2980645161290322, 0.10838709677419353, 0.05419354838709672, -0.09677419354838707,
    ];
    pub const ADV_STEP40: [f64; 44] = [
        1.0758899410115335, 1.07915367727527, 1.0160547761763687, 0.0, -1.0496591717807642, -0.8351591717807643, 0.0, 0.0,
        -0.3853138168935297, -0.09632845422338242, -0.15324981353719938, -0.30649962707439854, 1.2517780058614818, 0.987851996892872, 0.0, 0.0,
        -1.0331591717807642, -0.9066591717807643, -0.8681591717807644, 0.0, -0.06142196531791912, 0.0, 0.0, 0.0,
        1.3440372331812473, 0.8888235388038758, 1.1631576195213644, 0.9400727626741758, 0.3377491350197857, 0.14410629760844193, -0.3332458132195219, 0.0,
        1.5501591717807643, 0.0, 0.0, 0.0, -0.34099999999999997, 0.4730000000000002, 0.0, 0.0,
        0.1639354838709677, 0.059612903225806445, 0.029806451612903198, -0.05322580645161289,
    ];
    pub const ADV_STEP100: [f64; 44] = [
        1.41698145981025, 1.4175748664036565, 1.406102338931129, 0.0, -1.412212229041019, -1.3732122290410191, 0.0, 0.0,
        -0.07005705761700538, -0.017514264404251346, -0.027863602461308968, -0.0557272049226179, 1.448961107964786, 1.400974560879584, 0.0, 0.0,
        -1.4092122290410192, -1.386212229041019, -1.3792122290410191, 0.0, -0.011167630057803473, 0.0, 0.0, 0.0,
        1.465735512932016, 1.3829693866815849, 1.4328483104484009, 1.3922874273852757, 0.06140893363996101, 0.026201145019716706, -0.06059014785809487, 0.0,
        1.503212229041019, 0.0, 0.0, 0.0, -0.06199999999999997, 0.08600000000000001, 0.0, 0.0,
        0.029806451612903212, 0.01083870967741935, 0.005419354838709671, -0.009677419354838705,
    ];
    pub const SURROGATE: [f64; 44] = [
        -1.0031531318981288, -0.8747449697801293, -0.7018239157130711, 0.0, 1.0186370550028687, 0.869242664155011, 0.0, 0.0,
        0.3082510535148238, 0.08716158980288048, 0.12259985082975951, 0.24519970165951885, -1.6022758475026968, -1.1249938925855087, 0.0, 0.0,
        1.3946190076561935, 0.8041345485894118, 0.9311078143657544, 0.0, 0.054476396303794916, 0.0, 0.0, 0.0,
        -1.0158014887495246, -1.137694129668961, -0.7796878690642657, -1.148207465201489, -0.4323188928253257, -0.1078294923590312, 0.3138390878555867, 0.0,
        -1.0495459238205482, 0.0, 0.0, 0.0, 0.40825112082453724, -0.3795913914362526, 0.0, 0.0,
        -0.1264027148081846, -0.052871902163009896, -0.038152258064516095, 0.05651710650967236,
    ];
    pub const K3: [f64; 44] = [
        0.00044553354850807025, 0.0025081812542164794, 0.25648087930495156, 0.0, 0.05712776433595712, 0.00044553354850807025, 0.0, 0.0,
        0.16893230861855058, 0.01183424272828315, 0.0649475905635939, 0.16893230861855058, 0.0770468198150569, 0.00749685157937563, 0.0, 0.0,
        0.038263567578565194, 0.08698079388264279, 0.022518797962478576, 0.0, 0.028600009929477865, 0.0, 0.0, 0.0,
        0.017217363121810214, 0.07365025013631943, 0.026076730587380803, 0.09500226828270097, 0.0770468198150569, 0.1760068621848585, 0.0369300866657718, 0.0,
        0.11831218549016875, 0.0, 0.0, 0.0, 0.04081822068171781, 0.1487212707001282, 0.0, 0.0,
        0.0649475905635939, 0.0023938199059481136, 0.15794443759467458, 0.00583413529652832,
    ];
    pub const GKD: [f64; 44] = [
        0.2649112174197472, 0.9153139976506027, 0.2807052553556181, 0.0, 0.5652177968924242, 1.0930978429006453, 0.0, 0.0,
        0.7585483776322106, 1.071806884598503, 0.8526379576157601, 1.4859752175249117, 0.28700513958946033, 0.3827699217368947, 0.0, 0.0,
        0.38901012468612806, 0.49108274084788006, 0.17256361669323111, 0.0, 0.8168672411383673, 0.0, 0.0, 0.0,
        0.16864849118091146, 0.41623477928516184, 0.19440034560208386, 0.35524068256469377, 0.11227982598600889, 0.5340208761296092, 0.37339192589751624, 0.0,
        0.7584260279424841, 0.0, 0.0, 0.0, 0.5944944703611132, 0.3478083664638564, 0.0, 0.0,
        0.3435085712662758, 0.8124172675974163, 0.2046263131210395, 0.1970422574081881,
    ];
    pub const GRAD_TOKEN_MEAN: [f64; 44] = [
        -0.03459148730683203, -0.030163619647590664, -0.024200824679761073, 0.0, 0.035125415689754094, 0.029973884970862445, 0.0, 0.0,
        0.0, 0.0030055720621682924, 0.0, 0.0, 0.0, -0.038792892847776164, 0.0, 0.0,
        0.04809031060883426, 0.027728777537565925, 0.03210716601261222, 0.0, 0.0018784964242687901, 0.0, 0.0, 0.0,
        -0.035027637543087055, 0.0, -0.026885788588422953, -0.039593360869016866, 0.0, -0.0037182583572079727, 0.01082203751226161, 0.0,
        -0.0361912387524327, 0.0, 0.0, 0.0, 0.014077624856018526, -0.013089358325388021, 0.0, 0.0,
        -0.004358714303730504, -0.0018231690401037896, 0.0, 0.00194886574171284,
    ];
    pub const AGG: [f64; 4] = [
        -0.17107097546795966, -0.19656940478862228, -0.4510052989609847, -0.07516754982683076,
    ];
    pub const SCALARS: [f64; 6] = [
        0.2413793103448276, 0.06172413793103449, 0.07011942152742673, 1.029655172413793, 0.5255190873478877, 0.6797280850385292,
    ];
}
use numpy::*;

fn f32s(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn mask() -> Vec<f32> {
    let mut m = vec![0.0; S * T];
    for (r, &(_, _, n)) in ROWS.iter().enumerate() {
        m[r * T..r * T + n].fill(1.0);
    }
    m
}

fn step_batch() -> StepBatch {
    StepBatch {
        n_rows: S,
        n_cols: T,
        lp_old: f32s(&LP_OLD),
        lp_teacher: f32s(&LP_T),
        mask: mask(),
        turn_idx: ROWS.iter().map(|r| r.1).collect(),
        traj_id: ROWS.iter().map(|r| r.0).collect(),
        group_id: ROWS.iter().map(|r| GROUP_OF_TRAJ[r.0]).collect(),
        returns: RETURNS.to_vec(),
    }
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(g) - w).abs() <= TOL * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

#[track_caller]
fn assert_scalar(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= TOL * (1.0 + want.abs()), "{what}: got {got}, want {want}");
}

fn hybrid(weighting: Weighting, rescale: bool, norm_by_std: bool) -> HybridAdvantage {
    let c = LossConfig::atod();
    HybridAdvantage { kappa: c.kappa, rho: c.rho, weighting, rescale, norm_by_std }
}

fn advantages(weighting: Weighting, rescale: bool, step: u64) -> atod_losses::Advantages {
    atod_losses::Advantages::compute(&hybrid(weighting, rescale, true), &step_batch(), StepInfo::new(step, 150))
        .unwrap()
}

#[test]
fn grpo_std_normalised_and_dr_grpo() {
    let groups: Vec<usize> = GROUP_OF_TRAJ.to_vec();
    assert_close("grpo", &atod_losses::grpo::grpo_advantages(&RETURNS, &groups, true), &GRPO);
    assert_close("dr.grpo", &atod_losses::grpo::grpo_advantages(&RETURNS, &groups, false), &DRGRPO);
    let r6 = [1.0, -0.5, 0.3, 0.9, 0.9, 0.4];
    let g6 = [0, 0, 0, 1, 1, 2];
    assert_close("grpo, six returns", &atod_losses::grpo::grpo_advantages(&r6, &g6, true), &GRPO6);
    assert_close("dr.grpo, six returns", &atod_losses::grpo::grpo_advantages(&r6, &g6, false), &DRGRPO6);
    // Through the step batch: the same numbers, and Dr.GRPO through the config flag.
    assert_close("grpo via compute", &advantages(Weighting::Tdur, false, 0).grpo, &GRPO);
    let dr =
        atod_losses::Advantages::compute(&hybrid(Weighting::Tdur, false, false), &step_batch(), StepInfo::new(0, 150))
            .unwrap();
    assert_close("dr.grpo via compute", &dr.grpo, &DRGRPO);
}

#[test]
fn opd_advantage() {
    let b = step_batch();
    assert_close("opd", &atod_losses::opd::opd_advantages(&b.lp_old, &b.lp_teacher, &b.mask), &OPD);
}

#[test]
fn tdur_weights_with_a_guarded_trajectory() {
    let a = advantages(Weighting::Tdur, false, 0);
    assert_close("tdur", &a.weights.per_token, &W_TDUR);
    assert_eq!(a.weights.guarded, vec![false, true, false]);
    assert_scalar("tdur/frac_guarded", a.metrics["tdur/frac_guarded"], 1.0 / 3.0);
    assert_scalar("tdur/mean_w", a.metrics["tdur/mean_w"], SCALARS[5]);
    assert_close("tdur rescaled", &advantages(Weighting::Tdur, true, 0).weights.per_token, &W_TDUR_RESCALED);
}

#[test]
fn token_weights_plain_and_rescaled() {
    assert_close("token", &advantages(Weighting::Token, false, 0).weights.per_token, &W_TOKEN);
    assert_close("token rescaled", &advantages(Weighting::Token, true, 0).weights.per_token, &W_TOKEN_RESCALED);
}

#[test]
fn hybrid_at_three_steps() {
    for (step, want) in [(0, &ADV_STEP0), (40, &ADV_STEP40), (100, &ADV_STEP100)] {
        let a = advantages(Weighting::Tdur, false, step);
        assert_close(&format!("hybrid at step {step}"), &a.per_token, want);
    }
    let a = advantages(Weighting::Tdur, false, 40);
    assert_scalar("sched/kappa", a.metrics["sched/kappa"], 0.55);
    assert_scalar("sched/rho", a.metrics["sched/rho"], 1.5);
}

fn tensor(x: &[f64]) -> Tensor<CpuAutodiff, 2> {
    host_tensor(f32s(x), S, T, &Default::default())
}

fn vocab(x: &[f64]) -> Tensor<CpuAutodiff, 3> {
    log_softmax(Tensor::from_data(TensorData::new(f32s(x), [S, T, V]), &Default::default()), 2)
}

fn train_batch(lp: Tensor<CpuAutodiff, 2>) -> TrainBatch<CpuAutodiff> {
    TrainBatch::new(lp, tensor(&LP_OLD), tensor(&ENT), host_tensor(mask(), S, T, &Default::default()))
        .with_ref(tensor(&LP_REF))
        .with_vocab(vocab(&LOGIT_S), vocab(&LOGIT_T))
}

fn loss_with(aggregation: Aggregation, components: &[(&str, f64)]) -> Loss {
    let mut c =
        LossConfig { aggregation, clip_low: 0.2, clip_high: 0.28, max_response_len: Some(6), ..LossConfig::atod() };
    c.components = components.iter().map(|&(n, v)| (n.to_owned(), Schedule::constant(v))).collect();
    Loss::new(c).unwrap()
}

#[test]
fn surrogate_in_every_aggregation_mode_with_clipped_tokens() {
    let adv = tensor(&ADV_STEP40);
    let s = atod_losses::surrogate::clipped_surrogate(
        tensor(&LP),
        tensor(&LP_OLD),
        adv.clone(),
        atod_losses::Clip { low: 0.2, high: 0.28 },
        &atod_losses::Mask::new(&host_tensor(mask(), S, T, &Default::default())),
    );
    let per_token: Vec<f32> = s.per_token.into_data().to_vec().unwrap();
    assert_close("surrogate per token", &per_token, &SURROGATE);
    assert_scalar("actor/clipfrac", s.clipfrac, SCALARS[0]);
    assert!(s.clipfrac > 0.0, "the batch must clip some tokens");
    assert_scalar("actor/approx_kl", s.approx_kl, SCALARS[1]);
    for (i, (name, mode)) in Aggregation::ALL.into_iter().enumerate() {
        let out =
            loss_with(mode, &[]).objective(&train_batch(tensor(&LP)), adv.clone(), StepInfo::new(40, 150)).unwrap();
        assert_scalar(&format!("loss/pg, {name}"), out.metrics["loss/pg"], AGG[i]);
        assert_scalar(&format!("loss/total, {name}"), out.metrics["loss/total"], AGG[i]);
    }
}

#[test]
fn k3_kl_entropy_and_gkd() {
    let m = atod_losses::Mask::<CpuBackend>::new(&host_tensor(mask(), S, T, &Default::default()));
    let t = |x: &[f64]| host_tensor::<CpuBackend>(f32s(x), S, T, &Default::default());
    let k3: Vec<f32> = atod_losses::kl::k3_kl(t(&LP), t(&LP_REF), &m).into_data().to_vec().unwrap();
    assert_close("k3", &k3, &K3);
    let v = |x: &[f64]| {
        log_softmax(Tensor::<CpuBackend, 3>::from_data(TensorData::new(f32s(x), [S, T, V]), &Default::default()), 2)
    };
    let vocab = atod_losses::VocabLogProbs { student: v(&LOGIT_S), teacher: v(&LOGIT_T) };
    let gkd: Vec<f32> = atod_losses::gkd::reverse_kl(&vocab, &m).into_data().to_vec().unwrap();
    assert_close("gkd", &gkd, &GKD);

    // Composed: total = pg + 0.1 kl - 0.01 entropy + 0.5 gkd, each term token-mean.
    let loss = loss_with(Aggregation::TokenMean, &[("kl", 0.1), ("entropy", 0.01), ("gkd", 0.5)]);
    let out = loss.objective(&train_batch(tensor(&LP)), tensor(&ADV_STEP40), StepInfo::new(40, 150)).unwrap();
    assert_scalar("loss/kl", out.metrics["loss/kl"], SCALARS[2]);
    assert_scalar("loss/entropy", out.metrics["loss/entropy"], SCALARS[3]);
    assert_scalar("actor/entropy", out.metrics["actor/entropy"], SCALARS[3]);
    assert_scalar("loss/gkd", out.metrics["loss/gkd"], SCALARS[4]);
    let total = AGG[0] + 0.1 * SCALARS[2] - 0.01 * SCALARS[3] + 0.5 * SCALARS[4];
    assert_scalar("loss/total", out.metrics["loss/total"], total);
    assert!(out.is_finite());
}

/// Gradient check: d loss / d lp of the token-mean surrogate is `-A r / N` where the unclipped branch is the
/// loss and 0 where the clipped one is (and at padding), computed analytically by the script.
#[test]
fn surrogate_gradient_matches_the_analytic_one() {
    let lp = tensor(&LP).require_grad();
    let out = loss_with(Aggregation::TokenMean, &[])
        .objective(&train_batch(lp.clone()), tensor(&ADV_STEP40), StepInfo::new(40, 150))
        .unwrap();
    let grads = out.loss.backward();
    let grad: Vec<f32> = lp.grad(&grads).unwrap().into_data().to_vec().unwrap();
    assert_close("d loss / d lp", &grad, &GRAD_TOKEN_MEAN);
}
