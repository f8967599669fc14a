//! Matrix products with few rows: `y[m, n] (+)= x[m, k] · W[k, n]` for the handful of rows a decoding step has.
//!
//! A general GEMM packs both operands into panels on every call; with sixteen rows that packing of the weights
//! costs as much as the product. Here each weight row is streamed once per block of four output rows, straight
//! from its row-major layout, into register accumulators (four rows × 64 columns with AVX-512, × 32 with AVX2).
//! Every output element is a sequential sum over `k` in order, whatever the instruction set and the number of
//! threads, so the result is deterministic on one machine.

use rayon::prelude::*;

use super::attention::SendPtr;

/// Columns per parallel task.
const TASK_COLUMNS: usize = 256;

/// `y (+)= x · w` with `x` `[m, k]`, `w` `[k, n]` and `y` `[m, n]`, all row-major; with `parallel`, blocks of
/// columns are computed side by side on rayon's threads (the result is the same either way).
#[allow(clippy::too_many_arguments)]
pub fn matmul_rows(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    assert!(x.len() >= m * k && w.len() >= k * n && y.len() >= m * n, "matmul_rows: slices too short");
    if m == 0 || n == 0 {
        return;
    }
    if !accumulate {
        y[..m * n].fill(0.0);
    }
    let tasks = n.div_ceil(TASK_COLUMNS);
    if parallel && tasks > 1 && m * n * k >= 1 << 17 && rayon::current_num_threads() > 1 {
        let y = SendPtr(y.as_mut_ptr());
        (0..tasks).into_par_iter().for_each(|t| {
            let (c0, c1) = (t * TASK_COLUMNS, ((t + 1) * TASK_COLUMNS).min(n));
            // SAFETY: tasks write disjoint column ranges of `y`, whose length was checked above.
            unsafe { columns(m, n, k, x, w, y.get(), c0, c1) };
        });
    } else {
        // SAFETY: as above, with one task covering every column.
        unsafe { columns(m, n, k, x, w, y.as_mut_ptr(), 0, n) };
    }
}

/// Columns `c0..c1` of the product, added to `y`.
///
/// # Safety
/// `y` points to `m * n` floats; no other thread writes these columns.
#[allow(clippy::too_many_arguments)]
unsafe fn columns(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], y: *mut f32, c0: usize, c1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::isa::{level, Level};
        // `level()` never exceeds what the CPU has (super::isa); it is lower when forced.
        match level() {
            Level::V4 => return x86::columns_avx512(m, n, k, x, w, y, c0, c1),
            Level::V3 => return x86::columns_avx2(m, n, k, x, w, y, c0, c1),
            Level::Portable => {}
        }
    }
    scalar(m, n, k, x, w, y, c0, c1);
}

/// The portable path: the same sums in the same order, one column at a time.
///
/// # Safety
/// As [`columns`].
#[allow(clippy::too_many_arguments)]
unsafe fn scalar(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], y: *mut f32, c0: usize, c1: usize) {
    for i in 0..m {
        for j in c0..c1 {
            let mut acc = 0f32;
            for p in 0..k {
                acc = x[i * k + p].mul_add(w[p * n + j], acc);
            }
            *y.add(i * n + j) += acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Generates the block kernel and the column driver of one instruction set: `$load`/`$fma`/... are its
    /// intrinsics, `$lanes` its vector width.
    macro_rules! kernel {
        ($driver:ident, $block:ident, $features:literal, $vec:ty, $lanes:expr, $zero:ident, $load:ident, $store:ident,
         $set1:ident, $fma:ident, $add:ident) => {
            /// Rows `i0..i0 + R` and columns `j..j + C * lanes`: the accumulators stay in registers for the
            /// whole sum over `k`.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $block<const R: usize, const C: usize>(
                n: usize,
                k: usize,
                x: *const f32,
                w: *const f32,
                y: *mut f32,
                i0: usize,
                j: usize,
            ) {
                let mut acc = [[$zero(); C]; R];
                for p in 0..k {
                    let wp = w.add(p * n + j);
                    let mut wv = [$zero(); C];
                    for c in 0..C {
                        wv[c] = $load(wp.add(c * $lanes));
                    }
                    for r in 0..R {
                        let xv = $set1(*x.add((i0 + r) * k + p));
                        for c in 0..C {
                            acc[r][c] = $fma(xv, wv[c], acc[r][c]);
                        }
                    }
                }
                for r in 0..R {
                    for c in 0..C {
                        let out = y.add((i0 + r) * n + j + c * $lanes);
                        $store(out, $add($load(out), acc[r][c]));
                    }
                }
            }

            /// # Safety
            /// As `super::columns`, and the CPU has the instruction set.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn $driver(
                m: usize,
                n: usize,
                k: usize,
                x: &[f32],
                w: &[f32],
                y: *mut f32,
                c0: usize,
                c1: usize,
            ) {
                let (x, w) = (x.as_ptr(), w.as_ptr());
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(4);
                    let mut j = c0;
                    while j + 4 * $lanes <= c1 {
                        match rows {
                            4 => $block::<4, 4>(n, k, x, w, y, i, j),
                            3 => $block::<3, 4>(n, k, x, w, y, i, j),
                            2 => $block::<2, 4>(n, k, x, w, y, i, j),
                            _ => $block::<1, 4>(n, k, x, w, y, i, j),
                        }
                        j += 4 * $lanes;
                    }
                    while j + $lanes <= c1 {
                        match rows {
                            4 => $block::<4, 1>(n, k, x, w, y, i, j),
                            3 => $block::<3, 1>(n, k, x, w, y, i, j),
                            2 => $block::<2, 1>(n, k, x, w, y, i, j),
                            _ => $block::<1, 1>(n, k, x, w, y, i, j),
                        }
                        j += $lanes;
                    }
                    // The last columns, fewer than one vector: the same ordered sum with scalar FMAs.
                    for r in i..i + rows {
                        for jj in j..c1 {
                            let mut acc = 0f32;
                            for p in 0..k {
                                acc = (*x.add(r * k + p)).mul_add(*w.add(p * n + jj), acc);
                            }
                            *y.add(r * n + jj) += acc;
                        }
                    }
                    i += rows;
                }
            }
        };
    }

    kernel!(
        columns_avx512,
        block_avx512,
        "avx512f,fma",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps
    );
    kernel!(
        columns_avx2,
        block_avx2,
        "avx2,fma",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use atod_core::rng::SplitMix64;

    #[test]
    fn every_shape_matches_the_portable_sum_and_accumulates() {
        let mut rng = SplitMix64::new(3);
        for &(m, n, k) in &[(1, 1, 1), (16, 64, 128), (5, 344, 128), (3, 1024, 64), (16, 704, 256), (7, 17, 9)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.unit() as f32 - 0.5).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rng.unit() as f32 - 0.5).collect();
            let mut want = vec![0f32; m * n];
            // SAFETY: `want` holds m * n floats.
            unsafe { scalar(m, n, k, &x, &w, want.as_mut_ptr(), 0, n) };
            let exact: Vec<f64> =
                (0..m * n).map(|e| (0..k).map(|p| x[(e / n) * k + p] as f64 * w[p * n + e % n] as f64).sum()).collect();
            let mut got = vec![f32::NAN; m * n];
            matmul_rows(m, n, k, &x, &w, &mut got, false, m > 4);
            // The vector paths add in the same order as the portable one, with fused multiply-adds throughout.
            assert_eq!(got, want, "{m}x{n}x{k}");
            assert!(got.iter().zip(&exact).all(|(a, b)| (*a as f64 - b).abs() < 1e-4));
            matmul_rows(m, n, k, &x, &w, &mut got, true, true);
            assert!(got.iter().zip(&want).all(|(a, b)| (a - 2.0 * b).abs() < 1e-5));
        }
    }
}
