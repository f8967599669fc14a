//! Reductions whose values do not depend on the machine: sums taken on the host in a fixed order.
//!
//! burn-flex sums a tensor with SIMD accumulators as wide as the instruction set the CPU offers (macerator
//! picks AVX-512, AVX2 or SSE when it runs, and nothing can cap it), and sums above 4M elements in rayon tasks
//! whose combination order follows the thread count, so the same `sum()` gives different low bits on
//! different CPUs. Where such a value reaches the weights (the global gradient norm) or the metrics (loss
//! values), atod takes it here instead: the tensor is copied to the host and summed in f64 in index order. A
//! sum's gradient is a broadcast of ones, exact whatever the order, so [`with_value`] keeps burn's graph for the
//! gradient and replaces only the forward value.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The values of `x` on the host, in row-major order.
pub fn host_values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.into_data().convert::<f32>().to_vec::<f32>().expect("f32 values")
}

/// `sum(x)` in f64, element by element in row-major order.
pub fn host_sum<B: Backend, const D: usize>(x: Tensor<B, D>) -> f64 {
    host_values(x).iter().map(|&v| f64::from(v)).sum()
}

/// `t` with its forward value replaced by `value` (rounded to f32) and its gradient kept: `t - detach(t) + value`.
/// `t - t` is exactly zero for a finite `t`, so the result is exactly `value as f32`; a non-finite `t` stays
/// non-finite.
pub fn with_value<B: Backend>(t: Tensor<B, 1>, value: f64) -> Tensor<B, 1> {
    t.clone() - t.detach() + value
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use atod_models::CpuAutodiff;

    #[test]
    fn the_host_sum_is_the_f64_sum_in_order_and_keeps_the_gradient() {
        type B = CpuAutodiff;
        let values: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5).collect();
        let want: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(values.clone(), [10, 100]), &Default::default()).require_grad();
        assert_eq!(host_sum(x.clone()), want);
        let y = with_value(x.clone().sum().mul_scalar(3.0), 3.0 * want);
        assert_eq!(y.clone().into_scalar(), (3.0 * want) as f32);
        let grads = y.backward();
        let grad = host_values(x.grad(&grads).unwrap());
        assert!(grad.iter().all(|&g| g == 3.0), "the gradient of 3 sum(x) is 3 everywhere");
    }
}
