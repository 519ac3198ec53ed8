//! Prints a readable table of a diffusion schedule.
//!
//! ```text
//! cargo run --release --example schedules                        # Kandinsky 2.2, 100 steps
//! cargo run --release --example schedules -- --preset dime       # DiME's CelebA 500 -> 200
//! cargo run --release --example schedules -- --preset cosine --steps 20
//! ```

use clap::{Parser, ValueEnum};
use foil::schedule::{BetaSchedule, NoiseSchedule, Spacing, Steps, space_timesteps};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// Kandinsky 2.2 decoder: linear 0.00085..0.012 over 1000, diffusers leading spacing, offset 1.
    Kandinsky,
    /// DiME's CelebA DDPM: linear 2e-4..0.04 over 500, guided-diffusion respacing.
    Dime,
    /// DDPM: linear 1e-4..0.02 over 1000, guided-diffusion respacing.
    Ddpm,
    /// Nichol and Dhariwal's cosine schedule over 1000, guided-diffusion respacing.
    Cosine,
}

#[derive(Parser, Debug)]
#[command(about = "Print a diffusion schedule as a table")]
struct Args {
    /// Which schedule.
    #[arg(long, value_enum, default_value = "kandinsky")]
    preset: Preset,
    /// Sampling steps (default: 100 for Kandinsky, 200 for DiME, 50 otherwise).
    #[arg(long)]
    steps: Option<usize>,
    /// Print every row instead of about 12.
    #[arg(long)]
    all: bool,
}

fn main() -> Result<(), foil::core::Error> {
    let args = Args::parse();
    let (steps, title) = match args.preset {
        Preset::Kandinsky => {
            let s = NoiseSchedule::new(
                &BetaSchedule::Linear {
                    start: 0.00085,
                    end: 0.012,
                },
                1000,
            )?;
            let n = args.steps.unwrap_or(100);
            (
                Steps::inference(&s, n, Spacing::Leading, 1, false)?,
                format!(
                    "Kandinsky 2.2 decoder: linear 0.00085..0.012 / 1000, {n} leading steps, offset 1"
                ),
            )
        }
        Preset::Dime | Preset::Ddpm | Preset::Cosine => {
            let (kind, t, default, name) = match args.preset {
                Preset::Dime => (
                    BetaSchedule::Linear {
                        start: 2e-4,
                        end: 0.04,
                    },
                    500,
                    200,
                    "DiME CelebA: linear 2e-4..0.04 / 500",
                ),
                Preset::Ddpm => (
                    BetaSchedule::ddpm(),
                    1000,
                    50,
                    "DDPM: linear 1e-4..0.02 / 1000",
                ),
                _ => (BetaSchedule::cosine(), 1000, 50, "cosine s=0.008 / 1000"),
            };
            let n = args.steps.unwrap_or(default);
            let s = NoiseSchedule::new(&kind, t)?;
            (
                Steps::respaced(&s, &space_timesteps(t, &n.to_string())?)?,
                format!("{name}, respaced to {n}"),
            )
        }
    };
    println!("{title}");
    println!(
        "{:>5} {:>6} {:>12} {:>12} {:>12} {:>12} {:>9}",
        "k", "t", "abar", "abar_prev", "beta", "beta_tilde", "SNR dB"
    );
    let n = steps.len();
    let stride = if args.all { 1 } else { n.div_ceil(12).max(1) };
    let mut rows: Vec<usize> = (0..n).rev().step_by(stride).collect();
    if rows.last() != Some(&0) {
        rows.push(0);
    }
    for k in rows {
        let a = steps.abar(k);
        println!(
            "{k:>5} {:>6} {a:>12.6e} {:>12.6e} {:>12.6e} {:>12.6e} {:>9.2}",
            steps.timesteps()[k],
            steps.abar_prev(k),
            steps.beta(k),
            steps.posterior_variance(k),
            10.0 * (a / (1.0 - a)).log10(),
        );
    }
    Ok(())
}
