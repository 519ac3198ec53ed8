//! Full-size check of the published DIFFusion networks: loads the Kandinsky 2.2 decoder
//! pipeline folder and the prior's image encoder (peak memory: run under `/usr/bin/time -v`),
//! prints their parameters, and with `step` times one of each call a DIFFusion edit makes at
//! 512 px: a CLIP embedding, a MoVQ encode, one guided UNet step (batch 2: the null and the
//! edited condition), a MoVQ decode. With `repeat N` it makes each call once untimed (a
//! sampler calls its networks again and again: burn-flex keeps a weight's transform or packed
//! panels from its second call), then N rounds, each call once with burn-flex's packed
//! products (`set_packed_matmul`) and once without, alternated, and prints every time and the
//! medians. `tools/write_published_full.py DIR` writes random-weight folders of the published
//! configurations; `tools/bench_torch.py --only kandinsky_unet_full,...` times PyTorch on the
//! same calls; docs/published.md has the figures.
//!
//! ```text
//! /usr/bin/time -v cargo run --release --example published_step -- DIR/kandinsky-2-2-decoder \
//!     DIR/kandinsky-2-2-prior [load|step|repeat N] [flex]
//! ```

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, Tensor, backend::Backend};
use burn_flex::ops::matmul::set_packed_matmul;
use foil::core::{Denoiser, ImageEncoder, Result};
use foil::diffusion::{Codec, Decoder};
use foil::pipeline::load_kandinsky;

/// What the example does after loading.
#[derive(Clone, Copy)]
enum Mode {
    /// Nothing more.
    Load,
    /// One of each call, timed.
    Step,
    /// One untimed call of each, then this many rounds with packed products on and off.
    Repeat(usize),
}

fn run<B: Backend>(decoder: &str, prior: &str, mode: Mode) -> Result<()> {
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
    if let Mode::Load = mode {
        return Ok(());
    }
    let image = Tensor::<B, 4>::random([1, 3, 512, 512], Distribution::Uniform(-1.0, 1.0), &device);
    let cond = timed("CLIP embedding (1 image)", mode, || k.encode(image.clone()))?;
    let latents = timed("MoVQ encode (1 image)", mode, || {
        k.to_latents(image.clone())
    })?;
    let null = k.null_condition(&device)?;
    timed("UNet step, batch 2 (guidance)", mode, || {
        let x = Tensor::cat(vec![latents.clone(), latents.clone()], 0);
        let c = Tensor::cat(vec![null.clone(), cond.clone()], 0);
        Ok(k.forward(x, &[501, 501], Some(c))?.eps.into_data())
    })?;
    timed("MoVQ decode (1 image)", mode, || {
        Ok(k.to_images(latents.clone())?.into_data())
    })?;
    Ok(())
}

/// Runs `f` as `mode` says and prints its times: once (`step`), or once untimed, then `rounds`
/// rounds of one call with burn-flex's packed products and one without (`repeat`), with the
/// medians. Returns the first call's output.
fn timed<T>(what: &str, mode: Mode, f: impl Fn() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    let Mode::Repeat(rounds) = mode else {
        println!("{what}: {:.2} s", start.elapsed().as_secs_f64());
        return Ok(out);
    };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (packed, times) in [(true, &mut on), (false, &mut off)] {
            set_packed_matmul(packed);
            let start = Instant::now();
            f()?;
            times.push(start.elapsed().as_secs_f64());
        }
    }
    set_packed_matmul(true);
    println!(
        "{what}: packed {:.2} s ({}), gemm {:.2} s ({})",
        median(&on),
        list(&on),
        median(&off),
        list(&off)
    );
    Ok(out)
}

/// The median of `times` (the upper one of an even count).
fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// `times` as "a / b / c".
fn list(times: &[f64]) -> String {
    let parts: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
    parts.join(" / ")
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
    let (mode, backend_arg) = match arg(2, "load").as_str() {
        "load" => (Mode::Load, 3),
        "step" => (Mode::Step, 3),
        "repeat" => {
            let rounds = arg(3, "3");
            let rounds = rounds
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| foil::core::Error::OutOfRange {
                    what: "repeat's rounds".into(),
                    expected: "a whole number above 0".into(),
                    found: rounds.clone(),
                })?;
            (Mode::Repeat(rounds), 4)
        }
        other => {
            return Err(foil::core::Error::OutOfRange {
                what: "the mode".into(),
                expected: "`load`, `step` or `repeat N`".into(),
                found: other.to_string(),
            });
        }
    };
    match arg(backend_arg, "flex").as_str() {
        "flex" => run::<foil::backend::Flex>(&decoder, &prior, mode),
        other => Err(foil::core::Error::Backend {
            backend: other.to_string().into(),
            reason: "this example runs on flex, the CPU backend of the default build".into(),
        }),
    }
}
