//! The burn backends compiled into this build, chosen by cargo features.
//!
//! Library crates below the facade are generic over `B: Backend`; binaries pick one here, and
//! set up the CPU backends' threads with [`init_cpu_threads`].

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

/// Sets up the threads the CPU backends (burn-flex, burn-ndarray) split their work over:
/// rayon's global pool with `threads` threads (`None`: `RAYON_NUM_THREADS`, else one per core),
/// **the calling thread one of them** when there are two or more. Call it once, first thing in
/// `main`, before any tensor work; it returns the pool's size.
///
/// Left to itself, rayon starts its threads beside the caller, so every parallel op of a
/// network hands its work from the calling thread to the pool and back: a futex wake and a
/// sleep each way, per op. On the project's 2-core machine the kernel's scheduler took 17 % of
/// the samples of DenseNet-121's input gradient, and with the caller in the pool LPIPS,
/// DenseNet-121 and CLIP ran in 0.69-0.99x of their time (docs/performance.md, "the calling
/// thread in the pool"); networks of few, large ops did not change. PyTorch's main thread
/// works on its own ops in the same way. With one thread the caller stays outside (rayon's
/// default): a thread of the program that is not in the pool could otherwise wait on work that
/// only the busy caller could do.
///
/// Errors: `threads` of `Some(0)` ([`Error::OutOfRange`](foil_core::Error::OutOfRange)), and a
/// pool that already exists ([`Error::Backend`](foil_core::Error::Backend): an earlier call, or
/// a parallel op that ran before it and started rayon's default pool). The backends work either
/// way; only the hand-offs stay.
pub fn init_cpu_threads(threads: Option<usize>) -> foil_core::Result<usize> {
    if threads == Some(0) {
        return Err(foil_core::Error::out_of_range("threads", "at least 1", 0));
    }
    // rayon's own default: RAYON_NUM_THREADS when it is a positive number, else the cores.
    let size = threads.unwrap_or_else(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    });
    let builder = rayon::ThreadPoolBuilder::new().num_threads(size);
    let builder = if size > 1 {
        builder.use_current_thread()
    } else {
        builder
    };
    builder
        .build_global()
        .map_err(|err| foil_core::Error::Backend {
            backend: "cpu".into(),
            reason: format!("cannot set up the CPU threads: {err}"),
        })?;
    Ok(size)
}
