//! Full-size check of MaskDiME's published networks: loads DiME's CelebA 128 px DDPM, DiME's
//! DenseNet-121 CelebA classifier (attribute 31, Smiling) and torchvision's VGG-19 as `foil
//! maskdime --ddpm-checkpoint DDPM --ddpm-config dime-celeba128 --classifier
//! dime-densenet121:CLASSIFIER --attribute 31 --perceptual vgg19:VGG19` does (peak memory: run
//! under `/usr/bin/time -v`), prints their parameters, and with `step` times, at the DDPM's
//! image size, batch 1: one DDPM (ADM UNet) forward, one classifier forward with the gradient of
//! its logit to the input, the perceptual network's forwards and gradient, and two whole guided
//! steps (`Guide::step`) with the authors' settings (`ExplainConfig::published`, MaskDiME).
//! With `image`, it instead explains two images (the procedural kiki/bouba pair at the DDPM's
//! size, batch 1) the whole way, through `foil_run::run_set` as `foil maskdime` does (PNG and
//! JSON results into a temporary folder), with the published settings at their first guidance
//! scale, and prints where the time went (`foil::core::profile`): the network calls against
//! everything else; that pass waits for the device around each network call, so on a GPU the
//! split is the kernels' time, not their queueing. A sixth argument `warm` explains the pair
//! once untimed first (on a GPU the first pass also compiles and autotunes every kernel it
//! meets), then once free-running (the time per image), then the accounted pass.
//! `tools/write_dime_full.py DIR` writes random-weight files of the published configurations;
//! without arguments the tiny test twins are used.
//!
//! ```text
//! /usr/bin/time -v cargo run --release --example maskdime_step -- DIR/ddpm-celeba.pt \
//!     DIR/classifier.pth DIR/vgg19.pth [load|step|image] [flex|cuda|wgpu] [warm]
//! ```

use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use foil::core::{Classifier, Denoiser, Error, Noise, Result, predicted_labels, profile};
use foil::data::procedural::kiki_bouba;
use foil::guide::{Carry, StepNoise};
use foil::models::adm::Adm;
use foil::models::adm::AdmConfig;
use foil::models::dime_classifier::DimeClassifierConfig;
use foil::models::vgg::{VGG19_PERCEPTUAL_LAYERS, Vgg19Config, Vgg19Perceptual};
use foil::pipeline::{DIME_DIFFUSION_STEPS, DdpmSource, ExplainConfig, LoadedOracle, MaskDime};
use foil::pipeline::{GuideModels, MaskDimeFiles, OracleSource, Preset};
use foil::run::SetRun;

/// The tiny twins (`tools/record_adm.py`, `record_dime_classifier.py`, `record_vgg19.py`).
const TINY: [&str; 3] = [
    "crates/foil-models/tests/fixtures/adm_tiny.safetensors",
    "crates/foil-models/tests/fixtures/dime_classifier_tiny.pth",
    "crates/foil-models/tests/fixtures/vgg19_tiny.pth",
];

/// The explained CelebA attribute (Smiling), as `--attribute 31`.
const ATTRIBUTE: usize = 31;

/// What to do after loading.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Only load and count.
    Load,
    /// Time one call of each network and two guided steps.
    Step,
    /// Explain two images the whole way and account for the time, after as many untimed
    /// passes over them.
    Image { warm_up: usize },
}

fn run<B: AutodiffBackend>(files: &[String; 3], tiny: bool, mode: Mode) -> Result<()> {
    let device = B::Device::default();
    let (adm, classifier, vgg) = match tiny {
        true => (
            AdmConfig::tiny(),
            DimeClassifierConfig::tiny(ATTRIBUTE),
            Vgg19Config::tiny(),
        ),
        false => (
            AdmConfig::dime_celeba128(),
            DimeClassifierConfig::celeba(ATTRIBUTE),
            Vgg19Config::default().with_layers(VGG19_PERCEPTUAL_LAYERS),
        ),
    };
    let start = Instant::now();
    let maskdime_files = MaskDimeFiles {
        oracle: OracleSource::DimeClassifier {
            file: files[1].clone().into(),
            config: classifier,
        },
        ddpm: DdpmSource::Checkpoint {
            file: files[0].clone().into(),
            config: adm,
            diffusion_steps: DIME_DIFFUSION_STEPS,
        },
        perceptual: None,
    };
    let maskdime = MaskDime::<B>::load(&maskdime_files, &device)?;
    // `perceptual: Some((file, 18))` makes `MaskDime::load` run this same call after the two
    // others; it is made here to count the network's parameters (`MaskDime` does not expose
    // it) and to take the tiny twin's widths.
    let perceptual = Vgg19Perceptual::<B>::load_file(&files[2], &vgg, &device)?;
    let load_s = start.elapsed().as_secs_f64();
    let mut models = maskdime.models();
    models.perceptual = Some(&perceptual);
    let LoadedOracle::Dime(oracle) = maskdime.oracle() else {
        return Err(Error::format("oracle", "DiME's classifier was asked for"));
    };
    let params = [
        ("DDPM (guided-diffusion UNet)", models.ddpm.num_params()),
        ("classifier (DenseNet-121 + head)", oracle.num_params()),
        (
            "perceptual (VGG-19 features[:18])",
            perceptual.network().num_params(),
        ),
    ];
    let total: usize = params.iter().map(|(_, n)| n).sum();
    for (name, n) in params {
        println!("{name}: {n} parameters ({:.1} MB as f32)", n as f64 * 4e-6);
    }
    println!(
        "all: {total} parameters, {:.1} MB as f32; loaded in {:.1} s; {}",
        total as f64 * 4e-6,
        load_s,
        memory()
    );
    if mode == Mode::Load {
        return Ok(());
    }
    if let Mode::Image { warm_up } = mode {
        return explain_two(&maskdime, models, warm_up);
    }

    let config = ExplainConfig::published(Preset::Maskdime);
    let guide = models.guide(&config)?;
    let (tau, size) = (config.guide.tau, maskdime.image_size() as usize);
    let steps = guide.steps();
    let i = tau - 1;
    let t = steps.timesteps()[i];
    println!(
        "{size} px, batch 1; MaskDiME's published settings: {} of {} steps, tau = {tau}, first \
         step index {i} (timestep {t}), lambda_perc = {}",
        steps.len(),
        DIME_DIFFUSION_STEPS,
        config.guide.lambda_perc
    );
    let x = Tensor::<B::InnerBackend, 4>::random(
        [1, 3, size, size],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let mut noise = Noise::new(0);
    let z = guide.start(x.clone(), noise.normal_like(&x))?;
    let label = predicted_labels(models.oracle, Tensor::<B, 4>::from_inner(x.clone()))?;
    let targets = vec![1 - label[0].min(1)];

    timed(
        &format!("DDPM forward (eps and variance at t = {t})"),
        || {
            let out = Denoiser::forward(models.ddpm, z.clone(), &[t], None)?;
            Ok((out.eps.into_data(), out.variance.map(Tensor::into_data)))
        },
    )?;
    timed(
        "classifier forward + gradient of its logit to the input",
        || {
            let leaf = Tensor::<B, 4>::from_inner(x.clone()).require_grad();
            let grads = models.oracle.logits(leaf.clone())?.sum().backward();
            Ok(leaf.grad(&grads).map(Tensor::into_data))
        },
    )?;
    let input = Tensor::<B, 4>::from_inner(x.clone());
    let reference = timed(
        "VGG-19 features[:18] forward, no gradient (the input's features)",
        || {
            let f = perceptual.forward(input.clone())?;
            let _ = f.clone().into_data();
            Ok(f.detach())
        },
    )?;
    // The sampler's gradient point: an estimate near the input.
    let nearby = Tensor::random([1, 3, size, size], Distribution::Normal(0.0, 0.1), &device);
    let estimate = (input + nearby).clamp(-1.0, 1.0);
    timed(
        "VGG-19 features[:18] forward + gradient of the feature MSE to its input",
        || {
            let leaf = estimate.clone().detach().require_grad();
            let f = perceptual.forward(leaf.clone())?;
            let loss = (f - reference.clone()).powf_scalar(2.0).mean() * 30.0;
            let grads = loss.backward();
            Ok(leaf.grad(&grads).map(Tensor::into_data))
        },
    )?;

    let step_noise = |noise: &mut Noise| StepNoise {
        sample: noise.normal_like(&x),
        background: noise.normal_like(&x),
    };
    let first = step_noise(&mut noise);
    let first = timed(
        &format!(
            "guided step {i} (Guide::step, the first: gradients at the input; DDPM, \
             classifier + gradient, 2 VGG forwards + gradient, masks)"
        ),
        || {
            let out = guide.step(
                &x,
                i,
                &targets,
                config.guide.scales[0],
                Carry::start(z),
                first,
            )?;
            let _ = out.next.z.clone().into_data();
            Ok(out)
        },
    )?;
    let second = step_noise(&mut noise);
    timed(
        &format!(
            "guided step {} (Guide::step, a later one: gradients at the M2 blend of the \
             Tweedie estimate)",
            i - 1
        ),
        || {
            let out = guide.step(
                &x,
                i - 1,
                &targets,
                config.guide.scales[0],
                first.next,
                second,
            )?;
            Ok(out.next.z.into_data())
        },
    )?;
    println!("after the steps: {}", memory());
    Ok(())
}

/// Explains the kiki/bouba pair at the DDPM's size with MaskDiME's published settings (the
/// first guidance scale only, so each image costs one pass of the sampler) through `run_set`,
/// and prints the network calls' share of the time; `warm_up` untimed passes over the pair
/// come first (each into a fresh folder, so none resumes another). The accounted pass waits
/// for the device at each network call's start and end (`profile::sync_with`; nothing on the
/// CPU backends), so on a GPU the calls hold their kernels' time; after a warm-up, a
/// free-running pass before it gives the time per image without those waits.
fn explain_two<B: AutodiffBackend>(
    maskdime: &MaskDime<B>,
    models: GuideModels<'_, B, Adm<B::InnerBackend>, LoadedOracle<B>>,
    warm_up: usize,
) -> Result<()> {
    let mut config = ExplainConfig::published(Preset::Maskdime);
    config.guide.scales.truncate(1);
    let size = maskdime.image_size();
    let data = kiki_bouba(1, size, 0)?;
    let device = B::Device::default();
    let pass = |i: usize| -> Result<_> {
        let out =
            std::env::temp_dir().join(format!("foil-maskdime-overhead-{}-{i}", std::process::id()));
        let plan = SetRun {
            batch_size: 1,
            ..SetRun::<B::InnerBackend>::new(&data, &out, size, &device)
        };
        let summary = models.run(&config, &plan);
        let _ = std::fs::remove_dir_all(&out);
        summary
    };
    for i in 0..warm_up {
        let summary = pass(i)?;
        println!(
            "warm-up pass {}: {} images in {:.1} s (not counted)",
            i + 1,
            summary.done,
            summary.seconds
        );
    }
    if warm_up > 0 {
        let summary = pass(warm_up)?;
        println!(
            "free-running pass: {} images in {:.2} s ({:.3} s per image)",
            summary.done,
            summary.seconds,
            summary.seconds / summary.done.max(1) as f64
        );
    }
    let wait_on = device.clone();
    let _sync = profile::sync_with(move || {
        // A failed wait shows again, as an error, at the next call on the device.
        let _ = B::sync(&wait_on);
    });
    profile::reset();
    let summary = pass(warm_up + 1)?;
    let timings = profile::take();
    println!(
        "{} images explained ({} flipped) at {size} px, tau = {}, scale {:?}, in {:.1} s ({:.1} s \
         per image)",
        summary.done,
        summary.flipped,
        config.guide.tau,
        config.guide.scales,
        summary.seconds,
        summary.seconds / summary.done.max(1) as f64
    );
    let networks: f64 = timings.iter().map(|t| t.seconds).sum();
    for t in &timings {
        println!("  {}: {:.2} s in {} calls", t.name, t.seconds, t.calls);
    }
    println!(
        "  network calls {networks:.2} s; everything else {:.2} s; run / network calls = {:.3}",
        summary.seconds - networks,
        summary.seconds / networks
    );
    Ok(())
}

/// Runs `f`, printing how long it took, in wall-clock time and in the process's CPU time (all
/// threads; a busy machine stretches the first, hardly the second).
fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let out = f()?;
    let wall = start.elapsed().as_secs_f64();
    match (cpu, cpu_seconds()) {
        (Some(a), Some(b)) => println!("{what}: {wall:.2} s ({:.2} s CPU)", b - a),
        _ => println!("{what}: {wall:.2} s"),
    }
    Ok(out)
}

/// The process's user + system CPU time so far (Linux's `/proc/self/stat`, at the usual 100
/// clock ticks per second), if readable.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name's closing parenthesis start at field 3 (state); user
    // and system time are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The process's resident and peak resident memory (Linux's `VmRSS`, `VmHWM`), if readable.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or_else(|| "n/a".to_string(), |v| v.trim().to_string())
    };
    format!(
        "resident {}, peak resident {}",
        field("VmRSS:"),
        field("VmHWM:")
    )
}

fn main() -> Result<()> {
    // The calling thread joins the CPU backends' pool (docs/performance.md).
    foil::backend::init_cpu_threads(None)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    if args.len() > 6 || (args.len() == 6 && args[3] != "image") {
        return Err(Error::out_of_range(
            "arguments",
            "DDPM CLASSIFIER VGG19 [load|step|image] [flex|cuda|wgpu] [warm, in image mode]",
            args.join(" "),
        ));
    }
    let files = [arg(0, TINY[0]), arg(1, TINY[1]), arg(2, TINY[2])];
    let tiny = files[0] == TINY[0];
    let mode = match arg(3, if tiny { "step" } else { "load" }).as_str() {
        "step" => Mode::Step,
        "image" => Mode::Image {
            warm_up: match arg(5, "").as_str() {
                "warm" => 1,
                "" => 0,
                other => {
                    return Err(Error::out_of_range(
                        "sixth argument of image mode",
                        "warm or nothing",
                        format!("{other:?}"),
                    ));
                }
            },
        },
        "load" => Mode::Load,
        other => {
            return Err(Error::out_of_range(
                "mode",
                "load, step or image",
                format!("{other:?}"),
            ));
        }
    };
    match arg(4, "flex").as_str() {
        // One CPU backend per build: each arm compiles the whole pipeline again.
        #[cfg(all(feature = "ndarray", not(feature = "flex")))]
        "ndarray" => run::<burn::backend::Autodiff<foil::backend::NdArray>>(&files, tiny, mode),
        #[cfg(feature = "flex")]
        "flex" => run::<burn::backend::Autodiff<foil::backend::Flex>>(&files, tiny, mode),
        #[cfg(feature = "cuda")]
        "cuda" => {
            foil::backend::require_cuda()?;
            run::<burn::backend::Autodiff<foil::backend::Cuda>>(&files, tiny, mode)
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<burn::backend::Autodiff<foil::backend::Wgpu>>(&files, tiny, mode),
        other => Err(Error::Backend {
            backend: other.to_string().into(),
            reason: "not compiled into this example; expected flex, cuda or wgpu, each with \
                     its cargo feature, or ndarray in a build without flex"
                .into(),
        }),
    }
}
