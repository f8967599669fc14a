//! The instruction-set level atod's own CPU kernels run at, and the reproducible mode.
//!
//! atod's kernels pick their SIMD build at run time. [`level`] is the level they use: the best the CPU has,
//! unless a lower one was forced, by [`force`] or by the `ATOD_ISA` environment variable that [`init_from_env`]
//! reads (`portable`, `x86-64-v3`, `x86-64-v4` or `native`). Forcing is how one machine checks that results do
//! not depend on the level.
//!
//! In the reproducible mode ([`set_reproducible`]) every matrix product of the fused path runs through
//! [`super::fixed`], whose results are the same bits at every level and for any number of threads, instead of
//! the `gemm` crate, which chooses its kernel (and with it the order of its sums) from the CPU it finds and
//! cannot be told otherwise. The dependencies' own SIMD (burn-flex's macerator, gemm's pulp) cannot be capped
//! at run time at all; ARCHITECTURE.md lists what the reproducible mode routes around them.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// An instruction-set level of x86-64 (on other architectures only [`Level::Portable`] exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// No SIMD beyond what the compiler emits for the baseline target; fused multiply-adds through
    /// `f32::mul_add`.
    Portable,
    /// AVX2 and FMA (x86-64-v3).
    V3,
    /// AVX-512 F (x86-64-v4).
    V4,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Portable, Level::V3, Level::V4];

    /// The name `ATOD_ISA` and `--isa` take.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::V3 => "x86-64-v3",
            Level::V4 => "x86-64-v4",
        }
    }

    fn code(self) -> u8 {
        match self {
            Level::Portable => 1,
            Level::V3 => 2,
            Level::V4 => 3,
        }
    }

    fn from_code(code: u8) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.code() == code)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An `ATOD_ISA` value: a level, or `native` for the best the CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The best level the CPU has.
    Native,
    /// This level (an error at [`force`] when the CPU lacks it).
    Level(Level),
}

impl FromStr for Request {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "native" | "" => Ok(Request::Native),
            "portable" | "scalar" => Ok(Request::Level(Level::Portable)),
            "x86-64-v3" | "v3" | "avx2" => Ok(Request::Level(Level::V3)),
            "x86-64-v4" | "v4" | "avx512" => Ok(Request::Level(Level::V4)),
            other => Err(format!(
                "unknown instruction-set level '{other}': expected native, portable, x86-64-v3 or x86-64-v4"
            )),
        }
    }
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::V4;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Level::V3;
        }
    }
    Level::Portable
}

/// 0: not forced (use [`detected`]); otherwise a [`Level::code`].
static FORCED: AtomicU8 = AtomicU8::new(0);
static REPRODUCIBLE: AtomicBool = AtomicBool::new(false);

/// The level atod's kernels run at now.
#[inline]
pub fn level() -> Level {
    match Level::from_code(FORCED.load(Ordering::Relaxed)) {
        Some(level) => level,
        None => detected(),
    }
}

/// Holds atod's kernels to `request` from now on (process-wide).
///
/// # Errors
/// When the CPU lacks the level asked for, with the best level it has.
pub fn force(request: Request) -> Result<Level, String> {
    let level = match request {
        Request::Native => {
            FORCED.store(0, Ordering::Relaxed);
            return Ok(detected());
        }
        Request::Level(level) => level,
    };
    let best = detected();
    if level > best {
        return Err(format!("this CPU cannot run instruction-set level {level}: the best it has is {best}"));
    }
    FORCED.store(level.code(), Ordering::Relaxed);
    Ok(level)
}

/// Applies `ATOD_ISA` when it is set; returns the level in force.
///
/// # Errors
/// An unknown value, or a level the CPU lacks, naming the variable.
pub fn init_from_env() -> Result<Level, String> {
    match std::env::var("ATOD_ISA") {
        Ok(value) => {
            let request = value.parse::<Request>().map_err(|e| format!("ATOD_ISA: {e}"))?;
            force(request).map_err(|e| format!("ATOD_ISA={value}: {e}"))
        }
        Err(_) => Ok(level()),
    }
}

/// Turns the reproducible mode on or off (process-wide).
pub fn set_reproducible(on: bool) {
    REPRODUCIBLE.store(on, Ordering::Relaxed);
}

/// Whether the reproducible mode is on.
#[inline]
pub fn reproducible() -> bool {
    REPRODUCIBLE.load(Ordering::Relaxed)
}

/// Sets this thread's floating-point unit to treat subnormal f32 inputs as zero and to flush subnormal results to
/// zero (x86-64's MXCSR DAZ and FTZ bits); threads spawned afterwards inherit it. A training run whose softmax
/// saturates produces subnormal probabilities and gradients, and every multiply-add on one costs a microcode
/// assist on x86 (a hundred cycles or more). 700 steps of a student-l copying curriculum at lr 5e-3 took 298 s
/// with subnormals kept (its throughput fell from 4.0k to 0.9k tokens/s, 83% of the time in the matrix-product
/// tile) and 127 s flushed (configs/paper-mini/REGIME-LOG.md). Flushing is deterministic, so the
/// reproducible mode is unaffected; values below 1.2e-38 read as zero. A no-op off x86-64, and when the
/// environment variable `ATOD_SUBNORMALS` is `keep` (to compare, or to reproduce a run made before atod flushed).
pub fn flush_subnormals() {
    #[cfg(target_arch = "x86_64")]
    if std::env::var("ATOD_SUBNORMALS").as_deref() != Ok("keep") {
        const DAZ_FTZ: u32 = (1 << 6) | (1 << 15);
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr and ldmxcsr read and write this thread's MXCSR only; setting DAZ and FTZ (supported by
        // every x86-64 CPU with SSE2, which x86-64 requires) changes no other state.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= DAZ_FTZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After `flush_subnormals` (on x86-64), an f32 product below the smallest normal reads as zero, and a
    /// subnormal input counts as zero; `ATOD_SUBNORMALS=keep` is read by the binary's process, not checked here.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn flushing_turns_subnormal_results_and_inputs_into_zero() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        let sub = std::thread::spawn(move || (tiny * half, f32::from_bits(1) * 2.0)).join().unwrap();
        assert!(sub.0 > 0.0 && sub.1 > 0.0, "without flushing, subnormals survive: {sub:?}");
        let flushed = std::thread::spawn(move || {
            flush_subnormals();
            (tiny * half, std::hint::black_box(f32::from_bits(1)) * 2.0, tiny * 2.0)
        })
        .join()
        .unwrap();
        assert_eq!((flushed.0, flushed.1), (0.0, 0.0));
        assert_eq!(flushed.2, f32::MIN_POSITIVE * 2.0, "normal values are untouched");
    }

    #[test]
    fn levels_parse_by_name_and_alias() {
        for level in Level::ALL {
            assert_eq!(level.name().parse::<Request>(), Ok(Request::Level(level)));
        }
        assert_eq!("native".parse::<Request>(), Ok(Request::Native));
        assert_eq!(" AVX2 ".parse::<Request>(), Ok(Request::Level(Level::V3)));
        let err = "sse9".parse::<Request>().unwrap_err();
        assert!(err.contains("sse9") && err.contains("x86-64-v3"), "{err}");
    }

    #[test]
    fn a_level_above_the_cpu_is_refused() {
        if detected() < Level::V4 {
            let err = force(Request::Level(Level::V4)).unwrap_err();
            assert!(err.contains("x86-64-v4"), "{err}");
        }
        assert!(Level::Portable < Level::V3 && Level::V3 < Level::V4);
    }
}
