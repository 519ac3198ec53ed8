//! foil's networks at (or near) their published sizes on the CPU backends compiled in, with
//! random weights, the same configurations and batches as `tools/bench_torch.py` (PyTorch);
//! `scripts/bench.sh` runs both and prints them side by side (docs/performance.md).
//!
//! | id | what |
//! |---|---|
//! | `adm_forward` | guided-diffusion UNet, DiME's CelebA 128 px config (105 M), batch 2, one timestep |
//! | `densenet121_grad` | DenseNet-121 (1000 logits, inference BatchNorm), batch 2, 128 px: forward + gradient of the logit sum to the input, weights frozen |
//! | `resnet18_grad` | ResNet-18 (1000 logits), the same |
//! | `resnet18_grad_tracked` | the same with the weights tracking gradients (as `Config::init` leaves them): the backward computes the weight gradients too |
//! | `kandinsky_unet_step` | Kandinsky 2.2 decoder UNet, published block types at widths 128, 256, 384, 512, latents 2 x 4 x 32 x 32 (256 px): the null and the edited condition of one guided step, then the guidance sum |
//! | `movq_decode` | MoVQ decoder at widths 64, 128, 128, 256 (published blocks, half the widths), latents 2 x 4 x 32 x 32 to 2 x 3 x 256 x 256 |
//! | `clip_b32` | CLIP ViT-B/32 vision tower with projection, batch 2, 224 px |
//! | `lpips_alex` | LPIPS with AlexNet, distance between two batches of 2 images, 64 px |
//!
//! Every network but the tracked ResNet and LPIPS is built as a user's file gives it: the
//! publisher's names and PyTorch shapes with random values, read through foil's loader
//! ([`loaded`]), so each parameter sits in memory as a loaded one does (a `Linear`'s weight a
//! transposed view of PyTorch's `[out, in]`, where `Config::init` leaves a contiguous
//! `[in, out]` in CLIP, the Kandinsky UNet, MoVQ and the classifiers' `fc`; ADM's init draws
//! `[out, in]` already; docs/performance.md, 2026-12-04, found a copy that only the loaded
//! layout paid). The tracked ResNet keeps `Config::init`: a loaded `Linear` weight is a
//! detached transpose, so `fc`'s weight gradient would not be computed. LPIPS's convolutions
//! are laid out alike either way.
//!
//! Each network has a criterion group with one benchmark per backend, `flex` (burn-flex) and
//! `ndarray` (burn-ndarray), and `cuda` / `wgpu` when those features are on (every call ends by
//! reading its result back, so GPU timings include the device's work); results land in `target/criterion/<id>/<backend>/new/`. Networks
//! are built lazily, so a filter only builds what it runs:
//!
//! ```text
//! cargo bench --bench networks -- --noplot                 # all (about 7 min on 2 cores)
//! cargo bench --bench networks -- --noplot resnet18        # the ResNet-18 rows, both backends
//! cargo bench --bench networks -- --noplot 'clip_b32/flex' # one network, one backend
//! ```
//!
//! Each network is called twice untimed once built (the lazy weights of the two `Config::init` rows
//! drawn, burn-flex's kept copies of its weights made; `tools/bench_torch.py` makes one warm-up call), then ten samples
//! (criterion's minimum) after a one-second warm-up, aiming at 5 s of measurement:
//! the networks slower than 0.5 s get one call per sample. `--sample-size`, `--warm-up-time`
//! and `--measurement-time` on the command line override that.
//!
//! Threads: `foil::backend::init_cpu_threads` (RAYON_NUM_THREADS, else the cores), the bench's
//! own thread one of them, as in `foil`; `FOIL_BENCH_CALLER_OUTSIDE=1` leaves rayon's default
//! pool beside it instead.

use std::time::Duration;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use foil::metrics::lpips::{Lpips, LpipsNet};
use foil::models::adm::AdmConfig;
use foil::models::clip::ClipVisionConfig;
use foil::models::densenet::DenseNetConfig;
use foil::models::kandinsky::{MoVqConfig, UNetConfig};
use foil::models::resnet::ResNetConfig;
use foil::models::weights::{TensorFile, Weights};

/// mimalloc reuses freed tensor buffers (feature `mimalloc`, on by default; docs/performance.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Batch of every benchmark (the PyTorch side uses the same).
const BATCH: usize = 2;

/// The mid-size Kandinsky UNet: the published decoder's block types, heads of 64, 768-wide
/// tokens and 1280-wide image embeddings, at a third of its widths (`[384, 768, 1152, 1536]`).
fn kandinsky_unet_config() -> UNetConfig {
    UNetConfig {
        block_out_channels: vec![128, 256, 384, 512],
        sample_size: 32,
        ..UNetConfig::kandinsky22_decoder()
    }
}

/// The mid-size MoVQ: the published blocks (attention at the deepest level, two resnets per
/// encoder block, a 16384-vector codebook) at half its widths (`[128, 256, 256, 512]`).
fn movq_config() -> MoVqConfig {
    MoVqConfig {
        block_out_channels: vec![64, 128, 128, 256],
        ..MoVqConfig::kandinsky22()
    }
}

/// Guidance scale of the Kandinsky step (the published decoder's default, 4).
const GUIDANCE: f32 = 4.0;

fn normal<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn uniform<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device)
}

/// The network `build` makes from a file of random weights in its publisher's layout: the
/// tensors it asks for (names, PyTorch shapes), values drawn on `device` (`Uniform(+-1 /
/// sqrt(fan_in))` for a weight of rank 2 or more, 1 for a norm's scale and a running
/// variance, `Uniform(+-0.02)` otherwise), read back through [`TensorFile`] as a loaded file
/// is; every tensor drawn must be taken.
fn loaded<B: Backend, M>(
    device: &B::Device,
    build: impl Fn(&Weights<'_, B>) -> foil::core::Result<M>,
) -> M {
    let recorder = Weights::<B>::recorder(device);
    build(&recorder).expect("valid config");
    let tensors = recorder.recorded().into_iter().map(|(name, shape)| {
        let count = shape.iter().product::<usize>();
        let fan_in = shape.iter().skip(1).product::<usize>();
        let values = if shape.len() >= 2 {
            let bound = 1.0 / (fan_in as f64).sqrt();
            draw::<B>(count, Distribution::Uniform(-bound, bound), device)
        } else if name.ends_with("running_var") || (shape.len() == 1 && name.ends_with("weight")) {
            vec![1.0; count]
        } else {
            draw::<B>(count, Distribution::Uniform(-0.02, 0.02), device)
        };
        (name, shape, values)
    });
    let file = TensorFile::from_values(tensors, "random weights").expect("consistent shapes");
    let weights = Weights::from_file(file, device);
    let model = build(&weights).expect("valid config");
    weights.finish().expect("every tensor taken");
    model
}

/// `count` values from `distribution`, drawn on `device`.
fn draw<B: Backend>(count: usize, distribution: Distribution, device: &B::Device) -> Vec<f32> {
    Tensor::<B, 1>::random([count], distribution, device)
        .into_data()
        .to_vec::<f32>()
        .expect("f32 values")
}

/// Benchmarks `run` on `state` as `<group>/<backend>`, building `state` only if the benchmark
/// passes the command line's filter (criterion calls the closure once per sample).
fn bench<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    backend: &str,
    build: impl Fn() -> S,
    run: impl Fn(&S),
) {
    static POOL: std::sync::Once = std::sync::Once::new();
    POOL.call_once(|| {
        // As `foil` and the examples run: the calling thread in the CPU backends' pool.
        // FOIL_BENCH_CALLER_OUTSIDE=1 keeps rayon's default (the A/B of docs/performance.md).
        if std::env::var_os("FOIL_BENCH_CALLER_OUTSIDE").is_none() {
            foil::backend::init_cpu_threads(None).expect("rayon's global pool");
        }
    });
    let mut state: Option<S> = None;
    group.bench_function(backend, |b| {
        let s = state.get_or_insert_with(|| {
            // Two untimed calls, as a sampler has made before its steady state: the first
            // draws the lazily initialised weights, a weight's second call keeps its packed
            // or transformed copy (burn-flex, vendor/burn-flex/PATCH.md), then every call is
            // alike. Without them, those one-off costs land in the first timed samples.
            let s = build();
            run(&s);
            run(&s);
            s
        });
        b.iter(|| run(s))
    });
}

fn adm<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    bench(
        group,
        backend,
        || {
            let device = B::Device::default();
            B::seed(&device, 0);
            let model = loaded(&device, |w| AdmConfig::dime_celeba128().build(w));
            let x = normal::<B, 4>([BATCH, 3, 128, 128], &device);
            (model, x)
        },
        |(model, x)| {
            model
                .output(x.clone(), &[500; BATCH], None)
                .expect("valid shapes")
                .into_data();
        },
    );
}

/// Forward + gradient of the logit sum to the input. `tracked`: the parameters track gradients
/// too, as `Config::init` on an autodiff backend leaves them (burn's backward then computes the
/// weight gradients as well); otherwise the network is frozen (`Module::no_grad`), the work of
/// PyTorch's `torch.autograd.grad(logits.sum(), x)`.
fn classifier_grad<A: AutodiffBackend, M: Module<A>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    backend: &str,
    tracked: bool,
    init: impl Fn(&A::Device) -> M,
    forward: impl Fn(&M, Tensor<A, 4>) -> Tensor<A, 2>,
) {
    bench(
        group,
        backend,
        || {
            let device = A::Device::default();
            A::seed(&device, 0);
            let model = init(&device);
            let model = if tracked { model } else { model.no_grad() };
            let x = uniform::<A, 4>([BATCH, 3, 128, 128], &device);
            (model, x)
        },
        |(model, x)| {
            let leaf = x.clone().detach().require_grad();
            let grads = forward(model, leaf.clone()).sum().backward();
            leaf.grad(&grads).expect("input gradient").into_data();
        },
    );
}

fn densenet<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    classifier_grad::<Autodiff<B>, _>(
        group,
        backend,
        false,
        |d| loaded(d, |w| DenseNetConfig::densenet121().build(w)),
        |m, x| m.forward(x),
    );
}

fn resnet<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    classifier_grad::<Autodiff<B>, _>(
        group,
        backend,
        false,
        |d| loaded(d, |w| ResNetConfig::resnet18().build(w)),
        |m, x| m.forward(x),
    );
}

fn resnet_tracked<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    classifier_grad::<Autodiff<B>, _>(
        group,
        backend,
        true,
        |d| ResNetConfig::resnet18().init(d).expect("valid config"),
        |m, x| m.forward(x),
    );
}

fn kandinsky_unet<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    bench(
        group,
        backend,
        || {
            let device = B::Device::default();
            B::seed(&device, 0);
            let config = kandinsky_unet_config();
            let model = loaded(&device, |w| config.build(w));
            // One latent, twice: the null condition, then the edited one.
            let latent = normal::<B, 4>([1, 4, 32, 32], &device);
            let latents = Tensor::cat(vec![latent.clone(), latent], 0);
            let embeds = normal::<B, 2>([BATCH, config.encoder_hid_dim], &device);
            (model, latents, embeds)
        },
        |(model, latents, embeds)| {
            let out = model
                .forward_raw(latents.clone(), &[500.0; BATCH], embeds.clone())
                .expect("valid shapes");
            let eps = out.narrow(1, 0, 4);
            let uncond = eps.clone().narrow(0, 0, 1);
            let cond = eps.narrow(0, 1, 1);
            (uncond.clone() + (cond - uncond) * GUIDANCE).into_data();
        },
    );
}

fn movq<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    bench(
        group,
        backend,
        || {
            let device = B::Device::default();
            B::seed(&device, 0);
            let model = loaded(&device, |w| movq_config().build(w));
            let latents = normal::<B, 4>([BATCH, 4, 32, 32], &device);
            (model, latents)
        },
        |(model, latents)| {
            model
                .decode(latents.clone())
                .expect("valid shapes")
                .into_data();
        },
    );
}

fn clip<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    bench(
        group,
        backend,
        || {
            let device = B::Device::default();
            B::seed(&device, 0);
            let model = loaded(&device, |w| ClipVisionConfig::vit_b32().build(w));
            let pixels = normal::<B, 4>([BATCH, 3, 224, 224], &device);
            (model, pixels)
        },
        |(model, pixels)| {
            model
                .image_embeds(pixels.clone())
                .expect("valid shapes")
                .into_data();
        },
    );
}

fn lpips<B: Backend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    bench(
        group,
        backend,
        || {
            let device = B::Device::default();
            B::seed(&device, 0);
            let model = Lpips::<B>::random(LpipsNet::alex(), &device);
            let a = uniform::<B, 4>([BATCH, 3, 64, 64], &device);
            let b = uniform::<B, 4>([BATCH, 3, 64, 64], &device);
            (model, a, b)
        },
        |(model, a, b)| {
            model
                .forward(a.clone(), b.clone())
                .expect("valid shapes")
                .into_data();
        },
    );
}

/// One criterion group per network, with a benchmark per compiled-in backend (`scripts/bench.sh
/// --device cuda` builds this with `--features cuda` and selects the `cuda` rows;
/// `scripts/gpu-pack.sh` builds it so for a GPU machine without Rust).
///
/// burn-candle 0.21 has neither `max_pool2d_with_indices` (the max pool's backward) nor adaptive
/// average pooling, so the classifier rows (`candle: false`) are not timed on it.
macro_rules! network {
    ($fn_name:ident, $id:literal, $generic:ident) => {
        network!($fn_name, $id, $generic, candle: true);
    };
    ($fn_name:ident, $id:literal, $generic:ident, candle: $candle:literal) => {
        fn $fn_name(c: &mut Criterion) {
            let mut group = c.benchmark_group($id);
            // One call takes 0.05 to several seconds: a fixed number of calls per sample.
            group.sampling_mode(SamplingMode::Flat);
            #[cfg(feature = "flex")]
            $generic::<foil::backend::Flex>(&mut group, "flex");
            #[cfg(feature = "ndarray")]
            $generic::<foil::backend::NdArray>(&mut group, "ndarray");
            #[cfg(feature = "candle")]
            if $candle {
                $generic::<foil::backend::Candle>(&mut group, "candle");
            }
            #[cfg(feature = "tch")]
            $generic::<burn::backend::LibTorch>(&mut group, "tch");
            #[cfg(feature = "cuda")]
            $generic::<foil::backend::Cuda>(&mut group, "cuda");
            #[cfg(feature = "wgpu")]
            $generic::<foil::backend::Wgpu>(&mut group, "wgpu");
            group.finish();
        }
    };
}

network!(adm_forward, "adm_forward", adm);
network!(densenet121_grad, "densenet121_grad", densenet, candle: false);
network!(resnet18_grad, "resnet18_grad", resnet, candle: false);
network!(
    resnet18_grad_tracked,
    "resnet18_grad_tracked",
    resnet_tracked,
    candle: false
);
network!(kandinsky_unet_step, "kandinsky_unet_step", kandinsky_unet);
network!(movq_decode, "movq_decode", movq);
network!(clip_b32, "clip_b32", clip);
network!(lpips_alex, "lpips_alex", lpips);

criterion_group! {
    name = networks;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .without_plots();
    targets = adm_forward, densenet121_grad, resnet18_grad, resnet18_grad_tracked,
        kandinsky_unet_step, movq_decode, clip_b32, lpips_alex
}
criterion_main!(networks);
