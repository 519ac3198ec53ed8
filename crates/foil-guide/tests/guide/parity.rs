//! `Guide::step` against the authors' own code: fixtures recorded by `tools/record_guide.py`,
//! which imports `core/sample_utils.py` of DiME, FastDiME and MaskDiME and runs their loop
//! bodies on guided-diffusion-sdk's `p_mean_variance`, with the tiny ADM, the tiny one-logit
//! ResNet-18 and the tiny VGG-19 perceptual network of foil-models' fixtures (8x8 images, batch
//! 2, tau = 4). Each step starts from the reference's previous state and noise.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use foil_core::tensor::to_vec_f32;
use foil_guide::{Carry, CleanEstimate, Dilation, Guide, GuideConfig, MaskPolicy, StepNoise};
use foil_models::adm::AdmConfig;
use foil_models::resnet::ResNetConfig;
use foil_models::vgg::{Vgg19Config, Vgg19Perceptual};
use foil_models::weights::TensorFile;
use foil_schedule::{BetaSchedule, NoiseSchedule, Steps, space_timesteps};

const N: usize = 2;
const S: usize = 8;
const TAU: usize = 4;

fn models_fixture(name: &str) -> String {
    format!(
        "{}/../foil-models/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

struct Fixture(TensorFile);

impl Fixture {
    fn open() -> Self {
        let path = format!(
            "{}/tests/fixtures/guide_steps.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        Self(TensorFile::open(path).unwrap())
    }
    fn image<I: Backend>(&mut self, key: &str) -> Tensor<I, 4> {
        self.0
            .take::<I, 4>(key, [N, 3, S, S], &Default::default())
            .val()
    }
    fn mask<I: Backend>(&mut self, key: &str) -> Tensor<I, 4> {
        self.0
            .take::<I, 4>(key, [N, 1, S, S], &Default::default())
            .val()
    }
    fn targets(&mut self, key: &str) -> Vec<usize> {
        let t = self
            .0
            .take::<NdArray, 1>(key, [N], &Default::default())
            .val();
        to_vec_f32(&t)
            .unwrap()
            .iter()
            .map(|&v| v as usize)
            .collect()
    }
}

/// DiME's CelebA schedule: 500 linear steps (guided-diffusion's scaling: 2e-4 .. 4e-2 at 500),
/// respaced to 200.
fn steps() -> Steps {
    let schedule = NoiseSchedule::new(
        &BetaSchedule::Linear {
            start: 2.0 * 0.0001,
            end: 2.0 * 0.02,
        },
        500,
    )
    .unwrap();
    Steps::respaced(&schedule, &space_timesteps(500, "200").unwrap()).unwrap()
}

/// Max |a - b| relative to the largest |b| (at least 1).
fn rel_diff<I: Backend>(a: &Tensor<I, 4>, b: &Tensor<I, 4>) -> f32 {
    let (a, b) = (to_vec_f32(a).unwrap(), to_vec_f32(b).unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

fn config(method: &str) -> (GuideConfig, f64) {
    let base = GuideConfig {
        tau: TAU,
        ..match method {
            "dime" => GuideConfig::dime(),
            "fastdime" => GuideConfig {
                mask: MaskPolicy::Difference {
                    warmup: 2,
                    pool: 3,
                    threshold: 0.3,
                },
                ..GuideConfig::fastdime()
            },
            _ => GuideConfig {
                mask: MaskPolicy::Dual {
                    k: 0.1,
                    gamma: 0.5,
                    dilation: Dilation::Square { kernel: 5 },
                },
                ..GuideConfig::maskdime()
            },
        }
    };
    (base, if method == "maskdime" { 8.0 } else { 10.0 })
}

/// Runs `method`'s `TAU` steps on `A` from the reference's states and compares every output.
fn check<A: AutodiffBackend>(method: &str) {
    let dev = Default::default();
    let adm = AdmConfig::tiny()
        .load_file::<A::InnerBackend>(models_fixture("adm_tiny.safetensors"), &dev)
        .unwrap();
    let mut weights =
        TensorFile::open(models_fixture("classifiers_resnet_small.safetensors")).unwrap();
    let resnet = ResNetConfig::tiny()
        .with_outputs(1)
        .with_small_input(true)
        .load::<A>(&mut weights, &dev)
        .unwrap();
    weights.finish().unwrap();
    let vgg = Vgg19Perceptual::<A>::load_file(
        models_fixture("vgg19_tiny.pth"),
        &Vgg19Config::tiny(),
        &dev,
    )
    .unwrap();
    let (cfg, scale) = config(method);
    let guide = Guide::<A, _, _>::new(cfg.clone(), steps(), &adm, &resnet)
        .unwrap()
        .with_perceptual(&vgg);

    let mut f = Fixture::open();
    let x = f.image("x");
    let targets = f.targets(&format!("{method}.target"));
    let mut carry = Carry::start(f.image(&format!("{method}.z_start")));
    let mut worst = 0.0f32;
    for i in (0..TAU).rev() {
        let p = format!("{method}.{i}");
        let noise = StepNoise {
            sample: f.image(&format!("{p}.sample_noise")),
            background: f.image(&format!("{p}.background_noise")),
        };
        let step = guide.step(&x, i, &targets, scale, carry, noise).unwrap();
        let mut compare =
            |what: &str, ours: &Tensor<A::InnerBackend, 4>, theirs: Tensor<A::InnerBackend, 4>| {
                let d = rel_diff(ours, &theirs);
                if d > 1e-4 {
                    let (a, b) = (to_vec_f32(ours).unwrap(), to_vec_f32(&theirs).unwrap());
                    let bad: Vec<_> = a
                        .iter()
                        .zip(&b)
                        .enumerate()
                        .filter(|(_, (x, y))| (*x - *y).abs() > 1e-3)
                        .take(12)
                        .collect();
                    eprintln!("{bad:?}");
                }
                assert!(
                    d <= 1e-4,
                    "{method} step {i} {what}: relative difference {d:e}"
                );
                worst = worst.max(d);
                theirs
            };
        let x0 = compare("x0", &step.x0, f.image(&format!("{p}.out.x0")));
        compare(
            "gradient image",
            &step.guided_at,
            f.image(&format!("{p}.out.guided_at")),
        );
        compare(
            "class gradient",
            &step.grad_class,
            f.image(&format!("{p}.out.grad_class")),
        );
        compare(
            "distance gradient",
            &step.grad_dist,
            f.image(&format!("{p}.out.grad_dist")),
        );
        let z = compare("sample", &step.next.z, f.image(&format!("{p}.out.z")));
        // The next step starts from the reference's state.
        carry = Carry::start(z);
        match method {
            "maskdime" => {
                let m1 = f.mask(&format!("{p}.out.m1"));
                let m2 = f.mask(&format!("{p}.out.m2"));
                compare("M1", step.next.outer.as_ref().unwrap(), m1.clone());
                compare("M2", step.next.inner.as_ref().unwrap(), m2.clone());
                carry.inner = Some(m2);
                carry.outer = Some(m1);
            }
            "fastdime" => {
                if TAU - 1 - i >= 2 {
                    let m = f.mask(&format!("{p}.out.mask"));
                    compare(
                        "difference mask",
                        step.next.outer.as_ref().unwrap(),
                        m.clone(),
                    );
                    carry.outer = Some(m);
                } else {
                    assert!(step.next.outer.is_none(), "no mask during the warm-up");
                }
                let next = f.image(&format!("{p}.out.next_guide_at"));
                carry.guide_at = Some(compare(
                    "next gradient image",
                    step.next.guide_at.as_ref().unwrap(),
                    next,
                ));
            }
            _ => {
                assert_eq!(cfg.clean, CleanEstimate::FullChain);
                carry.guide_at = Some(x0);
            }
        }
    }
    eprintln!("{method}: worst relative difference over {TAU} steps {worst:e}");
}

#[test]
fn dime_step_matches_the_authors_code() {
    check::<Autodiff<NdArray>>("dime");
}

#[test]
fn fastdime_step_matches_the_authors_code() {
    check::<Autodiff<NdArray>>("fastdime");
}

#[test]
fn maskdime_step_matches_the_authors_code() {
    check::<Autodiff<NdArray>>("maskdime");
}

/// The three methods' steps against the authors' code once more on a GPU backend (`--features
/// test-wgpu` for `scripts/wgpu-check.sh`, `test-cuda` for `scripts/gpu-check.sh`; CI builds
/// neither).
#[allow(unused_macros)]
macro_rules! parity_on {
    ($test:ident, $B:ty) => {
        #[test]
        fn $test() {
            for method in ["dime", "fastdime", "maskdime"] {
                check::<Autodiff<$B>>(method);
            }
        }
    };
}
#[cfg(feature = "test-wgpu")]
parity_on!(steps_match_the_authors_code_on_wgpu, burn::backend::Wgpu);
#[cfg(feature = "test-cuda")]
parity_on!(steps_match_the_authors_code_on_cuda, burn::backend::Cuda);
