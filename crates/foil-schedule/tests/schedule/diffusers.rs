//! diffusers scheduler configurations (`scheduler/scheduler_config.json`) read into foil's
//! schedule and steps: the published Kandinsky 2.2 decoder's, every refusal naming its key, and
//! the betas of each `beta_schedule` against diffusers 0.31's own.

use foil_schedule::diffusers::ConfigReader;
use foil_schedule::{
    BetaSchedule, DiffusersScheduler, NoiseSchedule, SchedulerClass, Spacing, Steps, VarianceType,
};
use serde_json::{Value, json};

/// `kandinsky-community/kandinsky-2-2-decoder`, `scheduler/scheduler_config.json` as diffusers
/// 0.31's `DDPMScheduler.save_config` writes it for the decoder's settings (plus the DDIM key
/// `set_alpha_to_one`, which diffusers' DDPM ignores).
fn decoder_ddpm() -> Value {
    json!({
        "_class_name": "DDPMScheduler",
        "_diffusers_version": "0.31.0",
        "beta_end": 0.012,
        "beta_schedule": "linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "clip_sample_range": 1.0,
        "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "rescale_betas_zero_snr": false,
        "sample_max_value": 1.0,
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "thresholding": false,
        "timestep_spacing": "leading",
        "trained_betas": null,
        "variance_type": "learned_range"
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
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
fn the_decoder_ddpm_config_reads_as_the_kandinsky_schedule() {
    let s = DiffusersScheduler::from_config(&decoder_ddpm(), "scheduler_config.json").unwrap();
    assert_eq!(s.class, SchedulerClass::Ddpm);
    assert_eq!(s.schedule, kandinsky());
    assert_eq!(s.spacing, Spacing::Leading);
    assert_eq!(s.steps_offset, 1);
    // DDPMScheduler steps to abar = 1 past the first training step, whatever the key says.
    assert!(s.set_alpha_to_one);
    assert_eq!(s.variance_type, Some(VarianceType::LearnedRange));
    let steps = s.inference_steps(100).unwrap();
    assert_eq!(
        steps,
        Steps::inference(&kandinsky(), 100, Spacing::Leading, 1, true).unwrap()
    );
    assert_eq!(steps.timesteps_desc()[..3], [991, 981, 971]);
    assert_eq!(steps.timesteps()[0], 1);
}

#[test]
fn a_ddim_config_keeps_set_alpha_to_one() {
    let mut cfg = with(decoder_ddpm(), "_class_name", json!("DDIMScheduler"));
    cfg.as_object_mut().unwrap().remove("variance_type");
    let s = DiffusersScheduler::from_config(&cfg, "ddim.json").unwrap();
    assert_eq!(s.class, SchedulerClass::Ddim);
    assert!(!s.set_alpha_to_one);
    assert_eq!(s.variance_type, None);
    assert_eq!(
        s.inference_steps(50).unwrap(),
        Steps::inference(&kandinsky(), 50, Spacing::Leading, 1, false).unwrap()
    );
    // DDIM's default is true; DDPM's variance_type is ignored by DDIM as diffusers does.
    let mut cfg = with(cfg, "variance_type", json!("learned_range"));
    cfg.as_object_mut().unwrap().remove("set_alpha_to_one");
    assert!(
        DiffusersScheduler::from_config(&cfg, "ddim.json")
            .unwrap()
            .set_alpha_to_one
    );
    // Read as the class a pipeline's model_index.json names.
    let as_ddpm =
        DiffusersScheduler::from_config_as(&cfg, "ddim.json", SchedulerClass::Ddpm).unwrap();
    assert_eq!(as_ddpm.variance_type, Some(VarianceType::LearnedRange));
}

#[test]
fn spacings_and_offsets_are_read() {
    for (name, spacing) in [
        ("leading", Spacing::Leading),
        ("trailing", Spacing::Trailing),
        ("linspace", Spacing::Linspace),
    ] {
        let cfg = with(decoder_ddpm(), "timestep_spacing", json!(name));
        let s = DiffusersScheduler::from_config(&cfg, "x").unwrap();
        assert_eq!(s.spacing, spacing);
    }
    // diffusers 0.31, DDPMScheduler(timestep_spacing="trailing").set_timesteps(7).
    let cfg = with(decoder_ddpm(), "timestep_spacing", json!("trailing"));
    let s = DiffusersScheduler::from_config(&cfg, "x").unwrap();
    assert_eq!(
        s.inference_steps(7).unwrap().timesteps_desc(),
        [999, 856, 713, 570, 428, 285, 142]
    );
}

/// Each refusal is a format error naming the file, the key and the value.
fn refused(cfg: &Value, key: &str, value: &str) {
    let err = match DiffusersScheduler::from_config(cfg, "sched/scheduler_config.json") {
        Ok(_) => panic!("{key} = {value} was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("sched/scheduler_config.json"), "{err}");
    assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    assert!(err.contains(value), "{key} {value}: {err}");
}

#[test]
fn unsupported_values_are_refused_naming_the_key() {
    let d = decoder_ddpm;
    refused(
        &with(d(), "_class_name", json!("PNDMScheduler")),
        "_class_name",
        "PNDMScheduler",
    );
    refused(
        &with(d(), "prediction_type", json!("v_prediction")),
        "prediction_type",
        "v_prediction",
    );
    refused(
        &with(d(), "clip_sample", json!(true)),
        "clip_sample",
        "true",
    );
    let mut missing = d();
    missing.as_object_mut().unwrap().remove("clip_sample");
    refused(&missing, "clip_sample", "true");
    refused(
        &with(d(), "thresholding", json!(true)),
        "thresholding",
        "true",
    );
    refused(
        &with(d(), "rescale_betas_zero_snr", json!(true)),
        "rescale_betas_zero_snr",
        "true",
    );
    refused(
        &with(d(), "beta_schedule", json!("exponential")),
        "beta_schedule",
        "exponential",
    );
    refused(
        &with(d(), "timestep_spacing", json!("karras")),
        "timestep_spacing",
        "karras",
    );
    refused(
        &with(d(), "variance_type", json!("fixed_large")),
        "variance_type",
        "fixed_large",
    );
    refused(
        &with(d(), "trained_betas", json!([0.1, 0.2])),
        "trained_betas",
        "2",
    );
    refused(&with(d(), "steps_offset", json!(-1)), "steps_offset", "-1");
    refused(
        &with(d(), "beta_start", json!("small")),
        "beta_start",
        "small",
    );
    // DDIMScheduler has no sigmoid schedule.
    let ddim = with(d(), "_class_name", json!("DDIMScheduler"));
    refused(
        &with(ddim, "beta_schedule", json!("sigmoid")),
        "beta_schedule",
        "sigmoid",
    );
    // A key foil does not know at all.
    refused(
        &with(d(), "use_karras_sigmas", json!(true)),
        "use_karras_sigmas",
        "true",
    );
    // Metadata keys are accepted whatever they hold.
    let meta = with(d(), "_name_or_path", json!("/somewhere"));
    assert!(DiffusersScheduler::from_config(&meta, "x").is_ok());
}

#[test]
fn diffusers_defaults_need_clip_sample_off_only() {
    // DDPMScheduler().save_config() of diffusers 0.31 with clip_sample=False.
    let cfg = json!({
        "_class_name": "DDPMScheduler", "_diffusers_version": "0.31.0", "beta_end": 0.02,
        "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": false,
        "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": 1000, "prediction_type": "epsilon",
        "rescale_betas_zero_snr": false, "sample_max_value": 1.0, "steps_offset": 0,
        "thresholding": false, "timestep_spacing": "leading", "trained_betas": null,
        "variance_type": "fixed_small"
    });
    let s = DiffusersScheduler::from_config(&cfg, "x").unwrap();
    assert_eq!(s.schedule, NoiseSchedule::ddpm());
    assert_eq!(s.variance_type, Some(VarianceType::FixedSmall));
    // Trained betas replace the schedule.
    let betas: Vec<f64> = (0..1000).map(|i| 1e-4 + i as f64 * 1e-5).collect();
    let s =
        DiffusersScheduler::from_config(&with(cfg, "trained_betas", json!(betas)), "x").unwrap();
    assert_eq!(s.schedule.betas(), &betas[..]);
}

/// diffusers 0.31, `DDPMScheduler(beta_schedule=.., beta_start=0.00085, beta_end=0.012)`:
/// `betas` and `alphas_cumprod` (float32) at steps 0, 1, 499, 998, 999.
///
/// ```python
/// for bs in ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]:
///     s = DDPMScheduler(beta_schedule=bs, beta_start=0.00085, beta_end=0.012)
///     print(bs, [float(s.betas[i]) for i in idx], [float(s.alphas_cumprod[i]) for i in idx])
/// ```
#[test]
fn betas_match_diffusers_for_every_beta_schedule() {
    const IDX: [usize; 5] = [0, 1, 499, 998, 999];
    let cases: [(&str, [f64; 5], [f64; 5]); 4] = [
        (
            "linear",
            [
                0.0008500000112690032,
                0.0008611611556261778,
                0.006419419310986996,
                0.011988839134573936,
                0.012000000104308128,
            ],
            [
                0.9991499781608582,
                0.9982895255088806,
                0.1618121713399887,
                0.0015981405740603805,
                0.0015789627796038985,
            ],
        ),
        (
            "scaled_linear",
            [
                0.0008499999530613422,
                0.0008546985918655992,
                0.0048037925735116005,
                0.01198237482458353,
                0.011999999172985554,
            ],
            [
                0.9991499781608582,
                0.9982960224151611,
                0.27766942977905273,
                0.004716695751994848,
                0.00466009508818388,
            ],
        ),
        (
            "squaredcos_cap_v2",
            [
                4.128422369831242e-05,
                4.614175122696906e-05,
                0.003145886119455099,
                0.7499994039535522,
                0.9990000128746033,
            ],
            [
                0.9999586939811707,
                0.9999125599861145,
                0.4938434660434723,
                2.428766265438753e-06,
                2.4287349909002387e-09,
            ],
        ),
        (
            "sigmoid",
            [
                0.0008775697788223624,
                0.0008779020863585174,
                0.006408258806914091,
                0.011972097679972649,
                0.011972431093454361,
            ],
            [
                0.9991224408149719,
                0.9982452988624573,
                0.34374698996543884,
                0.001589699531905353,
                0.0015706669073551893,
            ],
        ),
    ];
    for (name, betas, abar) in cases {
        let cfg = with(decoder_ddpm(), "beta_schedule", json!(name));
        let s = DiffusersScheduler::from_config(&cfg, "x").unwrap();
        for (k, &i) in IDX.iter().enumerate() {
            // diffusers works in float32; foil in float64. The cumulative product drifts by
            // float32 rounding over 1000 factors (relative ~1e-5 at abar ~ 2e-9).
            approx::assert_relative_eq!(s.schedule.betas()[i], betas[k], max_relative = 2e-6);
            approx::assert_relative_eq!(
                s.schedule.alphas_cumprod()[i],
                abar[k],
                max_relative = 5e-5
            );
        }
    }
}

#[test]
fn the_reader_names_unknown_keys_and_bad_types() {
    let v = json!({"a": 1, "b": [1, 2], "c": "x", "_meta": 3, "d": null});
    let mut r = ConfigReader::new(&v, "cfg.json").unwrap();
    assert_eq!(r.usize("a", 0).unwrap(), 1);
    assert_eq!(r.usize_list("b", &[]).unwrap(), [1, 2]);
    assert!(r.f64("c", 0.0).unwrap_err().to_string().contains("`c`"));
    assert_eq!(r.opt_usize("d").unwrap(), None);
    assert_eq!(r.usize("missing", 7).unwrap(), 7);
    assert!(r.finish().is_ok());
    let mut r = ConfigReader::new(&v, "cfg.json").unwrap();
    r.accept(&["a", "b"]);
    let err = r.finish().unwrap_err().to_string();
    assert!(
        err.contains("cfg.json") && err.contains("`c`") && err.contains("`d`"),
        "{err}"
    );
    assert!(!err.contains("_meta"), "{err}");
    assert!(ConfigReader::new(&json!([1]), "list.json").is_err());
}
