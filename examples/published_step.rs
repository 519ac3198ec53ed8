//! Full-size check of the published DIFFusion networks: loads the Kandinsky 2.2 decoder
//! pipeline folder and the prior's image encoder (peak memory: run under `/usr/bin/time -v`),
//! prints their parameters, and with `step` times one of each call a DIFFusion edit makes at
//! 512 px: a CLIP embedding, a MoVQ encode, one guided UNet step (batch 2: the null and the
//! edited condition), a MoVQ decode. `tools/write_published_full.py DIR` writes random-weight
//! folders of the published configurations; docs/published.md has the figures.
//!
//! ```text
//! /usr/bin/time -v cargo run --release --example published_step -- DIR/kandinsky-2-2-decoder \
//!     DIR/kandinsky-2-2-prior [load|step] [flex]
//! ```

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, Tensor, backend::Backend};
use foil::core::{Denoiser, ImageEncoder, Result};
use foil::diffusion::{Codec, Decoder};
use foil::pipeline::load_kandinsky;

fn run<B: Backend>(decoder: &str, prior: &str, step: bool) -> Result<()> {
    let device = B::Device::default();
    let start = Instant::now();
    let (k, _) = load_kandinsky::<B>(decoder.as_ref(), prior.as_ref(), None, &device)?;
    let params = [
        ("UNet", k.unet().num_params()),
        ("MoVQ", k.movq().num_params()),
        ("CLIP image encoder", k.encoder().num_params()),
    ];
    let total: usize = params.iter().map(|(_, n)| n).sum();
    for (name, n) in params {
        println!("{name}: {n} parameters ({:.2} GB as f32)", n as f64 * 4e-9);
    }
    println!(
        "all: {total} parameters, {:.2} GB as f32; loaded in {:.1} s",
        total as f64 * 4e-9,
        start.elapsed().as_secs_f64()
    );
    if !step {
        return Ok(());
    }
    let image = Tensor::<B, 4>::random([1, 3, 512, 512], Distribution::Uniform(-1.0, 1.0), &device);
    let cond = timed("CLIP embedding (1 image)", || k.encode(image.clone()))?;
    let latents = timed("MoVQ encode (1 image)", || k.to_latents(image.clone()))?;
    let null = k.null_condition(&device)?;
    timed("UNet step, batch 2 (guidance)", || {
        let x = Tensor::cat(vec![latents.clone(), latents.clone()], 0);
        let c = Tensor::cat(vec![null.clone(), cond.clone()], 0);
        Ok(k.forward(x, &[501, 501], Some(c))?.eps.into_data())
    })?;
    timed("MoVQ decode (1 image)", || {
        Ok(k.to_images(latents.clone())?.into_data())
    })?;
    Ok(())
}

/// Runs `f`, printing how long it took.
fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    println!("{what}: {:.2} s", start.elapsed().as_secs_f64());
    Ok(out)
}

fn main() -> Result<()> {
    // The calling thread joins the CPU backends' pool (docs/performance.md).
    foil::backend::init_cpu_threads(None)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let (decoder, prior) = (
        arg(0, "tests/fixtures/published/kandinsky-2-2-decoder"),
        arg(1, "tests/fixtures/published/kandinsky-2-2-prior"),
    );
    let step = arg(2, "load") == "step";
    match arg(3, "flex").as_str() {
        "flex" => run::<foil::backend::Flex>(&decoder, &prior, step),
        other => Err(foil::core::Error::Backend {
            backend: other.to_string().into(),
            reason: "this example runs on flex, the CPU backend of the default build".into(),
        }),
    }
}
