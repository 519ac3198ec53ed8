//! The public invariant suite (`foil_schedule::testing`) on foil's own schedules and steps, and
//! on deliberately broken ones, which it must reject with the right property.

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::Result;
use foil_schedule::testing::{
    Property, ScheduleUnderTest, StepUnderTest, SuiteError, run_respacing_suite,
    run_schedule_suite, run_step_suite, strategies, test_runner,
};
use foil_schedule::{NoiseSchedule, StepOutput, Steps};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

/// A runner with a fixed seed, so a rejection test sees the same cases every run.
fn deterministic(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    TestRunner::new_with_rng(config, rng)
}

fn pass(result: std::result::Result<(), SuiteError>) {
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn foil_training_schedules_satisfy_the_suite() {
    pass(run_schedule_suite(
        &mut test_runner(256),
        strategies::noise_schedule(),
    ));
}

#[test]
fn foil_steps_satisfy_the_scalar_suite() {
    pass(run_schedule_suite(
        &mut test_runner(256),
        strategies::steps(),
    ));
}

#[test]
fn foil_respacing_satisfies_the_suite() {
    pass(run_respacing_suite(
        &mut test_runner(256),
        strategies::noise_schedule(),
        |s: &NoiseSchedule, keep: &[usize]| Steps::respaced(s, keep),
    ));
}

/// A CI run found it: keeping one late step of a steep schedule makes its beta `1 - abar` with
/// `abar` near 1e-8, so `1 - beta` is exact only to an ulp of 1 (1e-9 relative to abar); the
/// property allows that rounding, and still rejects a wrong beta.
#[test]
fn respacing_to_one_late_step_of_a_steep_schedule_passes() {
    let steep = NoiseSchedule::new(
        &foil_schedule::BetaSchedule::Linear {
            start: 0.01,
            end: 0.05,
        },
        1000,
    )
    .unwrap();
    for t in [700, 754, 900, 999] {
        let steps = Steps::respaced(&steep, &[t]).unwrap();
        let abar = steep.alphas_cumprod()[t];
        assert!(abar < 1e-7, "abar {abar}");
        foil_schedule::testing::invariants::respacing_reproduces_abar(&steep, &[t], &steps)
            .unwrap();
    }
    // A beta off by 1e-6 of abar is still caught.
    let t = 754;
    let steps = Steps::respaced(&steep, &[t]).unwrap();
    let abar = steep.alphas_cumprod()[t];
    let wrong = NoiseSchedule::from_betas(vec![1.0 - abar * (1.0 + 1e-6)]).unwrap();
    struct Mixed<'a>(&'a Steps, &'a NoiseSchedule);
    impl ScheduleUnderTest for Mixed<'_> {
        fn num_train_timesteps(&self) -> usize {
            ScheduleUnderTest::num_train_timesteps(self.0)
        }
        fn alphas_cumprod(&self) -> Vec<f64> {
            ScheduleUnderTest::alphas_cumprod(self.0)
        }
        fn alphas_cumprod_prev(&self) -> Vec<f64> {
            ScheduleUnderTest::alphas_cumprod_prev(self.0)
        }
        fn betas(&self) -> Vec<f64> {
            ScheduleUnderTest::betas(self.1)
        }
    }
    let err = foil_schedule::testing::invariants::respacing_reproduces_abar(
        &steep,
        &[t],
        &Mixed(&steps, &wrong),
    );
    assert!(err.is_err());
}

#[test]
fn foil_steps_satisfy_the_tensor_suite_on_ndarray() {
    pass(run_step_suite::<NdArray, _, _>(
        &mut test_runner(64),
        strategies::steps(),
        Default::default(),
    ));
}

#[test]
fn foil_steps_satisfy_the_tensor_suite_on_flex() {
    pass(run_step_suite::<Flex, _, _>(
        &mut test_runner(64),
        strategies::steps(),
        Default::default(),
    ));
}

/// The cosine schedule with the integer-division bug of two public Rust ports.
#[derive(Debug, Clone)]
struct IntegerCosine {
    steps: u64,
}

impl ScheduleUnderTest for IntegerCosine {
    fn num_train_timesteps(&self) -> usize {
        self.steps as usize
    }

    fn betas(&self) -> Vec<f64> {
        let abar = |t: f64| {
            ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let n = self.steps;
        (0..n)
            .map(|i| (1.0 - abar(((i + 1) / n) as f64) / abar((i / n) as f64)).min(0.999))
            .collect()
    }
}

#[test]
fn the_suite_rejects_the_integer_division_cosine_and_shrinks_it() {
    let err = run_schedule_suite(
        &mut deterministic(256),
        (1u64..=1000).prop_map(|steps| IntegerCosine { steps }),
    )
    .expect_err("every T >= 2 has zero betas");
    match &err {
        SuiteError::Falsified {
            failure,
            minimal_input,
        } => {
            assert_eq!(failure.property, Property::BetasInOpenUnitInterval, "{err}");
            assert_eq!(failure.values, "beta = 0", "{err}");
            // T = 1 is fine (its one beta is clipped at 0.999); T = 2 is the smallest broken one.
            assert_eq!(minimal_input, "IntegerCosine { steps: 2 }", "{err}");
        }
        other => panic!("expected a falsified property, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("betas in (0, 1)") && text.contains("steps: 2"),
        "{text}"
    );
}

/// A schedule whose `abar` is listed noisiest first, and whose timesteps run upwards.
#[derive(Debug, Clone)]
struct Reversed(NoiseSchedule);

impl ScheduleUnderTest for Reversed {
    fn num_train_timesteps(&self) -> usize {
        self.0.len()
    }
    fn betas(&self) -> Vec<f64> {
        self.0.betas().to_vec()
    }
    fn alphas_cumprod(&self) -> Vec<f64> {
        self.0.alphas_cumprod().iter().rev().copied().collect()
    }
    fn alphas_cumprod_prev(&self) -> Vec<f64> {
        vec![1.0; self.0.len()]
    }
}

#[test]
fn the_suite_rejects_increasing_abar() {
    let err = run_schedule_suite(
        &mut deterministic(64),
        strategies::noise_schedule().prop_map(Reversed),
    )
    .expect_err("abar listed backwards increases");
    assert_eq!(
        err.property(),
        Some(Property::AbarStrictlyDecreasing),
        "{err}"
    );
}

/// A respacing that keeps the original betas of the kept steps (forgetting to recompute them).
#[derive(Debug)]
struct KeptBetas {
    betas: Vec<f64>,
    keep: Vec<usize>,
    abar: Vec<f64>,
}

impl ScheduleUnderTest for KeptBetas {
    fn num_train_timesteps(&self) -> usize {
        self.abar.len()
    }
    fn betas(&self) -> Vec<f64> {
        self.keep.iter().map(|&t| self.betas[t]).collect()
    }
    fn alphas_cumprod(&self) -> Vec<f64> {
        self.keep.iter().map(|&t| self.abar[t]).collect()
    }
    fn timesteps(&self) -> Vec<usize> {
        self.keep.iter().rev().copied().collect()
    }
}

#[test]
fn the_suite_rejects_a_respacing_that_keeps_the_old_betas() {
    let err = run_respacing_suite(
        &mut deterministic(64),
        strategies::noise_schedule(),
        |s: &NoiseSchedule, keep: &[usize]| {
            Ok(KeptBetas {
                betas: s.betas().to_vec(),
                keep: keep.to_vec(),
                abar: s.alphas_cumprod().to_vec(),
            })
        },
    )
    .expect_err("old betas do not chain to the kept abar once a step is skipped");
    assert_eq!(
        err.property(),
        Some(Property::RespacingReproducesAbar),
        "{err}"
    );
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bug {
    /// Tweedie divides by `abar` instead of `sqrt(abar)`.
    TweedieWithoutSqrt,
    /// The posterior mean adds `x0` and `x_t` without weights.
    UnweightedPosteriorMean,
    /// The posterior variance is `1.5 beta`.
    InflatedPosteriorVariance,
    /// A DDIM step with `eta = 0` that adds a little fresh noise on every call.
    NoisyDdim,
    /// DDIM inversion that goes back to `abar_prev` instead of `abar`.
    InversionToWrongLevel,
    /// A DDPM step that scales its noise by `std / 2`.
    HalfNoiseDdpm,
}

/// foil's steps with one bug.
#[derive(Debug, Clone)]
struct Broken {
    steps: Steps,
    bug: Bug,
    calls: std::rc::Rc<std::cell::Cell<u64>>,
}

impl ScheduleUnderTest for Broken {
    fn num_train_timesteps(&self) -> usize {
        self.steps.num_train_timesteps()
    }
    fn betas(&self) -> Vec<f64> {
        self.steps.betas()
    }
    fn alphas_cumprod(&self) -> Vec<f64> {
        self.steps.alphas_cumprod().to_vec()
    }
    fn alphas_cumprod_prev(&self) -> Vec<f64> {
        ScheduleUnderTest::alphas_cumprod_prev(&self.steps)
    }
    fn timesteps(&self) -> Vec<usize> {
        self.steps.timesteps_desc()
    }
}

impl<B: Backend> StepUnderTest<B> for Broken {
    fn q_sample(&self, x0: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        StepUnderTest::<B>::q_sample(&self.steps, x0, k, eps)
    }
    fn predict_x0(&self, x_t: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        if self.bug == Bug::TweedieWithoutSqrt {
            let a = self.steps.abar(k);
            return Ok((x_t - eps * (1.0 - a).sqrt()) / a);
        }
        StepUnderTest::<B>::predict_x0(&self.steps, x_t, k, eps)
    }
    fn posterior_mean(
        &self,
        x0: Tensor<B, 4>,
        x_t: Tensor<B, 4>,
        k: usize,
    ) -> Result<Tensor<B, 4>> {
        if self.bug == Bug::UnweightedPosteriorMean {
            return Ok(x0 + x_t);
        }
        StepUnderTest::<B>::posterior_mean(&self.steps, x0, x_t, k)
    }
    fn posterior_variance(&self, k: usize) -> f64 {
        let v = self.steps.posterior_variance(k);
        if self.bug == Bug::InflatedPosteriorVariance {
            return self.steps.beta(k) * 1.5;
        }
        v
    }
    fn ddim_step(&self, x_t: Tensor<B, 4>, k: usize, eps: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let out = StepUnderTest::<B>::ddim_step(&self.steps, x_t, k, eps)?;
        if self.bug == Bug::NoisyDdim {
            let n = self.calls.get() + 1;
            self.calls.set(n);
            return Ok(out + n as f64 * 1e-3);
        }
        Ok(out)
    }
    fn ddim_inverse_step(
        &self,
        x_prev: Tensor<B, 4>,
        k: usize,
        eps: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        if self.bug == Bug::InversionToWrongLevel {
            let ap = self.steps.abar_prev(k);
            let x0 = (x_prev - eps.clone() * (1.0 - ap).sqrt()) / ap.sqrt();
            let a = self.steps.abar_prev(k);
            return Ok(x0 * a.sqrt() + eps * (1.0 - a).sqrt());
        }
        StepUnderTest::<B>::ddim_inverse_step(&self.steps, x_prev, k, eps)
    }
    fn ddpm_step(
        &self,
        x_t: Tensor<B, 4>,
        k: usize,
        eps: Tensor<B, 4>,
        noise: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        let mut out = StepUnderTest::<B>::ddpm_step(&self.steps, x_t, k, eps, noise.clone())?;
        if self.bug == Bug::HalfNoiseDdpm {
            out.prev_sample = out.mean.clone() + noise * out.std.clone() * 0.5;
        }
        Ok(out)
    }
}

fn rejected_as<B: Backend>(bug: Bug, property: Property) {
    let err = run_step_suite::<B, _, _>(
        &mut deterministic(64),
        strategies::steps().prop_map(move |steps| Broken {
            steps,
            bug,
            calls: Default::default(),
        }),
        Default::default(),
    )
    .expect_err("a broken step must fail");
    assert_eq!(err.property(), Some(property), "{bug:?}: {err}");
}

#[test]
fn the_suite_rejects_broken_steps_with_the_property_they_break() {
    for (bug, property) in [
        (Bug::TweedieWithoutSqrt, Property::TweedieInvertsQSample),
        (
            Bug::UnweightedPosteriorMean,
            Property::PosteriorMeanInterpolates,
        ),
        (
            Bug::InflatedPosteriorVariance,
            Property::PosteriorVarianceBounded,
        ),
        (Bug::NoisyDdim, Property::DdimDeterministic),
        (
            Bug::InversionToWrongLevel,
            Property::DdimInversionRoundTrips,
        ),
        (Bug::HalfNoiseDdpm, Property::EfDdpmReproducesTrajectory),
    ] {
        rejected_as::<NdArray>(bug, property);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    /// The invariants inside a user's own `proptest!` block: `?` turns an `InvariantFailure`
    /// into a test-case failure.
    #[test]
    fn invariants_compose_with_the_proptest_macro(steps in strategies::steps(), (x0, eps) in strategies::images_and_noise::<NdArray>(Default::default())) {
        use foil_schedule::testing::{check_schedule, tweedie_inverts_q_sample};
        check_schedule(&steps)?;
        tweedie_inverts_q_sample(&steps, steps.len() / 2, x0, eps)?;
    }
}

#[test]
fn the_suite_flags_the_identity_step_of_inference_without_alpha_to_one() {
    use foil_schedule::Spacing;
    use foil_schedule::testing::check_schedule;
    let s = NoiseSchedule::ddpm();
    // Smallest timestep 0 and abar_prev = abar_0: step 0 goes from abar_0 to abar_0 (beta 0).
    let steps = Steps::inference(&s, 10, Spacing::Leading, 0, false).unwrap();
    let failure = check_schedule(&steps).unwrap_err();
    assert_eq!(failure.property, Property::BetasInOpenUnitInterval);
    assert_eq!(failure.input, "step k = 0 of 10");
    // Kandinsky's offset of 1 (or abar_prev = 1) makes every step a real one.
    check_schedule(&Steps::inference(&s, 10, Spacing::Leading, 1, false).unwrap()).unwrap();
    check_schedule(&Steps::inference(&s, 10, Spacing::Leading, 0, true).unwrap()).unwrap();
}
