//! Inverts an image with edit-friendly DDPM inversion, regenerates it from the noise maps, and
//! writes original | reconstruction side by side.
//!
//! ```text
//! cargo run --release --example invert_reconstruct                     # a drawn test image
//! cargo run --release --example invert_reconstruct -- photo.jpg --size 64 --steps 100
//! ```
//! The denoiser is a small convolutional network with random weights: reconstruction is exact
//! for any denoiser, which is the point. The last line printed is `max_abs_error=<value>`.

use std::path::PathBuf;

use burn::tensor::Tensor;
use clap::Parser;
use foil::backend::Cpu;
use foil::core::image_io::{self, ColorMode, Resize};
use foil::core::toy::ConvDenoiserConfig;
use foil::core::{Noise, tensor::to_vec_f32};
use foil::invert::EfInverterConfig;
use foil::schedule::{BetaSchedule, NoiseSchedule, Spacing, Steps};
use image::{DynamicImage, GenericImage, RgbImage};

#[derive(Parser, Debug)]
#[command(about = "Edit-friendly DDPM inversion round trip on an image")]
struct Args {
    /// Image to invert (any format the image crate reads). Default: a drawn test pattern.
    image: Option<PathBuf>,
    /// Side of the square the image is resized and cropped to.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Inference steps (Kandinsky 2.2 schedule, leading spacing, offset 1).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Seed of the inversion noise and of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "invert_reconstruct.png")]
    out: PathBuf,
}

fn drawn(size: u32) -> DynamicImage {
    let c = size as f32 / 2.0;
    DynamicImage::ImageRgb8(RgbImage::from_fn(size, size, |x, y| {
        let (dx, dy) = (x as f32 - c, y as f32 - c);
        let r = (dx * dx + dy * dy).sqrt() / c;
        let ring = ((r * 12.0).sin() * 0.5 + 0.5) * 255.0;
        image::Rgb([ring as u8, (x * 255 / size) as u8, (y * 255 / size) as u8])
    }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The calling thread joins the CPU backends' pool (docs/performance.md).
    foil::backend::init_cpu_threads(None)?;
    let args = Args::parse();
    let device = Default::default();
    let img = match &args.image {
        Some(path) => image_io::load(path)?,
        None => drawn(args.size),
    };
    let resize = Resize::CenterCrop { size: args.size };
    let x0: Tensor<Cpu, 4> = image_io::images_to_tensor(&[img], ColorMode::Rgb, resize, &device)?;

    <Cpu as burn::tensor::backend::Backend>::seed(&device, args.seed);
    let model = ConvDenoiserConfig {
        channels: 3,
        hidden: 16,
        cond_dim: 0,
    }
    .init::<Cpu>(&device);
    let schedule = NoiseSchedule::new(
        &BetaSchedule::Linear {
            start: 0.00085,
            end: 0.012,
        },
        1000,
    )?;
    let steps = Steps::inference(&schedule, args.steps, Spacing::Leading, 1, false)?;
    let inverter = EfInverterConfig::default().init::<Cpu>(steps, None)?;

    let start = std::time::Instant::now();
    let maps = inverter.invert(&model, x0.clone(), None, &mut Noise::new(args.seed))?;
    let inverted = start.elapsed();
    let rec = inverter.generate(&model, &maps, None, 0)?;
    let regenerated = start.elapsed() - inverted;

    let err = to_vec_f32(&(rec.clone() - x0.clone()).abs())?
        .into_iter()
        .fold(0.0f32, f32::max);
    let mut pair = DynamicImage::new_rgb8(2 * args.size, args.size);
    let both = image_io::tensor_to_images(&Tensor::cat(vec![x0, rec], 0))?;
    pair.copy_from(&both[0], 0, 0)?;
    pair.copy_from(&both[1], args.size, 0)?;
    image_io::save(&pair, &args.out)?;
    println!(
        "inverted {0}x{0} in {1} steps: {2:.2?} inversion, {3:.2?} regeneration",
        args.size, args.steps, inverted, regenerated
    );
    println!("wrote {}", args.out.display());
    println!("max_abs_error={err:e}");
    Ok(())
}
