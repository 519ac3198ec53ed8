//! The details only the authors' code shows (DiME, FastDiME and MaskDiME's
//! `core/sample_utils.py` and run scripts), each checked through the public one-step function
//! on parts whose truth is known: Gaussian data and a classifier that looks at a known region.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use foil_core::tensor::to_vec_f32;
use foil_core::toy::{GaussianDenoiser, RegionClassifier};
use foil_core::{Classifier, Noise, Result};
use foil_guide::{
    Carry, ClassLoss, CleanEstimate, Dilation, Guide, GuideConfig, MaskPolicy, StepNoise,
    dual_masks, selected_count,
};
use foil_schedule::{NoiseSchedule, Steps, space_timesteps};

type A = Autodiff<NdArray>;
type I = NdArray;
const H: usize = 8;

fn steps() -> Steps {
    Steps::respaced(
        &NoiseSchedule::ddpm(),
        &space_timesteps(1000, "100").unwrap(),
    )
    .unwrap()
}

/// Fixed-small variance (`learned_variance() == false`), exact Tweedie on its Gaussian data.
fn denoiser() -> GaussianDenoiser<I> {
    GaussianDenoiser::new(
        Tensor::zeros([1, 1, H, H], &Default::default()),
        0.5,
        NoiseSchedule::ddpm().alphas_cumprod().to_vec(),
    )
}

fn region() -> RegionClassifier {
    RegionClassifier::new(H, H, 2..6, 2..6, 2.0)
}

/// A classifier whose logit does not depend on the image: zero gradient everywhere.
struct Flat;
impl<B: Backend> Classifier<B> for Flat {
    fn num_logits(&self) -> usize {
        1
    }
    fn logits(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let n = x.dims()[0];
        Ok(x.reshape([n, H * H]).sum_dim(1) * 0.0 - 1.0)
    }
}

fn inputs(n: usize, seed: u64) -> Tensor<I, 4> {
    (Noise::new(seed).normal::<I, 4>([n, 1, H, H], &Default::default()) * 0.3).clamp(-1.0, 1.0)
        - 0.2
}

fn noise(n: usize, seed: u64) -> StepNoise<I> {
    let mut g = Noise::new(seed);
    let dev = Default::default();
    StepNoise {
        sample: g.normal([n, 1, H, H], &dev),
        background: g.normal([n, 1, H, H], &dev),
    }
}

fn vec(t: &Tensor<I, 4>) -> Vec<f32> {
    to_vec_f32(t).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn config(base: GuideConfig) -> GuideConfig {
    GuideConfig {
        tau: 10,
        lambda_perc: 0.0,
        ..base
    }
}

#[test]
fn presets_are_the_published_scripts() {
    // USE_LOGITS=True in all three scripts: the class loss is -logit.
    for c in [
        GuideConfig::dime(),
        GuideConfig::fastdime(),
        GuideConfig::maskdime(),
    ] {
        assert_eq!(c.class_loss, ClassLoss::Logit);
        assert_eq!((c.tau, c.lambda_l1, c.lambda_perc), (60, 0.05, 30.0));
        assert_eq!(c.scales, vec![8.0, 10.0, 15.0]);
    }
    // FastDiME keeps scale_grads=False; DiME divides, MaskDiME's dist_cond_fn too.
    assert!(GuideConfig::dime().scale_grads);
    assert!(!GuideConfig::fastdime().scale_grads);
    assert!(GuideConfig::maskdime().scale_grads);
    assert_eq!(
        GuideConfig::fastdime().clean,
        CleanEstimate::PreviousTweedie
    );
    assert!(GuideConfig::fastdime().clean_background);
    assert!(!GuideConfig::maskdime().clean_background);
    assert!(!GuideConfig::maskdime().noise_inside_mask);
}

#[test]
fn the_l1_gradient_is_taken_at_the_noisy_sample_and_never_divided() {
    let model = denoiser();
    for base in [GuideConfig::dime(), GuideConfig::maskdime()] {
        let cfg = config(GuideConfig {
            clean: CleanEstimate::Tweedie,
            ..base
        });
        assert!(cfg.scale_grads);
        let guide = Guide::<A, _, _>::new(cfg, steps(), &model, &Flat).unwrap();
        let x = inputs(2, 1);
        let z = guide.start(x.clone(), noise(2, 2).sample).unwrap();
        let step = guide
            .step(&x, 9, &[1, 1], 8.0, Carry::start(z.clone()), noise(2, 3))
            .unwrap();
        let expected = vec(&((z - x.clone()).sign() * 0.05));
        assert_eq!(vec(&step.grad_dist), expected);
        assert!(vec(&step.grad_class).iter().all(|&g| g == 0.0));
        // Not the sign at the clean estimate.
        let at_clean = vec(&((step.x0.clone() - x).sign() * 0.05));
        assert_ne!(vec(&step.grad_dist), at_clean);
    }
}

#[test]
fn fixed_small_variance_leaves_the_last_step_unguided_and_noiseless() {
    let model = denoiser();
    let clf = region();
    let cfg = config(GuideConfig {
        clean: CleanEstimate::Tweedie,
        ..GuideConfig::dime()
    });
    let guide = Guide::<A, _, _>::new(cfg, steps(), &model, &clf).unwrap();
    let x = inputs(2, 4);
    let z = guide.start(x.clone(), noise(2, 5).sample).unwrap();
    for i in [1, 0] {
        let step = guide
            .step(&x, i, &[1, 1], 100.0, Carry::start(z.clone()), noise(2, 6))
            .unwrap();
        let mean = steps()
            .posterior_mean(step.x0.clone(), z.clone(), &[i])
            .unwrap();
        let d = max_diff(&vec(&step.next.z), &vec(&mean));
        assert!(vec(&step.grad_class).iter().any(|&g| g != 0.0));
        if i == 0 {
            assert!(d < 1e-6, "step 0 moved the mean by {d}");
        } else {
            assert!(d > 1e-3, "step 1 is guided and noised");
        }
    }
}

#[test]
fn the_noised_start_is_shared_by_every_scale() {
    let model = denoiser();
    // Never flips, so every input runs every scale; M1 covers the image and no noise is added
    // inside it, so a run is a function of its start.
    let clf = RegionClassifier::new(H, H, 2..6, 2..6, 1e6);
    let cfg = |scales: Vec<f64>| {
        config(GuideConfig {
            mask: MaskPolicy::Dual {
                k: 1.0,
                gamma: 1.0,
                dilation: Dilation::None,
            },
            scales,
            ..GuideConfig::maskdime()
        })
    };
    let once = Guide::<A, _, _>::new(cfg(vec![3.0]), steps(), &model, &clf).unwrap();
    let twice = Guide::<A, _, _>::new(cfg(vec![3.0, 3.0]), steps(), &model, &clf).unwrap();
    let x = inputs(2, 7);
    let a = once.explain(x.clone(), &[1, 1], 11).unwrap();
    let b = twice.explain(x, &[1, 1], 11).unwrap();
    assert_eq!(b.outcomes[0].cost.denoiser_calls, 20);
    assert_eq!(vec(&a.images), vec(&b.images));
}

#[test]
fn top_k_selects_exactly_floor_k_n_pixels_ties_by_index() {
    let flat: Tensor<I, 4> = Tensor::ones([1, 3, 10, 10], &Default::default());
    // 0.129 * 100 = 12.9: the references take int() = 12 (rounding would give 13).
    let m = dual_masks(flat, 0.129, 0.5, Dilation::None).unwrap();
    let (m1, m2) = (vec(&m.outer_raw), vec(&m.inner_raw));
    assert_eq!(selected_count(0.129, 100), 12);
    let on = |v: &[f32]| {
        v.iter()
            .enumerate()
            .filter(|(_, x)| **x == 1.0)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        on(&m1),
        (0..12).collect::<Vec<_>>(),
        "all tied: the first 12"
    );
    assert_eq!(on(&m2), (0..6).collect::<Vec<_>>());
}

#[test]
fn maskdime_keeps_the_input_noised_to_the_current_step_outside_m1() {
    let model = denoiser();
    let clf = region();
    let cfg = config(GuideConfig {
        mask: MaskPolicy::Dual {
            k: 0.1,
            gamma: 0.5,
            dilation: Dilation::Square { kernel: 3 },
        },
        ..GuideConfig::maskdime()
    });
    let guide = Guide::<A, _, _>::new(cfg, steps(), &model, &clf).unwrap();
    let x = inputs(2, 8);
    let mut carry = Carry::start(guide.start(x.clone(), noise(2, 9).sample).unwrap());
    for i in [9, 8, 0] {
        let n = noise(2, 20 + i as u64);
        let background = steps()
            .q_sample(x.clone(), &[i], n.background.clone())
            .unwrap();
        let step = guide.step(&x, i, &[1, 1], 8.0, carry, n).unwrap();
        if i == 9 {
            assert_eq!(vec(&step.guided_at), vec(&x), "first gradient at the input");
        }
        let m1 = vec(step.next.outer.as_ref().unwrap());
        let (z, bg) = (vec(&step.next.z), vec(&background));
        for p in 0..z.len() {
            if m1[p] == 0.0 {
                assert!((z[p] - bg[p]).abs() < 1e-6, "step {i} pixel {p}");
            }
        }
        carry = step.next;
    }
}

#[test]
fn maskdime_takes_the_gradient_at_this_steps_estimate_inside_the_previous_m2() {
    let model = denoiser();
    let clf = region();
    let cfg = config(GuideConfig {
        mask: MaskPolicy::Dual {
            k: 0.2,
            gamma: 0.5,
            dilation: Dilation::Square { kernel: 3 },
        },
        ..GuideConfig::maskdime()
    });
    let guide = Guide::<A, _, _>::new(cfg, steps(), &model, &clf).unwrap();
    let x = inputs(2, 12);
    let first = guide
        .step(
            &x,
            9,
            &[1, 1],
            8.0,
            Carry::start(guide.start(x.clone(), noise(2, 13).sample).unwrap()),
            noise(2, 14),
        )
        .unwrap();
    let m2 = first.next.inner.clone().unwrap();
    let second = guide
        .step(&x, 8, &[1, 1], 8.0, first.next, noise(2, 15))
        .unwrap();
    let expected = second.x0.clone() * m2.clone() + x * (m2.neg() + 1.0);
    assert!(max_diff(&vec(&second.guided_at), &vec(&expected)) < 1e-6);
}

#[test]
fn every_preset_takes_its_first_gradient_at_the_input() {
    let model = denoiser();
    let clf = region();
    for base in [
        GuideConfig::dime(),
        GuideConfig::fastdime(),
        GuideConfig::maskdime(),
    ] {
        let guide = Guide::<A, _, _>::new(config(base), steps(), &model, &clf).unwrap();
        let x = inputs(2, 16);
        let z = guide.start(x.clone(), noise(2, 17).sample).unwrap();
        let step = guide
            .step(&x, 9, &[1, 1], 8.0, Carry::start(z), noise(2, 18))
            .unwrap();
        assert_eq!(vec(&step.guided_at), vec(&x));
    }
}

#[test]
fn fastdime_reuses_the_previous_estimate_and_restores_the_input_outside_its_mask() {
    let model = denoiser();
    let clf = region();
    let cfg = config(GuideConfig {
        mask: MaskPolicy::Difference {
            warmup: 0,
            pool: 1,
            threshold: 0.3,
        },
        ..GuideConfig::fastdime()
    });
    let guide = Guide::<A, _, _>::new(cfg.clone(), steps(), &model, &clf).unwrap();
    let x = inputs(2, 19);
    let first = guide
        .step(
            &x,
            9,
            &[1, 1],
            8.0,
            Carry::start(guide.start(x.clone(), noise(2, 20).sample).unwrap()),
            noise(2, 21),
        )
        .unwrap();
    let m = first.next.outer.clone().expect("mask on from step 0");
    let masked = first.x0.clone() * m.clone() + x.clone() * (m.neg() + 1.0);
    let carried = first.next.guide_at.clone().unwrap();
    assert!(max_diff(&vec(&carried), &vec(&masked)) < 1e-6);
    let second = guide
        .step(&x, 8, &[1, 1], 8.0, first.next, noise(2, 22))
        .unwrap();
    assert_eq!(vec(&second.guided_at), vec(&carried));
    // No division by sqrt(abar): the gradient is the plain classifier gradient times the scale.
    let whole = guide.explain(x.clone(), &[1, 1], 3).unwrap();
    let (cf, xs) = (vec(&whole.images), vec(&x));
    let m = vec(whole.outer_masks.as_ref().unwrap());
    assert!(m.contains(&0.0), "the mask leaves some pixels out");
    for p in 0..cf.len() {
        if m[p] == 0.0 {
            assert_eq!(cf[p], xs[p], "pixel {p} outside the mask is the input");
        }
    }
}

#[test]
fn fastdime_does_not_divide_its_gradients() {
    let model = denoiser();
    let clf = region();
    let x = inputs(2, 23);
    let grad = |scale_grads: bool| {
        let cfg = config(GuideConfig {
            scale_grads,
            ..GuideConfig::fastdime()
        });
        let guide = Guide::<A, _, _>::new(cfg, steps(), &model, &clf).unwrap();
        let z = guide.start(x.clone(), noise(2, 24).sample).unwrap();
        let step = guide
            .step(&x, 9, &[1, 1], 8.0, Carry::start(z), noise(2, 25))
            .unwrap();
        vec(&step.grad_class)
    };
    let (plain, divided) = (grad(false), grad(true));
    let ratio = 1.0 / steps().abar(9).sqrt() as f32;
    for (p, d) in plain.iter().zip(&divided) {
        assert!((p * ratio - d).abs() <= 1e-5 * d.abs().max(1.0));
    }
    assert!(plain.iter().any(|&g| g != 0.0));
}

#[test]
fn a_step_checks_its_inputs() {
    let model = denoiser();
    let clf = region();
    let guide =
        Guide::<A, _, _>::new(config(GuideConfig::maskdime()), steps(), &model, &clf).unwrap();
    let x = inputs(2, 26);
    let z = guide.start(x.clone(), noise(2, 27).sample).unwrap();
    let err = guide
        .step(&x, 10, &[1, 1], 8.0, Carry::start(z.clone()), noise(2, 28))
        .unwrap_err()
        .to_string();
    assert!(err.contains("step index"), "{err}");
    let err = guide
        .step(&x, 9, &[1, 1], 8.0, Carry::start(z), noise(3, 28))
        .unwrap_err()
        .to_string();
    assert!(err.contains("noise"), "{err}");
}

#[test]
fn the_mask_share_is_maskdimes_alone() {
    let config = foil_guide::GuideConfig::maskdime()
        .with_mask_share(0.2)
        .unwrap();
    assert!(matches!(config.mask, foil_guide::MaskPolicy::Dual { k, .. } if k == 0.2));
    for other in [
        foil_guide::GuideConfig::fastdime(),
        foil_guide::GuideConfig::dime(),
    ] {
        let err = other.with_mask_share(0.2).unwrap_err();
        assert_eq!(err.subject(), Some("mask share"), "{err}");
    }
}
