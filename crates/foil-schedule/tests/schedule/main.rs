//! Integration tests of foil-schedule, in one binary (one link, one set of monomorphised kernels).

mod diffusers;
mod properties;
mod reference;
mod suite;

/// The steps' parity with diffusers and guided-diffusion once more on a GPU backend (`--features
/// test-wgpu` for `scripts/wgpu-check.sh`, `test-cuda` for `scripts/gpu-check.sh`; CI builds
/// neither).
#[allow(unused_macros)]
macro_rules! parity_on {
    ($test:ident, $B:ty) => {
        #[test]
        fn $test() {
            reference::kandinsky_ddim_steps::<$B>();
            reference::kandinsky_ddpm_steps::<$B>();
            reference::dime_p_mean_variance::<$B>();
        }
    };
}
#[cfg(feature = "test-wgpu")]
parity_on!(steps_match_the_references_on_wgpu, burn::backend::Wgpu);
#[cfg(feature = "test-cuda")]
parity_on!(steps_match_the_references_on_cuda, burn::backend::Cuda);
