//! `--device cpu|flex|wgpu|cuda[:N]` and the backend each one runs on.

use std::str::FromStr;

use foil::core::{Error, Result};

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU backend compiled in: burn-flex (default feature `flex`), else ndarray.
    Cpu,
    /// burn-ndarray, in a build without `flex` (with flex, an error saying how to build it).
    Ndarray,
    /// burn-flex (feature `flex`).
    Flex,
    /// wgpu's default adapter (feature `wgpu`).
    Wgpu,
    /// CUDA device N (feature `cuda`).
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::out_of_range(
                "device",
                "cpu, ndarray, flex, wgpu, cuda or cuda:N",
                format!("{s:?}"),
            )
        };
        match s {
            "cpu" => Ok(DeviceArg::Cpu),
            "ndarray" => Ok(DeviceArg::Ndarray),
            "flex" => Ok(DeviceArg::Flex),
            "wgpu" => Ok(DeviceArg::Wgpu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceArg::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

/// The error for a device whose backend this build lacks.
#[allow(dead_code)]
pub fn not_compiled(device: &str, feature: &str) -> Error {
    Error::Backend {
        backend: device.to_owned().into(),
        reason: format!("this foil was built without it: rebuild with `--features {feature}`"),
    }
}

/// The error for `--device ndarray` in a build that has flex: the command line compiles one CPU
/// backend, the faster one.
#[allow(dead_code)]
pub fn ndarray_beside_flex() -> Error {
    Error::Backend {
        backend: "ndarray".into(),
        reason: "this foil runs its CPU commands on flex (`--device cpu`); for ndarray, build \
                 with `--no-default-features --features ndarray,simd,threads`"
            .into(),
    }
}

/// Runs `$body` with `$B` the autodiff backend of `$device` and `$dev` its device.
macro_rules! with_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {{
        #[allow(unreachable_patterns)]
        match $device {
            // Every command is compiled once per arm: with flex, an ndarray arm would double the
            // binary's build for a backend several times slower on every network
            // (docs/backends.md, docs/performance.md).
            #[cfg(not(feature = "flex"))]
            $crate::device::DeviceArg::Cpu | $crate::device::DeviceArg::Ndarray => {
                type $B = burn::backend::Autodiff<foil::backend::NdArray>;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "flex")]
            $crate::device::DeviceArg::Ndarray => Err($crate::device::ndarray_beside_flex()),
            #[cfg(feature = "flex")]
            $crate::device::DeviceArg::Flex | $crate::device::DeviceArg::Cpu => {
                type $B = burn::backend::Autodiff<foil::backend::Flex>;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::device::DeviceArg::Wgpu => {
                type $B = burn::backend::Autodiff<foil::backend::Wgpu>;
                let $dev = burn::backend::wgpu::WgpuDevice::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceArg::Cuda(index) => {
                foil::backend::require_cuda()?;
                type $B = burn::backend::Autodiff<foil::backend::Cuda>;
                let $dev = burn::backend::cuda::CudaDevice::new(index);
                $body
            }
            $crate::device::DeviceArg::Flex => Err($crate::device::not_compiled("flex", "flex")),
            $crate::device::DeviceArg::Wgpu => Err($crate::device::not_compiled("wgpu", "wgpu")),
            $crate::device::DeviceArg::Cuda(_) => Err($crate::device::not_compiled("cuda", "cuda")),
        }
    }};
}
pub(crate) use with_backend;
