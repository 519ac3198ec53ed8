//! # foil: visual counterfactuals with diffusion models
//!
//! Given an image of class A, foil produces the smallest natural-looking change that makes it
//! class B, and measures how good that change is. This facade re-exports the workspace's
//! library crates and chooses the burn backends compiled in (cargo features `ndarray`
//! (default), `flex`, `wgpu`, `cuda`):
//!
//! - [`core`]: the `Denoiser` / `Classifier` / `ImageEncoder` traits, the `Method` trait, image ↔ tensor
//!   conversion, seeded noise, the error type;
//! - [`schedule`]: noise schedules, respacing, posteriors, DDPM and DDIM steps;
//! - [`invert`]: edit-friendly DDPM inversion and regeneration (DIFFusion's editing engine);
//! - [`embed`]: class statistics, directions and bias removal (embedding arithmetic);
//! - [`diffusion`]: DIFFusion: the edit search, its ladders and baselines, the decoder;
//! - [`guide`]: MaskDiME, FastDiME and DiME, one gradient-guided sampler with presets;
//! - [`metrics`]: success ratio, LPIPS, FID / sFID, COUT, MNAC, cosine similarities, diversity;
//! - [`models`]: networks that load published weights by their original names;
//! - [`run`]: any method over a dataset, resumably, and the results folder's format;
//! - [`data`]: class-folder datasets, Fashion-MNIST, MNIST digits, procedural sets;
//! - [`train`]: training loops with checkpoints, resume and a metrics log;
//! - [`pipeline`]: end to end on a dataset (train, explain, score), what the `foil` CLI runs.
//!
//! ```
//! use foil::schedule::{NoiseSchedule, BetaSchedule, Steps, Spacing};
//! // The Kandinsky 2.2 decoder's sampling schedule.
//! let s = NoiseSchedule::new(&BetaSchedule::Linear { start: 0.00085, end: 0.012 }, 1000)?;
//! let steps = Steps::inference(&s, 100, Spacing::Leading, 1, false)?;
//! assert_eq!(steps.timesteps_desc()[..3], [991, 981, 971]);
//! # Ok::<(), foil::core::Error>(())
//! ```

pub use foil_core as core;
pub use foil_data as data;
pub use foil_diffusion as diffusion;
pub use foil_embed as embed;
pub use foil_guide as guide;
pub use foil_invert as invert;
pub use foil_metrics as metrics;
pub use foil_models as models;
pub use foil_run as run;
pub use foil_schedule as schedule;
pub use foil_train as train;

pub mod backend;
pub mod pipeline;
pub mod teach;
