//! The transformer of `model.rs` on the host, over packed rows: forward with the activations the backward needs,
//! the hand-written backward, and KV-cached decoding.
//!
//! Rows of different lengths are packed one after another on a single token axis, without padding; every
//! matrix product runs over all packed tokens at once, and attention runs per row ([`super::attention`]). The
//! parameters are one flat f32 buffer laid out by a [`ModelIx`] (the order of `super::flatten`), and so are their
//! gradients.
//!
//! Qwen3's per-head query and key norms are RMSNorms over rows of `head_dim` (a `[tokens, heads * head_dim]`
//! projection read as `[tokens * heads, head_dim]`), between the projections and the rotary positions, so they
//! reuse [`rms_norm`] and [`rms_norm_backward`]; the backward runs them after undoing the rotation.

use std::ops::Range;

use super::attention::{self, Heads, Seg};
use super::kernels::{
    add_bias, bias_grad, decode_attention, matmul, matmul_weight_grad, rms_norm, rms_norm_backward, rms_norm_columns,
    swiglu, swiglu_backward, token_stats, token_stats_backward, RopeTable,
};
use super::small::matmul_rows;

/// Where one linear layer's weight `[d_in, d_out]` (burn's layout: `y = x W + b`) and bias sit in the flat
/// parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Lin {
    /// The weight's range.
    pub w: Range<usize>,
    /// The bias's range, if the layer has one.
    pub b: Option<Range<usize>>,
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
}

impl Lin {
    /// `y = x W + b` for `rows` rows; with `accumulate`, `y += x W + b` (a residual connection).
    fn forward(&self, p: &[f32], x: &[f32], rows: usize, y: &mut [f32], accumulate: bool) {
        matmul(rows, self.d_out, self.d_in, x, false, &p[self.w.clone()], false, y, accumulate);
        if let Some(b) = &self.b {
            add_bias(&mut y[..rows * self.d_out], &p[b.clone()]);
        }
    }

    /// From `dy`: `dx (+)= dy Wᵀ` and the parameters' gradients `dW += xᵀ dy`, `db += Σ dy`.
    #[allow(clippy::too_many_arguments)]
    fn backward(&self, p: &[f32], x: &[f32], dy: &[f32], rows: usize, dx: &mut [f32], dx_acc: bool, g: &mut [f32]) {
        matmul(rows, self.d_in, self.d_out, dy, false, &p[self.w.clone()], true, dx, dx_acc);
        matmul_weight_grad(self.d_in, self.d_out, rows, x, dy, &mut g[self.w.clone()]);
        if let Some(b) = &self.b {
            bias_grad(&dy[..rows * self.d_out], &mut g[b.clone()]);
        }
    }
}

/// One decoder block's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerIx {
    /// Attention projections.
    pub q: Lin,
    /// Key projection.
    pub k: Lin,
    /// Value projection.
    pub v: Lin,
    /// Output projection.
    pub o: Lin,
    /// SwiGLU gate.
    pub gate: Lin,
    /// SwiGLU up projection.
    pub up: Lin,
    /// SwiGLU down projection.
    pub down: Lin,
    /// The attention's input norm and its epsilon.
    pub ln1: (Range<usize>, f32),
    /// The MLP's input norm and its epsilon.
    pub ln2: (Range<usize>, f32),
    /// Qwen3's per-head query norm (`[head_dim]`) and its epsilon.
    pub q_norm: Option<(Range<usize>, f32)>,
    /// Qwen3's per-head key norm (`[head_dim]`) and its epsilon.
    pub k_norm: Option<(Range<usize>, f32)>,
}

/// The layout of the flat parameters and the model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIx {
    /// Vocabulary size.
    pub vocab: usize,
    /// Width of the residual stream.
    pub d: usize,
    /// The embedding `[vocab, d]`.
    pub embed: Range<usize>,
    /// The blocks.
    pub layers: Vec<LayerIx>,
    /// The final norm and its epsilon.
    pub norm: (Range<usize>, f32),
    /// The untied head, or `None` when the head is the embedding.
    pub head: Option<Lin>,
    /// Attention heads.
    pub heads: Heads,
    /// Rotary base.
    pub theta: f64,
    /// Number of parameters.
    pub len: usize,
}

/// Rows that start with at least this many equal tokens compute their common prefix once.
pub const MIN_SHARED_PREFIX: usize = 16;

/// Rows packed on one token axis, without padding, a prefix that several rows share stored once.
///
/// Rows are grouped by their first [`MIN_SHARED_PREFIX`] tokens; a group of two or more rows packs the longest
/// prefix all its rows share once (positions `0..P`), then each row's remaining tokens (positions `P..`). Those
/// tokens attend to the shared prefix through a virtual key array (`keys`) that repeats the prefix's keys before
/// each row's own: attention is per row as if the rows were packed apart, while projections, norms and the MLP
/// run once on the prefix. The prefix's hidden states do not depend on what follows them (attention is causal),
/// so the result is the same up to float rounding.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    /// Token ids, packed.
    pub ids: Vec<u32>,
    /// Rotary position of each packed token.
    pub positions: Vec<u32>,
    /// Attention segments: queries are packed tokens, keys rows of the virtual key array.
    pub segs: Vec<Seg>,
    /// The packed token behind each row of the virtual key array; `None` when it is the packed tokens
    /// themselves (nothing shared).
    pub keys: Option<Vec<usize>>,
    /// Each input row: the packed range of its shared prefix (empty when it shares none) and of its own tokens.
    pub rows: Vec<(Range<usize>, Range<usize>)>,
    /// Each input row's attention segment (its own tokens, whose keys are the whole row).
    pub row_segs: Vec<usize>,
}

impl Packed {
    /// Packs whole rows, each starting at position 0, sharing common prefixes.
    pub fn rows(rows: &[&[u32]]) -> Self {
        // Groups in order of first appearance: rows with equal first MIN_SHARED_PREFIX tokens.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_head: std::collections::HashMap<&[u32], usize> = std::collections::HashMap::new();
        for (r, row) in rows.iter().enumerate() {
            if row.len() > MIN_SHARED_PREFIX {
                if let Some(&g) = by_head.get(&row[..MIN_SHARED_PREFIX]) {
                    groups[g].push(r);
                    continue;
                }
                by_head.insert(&row[..MIN_SHARED_PREFIX], groups.len());
            }
            groups.push(vec![r]);
        }
        let mut packed =
            Self { rows: vec![(0..0, 0..0); rows.len()], row_segs: vec![0; rows.len()], ..Self::default() };
        let mut keys: Vec<usize> = Vec::new();
        let mut shared = false;
        for group in &groups {
            let first = rows[group[0]];
            let prefix = if group.len() < 2 {
                0
            } else {
                group.iter().map(|&r| first.iter().zip(rows[r]).take_while(|(a, b)| a == b).count()).min().unwrap_or(0)
            };
            let p_start = packed.ids.len();
            if prefix > 0 {
                shared = true;
                packed.push(&first[..prefix], 0, &mut keys, None);
            }
            for &r in group {
                let own = packed.ids.len();
                packed.push(&rows[r][prefix..], prefix, &mut keys, Some(p_start..p_start + prefix));
                packed.rows[r] = (p_start..p_start + prefix, own..packed.ids.len());
                packed.row_segs[r] = packed.segs.len() - 1;
            }
        }
        packed.keys = shared.then_some(keys);
        packed
    }

    /// Appends `tokens` at positions `from..` as one attention segment whose keys are `prefix` (packed) and
    /// then the tokens themselves.
    fn push(&mut self, tokens: &[u32], from: usize, keys: &mut Vec<usize>, prefix: Option<Range<usize>>) {
        let start = self.ids.len();
        self.ids.extend_from_slice(tokens);
        self.positions.extend((from..from + tokens.len()).map(|p| p as u32));
        let k_start = keys.len();
        keys.extend(prefix.unwrap_or(0..0));
        keys.extend(start..start + tokens.len());
        self.segs.push(Seg { q_start: start, q_len: tokens.len(), k_start, k_len: keys.len() - k_start });
    }

    /// The packed index of token `t` of input row `row`.
    pub fn index(&self, row: usize, t: usize) -> usize {
        let (prefix, own) = &self.rows[row];
        if t < prefix.len() {
            prefix.start + t
        } else {
            own.start + t - prefix.len()
        }
    }

    /// Number of packed tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The rows of `x` (`width` columns) behind the virtual key array, or `x` itself when nothing is shared.
    fn gather<'a>(&self, x: &'a [f32], width: usize, buffer: &'a mut Vec<f32>) -> &'a [f32] {
        let Some(keys) = &self.keys else { return x };
        buffer.clear();
        for &k in keys {
            buffer.extend_from_slice(&x[k * width..(k + 1) * width]);
        }
        buffer
    }

    /// The backward of [`Packed::gather`]: adds each virtual row's gradient to its packed token's.
    fn scatter_add(&self, virtual_grad: &[f32], width: usize, grad: &mut [f32]) {
        let Some(keys) = &self.keys else {
            grad.iter_mut().zip(virtual_grad).for_each(|(g, v)| *g += v);
            return;
        };
        for (i, &k) in keys.iter().enumerate() {
            let src = &virtual_grad[i * width..(i + 1) * width];
            grad[k * width..(k + 1) * width].iter_mut().zip(src).for_each(|(g, v)| *g += v);
        }
    }

    /// Number of rows of the virtual key array.
    fn key_rows(&self) -> usize {
        self.keys.as_ref().map_or(self.ids.len(), Vec::len)
    }
}

/// The head's targets: token `from[m]` of the packed rows predicts `ids[m]`.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Packed index of the predicting token.
    pub from: Vec<usize>,
    /// The predicted id.
    pub ids: Vec<u32>,
}

/// One block's activations, kept for the backward (or scratch space during inference).
#[derive(Debug, Clone, Default)]
pub struct Acts {
    x: Vec<f32>,
    r1: Vec<f32>,
    h1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Queries and keys before Qwen3's head norms, and each head's RMS (`[tokens * heads]`).
    q_pre: Vec<f32>,
    k_pre: Vec<f32>,
    q_rms: Vec<f32>,
    k_rms: Vec<f32>,
    a: Vec<f32>,
    lse: Vec<f32>,
    xm: Vec<f32>,
    r2: Vec<f32>,
    h2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    m: Vec<f32>,
}

/// Everything the backward needs from a forward.
#[derive(Clone, Default)]
pub struct Tape {
    acts: Vec<Acts>,
    xf: Vec<f32>,
    rf: Vec<f32>,
    hs: Vec<f32>,
    logits: Vec<f32>,
    stats: Vec<f32>,
    rope: RopeTable,
    temperature: f32,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape").field("layers", &self.acts.len()).field("targets", &(self.stats.len() / 2)).finish()
    }
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// Qwen3's head norm of `x` (`[tokens, heads * gamma.len()]`) in place: the input moves to `pre` and each head's
/// RMS goes to `rms`, as the backward needs them.
fn head_norm(norm: &(Range<usize>, f32), p: &[f32], x: &mut Vec<f32>, pre: &mut Vec<f32>, rms: &mut Vec<f32>) {
    let gamma = &p[norm.0.clone()];
    std::mem::swap(x, pre);
    resize(x, pre.len());
    resize(rms, pre.len() / gamma.len());
    rms_norm(pre, gamma, norm.1, x, rms);
}

/// The backward of [`head_norm`]: the gradient of its input from `dy`'s, gamma's gradient added into `g`.
fn head_norm_backward(
    norm: &(Range<usize>, f32),
    p: &[f32],
    pre: &[f32],
    rms: &[f32],
    dy: &[f32],
    g: &mut [f32],
) -> Vec<f32> {
    let mut dx = vec![0f32; dy.len()];
    rms_norm_backward(pre, &p[norm.0.clone()], rms, dy, &mut dx, &mut g[norm.0.clone()]);
    dx
}

impl ModelIx {
    fn q_width(&self) -> usize {
        self.heads.heads * self.heads.head_dim
    }

    fn kv_width(&self) -> usize {
        self.heads.kv_heads * self.heads.head_dim
    }

    /// A rotary table long enough for `positions`.
    pub fn rope(&self, positions: usize) -> RopeTable {
        RopeTable::new(self.theta, self.heads.head_dim, positions)
    }

    /// Token embeddings of `ids` into `x` `[ids.len(), d]`.
    fn embed(&self, p: &[f32], ids: &[u32], x: &mut Vec<f32>) {
        let (d, e) = (self.d, &p[self.embed.clone()]);
        x.clear();
        for &id in ids {
            x.extend_from_slice(&e[id as usize * d..(id as usize + 1) * d]);
        }
    }

    /// The block's first half up to the attention: norm, projections, rotary positions; the keys and values of
    /// the new tokens are in `acts.k` and `acts.v`.
    fn pre_attention(&self, l: &LayerIx, p: &[f32], rope: &RopeTable, positions: &[u32], x: &[f32], a: &mut Acts) {
        let n = positions.len();
        resize(&mut a.h1, n * self.d);
        resize(&mut a.r1, n);
        rms_norm(x, &p[l.ln1.0.clone()], l.ln1.1, &mut a.h1, &mut a.r1);
        resize(&mut a.q, n * self.q_width());
        resize(&mut a.k, n * self.kv_width());
        resize(&mut a.v, n * self.kv_width());
        l.q.forward(p, &a.h1, n, &mut a.q, false);
        l.k.forward(p, &a.h1, n, &mut a.k, false);
        l.v.forward(p, &a.h1, n, &mut a.v, false);
        if let Some(norm) = &l.q_norm {
            head_norm(norm, p, &mut a.q, &mut a.q_pre, &mut a.q_rms);
        }
        if let Some(norm) = &l.k_norm {
            head_norm(norm, p, &mut a.k, &mut a.k_pre, &mut a.k_rms);
        }
        rope.apply(&mut a.q, positions, false);
        rope.apply(&mut a.k, positions, false);
    }

    /// The block after the attention (whose output is `acts.a`): output projection and residual, norm, SwiGLU
    /// MLP and residual, in place on `x`.
    fn post_attention(&self, l: &LayerIx, p: &[f32], n: usize, x: &mut [f32], a: &mut Acts) {
        l.o.forward(p, &a.a, n, x, true);
        a.xm.clear();
        a.xm.extend_from_slice(x);
        resize(&mut a.h2, n * self.d);
        resize(&mut a.r2, n);
        rms_norm(x, &p[l.ln2.0.clone()], l.ln2.1, &mut a.h2, &mut a.r2);
        let ff = l.gate.d_out;
        resize(&mut a.g, n * ff);
        resize(&mut a.u, n * ff);
        resize(&mut a.m, n * ff);
        l.gate.forward(p, &a.h2, n, &mut a.g, false);
        l.up.forward(p, &a.h2, n, &mut a.u, false);
        swiglu(&a.g, &a.u, &mut a.m);
        l.down.forward(p, &a.m, n, x, true);
    }

    /// The residual stream of the packed rows after every block, before the final norm; with `tape`, each
    /// block's activations are pushed onto it.
    fn blocks(&self, p: &[f32], packed: &Packed, rope: &RopeTable, mut tape: Option<&mut Vec<Acts>>) -> Vec<f32> {
        let n = packed.len();
        let mut x = Vec::with_capacity(n * self.d);
        self.embed(p, &packed.ids, &mut x);
        let mut scratch = Acts::default();
        for l in &self.layers {
            let mut a = if tape.is_some() { Acts::default() } else { std::mem::take(&mut scratch) };
            if tape.is_some() {
                a.x = x.clone();
            }
            self.pre_attention(l, p, rope, &packed.positions, &x, &mut a);
            resize(&mut a.a, n * self.q_width());
            resize(&mut a.lse, n * self.heads.heads);
            let (mut kb, mut vb) = (Vec::new(), Vec::new());
            let kvw = self.kv_width();
            let (k, v) = (packed.gather(&a.k, kvw, &mut kb), packed.gather(&a.v, kvw, &mut vb));
            attention::forward(self.heads, &packed.segs, &a.q, k, v, &mut a.a, &mut a.lse);
            self.post_attention(l, p, n, &mut x, &mut a);
            match tape.as_deref_mut() {
                Some(acts) => acts.push(a),
                None => scratch = a,
            }
        }
        x
    }

    /// Logits of the rows `hidden` `[rows, d]` (after the final norm) into `logits` `[rows, vocab]`.
    fn head(&self, p: &[f32], hidden: &[f32], rows: usize, logits: &mut Vec<f32>) {
        resize(logits, rows * self.vocab);
        match &self.head {
            Some(head) => head.forward(p, hidden, rows, logits, false),
            None => matmul(rows, self.vocab, self.d, hidden, false, &p[self.embed.clone()], true, logits, false),
        }
    }

    /// The statistics `[targets, 2]` (log-prob of the target, entropy) of the head at `temperature` for the
    /// packed rows; with `keep`, also the tape for [`ModelIx::backward`].
    pub fn forward(
        &self,
        p: &[f32],
        packed: &Packed,
        targets: &Targets,
        temperature: f32,
        keep: bool,
    ) -> (Vec<f32>, Option<Tape>) {
        assert_eq!(p.len(), self.len, "flat parameters of the wrong length");
        let longest = packed.positions.iter().max().map_or(0, |&p| p as usize + 1);
        let rope = self.rope(longest);
        let mut tape = Tape { rope, temperature, ..Tape::default() };
        let x = self.blocks(p, packed, &tape.rope, keep.then_some(&mut tape.acts));
        let (n, d, m) = (packed.len(), self.d, targets.ids.len());
        let mut xf = vec![0f32; n * d];
        let mut rf = vec![0f32; n];
        rms_norm(&x, &p[self.norm.0.clone()], self.norm.1, &mut xf, &mut rf);
        let mut hs = Vec::with_capacity(m * d);
        for &t in &targets.from {
            hs.extend_from_slice(&xf[t * d..(t + 1) * d]);
        }
        let mut logits = Vec::new();
        self.head(p, &hs, m, &mut logits);
        let mut stats = vec![0f32; 2 * m];
        token_stats(&mut logits, &targets.ids, temperature, &mut stats);
        if !keep {
            return (stats, None);
        }
        tape.xf = x;
        tape.rf = rf;
        tape.hs = hs;
        tape.logits = logits;
        tape.stats = stats.clone();
        (stats, Some(tape))
    }

    /// The gradient of every parameter (flat, laid out like `p`) from the gradient `grad` `[targets, 2]` of the
    /// statistics [`ModelIx::forward`] returned.
    pub fn backward(&self, p: &[f32], packed: &Packed, targets: &Targets, mut tape: Tape, grad: &[f32]) -> Vec<f32> {
        let (n, d, m) = (packed.len(), self.d, targets.ids.len());
        let mut g = vec![0f32; self.len];
        // Head.
        let mut dz = std::mem::take(&mut tape.logits);
        token_stats_backward(&mut dz, &targets.ids, tape.temperature, &tape.stats, grad);
        let mut dhs = vec![0f32; m * d];
        match &self.head {
            Some(head) => head.backward(p, &tape.hs, &dz, m, &mut dhs, false, &mut g),
            None => {
                let e = &p[self.embed.clone()];
                matmul(m, d, self.vocab, &dz, false, e, false, &mut dhs, false);
                matmul_weight_grad(self.vocab, d, m, &dz, &tape.hs, &mut g[self.embed.clone()]);
            }
        }
        drop(dz);
        let mut dxf = vec![0f32; n * d];
        for (i, &t) in targets.from.iter().enumerate() {
            dxf[t * d..(t + 1) * d].iter_mut().zip(&dhs[i * d..(i + 1) * d]).for_each(|(a, b)| *a += b);
        }
        let mut dx = vec![0f32; n * d];
        let norm = self.norm.0.clone();
        rms_norm_backward(&tape.xf, &p[norm.clone()], &tape.rf, &dxf, &mut dx, &mut g[norm]);
        drop(dxf);
        // Blocks, last first; `dx` is the gradient of the residual stream.
        let (qw, kvw) = (self.q_width(), self.kv_width());
        let mut dh = vec![0f32; n * d];
        for (l, mut a) in self.layers.iter().zip(tape.acts).rev() {
            // MLP: x_out = xm + down(silu(gate(h2)) * up(h2)).
            let ff = l.gate.d_out;
            let mut dm = vec![0f32; n * ff];
            l.down.backward(p, &a.m, &dx, n, &mut dm, false, &mut g);
            swiglu_backward(&mut a.g, &mut a.u, &dm);
            drop(dm);
            l.gate.backward(p, &a.h2, &a.g, n, &mut dh, false, &mut g);
            l.up.backward(p, &a.h2, &a.u, n, &mut dh, true, &mut g);
            let ln2 = l.ln2.0.clone();
            rms_norm_backward(&a.xm, &p[ln2.clone()], &a.r2, &dh, &mut dx, &mut g[ln2]);
            // Attention: xm = x + o(attention(rope(qn(q(h1))), rope(kn(k(h1))), v(h1))), qn and kn Qwen3's
            // head norms (the identity elsewhere).
            let mut da = vec![0f32; n * qw];
            l.o.backward(p, &a.a, &dx, n, &mut da, false, &mut g);
            let kr = packed.key_rows();
            let (mut dq, mut dkv, mut dvv) = (vec![0f32; n * qw], vec![0f32; kr * kvw], vec![0f32; kr * kvw]);
            let (mut kb, mut vb) = (Vec::new(), Vec::new());
            let (k, v) = (packed.gather(&a.k, kvw, &mut kb), packed.gather(&a.v, kvw, &mut vb));
            attention::backward(self.heads, &packed.segs, &a.q, k, v, &a.a, &a.lse, &da, &mut dq, &mut dkv, &mut dvv);
            drop((da, kb, vb));
            let (mut dk, mut dv) = (vec![0f32; n * kvw], vec![0f32; n * kvw]);
            packed.scatter_add(&dkv, kvw, &mut dk);
            packed.scatter_add(&dvv, kvw, &mut dv);
            drop((dkv, dvv));
            tape.rope.apply(&mut dq, &packed.positions, true);
            tape.rope.apply(&mut dk, &packed.positions, true);
            if let Some(norm) = &l.q_norm {
                dq = head_norm_backward(norm, p, &a.q_pre, &a.q_rms, &dq, &mut g);
            }
            if let Some(norm) = &l.k_norm {
                dk = head_norm_backward(norm, p, &a.k_pre, &a.k_rms, &dk, &mut g);
            }
            l.q.backward(p, &a.h1, &dq, n, &mut dh, false, &mut g);
            l.k.backward(p, &a.h1, &dk, n, &mut dh, true, &mut g);
            l.v.backward(p, &a.h1, &dv, n, &mut dh, true, &mut g);
            let ln1 = l.ln1.0.clone();
            rms_norm_backward(&a.x, &p[ln1.clone()], &a.r1, &dh, &mut dx, &mut g[ln1]);
        }
        // Embedding: each token's row gets its gradient, in token order.
        let embed = &mut g[self.embed.clone()];
        for (t, &id) in packed.ids.iter().enumerate() {
            let row = &mut embed[id as usize * d..(id as usize + 1) * d];
            row.iter_mut().zip(&dx[t * d..(t + 1) * d]).for_each(|(a, b)| *a += b);
        }
        g
    }
}

/// Weights concatenated column-wise (`[d_in, Σ d_out]`) so that one product computes several projections of the
/// same input, and their biases (zeros where a layer has none), or `None` when no layer has one.
fn concat_columns(p: &[f32], lins: &[&Lin]) -> (Vec<f32>, Option<Vec<f32>>) {
    let d_in = lins[0].d_in;
    let mut w = Vec::with_capacity(d_in * lins.iter().map(|l| l.d_out).sum::<usize>());
    for row in 0..d_in {
        for l in lins {
            w.extend_from_slice(&p[l.w.start + row * l.d_out..l.w.start + (row + 1) * l.d_out]);
        }
    }
    let bias = lins.iter().any(|l| l.b.is_some()).then(|| {
        lins.iter().flat_map(|l| l.b.as_ref().map_or(vec![0.0; l.d_out], |b| p[b.clone()].to_vec())).collect()
    });
    (w, bias)
}

/// One block's weights laid out for decoding: q, k and v as one `[d, q + 2 kv]` product, gate and up as one
/// `[d, 2 ff]`.
#[derive(Debug)]
struct DecodeLayer {
    qkv: (Vec<f32>, Option<Vec<f32>>),
    gate_up: (Vec<f32>, Option<Vec<f32>>),
}

/// The KV caches of one generation batch and the buffers of its decoding steps, allocated once: row `r`'s keys
/// of layer `l` are rows `r * capacity..` of `keys[l]` (`[rows * capacity, kv_heads * head_dim]`).
///
/// The prefill is the packed forward (matrix products over all prompt tokens); a decoding step, a few rows of
/// one token each, runs on weights laid out for it ([`DecodeLayer`], the tied head transposed) with the
/// few-row products of [`super::small`] and [`decode_attention`], allocating nothing.
#[derive(Debug)]
pub struct Decoder<'a> {
    ix: &'a ModelIx,
    p: &'a [f32],
    capacity: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Tokens cached per row.
    lengths: Vec<usize>,
    rope: RopeTable,
    layers: Vec<DecodeLayer>,
    /// The head as `[d, vocab]`: the transposed embedding when tied.
    head: Vec<f32>,
    scratch: Acts,
    buffers: StepBuffers,
    parallel: bool,
    /// The logits of the last call, `[rows of that call, vocab]`.
    pub logits: Vec<f32>,
}

/// A decoding step's buffers, kept between steps.
#[derive(Debug, Default)]
struct StepBuffers {
    x: Vec<f32>,
    h: Vec<f32>,
    rms: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    positions: Vec<u32>,
    starts: Vec<usize>,
    lens: Vec<usize>,
    scores: Vec<f32>,
}

impl<'a> Decoder<'a> {
    /// Caches for `rows` rows of up to `capacity` tokens each. With `parallel`, a decoding step spreads its
    /// products over rayon's threads; without, it runs on the calling thread (a caller that decodes several
    /// batches side by side).
    pub fn new(ix: &'a ModelIx, p: &'a [f32], rows: usize, capacity: usize, parallel: bool) -> Self {
        let size = rows * capacity * ix.kv_width();
        let layers = ix
            .layers
            .iter()
            .map(|l| DecodeLayer {
                qkv: concat_columns(p, &[&l.q, &l.k, &l.v]),
                gate_up: concat_columns(p, &[&l.gate, &l.up]),
            })
            .collect();
        let head = match &ix.head {
            Some(head) => p[head.w.clone()].to_vec(),
            None => {
                let (e, d, vocab) = (&p[ix.embed.clone()], ix.d, ix.vocab);
                let mut t = vec![0f32; d * vocab];
                for (tok, row) in e.chunks_exact(d).enumerate() {
                    for (c, &x) in row.iter().enumerate() {
                        t[c * vocab + tok] = x;
                    }
                }
                t
            }
        };
        Self {
            ix,
            p,
            capacity,
            keys: vec![vec![0f32; size]; ix.layers.len()],
            values: vec![vec![0f32; size]; ix.layers.len()],
            lengths: vec![0; rows],
            rope: ix.rope(capacity),
            layers,
            head,
            scratch: Acts::default(),
            buffers: StepBuffers::default(),
            parallel,
            logits: Vec::new(),
        }
    }

    /// Runs each row's prompt through the model (packed, a shared prefix once), caching keys and values, and
    /// leaves the logits of each row's last prompt token in [`Decoder::logits`].
    pub fn prefill(&mut self, prompts: &[&[u32]]) {
        let packed = Packed::rows(prompts);
        let ix = self.ix;
        let (n, kvw) = (packed.len(), ix.kv_width());
        let mut x = Vec::new();
        ix.embed(self.p, &packed.ids, &mut x);
        let a = &mut self.scratch;
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for (li, l) in ix.layers.iter().enumerate() {
            ix.pre_attention(l, self.p, &self.rope, &packed.positions, &x, a);
            for (row, prompt) in prompts.iter().enumerate() {
                for t in 0..prompt.len() {
                    let (src, dst) = (packed.index(row, t) * kvw, (row * self.capacity + t) * kvw);
                    self.keys[li][dst..dst + kvw].copy_from_slice(&a.k[src..src + kvw]);
                    self.values[li][dst..dst + kvw].copy_from_slice(&a.v[src..src + kvw]);
                }
            }
            let (k, v) = (packed.gather(&a.k, kvw, &mut kb), packed.gather(&a.v, kvw, &mut vb));
            if li + 1 < ix.layers.len() {
                resize(&mut a.a, n * ix.q_width());
                resize(&mut a.lse, n * ix.heads.heads);
                attention::forward(ix.heads, &packed.segs, &a.q, k, v, &mut a.a, &mut a.lse);
                ix.post_attention(l, self.p, n, &mut x, a);
                continue;
            }
            // The last block: every token's keys and values are cached, but only each row's last token goes
            // on (its query attends to its whole row; its residual goes through the rest of the block).
            let (rows, qw, d) = (prompts.len(), ix.q_width(), ix.d);
            let (mut q, mut last) = (Vec::with_capacity(rows * qw), Vec::with_capacity(rows * d));
            let mut segs = Vec::with_capacity(rows);
            for (row, prompt) in prompts.iter().enumerate() {
                let t = packed.index(row, prompt.len() - 1);
                q.extend_from_slice(&a.q[t * qw..(t + 1) * qw]);
                last.extend_from_slice(&x[t * d..(t + 1) * d]);
                let seg = packed.segs[packed.row_segs[row]];
                segs.push(Seg { q_start: row, q_len: 1, k_start: seg.k_start, k_len: seg.k_len });
            }
            resize(&mut a.a, rows * qw);
            resize(&mut a.lse, rows * ix.heads.heads);
            attention::forward(ix.heads, &segs, &q, k, v, &mut a.a, &mut a.lse);
            ix.post_attention(l, self.p, rows, &mut last, a);
            x = last;
        }
        for (row, prompt) in prompts.iter().enumerate() {
            self.lengths[row] = prompt.len();
        }
        self.buffers.x = x;
        self.head_logits(prompts.len());
    }

    /// Appends `tokens[j]` to row `rows[j]` of the cache and leaves the logits of the new tokens in
    /// [`Decoder::logits`] (`[rows.len(), vocab]`).
    ///
    /// # Panics
    /// When a row's cache is full.
    pub fn step(&mut self, rows: &[usize], tokens: &[u32]) {
        let (ix, p) = (self.ix, self.p);
        let (m, d, qw, kvw) = (rows.len(), ix.d, ix.q_width(), ix.kv_width());
        let width = qw + 2 * kvw;
        let b = &mut self.buffers;
        ix.embed(p, tokens, &mut b.x);
        b.positions.clear();
        b.starts.clear();
        b.lens.clear();
        for &r in rows {
            assert!(self.lengths[r] < self.capacity, "row {r}'s KV cache is full ({} tokens)", self.capacity);
            b.positions.push(self.lengths[r] as u32);
            b.starts.push(r * self.capacity);
            b.lens.push(self.lengths[r] + 1);
        }
        for ((l, dl), li) in ix.layers.iter().zip(&self.layers).zip(0..) {
            resize(&mut b.h, m * d);
            resize(&mut b.rms, m);
            rms_norm(&b.x, &p[l.ln1.0.clone()], l.ln1.1, &mut b.h, &mut b.rms);
            resize(&mut b.qkv, m * width);
            matmul_rows(m, width, d, &b.h, &dl.qkv.0, &mut b.qkv, false, self.parallel);
            if let Some(bias) = &dl.qkv.1 {
                add_bias(&mut b.qkv, bias);
            }
            if let Some((gamma, eps)) = &l.q_norm {
                rms_norm_columns(&mut b.qkv, width, 0..qw, &p[gamma.clone()], *eps);
            }
            if let Some((gamma, eps)) = &l.k_norm {
                rms_norm_columns(&mut b.qkv, width, qw..qw + kvw, &p[gamma.clone()], *eps);
            }
            self.rope.apply_columns(&mut b.qkv, width, 0..qw, &b.positions, false);
            self.rope.apply_columns(&mut b.qkv, width, qw..qw + kvw, &b.positions, false);
            for (j, &r) in rows.iter().enumerate() {
                let at = (r * self.capacity + self.lengths[r]) * kvw;
                let row = &b.qkv[j * width..(j + 1) * width];
                self.keys[li][at..at + kvw].copy_from_slice(&row[qw..qw + kvw]);
                self.values[li][at..at + kvw].copy_from_slice(&row[qw + kvw..]);
            }
            resize(&mut b.att, m * qw);
            let (keys, values) = (&self.keys[li], &self.values[li]);
            decode_attention(
                ix.heads,
                &b.qkv,
                width,
                keys,
                values,
                &b.starts,
                &b.lens,
                &mut b.att,
                self.parallel,
                &mut b.scores,
            );
            matmul_rows(m, d, qw, &b.att, &p[l.o.w.clone()], &mut b.x, true, self.parallel);
            if let Some(bias) = &l.o.b {
                add_bias(&mut b.x, &p[bias.clone()]);
            }
            rms_norm(&b.x, &p[l.ln2.0.clone()], l.ln2.1, &mut b.h, &mut b.rms);
            let ff = l.gate.d_out;
            resize(&mut b.gate_up, m * 2 * ff);
            matmul_rows(m, 2 * ff, d, &b.h, &dl.gate_up.0, &mut b.gate_up, false, self.parallel);
            if let Some(bias) = &dl.gate_up.1 {
                add_bias(&mut b.gate_up, bias);
            }
            resize(&mut b.act, m * ff);
            for (act, gu) in b.act.chunks_exact_mut(ff).zip(b.gate_up.chunks_exact(2 * ff)) {
                let (g, u) = gu.split_at(ff);
                swiglu(g, u, act);
            }
            matmul_rows(m, d, ff, &b.act, &p[l.down.w.clone()], &mut b.x, true, self.parallel);
            if let Some(bias) = &l.down.b {
                add_bias(&mut b.x, &p[bias.clone()]);
            }
        }
        for &r in rows {
            self.lengths[r] += 1;
        }
        self.head_logits(m);
    }

    /// Final norm and head on the `rows` residual rows in `buffers.x`, into [`Decoder::logits`].
    fn head_logits(&mut self, rows: usize) {
        let (ix, b) = (self.ix, &mut self.buffers);
        resize(&mut b.h, rows * ix.d);
        resize(&mut b.rms, rows);
        rms_norm(&b.x, &self.p[ix.norm.0.clone()], ix.norm.1, &mut b.h, &mut b.rms);
        resize(&mut self.logits, rows * ix.vocab);
        matmul_rows(rows, ix.vocab, ix.d, &b.h, &self.head, &mut self.logits, false, self.parallel);
        if let Some(bias) = ix.head.as_ref().and_then(|h| h.b.as_ref()) {
            add_bias(&mut self.logits, &self.p[bias.clone()]);
        }
    }
}
