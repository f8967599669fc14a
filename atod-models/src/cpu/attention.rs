//! Fused causal self-attention on the CPU with grouped-query heads, forward and hand-written backward, over
//! *packed* variable-length sequences.
//!
//! # Layout
//!
//! Every tensor is a plain row-major `f32` slice with one row per token:
//!
//! - `q`, `out`, `dout`, `dq`: `[nq, heads * head_dim]`; query head `h` owns columns
//!   `h * head_dim .. (h + 1) * head_dim`;
//! - `k`, `v`, `dk`, `dv`: `[nk, kv_heads * head_dim]`; key/value head `g` owns columns
//!   `g * head_dim .. (g + 1) * head_dim`;
//! - `lse`: `[nq, heads]`.
//!
//! Grouped-query attention: the `heads / kv_heads` consecutive query heads `g * group .. (g + 1) * group` all
//! read key/value head `g` (`group = heads / kv_heads`).
//!
//! A batch is a list of [`Seg`]s. A segment's queries are the rows `q_start .. q_start + q_len` of `q`, its
//! keys/values the rows `k_start .. k_start + k_len` of `k`/`v`, and the queries are the *last* `q_len`
//! positions of the sequence, so with `off = k_len - q_len` query `i` sees keys `0 ..= i + off` (causal).
//! Training uses `q_start == k_start`, `q_len == k_len`; scoring a continuation against a cached prefix uses
//! `k_len > q_len`. Query rows of different segments must not overlap; key rows may (several segments can
//! share one prefix).
//!
//! # Math
//!
//! Per segment and query head, with `s = 1 / sqrt(head_dim)` and only visible `(i, j)` (`j <= i + off`):
//!
//! ```text
//! S    = s Q K^T
//! lse_i = m_i + ln sum_j exp(S_ij - m_i),   m_i = max_j S_ij     (softmax in f32, max subtracted)
//! P    = exp(S - lse)                                              (P_ij = 0 where j is hidden)
//! O    = P V
//! ```
//!
//! The backward (FlashAttention-2 style, recomputing `P` from `lse` instead of storing it):
//!
//! ```text
//! dV += P^T dO      dP = dO V^T      D_i = sum_c dO_ic O_ic      dS = P o (dP - D)
//! dQ  = s dS K      dK += s dS^T Q
//! ```
//!
//! Query heads sharing a key/value head both add into the same `dK`/`dV` rows, and so do segments sharing key
//! rows; that is why `dk`/`dv` are accumulated into, and `dq`/`out` overwritten.
//!
//! # Implementation
//!
//! A segment's queries are processed in row blocks of `BLOCK` = 64 rows. Block `[r0, r1)` sees only keys
//! `[0, r1 + off)`, so only that rectangle of `S` is computed (one `gemm`); inside it only the visible part of
//! each row is exponentiated, and the hidden part is set to zero, so the following products
//! (`P V`, `P^T dO`, `dS K`, `dS^T Q`) can run on the whole rectangle. No mask is materialised. The products
//! run as single-threaded [`gemm::gemm`] calls on strided views of the caller's slices (no copies of a head's
//! columns), and the score block lives in a per-task scratch buffer. `exp` is a branch-free polynomial
//! (relative error about 1e-7) so the softmax loops vectorise; on x86-64 the block kernels are also compiled
//! for AVX2 and picked at run time (same arithmetic, same bits, twice the vector width).
//!
//! Parallelism (rayon, in the current pool):
//!
//! - forward: one task per (segment, query head, row block); tasks write disjoint parts of `out`/`lse`;
//! - backward: one task per (key group, key/value head), where a key group is a set of segments whose key
//!   ranges overlap (normally a single segment). A task walks its segments in index order, its query heads in
//!   order and its row blocks in order, so it is the only writer of its `dk`/`dv` rows and columns and adds to
//!   them in a fixed order.
//!
//! # Determinism
//!
//! Every output element is produced by the same sequence of floating-point operations whatever the number of
//! threads and whatever other segments share the batch: the blocking depends only on the segment's own shape,
//! `gemm` runs with [`Parallelism::None`], reductions use a fixed lane layout, and accumulations into
//! `dk`/`dv` happen in a fixed order. (Bits can differ between *machines*: `gemm` picks its SIMD kernel at run
//! time.)

use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::cmp::Reverse;

/// Head layout: `heads` query heads share `kv_heads` key/value heads (`heads % kv_heads == 0`); query head `h`
/// uses key/value head `h / (heads / kv_heads)`. Each head has `head_dim` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Number of query heads.
    pub heads: usize,
    /// Number of key/value heads; divides `heads`.
    pub kv_heads: usize,
    /// Columns per head.
    pub head_dim: usize,
}

/// One sequence of the packed batch: its queries are rows `q_start..q_start+q_len` of `q`, its keys/values rows
/// `k_start..k_start+k_len` of `k`/`v`, `k_len >= q_len >= 1` (`q_len == 0` is accepted and does nothing). The
/// queries are the *last* `q_len` positions of the sequence: query `i` (0-based) sees keys
/// `0..=i + (k_len - q_len)` (causal). Training passes `q_start == k_start` and `q_len == k_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// First query row (of `q`, `out`, `lse`, `dq`, `dout`).
    pub q_start: usize,
    /// Number of query rows.
    pub q_len: usize,
    /// First key/value row (of `k`, `v`, `dk`, `dv`).
    pub k_start: usize,
    /// Number of key/value rows; at least `q_len`.
    pub k_len: usize,
}

/// Query rows per block: a block computes the score rectangle `BLOCK x (r1 + off)`, so the work done for the
/// hidden upper triangle is at most `BLOCK / 2` columns per row.
const BLOCK: usize = 64;

/// Lanes of the fixed-shape reductions (row max, row sum, dot products); fixed so results never depend on the
/// SIMD width.
const LANES: usize = 8;

/// Causal attention forward: for every segment and query head, writes the attention output of the segment's
/// query rows into `out` (covered rows are overwritten, other rows left as they are) and the log-sum-exp of
/// each query's scaled scores into `lse` (kept for [`backward`]). Scale is `1 / sqrt(head_dim)`.
///
/// `q`: `[nq, heads * head_dim]`; `k`, `v`: `[nk, kv_heads * head_dim]`; `out`: like `q`; `lse`: `[nq, heads]`.
///
/// # Panics
///
/// Panics if the slice lengths are inconsistent with `h` and the segments, if a segment lies outside the
/// slices or has `k_len < q_len`, if two segments share query rows, or if `h` is invalid.
pub fn forward(h: Heads, segs: &[Seg], q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], lse: &mut [f32]) {
    let lay = Layout::check("forward", h, segs, q.len(), k.len(), v.len());
    assert_eq!(
        out.len(),
        q.len(),
        "attention::forward: out has {} values, expected {} (the length of q)",
        out.len(),
        q.len()
    );
    assert_eq!(
        lse.len(),
        lay.nq * h.heads,
        "attention::forward: lse has {} values, expected nq * heads = {} * {}",
        lse.len(),
        lay.nq,
        h.heads
    );

    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    for (si, s) in segs.iter().enumerate() {
        for head in 0..h.heads {
            for r0 in (0..s.q_len).step_by(BLOCK) {
                tasks.push((si, head, r0));
            }
        }
    }
    // Largest blocks first for better load balance; the order does not affect any result.
    tasks.sort_by_key(|&(si, _, r0)| {
        let s = &segs[si];
        let r1 = (r0 + BLOCK).min(s.q_len);
        Reverse((r1 - r0) * (r1 + s.k_len - s.q_len))
    });

    let fwd = Forward { lay, q, k, v, out: SendPtr(out.as_mut_ptr()), lse: SendPtr(lse.as_mut_ptr()) };
    tasks.par_iter().for_each_init(Vec::new, |scratch, &(si, head, r0)| {
        // SAFETY: `Layout::check` validated that every segment lies inside the slices and that no two segments
        // share query rows; each task writes only rows `r0..r1` of its segment in the columns of its head (and
        // the matching `lse` entries), and no two tasks share (segment, head, r0).
        unsafe { fwd.run_block(&segs[si], head, r0, scratch) }
    });
}

/// The gradients of `q`, `k`, `v` from the gradient `dout` of `out`.
///
/// `dq` is overwritten on rows covered by a segment (other rows are left as they are); `dk` and `dv` are
/// ACCUMULATED into (`+=`), so callers zero them first (this lets segments share key rows). `q`, `k`, `v` are
/// as in [`forward`], `out` and `lse` are what [`forward`] returned for them.
///
/// # Panics
///
/// As [`forward`], and if `out`, `lse`, `dout`, `dq`, `dk`, `dv` do not have the lengths of `q`,
/// `[nq, heads]`, `q`, `q`, `k`, `k` respectively.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    h: Heads,
    segs: &[Seg],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let lay = Layout::check("backward", h, segs, q.len(), k.len(), v.len());
    for (name, len, want) in [
        ("out", out.len(), q.len()),
        ("lse", lse.len(), lay.nq * h.heads),
        ("dout", dout.len(), q.len()),
        ("dq", dq.len(), q.len()),
        ("dk", dk.len(), k.len()),
        ("dv", dv.len(), k.len()),
    ] {
        assert_eq!(len, want, "attention::backward: {name} has {len} values, expected {want}");
    }

    let groups = key_groups(segs);
    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    for (gi, group) in groups.iter().enumerate() {
        let cost: usize = group.iter().map(|&si| segs[si].q_len * segs[si].k_len).sum();
        for g in 0..h.kv_heads {
            tasks.push((cost, gi, g));
        }
    }
    // Largest first for better load balance; the order does not affect any result.
    tasks.sort_by_key(|&(cost, gi, g)| (Reverse(cost), gi, g));

    let bwd = Backward {
        lay,
        q,
        k,
        v,
        out,
        lse,
        dout,
        dq: SendPtr(dq.as_mut_ptr()),
        dk: SendPtr(dk.as_mut_ptr()),
        dv: SendPtr(dv.as_mut_ptr()),
    };
    tasks.par_iter().for_each_init(Vec::new, |scratch, &(_, gi, g)| {
        for &si in &groups[gi] {
            for head in g * lay.group..(g + 1) * lay.group {
                for r0 in (0..segs[si].q_len).step_by(BLOCK) {
                    // SAFETY: segments were validated by `Layout::check`; query rows of different segments are
                    // disjoint, so `dq` rows/columns of (segment, head) are written by this task only; all
                    // segments whose key rows overlap are in this task's group and processed here in order, so
                    // the `dk`/`dv` columns of kv head `g` in those rows are written by this task only.
                    unsafe { bwd.run_block(&segs[si], head, r0, scratch) }
                }
            }
        }
    });
}

/// Whether to run the AVX2 builds of the block kernels. They only let the elementwise loops (exp, softmax,
/// `dS`) use 8-wide vectors: the arithmetic is the same IEEE operations either way (Rust never contracts to
/// FMA), so results are bit-identical to the portable build.
#[cfg(target_arch = "x86_64")]
#[inline]
fn use_avx2() -> bool {
    #[cfg(test)]
    if tests::PORTABLE.load(std::sync::atomic::Ordering::SeqCst) {
        return false;
    }
    // `level()` never exceeds what the CPU has (super::isa); it is lower when forced.
    super::isa::level() >= super::isa::Level::V3
}

/// Defines `run_block`, which calls `block` through an AVX2 build of it when the CPU supports AVX2 (on
/// x86-64; elsewhere it calls `block` directly).
macro_rules! dispatch_block {
    () => {
        /// `block`, through its AVX2 build when the CPU has AVX2 (see [`use_avx2`]).
        ///
        /// # Safety
        ///
        /// As `block`.
        unsafe fn run_block(&self, s: &Seg, head: usize, r0: usize, scratch: &mut Vec<f32>) {
            #[cfg(target_arch = "x86_64")]
            if use_avx2() {
                // SAFETY: the CPU has AVX2; the rest is forwarded from the caller.
                return unsafe { self.block_avx2(s, head, r0, scratch) };
            }
            // SAFETY: forwarded from the caller.
            unsafe { self.block(s, head, r0, scratch) }
        }

        /// `block` compiled with AVX2 enabled.
        ///
        /// # Safety
        ///
        /// As `block`, and the CPU must support AVX2.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn block_avx2(&self, s: &Seg, head: usize, r0: usize, scratch: &mut Vec<f32>) {
            // SAFETY: forwarded from the caller.
            unsafe { self.block(s, head, r0, scratch) }
        }
    };
}

/// Validated dimensions shared by both passes.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Query rows.
    nq: usize,
    /// Query heads.
    heads: usize,
    /// Query heads per key/value head.
    group: usize,
    /// Head dimension.
    d: usize,
    /// Row stride of `q`-shaped tensors (`heads * d`).
    qs: usize,
    /// Row stride of `k`-shaped tensors (`kv_heads * d`).
    ks: usize,
    /// `1 / sqrt(d)`.
    scale: f32,
}

/// The rectangle of one block task: query rows `r0..r1` of a segment (`rows` of them) against the `cols` keys
/// the last of them sees (`off` = keys before the first query), and the offsets of the block's first query row
/// (`qoff`, in q-shaped tensors, at its head's columns) and first key row (`koff`, k-shaped, its kv head's).
struct Tile {
    off: usize,
    rows: usize,
    cols: usize,
    row0: usize,
    qoff: usize,
    koff: usize,
}

impl Layout {
    /// The [`Tile`] of query head `head`'s block starting at row `r0` of `s`.
    fn tile(&self, s: &Seg, head: usize, r0: usize) -> Tile {
        let off = s.k_len - s.q_len;
        let r1 = (r0 + BLOCK).min(s.q_len);
        let row0 = s.q_start + r0;
        Tile {
            off,
            rows: r1 - r0,
            cols: r1 + off,
            row0,
            qoff: row0 * self.qs + head * self.d,
            koff: s.k_start * self.ks + (head / self.group) * self.d,
        }
    }

    /// Checks the head layout, the input lengths and the segments; panics with a clear message otherwise.
    fn check(op: &str, h: Heads, segs: &[Seg], q_len: usize, k_len: usize, v_len: usize) -> Layout {
        assert!(
            h.heads > 0 && h.kv_heads > 0 && h.head_dim > 0,
            "attention::{op}: heads, kv_heads and head_dim must be positive, got {h:?}"
        );
        assert!(h.heads.is_multiple_of(h.kv_heads), "attention::{op}: heads must be a multiple of kv_heads, got {h:?}");
        let qs = h.heads * h.head_dim;
        let ks = h.kv_heads * h.head_dim;
        assert!(
            q_len.is_multiple_of(qs),
            "attention::{op}: q has {q_len} values, not a multiple of heads * head_dim = {qs}"
        );
        assert!(
            k_len.is_multiple_of(ks),
            "attention::{op}: k has {k_len} values, not a multiple of kv_heads * head_dim = {ks}"
        );
        assert_eq!(v_len, k_len, "attention::{op}: v has {v_len} values but k has {k_len}");
        let nq = q_len / qs;
        let nk = k_len / ks;
        for (i, s) in segs.iter().enumerate() {
            if s.q_len == 0 {
                continue;
            }
            assert!(
                s.q_start.checked_add(s.q_len).is_some_and(|e| e <= nq),
                "attention::{op}: segment {i} {s:?} has query rows past the {nq} rows of q"
            );
            assert!(
                s.k_start.checked_add(s.k_len).is_some_and(|e| e <= nk),
                "attention::{op}: segment {i} {s:?} has key rows past the {nk} rows of k"
            );
            assert!(s.k_len >= s.q_len, "attention::{op}: segment {i} {s:?} has k_len < q_len");
        }
        let mut by_q: Vec<&Seg> = segs.iter().filter(|s| s.q_len > 0).collect();
        by_q.sort_by_key(|s| s.q_start);
        for w in by_q.windows(2) {
            assert!(
                w[0].q_start + w[0].q_len <= w[1].q_start,
                "attention::{op}: segments {:?} and {:?} share query rows",
                w[0],
                w[1]
            );
        }
        Layout {
            nq,
            heads: h.heads,
            group: h.heads / h.kv_heads,
            d: h.head_dim,
            qs,
            ks,
            scale: 1.0 / (h.head_dim as f32).sqrt(),
        }
    }
}

/// Groups the non-empty segments whose key ranges overlap (transitively); each group lists segment indices in
/// increasing order, which is the order its contributions are added to `dk`/`dv`.
fn key_groups(segs: &[Seg]) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].q_len > 0).collect();
    idx.sort_by_key(|&i| (segs[i].k_start, i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut end = 0;
    for i in idx {
        let s = &segs[i];
        match groups.last_mut() {
            Some(group) if s.k_start < end => group.push(i),
            _ => groups.push(vec![i]),
        }
        end = end.max(s.k_start + s.k_len);
    }
    for group in &mut groups {
        group.sort_unstable();
    }
    groups
}

/// A raw pointer to an output slice, shared by the tasks of one call.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

// SAFETY: the pointer comes from a `&mut [f32]` borrowed for the whole parallel section, and the tasks that use
// it write pairwise-disjoint (strided) regions of it, as argued at each use; nothing reads those regions
// concurrently.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the `Send` wrapper rather than the raw field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A strided matrix view for `gemm`: element `(r, c)` is at `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

impl View {
    /// The row-major view with row stride `rs`.
    fn rows(ptr: *const f32, rs: usize) -> View {
        View { ptr, rs, cs: 1 }
    }

    /// The transposed view.
    fn t(self) -> View {
        View { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
}

/// `dst[m x n] (+)= beta * lhs[m x k] * rhs[k x n]`, where `dst` is row-major with row stride `dst_rs`; it is
/// overwritten unless `accumulate`. Single-threaded, so that the result never depends on the thread count.
///
/// # Safety
///
/// The views must address valid memory for the given shapes, `dst` must be writable, not aliased by `lhs` or
/// `rhs`, and not accessed by any other thread during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    beta: f32,
) {
    if super::isa::reproducible() {
        // SAFETY: forwarded from the caller.
        return unsafe { matmul_fixed(m, n, k, dst, dst_rs, accumulate, lhs, rhs, beta) };
    }
    // SAFETY: forwarded from the caller; strides fit `isize` because they index allocated slices.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// [`matmul`] in the reproducible mode: the views gathered into row-major copies, their product taken by
/// [`super::fixed::matmul`] (one fused multiply-add chain per element, the same bits at every instruction-set
/// level), then `dst = beta * product`, or `dst + beta * product` when `accumulate`. The copies cost `O(mk + kn)`
/// against the product's `O(mnk)`.
///
/// # Safety
///
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_fixed(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    beta: f32,
) {
    // SAFETY (all reads and writes below): the caller guarantees the views address `m x k`, `k x n` and `m x n`
    // valid elements and that no other thread touches `dst`.
    let gather = |v: View, rows: usize, cols: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            out.extend((0..cols).map(|c| unsafe { *v.ptr.add(r * v.rs + c * v.cs) }));
        }
        out
    };
    let a = gather(lhs, m, k);
    let b = gather(rhs, k, n);
    let mut product = vec![0f32; m * n];
    super::fixed::matmul(m, n, k, &a, false, &b, false, &mut product, false, false);
    for (i, row) in product.chunks_exact(n.max(1)).enumerate().take(m) {
        for (j, &x) in row.iter().enumerate() {
            let d = unsafe { &mut *dst.add(i * dst_rs + j) };
            *d = if accumulate { *d + beta * x } else { beta * x };
        }
    }
}

/// Everything a forward task needs.
struct Forward<'a> {
    lay: Layout,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: SendPtr,
    lse: SendPtr,
}

impl Forward<'_> {
    dispatch_block!();

    /// Forward of query rows `r0..min(r0 + BLOCK, q_len)` of segment `s`, query head `head`.
    ///
    /// # Safety
    ///
    /// `s` must have been validated against the slices, and no other thread may access the same rows of `out`
    /// (in this head's columns) or of `lse` (this head's entries) during the call.
    #[inline(always)]
    unsafe fn block(&self, s: &Seg, head: usize, r0: usize, scratch: &mut Vec<f32>) {
        let Layout { heads, d, qs, ks, scale, .. } = self.lay;
        let Tile { off, rows, cols, row0, qoff, koff } = self.lay.tile(s, head, r0);
        if scratch.len() < rows * cols {
            scratch.resize(rows * cols, 0.0);
        }
        let p = &mut scratch[..rows * cols];

        // SAFETY (pointer arithmetic): the segment lies inside the slices (checked), so these offsets are in
        // bounds, and every view below stays inside its slice.
        let qv = View::rows(unsafe { self.q.as_ptr().add(qoff) }, qs);
        let kv = View::rows(unsafe { self.k.as_ptr().add(koff) }, ks);
        let vv = View::rows(unsafe { self.v.as_ptr().add(koff) }, ks);
        let o = unsafe { self.out.get().add(qoff) };

        // S = scale * Q K^T on the rectangle rows x cols.
        // SAFETY: `p` is a private buffer of rows * cols values; the views are in bounds.
        unsafe { matmul(rows, cols, d, p.as_mut_ptr(), cols, false, qv, kv.t(), scale) };

        // Row softmax over the visible part (unnormalised; O is scaled by 1 / sum afterwards).
        let mut inv = [0.0f32; BLOCK];
        for (ri, row) in p.chunks_exact_mut(cols).enumerate() {
            let (seen, hidden) = row.split_at_mut(r0 + ri + off + 1);
            let m = max_of(seen);
            exp_sub(seen, m);
            let sum = sum_of(seen); // >= 1: the maximum contributes exp(0) = 1
            hidden.fill(0.0);
            inv[ri] = 1.0 / sum;
            // SAFETY: the entry (row0 + ri, head) of `lse` is in bounds and belongs to this task only.
            unsafe { *self.lse.get().add((row0 + ri) * heads + head) = m + sum.ln() };
        }

        // O = P V, then normalise each row.
        // SAFETY: `o` addresses rows x d values of this task's region of `out`, distinct from `p`, `v`.
        unsafe { matmul(rows, d, cols, o, qs, false, View::rows(p.as_ptr(), cols), vv, 1.0) };
        for (ri, &f) in inv[..rows].iter().enumerate() {
            // SAFETY: row `ri` of this task's region: d values in bounds, written by this task only.
            let orow = unsafe { std::slice::from_raw_parts_mut(o.add(ri * qs), d) };
            orow.iter_mut().for_each(|x| *x *= f);
        }
    }
}

/// Everything a backward task needs.
struct Backward<'a> {
    lay: Layout,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    lse: &'a [f32],
    dout: &'a [f32],
    dq: SendPtr,
    dk: SendPtr,
    dv: SendPtr,
}

impl Backward<'_> {
    dispatch_block!();

    /// Backward of query rows `r0..min(r0 + BLOCK, q_len)` of segment `s`, query head `head`: overwrites those
    /// rows of `dq`, adds into the first `r1 + off` key rows of `dk`/`dv`.
    ///
    /// # Safety
    ///
    /// `s` must have been validated against the slices, and no other thread may access the touched rows of
    /// `dq` (this head's columns) or `dk`/`dv` (this head's kv columns) during the call.
    #[inline(always)]
    unsafe fn block(&self, s: &Seg, head: usize, r0: usize, scratch: &mut Vec<f32>) {
        let Layout { heads, d, qs, ks, scale, .. } = self.lay;
        let Tile { off, rows, cols, row0, qoff, koff } = self.lay.tile(s, head, r0);
        let n = rows * cols;
        if scratch.len() < 2 * n {
            scratch.resize(2 * n, 0.0);
        }
        let (p, rest) = scratch.split_at_mut(n);
        let ds = &mut rest[..n];

        // SAFETY (pointer arithmetic): the segment lies inside the slices (checked), so these offsets are in
        // bounds, and every view below stays inside its slice.
        let qv = View::rows(unsafe { self.q.as_ptr().add(qoff) }, qs);
        let dov = View::rows(unsafe { self.dout.as_ptr().add(qoff) }, qs);
        let kv = View::rows(unsafe { self.k.as_ptr().add(koff) }, ks);
        let vv = View::rows(unsafe { self.v.as_ptr().add(koff) }, ks);
        let dq = unsafe { self.dq.get().add(qoff) };
        let dk = unsafe { self.dk.get().add(koff) };
        let dv = unsafe { self.dv.get().add(koff) };
        let pv = View::rows(p.as_ptr(), cols);

        // P = exp(scale * Q K^T - lse) on the visible part, 0 elsewhere.
        // SAFETY: `p` is a private buffer of rows * cols values; the views are in bounds.
        unsafe { matmul(rows, cols, d, p.as_mut_ptr(), cols, false, qv, kv.t(), scale) };
        for (ri, row) in p.chunks_exact_mut(cols).enumerate() {
            let (seen, hidden) = row.split_at_mut(r0 + ri + off + 1);
            exp_sub(seen, self.lse[(row0 + ri) * heads + head]);
            hidden.fill(0.0);
        }

        // dP = dO V^T (into `ds`), then dV += P^T dO.
        // SAFETY: `ds` is private; `dv` rows 0..cols of kv head `kvh` belong to this task (see the caller).
        unsafe {
            matmul(rows, cols, d, ds.as_mut_ptr(), cols, false, dov, vv.t(), 1.0);
            matmul(cols, d, rows, dv, ks, true, pv.t(), dov, 1.0);
        }

        // dS = scale * P o (dP - D), D_i = dO_i . O_i.
        for (ri, (dsrow, prow)) in ds.chunks_exact_mut(cols).zip(p.chunks_exact(cols)).enumerate() {
            let at = qoff + ri * qs;
            let dd = dot(&self.dout[at..at + d], &self.out[at..at + d]);
            let vis = r0 + ri + off + 1;
            let (seen, hidden) = dsrow.split_at_mut(vis);
            for (x, &pp) in seen.iter_mut().zip(&prow[..vis]) {
                *x = pp * (*x - dd) * scale;
            }
            hidden.fill(0.0);
        }

        // dQ = dS K (overwrite), dK += dS^T Q.
        let dsv = View::rows(ds.as_ptr(), cols);
        // SAFETY: `dq` rows r0..r1 of (segment, head) and `dk` rows 0..cols of kv head `kvh` belong to this task.
        unsafe {
            matmul(rows, d, cols, dq, qs, false, dsv, kv, 1.0);
            matmul(cols, d, rows, dk, ks, true, dsv.t(), qv, 1.0);
        }
    }
}

/// `exp(x)` in f32 (Cephes-style: `x = n ln2 + r`, degree-6 polynomial for `e^r`, `2^n` from the exponent
/// bits); relative error about 1e-7, branch-free so loops over it vectorise. Inputs are clamped to
/// `[-87, 88]` (softmax only feeds `x <= 0`, where the clamp changes the result by less than 1e-37); NaN stays
/// NaN.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000); // round(x * log2 e) as an integer
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut y = 1.987_569_1e-4f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 0.5;
    y = y * r * r + r + 1.0;
    let pow2 = f32::from_bits((ni.wrapping_add(127) as u32).wrapping_shl(23));
    y * pow2
}

/// The maximum of a non-empty slice (NaNs ignored), with a fixed lane layout.
#[inline(always)]
pub(crate) fn max_of(xs: &[f32]) -> f32 {
    let (chunks, tail) = xs.as_chunks::<LANES>();
    let mut acc = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    for (a, &x) in acc.iter_mut().zip(tail) {
        *a = if x > *a { x } else { *a };
    }
    acc.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// The sum of a slice, with a fixed lane layout.
#[inline(always)]
pub(crate) fn sum_of(xs: &[f32]) -> f32 {
    let (chunks, tail) = xs.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    for (a, &x) in acc.iter_mut().zip(tail) {
        *a += x;
    }
    lane_sum(acc)
}

/// `xs[j] = exp(xs[j] - sub)` in place.
#[inline(always)]
pub(crate) fn exp_sub(xs: &mut [f32], sub: f32) {
    for x in xs {
        *x = fast_exp(*x - sub);
    }
}

/// The dot product of two equal-length slices (fixed lane layout).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ta) = a.as_chunks::<LANES>();
    let (cb, tb) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ta.iter().zip(tb).enumerate() {
        acc[l] += x * y;
    }
    lane_sum(acc)
}

/// Pairwise sum of the lanes.
#[inline(always)]
fn lane_sum(a: [f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forces the portable build of the block kernels (see `use_avx2`).
    pub(super) static PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// Written into `out`/`dq`/`lse` before a call, to check that uncovered rows are left alone.
    const SENTINEL: f32 = 12345.0;

    /// splitmix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Uniform in lo..hi.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo) as u64) as usize
        }

        /// Standard normal (Box-Muller).
        fn normal(&mut self) -> f64 {
            let u1 = 1.0 - self.uniform();
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }

        fn normals(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.normal() as f32).collect()
        }
    }

    fn hd(heads: usize, kv_heads: usize, head_dim: usize) -> Heads {
        Heads { heads, kv_heads, head_dim }
    }

    /// Training-style segments of the given lengths packed back to back; returns them and the row count.
    fn packed(lens: &[usize]) -> (Vec<Seg>, usize) {
        let mut at = 0;
        let segs = lens
            .iter()
            .map(|&n| {
                let s = Seg { q_start: at, q_len: n, k_start: at, k_len: n };
                at += n;
                s
            })
            .collect();
        (segs, at)
    }

    /// Which query rows some segment covers.
    fn covered(segs: &[Seg], nq: usize) -> Vec<bool> {
        let mut c = vec![false; nq];
        for s in segs.iter().filter(|s| s.q_len > 0) {
            c[s.q_start..s.q_start + s.q_len].iter_mut().for_each(|x| *x = true);
        }
        c
    }

    /// Inputs of one test problem.
    struct Case {
        h: Heads,
        segs: Vec<Seg>,
        nq: usize,
        nk: usize,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        dout: Vec<f32>,
    }

    /// What the kernel produced.
    #[derive(PartialEq)]
    struct Outputs {
        out: Vec<f32>,
        lse: Vec<f32>,
        dq: Vec<f32>,
        dk: Vec<f32>,
        dv: Vec<f32>,
    }

    impl Case {
        fn new(h: Heads, segs: Vec<Seg>, nq: usize, nk: usize, seed: u64) -> Case {
            let mut rng = Rng(seed);
            let (qs, ks) = (h.heads * h.head_dim, h.kv_heads * h.head_dim);
            Case {
                h,
                segs,
                nq,
                nk,
                q: rng.normals(nq * qs),
                k: rng.normals(nk * ks),
                v: rng.normals(nk * ks),
                dout: rng.normals(nq * qs),
            }
        }

        /// Forward, then backward with zeroed `dk`/`dv`; `out`, `lse`, `dq` start as `SENTINEL`.
        fn run(&self) -> Outputs {
            let mut out = vec![SENTINEL; self.q.len()];
            let mut lse = vec![SENTINEL; self.nq * self.h.heads];
            forward(self.h, &self.segs, &self.q, &self.k, &self.v, &mut out, &mut lse);
            let mut dq = vec![SENTINEL; self.q.len()];
            let mut dk = vec![0.0; self.k.len()];
            let mut dv = vec![0.0; self.k.len()];
            backward(self.h, &self.segs, &self.q, &self.k, &self.v, &out, &lse, &self.dout, &mut dq, &mut dk, &mut dv);
            Outputs { out, lse, dq, dk, dv }
        }
    }

    /// The f64 reference results.
    struct Ref {
        out: Vec<f64>,
        lse: Vec<f64>,
        dq: Vec<f64>,
        dk: Vec<f64>,
        dv: Vec<f64>,
    }

    /// Naive f64 attention with explicit loops: scores, causal mask, softmax, weighted sum; and the backward by
    /// the same formulas, written per element. Uncovered rows of `out`/`lse`/`dq` are 0.
    #[allow(clippy::too_many_arguments)]
    fn reference(h: Heads, segs: &[Seg], nq: usize, nk: usize, q: &[f64], k: &[f64], v: &[f64], dout: &[f64]) -> Ref {
        let d = h.head_dim;
        let (qs, ks) = (h.heads * d, h.kv_heads * d);
        let group = h.heads / h.kv_heads;
        let scale = 1.0 / (d as f64).sqrt();
        let mut r = Ref {
            out: vec![0.0; nq * qs],
            lse: vec![0.0; nq * h.heads],
            dq: vec![0.0; nq * qs],
            dk: vec![0.0; nk * ks],
            dv: vec![0.0; nk * ks],
        };
        for s in segs {
            let off = s.k_len - s.q_len;
            for head in 0..h.heads {
                let g = head / group;
                for i in 0..s.q_len {
                    let qi = (s.q_start + i) * qs + head * d;
                    let krow = |j: usize| (s.k_start + j) * ks + g * d;
                    // Causal mask: key j is visible iff j <= i + off.
                    let scores: Vec<f64> = (0..s.k_len)
                        .map(|j| {
                            if j <= i + off {
                                scale * (0..d).map(|c| q[qi + c] * k[krow(j) + c]).sum::<f64>()
                            } else {
                                f64::NEG_INFINITY
                            }
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|&x| (x - m).exp()).sum();
                    let l = m + sum.ln();
                    let p: Vec<f64> = scores.iter().map(|&x| (x - l).exp()).collect();
                    r.lse[(s.q_start + i) * h.heads + head] = l;
                    for c in 0..d {
                        r.out[qi + c] = (0..s.k_len).map(|j| p[j] * v[krow(j) + c]).sum();
                    }
                    // Backward.
                    let dd: f64 = (0..d).map(|c| dout[qi + c] * r.out[qi + c]).sum();
                    for j in 0..s.k_len {
                        let dp: f64 = (0..d).map(|c| dout[qi + c] * v[krow(j) + c]).sum();
                        let ds = p[j] * (dp - dd);
                        for c in 0..d {
                            r.dv[krow(j) + c] += p[j] * dout[qi + c];
                            r.dq[qi + c] += scale * ds * k[krow(j) + c];
                            r.dk[krow(j) + c] += scale * ds * q[qi + c];
                        }
                    }
                }
            }
        }
        r
    }

    fn to64(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&x| x as f64).collect()
    }

    impl Case {
        fn reference(&self) -> Ref {
            reference(
                self.h,
                &self.segs,
                self.nq,
                self.nk,
                &to64(&self.q),
                &to64(&self.k),
                &to64(&self.v),
                &to64(&self.dout),
            )
        }
    }

    /// max |a - b| over the selected rows (`width` values per row).
    fn max_abs(a: &[f32], b: &[f64], width: usize, rows: &[bool]) -> f64 {
        let mut m = 0.0f64;
        for (r, &keep) in rows.iter().enumerate() {
            if keep {
                for c in r * width..(r + 1) * width {
                    m = m.max((a[c] as f64 - b[c]).abs());
                }
            }
        }
        m
    }

    /// max |a - b| / max(1, max |b|).
    fn rel_err(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let diff = a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y).abs()));
        diff / scale
    }

    /// The kernel against the reference, and uncovered rows untouched.
    fn check(h: Heads, segs: Vec<Seg>, nq: usize, nk: usize, seed: u64) {
        let case = Case::new(h, segs, nq, nk, seed);
        let got = case.run();
        let want = case.reference();
        let rows = covered(&case.segs, nq);
        let qs = h.heads * h.head_dim;
        let what = format!("{h:?} {:?}", case.segs);
        let e = max_abs(&got.out, &want.out, qs, &rows);
        assert!(e <= 1e-5, "out error {e:e} for {what}");
        let e = max_abs(&got.lse, &want.lse, h.heads, &rows);
        assert!(e <= 1e-5, "lse error {e:e} for {what}");
        let covered_only = |x: &[f32], keep_ref: bool| -> Vec<f64> {
            // Uncovered rows compared as equal (they are checked separately below).
            x.iter().enumerate().map(|(i, &y)| if rows[i / qs] || keep_ref { y as f64 } else { 0.0 }).collect()
        };
        let dq_got: Vec<f32> = covered_only(&got.dq, false).iter().map(|&x| x as f32).collect();
        let e = rel_err(&dq_got, &want.dq);
        assert!(e <= 1e-4, "dq relative error {e:e} for {what}");
        let e = rel_err(&got.dk, &want.dk);
        assert!(e <= 1e-4, "dk relative error {e:e} for {what}");
        let e = rel_err(&got.dv, &want.dv);
        assert!(e <= 1e-4, "dv relative error {e:e} for {what}");
        for (r, &c) in rows.iter().enumerate() {
            if !c {
                assert!(got.out[r * qs..(r + 1) * qs].iter().all(|&x| x == SENTINEL), "out row {r} touched");
                assert!(got.dq[r * qs..(r + 1) * qs].iter().all(|&x| x == SENTINEL), "dq row {r} touched");
                assert!(got.lse[r * h.heads..(r + 1) * h.heads].iter().all(|&x| x == SENTINEL), "lse row {r} touched");
            }
        }
    }

    #[test]
    fn matches_reference_packed_training() {
        let lens = [1, 2, 7, 37, 130];
        let configs = [hd(4, 2, 16), hd(4, 4, 32), hd(8, 4, 32), hd(2, 1, 8), hd(4, 2, 32), hd(2, 1, 16)];
        for (i, &h) in configs.iter().enumerate() {
            let mut l = lens.to_vec();
            l.rotate_left(i % lens.len());
            let (segs, n) = packed(&l);
            check(h, segs, n, n, 100 + i as u64);
        }
    }

    #[test]
    fn single_rows_and_long_segment() {
        check(hd(4, 2, 16), packed(&[1]).0, 1, 1, 7);
        check(hd(2, 1, 8), packed(&[2]).0, 2, 2, 8);
        check(hd(4, 2, 32), packed(&[200]).0, 200, 200, 9);
    }

    #[test]
    fn suffix_queries_against_longer_keys() {
        // A 3-query suffix of a 40-key sequence, a training segment, and a 2-query suffix of 20 keys, with
        // query and key rows at different positions; rows 12..15 of q are not covered.
        let segs = vec![
            Seg { q_start: 0, q_len: 3, k_start: 0, k_len: 40 },
            Seg { q_start: 3, q_len: 7, k_start: 40, k_len: 7 },
            Seg { q_start: 10, q_len: 2, k_start: 47, k_len: 20 },
            Seg { q_start: 15, q_len: 70, k_start: 67, k_len: 137 },
        ];
        for (i, h) in [hd(4, 2, 16), hd(8, 4, 32), hd(2, 1, 8)].into_iter().enumerate() {
            check(h, segs.clone(), 85, 204, 200 + i as u64);
        }
    }

    #[test]
    fn segments_sharing_key_rows_accumulate() {
        // Two continuations of one 30-key prefix, plus one more segment overlapping the second partially, and a
        // segment with its own keys; rows 40..44 of q are not covered.
        let segs = vec![
            Seg { q_start: 0, q_len: 20, k_start: 0, k_len: 30 },
            Seg { q_start: 20, q_len: 5, k_start: 0, k_len: 30 },
            Seg { q_start: 25, q_len: 10, k_start: 25, k_len: 12 },
            Seg { q_start: 44, q_len: 9, k_start: 40, k_len: 9 },
            Seg { q_start: 35, q_len: 5, k_start: 0, k_len: 5 },
        ];
        for (i, h) in [hd(4, 2, 16), hd(4, 4, 8), hd(2, 1, 32)].into_iter().enumerate() {
            check(h, segs.clone(), 53, 49, 300 + i as u64);
        }
        // The groups: segments 0, 1, 2, 4 overlap in keys, 3 is alone.
        assert_eq!(key_groups(&segs), vec![vec![0, 1, 2, 4], vec![3]]);
    }

    #[test]
    fn empty_segments_do_nothing() {
        let h = hd(4, 2, 16);
        let mut segs = packed(&[5, 9]).0;
        // q_len == 0 is accepted (even with start positions past the end) and does nothing.
        segs.insert(1, Seg { q_start: 1000, q_len: 0, k_start: 1000, k_len: 0 });
        segs.push(Seg { q_start: 3, q_len: 0, k_start: 0, k_len: 4 });
        check(h, segs, 20, 14, 11);
        check(h, Vec::new(), 3, 3, 12);
    }

    /// Finite differences on the f64 reference validate the reference backward itself.
    #[test]
    fn reference_backward_matches_finite_differences() {
        let h = hd(2, 1, 4);
        let segs = vec![
            Seg { q_start: 0, q_len: 3, k_start: 0, k_len: 3 },
            Seg { q_start: 3, q_len: 2, k_start: 3, k_len: 5 },
            Seg { q_start: 5, q_len: 2, k_start: 3, k_len: 4 },
        ];
        let (nq, nk) = (7, 8);
        let case = Case::new(h, segs.clone(), nq, nk, 21);
        let (q, k, v, dout) = (to64(&case.q), to64(&case.k), to64(&case.v), to64(&case.dout));
        let r = reference(h, &segs, nq, nk, &q, &k, &v, &dout);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
            let o = reference(h, &segs, nq, nk, q, k, v, &dout).out;
            o.iter().zip(&dout).map(|(a, b)| a * b).sum()
        };
        let eps = 1e-6;
        for (which, grad) in [(0, &r.dq), (1, &r.dk), (2, &r.dv)] {
            let mut fd = vec![0.0; grad.len()];
            for (idx, f) in fd.iter_mut().enumerate() {
                let mut x = [q.clone(), k.clone(), v.clone()];
                x[which][idx] += eps;
                let up = loss(&x[0], &x[1], &x[2]);
                x[which][idx] -= 2.0 * eps;
                let down = loss(&x[0], &x[1], &x[2]);
                *f = (up - down) / (2.0 * eps);
            }
            let scale = fd.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            let e = grad.iter().zip(&fd).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(e < 1e-7, "reference gradient {which} vs finite differences: {e:e}");
        }
    }

    /// Finite differences (f32, eps 1e-3) on the kernel's own forward validate its backward directly.
    #[test]
    fn kernel_backward_matches_finite_differences() {
        let h = hd(4, 2, 8);
        let segs = vec![
            Seg { q_start: 0, q_len: 3, k_start: 0, k_len: 3 },
            Seg { q_start: 3, q_len: 2, k_start: 3, k_len: 5 },
            Seg { q_start: 5, q_len: 2, k_start: 3, k_len: 4 },
        ];
        let (nq, nk) = (7, 8);
        let case = Case::new(h, segs.clone(), nq, nk, 22);
        let got = case.run();
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let mut out = vec![0.0; q.len()];
            let mut lse = vec![0.0; nq * h.heads];
            forward(h, &segs, q, k, v, &mut out, &mut lse);
            out.iter().zip(&case.dout).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let eps = 1e-3f32;
        for (which, grad) in [(0, &got.dq), (1, &got.dk), (2, &got.dv)] {
            let mut fd = vec![0.0f64; grad.len()];
            for (idx, f) in fd.iter_mut().enumerate() {
                let mut x = [case.q.clone(), case.k.clone(), case.v.clone()];
                let x0 = x[which][idx];
                x[which][idx] = x0 + eps;
                let up = loss(&x[0], &x[1], &x[2]);
                x[which][idx] = x0 - eps;
                let down = loss(&x[0], &x[1], &x[2]);
                *f = (up - down) / (2.0 * eps as f64);
            }
            let e = rel_err(grad, &fd);
            assert!(e < 2e-2, "kernel gradient {which} vs finite differences: {e:e}");
        }
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn bit_identical_across_thread_counts() {
        let mut rng = Rng(5);
        let lens: Vec<usize> = (0..12).map(|_| rng.range(20, 200)).collect();
        let (mut segs, n) = packed(&lens);
        // A suffix segment sharing key rows with the first training segment.
        segs.push(Seg { q_start: n, q_len: 4, k_start: 0, k_len: lens[0] });
        for h in [hd(4, 2, 32), hd(8, 4, 32), hd(4, 2, 16)] {
            let case = Case::new(h, segs.clone(), n + 4, n, 55);
            let one = pool(1).install(|| case.run());
            for threads in [2, 3, 4] {
                let many = pool(threads).install(|| case.run());
                assert!(same_bits(&one.out, &many.out), "out differs with {threads} threads");
                assert!(same_bits(&one.lse, &many.lse), "lse differs with {threads} threads");
                assert!(same_bits(&one.dq, &many.dq), "dq differs with {threads} threads");
                assert!(same_bits(&one.dk, &many.dk), "dk differs with {threads} threads");
                assert!(same_bits(&one.dv, &many.dv), "dv differs with {threads} threads");
            }
        }
    }

    #[test]
    fn segment_bits_do_not_depend_on_the_batch() {
        for h in [hd(4, 2, 32), hd(4, 2, 16), hd(8, 4, 32)] {
            let (qs, ks) = (h.heads * h.head_dim, h.kv_heads * h.head_dim);
            for (ql, kl) in [(130, 130), (70, 150), (1, 9)] {
                let alone = Case::new(h, vec![Seg { q_start: 0, q_len: ql, k_start: 0, k_len: kl }], ql, kl, 77);
                // The same segment at odd row offsets, after and before other segments.
                let (mut segs, n) = packed(&[37, 7, 200]);
                let (q0, k0) = (n + 3, n + 1);
                segs.insert(2, Seg { q_start: q0, q_len: ql, k_start: k0, k_len: kl });
                segs.push(Seg { q_start: q0 + ql, q_len: 5, k_start: k0 + kl, k_len: 5 });
                let (nq, nk) = (q0 + ql + 5, k0 + kl + 5);
                let mut batch = Case::new(h, segs, nq, nk, 78);
                batch.q[q0 * qs..(q0 + ql) * qs].copy_from_slice(&alone.q);
                batch.dout[q0 * qs..(q0 + ql) * qs].copy_from_slice(&alone.dout);
                batch.k[k0 * ks..(k0 + kl) * ks].copy_from_slice(&alone.k);
                batch.v[k0 * ks..(k0 + kl) * ks].copy_from_slice(&alone.v);
                let a = alone.run();
                let b = pool(2).install(|| batch.run());
                let what = format!("{h:?} q_len {ql} k_len {kl}");
                assert!(same_bits(&a.out, &b.out[q0 * qs..(q0 + ql) * qs]), "out differs: {what}");
                assert!(same_bits(&a.lse, &b.lse[q0 * h.heads..(q0 + ql) * h.heads]), "lse differs: {what}");
                assert!(same_bits(&a.dq, &b.dq[q0 * qs..(q0 + ql) * qs]), "dq differs: {what}");
                assert!(same_bits(&a.dk, &b.dk[k0 * ks..(k0 + kl) * ks]), "dk differs: {what}");
                assert!(same_bits(&a.dv, &b.dv[k0 * ks..(k0 + kl) * ks]), "dv differs: {what}");
            }
        }
    }

    #[test]
    fn portable_and_avx2_builds_agree_bitwise() {
        let mut segs = packed(&[1, 2, 7, 37, 130, 9]).0;
        segs.push(Seg { q_start: 186, q_len: 3, k_start: 0, k_len: 40 });
        for h in [hd(4, 2, 32), hd(2, 1, 16), hd(4, 4, 8)] {
            let case = Case::new(h, segs.clone(), 189, 186, 91);
            let fast = case.run();
            PORTABLE.store(true, std::sync::atomic::Ordering::SeqCst);
            let portable = case.run();
            PORTABLE.store(false, std::sync::atomic::Ordering::SeqCst);
            for (name, a, b) in [
                ("out", &fast.out, &portable.out),
                ("lse", &fast.lse, &portable.lse),
                ("dq", &fast.dq, &portable.dq),
                ("dk", &fast.dk, &portable.dk),
                ("dv", &fast.dv, &portable.dv),
            ] {
                assert!(same_bits(a, b), "{name} differs between the AVX2 and portable builds for {h:?}");
            }
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            worst = worst.max(((fast_exp(x) as f64) - want).abs() / want);
            x += 0.001;
        }
        assert!(worst < 3e-7, "fast_exp relative error {worst:e}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(-1000.0) < 1e-37);
        assert!(fast_exp(f32::NAN).is_nan());
    }

    /// The message of the panic `f` raises (a test of a checked precondition asserts it).
    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = std::panic::catch_unwind(f).expect_err("the call panics");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    #[test]
    fn inconsistent_inputs_panic_with_a_message_that_says_what_is_wrong() {
        let h = hd(2, 1, 4);
        let overlapping = vec![
            Seg { q_start: 0, q_len: 3, k_start: 0, k_len: 3 },
            Seg { q_start: 2, q_len: 2, k_start: 3, k_len: 2 },
        ];
        let case = Case::new(h, overlapping, 4, 5, 1);
        assert!(panic_message(|| drop(case.run())).contains("share query rows"));

        let (segs, n) = packed(&[2]);
        let case = Case::new(h, segs, n, n, 1);
        let message = panic_message(|| {
            let (mut out, mut lse) = (vec![0.0; 8], vec![0.0; 4]);
            forward(h, &case.segs, &case.q, &case.k, &case.v, &mut out, &mut lse);
        });
        assert!(message.contains("out has 8 values"), "{message}");

        let case = Case::new(h, vec![Seg { q_start: 0, q_len: 3, k_start: 0, k_len: 2 }], 3, 3, 1);
        assert!(panic_message(|| drop(case.run())).contains("k_len < q_len"));
    }
}
