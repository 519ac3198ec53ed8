//! The guided sampler on parts whose truth is known: Gaussian data (so Tweedie is exact) and a
//! classifier that looks only at a known region with distinct positive weights.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::toy::{GaussianDenoiser, RegionClassifier};
use foil_core::{Classifier, Noise, Result};
use foil_guide::{
    CleanEstimate, Dilation, Guide, GuideConfig, MaskPolicy, dual_masks, selected_count,
};
use foil_schedule::{NoiseSchedule, Steps, space_timesteps};
use proptest::prelude::*;

const H: usize = 8;

/// `logit = sum_R w x - bias` over rows and columns 2..6 of 8 x 8 images.
fn region(bias: f32) -> RegionClassifier {
    RegionClassifier::new(H, H, 2..6, 2..6, bias)
}

fn steps() -> Steps {
    Steps::respaced(
        &NoiseSchedule::ddpm(),
        &space_timesteps(1000, "100").unwrap(),
    )
    .unwrap()
}

fn denoiser<B: Backend>() -> GaussianDenoiser<B> {
    let dev = Default::default();
    GaussianDenoiser::new(
        Tensor::zeros([1, 1, H, H], &dev),
        0.5,
        NoiseSchedule::ddpm().alphas_cumprod().to_vec(),
    )
}

/// Inputs drawn from the data distribution, all of class 0 for `region(2.0)`.
fn inputs<B: Backend>(n: usize) -> Tensor<B, 4> {
    (Noise::new(42).normal::<B, 4>([n, 1, H, H], &Default::default()) * 0.3).clamp(-1.0, 1.0) - 0.2
}

fn maskdime(tau: usize) -> GuideConfig {
    GuideConfig {
        tau,
        mask: MaskPolicy::Dual {
            k: 0.1,
            gamma: 0.5,
            dilation: Dilation::Square { kernel: 3 },
        },
        lambda_perc: 0.0,
        ..GuideConfig::maskdime()
    }
}

fn maskdime_flips_inside_its_mask<B: AutodiffBackend>() {
    let model = denoiser::<B::InnerBackend>();
    let clf = region(2.0);
    let x = inputs::<B::InnerBackend>(3);
    let before = foil_guide::predicted_labels::<B::InnerBackend, _>(&clf, x.clone()).unwrap();
    assert_eq!(before, vec![0, 0, 0], "inputs start in class 0");
    let guide = Guide::<B, _, _>::new(maskdime(30), steps(), &model, &clf).unwrap();
    let out = guide.explain(x.clone(), &[1, 1, 1], 0).unwrap();
    assert_eq!(out.flip_rate(), 1.0, "{:?}", out.outcomes);
    let m1 = to_vec_f32(&out.outer_masks.clone().unwrap()).unwrap();
    let m2 = to_vec_f32(&out.inner_masks.clone().unwrap()).unwrap();
    let cf = to_vec_f32(&out.images).unwrap();
    let x = to_vec_f32(&x).unwrap();
    let mut changed = 0;
    for i in 0..cf.len() {
        if m1[i] == 0.0 {
            // Outside M1 the result is `q_sample(x, 0)`, the input at the first step's noise
            // level (std sqrt(1 - abar_0) = 0.01), as MaskDiME's code leaves it.
            assert!((cf[i] - x[i]).abs() < 0.06, "pixel {i} outside M1 moved");
        } else if (cf[i] - x[i]).abs() > 0.06 {
            changed += 1;
        }
        assert!(m2[i] <= m1[i], "M2 is inside M1");
    }
    assert!(changed > 0);
    // The masks sit on the classifier's region: every raw top-k pixel has a non-zero weight,
    // so the dilated M1 (3x3) stays within one pixel of the region.
    for (i, &m) in m1.iter().enumerate() {
        if m > 0.0 {
            let (r, c) = ((i % (H * H)) / H, i % H);
            assert!(
                (1..7).contains(&r) && (1..7).contains(&c),
                "mask pixel ({r}, {c}) far from the region"
            );
        }
    }
}

#[test]
fn maskdime_flips_and_changes_only_inside_m1() {
    maskdime_flips_inside_its_mask::<Autodiff<NdArray>>();
    maskdime_flips_inside_its_mask::<Autodiff<Flex>>();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn dual_masks_hold_the_top_k_and_nest(seed in any::<u64>(), k in 0.01f64..=1.0, gamma in 0.01f64..=1.0, h in 3usize..12) {
        type B = NdArray;
        let g: Tensor<B, 4> = Noise::new(seed).normal([2, 3, h, h], &Default::default());
        let masks = dual_masks(g.clone(), k, gamma, Dilation::Square { kernel: 3 }).unwrap();
        let mag = to_vec_f32(&g.abs().mean_dim(1)).unwrap();
        let m1 = to_vec_f32(&masks.outer_raw).unwrap();
        let m2 = to_vec_f32(&masks.inner_raw).unwrap();
        let d1 = to_vec_f32(&masks.outer).unwrap();
        let d2 = to_vec_f32(&masks.inner).unwrap();
        let n1 = selected_count(k, h * h);
        let n2 = selected_count(gamma, n1);
        for img in 0..2 {
            let r = img * h * h..(img + 1) * h * h;
            prop_assert_eq!(m1[r.clone()].iter().filter(|&&v| v == 1.0).count(), n1, "M1 holds the k share");
            prop_assert_eq!(m2[r.clone()].iter().filter(|&&v| v == 1.0).count(), n2, "M2 holds the gamma share of M1");
            let lowest_in = r.clone().filter(|&i| m1[i] == 1.0).map(|i| mag[i]).fold(f32::INFINITY, f32::min);
            let highest_out = r.clone().filter(|&i| m1[i] == 0.0).map(|i| mag[i]).fold(f32::NEG_INFINITY, f32::max);
            prop_assert!(lowest_in >= highest_out, "M1 is the top of the gradient magnitude");
            for i in r {
                prop_assert!(m2[i] <= m1[i] && m1[i] <= d1[i] && m2[i] <= d2[i] && d2[i] <= d1[i]);
            }
        }
    }
}

fn calls(config: GuideConfig) -> (usize, usize) {
    type B = Autodiff<NdArray>;
    let model = denoiser::<NdArray>();
    // A bias no image reaches: every input goes through every scale.
    let clf = region(1e6);
    let guide = Guide::<B, _, _>::new(
        GuideConfig {
            scales: vec![1.0],
            lambda_perc: 0.0,
            ..config
        },
        steps(),
        &model,
        &clf,
    )
    .unwrap();
    let out = guide.explain(inputs(2), &[1, 1], 1).unwrap();
    (
        out.outcomes[0].cost.denoiser_calls,
        out.outcomes[0].cost.classifier_calls,
    )
}

#[test]
fn dime_calls_grow_quadratically_and_maskdime_linearly() {
    for tau in [5, 10, 20] {
        let dime = calls(GuideConfig {
            tau,
            ..GuideConfig::dime()
        });
        let mask = calls(GuideConfig {
            tau,
            ..GuideConfig::maskdime()
        });
        let fast = calls(GuideConfig {
            tau,
            ..GuideConfig::fastdime()
        });
        // DiME: one guided call per step, and after step i > 0 a chain of i calls (the first
        // gradient is taken at the input itself).
        assert_eq!(dime.0, tau + tau * (tau - 1) / 2, "tau {tau}");
        assert_eq!(mask.0, tau, "tau {tau}");
        assert_eq!(fast.0, tau, "tau {tau}");
        // One classifier backward per step, plus the flip check.
        assert_eq!(mask.1, tau + 1);
        assert_eq!(dime.1, tau + 1);
    }
}

#[test]
fn the_same_seed_gives_the_same_output() {
    type B = Autodiff<Flex>;
    let model = denoiser::<Flex>();
    let clf = region(2.0);
    let config = GuideConfig {
        tau: 8,
        lambda_perc: 0.0,
        ..GuideConfig::dime()
    };
    let guide = Guide::<B, _, _>::new(config, steps(), &model, &clf).unwrap();
    let a = to_vec_f32(&guide.explain(inputs(2), &[1, 1], 5).unwrap().images).unwrap();
    let b = to_vec_f32(&guide.explain(inputs(2), &[1, 1], 5).unwrap().images).unwrap();
    let c = to_vec_f32(&guide.explain(inputs(2), &[1, 1], 6).unwrap().images).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn the_ladder_retries_only_unflipped_inputs() {
    type B = Autodiff<NdArray>;
    let model = denoiser::<NdArray>();
    let clf = region(2.0);
    let dev = Default::default();
    // Input 0 is already far into class 1 and stays there without guidance; input 1 needs it.
    let x: Tensor<NdArray, 4> =
        Tensor::cat(vec![Tensor::ones([1, 1, H, H], &dev) * 0.9, inputs(1)], 0);
    let config = GuideConfig {
        tau: 10,
        scales: vec![0.0, 20.0],
        ..maskdime(10)
    };
    let guide = Guide::<B, _, _>::new(config, steps(), &model, &clf).unwrap();
    let out = guide.explain(x, &[1, 1], 3).unwrap();
    assert_eq!(out.outcomes[0].setting.and_then(|s| s.scale()), Some(0.0));
    assert_eq!(
        out.outcomes[1].setting.and_then(|s| s.scale()),
        Some(20.0),
        "{:?}",
        out.outcomes
    );
    assert_eq!(out.outcomes[0].cost.denoiser_calls, 10);
    assert_eq!(out.outcomes[1].cost.denoiser_calls, 20);
}

#[test]
fn fastdime_flips_and_masks_only_after_warmup() {
    type B = Autodiff<NdArray>;
    let model = denoiser::<NdArray>();
    let clf = region(2.0);
    let fast = |warmup| GuideConfig {
        tau: 20,
        mask: MaskPolicy::Difference {
            warmup,
            pool: 3,
            threshold: 0.15,
        },
        lambda_perc: 0.0,
        ..GuideConfig::fastdime()
    };
    let guide = Guide::<B, _, _>::new(fast(5), steps(), &model, &clf).unwrap();
    let out = guide.explain(inputs(2), &[1, 1], 0).unwrap();
    assert_eq!(out.flip_rate(), 1.0, "{:?}", out.outcomes);
    assert!(out.outer_masks.is_some());
    // A warm-up longer than the run never masks.
    let guide = Guide::<B, _, _>::new(fast(50), steps(), &model, &clf).unwrap();
    assert!(
        guide
            .explain(inputs(2), &[1, 1], 0)
            .unwrap()
            .outer_masks
            .is_none()
    );
    assert_eq!(
        GuideConfig::fastdime().clean,
        CleanEstimate::PreviousTweedie
    );
}

/// `logit = sum sqrt(x - 10)`: NaN everywhere, and so is its gradient.
struct Broken;
impl<B: Backend> Classifier<B> for Broken {
    fn num_logits(&self) -> usize {
        1
    }
    fn logits(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let n = x.dims()[0];
        Ok((x - 10.0).sqrt().reshape([n, H * H]).sum_dim(1))
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    type B = Autodiff<NdArray>;
    let model = denoiser::<NdArray>();
    let clf = region(2.0);
    let new = |c: GuideConfig| Guide::<B, _, _>::new(c, steps(), &model, &clf).map(|_| ());
    assert!(
        new(GuideConfig {
            tau: 100,
            ..GuideConfig::maskdime()
        })
        .is_err(),
        "tau beyond the schedule"
    );
    assert!(
        new(GuideConfig {
            tau: 0,
            ..GuideConfig::maskdime()
        })
        .is_err()
    );
    for (k, gamma) in [
        (0.0, 0.5),
        (1.5, 0.5),
        (0.1, 0.0),
        (0.1, 1.1),
        (f64::NAN, 0.5),
    ] {
        let c = GuideConfig {
            mask: MaskPolicy::Dual {
                k,
                gamma,
                dilation: Dilation::Square { kernel: 5 },
            },
            ..GuideConfig::maskdime()
        };
        assert!(new(c).is_err(), "k {k} gamma {gamma}");
    }
    assert!(
        new(GuideConfig {
            scales: vec![],
            ..GuideConfig::maskdime()
        })
        .is_err()
    );
    let guide = Guide::<B, _, _>::new(maskdime(5), steps(), &model, &clf).unwrap();
    assert!(
        guide.explain(inputs(2), &[1, 2], 0).is_err(),
        "target 2 of a binary classifier"
    );
    assert!(
        guide.explain(inputs(2), &[1], 0).is_err(),
        "one target for two inputs"
    );
    let broken = Guide::<B, _, _>::new(maskdime(5), steps(), &model, &Broken).unwrap();
    let x = inputs::<NdArray>(2);
    let err = broken
        .explain(x.clone(), &[1, 1], 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gradient") && err.contains("step 4"), "{err}");
    // The inputs are untouched and still usable.
    assert_eq!(
        to_vec_f32(&x).unwrap(),
        to_vec_f32(&inputs::<NdArray>(2)).unwrap()
    );
}

/// Features `[x, x^2]` of the images, counting its calls.
struct CountingFeatures(std::sync::atomic::AtomicUsize);

impl<B: Backend> foil_core::FeatureExtractor<B> for CountingFeatures {
    fn features(&self, images: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(vec![images.clone(), images.powi_scalar(2)])
    }
}

#[test]
fn the_originals_perceptual_features_are_computed_once_per_explanation() {
    type B = Autodiff<Flex>;
    type I = Flex;
    let model = denoiser::<I>();
    let clf = region(2.0);
    let config = GuideConfig {
        lambda_perc: 3.0,
        ..maskdime(12)
    };
    let counter = CountingFeatures(Default::default());
    let calls = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
    let guide = Guide::<B, _, _>::new(config.clone(), steps(), &model, &clf)
        .unwrap()
        .with_perceptual(&counter);
    let (x1, x2) = (inputs::<I>(2), inputs::<I>(2) * 0.5 + 0.1);
    // The sampler opens one perceptual span per step with a perceptual gradient.
    let perceptual_steps = || {
        foil_core::profile::take()
            .iter()
            .find(|t| t.name == foil_core::profile::PERCEPTUAL_GRADIENT)
            .map_or(0, |t| t.calls as usize)
    };
    foil_core::profile::reset();
    guide.explain(x1.clone(), &[1, 1], 0).unwrap();
    let steps_taken = perceptual_steps();
    assert!(steps_taken >= 10, "{steps_taken}");
    assert_eq!(
        calls(),
        steps_taken + 1,
        "the originals' features once, then one per step"
    );
    guide.explain(x1, &[1, 1], 0).unwrap();
    assert_eq!(
        calls(),
        2 * steps_taken + 1,
        "the same originals again: kept"
    );
    let with_cache = guide.explain(x2.clone(), &[1, 1], 0).unwrap();
    let third = perceptual_steps() - steps_taken;
    assert_eq!(
        calls(),
        2 * steps_taken + third + 2,
        "new originals: computed once more"
    );

    // Features kept from the first originals must not leak into the second explanation.
    let fresh_counter = CountingFeatures(Default::default());
    let fresh = Guide::<B, _, _>::new(config, steps(), &model, &clf)
        .unwrap()
        .with_perceptual(&fresh_counter);
    let expected = fresh.explain(x2, &[1, 1], 0).unwrap();
    assert_eq!(
        to_vec_f32(&with_cache.images).unwrap(),
        to_vec_f32(&expected.images).unwrap()
    );
}

/// The guided sampler end to end (gradients through `Autodiff`) on a GPU backend (`--features
/// test-wgpu` for `scripts/wgpu-check.sh`, `test-cuda` for `scripts/gpu-check.sh`; CI builds
/// neither).
#[cfg(feature = "test-wgpu")]
#[test]
fn maskdime_flips_and_changes_only_inside_m1_on_wgpu() {
    maskdime_flips_inside_its_mask::<Autodiff<burn::backend::Wgpu>>();
}

/// As above, on CUDA.
#[cfg(feature = "test-cuda")]
#[test]
fn maskdime_flips_and_changes_only_inside_m1_on_cuda() {
    maskdime_flips_inside_its_mask::<Autodiff<burn::backend::Cuda>>();
}
