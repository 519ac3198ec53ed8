//! Diffusion noise schedules and the step math both foil methods run on.
//!
//! Two layers:
//!
//! - [`NoiseSchedule`]: the training schedule, `betas` and `abar` (the cumulative product of
//!   `1 - beta`) over `T` steps, built from a [`BetaSchedule`]. Scalar math is `f64`.
//! - [`Steps`]: the steps a sampler actually visits, each with the timestep to feed the
//!   network, its `abar_t` and the `abar` of the step it moves to. Built either by
//!   guided-diffusion respacing ([`Steps::respaced`], [`space_timesteps`]) or by diffusers-style
//!   spacing for `N` inference steps ([`Steps::inference`]). All tensor math (q_sample, the
//!   Tweedie estimate, posteriors, learned variance, DDPM and DDIM steps) lives here, on any
//!   burn backend, with per-sample step indices and the noise always passed in.
//!
//! Step indices `k` run `0..len` with `k = 0` the least noisy; samplers walk `k` downwards.
//!
//! [`diffusers`] reads diffusers' `scheduler_config.json` ([`DiffusersScheduler`]) into a schedule
//! and its spacing.
//!
//! With the `testing` feature, [`testing`] holds proptest strategies for every schedule kind and
//! an invariant suite that runs on foil's schedules and on yours (docs/schedule.md).

pub mod diffusers;
mod schedule;
mod steps;
#[cfg(feature = "testing")]
pub mod testing;

pub use diffusers::{DiffusersScheduler, SchedulerClass};
pub use schedule::{BetaSchedule, MAX_TRAIN_STEPS, NoiseSchedule, space_timesteps};
pub use steps::{Spacing, StepOutput, Steps, VarianceType};
