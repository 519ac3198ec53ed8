//! One conv-heavy sampling step on the CPU backends compiled in: a small convolutional
//! denoiser (hidden 64, three 3x3 convolutions) on a 4 x 3 x 64 x 64 batch, then a DDPM step.
//!
//! ```text
//! cargo bench --bench denoise_step --features flex                 # default: simd + threads
//! cargo bench --bench denoise_step --no-default-features --features ndarray,flex
//! ```

use burn::tensor::{Tensor, backend::Backend};
use criterion::{Criterion, criterion_group, criterion_main};
use foil::core::toy::ConvDenoiserConfig;
use foil::core::{Denoiser, Noise};
use foil::schedule::{NoiseSchedule, Steps, VarianceType};

/// mimalloc reuses freed tensor buffers (feature `mimalloc`, on by default; docs/performance.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_backend<B: Backend>(c: &mut Criterion, name: &str) {
    let device = Default::default();
    B::seed(&device, 0);
    let model = ConvDenoiserConfig {
        channels: 3,
        hidden: 64,
        cond_dim: 0,
    }
    .init::<B>(&device);
    let steps = Steps::full(&NoiseSchedule::ddpm());
    let mut noise = Noise::new(0);
    let x: Tensor<B, 4> = noise.normal([4, 3, 64, 64], &device);
    let z: Tensor<B, 4> = noise.normal([4, 3, 64, 64], &device);
    c.bench_function(
        &format!("{name}: conv denoiser + DDPM step, 4x3x64x64"),
        |b| {
            b.iter(|| {
                let out = model
                    .forward(x.clone(), &[500; 4], None)
                    .expect("valid shapes");
                let step = steps
                    .ddpm_step(
                        x.clone(),
                        &[500],
                        out,
                        VarianceType::FixedSmall,
                        true,
                        z.clone(),
                    )
                    .expect("valid step");
                // Force the lazy backends to finish the work.
                step.prev_sample.into_data()
            })
        },
    );
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    bench_backend::<foil::backend::NdArray>(c, "ndarray");
    #[cfg(feature = "flex")]
    bench_backend::<foil::backend::Flex>(c, "flex");
}

criterion_group! {
    name = step;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(8));
    targets = benches
}
criterion_main!(step);
