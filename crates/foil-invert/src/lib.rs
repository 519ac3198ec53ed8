//! Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov and Michaeli), the heart of
//! DIFFusion, for any [`foil_core::Denoiser`] on any burn backend.
//!
//! Inversion draws a fresh `q_sample` of the image at every step (not a chained forward
//! process) and solves each reverse DDPM step for the noise map `z` that turns the model's mean
//! into the next sample. Regenerating from those maps with the same condition reproduces the
//! image exactly; with another condition it edits the image while keeping its structure.
//!
//! ```no_run
//! # use burn::tensor::{Tensor, backend::Backend};
//! # use foil_core::{Denoiser, Noise};
//! # use foil_schedule::{BetaSchedule, NoiseSchedule, Spacing, Steps};
//! # use foil_invert::EfInverterConfig;
//! # fn demo<B: Backend, D: Denoiser<B>>(unet: &D, x0: Tensor<B, 4>, edited: Tensor<B, 2>, null: Tensor<B, 2>) -> foil_core::Result<()> {
//! let s = NoiseSchedule::new(&BetaSchedule::Linear { start: 0.00085, end: 0.012 }, 1000)?;
//! let steps = Steps::inference(&s, 100, Spacing::Leading, 1, false)?;
//! let inverter = EfInverterConfig::diffusion().init(steps, Some(null))?;
//! let maps = inverter.invert(unet, x0, None, &mut Noise::new(0))?;   // once per image
//! let gentle = inverter.generate(unet, &maps, Some(edited.clone()), 90)?; // last 10 steps
//! let strong = inverter.generate(unet, &maps, Some(edited), 50)?;         // last 50 steps
//! # Ok(()) }
//! ```

mod inverter;
mod maps;

pub use inverter::{EfInverter, EfInverterConfig, LastNoiseMap};
pub use maps::NoiseMaps;
