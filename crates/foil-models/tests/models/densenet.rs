//! torchvision parity of DenseNet on a tiny random configuration with randomised BatchNorm
//! statistics (fixtures from `tools/record_densenet.py`), both spellings of the dense-layer
//! names, weight-file errors, parameter counts of the published configurations and output
//! shapes over input sizes.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::{Classifier, ErrorKind};
use foil_models::cnn::parameter_count;
use foil_models::densenet::{DenseNet, DenseNetConfig};
use foil_models::weights::{TensorFile, Weights};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn weights() -> TensorFile {
    TensorFile::open(fixture("densenet_tiny.safetensors")).unwrap()
}

/// The recorded inputs in `[-1, 1]` and torchvision's outputs.
struct Io<B: Backend> {
    input: Tensor<B, 4>,
    output: Vec<f32>,
    input_odd: Tensor<B, 4>,
    output_odd: Vec<f32>,
    features: Vec<f32>,
}

fn io<B: Backend>() -> Io<B> {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture("densenet_tiny_io.safetensors")).unwrap();
    let input = f.take::<B, 4>("input", [2, 3, 32, 32], &dev).val();
    let output = f.take::<B, 2>("output", [2, 3], &dev).val();
    let input_odd = f.take::<B, 4>("input_odd", [2, 3, 41, 35], &dev).val();
    let output_odd = f.take::<B, 2>("output_odd", [2, 3], &dev).val();
    let features = f.take::<B, 2>("features", [2, 14], &dev).val();
    f.finish().unwrap();
    Io {
        input,
        output: to_vec_f32(&output).unwrap(),
        input_odd,
        output_odd: to_vec_f32(&output_odd).unwrap(),
        features: to_vec_f32(&features).unwrap(),
    }
}

/// Worst absolute and relative (to `max(|expected|, 1e-3)`) difference; checks the reference
/// is not trivial.
fn diff(ours: &[f32], expected: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), expected.len());
    assert!(expected.iter().any(|v| v.abs() > 1e-2), "trivial reference");
    ours.iter()
        .zip(expected)
        .map(|(o, e)| ((o - e).abs(), (o - e).abs() / e.abs().max(1e-3)))
        .fold((0.0, 0.0), |(a, r), (da, dr)| (a.max(da), r.max(dr)))
}

/// Logits on both recorded inputs and the pooled features match torchvision to 1e-4.
fn check_parity<B: Backend>(model: &DenseNet<B>, what: &str) -> f32 {
    let io = io::<B>();
    let logits = to_vec_f32(&model.logits(io.input.clone()).unwrap()).unwrap();
    let (a, r) = diff(&logits, &io.output);
    eprintln!("densenet tiny 32x32 ({what}): max abs {a:e}, max rel {r:e}");
    assert!(a <= 1e-4, "{what}: {a}");
    let logits = to_vec_f32(&model.logits(io.input_odd).unwrap()).unwrap();
    let (a2, r2) = diff(&logits, &io.output_odd);
    eprintln!("densenet tiny 41x35 ({what}): max abs {a2:e}, max rel {r2:e}");
    assert!(a2 <= 1e-4, "{what} odd: {a2}");
    let x = model.normalization().apply(io.input);
    let feats = to_vec_f32(&model.pooled_features(x)).unwrap();
    let (a3, r3) = diff(&feats, &io.features);
    eprintln!("densenet tiny pooled features ({what}): max abs {a3:e}, max rel {r3:e}");
    assert!(a3 <= 1e-4, "{what} features: {a3}");
    a.max(a2).max(a3)
}

fn load<B: Backend>(mut f: TensorFile) -> DenseNet<B> {
    let model = DenseNetConfig::tiny()
        .load::<B>(&mut f, &Default::default())
        .unwrap();
    f.finish().unwrap();
    model
}

#[test]
fn densenet_matches_torchvision_on_ndarray_flex_and_autodiff() {
    check_parity(&load::<NdArray>(weights()), "NdArray");
    check_parity(&load::<Flex>(weights()), "Flex");
    // Under autodiff BatchNorm must still use the running statistics.
    check_parity(&load::<Autodiff<NdArray>>(weights()), "Autodiff<NdArray>");
}

/// `features.denseblock1.denselayer1.norm1.weight` -> `...denselayer1.norm.1.weight`: the
/// spelling of torchvision's published checkpoints.
fn dotted(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let mut out = Vec::with_capacity(parts.len() + 1);
    for (i, part) in parts.iter().enumerate() {
        let in_layer = i > 0 && parts[i - 1].starts_with("denselayer");
        match (in_layer, part.split_at(part.len().saturating_sub(1))) {
            (true, (module @ ("norm" | "conv"), digit @ ("1" | "2"))) => {
                out.push(module.to_string());
                out.push(digit.to_string());
            }
            _ => out.push(part.to_string()),
        }
    }
    out.join(".")
}

#[test]
fn published_dotted_names_load() {
    type B = NdArray;
    assert_eq!(
        dotted("features.denseblock2.denselayer2.conv2.weight"),
        "features.denseblock2.denselayer2.conv.2.weight"
    );
    assert_eq!(
        dotted("features.transition1.norm.weight"),
        "features.transition1.norm.weight"
    );
    // The fixture with every dense-layer name renamed in memory.
    let bytes = std::fs::read(fixture("densenet_tiny.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut renamed = 0;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let new = dotted(&name);
            renamed += usize::from(new != name);
            (new, view)
        })
        .collect();
    // 3 layers x (2 BatchNorms x 5 tensors + 2 convolutions).
    assert_eq!(renamed, 36);
    let bytes = safetensors::serialize(views, None).unwrap();
    let f = TensorFile::from_bytes(&bytes, "dotted").unwrap();
    assert!(f.contains("features.denseblock1.denselayer1.norm.1.running_var"));
    check_parity(&load::<B>(f), "NdArray, dotted names");

    // The same weights saved by torch's legacy serialisation under the dotted names and
    // without `num_batches_tracked`, as `densenet121-a639ec97.pth` is.
    let model = DenseNetConfig::tiny()
        .load_file::<B>(fixture("densenet_tiny_legacy.pth"), &Default::default())
        .unwrap();
    check_parity(&model, "NdArray, legacy .pth");
}

#[test]
fn a_perturbed_weight_breaks_parity() {
    type B = NdArray;
    // Halving every parameter must be visible: the comparison can fail.
    let model = load::<B>(weights()).map(&mut Halve);
    let io = io::<B>();
    let logits = to_vec_f32(&model.logits(io.input).unwrap()).unwrap();
    let (a, _) = diff(&logits, &io.output);
    assert!(a > 1e-3, "perturbation invisible: {a}");
}

/// Halves every float parameter.
struct Halve;
impl<B: Backend> burn::module::ModuleMapper<B> for Halve {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| t.mul_scalar(0.5))
    }
}

#[test]
fn a_wrong_shape_is_a_typed_error_naming_the_key() {
    type B = NdArray;
    let dev = Default::default();
    // Four outputs against a three-logit file.
    let mut f = weights();
    let _ = DenseNetConfig::tiny()
        .with_outputs(4)
        .load::<B>(&mut f, &dev)
        .unwrap();
    let m = f.mismatches();
    assert!(m.missing.is_empty() && m.unexpected.is_empty(), "{m:?}");
    let names: Vec<&str> = m.wrong_shape.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["classifier.weight", "classifier.bias"]);
    assert_eq!(m.wrong_shape[0].expected, [4, 14]);
    assert_eq!(m.wrong_shape[0].found.as_deref(), Some(&[3, 14][..]));
    let err = f.finish().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Format);
    let text = err.to_string();
    assert!(
        text.contains("classifier.weight: expected [4, 14], found [3, 14]"),
        "{text}"
    );

    // Growth 5 instead of 4: the first dense layer's 3x3 convolution, and everything after it.
    let mut f = weights();
    let _ = DenseNetConfig::tiny()
        .with_widths(5, 8, 2)
        .load::<B>(&mut f, &dev)
        .unwrap();
    let text = f.finish().unwrap_err().to_string();
    assert!(
        text.contains(
            "features.denseblock1.denselayer1.conv2.weight: expected [5, 10, 3, 3], found [4, 8, 3, 3]"
        ),
        "{text}"
    );

    // One more layer in the second block: missing; one fewer: unexpected.
    let mut f = weights();
    let _ = DenseNetConfig::tiny()
        .with_blocks([1, 3])
        .load::<B>(&mut f, &dev)
        .unwrap();
    let m = f.mismatches();
    assert!(
        m.missing
            .iter()
            .any(|(n, s)| n == "features.denseblock2.denselayer3.norm1.weight" && s == &[14]),
        "{m:?}"
    );
    let mut f = weights();
    let _ = DenseNetConfig::tiny()
        .with_blocks([1, 1])
        .load::<B>(&mut f, &dev)
        .unwrap();
    let m = f.mismatches();
    assert!(
        m.unexpected
            .contains(&"features.denseblock2.denselayer2.conv2.weight".to_string()),
        "{m:?}"
    );

    // A missing file is an I/O error.
    let err = DenseNetConfig::tiny()
        .load_file::<B>(fixture("no_such_densenet.safetensors"), &dev)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[test]
fn published_configs_have_torchvisions_names_and_parameter_counts() {
    type B = NdArray;
    let dev = Default::default();
    // torchvision 0.29.2, recomputed by tools/record_densenet.py.
    let json = std::fs::read_to_string(fixture("densenet_params.json")).unwrap();
    for (config, name, count) in [
        (DenseNetConfig::densenet121(), "densenet121", 7_978_856),
        (DenseNetConfig::densenet161(), "densenet161", 28_681_000),
        (DenseNetConfig::densenet169(), "densenet169", 14_149_480),
        (DenseNetConfig::densenet201(), "densenet201", 20_013_928),
    ] {
        let net = config.build::<B>(&Weights::zeros(&dev)).unwrap();
        assert_eq!(parameter_count(&net), count, "{name}");
        assert!(json.contains(&format!("\"{name}\": {count}")), "{json}");
    }
    assert_eq!(DenseNetConfig::default(), DenseNetConfig::densenet121());
    assert_eq!(DenseNetConfig::densenet121().num_features(), 1024);
    assert_eq!(DenseNetConfig::densenet161().num_features(), 2208);
    assert_eq!(DenseNetConfig::densenet121().min_input_size(), 29);

    let w = Weights::<B>::recorder(&dev);
    let _ = DenseNetConfig::densenet121().build(&w).unwrap();
    let names = w.recorded();
    let find = |n: &str| names.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
    assert_eq!(
        names[0],
        ("features.conv0.weight".into(), vec![64, 3, 7, 7])
    );
    assert_eq!(find("features.norm0.running_var"), Some(vec![64]));
    assert_eq!(
        find("features.denseblock1.denselayer1.conv1.weight"),
        Some(vec![128, 64, 1, 1])
    );
    assert_eq!(
        find("features.denseblock3.denselayer24.conv2.weight"),
        Some(vec![32, 128, 3, 3])
    );
    assert_eq!(
        find("features.transition3.conv.weight"),
        Some(vec![512, 1024, 1, 1])
    );
    assert_eq!(find("features.norm5.bias"), Some(vec![1024]));
    assert_eq!(find("classifier.weight"), Some(vec![1000, 1024]));
    // 121 = 1 stem + 2 x 58 dense-layer + 3 transition convolutions + 1 classifier.
    let convs = names
        .iter()
        .filter(|(k, s)| k.ends_with(".weight") && s.len() == 4)
        .count();
    assert_eq!(convs + 1, 121);
}

#[test]
fn densenet121_runs_from_its_smallest_input() {
    type B = NdArray;
    let dev = Default::default();
    let model = DenseNetConfig::densenet121()
        .with_outputs(2)
        .init::<B>(&dev)
        .unwrap();
    assert_eq!(model.num_features(), 1024);
    assert_eq!(model.num_logits(), 2);
    assert_eq!(model.min_input_size(), 29);
    for size in [29, 64] {
        let y = model.logits(images::<B>(7, [1, 3, size, size])).unwrap();
        assert_eq!(y.dims(), [1, 2]);
        assert!(to_vec_f32(&y).unwrap().iter().all(|v| v.is_finite()));
    }
    assert!(model.logits(images::<B>(7, [1, 3, 28, 64])).is_err());
}

#[test]
fn bad_configs_and_inputs_are_errors() {
    type B = NdArray;
    let dev = Default::default();
    for config in [
        DenseNetConfig::tiny().with_blocks(Vec::new()),
        DenseNetConfig::tiny().with_blocks([1, 0]),
        DenseNetConfig::tiny().with_widths(0, 8, 2),
        DenseNetConfig::tiny().with_widths(4, 0, 2),
        DenseNetConfig::tiny().with_widths(4, 8, 0),
    ] {
        let err = config.init::<B>(&dev).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfRange, "{config:?}");
    }
    let model = DenseNetConfig::tiny().init::<B>(&dev).unwrap();
    let err = model
        .logits(Tensor::zeros([2, 1, 32, 32], &dev))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shape);
    assert!(err.to_string().contains("[N >= 1, 3"), "{err}");
    let err = model
        .logits(Tensor::zeros([1, 3, 4, 32], &dev))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shape);
}

/// Values in `[-1, 1)` from a seed (a small LCG, so proptest shrinks over seeds and sizes).
fn images<B: Backend>(seed: u64, dims: [usize; 4]) -> Tensor<B, 4> {
    let mut s = seed | 1;
    let values: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(values, dims), &Default::default())
}

proptest! {
    // No source-parallel failure file: a failure prints its seed.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any input of at least `min_input_size` gives `[N, K]` finite logits, each image's
    /// logits independent of the rest of the batch; one pixel less is an error.
    #[test]
    fn output_shape_over_input_sizes(
        seed in any::<u64>(), n in 1usize..4, h in 0usize..30, w in 0usize..30,
        outputs in 1usize..5, three_blocks in any::<bool>(),
    ) {
        type B = NdArray;
        let dev = Default::default();
        let blocks = if three_blocks { vec![1, 1, 2] } else { vec![1, 2] };
        let config = DenseNetConfig::tiny().with_outputs(outputs).with_blocks(blocks);
        let min = config.min_input_size();
        let model = config.init::<B>(&dev).unwrap();
        let (h, w) = (min + h, min + w);
        let x = images::<B>(seed, [n, 3, h, w]);
        let y = model.logits(x.clone()).unwrap();
        prop_assert_eq!(y.dims(), [n, outputs]);
        let all = to_vec_f32(&y).unwrap();
        prop_assert!(all.iter().all(|v| v.is_finite()));
        let first = to_vec_f32(&model.logits(x.narrow(0, 0, 1)).unwrap()).unwrap();
        for (a, b) in first.iter().zip(&all[..outputs]) {
            prop_assert!((a - b).abs() <= 1e-5, "{} vs {}", a, b);
        }
        prop_assert!(model.logits(images::<B>(seed, [n, 3, min - 1, w])).is_err());
        prop_assert!(model.logits(images::<B>(seed, [n, 3, h, min - 1])).is_err());
    }
}

#[test]
fn without_a_classifier_the_output_is_the_pooled_features() {
    type B = NdArray;
    let dev = Default::default();
    let w = Weights::<B>::recorder(&dev);
    let _ = DenseNetConfig::tiny().with_outputs(0).build(&w).unwrap();
    // torchvision's `classifier = Identity`: no `classifier.*` names at all ...
    let recorded = w.recorded();
    assert!(recorded.iter().any(|(n, _)| n == "features.norm5.weight"));
    assert!(!recorded.iter().any(|(n, _)| n.starts_with("classifier")));
    // ... so a checkpoint's classifier is left over, and nothing is missing.
    let mut f = weights();
    let _ = DenseNetConfig::tiny()
        .with_outputs(0)
        .load::<B>(&mut f, &dev);
    let m = f.mismatches();
    assert!(m.missing.is_empty() && m.wrong_shape.is_empty(), "{m:?}");
    let mut left: Vec<&str> = m.unexpected.iter().map(|n| n.as_str()).collect();
    left.sort();
    assert_eq!(left, ["classifier.bias", "classifier.weight"]);
    let net = DenseNetConfig::tiny()
        .with_outputs(0)
        .init::<B>(&dev)
        .unwrap();
    let x = foil_core::Noise::new(4)
        .normal::<B, 4>([2, 3, 32, 32], &dev)
        .tanh();
    let logits = net.logits(x.clone()).unwrap();
    assert_eq!(net.num_logits(), net.num_features());
    let pooled = net.pooled_features(net.normalization().apply(x));
    assert_eq!(
        foil_core::tensor::to_vec_f32(&logits).unwrap(),
        foil_core::tensor::to_vec_f32(&pooled).unwrap()
    );
}

/// The same parity on a GPU backend, with and without autodiff (`--features test-wgpu` for
/// `scripts/wgpu-check.sh`, `test-cuda` for `scripts/gpu-check.sh`; CI builds neither).
#[allow(unused_macros)]
macro_rules! parity_on {
    ($test:ident, $B:ty) => {
        #[test]
        fn $test() {
            let what = stringify!($B);
            check_parity(&load::<$B>(weights()), what);
            check_parity(&load::<Autodiff<$B>>(weights()), what);
        }
    };
}
#[cfg(feature = "test-wgpu")]
parity_on!(densenet_matches_torchvision_on_wgpu, burn::backend::Wgpu);
#[cfg(feature = "test-cuda")]
parity_on!(densenet_matches_torchvision_on_cuda, burn::backend::Cuda);
