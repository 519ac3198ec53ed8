//! Parity with the reference schedulers, on values recorded by `tools/record_schedules.py`:
//! diffusers 0.31 `DDIMScheduler` / `DDPMScheduler` configured as the Kandinsky 2.2 decoder,
//! and guided-diffusion's `SpacedDiffusion` for DiME's 500 → 200 CelebA model.
//! Every tensor comparison runs on two backends (ndarray and flex).

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::DenoiserOutput;
use foil_core::tensor::{from_vec, to_vec_f32};
use foil_schedule::{BetaSchedule, NoiseSchedule, Spacing, Steps, VarianceType, space_timesteps};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture present")).expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as usize)
        .collect()
}

fn tensor<B: Backend>(v: &Value, shape: [usize; 4]) -> Tensor<B, 4> {
    let values = floats(v).into_iter().map(|x| x as f32).collect();
    from_vec(values, shape, &Default::default()).expect("fixture shape")
}

fn shape(v: &Value) -> [usize; 4] {
    usizes(v).try_into().expect("4-d shape")
}

fn assert_close<B: Backend>(ours: Tensor<B, 4>, reference: &Value, tol: f64, what: &str) {
    let ours = to_vec_f32(&ours).unwrap();
    let reference = floats(reference);
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert!(
            approx::relative_eq!(*a as f64, *b, epsilon = tol, max_relative = tol),
            "{what}[{i}]: ours {a}, reference {b}"
        );
    }
}

fn kandinsky() -> NoiseSchedule {
    NoiseSchedule::new(
        &BetaSchedule::Linear {
            start: 0.00085,
            end: 0.012,
        },
        1000,
    )
    .unwrap()
}

#[test]
fn kandinsky_schedule_and_timesteps_match_diffusers() {
    let fx = fixture("kandinsky_ddim.json");
    let s = kandinsky();
    // diffusers computes the schedule in float32: agree to its precision.
    for (ours, theirs) in s.alphas_cumprod().iter().zip(floats(&fx["alphas_cumprod"])) {
        approx::assert_relative_eq!(*ours, theirs, max_relative = 2e-6);
    }
    let steps = Steps::inference(&s, 100, Spacing::Leading, 1, false).unwrap();
    assert_eq!(steps.timesteps_desc(), usizes(&fx["timesteps"]));
    approx::assert_relative_eq!(
        steps.abar_prev(0),
        fx["final_alpha_cumprod"].as_f64().unwrap(),
        max_relative = 1e-6
    );
    for (key, expected) in fx["spacings"].as_object().unwrap() {
        let (spacing, n) = key.split_once('_').unwrap();
        let spacing = match spacing {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            _ => Spacing::Linspace,
        };
        let steps = Steps::inference(&s, n.parse().unwrap(), spacing, 1, false).unwrap();
        assert_eq!(steps.timesteps_desc(), usizes(expected), "{key}");
    }
}

pub(crate) fn kandinsky_ddim_steps<B: Backend>() {
    let fx = fixture("kandinsky_ddim.json");
    let steps = Steps::inference(&kandinsky(), 100, Spacing::Leading, 1, false).unwrap();
    let shape = shape(&fx["shape"]);
    for case in fx["cases"].as_array().unwrap() {
        let t = case["t"].as_u64().unwrap() as usize;
        let k = steps.timesteps().iter().position(|&x| x == t).unwrap();
        // diffusers accumulates abar in float32; the variance subtracts close numbers at t = 1.
        approx::assert_relative_eq!(
            steps.ddim_variance(k),
            case["variance"].as_f64().unwrap(),
            max_relative = 1e-4
        );
        let x = tensor::<B>(&case["sample"], shape);
        let eps = tensor::<B>(&case["eps"], shape);
        let noise = tensor::<B>(&case["noise"], shape);
        let det = steps
            .ddim_step(x.clone(), &[k], eps.clone(), 0.0, None)
            .unwrap();
        assert_close(
            det.prev_sample,
            &case["prev_eta0"],
            1e-4,
            &format!("DDIM eta 0, t {t}"),
        );
        assert_close(
            det.pred_x0,
            &case["pred_x0"],
            1e-4,
            &format!("DDIM x0, t {t}"),
        );
        let sto = steps.ddim_step(x, &[k], eps, 1.0, Some(noise)).unwrap();
        assert_close(
            sto.prev_sample,
            &case["prev_eta1"],
            1e-4,
            &format!("DDIM eta 1, t {t}"),
        );
    }
}

#[test]
fn kandinsky_ddim_steps_match_diffusers() {
    kandinsky_ddim_steps::<NdArray>();
    kandinsky_ddim_steps::<Flex>();
}

pub(crate) fn kandinsky_ddpm_steps<B: Backend>() {
    let fx = fixture("kandinsky_ddpm.json");
    // DDPMScheduler moves past the first step to abar = 1 (its `one`).
    let steps = Steps::inference(&kandinsky(), 100, Spacing::Leading, 1, true).unwrap();
    let shape = shape(&fx["shape"]);
    for case in fx["cases"].as_array().unwrap() {
        let t = case["t"].as_u64().unwrap() as usize;
        let k = steps.timesteps().iter().position(|&x| x == t).unwrap();
        let (kind, v) = match case["variance_type"].as_str().unwrap() {
            "learned_range" => (
                VarianceType::LearnedRange,
                Some(tensor::<B>(&case["v"], shape)),
            ),
            _ => (VarianceType::FixedSmall, None),
        };
        let out = DenoiserOutput {
            eps: tensor::<B>(&case["eps"], shape),
            variance: v,
        };
        let step = steps
            .ddpm_step(
                tensor(&case["sample"], shape),
                &[k],
                out,
                kind,
                false,
                tensor(&case["noise"], shape),
            )
            .unwrap();
        assert_close(
            step.prev_sample,
            &case["prev"],
            1e-4,
            &format!("DDPM {kind:?} t {t}"),
        );
        assert_close(
            step.pred_x0,
            &case["pred_x0"],
            1e-4,
            &format!("DDPM x0 t {t}"),
        );
    }
}

#[test]
fn kandinsky_ddpm_steps_match_diffusers() {
    kandinsky_ddpm_steps::<NdArray>();
    kandinsky_ddpm_steps::<Flex>();
}

fn dime() -> Steps {
    let s = NoiseSchedule::new(
        &BetaSchedule::Linear {
            start: 2e-4,
            end: 0.04,
        },
        500,
    )
    .unwrap();
    Steps::respaced(&s, &space_timesteps(500, "200").unwrap()).unwrap()
}

#[test]
fn dime_respacing_matches_guided_diffusion() {
    let fx = fixture("dime_respaced.json");
    let steps = dime();
    assert_eq!(steps.timesteps(), usizes(&fx["use_timesteps"]));
    assert_eq!(steps.timesteps(), usizes(&fx["timestep_map"]));
    let close =
        |ours: f64, theirs: f64| approx::assert_relative_eq!(ours, theirs, max_relative = 1e-10);
    for (k, b) in floats(&fx["betas"]).into_iter().enumerate() {
        close(steps.beta(k), b);
    }
    for (k, a) in floats(&fx["alphas_cumprod"]).into_iter().enumerate() {
        close(steps.abar(k), a);
    }
    for (k, v) in floats(&fx["posterior_variance"]).into_iter().enumerate() {
        approx::assert_relative_eq!(
            steps.posterior_variance(k),
            v,
            max_relative = 1e-10,
            epsilon = 1e-300
        );
    }
    for (k, v) in floats(&fx["posterior_log_variance_clipped"])
        .into_iter()
        .enumerate()
    {
        close(steps.posterior_log_variance_clipped(k), v);
    }
    for (key, expected) in fx["space_timesteps"].as_object().unwrap() {
        let (n, spec) = key.split_once(':').unwrap();
        assert_eq!(
            space_timesteps(n.parse().unwrap(), spec).unwrap(),
            usizes(expected),
            "{key}"
        );
    }
}

pub(crate) fn dime_p_mean_variance<B: Backend>() {
    let fx = fixture("dime_respaced.json");
    let steps = dime();
    let shape = shape(&fx["shape"]);
    let dev = Default::default();
    for case in fx["cases"].as_array().unwrap() {
        let k = case["index"].as_u64().unwrap() as usize;
        assert_eq!(
            steps.timesteps()[k],
            case["model_t"].as_u64().unwrap() as usize,
            "network timestep"
        );
        let x = tensor::<B>(&case["x"], shape);
        let out = DenoiserOutput {
            eps: tensor::<B>(&case["eps"], shape),
            variance: Some(tensor::<B>(&case["v"], shape)),
        };
        let clip = case["clip"].as_bool().unwrap();
        // A zero noise tensor exposes the mean; the log-variance is checked on its own.
        let step = steps
            .ddpm_step(
                x.clone(),
                &[k; 2],
                out.clone(),
                VarianceType::LearnedRange,
                clip,
                x.zeros_like(),
            )
            .unwrap();
        let what = format!("p_mean_variance index {k} clip {clip}");
        assert_close(step.mean, &case["mean"], 1e-4, &format!("{what}: mean"));
        assert_close(step.pred_x0, &case["pred_x0"], 1e-4, &format!("{what}: x0"));
        let log_var = steps
            .log_variance(&[k; 2], 2, VarianceType::LearnedRange, out.variance, &dev)
            .unwrap();
        assert_close(
            log_var,
            &case["log_variance"],
            1e-5,
            &format!("{what}: log variance"),
        );
    }
}

#[test]
fn dime_p_mean_variance_matches_guided_diffusion() {
    dime_p_mean_variance::<NdArray>();
    dime_p_mean_variance::<Flex>();
}
