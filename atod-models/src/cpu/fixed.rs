//! Matrix products whose every bit is fixed by their inputs: the same at every instruction-set level, for any
//! number of threads and for any split of the work.
//!
//! Each output element is one chain of fused multiply-adds over `p` in increasing order:
//!
//! ```text
//! acc = if accumulate { c[i, j] } else { 0.0 };
//! for p in 0..k { acc = fma(op(a)[i, p], op(b)[p, j], acc) }
//! c[i, j] = acc
//! ```
//!
//! Vectors run across output columns only, one element a lane, never across `p`, so the AVX-512 kernel (16
//! lanes), the AVX2 kernel (8 lanes) and the portable one (`f32::mul_add`) round identically, and so does any
//! assignment of output tiles to threads. The reduction is cut into blocks of `KC` only by storing the
//! chain's value into `c` after a block and reloading it for the next, which continues the same chain. The `gemm`
//! crate, by contrast, picks its microkernel, its blocking of `k` and its special paths from the CPU it finds,
//! so its sums are ordered differently from one machine to the next.
//!
//! The work is laid out as in GotoBLAS. The tasks are tiles of `c`, `ROW_TILES` strips of `MR` rows by
//! `TASK_COLUMNS` columns (thinner when there would be too few to share among rayon's threads). A task walks
//! the reduction in blocks of `KC`; in each block every strip of `op(a)` meets every panel of `NR` columns of
//! `op(b)` in a register tile of `MR × NR` accumulators (8 × 32 with AVX-512, 6 × 16 with AVX2, 4 × 16
//! portable), which broadcasts `op(a)[i, p]` and loads `op(b)[p, j..j + NR]`. Panels are packed `[kc][NR]`,
//! zero-padded past `n`: a plain `b` block by block in each task, a transposed one whole, once per call (its
//! transposition is the expensive part). A plain `a` is read in place; a transposed one is packed into strips
//! `[kc][MR]` block by block. What a task packs, it prefetches one block ahead while it computes.
//!
//! On a 2-core AVX-512 machine (Zen 4) this runs as fast as `gemm`, within the noise of about 10%, on the
//! products of a training step, on one thread and on two (`cargo bench -p atod-benches --bench models -- fixed`).

use std::cell::RefCell;
use std::ops::Range;
use std::thread::LocalKey;

use rayon::prelude::*;

use super::attention::SendPtr;
use super::isa::{self, Level};

/// The block of the reduction a tile sums before its accumulators go back to `c`.
const KC: usize = 256;
/// Columns of `c` per task (a multiple of every kernel's `NR`).
const TASK_COLUMNS: usize = 256;
/// Register tiles stacked in a task's rows: a task has `ROW_TILES * MR` rows.
const ROW_TILES: usize = 32;
/// Products with fewer multiply-adds run on the calling thread: waking the pool costs more than they take.
const PARALLEL_FLOPS: usize = 1 << 20;
/// The largest scratch buffer (in floats) a thread keeps between calls; larger ones are allocated per call.
const SCRATCH_KEEP: usize = 1 << 18;

/// `c[m, n] = (accumulate ? c : 0) + op(a) · op(b)` as one fma chain per element (see the module docs), where
/// `op(a)` is `[m, k]`, stored row-major as `[m, k]`, or as `[k, m]` when `a_t`; `op(b)` is `[k, n]`, stored as
/// `[k, n]`, or as `[n, k]` when `b_t`. Runs at [`isa::level`]; with `parallel` (and enough work), tiles go to
/// rayon's threads, which changes no bit of the result.
///
/// # Panics
/// When a slice is shorter than its shape needs.
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
    parallel: bool,
) {
    matmul_at(isa::level(), m, n, k, a, a_t, b, b_t, c, accumulate, parallel);
}

/// [`matmul`] at an explicit instruction-set level, for tests and benches; the result is the same at every level.
///
/// # Panics
/// When the CPU lacks `level`, or a slice is shorter than its shape needs.
#[allow(clippy::too_many_arguments)]
pub fn matmul_at(
    level: Level,
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
    let best = isa::detected();
    assert!(level <= best, "fixed::matmul_at: this CPU cannot run {level} (the best it has is {best})");
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "fixed::matmul: slices too short for {m}x{k}x{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let product = Product { m, n, k, a, a_t, b, b_t, accumulate };
    let parallel = parallel && rayon::current_num_threads() > 1 && m * n * k >= PARALLEL_FLOPS;
    match level {
        Level::Portable => product.run::<Portable>(c, parallel),
        #[cfg(target_arch = "x86_64")]
        Level::V3 => product.run::<x86::Avx2>(c, parallel),
        #[cfg(target_arch = "x86_64")]
        Level::V4 => product.run::<x86::Avx512>(c, parallel),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the portable level exists off x86-64"),
    }
}

/// A register-tile kernel of one instruction-set level.
trait Kernel {
    /// Rows of a full tile.
    const MR: usize;
    /// Columns of a packed panel of `op(b)`, and of a full tile.
    const NR: usize;

    /// Continues the chains of the tile `c[0..rows, 0..width]` (row stride `ldc`) over `kc` steps of the
    /// reduction: `op(a)[r, p]` is at `a + r * a_rs + p * a_ps`, `op(b)[p, j]` at `b + p * NR + j`. The tile
    /// starts from `c` when `load`, from zeros otherwise.
    ///
    /// # Safety
    /// `rows` is in `1..=MR` and `width` in `1..=NR`; the `a` and `b` addresses above are readable for `r < rows`,
    /// `p < kc` and `j < NR`; `c` has `rows` rows, `ldc` floats apart, of `NR` floats that no one else touches
    /// (a kernel writes whole vectors, so it may write past `width`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        rows: usize,
        width: usize,
        kc: usize,
        a: *const f32,
        a_rs: usize,
        a_ps: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        load: bool,
    );
}

/// One call's operands.
#[derive(Clone, Copy)]
struct Product<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    a_t: bool,
    b: &'a [f32],
    b_t: bool,
    accumulate: bool,
}

impl Product<'_> {
    /// Packs `op(b)`, then computes every task, side by side with `parallel`.
    fn run<K: Kernel>(self, c: &mut [f32], parallel: bool) {
        let panel = self.k * K::NR;
        let panels = self.n.div_ceil(K::NR);
        let col_blocks = self.n.div_ceil(TASK_COLUMNS);
        // With few tasks, thinner row blocks, so that every thread gets some (the split changes no bit).
        let mut rows_per_task = ROW_TILES * K::MR;
        if parallel {
            let enough = 2 * rayon::current_num_threads();
            while rows_per_task > K::MR && self.m.div_ceil(rows_per_task) * col_blocks < enough {
                rows_per_task /= 2;
            }
        }
        let grid = Grid { rows_per_task, col_blocks };
        let tasks = self.m.div_ceil(rows_per_task) * col_blocks;
        let parallel = parallel && tasks > 1;
        // A transposed `b` is packed whole, once: transposing it again for every row block would cost more than
        // the product for few rows. A plain one is packed a block at a time by each task.
        let packed_len = if self.b_t { panels * panel } else { 0 };
        with_scratch(&PACKED_B, packed_len, |packed| {
            if self.b_t {
                let pack = |(q, dst): (usize, &mut [f32])| self.pack_panel::<K>(q * K::NR, 0..self.k, dst);
                if parallel && panels > 1 {
                    packed.par_chunks_mut(panel).enumerate().for_each(pack);
                } else {
                    packed.chunks_mut(panel).enumerate().for_each(pack);
                }
            }
            let packed = &*packed;
            let out = SendPtr(c.as_mut_ptr());
            // SAFETY: `matmul_at` checked that `c` holds `m * n` floats, `a` its `m * k` and `b` its `k * n`;
            // `packed` holds the panels of a transposed `b`; tasks write disjoint tiles of `c`.
            let task = |t: usize| unsafe { self.task::<K>(packed, out.get(), grid, t) };
            if parallel {
                (0..tasks).into_par_iter().for_each(task);
            } else {
                (0..tasks).for_each(task);
            }
        });
    }

    /// Rows `ps` of columns `j0..j0 + NR` of `op(b)` as a `[ps.len()][NR]` panel, zeros past column `n`.
    fn pack_panel<K: Kernel>(&self, j0: usize, ps: Range<usize>, dst: &mut [f32]) {
        let (n, k, nr) = (self.n, self.k, K::NR);
        let width = (n - j0).min(nr);
        if self.b_t {
            if width < nr {
                dst.fill(0.0);
            }
            // Eight columns at a time, so that each row of the panel is written in few passes.
            let mut j = 0;
            while j + 8 <= width {
                let src: [&[f32]; 8] =
                    std::array::from_fn(|t| &self.b[(j0 + j + t) * k + ps.start..(j0 + j + t) * k + ps.end]);
                for (p, row) in dst.chunks_exact_mut(nr).enumerate() {
                    let row = &mut row[j..j + 8];
                    for t in 0..8 {
                        row[t] = src[t][p];
                    }
                }
                j += 8;
            }
            for jj in j..width {
                let src = &self.b[(j0 + jj) * k + ps.start..(j0 + jj) * k + ps.end];
                for (row, &v) in dst.chunks_exact_mut(nr).zip(src) {
                    row[jj] = v;
                }
            }
        } else if width == K::NR {
            // A length known at compile time: vector moves rather than a call to `memcpy` per row.
            for (p, row) in ps.zip(dst.chunks_exact_mut(K::NR)) {
                row.copy_from_slice(&self.b[p * n + j0..p * n + j0 + K::NR]);
            }
        } else {
            for (p, row) in ps.zip(dst.chunks_exact_mut(K::NR)) {
                row[..width].copy_from_slice(&self.b[p * n + j0..p * n + j0 + width]);
                row[width..].fill(0.0);
            }
        }
    }

    /// Rows `i0..i0 + rows` of `op(a)`, columns `ps`, as a `[ps.len()][MR]` strip, from a transposed `a` (the
    /// rows past `rows` are left as they are).
    fn pack_strip<K: Kernel>(&self, i0: usize, rows: usize, ps: Range<usize>, dst: &mut [f32]) {
        let m = self.m;
        if rows == K::MR {
            // A length known at compile time: vector moves rather than a call to `memcpy` per row.
            for (p, dst) in ps.zip(dst.chunks_exact_mut(K::MR)) {
                dst.copy_from_slice(&self.a[p * m + i0..p * m + i0 + K::MR]);
            }
        } else {
            for (p, dst) in ps.zip(dst.chunks_exact_mut(K::MR)) {
                dst[..rows].copy_from_slice(&self.a[p * m + i0..p * m + i0 + rows]);
            }
        }
    }

    /// Asks for the parts of rows `ps` of the operands that a task packs (rows `is` of a transposed `a`,
    /// columns `js` of a plain `b`) to be brought into the cache: a hint, which changes no result.
    fn prefetch(&self, ps: Range<usize>, is: Range<usize>, js: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            for p in ps {
                if self.a_t {
                    for i in is.clone().step_by(16) {
                        // SAFETY: a prefetch does not access memory; the address is inside `a` anyway.
                        unsafe { _mm_prefetch::<_MM_HINT_T1>(self.a.as_ptr().add(p * self.m + i).cast()) };
                    }
                }
                if !self.b_t {
                    for j in js.clone().step_by(16) {
                        // SAFETY: as above, inside `b`.
                        unsafe { _mm_prefetch::<_MM_HINT_T1>(self.b.as_ptr().add(p * self.n + j).cast()) };
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (ps, is, js);
    }

    /// Task `t` of `grid`, a tile of `c`: for each block of the reduction, each row strip of the tile meets
    /// every panel of `op(b)` in the tile's columns.
    ///
    /// # Safety
    /// `c` points to `m * n` floats of which no one else touches this tile; `packed` holds every panel of a
    /// transposed `b`.
    unsafe fn task<K: Kernel>(&self, packed: &[f32], c: *mut f32, grid: Grid, t: usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        let (rb, cb) = (t / grid.col_blocks, t % grid.col_blocks);
        let (r0, r1) = (rb * grid.rows_per_task, ((rb + 1) * grid.rows_per_task).min(m));
        let (j0, j1) = (cb * TASK_COLUMNS, ((cb + 1) * TASK_COLUMNS).min(n));
        let strips = (r1 - r0).div_ceil(K::MR);
        let panels = (j1 - j0).div_ceil(K::NR);
        let kc_max = KC.min(k);
        // A transposed `a` is copied into strips `[kc][MR]`: read in place, the rows of a strip (`m` floats apart,
        // often a power of two) would share a few cache sets. A plain `b` is copied into panels `[kc][NR]`, for
        // the same reason and so that each of its blocks is read from memory once per task.
        let a_len = if self.a_t { strips * K::MR * kc_max } else { 0 };
        let b_len = if self.b_t { 0 } else { panels * K::NR * kc_max };
        with_scratch(&PACKED_TASK, a_len + b_len, |scratch| {
            let (a_buf, b_buf) = scratch.split_at_mut(a_len);
            let mut edge = [0f32; MAX_TILE];
            let mut p0 = 0;
            while p0 < k {
                let kc = (k - p0).min(kc_max);
                let load = self.accumulate || p0 > 0;
                if self.a_t {
                    for (s, dst) in a_buf.chunks_exact_mut(kc * K::MR).take(strips).enumerate() {
                        let i = r0 + s * K::MR;
                        self.pack_strip::<K>(i, (r1 - i).min(K::MR), p0..p0 + kc, dst);
                    }
                }
                if !self.b_t {
                    for (q, dst) in b_buf.chunks_exact_mut(kc * K::NR).take(panels).enumerate() {
                        self.pack_panel::<K>(j0 + q * K::NR, p0..p0 + kc, dst);
                    }
                }
                let next = p0 + kc..(p0 + 2 * kc).min(k);
                let per = next.len().div_ceil(strips);
                for s in 0..strips {
                    // This strip's share of the rows of the next block, brought into the cache while the block
                    // is computed, so that packing it does not wait for memory.
                    let ps = (next.start + s * per).min(next.end)..(next.start + (s + 1) * per).min(next.end);
                    self.prefetch(ps, r0..r1, j0..j1);
                    let (i, rows) = (r0 + s * K::MR, (r1 - r0 - s * K::MR).min(K::MR));
                    let (a, a_rs, a_ps) = if self.a_t {
                        (a_buf.as_ptr().add(s * kc * K::MR), 1, K::MR)
                    } else {
                        (self.a.as_ptr().add(i * k + p0), k, 1)
                    };
                    for q in 0..panels {
                        let (j, width) = (j0 + q * K::NR, (j1 - j0 - q * K::NR).min(K::NR));
                        let b = if self.b_t {
                            packed.as_ptr().add((j / K::NR) * k * K::NR + p0 * K::NR)
                        } else {
                            b_buf.as_ptr().add(q * kc * K::NR)
                        };
                        let tile = c.add(i * n + j);
                        if width == K::NR {
                            K::tile(rows, width, kc, a, a_rs, a_ps, b, tile, n, load);
                            continue;
                        }
                        // The last columns of `c`: the tile goes through a buffer a full panel wide, so that the
                        // kernel's whole vectors stay inside memory it may write.
                        let edge = edge.as_mut_ptr();
                        if load {
                            for r in 0..rows {
                                std::ptr::copy_nonoverlapping(tile.add(r * n), edge.add(r * K::NR), width);
                            }
                        }
                        K::tile(rows, width, kc, a, a_rs, a_ps, b, edge, K::NR, load);
                        for r in 0..rows {
                            std::ptr::copy_nonoverlapping(edge.add(r * K::NR), tile.add(r * n), width);
                        }
                    }
                }
                p0 += kc;
            }
        });
    }
}

/// How the output is cut into tasks: blocks of `rows_per_task` rows (a multiple of the kernel's `MR`) by
/// `col_blocks` blocks of [`TASK_COLUMNS`] columns, numbered row-major.
#[derive(Clone, Copy)]
struct Grid {
    rows_per_task: usize,
    col_blocks: usize,
}

/// The largest `MR * NR` of the kernels: the size of the buffer of an edge tile.
const MAX_TILE: usize = 8 * 32;

thread_local! {
    /// Each thread's packed transposed `b`.
    static PACKED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each thread's packed blocks of a transposed `a` and of a plain `b`.
    static PACKED_TASK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a buffer of `len` floats (of unspecified values): the thread's own `scratch`, grown as needed,
/// unless `len` is above [`SCRATCH_KEEP`].
fn with_scratch<R>(scratch: &'static LocalKey<RefCell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if len > SCRATCH_KEEP {
        return f(&mut vec![0f32; len]);
    }
    // Taken out of the cell, so that a product started on this thread while `f` waits (rayon's work stealing)
    // finds the cell empty and uses a buffer of its own.
    let mut buf = scratch.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    scratch.with(|s| {
        let mut cell = s.borrow_mut();
        if cell.len() < buf.len() {
            *cell = buf;
        }
    });
    result
}

/// The portable kernel: plain loops over `f32::mul_add`, one row of the tile at a time.
struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;
    const NR: usize = 16;

    unsafe fn tile(
        rows: usize,
        width: usize,
        kc: usize,
        a: *const f32,
        a_rs: usize,
        a_ps: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        load: bool,
    ) {
        for r in 0..rows {
            let mut acc = [0f32; Self::NR];
            let acc = &mut acc[..width];
            if load {
                acc.copy_from_slice(std::slice::from_raw_parts(c.add(r * ldc), width));
            }
            for p in 0..kc {
                let av = *a.add(r * a_rs + p * a_ps);
                let bp = std::slice::from_raw_parts(b.add(p * Self::NR), width);
                for (acc, &bv) in acc.iter_mut().zip(bp) {
                    *acc = av.mul_add(bv, *acc);
                }
            }
            std::slice::from_raw_parts_mut(c.add(r * ldc), width).copy_from_slice(acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Kernel;

    /// Generates the register tile of one instruction set, generic over its rows `R` and its vectors `V` (of
    /// `$lanes` floats), and its [`Kernel`] (`MR` rows, two vectors wide), which picks the variant for a tile.
    macro_rules! kernel {
        ($kernel:ident, $tile:ident, $features:literal, $lanes:expr, $mr:expr, [$($rows:literal),*],
         $zero:ident, $load:ident, $store:ident, $broadcast:ident, $fma:ident) => {
            /// `R` rows × `V` vectors of the tile, the accumulators in registers for the whole block.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $tile<const R: usize, const V: usize>(
                kc: usize,
                a: *const f32,
                a_rs: usize,
                a_ps: usize,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                load: bool,
            ) {
                let mut acc = [[$zero(); V]; R];
                if load {
                    for r in 0..R {
                        for v in 0..V {
                            acc[r][v] = $load(c.add(r * ldc + v * $lanes));
                        }
                    }
                }
                // Raw offsets and `_mm_load_ss` rather than indexing and `*ptr`: the loop then carries no
                // overflow or alignment checks in builds with debug assertions (the test profile).
                let rows: [*const f32; R] = std::array::from_fn(|r| a.wrapping_add(r * a_rs));
                let mut b = b;
                for p in 0..kc {
                    let mut bv = [$zero(); V];
                    for v in 0..V {
                        bv[v] = $load(b.wrapping_add(v * $lanes));
                    }
                    let offset = p.wrapping_mul(a_ps);
                    for r in 0..R {
                        let av = $broadcast(_mm_load_ss(rows[r].wrapping_add(offset)));
                        for v in 0..V {
                            acc[r][v] = $fma(av, bv[v], acc[r][v]);
                        }
                    }
                    b = b.wrapping_add(2 * $lanes);
                }
                for r in 0..R {
                    for v in 0..V {
                        $store(c.add(r * ldc + v * $lanes), acc[r][v]);
                    }
                }
            }

            /// The register tile of this instruction set.
            pub(super) struct $kernel;

            impl Kernel for $kernel {
                const MR: usize = $mr;
                const NR: usize = 2 * $lanes;

                unsafe fn tile(
                    rows: usize,
                    width: usize,
                    kc: usize,
                    a: *const f32,
                    a_rs: usize,
                    a_ps: usize,
                    b: *const f32,
                    c: *mut f32,
                    ldc: usize,
                    load: bool,
                ) {
                    let two = width > $lanes;
                    match rows {
                        $(
                            $rows if two => $tile::<$rows, 2>(kc, a, a_rs, a_ps, b, c, ldc, load),
                            $rows => $tile::<$rows, 1>(kc, a, a_rs, a_ps, b, c, ldc, load),
                        )*
                        _ => unreachable!("a tile has 1..={} rows", $mr),
                    }
                }
            }
        };
    }

    kernel!(
        Avx512,
        tile_avx512,
        "avx512f",
        16,
        8,
        [1, 2, 3, 4, 5, 6, 7, 8],
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_broadcastss_ps,
        _mm512_fmadd_ps
    );
    kernel!(
        Avx2,
        tile_avx2,
        "avx2,fma",
        8,
        6,
        [1, 2, 3, 4, 5, 6],
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_broadcastss_ps,
        _mm256_fmadd_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use atod_core::rng::SplitMix64;
    use proptest::prelude::*;

    /// The definition: one `mul_add` chain per element, in increasing `p`.
    #[allow(clippy::too_many_arguments)]
    fn reference(
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
        for i in 0..m {
            for j in 0..n {
                let mut acc = if accumulate { c[i * n + j] } else { 0.0 };
                for p in 0..k {
                    let x = if a_t { a[p * m + i] } else { a[i * k + p] };
                    let y = if b_t { b[j * k + p] } else { b[p * n + j] };
                    acc = x.mul_add(y, acc);
                }
                c[i * n + j] = acc;
            }
        }
    }

    fn random(rng: &mut SplitMix64, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.unit() as f32 * 2.0 - 1.0).collect()
    }

    fn levels() -> impl Iterator<Item = Level> {
        Level::ALL.into_iter().filter(|&l| l <= isa::detected())
    }

    /// Inputs of a shape (with a few floats to spare after each operand), and the starting `c`: random values
    /// when accumulating, NaN otherwise (which must not leak into the result).
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        a: Vec<f32>,
        b: Vec<f32>,
        c: Vec<f32>,
    }

    const SPARE: usize = 3;

    impl Case {
        fn new(m: usize, n: usize, k: usize, accumulate: bool, seed: u64) -> Self {
            let mut rng = SplitMix64::new(seed);
            let a = random(&mut rng, m * k + SPARE);
            let b = random(&mut rng, k * n + SPARE);
            let mut c = if accumulate { random(&mut rng, m * n) } else { vec![f32::NAN; m * n] };
            c.extend([7.0; SPARE]);
            Self { m, n, k, a, b, c }
        }

        fn want(&self, a_t: bool, b_t: bool, accumulate: bool) -> Vec<f32> {
            let mut c = self.c.clone();
            reference(self.m, self.n, self.k, &self.a, a_t, &self.b, b_t, &mut c, accumulate);
            c
        }

        fn got(&self, level: Level, a_t: bool, b_t: bool, accumulate: bool, parallel: bool) -> Vec<f32> {
            let mut c = self.c.clone();
            matmul_at(level, self.m, self.n, self.k, &self.a, a_t, &self.b, b_t, &mut c, accumulate, parallel);
            c
        }
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// Every level, layout and mode of `m x n x k` gives the reference's bits, and leaves the floats past `c`
    /// alone.
    fn check(m: usize, n: usize, k: usize) {
        for accumulate in [false, true] {
            let case = Case::new(m, n, k, accumulate, (m * 1_000_003 + n * 1009 + k) as u64);
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                let want = case.want(a_t, b_t, accumulate);
                assert_eq!(want[m * n..], [7.0; SPARE]);
                for level in levels() {
                    let got = case.got(level, a_t, b_t, accumulate, true);
                    assert!(
                        bits(&got) == bits(&want),
                        "{m}x{n}x{k} a_t={a_t} b_t={b_t} accumulate={accumulate} at {level}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_shape_layout_and_level_gives_the_reference_bits() {
        let shapes = [
            (0, 5, 3),
            (5, 0, 3),
            (0, 0, 0),
            (1, 1, 1),
            (1, 17, 1),
            (2, 1, 9),
            (7, 13, 5),
            (8, 32, 256),
            (9, 33, 257),
            (6, 16, 31),
            (13, 31, 300),
            (5, 48, 2),
            (31, 65, 129),
            (64, 200, 32),
            (17, 16, 513),
            (130, 257, 70),
            (97, 290, 19),
        ];
        for (m, n, k) in shapes {
            check(m, n, k);
        }
    }

    #[test]
    fn an_empty_reduction_keeps_or_zeroes_c() {
        for level in levels() {
            for accumulate in [false, true] {
                let case = Case::new(3, 4, 0, accumulate, 1);
                let got = case.got(level, false, true, accumulate, true);
                let want = if accumulate { case.c.clone() } else { [vec![0.0; 12], vec![7.0; SPARE]].concat() };
                assert_eq!(bits(&got), bits(&want), "accumulate={accumulate} at {level}");
            }
        }
    }

    #[test]
    fn the_bits_do_not_depend_on_the_number_of_threads() {
        // Shapes with many tasks (row blocks × column blocks) and several blocks of the reduction.
        for (m, n, k) in [(300, 520, 70), (256, 64, 600), (37, 700, 300)] {
            for accumulate in [false, true] {
                let case = Case::new(m, n, k, accumulate, 11);
                for (a_t, b_t) in [(false, false), (true, false), (false, true)] {
                    let want = case.want(a_t, b_t, accumulate);
                    for threads in [1, 2, 3] {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                        for level in levels().filter(|&l| l > Level::Portable || threads == 2) {
                            let got = pool.install(|| case.got(level, a_t, b_t, accumulate, true));
                            assert!(
                                bits(&got) == bits(&want),
                                "{m}x{n}x{k} a_t={a_t} b_t={b_t} accumulate={accumulate} at {level} on {threads} threads"
                            );
                        }
                    }
                    let serial = case.got(isa::detected(), a_t, b_t, accumulate, false);
                    assert_eq!(bits(&serial), bits(&want));
                }
            }
        }
    }

    #[test]
    fn the_current_level_is_used_and_agrees_with_gemm() {
        for (m, n, k, a_t, b_t) in
            [(200, 96, 300, false, false), (64, 300, 48, false, true), (96, 80, 700, true, false)]
        {
            let case = Case::new(m, n, k, true, 5);
            let mut got = case.c.clone();
            matmul(m, n, k, &case.a, a_t, &case.b, b_t, &mut got, true, true);
            assert_eq!(bits(&got), bits(&case.want(a_t, b_t, true)));
            let mut gemm = case.c.clone();
            super::super::kernels::matmul(m, n, k, &case.a, a_t, &case.b, b_t, &mut gemm, true);
            // Both sum k products of magnitude below one, each rounding differently.
            let tolerance = 4.0 * k as f32 * f32::EPSILON;
            for (e, (x, y)) in got.iter().zip(&gemm).enumerate() {
                assert!((x - y).abs() <= tolerance, "{m}x{n}x{k} element {e}: {x} vs gemm {y}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_shapes_give_the_reference_bits(
            m in 0usize..40,
            n in 0usize..80,
            k in 0usize..300,
            a_t: bool,
            b_t: bool,
            accumulate: bool,
            seed: u64,
        ) {
            let case = Case::new(m, n, k, accumulate, seed);
            let want = bits(&case.want(a_t, b_t, accumulate));
            for level in levels() {
                prop_assert_eq!(&bits(&case.got(level, a_t, b_t, accumulate, false)), &want, "at {}", level);
            }
        }
    }
}
