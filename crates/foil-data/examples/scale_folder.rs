//! A large class-folder dataset for the streaming measurements of `docs/scale.md`:
//!
//! ```text
//! cargo run -p foil-data --example scale_folder -- generate DIR PER_CLASS   # DIR/{disk,square}/NNNNNN.png, 32 x 32 RGB
//! cargo run -p foil-data --example scale_folder -- list DIR                 # folder::load: files per class
//! cargo run -p foil-data --example scale_folder -- decode DIR BATCH         # every image, BATCH at a time, as tensors
//! ```
//!
//! Peak memory is what the measurements compare: run it under `/usr/bin/time -v`.

use std::path::Path;

use burn::backend::NdArray;
use foil_core::image_io::{self, ColorMode, Resize};
use foil_core::{Error, Result};
use foil_data::folder;
use image::{DynamicImage, Rgb, RgbImage};

/// Side of the generated images, in pixels.
const SIZE: u32 = 32;

/// A seeded 32 x 32 RGB image: a disk (class 0) or a square (class 1) on a tinted ground, its
/// place, size and colours drawn from `seed` by a small linear congruential generator.
fn draw(class: usize, seed: u64) -> RgbImage {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |n: u32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % u64::from(n)) as u32
    };
    let (cx, cy, r) = (8 + next(16), 8 + next(16), 4 + next(5));
    let ink = Rgb([next(256) as u8, next(256) as u8, next(256) as u8]);
    let ground = Rgb([next(64) as u8, next(64) as u8, next(64) as u8]);
    RgbImage::from_fn(SIZE, SIZE, |x, y| {
        let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
        let inside = match class {
            0 => dx * dx + dy * dy <= r * r,
            _ => dx <= r && dy <= r,
        };
        if inside { ink } else { ground }
    })
}

fn generate(dir: &Path, per_class: usize) -> Result<()> {
    for (class, name) in ["disk", "square"].into_iter().enumerate() {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).map_err(|e| Error::io(&sub, e))?;
        for i in 0..per_class {
            let img = DynamicImage::ImageRgb8(draw(class, (i * 2 + class) as u64));
            image_io::save(&img, sub.join(format!("{i:06}.png")))?;
        }
    }
    println!("{} images in {}", 2 * per_class, dir.display());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        Error::out_of_range(
            "arguments",
            "generate DIR PER_CLASS | list DIR | decode DIR BATCH",
            format!("{args:?}"),
        )
    };
    let number = |s: &String| s.parse::<usize>().map_err(|_| usage());
    match args.as_slice() {
        [cmd, dir, n] if cmd == "generate" => generate(Path::new(dir), number(n)?),
        [cmd, dir] if cmd == "list" => {
            let data = folder::load(dir)?;
            println!(
                "{} images, classes {:?}, per class {:?}",
                data.len(),
                data.class_names(),
                data.counts()
            );
            Ok(())
        }
        [cmd, dir, batch] if cmd == "decode" => {
            let data = folder::load(dir)?;
            let batch = number(batch)?.max(1);
            let all: Vec<usize> = (0..data.len()).collect();
            let mut sum = 0.0f64;
            for chunk in all.chunks(batch) {
                let (x, _) = data.tensors::<NdArray>(
                    chunk,
                    ColorMode::Rgb,
                    Resize::Keep,
                    &Default::default(),
                )?;
                sum += f64::from(x.mean().into_scalar());
            }
            println!(
                "{} images decoded in batches of {batch}, mean of batch means {:.4}",
                data.len(),
                sum / all.len().div_ceil(batch) as f64
            );
            Ok(())
        }
        _ => Err(usage()),
    }
}
