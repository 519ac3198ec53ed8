//! guided-diffusion's UNet against `guided_diffusion.unet.UNetModel` (guided-diffusion-sdk 1.0.0):
//! two tiny random configurations recorded by `tools/record_adm.py`, and the tensor names, shapes
//! and parameter count of the full DiME CelebA-128 configuration.

use burn::backend::{Flex, NdArray};
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::{Denoiser, Error};
use foil_models::adm::{Adm, AdmConfig, one_hot_labels};
use foil_models::weights::TensorFile;

/// Tolerance of every parity check (max abs difference, outputs of magnitude ~3).
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Io<B: Backend> {
    x: Tensor<B, 4>,
    t: Vec<usize>,
    y: Option<Vec<usize>>,
    out: Vec<f32>,
    out_dims: [usize; 4],
}

fn io<B: Backend>(name: &str, cfg: &AdmConfig) -> Io<B> {
    let dev = Default::default();
    let (n, s, c) = (3, cfg.image_size, cfg.in_channels);
    let mut f = TensorFile::open(fixture(&format!("adm_{name}_io.safetensors"))).unwrap();
    let x = f.take::<B, 4>("input.x", [n, c, s, s], &dev).val();
    let as_usize = |t: Tensor<B, 1>| -> Vec<usize> {
        to_vec_f32(&t)
            .unwrap()
            .iter()
            .map(|&v| v as usize)
            .collect()
    };
    let t = as_usize(f.take::<B, 1>("input.t", [n], &dev).val());
    let y = cfg
        .num_classes
        .map(|_| as_usize(f.take::<B, 1>("input.y", [n], &dev).val()));
    let out_dims = [n, cfg.out_channels(), s, s];
    let out = to_vec_f32(&f.take::<B, 4>("output", out_dims, &dev).val()).unwrap();
    f.finish().unwrap();
    Io {
        x,
        t,
        y,
        out,
        out_dims,
    }
}

fn load<B: Backend>(name: &str, cfg: &AdmConfig) -> Adm<B> {
    cfg.load_file::<B>(
        fixture(&format!("adm_{name}.safetensors")),
        &Default::default(),
    )
    .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs the model on the recorded input; returns the raw output.
fn run<B: Backend>(model: &Adm<B>, io: &Io<B>) -> Tensor<B, 4> {
    let cond =
        io.y.as_ref()
            .map(|y| one_hot_labels::<B>(y, model.num_classes().unwrap(), &io.x.device()).unwrap());
    model.output(io.x.clone(), &io.t, cond).unwrap()
}

pub(crate) fn parity<B: Backend>(name: &str, cfg: &AdmConfig, backend: &str) -> f32 {
    let model = load::<B>(name, cfg);
    let io = io::<B>(name, cfg);
    let ours = run(&model, &io);
    assert_eq!(ours.dims(), io.out_dims);
    let worst = max_diff(&to_vec_f32(&ours).unwrap(), &io.out);
    eprintln!("adm {name} on {backend}: max |ours - guided-diffusion| = {worst:e}");
    assert!(worst <= TOL, "{name} on {backend}: {worst} > {TOL}");
    // The reference output is far from trivial (all zeros would pass nothing).
    let scale = io.out.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert!(scale > 1.0, "{name}: reference output max |.| = {scale}");
    worst
}

#[test]
fn tiny_matches_guided_diffusion_on_both_backends() {
    parity::<NdArray>("tiny", &AdmConfig::tiny(), "NdArray");
    parity::<Flex>("tiny", &AdmConfig::tiny(), "Flex");
}

#[test]
fn tiny_class_conditional_matches_guided_diffusion_on_both_backends() {
    parity::<NdArray>("tiny_cond", &AdmConfig::tiny_cond(), "NdArray");
    parity::<Flex>("tiny_cond", &AdmConfig::tiny_cond(), "Flex");
}

#[test]
fn denoiser_splits_eps_and_variance_and_checks_inputs() {
    type B = NdArray;
    let cfg = AdmConfig::tiny();
    let model = load::<B>("tiny", &cfg);
    let io = io::<B>("tiny", &cfg);
    assert_eq!(model.channels(), 3);
    assert!(model.learned_variance());
    assert_eq!(model.condition_dim(), None);
    let out = Denoiser::forward(&model, io.x.clone(), &io.t, None).unwrap();
    let eps = to_vec_f32(&out.eps).unwrap();
    let v = to_vec_f32(&out.variance.unwrap()).unwrap();
    // The reference output is [eps | v] along channels.
    let hw = 16 * 16;
    for s in 0..3 {
        let row = &io.out[s * 6 * hw..(s + 1) * 6 * hw];
        assert!(max_diff(&eps[s * 3 * hw..(s + 1) * 3 * hw], &row[..3 * hw]) <= TOL);
        assert!(max_diff(&v[s * 3 * hw..(s + 1) * 3 * hw], &row[3 * hw..]) <= TOL);
    }
    // The timesteps matter per sample: giving sample 0 another step changes only sample 0.
    let other = Denoiser::forward(&model, io.x.clone(), &[400, io.t[1], io.t[2]], None).unwrap();
    let other = to_vec_f32(&other.eps).unwrap();
    assert!(max_diff(&other[..3 * hw], &eps[..3 * hw]) > 1e-2);
    assert!(max_diff(&other[3 * hw..], &eps[3 * hw..]) <= 1e-6);
    // Wrong shapes and timestep counts are errors, not panics.
    let dev = Default::default();
    for bad in [[1, 4, 16, 16], [1, 3, 15, 16], [0, 3, 16, 16]] {
        let err = model.output(Tensor::<B, 4>::zeros(bad, &dev), &[1], None);
        assert!(matches!(err, Err(Error::Shape { .. })), "{bad:?}");
    }
    assert!(matches!(
        model.output(io.x.clone(), &[1, 2], None),
        Err(Error::Shape { .. })
    ));
    // The unconditional model ignores a conditioning tensor.
    let cond = Tensor::<B, 2>::ones([3, 5], &dev);
    let with = model.output(io.x.clone(), &io.t, Some(cond)).unwrap();
    assert!(max_diff(&to_vec_f32(&with).unwrap(), &io.out) <= TOL);
}

#[test]
fn class_conditional_model_needs_matching_labels() {
    type B = NdArray;
    let cfg = AdmConfig::tiny_cond();
    let model = load::<B>("tiny_cond", &cfg);
    let io = io::<B>("tiny_cond", &cfg);
    assert_eq!(model.condition_dim(), Some(3));
    assert!(!model.learned_variance());
    assert!(model.output(io.x.clone(), &io.t, None).is_err());
    let dev = Default::default();
    let wrong = Tensor::<B, 2>::zeros([3, 4], &dev);
    assert!(matches!(
        model.output(io.x.clone(), &io.t, Some(wrong)),
        Err(Error::Shape { .. })
    ));
    assert!(one_hot_labels::<B>(&[0, 3], 3, &dev).is_err());
    // Other labels give another output.
    let y = io.y.clone().unwrap();
    let swapped: Vec<usize> = y.iter().map(|v| (v + 1) % 3).collect();
    let cond = one_hot_labels::<B>(&swapped, 3, &dev).unwrap();
    let out = model.output(io.x.clone(), &io.t, Some(cond)).unwrap();
    assert!(max_diff(&to_vec_f32(&out).unwrap(), &io.out) > 1e-2);
}

/// The tiny fixture's tensors as (name, dtype, shape, bytes), edited and re-serialised.
fn edited_file(
    edit: impl Fn(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> TensorFile {
    let bytes = std::fs::read(fixture("adm_tiny.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| (name, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            let view = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    TensorFile::from_bytes(&bytes, "edited tiny").unwrap()
}

#[test]
fn loader_reports_missing_wrong_shape_and_unexpected_tensors() {
    let file = edited_file(|ts| {
        ts.retain(|t| t.0 != "middle_block.1.qkv.weight");
        for t in ts.iter_mut() {
            if t.0 == "out.2.bias" {
                t.2 = vec![2, 3];
            }
        }
        ts.push((
            "label_emb.weight".into(),
            safetensors::Dtype::F32,
            vec![1],
            vec![0; 4],
        ));
    });
    let err = AdmConfig::tiny()
        .load::<NdArray>(file, &Default::default())
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(
        err.contains("missing: middle_block.1.qkv.weight [96, 32, 1]"),
        "{err}"
    );
    assert!(
        err.contains("out.2.bias: expected [6], found [2, 3]"),
        "{err}"
    );
    assert!(err.contains("unexpected: label_emb.weight"), "{err}");
    // The untouched file loads; a perturbed weight breaks parity.
    let file = edited_file(|ts| {
        for t in ts.iter_mut() {
            if t.0 == "input_blocks.2.0.in_layers.2.weight" {
                t.3[1] ^= 0x04;
            }
        }
    });
    let cfg = AdmConfig::tiny();
    let model = cfg.load::<NdArray>(file, &Default::default()).unwrap();
    let io = io::<NdArray>("tiny", &cfg);
    let out = to_vec_f32(&run(&model, &io)).unwrap();
    assert!(max_diff(&out, &io.out) > 1e-3);
}

#[test]
fn dime_celeba128_expects_guided_diffusion_names_shapes_and_parameter_count() {
    let text = std::fs::read_to_string(fixture("adm_dime_celeba128_keys.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let reference: Vec<(String, Vec<usize>)> = doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t[0].as_str().unwrap().to_string();
            let shape = t[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (name, shape)
        })
        .collect();
    let cfg = AdmConfig::dime_celeba128();
    assert_eq!(cfg, AdmConfig::default());
    let ours = cfg
        .expected_tensors::<NdArray>(&Default::default())
        .unwrap();
    assert_eq!(ours.len(), reference.len());
    for (o, r) in ours.iter().zip(&reference) {
        assert_eq!(o, r);
    }
    let published = doc["num_params"].as_u64().unwrap() as usize;
    assert_eq!(published, 105_198_598);
    let from_shapes: usize = ours.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(from_shapes, published);
    // The real module, all 105 M parameters allocated.
    let model = cfg.init::<NdArray>(&Default::default()).unwrap();
    assert_eq!(model.num_params(), published);
}

#[test]
fn invalid_configurations_are_errors() {
    let mut cfg = AdmConfig::tiny();
    cfg.model_channels = 24;
    assert!(cfg.init::<NdArray>(&Default::default()).is_err());
    let mut cfg = AdmConfig::tiny();
    cfg.num_head_channels = Some(12);
    assert!(cfg.init::<NdArray>(&Default::default()).is_err());
    let mut cfg = AdmConfig::tiny_cond();
    cfg.num_heads = 5;
    assert!(cfg.init::<NdArray>(&Default::default()).is_err());
    // A fresh network outputs zeros (zero-initialised output convolution), like the reference.
    let model = AdmConfig::tiny()
        .init::<NdArray>(&Default::default())
        .unwrap();
    let x = Tensor::<NdArray, 4>::ones([1, 3, 16, 16], &Default::default());
    let out = to_vec_f32(&model.output(x, &[5], None).unwrap()).unwrap();
    assert!(out.iter().all(|v| *v == 0.0));
}

/// The full DiME configuration with random weights, recorded by
/// `tools/record_adm.py --full-random DIR` and converted by `tools/convert_adm.py` (420 MB, not
/// committed): `FOIL_ADM_FULL=DIR cargo test -p foil-models --test models adm:: -- --ignored`.
#[test]
#[ignore = "needs FOIL_ADM_FULL=DIR with adm_full.safetensors and adm_full_io.safetensors"]
fn full_dime_configuration_matches_guided_diffusion() {
    full_parity::<NdArray>("NdArray");
}

/// The same on flex, whose 3x3 convolutions take the Winograd path (vendor/burn-flex, tenth
/// change): its rounding through the whole 105 M-parameter network.
#[test]
#[ignore = "needs FOIL_ADM_FULL=DIR with adm_full.safetensors and adm_full_io.safetensors"]
fn full_dime_configuration_matches_guided_diffusion_on_flex() {
    full_parity::<Flex>("Flex");
}

fn full_parity<B: Backend>(backend: &str) {
    let dir = std::env::var("FOIL_ADM_FULL").expect("FOIL_ADM_FULL=DIR");
    let dev = Default::default();
    let cfg = AdmConfig::dime_celeba128();
    let start = std::time::Instant::now();
    let model = cfg
        .load_file::<B>(format!("{dir}/adm_full.safetensors"), &dev)
        .unwrap();
    eprintln!("loaded in {:.1} s", start.elapsed().as_secs_f64());
    let mut f = TensorFile::open(format!("{dir}/adm_full_io.safetensors")).unwrap();
    let x = f.take::<B, 4>("input.x", [2, 3, 128, 128], &dev).val();
    let t: Vec<usize> = to_vec_f32(&f.take::<B, 1>("input.t", [2], &dev).val())
        .unwrap()
        .iter()
        .map(|&v| v as usize)
        .collect();
    let expected = to_vec_f32(&f.take::<B, 4>("output", [2, 6, 128, 128], &dev).val()).unwrap();
    f.finish().unwrap();
    let start = std::time::Instant::now();
    let out = model.output(x, &t, None).unwrap();
    let worst = max_diff(&to_vec_f32(&out).unwrap(), &expected);
    eprintln!(
        "adm full DiME config (random weights) on {backend}: max |ours - guided-diffusion| = {worst:e} ({:.1} s forward, batch 2)",
        start.elapsed().as_secs_f64()
    );
    assert!(worst <= 1e-3, "{worst}");
}

#[test]
fn builds_and_trains_on_an_autodiff_backend() {
    use burn::backend::Autodiff;
    type A = Autodiff<NdArray>;
    let device = Default::default();
    let mut cfg = AdmConfig::tiny();
    cfg.image_size = 8;
    cfg.attention_resolutions = vec![];
    let model = cfg.init::<A>(&device).unwrap();
    let x = Tensor::<A, 4>::ones([1, 3, 8, 8], &device);
    let out = model.forward(x, &[3], None).unwrap();
    let grads = out.eps.powf_scalar(2.0).mean().backward();
    // Built directly on the autodiff backend (this used to panic: a transposed, non-leaf
    // tensor made into a parameter), every parameter is tracked and gets a gradient.
    let mut with_grad = 0;
    let mut total = 0;
    struct Count<'a> {
        grads: &'a <A as burn::tensor::backend::AutodiffBackend>::Gradients,
        with_grad: &'a mut usize,
        total: &'a mut usize,
    }
    impl burn::module::ModuleVisitor<A> for Count<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<A, D>>) {
            *self.total += 1;
            *self.with_grad += usize::from(p.val().grad(self.grads).is_some());
        }
    }
    model.visit(&mut Count {
        grads: &grads,
        with_grad: &mut with_grad,
        total: &mut total,
    });
    assert!(total > 10);
    assert_eq!(with_grad, total, "parameters with a gradient");
}

/// DiME's flags (its README's `MODEL_FLAGS` and `DIFFUSION_FLAGS`), as argparse strings or as
/// JSON values, read as the DiME preset; guided-diffusion's defaults fill the rest.
#[test]
fn guided_diffusion_flags_read_as_dime_and_refuse_what_foil_cannot_run() {
    use foil_models::adm::flags::GuidedDiffusionFlags;
    use serde_json::json;
    let dime = json!({
        "attention_resolutions": "32,16,8", "class_cond": "False", "learn_sigma": "True",
        "num_channels": "128", "num_heads": "4", "num_res_blocks": "2",
        "resblock_updown": "True", "use_fp16": "False", "use_scale_shift_norm": "True",
        "image_size": "128", "diffusion_steps": "500", "noise_schedule": "linear",
        "timestep_respacing": "200", "num_head_channels": -1, "dropout": 0.0
    });
    let flags = GuidedDiffusionFlags::from_json(&dime, "flags.json").unwrap();
    assert_eq!(flags.config, AdmConfig::dime_celeba128());
    assert_eq!(flags.diffusion_steps, Some(500));
    let typed = json!({
        "attention_resolutions": "32,16,8", "class_cond": false, "learn_sigma": true,
        "num_channels": 128, "num_heads": 4, "num_res_blocks": 2, "resblock_updown": true,
        "use_scale_shift_norm": true, "image_size": 128
    });
    let flags = GuidedDiffusionFlags::from_json(&typed, "flags.json").unwrap();
    assert_eq!(flags.config, AdmConfig::dime_celeba128());
    assert_eq!(flags.diffusion_steps, None);
    // An explicit channel_mult, class conditioning.
    let mut cond = typed.clone();
    cond["channel_mult"] = json!("1,2,2,2");
    cond["class_cond"] = json!(true);
    let flags = GuidedDiffusionFlags::from_json(&cond, "flags.json").unwrap();
    assert_eq!(flags.config.channel_mult, vec![1.0, 2.0, 2.0, 2.0]);
    assert_eq!(flags.config.num_classes, Some(1000));
    for (key, value, named) in [
        ("noise_schedule", json!("cosine"), "noise_schedule"),
        ("predict_xstart", json!("True"), "predict_xstart"),
        ("learning_rate", json!(1e-4), "learning_rate"),
        (
            "attention_resolutions",
            json!("32,7"),
            "attention_resolutions",
        ),
        ("image_size", json!(96), "channel_mult"),
        ("num_channels", json!("wide"), "num_channels"),
    ] {
        let mut bad = typed.clone();
        bad[key] = value;
        let err = GuidedDiffusionFlags::from_json(&bad, "flags.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(named) && err.contains("flags.json"),
            "{key}: {err}"
        );
    }
}
