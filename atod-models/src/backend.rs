//! Backends and devices.
//!
//! `flex` is burn's portable CPU backend and atod's default. Under the `cuda` feature, burn's fused CUDA
//! backend is added; it loads the CUDA driver at run time, so a CUDA build still starts on a machine without a
//! GPU and only fails, with a one-line error, when a CUDA device is used.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The CPU backend (inference).
pub type CpuBackend = burn::backend::Flex<f32, i32>;
/// The CPU backend with autodiff (training).
pub type CpuAutodiff = burn::backend::Autodiff<CpuBackend>;

/// The CUDA backend (inference).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;
/// The CUDA backend with autodiff (training).
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<CudaBackend>;

/// The backends compiled into this binary, by name.
pub fn compiled_backends() -> &'static [&'static str] {
    if cfg!(feature = "cuda") {
        &["cpu", "cuda"]
    } else {
        &["cpu"]
    }
}

/// A device as users write it: `cpu`, `cuda` (device 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// The flex CPU backend.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let spec = match s.trim() {
            "cpu" => Self::Cpu,
            "cuda" => Self::Cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Self::Cuda(index),
                _ => return Err(Error::DeviceSyntax { given: s.to_owned() }),
            },
        };
        if matches!(spec, Self::Cuda(_)) && !cfg!(feature = "cuda") {
            return Err(Error::CudaNotCompiled { given: s.to_owned() });
        }
        Ok(spec)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl DeviceSpec {
    /// The flex device (there is one CPU device).
    pub fn cpu_device() -> burn::tensor::Device<CpuBackend> {
        Default::default()
    }

    /// The CUDA device of this spec, or `None` for the CPU.
    #[cfg(feature = "cuda")]
    pub fn cuda_device(&self) -> Option<burn::tensor::Device<CudaBackend>> {
        match self {
            Self::Cpu => None,
            Self::Cuda(index) => Some(burn::backend::cuda::CudaDevice::new(*index)),
        }
    }
}

/// Checks that a CUDA device is usable by running one tiny operation on it. burn's CUDA runtime panics when
/// the driver or the device is missing; this turns that into a one-line error.
#[cfg(feature = "cuda")]
pub fn check_cuda(spec: &DeviceSpec) -> Result<()> {
    use burn::tensor::Tensor;
    let Some(device) = spec.cuda_device() else { return Ok(()) };
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let t = Tensor::<CudaBackend, 1>::from_floats([1.0, 2.0], &device);
        t.sum().into_scalar()
    });
    std::panic::set_hook(previous);
    match probe {
        Ok(_) => Ok(()),
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown failure".to_owned());
            let why = why.lines().next().unwrap_or_default().to_owned();
            Err(Error::CudaUnavailable { given: spec.to_string(), why })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> String {
        match s.parse::<DeviceSpec>() {
            Ok(spec) => format!("ok {spec}"),
            Err(err) => format!("err {err}"),
        }
    }

    #[test]
    fn device_specs_parse_or_explain() {
        assert_eq!(parse("cpu"), "ok cpu");
        assert_eq!(parse("gpu"), "err invalid device `gpu`: expected `cpu`, `cuda` or `cuda:N`");
        assert_eq!(parse("cuda:x"), "err invalid device `cuda:x`: expected `cpu`, `cuda` or `cuda:N`");
        if cfg!(feature = "cuda") {
            assert_eq!(parse("cuda"), "ok cuda:0");
            assert_eq!(parse("cuda:3"), "ok cuda:3");
        } else {
            assert_eq!(
                parse("cuda:0"),
                "err device `cuda:0` needs CUDA, but this atod was built without it; rebuild with `--features cuda`"
            );
        }
    }

    #[test]
    fn the_cpu_backend_computes() {
        use burn::tensor::Tensor;
        let device = DeviceSpec::cpu_device();
        let x = Tensor::<CpuBackend, 1>::from_floats([1.0, 2.0, 3.0], &device);
        let total: f32 = x.sum().into_scalar();
        assert_eq!(total, 6.0);
    }
}
