//! The burn backends compiled into this build, chosen by cargo features.
//!
//! Library crates below the facade are generic over `B: Backend`; binaries pick one here.

/// The fastest CPU backend in this build, the one `foil --device cpu` runs on: [`Flex`] with the
/// `flex` feature (a default), [`NdArray`] without it. Autodiff through [`CpuAutodiff`].
#[cfg(feature = "flex")]
pub type Cpu = Flex;

/// The fastest CPU backend in this build, the one `foil --device cpu` runs on: [`Flex`] with the
/// `flex` feature (a default), [`NdArray`] without it. Autodiff through [`CpuAutodiff`].
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type Cpu = NdArray;

/// [`Cpu`] with reverse-mode autodiff, for gradient-guided samplers and training.
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The pure-Rust SIMD CPU backend (burn-flex, with foil's patch: `vendor/burn-flex`).
#[cfg(feature = "flex")]
pub type Flex = burn::backend::Flex;

/// burn-ndarray (SIMD and threads with the default features): slower than [`Flex`] on every
/// network (docs/performance.md), kept as the tests' independent second implementation.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray<f32>;

/// candle's CPU backend (burn-candle), compiled in only to be measured against [`Flex`]
/// (docs/performance.md).
// burn 0.21 marks burn-candle deprecated ("will be removed in a future release"): one more
// reason it is only a benchmark row here.
#[cfg(feature = "candle")]
#[allow(deprecated)]
pub type Candle = burn::backend::Candle<f32, i64>;

/// wgpu (Vulkan, Metal, DX12; lavapipe on CPU-only Linux).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

/// NVIDIA GPUs through CUDA.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// Whether the CUDA driver library can be loaded on this machine.
///
/// burn 0.21's CUDA backend panics ("Unable to dynamically load the cuda shared library") when
/// the driver is missing; call this (or [`require_cuda`]) first to get an error instead.
#[cfg(feature = "cuda")]
pub fn cuda_available() -> bool {
    ["libcuda.so.1", "libcuda.so", "nvcuda.dll"]
        .iter()
        .any(|name| {
            // SAFETY: loading the driver library runs only its own initialisers, exactly what
            // cudarc does a moment later when the device is created.
            unsafe { libloading::Library::new(name) }.is_ok()
        })
}

/// Returns [`foil_core::Error::Backend`] unless the CUDA driver can be loaded.
#[cfg(feature = "cuda")]
pub fn require_cuda() -> foil_core::Result<()> {
    if cuda_available() {
        Ok(())
    } else {
        Err(foil_core::Error::Backend {
            backend: "cuda".into(),
            reason: "the CUDA driver library (libcuda.so.1) cannot be loaded; install the NVIDIA \
                     driver or use another device"
                .into(),
        })
    }
}
