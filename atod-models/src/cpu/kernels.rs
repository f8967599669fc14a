//! The fused CPU kernels of the transformer, on row-major f32 slices: matrix products (the `gemm` crate flex
//! itself uses), RMSNorm, rotary positions, SwiGLU and the head's per-token statistics, each with its backward.
//!
//! Every kernel is deterministic whatever the number of threads: rows are split among threads, and each output
//! element is computed by one thread in a fixed order; reductions over rows (the gradients of norm weights and
//! biases) run sequentially. In the reproducible mode ([`super::isa`]) the matrix products run through
//! [`super::fixed`] instead of `gemm`, so that they are also the same on every CPU.

use std::ops::Range;

use gemm::Parallelism;
use rayon::prelude::*;

use super::attention::{dot, exp_sub, fast_exp, max_of, sum_of, Heads};

/// Work below this many multiply-adds runs on the calling thread: splitting it costs more than it saves.
const PARALLEL_FLOPS: usize = 1 << 16;
/// Rows per parallel task of the row-wise kernels.
const ROW_CHUNK: usize = 32;

/// `c[m, n] (+)= op(a) · op(b)`, where `op(a)` is `[m, k]`, stored row-major as `[m, k]`, or as `[k, m]` when
/// `a_t`; likewise `op(b)` is `[k, n]`, stored as `[k, n]`, or as `[n, k]` when `b_t`. With `accumulate` the
/// product is added to `c`, otherwise `c` is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    matmul_on(m, n, k, a, a_t, b, b_t, c, accumulate, true);
}

/// [`matmul`], its tiles spread over rayon's threads only with `parallel` (and enough work).
#[allow(clippy::too_many_arguments)]
fn matmul_on(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    c: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: slices too short for {m}x{k}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    if super::isa::reproducible() {
        return super::fixed::matmul(m, n, k, a, a_t, b, b_t, c, accumulate, parallel);
    }
    let (a_cs, a_rs) = if a_t { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if b_t { (k as isize, 1) } else { (1, n as isize) };
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 && m * n * k >= PARALLEL_FLOPS {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above keep every index of the three strided views inside its slice, and `c` is
    // borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The gradient of a weight, `c[m, n] += aᵀ · b` for `a` `[k, m]` and `b` `[k, n]` with a long reduction `k` (the
/// tokens): the reduction is cut into a fixed number of parts computed side by side and added in order, since a
/// weight's gradient has too few output tiles to keep every thread busy. The parts do not depend on the thread
/// count, so neither does the result.
pub fn matmul_weight_grad(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    const PARTS: usize = 2;
    if super::isa::reproducible() {
        // One chain per element over all the tokens; the threads share the output tiles (`fixed`).
        return super::fixed::matmul(m, n, k, a, true, b, false, c, true, true);
    }
    if k < 512 || m * n * k < PARALLEL_FLOPS * 4 {
        return matmul(m, n, k, a, true, b, false, c, true);
    }
    let size = k.div_ceil(PARTS);
    let partial = |part: usize| {
        let (k0, k1) = (part * size, ((part + 1) * size).min(k));
        let mut out = vec![0f32; m * n];
        matmul_on(m, n, k1 - k0, &a[k0 * m..k1 * m], true, &b[k0 * n..k1 * n], false, &mut out, false, false);
        out
    };
    let (first, second) = rayon::join(|| partial(0), || partial(1));
    for part in [first, second] {
        c[..m * n].iter_mut().zip(&part).for_each(|(c, p)| *c += p);
    }
}

/// Adds `bias` `[n]` to every row of `x` `[m, n]`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
}

/// Adds the column sums of `dy` `[m, n]` to `db` `[n]` (the gradient of a bias), row by row in order.
pub fn bias_grad(dy: &[f32], db: &mut [f32]) {
    for row in dy.chunks_exact(db.len()) {
        db.iter_mut().zip(row).for_each(|(g, d)| *g += d);
    }
}

/// RMSNorm of each row of `x` `[rows, d]`: `y = x / rms · gamma` with `rms = sqrt(mean(x²) + eps)`, as burn's
/// `RmsNorm` computes it; `rms` `[rows]` is kept for the backward.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, y: &mut [f32], rms: &mut [f32]) {
    let d = gamma.len();
    let body = |(x, y, rms): (&[f32], &mut [f32], &mut [f32])| {
        for ((x, y), rms) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(rms.iter_mut()) {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
            *rms = (ms + eps).sqrt();
            for ((y, x), g) in y.iter_mut().zip(x).zip(gamma) {
                *y = x / *rms * g;
            }
        }
    };
    let rows = rms.len();
    if rows * d < PARALLEL_FLOPS {
        body((x, y, rms));
    } else {
        x.par_chunks(ROW_CHUNK * d)
            .zip(y.par_chunks_mut(ROW_CHUNK * d))
            .zip(rms.par_chunks_mut(ROW_CHUNK))
            .for_each(|((x, y), rms)| body((x, y, rms)));
    }
}

/// [`rms_norm`] in place on columns `columns` of rows of `stride` floats, in chunks of `gamma.len()` (Qwen3's
/// per-head query or key norm on the query or key part of a fused projection's output, during decoding).
pub fn rms_norm_columns(x: &mut [f32], stride: usize, columns: Range<usize>, gamma: &[f32], eps: f32) {
    let d = gamma.len();
    for row in x.chunks_exact_mut(stride) {
        for head in row[columns.clone()].chunks_exact_mut(d) {
            let ms = head.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let rms = (ms + eps).sqrt();
            for (y, g) in head.iter_mut().zip(gamma) {
                *y = *y / rms * g;
            }
        }
    }
}

/// The backward of [`rms_norm`]: adds the input's gradient to `dx` and gamma's to `dgamma`.
///
/// With `n = x / rms` and `g = dy · gamma`: `dx = (g - n · mean(g · n)) / rms` and `dgamma = Σ_rows dy · n`.
pub fn rms_norm_backward(x: &[f32], gamma: &[f32], rms: &[f32], dy: &[f32], dx: &mut [f32], dgamma: &mut [f32]) {
    let d = gamma.len();
    let body = |(x, rms, dy, dx): (&[f32], &[f32], &[f32], &mut [f32])| {
        for (((x, &r), dy), dx) in x.chunks_exact(d).zip(rms).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let dot = x.iter().zip(dy).zip(gamma).map(|((x, dy), g)| dy * g * (x / r)).sum::<f32>() / d as f32;
            for (((dx, x), dy), g) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
                *dx += (dy * g - (x / r) * dot) / r;
            }
        }
    };
    if rms.len() * d < PARALLEL_FLOPS {
        body((x, rms, dy, dx));
    } else {
        x.par_chunks(ROW_CHUNK * d)
            .zip(rms.par_chunks(ROW_CHUNK))
            .zip(dy.par_chunks(ROW_CHUNK * d))
            .zip(dx.par_chunks_mut(ROW_CHUNK * d))
            .for_each(|(((x, rms), dy), dx)| body((x, rms, dy, dx)));
    }
    for ((x, &r), dy) in x.chunks_exact(d).zip(rms).zip(dy.chunks_exact(d)) {
        for ((g, x), dy) in dgamma.iter_mut().zip(x).zip(dy) {
            *g += dy * (x / r);
        }
    }
}

/// Rotary tables: `cos[p * half + i]` and `sin[..]` of the angle `p · theta^(-2i / head_dim)`, computed in f32
/// as Hugging Face's `modeling_qwen2.py` computes it, for positions `0..positions`.
#[derive(Debug, Clone, Default)]
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table of `head_dim` for positions below `positions`.
    pub fn new(theta: f64, head_dim: usize, positions: usize) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for f in &inv_freq {
                let angle = (p as f32) * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self { half, cos, sin }
    }

    /// Number of positions covered.
    pub fn positions(&self) -> usize {
        self.cos.len().checked_div(self.half).unwrap_or(0)
    }

    /// Rotates each row of `x` `[rows, heads * head_dim]` in place by its position (`positions[row]`), in the
    /// "rotate half" layout: per head, `[x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]`. `inverse` rotates by
    /// the opposite angle, which is the backward of the rotation.
    pub fn apply(&self, x: &mut [f32], positions: &[u32], inverse: bool) {
        if positions.is_empty() {
            return;
        }
        let width = x.len() / positions.len();
        self.apply_columns(x, width, 0..width, positions, inverse);
    }

    /// [`RopeTable::apply`] on columns `columns` of rows of `stride` floats (the query or key part of a fused
    /// projection's output).
    pub fn apply_columns(&self, x: &mut [f32], stride: usize, columns: Range<usize>, positions: &[u32], inverse: bool) {
        let half = self.half;
        if half == 0 || positions.is_empty() {
            return;
        }
        let width = stride;
        let body = |(x, positions): (&mut [f32], &[u32])| {
            for (row, &p) in x.chunks_exact_mut(width).zip(positions) {
                let row = &mut row[columns.clone()];
                let base = p as usize * half;
                let (cos, sin) = (&self.cos[base..base + half], &self.sin[base..base + half]);
                for head in row.chunks_exact_mut(2 * half) {
                    let (x1, x2) = head.split_at_mut(half);
                    for i in 0..half {
                        let (c, s) = (cos[i], if inverse { -sin[i] } else { sin[i] });
                        let (a, b) = (x1[i], x2[i]);
                        x1[i] = a * c - b * s;
                        x2[i] = b * c + a * s;
                    }
                }
            }
        };
        if x.len() < PARALLEL_FLOPS {
            body((x, positions));
        } else {
            x.par_chunks_mut(ROW_CHUNK * width).zip(positions.par_chunks(ROW_CHUNK)).for_each(body);
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// SwiGLU's gate: `m = silu(g) · u`, element-wise.
pub fn swiglu(g: &[f32], u: &[f32], m: &mut [f32]) {
    let body = |(g, u, m): (&[f32], &[f32], &mut [f32])| {
        for ((m, &g), &u) in m.iter_mut().zip(g).zip(u) {
            *m = g * sigmoid(g) * u;
        }
    };
    if m.len() < PARALLEL_FLOPS {
        body((g, u, m));
    } else {
        let chunk = 4096;
        g.par_chunks(chunk).zip(u.par_chunks(chunk)).zip(m.par_chunks_mut(chunk)).for_each(|((g, u), m)| {
            body((g, u, m));
        });
    }
}

/// The backward of [`swiglu`]: `du = dm · silu(g)` and `dg = dm · u · σ(g) · (1 + g · (1 - σ(g)))`, written over
/// `g` and `u` (their values are no longer needed).
pub fn swiglu_backward(g: &mut [f32], u: &mut [f32], dm: &[f32]) {
    let body = |(g, u, dm): (&mut [f32], &mut [f32], &[f32])| {
        for ((g, u), &dm) in g.iter_mut().zip(u.iter_mut()).zip(dm) {
            let s = sigmoid(*g);
            let du = dm * *g * s;
            *g = dm * *u * s * (1.0 + *g * (1.0 - s));
            *u = du;
        }
    };
    if dm.len() < PARALLEL_FLOPS {
        body((g, u, dm));
    } else {
        let chunk = 4096;
        g.par_chunks_mut(chunk).zip(u.par_chunks_mut(chunk)).zip(dm.par_chunks(chunk)).for_each(|((g, u), dm)| {
            body((g, u, dm));
        });
    }
}

/// Per-row statistics of `logits` `[rows, vocab]` scaled by `1 / temperature`: the log-prob of `targets[row]`
/// and the entropy, both in nats (`stats[2 row]`, `stats[2 row + 1]`). The scaled logits replace `logits` (the
/// backward reads them).
pub fn token_stats(logits: &mut [f32], targets: &[u32], temperature: f32, stats: &mut [f32]) {
    let rows = targets.len();
    if rows == 0 {
        return;
    }
    let vocab = logits.len() / rows;
    let body = |(logits, targets, stats): (&mut [f32], &[u32], &mut [f32])| {
        let mut scratch = Vec::with_capacity(vocab);
        for ((row, &t), out) in logits.chunks_exact_mut(vocab).zip(targets).zip(stats.chunks_exact_mut(2)) {
            if temperature != 1.0 {
                row.iter_mut().for_each(|x| *x /= temperature);
            }
            let (lse, entropy) = softmax_stats(row, &mut scratch);
            out[0] = row[t as usize] - lse;
            out[1] = entropy;
        }
    };
    logits
        .par_chunks_mut(ROW_CHUNK * vocab)
        .zip(targets.par_chunks(ROW_CHUNK))
        .zip(stats.par_chunks_mut(2 * ROW_CHUNK))
        .for_each(|((l, t), s)| body((l, t, s)));
}

/// The log-sum-exp of a row, with the vectorisable exponential of the attention kernel (relative error about
/// 1e-7): the behaviour log-prob of a sampled token is `row[token] - log_sum_exp(row)`.
pub fn log_sum_exp(row: &[f32], scratch: &mut Vec<f32>) -> f32 {
    let max = max_of(row);
    scratch.clear();
    scratch.extend_from_slice(row);
    exp_sub(scratch, max);
    max + sum_of(scratch).ln()
}

/// The log-sum-exp of a row and the entropy of its softmax, with the vectorisable exponential.
pub fn softmax_stats(row: &[f32], scratch: &mut Vec<f32>) -> (f32, f32) {
    let max = max_of(row);
    scratch.clear();
    scratch.extend_from_slice(row);
    exp_sub(scratch, max);
    let sum = sum_of(scratch);
    // Σ e (x - max) = Σ e x - max Σ e; H = ln(sum) - Σ e (x - max) / sum.
    let weighted = dot(scratch, row) - max * sum;
    (max + sum.ln(), sum.ln() - weighted / sum)
}

/// The backward of [`token_stats`], written over the (scaled) logits: with `p = softmax(row)`,
/// `dz = g_logp · (onehot(target) - p) - g_H · p · (log p + H)`, divided by the temperature (the gradient of the
/// unscaled logits).
pub fn token_stats_backward(logits: &mut [f32], targets: &[u32], temperature: f32, stats: &[f32], grad: &[f32]) {
    let rows = targets.len();
    if rows == 0 {
        return;
    }
    let vocab = logits.len() / rows;
    let body = |(logits, targets, stats, grad): (&mut [f32], &[u32], &[f32], &[f32])| {
        for (((row, &t), s), g) in
            logits.chunks_exact_mut(vocab).zip(targets).zip(stats.chunks_exact(2)).zip(grad.chunks_exact(2))
        {
            let (lse, entropy) = (row[t as usize] - s[0], s[1]);
            for x in row.iter_mut() {
                let logp = *x - lse;
                let p = fast_exp(logp);
                *x = (-g[0] * p - g[1] * p * (logp + entropy)) / temperature;
            }
            row[t as usize] += g[0] / temperature;
        }
    };
    logits
        .par_chunks_mut(ROW_CHUNK * vocab)
        .zip(targets.par_chunks(ROW_CHUNK))
        .zip(stats.par_chunks(2 * ROW_CHUNK))
        .zip(grad.par_chunks(2 * ROW_CHUNK))
        .for_each(|(((l, t), s), g)| body((l, t, s, g)));
}

/// Attention of one new token per row over that row's cached keys: query row `j` (`q[j * q_stride..]`, the
/// query heads first) attends to key/value rows `starts[j]..starts[j] + lens[j]` of `k` and `v`
/// (`[*, kv_heads * head_dim]`), its own key included; the output is `out` `[rows, heads * head_dim]`. With
/// `parallel`, rows are spread over rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    h: Heads,
    q: &[f32],
    q_stride: usize,
    k: &[f32],
    v: &[f32],
    starts: &[usize],
    lens: &[usize],
    out: &mut [f32],
    parallel: bool,
    scores: &mut Vec<f32>,
) {
    let (hd, qw, kvw) = (h.head_dim, h.heads * h.head_dim, h.kv_heads * h.head_dim);
    let group = h.heads / h.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let body = |j: usize, out: &mut [f32], scores: &mut Vec<f32>| {
        let (start, len) = (starts[j], lens[j]);
        for head in 0..h.heads {
            let g = head / group;
            let qh = &q[j * q_stride + head * hd..j * q_stride + (head + 1) * hd];
            scores.clear();
            scores.extend((start..start + len).map(|t| dot(qh, &k[t * kvw + g * hd..t * kvw + (g + 1) * hd]) * scale));
            let max = max_of(scores);
            exp_sub(scores, max);
            let inv = 1.0 / sum_of(scores);
            let o = &mut out[head * hd..(head + 1) * hd];
            o.fill(0.0);
            for (t, &e) in (start..start + len).zip(scores.iter()) {
                let p = e * inv;
                o.iter_mut().zip(&v[t * kvw + g * hd..t * kvw + (g + 1) * hd]).for_each(|(o, v)| *o += p * v);
            }
        }
    };
    let work: usize = lens.iter().sum::<usize>() * qw;
    if parallel && lens.len() > 1 && work >= PARALLEL_FLOPS {
        out.par_chunks_mut(qw).enumerate().for_each_init(Vec::new, |scores, (j, out)| body(j, out, scores));
    } else {
        out.chunks_mut(qw).enumerate().for_each(|(j, out)| body(j, out, scores));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atod_core::rng::SplitMix64;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| (rng.unit() as f32) * 2.0 - 1.0).collect()
    }

    #[test]
    fn matmul_matches_loops_in_every_layout_and_accumulates() {
        let (m, n, k) = (37, 29, 70);
        let a = random(m * k, 1);
        let b = random(k * n, 2);
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>() as f32;
            }
        }
        let transpose = |x: &[f32], r: usize, c: usize| {
            let mut t = vec![0f32; r * c];
            for i in 0..r {
                for j in 0..c {
                    t[j * r + i] = x[i * c + j];
                }
            }
            t
        };
        let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
        for (a, a_t) in [(&a, false), (&at, true)] {
            for (b, b_t) in [(&b, false), (&bt, true)] {
                let mut c = vec![f32::NAN; m * n];
                matmul(m, n, k, a, a_t, b, b_t, &mut c, false);
                let diff = c.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(diff < 1e-4, "a_t {a_t} b_t {b_t}: {diff}");
                matmul(m, n, k, a, a_t, b, b_t, &mut c, true);
                let diff = c.iter().zip(&want).map(|(x, y)| (x - 2.0 * y).abs()).fold(0.0, f32::max);
                assert!(diff < 2e-4, "accumulate, a_t {a_t} b_t {b_t}: {diff}");
            }
        }
    }

    #[test]
    fn rope_inverse_undoes_the_rotation() {
        let table = RopeTable::new(10_000.0, 8, 50);
        let x = random(3 * 16, 3);
        let mut y = x.clone();
        table.apply(&mut y, &[0, 7, 49], false);
        assert_eq!(&y[..16], &x[..16], "position 0 is the identity");
        assert_ne!(y, x);
        table.apply(&mut y, &[0, 7, 49], true);
        let diff = y.iter().zip(&x).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn lse_and_entropy_match_hand_values() {
        // p = [1/6, 2/6, 3/6] from logits [0, ln 2, ln 3] (+5, which changes nothing).
        let row = [5.0f32, 5.0 + 2f32.ln(), 5.0 + 3f32.ln()];
        let p = [1.0f64 / 6.0, 2.0 / 6.0, 3.0 / 6.0];
        let (lse, h) = softmax_stats(&row, &mut Vec::new());
        assert!((lse as f64 - (5.0 + 6f64.ln())).abs() < 1e-5);
        assert!((h as f64 + p.iter().map(|p| p * p.ln()).sum::<f64>()).abs() < 1e-6);
        assert!((log_sum_exp(&row, &mut Vec::new()) as f64 - (5.0 + 6f64.ln())).abs() < 1e-5);
    }
}
