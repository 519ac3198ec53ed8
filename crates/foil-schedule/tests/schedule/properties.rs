//! Property tests of the schedule math, each case run on two CPU backends (ndarray and flex).

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Noise, tensor::to_vec_f32};
use foil_schedule::{BetaSchedule, NoiseSchedule, Spacing, Steps, VarianceType, space_timesteps};
use proptest::prelude::*;

// The schedule strategies are the public ones of `foil_schedule::testing::strategies` (the
// same ranges these tests had privately, plus `Custom` betas, the cosine clip and T = 1).
use foil_schedule::testing::strategies::{beta_schedule, noise_schedule as schedule};

/// A random subset of `0..n` (at least one step), ascending.
fn subset(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::btree_set(0..n, 1..=n.min(64)).prop_map(|s| s.into_iter().collect())
}

fn max_abs_diff<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    let d = to_vec_f32(&(a - b).abs()).unwrap();
    d.into_iter().fold(0.0, f32::max)
}

fn q_then_tweedie<B: Backend>(steps: &Steps, ks: &[usize], seed: u64) -> f32 {
    let dev = Default::default();
    let mut noise = Noise::new(seed);
    let x0: Tensor<B, 4> = noise.normal([ks.len(), 2, 4, 3], &dev).tanh();
    let eps: Tensor<B, 4> = noise.normal([ks.len(), 2, 4, 3], &dev);
    let xt = steps.q_sample(x0.clone(), ks, eps.clone()).unwrap();
    let back = steps.predict_x0(xt, ks, eps).unwrap();
    max_abs_diff(back, x0)
}

fn ddim_lands_on_q_sample<B: Backend>(steps: &Steps, k: usize, seed: u64) -> f32 {
    let dev = Default::default();
    let mut noise = Noise::new(seed);
    let x0: Tensor<B, 4> = noise.normal([3, 1, 5, 5], &dev).tanh();
    let eps: Tensor<B, 4> = noise.normal([3, 1, 5, 5], &dev);
    let xt = steps.q_sample(x0.clone(), &[k], eps.clone()).unwrap();
    let stepped = steps.ddim_step(xt, &[k], eps.clone(), 0.0, None).unwrap();
    // The exact q_sample of the same x0 and noise at abar_prev.
    let a = steps.abar_prev(k);
    let expected = x0 * a.sqrt() + eps * (1.0 - a).sqrt();
    max_abs_diff(stepped.prev_sample, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn betas_lie_in_open_unit_interval(kind in beta_schedule(), n in 1usize..2000) {
        for b in kind.betas(n).unwrap() {
            prop_assert!(b > 0.0 && b < 1.0, "beta {b}");
        }
    }

    #[test]
    fn abar_strictly_decreases_inside_unit_interval(s in schedule()) {
        let abar = s.alphas_cumprod();
        prop_assert!(abar[0] < 1.0 && abar[0] > 0.0);
        for w in abar.windows(2) {
            prop_assert!(w[1] < w[0] && w[1] > 0.0, "{} then {}", w[0], w[1]);
        }
    }

    // From 16 steps: below, the middle step is far from T/2 (or, at 2, the last one).
    #[test]
    fn cosine_betas_are_not_degenerate(n in 16usize..4000) {
        let betas = BetaSchedule::cosine().betas(n).unwrap();
        // Integer `i / n` would make all but the last beta zero; real ones grow smoothly.
        let positive = betas.iter().filter(|&&b| b > 1e-9).count();
        prop_assert_eq!(positive, n);
        prop_assert!(betas[0] < betas[n / 2] && betas[n / 2] < betas[n - 1]);
        let abar = NoiseSchedule::from_betas(betas).unwrap();
        // Halfway through, the cosine schedule keeps about half the signal variance.
        let mid = abar.alphas_cumprod()[n / 2 - 1];
        prop_assert!((0.3..0.7).contains(&mid), "abar at T/2 = {mid}");
    }

    #[test]
    fn respacing_reproduces_kept_abar((s, keep) in schedule().prop_flat_map(|s| { let n = s.len(); (Just(s), subset(n)) })) {
        let steps = Steps::respaced(&s, &keep).unwrap();
        // The recomputed betas chain back to exactly the kept abar values.
        let mut acc = 1.0f64;
        for (k, &t) in keep.iter().enumerate() {
            prop_assert_eq!(steps.abar(k), s.alphas_cumprod()[t]);
            acc *= 1.0 - steps.beta(k);
            approx::assert_relative_eq!(acc, s.alphas_cumprod()[t], max_relative = 1e-12);
        }
        prop_assert_eq!(steps.timesteps(), &keep[..]);
    }

    #[test]
    fn posterior_variance_lies_between_zero_and_beta(s in schedule(), n in 1usize..200) {
        let n = n.min(s.len());
        for steps in [Steps::full(&s), Steps::inference(&s, n, Spacing::Leading, 0, false).unwrap()] {
            for k in 0..steps.len() {
                let v = steps.posterior_variance(k);
                prop_assert!(v >= 0.0 && v <= steps.beta(k) * (1.0 + 1e-12), "k {k}: {v} vs beta {}", steps.beta(k));
            }
        }
    }

    #[test]
    fn guidance_variance_is_zero_only_at_the_last_fixed_small_step(s in schedule(), n in 2usize..200) {
        // guided-diffusion's p_mean_variance: fixed-small returns the unclipped posterior
        // variance (0 at step 0 when abar_prev = 1) beside the clipped log-variance.
        type B = NdArray;
        let steps = Steps::respaced(&s, &space_timesteps(s.len(), &n.min(s.len()).to_string()).unwrap()).unwrap();
        let dev = Default::default();
        for k in 0..steps.len() {
            for kind in [VarianceType::FixedSmall, VarianceType::FixedLarge] {
                let log_var = steps.log_variance::<B>(&[k], 1, kind, None, &dev).unwrap();
                let v = to_vec_f32(&steps.model_variance::<B>(&[k], 1, kind, log_var.clone(), &dev).unwrap()).unwrap()[0] as f64;
                let from_log = to_vec_f32(&log_var.exp()).unwrap()[0] as f64;
                match (kind, k) {
                    (VarianceType::FixedSmall, 0) => prop_assert_eq!(v, 0.0),
                    _ => prop_assert!((v - from_log).abs() <= 1e-6 * from_log.max(1e-12) + 1e-30, "{kind:?} k {k}: {v} vs {from_log}"),
                }
            }
        }
    }

    #[test]
    fn q_sample_then_tweedie_with_true_noise_returns_x0(s in schedule(), seed in any::<u64>(), picks in proptest::collection::vec(0.0f64..1.0, 1..4)) {
        let steps = Steps::full(&s);
        // Avoid the last steps of schedules whose abar underflows to ~0 (x0 is then unrecoverable in f32).
        let usable = (0..steps.len()).filter(|&k| steps.abar(k) > 1e-3).count().max(1);
        let ks: Vec<usize> = picks.iter().map(|p| ((p * usable as f64) as usize).min(usable - 1)).collect();
        let tol = 1e-5 / steps.abar(*ks.iter().max().unwrap()).sqrt() as f32 * 4.0;
        prop_assert!(q_then_tweedie::<NdArray>(&steps, &ks, seed) <= tol);
        prop_assert!(q_then_tweedie::<Flex>(&steps, &ks, seed) <= tol);
    }

    #[test]
    fn ddim_eta0_with_true_eps_lands_on_q_sample(s in schedule(), n in 1usize..100, pick in 0.0f64..1.0, seed in any::<u64>()) {
        let n = n.min(s.len());
        let steps = Steps::inference(&s, n, Spacing::Leading, 0, pick < 0.5).unwrap();
        let k = ((pick * n as f64) as usize).min(n - 1);
        prop_assume!(steps.abar(k) > 1e-3);
        let tol = 2e-5 / steps.abar(k).sqrt() as f32;
        prop_assert!(ddim_lands_on_q_sample::<NdArray>(&steps, k, seed) <= tol);
        prop_assert!(ddim_lands_on_q_sample::<Flex>(&steps, k, seed) <= tol);
    }

    #[test]
    fn space_timesteps_keeps_the_requested_count(n in 1usize..2000, frac in 0.0f64..1.0) {
        let want = ((n as f64 * frac) as usize).max(1);
        let kept = space_timesteps(n, &want.to_string()).unwrap();
        prop_assert_eq!(kept.len(), want);
        prop_assert_eq!(kept[0], 0);
        prop_assert!(kept.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(*kept.last().unwrap() < n);
    }

    #[test]
    fn inference_steps_are_ascending_and_in_range(s in schedule(), n in 1usize..400, spacing in prop_oneof![Just(Spacing::Leading), Just(Spacing::Trailing), Just(Spacing::Linspace)]) {
        let n = n.min(s.len());
        let steps = Steps::inference(&s, n, spacing, 0, true).unwrap();
        prop_assert_eq!(steps.len(), n);
        prop_assert!(steps.timesteps().windows(2).all(|w| w[0] < w[1]));
        prop_assert!(*steps.timesteps().last().unwrap() < s.len());
        for k in 0..n {
            prop_assert!(steps.abar_prev(k) > steps.abar(k));
        }
    }
}

fn ddpm_learned_range_interpolates<B: Backend>() {
    let dev = Default::default();
    let s = NoiseSchedule::ddpm();
    let steps = Steps::respaced(&s, &space_timesteps(1000, "50").unwrap()).unwrap();
    let k = 30;
    let ones = Tensor::<B, 4>::ones([1, 1, 2, 2], &dev);
    let lo = steps
        .log_variance(
            &[k],
            1,
            VarianceType::LearnedRange,
            Some(ones.clone().neg()),
            &dev,
        )
        .unwrap();
    let hi = steps
        .log_variance(&[k], 1, VarianceType::LearnedRange, Some(ones), &dev)
        .unwrap();
    let small = steps
        .log_variance::<B>(&[k], 1, VarianceType::FixedSmall, None, &dev)
        .unwrap();
    let large = steps
        .log_variance::<B>(&[k], 1, VarianceType::FixedLarge, None, &dev)
        .unwrap();
    let v = |t: Tensor<B, 4>| to_vec_f32(&t).unwrap()[0];
    approx::assert_relative_eq!(v(lo), v(small), max_relative = 1e-6);
    approx::assert_relative_eq!(v(hi), v(large.clone()), max_relative = 1e-6);
    approx::assert_relative_eq!(v(large), steps.beta(k).ln() as f32, max_relative = 1e-6);
}

#[test]
fn learned_range_spans_fixed_small_to_fixed_large() {
    ddpm_learned_range_interpolates::<NdArray>();
    ddpm_learned_range_interpolates::<Flex>();
}

fn bad_inputs_are_typed_errors<B: Backend>() {
    let dev = Default::default();
    let s = NoiseSchedule::ddpm();
    let steps = Steps::inference(&s, 10, Spacing::Leading, 1, false).unwrap();
    let x = Tensor::<B, 4>::zeros([2, 1, 2, 2], &dev);
    let wrong = Tensor::<B, 4>::zeros([2, 1, 3, 2], &dev);
    assert!(steps.q_sample(x.clone(), &[0], wrong).is_err());
    assert!(
        steps.q_sample(x.clone(), &[0, 1, 2], x.clone()).is_err(),
        "3 indices for a batch of 2"
    );
    assert!(
        steps.q_sample(x.clone(), &[10], x.clone()).is_err(),
        "index past the last step"
    );
    assert!(
        steps
            .ddim_step(x.clone(), &[3], x.clone(), 1.0, None)
            .is_err(),
        "eta > 0 without noise"
    );
    assert!(
        steps
            .ddim_step(x.clone(), &[3], x.clone(), f64::NAN, None)
            .is_err()
    );
    let out = foil_core::DenoiserOutput::eps(x.clone());
    assert!(
        steps
            .ddpm_step(x.clone(), &[3], out, VarianceType::LearnedRange, false, x)
            .is_err(),
        "learned variance without v"
    );
    assert!(Steps::inference(&s, 1001, Spacing::Leading, 0, false).is_err());
    assert!(
        Steps::inference(&s, 1000, Spacing::Leading, 1, false).is_err(),
        "offset pushes t to 1000"
    );
    assert!(Steps::respaced(&s, &[3, 3]).is_err());
    assert!(Steps::respaced(&s, &[1000]).is_err());
}

#[test]
fn bad_inputs_give_errors_not_panics() {
    bad_inputs_are_typed_errors::<NdArray>();
    bad_inputs_are_typed_errors::<Flex>();
}

fn per_sample_steps_match_single_steps<B: Backend>() {
    let dev = Default::default();
    let steps = Steps::full(&NoiseSchedule::ddpm());
    let mut noise = Noise::new(3);
    let x0: Tensor<B, 4> = noise.normal([3, 1, 2, 2], &dev);
    let eps: Tensor<B, 4> = noise.normal([3, 1, 2, 2], &dev);
    let ks = [5, 500, 999];
    let batched = steps.q_sample(x0.clone(), &ks, eps.clone()).unwrap();
    for (i, &k) in ks.iter().enumerate() {
        let one = steps
            .q_sample(
                x0.clone().narrow(0, i, 1),
                &[k],
                eps.clone().narrow(0, i, 1),
            )
            .unwrap();
        assert!(max_abs_diff(one, batched.clone().narrow(0, i, 1)) < 1e-7);
    }
}

#[test]
fn per_sample_timesteps_apply_per_sample() {
    per_sample_steps_match_single_steps::<NdArray>();
    per_sample_steps_match_single_steps::<Flex>();
}
