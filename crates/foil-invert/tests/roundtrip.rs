//! Inversion round trips with analytic denoisers, on two backends (ndarray and flex).

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::toy::{LinearDenoiser, TanhDenoiser};
use foil_core::{Denoiser, Noise, tensor::to_vec_f32};
use foil_invert::{EfInverterConfig, LastNoiseMap, NoiseMaps};
use foil_schedule::{BetaSchedule, NoiseSchedule, Spacing, Steps};
use proptest::prelude::*;

const SHAPE: [usize; 4] = [2, 2, 3, 3];
const COND: usize = 3;

fn max_abs<B: Backend>(a: &Tensor<B, 4>, b: &Tensor<B, 4>) -> f32 {
    to_vec_f32(&(a.clone() - b.clone()).abs())
        .unwrap()
        .into_iter()
        .fold(0.0, f32::max)
}

fn norm<B: Backend>(a: &Tensor<B, 4>) -> f32 {
    to_vec_f32(a)
        .unwrap()
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
}

#[derive(Debug, Clone)]
struct Case {
    kind: BetaSchedule,
    n: usize,
    eta: f64,
    guidance: f64,
    skip_frac: f64,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(BetaSchedule::Linear {
                start: 0.00085,
                end: 0.012
            }),
            Just(BetaSchedule::ddpm()),
            Just(BetaSchedule::cosine())
        ],
        1usize..25,
        0.05f64..=1.0,
        prop_oneof![Just(1.0), 0.0f64..6.0],
        0.0f64..1.0,
        any::<u64>(),
    )
        .prop_map(|(kind, n, eta, guidance, skip_frac, seed)| Case {
            kind,
            n,
            eta,
            guidance,
            skip_frac,
            seed,
        })
}

fn steps(c: &Case) -> Steps {
    let s = NoiseSchedule::new(&c.kind, 1000).unwrap();
    Steps::inference(&s, c.n, Spacing::Leading, 1, false).unwrap()
}

/// Inverts with a condition and regenerates with the same one: returns the max error and the
/// error of `skip = N` (which must be exactly zero).
fn round_trip<B: Backend, D: Denoiser<B>>(model: &D, c: &Case) -> (f32, f32) {
    let dev = Default::default();
    let mut noise = Noise::new(c.seed);
    let x0: Tensor<B, 4> = noise.normal(SHAPE, &dev).tanh();
    let cond: Tensor<B, 2> = noise.normal([SHAPE[0], COND], &dev);
    let null: Tensor<B, 2> = Tensor::zeros([1, COND], &dev);
    let config = EfInverterConfig {
        eta: c.eta,
        source_guidance: c.guidance,
        target_guidance: c.guidance,
        last_map: LastNoiseMap::Keep,
    };
    let inv = config.init(steps(c), Some(null)).unwrap();
    let maps = inv
        .invert(model, x0.clone(), Some(cond.clone()), &mut noise)
        .unwrap();
    let skip = ((c.skip_frac * (c.n + 1) as f64) as usize).min(c.n);
    let rec = inv
        .generate(model, &maps, Some(cond.clone()), skip)
        .unwrap();
    let full = inv.generate(model, &maps, Some(cond), c.n).unwrap();
    (max_abs(&rec, &x0), max_abs(&full, &x0))
}

fn linear() -> LinearDenoiser {
    LinearDenoiser {
        channels: SHAPE[1],
        w: vec![0.7, -0.4, 0.25],
        a: 0.3,
        b: 0.5,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn linear_denoiser_reconstructs(c in case()) {
        for (err, exact) in [round_trip::<NdArray, _>(&linear(), &c), round_trip::<Flex, _>(&linear(), &c)] {
            prop_assert!(err <= 1e-5, "max |x0' - x0| = {err}");
            prop_assert_eq!(exact, 0.0);
        }
    }

    #[test]
    fn nonlinear_denoiser_reconstructs(c in case()) {
        let dims = [SHAPE[1], SHAPE[2], SHAPE[3]];
        let a = TanhDenoiser::<NdArray>::new(dims, COND, c.seed ^ 1, &Default::default());
        let b = TanhDenoiser::<Flex>::new(dims, COND, c.seed ^ 1, &Default::default());
        for (err, exact) in [round_trip(&a, &c), round_trip(&b, &c)] {
            prop_assert!(err <= 1e-5, "max |x0' - x0| = {err}");
            prop_assert_eq!(exact, 0.0);
        }
    }

    #[test]
    fn edits_grow_with_the_condition_difference(c in case(), dir in proptest::collection::vec(-1.0f32..1.0, COND)) {
        prop_assume!(dir.iter().map(|v| v.abs()).sum::<f32>() > 0.3 && c.n >= 2);
        let dev = Default::default();
        type B = NdArray;
        let model = linear();
        let mut noise = Noise::new(c.seed);
        let x0: Tensor<B, 4> = noise.normal(SHAPE, &dev).tanh();
        let cond: Tensor<B, 2> = noise.normal([SHAPE[0], COND], &dev);
        let d = Tensor::<B, 1>::from_floats(dir.as_slice(), &dev).unsqueeze_dim::<2>(0).repeat_dim(0, SHAPE[0]);
        let config = EfInverterConfig { eta: c.eta, source_guidance: 1.0, target_guidance: c.guidance.max(1.0), last_map: LastNoiseMap::Keep };
        let inv = config.init(steps(&c), Some(Tensor::zeros([1, COND], &dev))).unwrap();
        let maps = inv.invert(&model, x0, Some(cond.clone()), &mut noise).unwrap();
        let base = inv.generate(&model, &maps, Some(cond.clone()), 0).unwrap();
        let mut last = 0.0;
        for scale in [0.5f32, 1.0, 2.0] {
            let edited = inv.generate(&model, &maps, Some(cond.clone() + d.clone() * scale), 0).unwrap();
            let change = norm(&(edited - base.clone()));
            prop_assert!(change > last * 1.5, "change {change} after {last} at scale {scale}");
            last = change;
        }
    }

    #[test]
    fn nonlinear_edits_change_the_output(c in case()) {
        prop_assume!(c.n >= 2);
        let dev = Default::default();
        type B = Flex;
        let model = TanhDenoiser::<B>::new([SHAPE[1], SHAPE[2], SHAPE[3]], COND, c.seed, &dev);
        let mut noise = Noise::new(c.seed);
        let x0: Tensor<B, 4> = noise.normal(SHAPE, &dev).tanh();
        let cond: Tensor<B, 2> = noise.normal([SHAPE[0], COND], &dev);
        let other: Tensor<B, 2> = noise.normal([SHAPE[0], COND], &dev);
        let inv = EfInverterConfig { eta: c.eta, ..Default::default() }.init(steps(&c), None).unwrap();
        let maps = inv.invert(&model, x0.clone(), Some(cond), &mut noise).unwrap();
        let edited = inv.generate(&model, &maps, Some(other), 0).unwrap();
        prop_assert!(max_abs(&edited, &x0) > 1e-3);
    }
}

#[test]
fn noise_maps_survive_safetensors() {
    type B = NdArray;
    let dev = Default::default();
    let c = Case {
        kind: BetaSchedule::ddpm(),
        n: 6,
        eta: 0.8,
        guidance: 1.0,
        skip_frac: 0.0,
        seed: 9,
    };
    let model = linear();
    let mut noise = Noise::new(c.seed);
    let x0: Tensor<B, 4> = noise.normal(SHAPE, &dev).tanh();
    let cond: Tensor<B, 2> = noise.normal([SHAPE[0], COND], &dev);
    let inv = EfInverterConfig {
        eta: c.eta,
        ..Default::default()
    }
    .init(steps(&c), None)
    .unwrap();
    let maps = inv
        .invert(&model, x0.clone(), Some(cond.clone()), &mut noise)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maps.safetensors");
    maps.save(&path).unwrap();
    let loaded = NoiseMaps::<B>::load(&path, &dev).unwrap();
    assert_eq!(loaded.timesteps(), maps.timesteps());
    for k in 0..=c.n {
        assert_eq!(max_abs(loaded.x(k), maps.x(k)), 0.0);
    }
    let rec = inv
        .generate(&model, &loaded, Some(cond.clone()), 2)
        .unwrap();
    assert!(max_abs(&rec, &x0) <= 1e-5);
    // One item of the batch regenerates alone.
    let one = loaded.slice(1, 1).unwrap();
    let rec1 = inv
        .generate(&model, &one, Some(cond.narrow(0, 1, 1)), 0)
        .unwrap();
    assert!(max_abs(&rec1, &x0.clone().narrow(0, 1, 1)) <= 1e-5);
    // A truncated file is an error naming it, not a panic.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = NoiseMaps::<B>::load(&path, &dev).unwrap_err();
    assert!(err.to_string().contains("maps.safetensors"), "{err}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    type B = NdArray;
    let dev = Default::default();
    let c = Case {
        kind: BetaSchedule::ddpm(),
        n: 5,
        eta: 1.0,
        guidance: 1.0,
        skip_frac: 0.0,
        seed: 1,
    };
    let model = linear();
    let mut noise = Noise::new(1);
    let x0: Tensor<B, 4> = noise.normal(SHAPE, &dev);
    let null = || Some(Tensor::<B, 2>::zeros([1, COND], &dev));
    for eta in [0.0, -0.5, 1.5, f64::NAN] {
        assert!(
            EfInverterConfig {
                eta,
                ..Default::default()
            }
            .init(steps(&c), null())
            .is_err(),
            "eta {eta}"
        );
    }
    // set_alpha_to_one = true leaves the last step without variance: z would divide by zero.
    let s = NoiseSchedule::ddpm();
    let one = Steps::inference(&s, 5, Spacing::Leading, 1, true).unwrap();
    assert!(EfInverterConfig::default().init(one, null()).is_err());
    let inv = EfInverterConfig {
        target_guidance: 3.0,
        ..Default::default()
    }
    .init(steps(&c), null())
    .unwrap();
    let wrong_batch = Tensor::<B, 2>::zeros([3, COND], &dev);
    let wrong_width = Tensor::<B, 2>::zeros([2, COND + 1], &dev);
    assert!(
        inv.invert(&model, x0.clone(), Some(wrong_batch), &mut noise)
            .is_err()
    );
    assert!(
        inv.invert(&model, x0.clone(), Some(wrong_width), &mut noise)
            .is_err()
    );
    let nan = x0.clone().mul_scalar(f32::NAN);
    assert!(inv.invert(&model, nan, None, &mut noise).is_err());
    let maps = inv.invert(&model, x0.clone(), None, &mut noise).unwrap();
    let cond = Tensor::<B, 2>::zeros([2, COND], &dev);
    assert!(
        inv.generate(&model, &maps, Some(cond.clone()), 6).is_err(),
        "skip > N"
    );
    let other = EfInverterConfig::default()
        .init(steps(&Case { n: 4, ..c.clone() }), null())
        .unwrap();
    assert!(
        other
            .generate(&model, &maps, Some(cond.clone()), 0)
            .is_err(),
        "maps from other steps"
    );
    // CFG without a null condition.
    let no_null = EfInverterConfig {
        target_guidance: 3.0,
        ..Default::default()
    }
    .init::<B>(steps(&c), None)
    .unwrap();
    assert!(no_null.generate(&model, &maps, Some(cond), 0).is_err());
}

#[test]
fn inversion_is_reproducible_from_the_seed() {
    type B = Flex;
    let dev = Default::default();
    let c = Case {
        kind: BetaSchedule::cosine(),
        n: 8,
        eta: 1.0,
        guidance: 1.0,
        skip_frac: 0.0,
        seed: 4,
    };
    let model = TanhDenoiser::<B>::new([SHAPE[1], SHAPE[2], SHAPE[3]], COND, 3, &dev);
    let x0: Tensor<B, 4> = Noise::new(0).normal(SHAPE, &dev).tanh();
    let inv = EfInverterConfig::default()
        .init(steps(&c), Some(Tensor::zeros([1, COND], &dev)))
        .unwrap();
    let a = inv
        .invert(&model, x0.clone(), None, &mut Noise::new(5))
        .unwrap();
    let b = inv
        .invert(&model, x0.clone(), None, &mut Noise::new(5))
        .unwrap();
    let d = inv.invert(&model, x0, None, &mut Noise::new(6)).unwrap();
    assert_eq!(max_abs(a.z(3), b.z(3)), 0.0);
    assert!(max_abs(a.z(3), d.z(3)) > 1e-3);
}

fn conv_round_trip<B: Backend>() -> (f32, f32) {
    let dev = Default::default();
    B::seed(&dev, 7);
    let model = foil_core::toy::ConvDenoiserConfig {
        channels: 3,
        hidden: 8,
        cond_dim: COND,
    }
    .init::<B>(&dev);
    let mut noise = Noise::new(11);
    let x0: Tensor<B, 4> = noise.normal([2, 3, 8, 8], &dev).tanh();
    let cond: Tensor<B, 2> = noise.normal([2, COND], &dev);
    let c = Case {
        kind: BetaSchedule::Linear {
            start: 0.00085,
            end: 0.012,
        },
        n: 20,
        eta: 1.0,
        guidance: 4.0,
        skip_frac: 0.0,
        seed: 0,
    };
    let config = EfInverterConfig {
        eta: 1.0,
        source_guidance: 4.0,
        target_guidance: 4.0,
        last_map: LastNoiseMap::Keep,
    };
    let inv = config
        .init(steps(&c), Some(Tensor::zeros([1, COND], &dev)))
        .unwrap();
    let maps = inv
        .invert(&model, x0.clone(), Some(cond.clone()), &mut noise)
        .unwrap();
    let rec = inv.generate(&model, &maps, Some(cond.clone()), 0).unwrap();
    let edited = inv.generate(&model, &maps, Some(cond.neg()), 0).unwrap();
    (max_abs(&rec, &x0), max_abs(&edited, &x0))
}

#[test]
fn conv_network_round_trip_on_both_backends() {
    for (backend, (err, edit)) in [
        ("ndarray", conv_round_trip::<NdArray>()),
        ("flex", conv_round_trip::<Flex>()),
    ] {
        assert!(err <= 1e-5, "{backend}: reconstruction error {err}");
        assert!(
            edit > 1e-3,
            "{backend}: another condition changed nothing ({edit})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// One public regeneration step with the inversion's own noise map lands on the inverted
    /// trajectory (the inversion re-derives `x_k` as exactly this step), and `generate` is the
    /// loop over it.
    #[test]
    fn a_regeneration_step_with_the_noise_map_reproduces_the_trajectory(c in case()) {
        type B = NdArray;
        let dev = Default::default();
        let model = linear();
        let mut noise = Noise::new(c.seed);
        let x0: Tensor<B, 4> = noise.normal(SHAPE, &dev).tanh();
        let cond: Tensor<B, 2> = noise.normal([SHAPE[0], COND], &dev);
        let config = EfInverterConfig { eta: c.eta, source_guidance: c.guidance, target_guidance: c.guidance, last_map: LastNoiseMap::Keep };
        let inv = config.init(steps(&c), Some(Tensor::zeros([1, COND], &dev))).unwrap();
        let maps = inv.invert(&model, x0, Some(cond.clone()), &mut noise).unwrap();
        let mut x = maps.x(c.n).clone();
        for k in (0..c.n).rev() {
            let next = inv.generate_step(&model, maps.x(k + 1).clone(), k, Some(cond.clone()), maps.z(k).clone()).unwrap();
            let scale = norm(maps.x(k)).max(1.0);
            prop_assert!(max_abs(&next, maps.x(k)) <= 1e-5 * scale, "step {k}: {}", max_abs(&next, maps.x(k)));
            x = inv.generate_step(&model, x, k, Some(cond.clone()), maps.z(k).clone()).unwrap();
        }
        let looped = inv.generate(&model, &maps, Some(cond), 0).unwrap();
        prop_assert_eq!(to_vec_f32(&x).unwrap(), to_vec_f32(&looped).unwrap());
    }
}

#[test]
fn a_regeneration_step_checks_its_inputs() {
    type B = NdArray;
    let dev = Default::default();
    let c = Case {
        kind: BetaSchedule::ddpm(),
        n: 4,
        eta: 1.0,
        guidance: 1.0,
        skip_frac: 0.0,
        seed: 1,
    };
    let inv = EfInverterConfig::default()
        .init(steps(&c), Some(Tensor::zeros([1, COND], &dev)))
        .unwrap();
    let x: Tensor<B, 4> = Tensor::zeros(SHAPE, &dev);
    let err = inv
        .generate_step(&linear(), x.clone(), 4, None, x.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("step"), "{err}");
    let err = inv
        .generate_step(
            &linear(),
            x.clone(),
            1,
            None,
            Tensor::zeros([1, 2, 3, 3], &dev),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("noise map"), "{err}");
}

/// Passing the noised samples in reproduces `invert` exactly; the published preset's zeroed
/// last map changes only the final step, by `sigma_0 z_0`.
#[test]
fn invert_noised_reproduces_invert_and_the_zeroed_last_map_changes_only_the_last_step() {
    type B = NdArray;
    let dev = Default::default();
    let c = Case {
        kind: BetaSchedule::ddpm(),
        n: 6,
        eta: 1.0,
        guidance: 1.0,
        skip_frac: 0.0,
        seed: 3,
    };
    let model = TanhDenoiser::<B>::new([SHAPE[1], SHAPE[2], SHAPE[3]], COND, 5, &dev);
    let mut noise = Noise::new(c.seed);
    let x0: Tensor<B, 4> = noise.normal(SHAPE, &dev).tanh();
    let keep = EfInverterConfig::default()
        .init::<B>(steps(&c), Some(Tensor::zeros([1, COND], &dev)))
        .unwrap();
    let zero = EfInverterConfig {
        last_map: LastNoiseMap::Zero,
        ..Default::default()
    }
    .init::<B>(steps(&c), Some(Tensor::zeros([1, COND], &dev)))
    .unwrap();
    let maps = keep
        .invert(&model, x0.clone(), None, &mut Noise::new(9))
        .unwrap();
    // The same draws, made by hand.
    let mut draw = Noise::new(9);
    let mut xs = vec![x0.clone()];
    for k in 0..c.n {
        let eps = draw.normal_like(&x0);
        xs.push(keep.steps().q_sample(x0.clone(), &[k], eps).unwrap());
    }
    let again = keep.invert_noised(&model, xs.clone(), None).unwrap();
    for k in 0..c.n {
        assert_eq!(
            to_vec_f32(maps.z(k)).unwrap(),
            to_vec_f32(again.z(k)).unwrap(),
            "z {k}"
        );
        assert_eq!(
            to_vec_f32(maps.x(k + 1)).unwrap(),
            to_vec_f32(again.x(k + 1)).unwrap(),
            "x {k}"
        );
    }
    let zeroed = zero.invert_noised(&model, xs.clone(), None).unwrap();
    assert!(to_vec_f32(zeroed.z(0)).unwrap().iter().all(|&v| v == 0.0));
    assert!(
        max_abs(maps.z(0), zeroed.z(0)) > 0.1,
        "the kept z_0 is not zero"
    );
    for k in 1..c.n {
        assert_eq!(
            to_vec_f32(maps.z(k)).unwrap(),
            to_vec_f32(zeroed.z(k)).unwrap(),
            "z {k}"
        );
    }
    // Reconstruction: exact with the kept map, off by sigma_0 z_0 with the zeroed one.
    let exact = keep.generate(&model, &maps, None, 0).unwrap();
    assert!(max_abs(&exact, &x0) < 1e-4);
    let approx = zero.generate(&model, &zeroed, None, 0).unwrap();
    assert!(max_abs(&approx, &x0) > 1e-3);
    // A wrong number of samples is refused.
    assert!(
        keep.invert_noised(&model, xs[..c.n].to_vec(), None)
            .is_err()
    );
    // Steps ending at abar = 1 (diffusers' set_alpha_to_one = true) have a last step without
    // variance: refused when the last map is kept, fine when it is zeroed (the reference).
    let to_one = Steps::inference(&NoiseSchedule::ddpm(), 6, Spacing::Leading, 1, true).unwrap();
    let null = || Some(Tensor::<B, 2>::zeros([1, COND], &dev));
    assert!(
        EfInverterConfig::default()
            .init(to_one.clone(), null())
            .is_err()
    );
    let zero_to_one = EfInverterConfig {
        last_map: LastNoiseMap::Zero,
        ..Default::default()
    }
    .init(to_one, null())
    .unwrap();
    let maps = zero_to_one.invert_noised(&model, xs, None).unwrap();
    assert!(to_vec_f32(maps.z(0)).unwrap().iter().all(|&v| v == 0.0));
    let out = zero_to_one.generate(&model, &maps, None, 0).unwrap();
    assert!(to_vec_f32(&out).unwrap().iter().all(|v| v.is_finite()));
}

/// The convolutional round trip once more on a GPU backend (`--features test-wgpu` for
/// `scripts/wgpu-check.sh`, `test-cuda` for `scripts/gpu-check.sh`; CI builds neither).
#[allow(unused_macros)]
macro_rules! round_trip_on {
    ($test:ident, $B:ty) => {
        #[test]
        fn $test() {
            let (err, edit) = conv_round_trip::<$B>();
            assert!(err <= 1e-5, "reconstruction error {err}");
            assert!(edit > 1e-3, "another condition changed nothing ({edit})");
        }
    };
}
#[cfg(feature = "test-wgpu")]
round_trip_on!(conv_network_round_trip_on_wgpu, burn::backend::Wgpu);
#[cfg(feature = "test-cuda")]
round_trip_on!(conv_network_round_trip_on_cuda, burn::backend::Cuda);
