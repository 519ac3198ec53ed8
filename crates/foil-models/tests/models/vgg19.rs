//! VGG-19 feature stack and the DiME / FastDiME / MaskDiME perceptual loss against torchvision
//! (fixtures from `tools/record_vgg19.py`: torchvision's `make_layers` on configuration "E" at
//! widths / 16, random weights saved as a legacy-format `.pth`, 32 px inputs in [-1.25, 1.25]);
//! a full-width VGG-19 file in torchvision's layout; layouts; input and weight errors.

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::{Error, FeatureExtractor};
use foil_models::cnn::{Normalization, parameter_count};
use foil_models::vgg::{
    TORCH_INDICES, VGG19_MODULES, VGG19_PERCEPTUAL_LAYERS, Vgg19Config, Vgg19Perceptual, VggLayout,
    VggModule,
};
use foil_models::weights::TensorFile;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Recorded tensors of `vgg19_tiny_io.safetensors` by name, as flat values (the file's shapes
/// are checked by `take`).
struct Io {
    file: TensorFile,
}

impl Io {
    fn open() -> Self {
        Self {
            file: TensorFile::open(fixture("vgg19_tiny_io.safetensors")).unwrap(),
        }
    }

    fn get<B: Backend, const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Tensor<B, D> {
        self.file
            .take::<B, D>(name, shape, &Default::default())
            .val()
    }

    fn values(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        match *shape {
            [a] => to_vec_f32(&self.get::<NdArray, 1>(name, [a])),
            [a, b, c, d] => to_vec_f32(&self.get::<NdArray, 4>(name, [a, b, c, d])),
            _ => unreachable!(),
        }
        .unwrap()
    }
}

/// Max over elements of `|ours - reference| / max(1, |reference|)`; the reference must not be
/// trivial.
fn max_rel_diff(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    assert!(
        reference.iter().any(|v| v.abs() > 1e-2),
        "trivial reference"
    );
    ours.iter()
        .zip(reference)
        .map(|(o, e)| (o - e).abs() / e.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// `features[:layers]` shapes of the tiny configuration on 32 px inputs.
fn feature_shape(layers: usize) -> [usize; 4] {
    match layers {
        18 => [2, 16, 8, 8],
        36 => [2, 32, 2, 2],
        37 => [2, 32, 1, 1],
        _ => unreachable!(),
    }
}

fn tiny<B: Backend>(layers: usize) -> Vgg19Perceptual<B> {
    let config = Vgg19Config::tiny().with_layers(layers);
    Vgg19Perceptual::load_file(fixture("vgg19_tiny.pth"), &config, &Default::default()).unwrap()
}

pub(crate) fn features_parity<B: Backend>(backend: &str) {
    let mut io = Io::open();
    let x0 = io.get::<B, 4>("x0", [2, 3, 32, 32]);
    for layers in [18, 36, 37] {
        let model = tiny::<B>(layers);
        assert_eq!(model.network().layers(), layers);
        let shape = feature_shape(layers);
        let expected = io.values(&format!("features{layers}"), &shape);
        let ours = model.forward(x0.clone()).unwrap();
        assert_eq!(ours.dims(), shape);
        let d = max_rel_diff(&to_vec_f32(&ours).unwrap(), &expected);
        eprintln!("vgg19 tiny features[:{layers}] ({backend}): max rel diff {d:e}");
        assert!(d <= 1e-4, "features[:{layers}]: {d}");
    }
}

#[test]
fn vgg19_features_match_torchvision_on_ndarray_and_flex() {
    features_parity::<NdArray>("NdArray");
    features_parity::<Flex>("Flex");
}

#[test]
fn the_clamp_and_the_weights_are_visible_in_the_comparison() {
    type B = NdArray;
    let mut io = Io::open();
    let x0 = io.get::<B, 4>("x0", [2, 3, 32, 32]);
    let expected = io.values("features18", &feature_shape(18));
    let model = tiny::<B>(18);
    // Without the clamp (x0 reaches +-1.25) the features differ.
    let unclamped = model
        .network()
        .forward(Normalization::imagenet().apply(x0.clone()))
        .unwrap();
    let d = max_rel_diff(&to_vec_f32(&unclamped).unwrap(), &expected);
    assert!(d > 1e-2, "clamp invisible: {d}");
    // Random weights of the same configuration are far off.
    let random = Vgg19Perceptual::new(Vgg19Config::tiny().init::<B>(&Default::default()).unwrap());
    let d = max_rel_diff(
        &to_vec_f32(&random.forward(x0).unwrap()).unwrap(),
        &expected,
    );
    assert!(d > 1e-2, "weights invisible: {d}");
}

/// The guided sampler's perceptual term (`foil-guide`'s `GuidedSampler::gradients`): for each
/// feature map, `mean((a - b.detach())^2) * N`, summed, times `lambda_perc`, differentiated with
/// respect to the estimate `a` is computed from.
fn sampler_loss<B: burn::tensor::backend::AutodiffBackend>(
    extractor: &dyn FeatureExtractor<B>,
    x_est: Tensor<B, 4>,
    x: Tensor<B, 4>,
    lambda_perc: f64,
) -> Tensor<B, 1> {
    let reference = extractor.features(x).unwrap();
    let feats = extractor.features(x_est).unwrap();
    let mut loss: Option<Tensor<B, 1>> = None;
    for (a, b) in feats.into_iter().zip(reference) {
        let n = a.dims()[0] as f64;
        let per = (a - b.detach()).powf_scalar(2.0).mean() * n;
        loss = Some(match loss {
            Some(l) => l + per,
            None => per,
        });
    }
    loss.unwrap() * lambda_perc
}

#[test]
fn perceptual_loss_and_its_gradient_match_the_reference() {
    type B = Autodiff<NdArray>;
    let mut io = Io::open();
    let x1 = io.get::<B, 4>("x1", [2, 3, 32, 32]);
    let x0 = io.get::<B, 4>("x0", [2, 3, 32, 32]);
    for (layers, suffix) in [(18, ""), (37, "37")] {
        let model = tiny::<B>(layers);
        let want_loss = io.values(&format!("loss{suffix}"), &[1])[0];
        let want_grad = io.values(&format!("grad{suffix}_x0"), &[2, 3, 32, 32]);
        let max_grad = want_grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(want_loss > 1e-2 && max_grad > 1e-3, "trivial reference");

        // `Vgg19Perceptual::loss` is PerceptualLoss(layer, c = 30).
        let leaf = x0.clone().detach().require_grad();
        let loss = model.loss(leaf.clone(), x1.clone(), 30.0).unwrap();
        let grads = loss.backward();
        let got_loss = to_vec_f32(&loss).unwrap()[0];
        let got_grad = to_vec_f32(&leaf.grad(&grads).unwrap()).unwrap();
        let dl = (got_loss - want_loss).abs() / want_loss.abs().max(1.0);
        let dg = got_grad
            .iter()
            .zip(&want_grad)
            .map(|(o, e)| (o - e).abs())
            .fold(0.0f32, f32::max)
            / max_grad;
        eprintln!(
            "vgg19 tiny layer {layers}: loss {got_loss} vs {want_loss} (rel {dl:e}), \
             max grad diff / max |grad| {dg:e} (max |grad| {max_grad})"
        );
        assert!(dl <= 1e-4, "loss layer {layers}: {got_loss} vs {want_loss}");
        assert!(dg <= 1e-4, "gradient layer {layers}: {dg}");
        // Zero gradient where x0 is outside [-1, 1], as torch.clamp's.
        let x0v = to_vec_f32(&x0).unwrap();
        assert!(x0v.iter().any(|v| v.abs() > 1.0));
        for (g, v) in got_grad.iter().zip(&x0v) {
            if v.abs() > 1.0 {
                assert_eq!(*g, 0.0);
            }
        }

        // The sampler's formula through the FeatureExtractor gives the same loss and gradient
        // with lambda_perc = c.
        let leaf = x0.clone().detach().require_grad();
        let loss = sampler_loss::<B>(&model, leaf.clone(), x1.clone(), 30.0);
        let grads = loss.backward();
        let s_loss = to_vec_f32(&loss).unwrap()[0];
        let s_grad = to_vec_f32(&leaf.grad(&grads).unwrap()).unwrap();
        assert!(
            (s_loss - want_loss).abs() / want_loss.abs().max(1.0) <= 1e-4,
            "sampler loss layer {layers}: {s_loss} vs {want_loss}"
        );
        let ds = s_grad
            .iter()
            .zip(&want_grad)
            .map(|(o, e)| (o - e).abs())
            .fold(0.0f32, f32::max)
            / max_grad;
        assert!(ds <= 1e-4, "sampler gradient layer {layers}: {ds}");
    }
}

#[test]
fn layouts_give_torchvisions_module_indices() {
    let vgg16 = VggLayout::VGG16.conv_indices();
    let expected: Vec<Vec<usize>> = TORCH_INDICES.iter().map(|b| b.to_vec()).collect();
    assert_eq!(vgg16, expected);
    assert_eq!(VggLayout::VGG16.modules().len(), 31);
    let vgg19 = VggLayout::VGG19.modules();
    assert_eq!(vgg19.len(), VGG19_MODULES);
    assert_eq!(
        VggLayout::VGG19.conv_indices(),
        [
            vec![0, 2],
            vec![5, 7],
            vec![10, 12, 14, 16],
            vec![19, 21, 23, 25],
            vec![28, 30, 32, 34]
        ]
    );
    // features[:18] ends with relu3_4: module 17 is a ReLU, 18 the third max-pool.
    assert_eq!(vgg19[16], VggModule::Conv { block: 2, conv: 7 });
    assert_eq!(vgg19[17], VggModule::Relu);
    assert_eq!(vgg19[18], VggModule::MaxPool);
    assert_eq!(VGG19_PERCEPTUAL_LAYERS, 18);
    assert_eq!(Vgg19Config::default().layers, 18);
}

/// Writes float32 tensors `name -> (shape, values)` with the safetensors crate.
fn write(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), shape.clone(), data)
        })
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap();
        (name.clone(), view)
    });
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// torchvision's `vgg19().features` state dict at full width (the first `modules` modules),
/// with small pseudo-random values, plus `classifier.*` keys (not at their real sizes: they are
/// ignored).
fn full_width_state(modules: usize) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let widths = [64, 128, 256, 512, 512];
    let mut state = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05
            })
            .collect()
    };
    let mut input = 3;
    for (i, m) in VggLayout::VGG19.modules().into_iter().enumerate() {
        if let VggModule::Conv { block, .. } = m
            && i < modules
        {
            let o = widths[block];
            state.insert(
                format!("features.{i}.weight"),
                (vec![o, input, 3, 3], values(o * input * 9)),
            );
            state.insert(format!("features.{i}.bias"), (vec![o], values(o)));
            input = o;
        }
    }
    for (name, shape) in [
        ("classifier.0.weight", vec![8, 16]),
        ("classifier.0.bias", vec![8]),
        ("classifier.3.weight", vec![8, 8]),
        ("classifier.3.bias", vec![8]),
        ("classifier.6.weight", vec![10, 8]),
        ("classifier.6.bias", vec![10]),
    ] {
        let n = shape.iter().product();
        state.insert(name.to_string(), (shape, values(n)));
    }
    state
}

fn format_error(err: Error) -> String {
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn a_full_width_torchvision_file_loads_with_every_key_matched() {
    type B = NdArray;
    let dev = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg19.safetensors");
    write(&path, &full_width_state(VGG19_MODULES));

    // The whole stack: 16 convolutions, 20,024,384 parameters (torchvision's vgg19().features).
    let full = Vgg19Config::full().load_file::<B>(&path, &dev).unwrap();
    assert_eq!(parameter_count(&full), 20_024_384);
    assert_eq!(full.out_channels(), 512);
    assert_eq!(full.min_side(), 32);
    // The perceptual truncation from the same file: the later convolutions are not unexpected.
    let perc = Vgg19Perceptual::<B>::load_file(&path, &Vgg19Config::default(), &dev).unwrap();
    assert_eq!(perc.network().out_channels(), 256);
    assert_eq!(perc.network().min_side(), 4);
    let f = perc.forward(Tensor::zeros([1, 3, 16, 16], &dev)).unwrap();
    assert_eq!(f.dims(), [1, 256, 4, 4]);

    // A file holding only features[:18] (for example a saved truncated model).
    let mut state = full_width_state(18);
    let path = dir.path().join("vgg19_18.safetensors");
    write(&path, &state);
    Vgg19Config::default().load_file::<B>(&path, &dev).unwrap();
    let err = format_error(Vgg19Config::full().load_file::<B>(&path, &dev).unwrap_err());
    assert!(
        err.contains("missing: features.19.weight [512, 256, 3, 3]"),
        "{err}"
    );
    assert!(err.contains("features.34.bias [512]"), "{err}");

    // A missing key, a misshaped key and an unknown key are each named.
    state.remove("features.16.bias");
    let (_, w) = state.remove("features.2.weight").unwrap();
    state.insert(
        "features.2.weight".into(),
        (vec![64, 32, 3, 3], w[..64 * 32 * 9].to_vec()),
    );
    state.insert("extra.weight".into(), (vec![2], vec![0.0, 1.0]));
    write(&path, &state);
    let err = format_error(
        Vgg19Config::default()
            .load_file::<B>(&path, &dev)
            .unwrap_err(),
    );
    assert!(err.contains("missing: features.16.bias [256]"), "{err}");
    assert!(
        err.contains("features.2.weight: expected [64, 64, 3, 3], found [64, 32, 3, 3]"),
        "{err}"
    );
    assert!(err.contains("unexpected: extra.weight"), "{err}");
    assert!(!err.contains("classifier"), "{err}");
}

#[test]
fn bad_configs_and_inputs_are_typed_errors() {
    type B = NdArray;
    let dev = Default::default();
    for layers in [0, 38] {
        let err = Vgg19Config::tiny()
            .with_layers(layers)
            .init::<B>(&dev)
            .unwrap_err();
        assert!(matches!(err, Error::OutOfRange { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("in 1..=37") && msg.contains(&format!("found {layers}")),
            "{msg}"
        );
    }
    let err = Vgg19Config::tiny()
        .with_widths([4, 0, 16, 32, 32])
        .init::<B>(&dev)
        .unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err:?}");
    // Loading validates too, before touching the file.
    let mut f = TensorFile::open_any(fixture("vgg19_tiny.pth")).unwrap();
    assert!(
        Vgg19Config::tiny()
            .with_layers(40)
            .load::<B>(&mut f, &dev)
            .is_err()
    );

    let model = Vgg19Perceptual::new(Vgg19Config::tiny().init::<B>(&dev).unwrap());
    let shape_err = |x: Tensor<B, 4>| {
        let err = model.forward(x).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err:?}");
        err.to_string()
    };
    let msg = shape_err(Tensor::zeros([2, 1, 32, 32], &dev));
    assert!(
        msg.contains("[N >= 1, 3, H, W]") && msg.contains("found [2, 1, 32, 32]"),
        "{msg}"
    );
    let msg = shape_err(Tensor::zeros([0, 3, 32, 32], &dev));
    assert!(msg.contains("found [0, 3, 32, 32]"), "{msg}");
    // features[:18] has two max-pools: 4 px at least.
    let msg = shape_err(Tensor::zeros([1, 3, 3, 8], &dev));
    assert!(
        msg.contains("H >= 4, W >= 4") && msg.contains("found [1, 3, 3, 8]"),
        "{msg}"
    );
    assert!(model.forward(Tensor::zeros([1, 3, 4, 4], &dev)).is_ok());
    // The whole stack has five: 32 px at least.
    let full = Vgg19Config::tiny().with_layers(37).init::<B>(&dev).unwrap();
    let err = full
        .forward(Tensor::zeros([1, 3, 16, 16], &dev))
        .unwrap_err();
    assert!(err.to_string().contains("H >= 32, W >= 32"), "{err}");
    // The loss needs two batches of one shape.
    let err = model
        .loss(
            Tensor::zeros([2, 3, 16, 16], &dev),
            Tensor::zeros([1, 3, 16, 16], &dev),
            30.0,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("expected shape [2, 3, 16, 16], found [1, 3, 16, 16]"),
        "{err}"
    );
}
