//! torchvision parity of the classifiers on tiny random configurations with randomised
//! BatchNorm statistics (fixtures from `tools/record_classifiers.py`), parameter counts of the
//! published configurations, and weight-file errors.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::Classifier;
use foil_core::tensor::to_vec_f32;
use foil_models::cnn::parameter_count;
use foil_models::efficientnet::EfficientNetConfig;
use foil_models::mobilenet::MobileNetV2Config;
use foil_models::resnet::{ResNet, ResNetConfig};
use foil_models::weights::TensorFile;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The recorded input `[2, 3, 32, 32]` and torchvision's logits `[2, k]`.
fn io<B: Backend>(net: &str, k: usize) -> (Tensor<B, 4>, Vec<f32>) {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture(&format!("classifiers_{net}_io.safetensors"))).unwrap();
    let x = f.take::<B, 4>("input", [2, 3, 32, 32], &dev).val();
    let y = f.take::<B, 2>("output", [2, k], &dev).val();
    f.finish().unwrap();
    (x, to_vec_f32(&y).unwrap())
}

/// Max |ours - torchvision| over the logits; also checks the reference is not trivial.
fn max_diff<B: Backend, C: Classifier<B>>(net: &str, model: &C) -> f32 {
    let k = model.num_logits();
    let (x, expected) = io::<B>(net, k);
    let ours = to_vec_f32(&model.logits(x).unwrap()).unwrap();
    assert_eq!(ours.len(), expected.len());
    assert!(
        expected.iter().any(|v| v.abs() > 1e-2),
        "{net}: trivial reference"
    );
    ours.iter()
        .zip(&expected)
        .map(|(o, e)| (o - e).abs())
        .fold(0.0, f32::max)
}

fn weights(net: &str) -> TensorFile {
    TensorFile::open(fixture(&format!("classifiers_{net}.safetensors"))).unwrap()
}

/// The gradient of the small-input one-logit ResNet's logit sum to its recorded input (the
/// classifier of the guided samplers' parity fixtures), flattened.
pub(crate) fn small_resnet_input_gradient<A: burn::tensor::backend::AutodiffBackend>() -> Vec<f32> {
    let small = ResNetConfig::tiny().with_outputs(1).with_small_input(true);
    let model = load_resnet::<A>("resnet_small", small);
    let x = io::<A>("resnet_small", 1).0.require_grad();
    let grads = model.logits(x.clone()).unwrap().sum().backward();
    to_vec_f32(&x.grad(&grads).unwrap()).unwrap()
}

fn load_resnet<B: Backend>(net: &str, config: ResNetConfig) -> ResNet<B> {
    let mut f = weights(net);
    let model = config.load::<B>(&mut f, &Default::default()).unwrap();
    f.finish().unwrap();
    model
}

pub(crate) fn resnet_parity<B: Backend>(backend: &str) {
    let model = load_resnet::<B>("resnet", ResNetConfig::tiny());
    let d = max_diff("resnet", &model);
    eprintln!("resnet18 tiny ({backend}): max |ours - torchvision| = {d:e}");
    assert!(d <= 1e-4, "{d}");

    let small = ResNetConfig::tiny().with_outputs(1).with_small_input(true);
    let model = load_resnet::<B>("resnet_small", small);
    let d = max_diff("resnet_small", &model);
    eprintln!("resnet18 tiny small-input ({backend}): max |ours - torchvision| = {d:e}");
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn resnet_matches_torchvision_on_ndarray_and_flex() {
    resnet_parity::<NdArray>("NdArray");
    resnet_parity::<Flex>("Flex");
    // Under autodiff BatchNorm must still use the running statistics (burn's own BatchNorm
    // would switch to batch statistics there).
    resnet_parity::<Autodiff<NdArray>>("Autodiff<NdArray>");
}

/// The input gradient the guided samplers take, on flex against ndarray (the same comparison
/// runs on the GPU backends in `gpu.rs`).
#[test]
fn resnet_input_gradient_on_flex_matches_ndarray() {
    let flex = small_resnet_input_gradient::<Autodiff<Flex>>();
    let ndarray = small_resnet_input_gradient::<Autodiff<NdArray>>();
    assert!(flex.iter().any(|v| v.abs() > 1e-3), "a trivial gradient");
    let d = crate::gpu::rel_diff(&flex, &ndarray);
    assert!(d <= 1e-4, "flex's ResNet input gradient differs by {d:e}");
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    type B = NdArray;
    let mut f = weights("mobilenet");
    let model = MobileNetV2Config::tiny()
        .load::<B>(&mut f, &Default::default())
        .unwrap();
    f.finish().unwrap();
    let d = max_diff("mobilenet", &model);
    eprintln!("mobilenet_v2 tiny (NdArray): max |ours - torchvision| = {d:e}");
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn efficientnet_matches_torchvision() {
    type B = NdArray;
    let mut f = weights("efficientnet");
    let model = EfficientNetConfig::tiny()
        .load::<B>(&mut f, &Default::default())
        .unwrap();
    f.finish().unwrap();
    let d = max_diff("efficientnet", &model);
    eprintln!("efficientnet_b0 tiny (NdArray): max |ours - torchvision| = {d:e}");
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn a_perturbed_weight_breaks_resnet_parity() {
    type B = NdArray;
    let mut model = load_resnet::<B>("resnet", ResNetConfig::tiny());
    // Halving every parameter must be visible: the comparison can fail.
    model = model.map(&mut Halve);
    let d = max_diff("resnet", &model);
    assert!(d > 1e-3, "perturbation invisible: {d}");
}

/// Halves every float parameter.
struct Halve;
impl<B: Backend> burn::module::ModuleMapper<B> for Halve {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| t.mul_scalar(0.5))
    }
}

#[test]
fn published_configs_have_torchvisions_parameter_counts() {
    type B = NdArray;
    let dev = Default::default();
    // torchvision 0.29.2 weight metadata, recomputed by tools/record_classifiers.py
    // (tests/fixtures/classifiers_params.json).
    let json = std::fs::read_to_string(fixture("classifiers_params.json")).unwrap();
    let resnet = ResNetConfig::resnet18().init::<B>(&dev).unwrap();
    assert_eq!(parameter_count(&resnet), 11_689_512);
    assert!(json.contains("\"resnet18\": 11689512"));
    let mobilenet = MobileNetV2Config::default().init::<B>(&dev).unwrap();
    assert_eq!(parameter_count(&mobilenet), 3_504_872);
    assert!(json.contains("\"mobilenet_v2\": 3504872"));
    let efficientnet = EfficientNetConfig::b0().init::<B>(&dev).unwrap();
    assert_eq!(parameter_count(&efficientnet), 5_288_548);
    assert!(json.contains("\"efficientnet_b0\": 5288548"));
}

#[test]
fn wrong_weights_are_listed() {
    type B = NdArray;
    let dev = Default::default();
    // Published stem vs a file recorded with the small-input stem: conv1 is 3x3, not 7x7; and
    // fc has 1 output, not 3.
    let mut f = weights("resnet_small");
    let _ = ResNetConfig::tiny().load::<B>(&mut f, &dev).unwrap();
    let err = f.finish().unwrap_err().to_string();
    assert!(
        err.contains("conv1.weight: expected [4, 3, 7, 7], found [4, 3, 3, 3]"),
        "{err}"
    );
    assert!(
        err.contains("fc.weight: expected [3, 32], found [1, 32]"),
        "{err}"
    );
    // The right config loads cleanly; ResNet-34 asks for layer1.2, which is missing.
    let mut f = weights("resnet");
    let _ = ResNetConfig::tiny()
        .with_small_input(false)
        .load::<B>(&mut f, &dev)
        .unwrap();
    f.finish().unwrap();
    let mut f = weights("resnet");
    let cfg = ResNetConfig {
        width: 4,
        num_outputs: 3,
        ..ResNetConfig::resnet34()
    };
    let _ = cfg.load::<B>(&mut f, &dev).unwrap();
    let err = f.finish().unwrap_err().to_string();
    assert!(err.contains("missing: "), "{err}");
    assert!(err.contains("layer1.2.conv1.weight [4, 4, 3, 3]"), "{err}");
}

#[test]
fn bad_inputs_are_errors() {
    type B = NdArray;
    let dev = Default::default();
    let model = ResNetConfig::tiny().init::<B>(&dev).unwrap();
    let err = model
        .logits(Tensor::zeros([2, 1, 32, 32], &dev))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected shape [N >= 1, 3"), "{err}");
    assert!(
        ResNetConfig::tiny()
            .with_outputs(0)
            .init::<B>(&dev)
            .is_err()
    );
}

#[test]
fn batchnorm_uses_batch_statistics_only_in_training_mode() {
    use burn::module::RunningState;
    use foil_models::cnn::BatchNorm2d;
    type B = NdArray;
    let dev = Default::default();
    let (n, c, hw) = (4usize, 3usize, 5usize);
    let values: Vec<f32> = (0..n * c * hw * hw)
        .map(|i| ((i * 7919 % 101) as f32 / 50.0 - 1.0) * (1.0 + (i / (hw * hw) % c) as f32))
        .collect();
    let x = Tensor::<B, 4>::from_data(
        burn::tensor::TensorData::new(values.clone(), [n, c, hw, hw]),
        &dev,
    );
    let bn = BatchNorm2d::<B> {
        weight: Param::from_tensor(Tensor::from_floats([1.0, 2.0, -3.0], &dev)),
        bias: Param::from_tensor(Tensor::from_floats([0.5, -1.0, 0.0], &dev)),
        running_mean: RunningState::new(Tensor::zeros([c], &dev)),
        running_var: RunningState::new(Tensor::ones([c], &dev)),
        eps: 1e-5,
    };
    assert_eq!(parameter_count(&bn), 2 * c);
    assert_eq!(bn.num_params(), 4 * c, "burn counts the buffers too");
    // Per-channel statistics of the input, in f64.
    let channel = |ch: usize| -> Vec<f64> {
        (0..n)
            .flat_map(|b| (0..hw * hw).map(move |p| (b, p)))
            .map(|(b, p)| values[(b * c + ch) * hw * hw + p] as f64)
            .collect()
    };
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
        (m, var)
    };
    let (w, b) = ([1.0, 2.0, -3.0], [0.5, -1.0, 0.0]);

    // Inference: the running statistics (0, 1), not the batch's.
    let out = to_vec_f32(&bn.forward(x.clone())).unwrap();
    for (i, (&o, &v)) in out.iter().zip(&values).enumerate() {
        let ch = i / (hw * hw) % c;
        let want = v as f64 * w[ch] / (1.0f64 + 1e-5).sqrt() + b[ch];
        assert!(
            (o as f64 - want).abs() < 1e-4,
            "inference output {i}: {o} vs {want}"
        );
    }

    // Training: normalised by the batch's statistics, running averages updated as torch does.
    let out = {
        let _training = foil_core::mode::TrainingMode::enter();
        to_vec_f32(&bn.forward(x.clone())).unwrap()
    };
    let running_mean = to_vec_f32(&bn.running_mean.value_sync()).unwrap();
    let running_var = to_vec_f32(&bn.running_var.value_sync()).unwrap();
    for ch in 0..c {
        let input = channel(ch);
        let (m, var) = stats(&input);
        let output: Vec<f64> = (0..n)
            .flat_map(|bi| (0..hw * hw).map(move |p| (bi, p)))
            .map(|(bi, p)| out[(bi * c + ch) * hw * hw + p] as f64)
            .collect();
        let (om, ovar) = stats(&output);
        assert!((om - b[ch]).abs() < 1e-4, "channel {ch} mean {om}");
        let want_var = w[ch] * w[ch] * var / (var + 1e-5);
        assert!(
            (ovar - want_var).abs() < 1e-3,
            "channel {ch} var {ovar} vs {want_var}"
        );
        let count = input.len() as f64;
        assert!((running_mean[ch] as f64 - 0.1 * m).abs() < 1e-5);
        let unbiased = var * count / (count - 1.0);
        assert!((running_var[ch] as f64 - (0.9 + 0.1 * unbiased)).abs() < 1e-4);
    }
    // Back in inference the updated running statistics are used.
    let out = to_vec_f32(&bn.forward(x)).unwrap();
    let ch0 = (values[0] as f64 - running_mean[0] as f64) / (running_var[0] as f64 + 1e-5).sqrt()
        * w[0]
        + b[0];
    assert!((out[0] as f64 - ch0).abs() < 1e-4);
}
