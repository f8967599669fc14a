//! The CUDA hot path: one CubeCL kernel for the chosen token's log-prob and the entropy of each row of logits.
//!
//! # Algorithm
//!
//! One plane (a CUDA warp, 32 lanes) owns one row of `[rows, vocab]` logits. Lane `l` reads the columns
//! `l, l + 32, l + 64, ...` (consecutive lanes read consecutive addresses, so every load is coalesced) and keeps
//! three running values over the columns it has seen, relative to its running maximum `m`:
//!
//! - `m`, the largest logit so far;
//! - `s = Σ exp(x - m)`;
//! - `t = Σ exp(x - m) · (x - m)`.
//!
//! When a new logit `x` exceeds `m`, both sums are rescaled by `exp(m - x)` (and `t` shifted by `s · (m - x)`)
//! before `m` becomes `x`; otherwise `exp(x - m)` is added. This is the single-pass "online normalizer" of
//! Milakov & Gimelshein, *Online normalizer calculation for softmax* (2018, arXiv:1805.02867), extended with the
//! third sum `t` that the entropy needs. The lanes are then combined with `plane_max` (the row maximum `M`) and
//! `plane_sum` of each lane's `s` and `t` rescaled to `M`. With `Z = Σ exp(x - M)`:
//!
//! - `logp = x[target] - M - ln Z` (that is `x[target] - logsumexp(x)`);
//! - `entropy = ln Z - t / Z`, which is `logsumexp(x) - Σ p·x` written relative to `M`, so that no large
//!   `M` is added and subtracted again (the form `logsumexp - Σ p·x` loses about `|M|·ε` to cancellation).
//!
//! Logits are read in their storage type and accumulated in `f32`. A logit of `-inf` contributes nothing (its
//! `p · log p` is taken as 0, where the reference composition gives NaN); a target outside `0..vocab` gets
//! `logp = -inf` instead of reading out of bounds. The row reads the logits once: the reference composition
//! (`log_softmax`, `exp`, a product, a sum and a gather) reads and writes `[rows, vocab]` tensors several times.
//!
//! # How the fused backend reaches it
//!
//! [`TokenStatsKernel`] is implemented twice, the way burn-vision 0.21 reaches its connected-components kernels:
//! for `CubeBackend<R, ..>` it launches the kernel on `CubeTensor`s; for `Fusion<B>` it registers a custom
//! operation (`OperationIr::Custom`) on the fusion stream, whose `execute` takes the inner backend's tensors out of
//! the fusion handle container, calls the inner backend's kernel and registers the two outputs. The fusion
//! optimiser treats a custom operation as a barrier: the element-wise ops before it (the temperature division
//! in sampling, for example) are flushed as their own fused kernel, and ours runs on the materialised logits.
//! `burn::backend::Cuda` is `Fusion<CubeBackend<CudaRuntime, f32, i32, u8>>` with `burn/fusion` (which the `cuda`
//! feature turns on) and plain `CubeBackend` without it; both reach the kernel.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

/// Rows (planes) per cube: 4 warps of 32 lanes is a 128-thread block, small enough to keep many blocks resident.
const ROWS_PER_CUBE: u32 = 4;

/// A backend with the token-stats kernel. Crate-private: [`crate::HotPathBackend`] is the public surface.
pub(crate) trait TokenStatsKernel: Backend {
    /// `logits` `[rows, vocab]` and `targets` `[rows]` to `(logp, entropy)`, each `[rows]` in `logits`' dtype.
    fn kernel_token_stats(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// One plane per row; see the module header for the algorithm.
///
/// Bounds: `row < rows` and `col < vocab` are checked before every read, and the target is read only when it lies
/// in `0..vocab`, so the unchecked launch never indexes out of bounds.
#[cube(launch_unchecked, address_type = "dynamic")]
fn token_stats_kernel<F: Float, I: Int>(
    logits: &Tensor<F>,
    targets: &Tensor<I>,
    logp: &mut Tensor<F>,
    entropy: &mut Tensor<F>,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS_X as usize * CUBE_DIM_Y as usize + UNIT_POS_Y as usize;
    // Uniform per plane: a whole plane leaves together, so the plane reductions below stay well defined.
    if row >= logits.shape(0) {
        terminate!();
    }
    let vocab = logits.shape(1);
    let row_start = row * logits.stride(0);
    let col_stride = logits.stride(1);
    let lanes = CUBE_DIM_X as usize;

    // A finite floor rather than -inf: lanes that see no column (vocab < 32) keep s = t = 0 and a maximum that
    // rescales to exp(floor - M) = 0, with no inf - inf.
    let mut m = f32::new(-3.0e38);
    let mut s = f32::new(0.0);
    let mut t = f32::new(0.0);
    let mut col = UNIT_POS_X as usize;
    while col < vocab {
        let x = f32::cast_from(logits[row_start + col * col_stride]);
        if x > m {
            let shift = m - x;
            let scale = shift.exp();
            t = scale * (t + s * shift);
            s = scale * s + f32::new(1.0);
            m = x;
        } else {
            let d = x - m;
            let e = d.exp();
            s += e;
            // e == 0 only for x = -inf (or x far below m), where e * d would be 0 * -inf.
            if e > f32::new(0.0) {
                t += e * d;
            }
        }
        col += lanes;
    }

    let row_max = plane_max(m);
    let shift = m - row_max;
    let scale = shift.exp();
    let z = plane_sum(scale * s);
    let tz = plane_sum(scale * (t + s * shift));
    let log_z = z.ln();

    if UNIT_POS_X == 0 {
        let target = u32::cast_from(targets[row * targets.stride(0)]) as usize;
        let mut lp = (z * f32::new(0.0)).ln();
        if target < vocab {
            lp = f32::cast_from(logits[row_start + target * col_stride]) - row_max - log_z;
        }
        logp[row * logp.stride(0)] = F::cast_from(lp);
        entropy[row * entropy.stride(0)] = F::cast_from(log_z - tz / z);
    }
}

/// Launches [`token_stats_kernel`] on `logits` `[rows, vocab]` and `targets` `[rows]`; returns `(logp, entropy)`,
/// each `[rows]` in `logits`' dtype.
pub(crate) fn launch_token_stats<R: CubeRuntime>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let dims = logits.shape();
    assert_eq!(dims.num_dims(), 2, "token_stats: logits must be [rows, vocab]");
    let (rows, vocab) = (dims[0], dims[1]);
    assert!(vocab > 0, "token_stats: the vocabulary is empty");
    assert_eq!(targets.shape().num_elements(), rows, "token_stats: one target per row of logits");
    assert!(matches!(logits.dtype, DType::F32 | DType::F16 | DType::BF16), "token_stats: float logits");

    // Unit stride along the vocabulary keeps the lanes' loads coalesced; a no-op for the usual contiguous logits.
    let logits = into_contiguous(logits);
    let client = logits.client.clone();
    let device = logits.device.clone();
    let logp = empty_device_dtype(client.clone(), device.clone(), Shape::new([rows]), logits.dtype);
    let entropy = empty_device_dtype(client.clone(), device, Shape::new([rows]), logits.dtype);
    if rows == 0 {
        return (logp, entropy);
    }

    // One plane per row: the cube's x extent must be exactly one plane. CUDA warps are always 32 wide.
    let hardware = &client.properties().hardware;
    let plane = hardware.plane_size_max;
    assert_eq!(hardware.plane_size_min, plane, "token_stats: the kernel needs a fixed plane size");
    let cube_dim = CubeDim::new_2d(plane, ROWS_PER_CUBE);
    let cube_count = CubeCount::Static((rows as u32).div_ceil(ROWS_PER_CUBE), 1, 1);
    let address_type = [logits.required_address_type(), targets.required_address_type(), logp.required_address_type()]
        .into_iter()
        .max()
        .unwrap_or_default();
    let dtypes = [logits.dtype.into(), targets.dtype.into()];

    // SAFETY: every index the kernel uses is bounds-checked against the tensors' own shapes (see the kernel).
    unsafe {
        token_stats_kernel::launch_unchecked::<R>(
            &client,
            cube_count,
            cube_dim,
            address_type,
            logits.into_tensor_arg(),
            targets.into_tensor_arg(),
            logp.clone().into_tensor_arg(),
            entropy.clone().into_tensor_arg(),
            dtypes,
        );
    }
    (logp, entropy)
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> TokenStatsKernel for CubeBackend<R, F, I, BT> {
    fn kernel_token_stats(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        launch_token_stats(logits, targets)
    }
}

/// The fused backend: a custom operation on the fusion stream that runs the inner backend's kernel.
mod fusion {
    use core::marker::PhantomData;

    use burn::tensor::ops::{FloatTensor, IntTensor};
    use burn::tensor::Shape;
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

    use super::TokenStatsKernel;

    /// The registered operation: its IR lists the two inputs and the two outputs, in that order.
    #[derive(Debug)]
    struct TokenStatsOp<B> {
        desc: CustomOpIr,
        _backend: PhantomData<B>,
    }

    impl<B: FusionBackend + TokenStatsKernel> Operation<B::FusionRuntime> for TokenStatsOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let ([logits, targets], [logp, entropy]) = self.desc.as_fixed();
            let (logp_out, entropy_out) =
                B::kernel_token_stats(handles.get_float_tensor::<B>(logits), handles.get_int_tensor::<B>(targets));
            handles.register_float_tensor::<B>(&logp.id, logp_out);
            handles.register_float_tensor::<B>(&entropy.id, entropy_out);
        }
    }

    impl<B: FusionBackend + TokenStatsKernel> TokenStatsKernel for Fusion<B> {
        fn kernel_token_stats(
            logits: FloatTensor<Self>,
            targets: IntTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let client = logits.client.clone();
            let rows = logits.shape[0];
            let dtype = logits.dtype;
            let streams = OperationStreams::with_inputs([&logits, &targets]);
            let logp = TensorIr::uninit(client.create_empty_handle(), Shape::new([rows]), dtype);
            let entropy = TensorIr::uninit(client.create_empty_handle(), Shape::new([rows]), dtype);
            let desc = CustomOpIr::new("atod_token_stats", &[logits.into_ir(), targets.into_ir()], &[logp, entropy]);
            let op = TokenStatsOp::<B> { desc: desc.clone(), _backend: PhantomData };
            let [logp, entropy]: [_; 2] = client
                .register(streams, OperationIr::Custom(desc), op)
                .try_into()
                .expect("the token-stats operation has two outputs");
            (logp, entropy)
        }
    }
}
