//! Property-testing schedules and sampler steps, foil's and yours (feature `testing`).
//!
//! - [`strategies`]: proptest strategies for every [`BetaSchedule`](crate::BetaSchedule) kind,
//!   respacing strings, inference step counts and spacings, [`Steps`] and small tensors.
//! - [`invariants`]: one function per property, each documented with the reason it must hold and
//!   returning an [`InvariantFailure`] that names the property, the input and the values.
//! - Two small traits, [`ScheduleUnderTest`] (betas, `abar`, timesteps) and [`StepUnderTest`]
//!   (the tensor math of one step), that [`NoiseSchedule`] and [`Steps`] implement and that your
//!   own schedule or step implements to be tested.
//! - Runners that drive proptest over a strategy of your schedules and return the *shrunk*
//!   counter-example: [`run_schedule_suite`], [`run_step_suite`], [`run_respacing_suite`]
//!   (and `assert_*` versions for `#[test]` functions).
//!
//! The invariants also work inside your own `proptest!` blocks: an [`InvariantFailure`] is a
//! `std::error::Error`, so `?` turns it into a test-case failure.
//!
//! ```
//! use foil_schedule::testing::{ScheduleUnderTest, assert_schedule_suite};
//! use proptest::prelude::*;
//!
//! /// A schedule whose betas grow geometrically from 1e-4 to 0.02.
//! #[derive(Debug)]
//! struct Geometric(usize);
//!
//! impl ScheduleUnderTest for Geometric {
//!     fn num_train_timesteps(&self) -> usize {
//!         self.0
//!     }
//!     fn betas(&self) -> Vec<f64> {
//!         let r = (0.02f64 / 1e-4).powf(1.0 / self.0.saturating_sub(1).max(1) as f64);
//!         (0..self.0).map(|i| 1e-4 * r.powi(i as i32)).collect()
//!     }
//! }
//!
//! assert_schedule_suite((1usize..=1000).prop_map(Geometric));
//! ```

pub mod invariants;
pub mod strategies;

/// The proptest this module is built on, so that your strategies match its version (the
/// `proptest!` macro still needs `proptest` among your own dependencies).
pub use proptest;

use std::fmt::Debug;

use burn::tensor::{Tensor, backend::Backend};
use foil_core::{DenoiserOutput, Result};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::{NoiseSchedule, StepOutput, Steps, VarianceType};

pub use invariants::{
    abar_strictly_decreasing, betas_in_open_unit_interval, ddim_eta0_deterministic,
    ddim_inversion_round_trips, ef_ddpm_noise_maps_reproduce_trajectory,
    posterior_mean_interpolates, posterior_variance_bounded, respacing_reproduces_abar,
    step_counts_agree, timesteps_decreasing_in_range, tweedie_inverts_q_sample,
};
pub use strategies::StepCase;

/// What the scalar invariants read from a schedule: a training schedule, the steps a sampler
/// visits, or anything else with betas and `abar` per step.
///
/// Steps are listed least noisy first (index `k = 0`); only [`timesteps`](Self::timesteps) is
/// in sampling order. Implement the two required methods for a beta schedule; override the
/// others when your schedule stores them.
pub trait ScheduleUnderTest {
    /// Number of steps `T` of the training schedule: every timestep must lie in `0..T`.
    fn num_train_timesteps(&self) -> usize;

    /// The beta of each step, least noisy first.
    fn betas(&self) -> Vec<f64>;

    /// `abar` at each step, least noisy first. Default: the cumulative product of `1 - beta`.
    fn alphas_cumprod(&self) -> Vec<f64> {
        self.betas()
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect()
    }

    /// `abar` of the step each step moves to. Default: 1 for step 0, then the previous step's.
    fn alphas_cumprod_prev(&self) -> Vec<f64> {
        let abar = self.alphas_cumprod();
        std::iter::once(1.0)
            .chain(abar.iter().copied())
            .take(abar.len())
            .collect()
    }

    /// The timesteps fed to the network, in sampling order (noisiest first). Default:
    /// `T - 1, ..., 1, 0` over the betas.
    fn timesteps(&self) -> Vec<usize> {
        (0..self.betas().len()).rev().collect()
    }
}

/// The tensor math of one sampler step, on any backend, for the tensor invariants. `k` is the
/// step index (0 = least noisy); the noise prediction `eps` is always passed in, so the suite
/// can feed the true noise.
pub trait StepUnderTest<B: Backend>: ScheduleUnderTest {
    /// Forward noising to step `k`: `sqrt(abar_k) x0 + sqrt(1 - abar_k) eps`.
    fn q_sample(&self, x0: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>>;

    /// The one-step (Tweedie) clean estimate from `x_t` at step `k` and the noise `eps`.
    fn predict_x0(&self, x_t: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>>;

    /// The mean of `q(x_prev | x_t, x0)` at step `k`.
    fn posterior_mean(&self, x0: Tensor<B, 4>, x_t: Tensor<B, 4>, k: usize)
    -> Result<Tensor<B, 4>>;

    /// The variance of `q(x_prev | x_t, x0)` at step `k`.
    fn posterior_variance(&self, k: usize) -> f64;

    /// One DDIM step with `eta = 0` from `x_t` at step `k`.
    fn ddim_step(&self, x_t: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>>;

    /// DDIM inversion with `eta = 0`: the step from `x_prev` back up to step `k` that
    /// [`ddim_step`](Self::ddim_step) undoes, with the same `eps`.
    fn ddim_inverse_step(
        &self,
        x_prev: Tensor<B, 4>,
        k: usize,
        eps: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>>;

    /// One stochastic (DDPM) step from `x_t` at step `k` with noise `noise`: its `mean`, its
    /// `std` (broadcastable to the sample; 0 where the step adds no noise) and
    /// `prev_sample = mean + std * noise`.
    fn ddpm_step(
        &self,
        x_t: Tensor<B, 4>,
        k: usize,
        eps: Tensor<B, 4>,
        noise: Tensor<B, 4>,
    ) -> Result<StepOutput<B>>;
}

impl ScheduleUnderTest for NoiseSchedule {
    fn num_train_timesteps(&self) -> usize {
        self.len()
    }

    fn betas(&self) -> Vec<f64> {
        NoiseSchedule::betas(self).to_vec()
    }

    fn alphas_cumprod(&self) -> Vec<f64> {
        NoiseSchedule::alphas_cumprod(self).to_vec()
    }
}

impl ScheduleUnderTest for Steps {
    fn num_train_timesteps(&self) -> usize {
        Steps::num_train_timesteps(self)
    }

    fn betas(&self) -> Vec<f64> {
        Steps::betas(self)
    }

    fn alphas_cumprod(&self) -> Vec<f64> {
        Steps::alphas_cumprod(self).to_vec()
    }

    fn alphas_cumprod_prev(&self) -> Vec<f64> {
        (0..self.len()).map(|k| self.abar_prev(k)).collect()
    }

    fn timesteps(&self) -> Vec<usize> {
        self.timesteps_desc()
    }
}

/// foil's steps: the DDPM step is guided-diffusion's fixed-small variance without clipping (as
/// the EF-DDPM inverter uses it), DDIM with `eta = 0`.
impl<B: Backend> StepUnderTest<B> for Steps {
    fn q_sample(&self, x0: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Steps::q_sample(self, x0, &[k], eps)
    }

    fn predict_x0(&self, x_t: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Steps::predict_x0(self, x_t, &[k], eps)
    }

    fn posterior_mean(
        &self,
        x0: Tensor<B, 4>,
        x_t: Tensor<B, 4>,
        k: usize,
    ) -> Result<Tensor<B, 4>> {
        Steps::posterior_mean(self, x0, x_t, &[k])
    }

    fn posterior_variance(&self, k: usize) -> f64 {
        Steps::posterior_variance(self, k)
    }

    fn ddim_step(&self, x_t: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Ok(Steps::ddim_step(self, x_t, &[k], eps, 0.0, None)?.prev_sample)
    }

    fn ddim_inverse_step(
        &self,
        x_prev: Tensor<B, 4>,
        k: usize,
        eps: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        Steps::ddim_inverse_step(self, x_prev, &[k], eps)
    }

    fn ddpm_step(
        &self,
        x_t: Tensor<B, 4>,
        k: usize,
        eps: Tensor<B, 4>,
        noise: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        Steps::ddpm_step(
            self,
            x_t,
            &[k],
            DenoiserOutput::eps(eps),
            VarianceType::FixedSmall,
            false,
            noise,
        )
    }
}

/// The properties of the suite, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// betas, `abar`, `abar_prev` and timesteps have one entry per step, and there is a step.
    StepCounts,
    /// `abar` strictly decreasing, inside `(0, 1]`.
    AbarStrictlyDecreasing,
    /// Every beta in `(0, 1)`.
    BetasInOpenUnitInterval,
    /// Respaced `abar` equal the kept ones, and the respaced betas chain back to them.
    RespacingReproducesAbar,
    /// `q_sample` then the Tweedie estimate with the true noise returns `x0`.
    TweedieInvertsQSample,
    /// The posterior mean interpolates between `x0` and `x_t` (rescaled).
    PosteriorMeanInterpolates,
    /// Posterior variance in `[0, beta_k]`.
    PosteriorVarianceBounded,
    /// A DDIM step with `eta = 0` is a deterministic function of its inputs.
    DdimDeterministic,
    /// DDIM inversion with `eta = 0` undoes a DDIM step.
    DdimInversionRoundTrips,
    /// EF-DDPM noise maps make the DDPM step reproduce the trajectory exactly.
    EfDdpmReproducesTrajectory,
    /// Timesteps strictly decreasing in sampling order, inside the training range.
    TimestepsDecreasingInRange,
}

impl Property {
    /// A short name, as failures print it.
    pub fn name(self) -> &'static str {
        match self {
            Property::StepCounts => "one value per step",
            Property::AbarStrictlyDecreasing => "abar strictly decreasing in (0, 1]",
            Property::BetasInOpenUnitInterval => "betas in (0, 1)",
            Property::RespacingReproducesAbar => "respaced betas reproduce the kept abar",
            Property::TweedieInvertsQSample => "q_sample then Tweedie with the true noise is x0",
            Property::PosteriorMeanInterpolates => "posterior mean interpolates x0 and x_t",
            Property::PosteriorVarianceBounded => "posterior variance in [0, beta_k]",
            Property::DdimDeterministic => "DDIM with eta = 0 is deterministic",
            Property::DdimInversionRoundTrips => "DDIM inversion round-trips",
            Property::EfDdpmReproducesTrajectory => {
                "DDPM steps with EF-DDPM noise maps reproduce the trajectory"
            }
            Property::TimestepsDecreasingInRange => {
                "timesteps strictly decreasing inside the training range"
            }
        }
    }

    /// Why the property must hold (also in the docs of the matching function in
    /// [`invariants`]).
    pub fn reason(self) -> &'static str {
        match self {
            Property::StepCounts => {
                "every per-step quantity describes the same steps; a length mismatch shifts \
                 every coefficient by a step"
            }
            Property::AbarStrictlyDecreasing => {
                "abar is the signal variance left at a step: a product of factors 1 - beta in \
                 (0, 1), it must fall at every step and never reach 0 (the Tweedie estimate \
                 divides by sqrt(abar))"
            }
            Property::BetasInOpenUnitInterval => {
                "beta is the variance of the noise a forward step adds: beta = 0 makes the step \
                 the identity (a zero posterior variance, an infinite noise map), beta >= 1 \
                 destroys the signal, and sqrt(1 - beta) must be real"
            }
            Property::RespacingReproducesAbar => {
                "a respaced sampler must see exactly the noise levels the network was trained \
                 at; its betas 1 - abar_s / abar_prev_kept are chosen so that their product is \
                 the kept abar"
            }
            Property::TweedieInvertsQSample => {
                "x_t = sqrt(abar) x0 + sqrt(1 - abar) eps solves for x0 given the noise; every \
                 guided sampler and the DDIM step read the clean estimate this way"
            }
            Property::PosteriorMeanInterpolates => {
                "mu / sqrt(abar_prev) = w x0 + (1 - w) x_t / sqrt(abar) with w = beta / (1 - abar) \
                 in [0, 1]: the posterior mean only moves a sample towards its clean estimate"
            }
            Property::PosteriorVarianceBounded => {
                "beta_tilde = (1 - abar_prev) / (1 - abar) beta, and 1 - abar_prev <= 1 - abar: \
                 conditioning on x0 can only shrink the variance a step adds"
            }
            Property::DdimDeterministic => {
                "with eta = 0 the DDIM step adds no noise, so the same inputs give the same \
                 output bit for bit; DDIM inversion and reconstruction rely on it"
            }
            Property::DdimInversionRoundTrips => {
                "with the same eps both DDIM directions are the same affine map between \
                 abar_prev and abar, read forwards and backwards"
            }
            Property::EfDdpmReproducesTrajectory => {
                "edit-friendly inversion stores z = (x_prev - mu) / sigma per step; regeneration \
                 computes mu + sigma z from the same x_t, so it must return the inverted \
                 trajectory, bit for bit once the inverter re-derives x_prev from z"
            }
            Property::TimestepsDecreasingInRange => {
                "a sampler walks from noise to data through distinct timesteps, and the network \
                 only knows the timesteps 0..T it was trained on"
            }
        }
    }
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A property that does not hold: which, for what input, and the values that break it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{property} fails for {input}: {values} (it must hold because {reason})", reason = property.reason())]
pub struct InvariantFailure {
    /// The property.
    pub property: Property,
    /// The input it fails for (the step, timestep, shape).
    pub input: String,
    /// The offending values (and the tolerance where one applies).
    pub values: String,
}

impl InvariantFailure {
    /// A failure of `property` for `input` with `values`.
    pub fn new(property: Property, input: impl Into<String>, values: impl Into<String>) -> Self {
        Self {
            property,
            input: input.into(),
            values: values.into(),
        }
    }
}

/// Why a run of the suite over a strategy failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SuiteError {
    /// A property fails; `minimal_input` is the counter-example proptest shrank it to.
    #[error("{failure}\nminimal failing input (shrunk by proptest): {minimal_input}")]
    Falsified {
        /// The failure at the minimal input.
        failure: InvariantFailure,
        /// The minimal input, as `Debug` prints it.
        minimal_input: String,
    },
    /// A property failed, then passed when re-run on the minimal input (a step that is not a
    /// function of its inputs); `reason` is what the failing run said.
    #[error(
        "a property failed, but not when re-run on the minimal input {minimal_input}: {reason}"
    )]
    Flaky {
        /// The failing run's message.
        reason: String,
        /// The minimal input, as `Debug` prints it.
        minimal_input: String,
    },
    /// proptest gave up (too many rejected inputs).
    #[error("the property run was aborted: {0}")]
    Aborted(String),
}

impl SuiteError {
    /// The property that failed, if one did.
    pub fn property(&self) -> Option<Property> {
        match self {
            SuiteError::Falsified { failure, .. } => Some(failure.property),
            _ => None,
        }
    }
}

/// Runs `check` over `strategy`; on failure re-runs it on proptest's minimal input to return
/// the typed failure.
fn run_suite<S: Strategy>(
    runner: &mut TestRunner,
    strategy: S,
    check: impl Fn(&S::Value) -> std::result::Result<(), InvariantFailure>,
) -> std::result::Result<(), SuiteError> {
    match runner.run(&strategy, |v| {
        check(&v).map_err(|f| TestCaseError::fail(f.to_string()))
    }) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, minimal)) => Err(match check(&minimal) {
            Err(failure) => SuiteError::Falsified {
                failure,
                minimal_input: format!("{minimal:?}"),
            },
            Ok(()) => SuiteError::Flaky {
                reason: reason.to_string(),
                minimal_input: format!("{minimal:?}"),
            },
        }),
        Err(TestError::Abort(reason)) => Err(SuiteError::Aborted(reason.to_string())),
    }
}

/// Every scalar invariant of `schedule`: [`step_counts_agree`],
/// [`timesteps_decreasing_in_range`], [`betas_in_open_unit_interval`],
/// [`abar_strictly_decreasing`], in that order; the first failure is returned.
pub fn check_schedule<S: ScheduleUnderTest + ?Sized>(
    schedule: &S,
) -> std::result::Result<(), InvariantFailure> {
    step_counts_agree(schedule)?;
    timesteps_decreasing_in_range(schedule)?;
    betas_in_open_unit_interval(schedule)?;
    abar_strictly_decreasing(schedule)
}

/// Every invariant of a step at one [`StepCase`]: [`check_schedule`], then
/// [`posterior_variance_bounded`] at every step, then at the picked step `k`
/// [`tweedie_inverts_q_sample`], [`posterior_mean_interpolates`],
/// [`ddim_eta0_deterministic`], [`ddim_inversion_round_trips`] and
/// [`ef_ddpm_noise_maps_reproduce_trajectory`] over `case.chain` steps from `k` down.
pub fn check_step<B: Backend, S: StepUnderTest<B> + ?Sized>(
    step: &S,
    case: &StepCase<B>,
) -> std::result::Result<(), InvariantFailure> {
    check_schedule(step)?;
    posterior_variance_bounded(step)?;
    let k = case.pick.index(step.betas().len());
    let eps = case.noise[0].clone();
    tweedie_inverts_q_sample(step, k, case.x0.clone(), eps.clone())?;
    posterior_mean_interpolates(step, k, case.x0.clone(), eps.clone())?;
    let x_t = step
        .q_sample(case.x0.clone(), k, eps.clone())
        .map_err(|e| invariants::step_error(Property::DdimDeterministic, k, e))?;
    ddim_eta0_deterministic(step, k, x_t.clone(), eps.clone())?;
    ddim_inversion_round_trips(step, k, x_t, eps)?;
    let chain = case
        .chain
        .clamp(1, case.noise.len().saturating_sub(1).max(1));
    let lo = (k + 1).saturating_sub(chain);
    ef_ddpm_noise_maps_reproduce_trajectory(
        step,
        lo..=k,
        case.x0.clone(),
        &case.noise[..=k - lo + 1],
    )
}

/// Runs [`check_schedule`] on every schedule `schedules` makes; on failure, the shrunk
/// counter-example and the typed failure.
pub fn run_schedule_suite<S, St>(
    runner: &mut TestRunner,
    schedules: St,
) -> std::result::Result<(), SuiteError>
where
    S: ScheduleUnderTest + Debug,
    St: Strategy<Value = S>,
{
    run_suite(runner, schedules, |s| check_schedule(s))
}

/// Runs [`check_step`] on every step `steps` makes, each with a [`StepCase`] of
/// [`strategies::step_case`] on `device`; on failure, the shrunk counter-example and the typed
/// failure.
pub fn run_step_suite<B, S, St>(
    runner: &mut TestRunner,
    steps: St,
    device: B::Device,
) -> std::result::Result<(), SuiteError>
where
    B: Backend,
    S: StepUnderTest<B> + Debug,
    St: Strategy<Value = S>,
{
    run_suite(
        runner,
        (steps, strategies::step_case::<B>(device)),
        |(s, case)| check_step(s, case),
    )
}

/// Runs [`respacing_reproduces_abar`] on `respace(schedule, keep)` for every schedule
/// `schedules` makes and every [`strategies::kept_steps`] of its length; an error from
/// `respace` is a failure of the property.
pub fn run_respacing_suite<S, R, St, F>(
    runner: &mut TestRunner,
    schedules: St,
    respace: F,
) -> std::result::Result<(), SuiteError>
where
    S: ScheduleUnderTest + Debug + Clone,
    R: ScheduleUnderTest,
    St: Strategy<Value = S>,
    F: Fn(&S, &[usize]) -> Result<R>,
{
    let cases = schedules.prop_flat_map(|s| {
        let n = s.betas().len();
        (proptest::strategy::Just(s), strategies::kept_steps(n))
    });
    run_suite(runner, cases, |(s, keep)| {
        let respaced = respace(s, keep).map_err(|e| {
            InvariantFailure::new(
                Property::RespacingReproducesAbar,
                format!("kept steps {keep:?}"),
                format!("the respacing returned an error: {e}"),
            )
        })?;
        respacing_reproduces_abar(s, keep, &respaced)
    })
}

/// Number of cases the `assert_*` runners try for scalar properties.
pub const SCHEDULE_CASES: u32 = 256;
/// Number of cases the `assert_*` runners try for tensor properties.
pub const STEP_CASES: u32 = 64;

/// A proptest runner trying `cases` cases, with a fresh random seed and without failure
/// persistence (a runner outside `proptest!` has no source file to store seeds beside).
pub fn test_runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// [`run_schedule_suite`] with [`SCHEDULE_CASES`] cases; panics with the failure and its
/// shrunk counter-example (for `#[test]` functions).
#[track_caller]
pub fn assert_schedule_suite<S, St>(schedules: St)
where
    S: ScheduleUnderTest + Debug,
    St: Strategy<Value = S>,
{
    if let Err(e) = run_schedule_suite(&mut test_runner(SCHEDULE_CASES), schedules) {
        panic!("{e}");
    }
}

/// [`run_step_suite`] with [`STEP_CASES`] cases on `device`; panics with the failure and its
/// shrunk counter-example.
#[track_caller]
pub fn assert_step_suite<B, S, St>(steps: St, device: B::Device)
where
    B: Backend,
    S: StepUnderTest<B> + Debug,
    St: Strategy<Value = S>,
{
    if let Err(e) = run_step_suite::<B, S, St>(&mut test_runner(STEP_CASES), steps, device) {
        panic!("{e}");
    }
}

/// [`run_respacing_suite`] with [`SCHEDULE_CASES`] cases; panics with the failure and its
/// shrunk counter-example.
#[track_caller]
pub fn assert_respacing_suite<S, R, St, F>(schedules: St, respace: F)
where
    S: ScheduleUnderTest + Debug + Clone,
    R: ScheduleUnderTest,
    St: Strategy<Value = S>,
    F: Fn(&S, &[usize]) -> Result<R>,
{
    if let Err(e) = run_respacing_suite(&mut test_runner(SCHEDULE_CASES), schedules, respace) {
        panic!("{e}");
    }
}
