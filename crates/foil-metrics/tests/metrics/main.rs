//! Integration tests of foil-metrics, in one binary (one link, one set of monomorphised kernels).

mod lpips;
mod metrics;
mod run;

/// LPIPS's parity once more on a GPU backend, same fixtures and tolerances (`--features
/// test-wgpu` for `scripts/wgpu-check.sh`, `test-cuda` for `scripts/gpu-check.sh`; CI builds
/// neither).
#[allow(unused_macros)]
macro_rules! parity_on {
    ($test:ident, $B:ty) => {
        #[test]
        fn $test() {
            lpips::tiny_parity::<$B>();
        }
    };
}
#[cfg(feature = "test-wgpu")]
parity_on!(
    tiny_lpips_matches_the_lpips_package_on_wgpu,
    burn::backend::Wgpu
);
#[cfg(feature = "test-cuda")]
parity_on!(
    tiny_lpips_matches_the_lpips_package_on_cuda,
    burn::backend::Cuda
);
