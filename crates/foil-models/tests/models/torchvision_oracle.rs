//! torchvision state dicts as the classifier under explanation (`foil_models::torchvision`):
//! per architecture family a tiny-width file at the published depth, written here in
//! torchvision's names with random weights and BatchNorm statistics; the oracle (widths and
//! head read from the file) must give the network's own logits on ImageNet-normalised inputs,
//! pick the pair's columns, follow DiME's one-logit convention, tolerate `module.` and
//! checkpoint wrappers, and refuse wrong files and indices with errors naming them. The
//! torchvision-recorded fixtures (`classifiers_{resnet,mobilenet}*.safetensors`) load as
//! `resnet18` and `mobilenet_v2` and reproduce torchvision's logits.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::{Classifier, ErrorKind, predicted_labels};
use foil_models::densenet::DenseNetConfig;
use foil_models::efficientnet::EfficientNetConfig;
use foil_models::mobilenet::MobileNetV2Config;
use foil_models::oracle::{LoadedOracle, OracleSource};
use foil_models::resnet::ResNetConfig;
use foil_models::torchvision::{Logits, TorchvisionArch, TorchvisionClassifier};
use foil_models::weights::{TensorFile, Weights, write_f32_safetensors};

type B = NdArray;

/// One tensor of a state dict: name, shape, values.
type Named = (String, Vec<usize>, Vec<f32>);

/// A state dict, in order.
type StateDict = Vec<Named>;

/// Logits of the tiny heads written here.
const K: usize = 5;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, empty folder `foil-models-torchvision-{tag}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-models-torchvision-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Deterministic values in `[lo, hi)` (xorshift).
struct Values(u64);

impl Values {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// A state dict for the names and shapes `recorded` (a network's, in torchvision's names):
/// convolution and linear weights uniform in `+-1 / sqrt(fan_in)` (scaled up a little so the
/// logits are not all alike), biases and BatchNorm shifts and means small, BatchNorm scales and
/// variances around one, and a `num_batches_tracked` beside each BatchNorm.
fn random_state_dict(recorded: &[(String, Vec<usize>)], seed: u64) -> StateDict {
    let mut v = Values(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::new();
    for (name, shape) in recorded {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("running_var") {
            (0..n).map(|_| v.next(0.5, 1.5)).collect()
        } else if name.ends_with("running_mean") {
            (0..n).map(|_| v.next(-0.2, 0.2)).collect()
        } else if shape.len() == 1 && name.ends_with("weight") {
            (0..n).map(|_| v.next(0.7, 1.3)).collect()
        } else if shape.len() == 1 {
            (0..n).map(|_| v.next(-0.2, 0.2)).collect()
        } else {
            let fan_in: usize = shape[1..].iter().product();
            let b = 1.7 / (fan_in as f32).sqrt();
            (0..n).map(|_| v.next(-b, b)).collect()
        };
        out.push((name.clone(), shape.clone(), values));
        if let Some(bn) = name.strip_suffix(".running_mean") {
            out.push((format!("{bn}.num_batches_tracked"), vec![], vec![7.0]));
        }
    }
    out
}

/// The names and shapes a network asks for, by building it with the recorder.
fn names<F>(build: F) -> Vec<(String, Vec<usize>)>
where
    F: FnOnce(&Weights<'_, B>),
{
    let w = Weights::<B>::recorder(&Default::default());
    build(&w);
    w.recorded()
}

fn write(path: &Path, tensors: &[Named]) {
    write_f32_safetensors(path, tensors, &[]).unwrap();
}

/// `tensors` with every name under `prefix.`.
fn prefixed(prefix: &str, tensors: &[Named]) -> StateDict {
    tensors
        .iter()
        .map(|(n, s, v)| (format!("{prefix}.{n}"), s.clone(), v.clone()))
        .collect()
}

/// Images `[2, 3, size, size]` in `[-1, 1]`.
fn images<Bk: Backend>(size: usize, seed: u64) -> Tensor<Bk, 4> {
    Bk::seed(&Default::default(), seed);
    Tensor::random(
        [2, 3, size, size],
        Distribution::Uniform(-1.0, 1.0),
        &Default::default(),
    )
}

/// torchvision's input for images in `[-1, 1]`: `((x + 1) / 2 - mean) / std`, ImageNet's
/// statistics, written out here rather than taken from foil.
fn imagenet<Bk: Backend>(x: Tensor<Bk, 4>) -> Tensor<Bk, 4> {
    let dev = x.device();
    let mean = Tensor::<Bk, 1>::from_data(TensorData::new(vec![0.485f32, 0.456, 0.406], [3]), &dev);
    let std = Tensor::<Bk, 1>::from_data(TensorData::new(vec![0.229f32, 0.224, 0.225], [3]), &dev);
    ((x + 1.0) / 2.0 - mean.reshape([1, 3, 1, 1])) / std.reshape([1, 3, 1, 1])
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The columns `cols` of row-major `[n, k]` values.
fn columns(values: &[f32], k: usize, cols: &[usize]) -> Vec<f32> {
    values
        .chunks(k)
        .flat_map(|row| cols.iter().map(|&c| row[c]))
        .collect()
}

/// One family's check: the file at `path` loads as `arch` with widths and head from the file;
/// its head's logits are `reference` (the network built from its explicit configuration, fed
/// ImageNet-normalised images) to 1e-5, and `Logits::Pair([3, 1])` reports those two columns,
/// whose arg-max is the predicted label.
fn check_family(
    arch: TorchvisionArch,
    path: &Path,
    size: usize,
    reference: &[f32],
    x: Tensor<B, 4>,
) {
    let dev = Default::default();
    let oracle = TorchvisionClassifier::<B>::load_file(arch, path, Logits::Pair([3, 1]), &dev)
        .unwrap_or_else(|e| panic!("{arch}: {e}"));
    assert_eq!(oracle.arch(), arch);
    assert_eq!(oracle.num_outputs(), K, "{arch}");
    assert_eq!(oracle.num_logits(), 2, "{arch}");
    assert!(oracle.min_input_size() <= size, "{arch}");
    let all = to_vec_f32(&oracle.all_logits(x.clone()).unwrap()).unwrap();
    let spread = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        spread > 1e-2,
        "{arch}: trivial reference logits {reference:?}"
    );
    let d = max_abs_diff(&all, reference);
    eprintln!("{arch}: max |oracle - network on ImageNet-normalised input| = {d:e}");
    assert!(d <= 1e-5, "{arch}: {d}");
    let pair = to_vec_f32(&oracle.logits(x.clone()).unwrap()).unwrap();
    assert_eq!(pair, columns(&all, K, &[3, 1]), "{arch}");
    let labels = predicted_labels(&oracle, x).unwrap();
    let expected: Vec<usize> = pair.chunks(2).map(|p| usize::from(p[1] > p[0])).collect();
    assert_eq!(labels, expected, "{arch}");
}

#[test]
fn each_family_gives_the_networks_logits_on_imagenet_normalised_inputs() {
    let dev = Default::default();
    let tmp = temp_dir("families");
    let dir = tmp.path();
    let size = 32;
    let x = images::<B>(size, 3);

    // ResNet-18 at width 4 (torchvision's stem and depth).
    let resnet = ResNetConfig {
        width: 4,
        ..ResNetConfig::resnet18()
    }
    .with_outputs(K);
    let path = dir.join("resnet18.safetensors");
    write(
        &path,
        &random_state_dict(&names(|w| drop(resnet.build(w).unwrap())), 1),
    );
    let net = resnet.load_file::<B>(&path, &dev).unwrap();
    let reference = to_vec_f32(&net.forward(imagenet(x.clone()))).unwrap();
    check_family(
        TorchvisionArch::Resnet18,
        &path,
        size,
        &reference,
        x.clone(),
    );

    // DenseNet-121's blocks at growth 4, 8 initial features, bn_size 2.
    let densenet = DenseNetConfig::densenet121()
        .with_widths(4, 8, 2)
        .with_outputs(K);
    let path = dir.join("densenet121.safetensors");
    write(
        &path,
        &random_state_dict(&names(|w| drop(densenet.build(w).unwrap())), 2),
    );
    let net = densenet.load_file::<B>(&path, &dev).unwrap();
    let reference = to_vec_f32(&net.forward(imagenet(x.clone()))).unwrap();
    check_family(
        TorchvisionArch::Densenet121,
        &path,
        size,
        &reference,
        x.clone(),
    );

    // EfficientNet-B0 at width 0.25.
    let efficientnet = EfficientNetConfig {
        width_mult: 0.25,
        ..EfficientNetConfig::b0()
    }
    .with_outputs(K);
    let path = dir.join("efficientnet_b0.safetensors");
    write(
        &path,
        &random_state_dict(&names(|w| drop(efficientnet.build(w).unwrap())), 3),
    );
    let net = efficientnet.load_file::<B>(&path, &dev).unwrap();
    let reference = to_vec_f32(&net.forward(imagenet(x.clone()))).unwrap();
    check_family(
        TorchvisionArch::EfficientnetB0,
        &path,
        size,
        &reference,
        x.clone(),
    );

    // MobileNet-V2 at width 0.35.
    let mobilenet = MobileNetV2Config {
        width_mult: 0.35,
        ..MobileNetV2Config::default()
    }
    .with_outputs(K);
    let path = dir.join("mobilenet_v2.safetensors");
    write(
        &path,
        &random_state_dict(&names(|w| drop(mobilenet.build(w).unwrap())), 4),
    );
    let net = mobilenet.load_file::<B>(&path, &dev).unwrap();
    let reference = to_vec_f32(&net.forward(imagenet(x.clone()))).unwrap();
    check_family(TorchvisionArch::MobilenetV2, &path, size, &reference, x);

    let _ = std::fs::remove_dir_all(dir);
}

/// The recorded input `[2, 3, 32, 32]` (in `[-1, 1]`) and torchvision's logits `[2, 3]`.
fn recorded_io(net: &str) -> (Tensor<B, 4>, Vec<f32>) {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture(&format!("classifiers_{net}_io.safetensors"))).unwrap();
    let x = f.take::<B, 4>("input", [2, 3, 32, 32], &dev).val();
    let y = f.take::<B, 2>("output", [2, 3], &dev).val();
    f.finish().unwrap();
    (x, to_vec_f32(&y).unwrap())
}

#[test]
fn torchvision_recorded_files_reproduce_torchvisions_logits() {
    // tools/record_classifiers.py: torchvision's resnet18 at width 4 and mobilenet_v2 at width
    // 0.1, 3 classes each, ImageNet normalisation on [-1, 1] inputs.
    for (arch, net) in [
        (TorchvisionArch::Resnet18, "resnet"),
        (TorchvisionArch::MobilenetV2, "mobilenet"),
    ] {
        let file = fixture(&format!("classifiers_{net}.safetensors"));
        let oracle = TorchvisionClassifier::<B>::load_file(
            arch,
            &file,
            Logits::Pair([2, 0]),
            &Default::default(),
        )
        .unwrap();
        let (x, expected) = recorded_io(net);
        let all = to_vec_f32(&oracle.all_logits(x.clone()).unwrap()).unwrap();
        let d = max_abs_diff(&all, &expected);
        eprintln!("{arch} fixture: max |oracle - torchvision| = {d:e}");
        assert!(d <= 1e-4, "{arch}: {d}");
        let pair = to_vec_f32(&oracle.logits(x).unwrap()).unwrap();
        assert!(max_abs_diff(&pair, &columns(&expected, 3, &[2, 0])) <= 1e-4);
    }
}

/// A tiny ResNet-18 state dict with `k` logits.
fn resnet_file(dir: &Path, name: &str, k: usize, seed: u64) -> (PathBuf, StateDict) {
    let config = ResNetConfig {
        width: 4,
        ..ResNetConfig::resnet18()
    }
    .with_outputs(k);
    let tensors = random_state_dict(&names(|w| drop(config.build(w).unwrap())), seed);
    let path = dir.join(name);
    write(&path, &tensors);
    (path, tensors)
}

#[test]
fn a_one_logit_head_follows_dimes_convention() {
    let dev = Default::default();
    let tmp = temp_dir("one");
    let dir = tmp.path();
    let config = ResNetConfig {
        width: 4,
        ..ResNetConfig::resnet18()
    }
    .with_outputs(1);
    let (path, mut tensors) = resnet_file(dir, "binary.safetensors", 1, 11);
    let x = Tensor::cat(
        vec![images::<B>(24, 5), images::<B>(24, 6), images::<B>(24, 7)],
        0,
    );
    // The head's bias moved so the logits straddle 0 (both labels occur).
    let net = config.load_file::<B>(&path, &dev).unwrap();
    let first = to_vec_f32(&net.forward(imagenet(x.clone()))).unwrap();
    let mut sorted = first.clone();
    sorted.sort_by(f32::total_cmp);
    let median = (sorted[2] + sorted[3]) / 2.0;
    for (name, _, values) in &mut tensors {
        if name == "fc.bias" {
            values[0] -= median;
        }
    }
    write(&path, &tensors);

    let source = OracleSource::torchvision(TorchvisionArch::Resnet18, &path, Logits::One);
    assert!(source.is_published());
    let oracle = LoadedOracle::<B>::load(&source, &dev).unwrap();
    assert!(oracle.spec().is_none());
    assert_eq!(oracle.min_input_size(), Some(1));
    oracle
        .check_classes(&["no".to_string(), "yes".to_string()])
        .unwrap();
    assert_eq!(oracle.num_logits(), 1);
    let net = config.load_file::<B>(&path, &dev).unwrap();
    let ours = to_vec_f32(&oracle.logits(x.clone()).unwrap()).unwrap();
    let reference = to_vec_f32(&net.forward(imagenet(x.clone()))).unwrap();
    assert!(max_abs_diff(&ours, &reference) <= 1e-5);
    // DiME's convention: label 1 when the logit is above 0.
    let labels = predicted_labels(&oracle, x).unwrap();
    let expected: Vec<usize> = reference.iter().map(|&l| usize::from(l > 0.0)).collect();
    assert!(
        expected.contains(&0) && expected.contains(&1),
        "one sign only: {reference:?}"
    );
    assert_eq!(labels, expected);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn module_prefixes_and_checkpoint_wrappers_load() {
    let dev = Default::default();
    let tmp = temp_dir("layouts");
    let dir = tmp.path();
    let (path, tensors) = resnet_file(dir, "plain.safetensors", K, 21);
    let x = images::<B>(20, 8);
    let logits = Logits::Pair([0, 4]);
    let plain =
        TorchvisionClassifier::<B>::load_file(TorchvisionArch::Resnet18, &path, logits, &dev)
            .unwrap();
    let expected = to_vec_f32(&plain.logits(x.clone()).unwrap()).unwrap();

    // DataParallel's `module.`; a training checkpoint `{"state_dict": {"module...": ..},
    // "optimizer": ..}` as the PyTorch reader flattens it (the optimizer's tensors ignored).
    let mut wrapped = prefixed("state_dict.module", &tensors);
    wrapped.push(("optimizer.state.0.exp_avg".into(), vec![2], vec![0.5, 0.5]));
    for (name, tensors) in [
        ("module.safetensors", prefixed("module", &tensors)),
        ("wrapped.safetensors", wrapped),
    ] {
        let file = dir.join(name);
        write(&file, &tensors);
        let oracle =
            TorchvisionClassifier::<B>::load_file(TorchvisionArch::Resnet18, &file, logits, &dev)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            to_vec_f32(&oracle.logits(x.clone()).unwrap()).unwrap(),
            expected,
            "{name}"
        );
    }

    // Two networks in one file: which one is meant is not guessed.
    let mut two = prefixed("teacher", &tensors);
    two.extend(prefixed("student", &tensors));
    let file = dir.join("two.safetensors");
    write(&file, &two);
    let err = TorchvisionClassifier::<B>::load_file(TorchvisionArch::Resnet18, &file, logits, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("student") && err.contains("teacher"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wrong_indices_and_wrong_files_are_errors_naming_them() {
    let dev = Default::default();
    let tmp = temp_dir("errors");
    let dir = tmp.path();
    let (path, tensors) = resnet_file(dir, "five.safetensors", K, 31);
    let shown = path.display().to_string();
    let load = |path: &Path, arch, logits| {
        TorchvisionClassifier::<B>::load_file(arch, path, logits, &dev).map(|_| ())
    };
    let r18 = TorchvisionArch::Resnet18;

    // A multi-class head without indices, and indices past its width.
    let err = load(&path, r18, Logits::One).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Format);
    let msg = err.to_string();
    assert!(
        msg.contains(&shown) && msg.contains("5 logits") && msg.contains("--logits"),
        "{msg}"
    );
    let err = load(&path, r18, Logits::Pair([1, 5])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    let msg = err.to_string();
    assert!(
        msg.contains(&shown) && msg.contains("5 logits") && msg.contains("found 5"),
        "{msg}"
    );
    let err = load(&path, r18, Logits::Pair([2, 2])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    // A one-logit head with indices.
    let (binary, _) = resnet_file(dir, "one.safetensors", 1, 32);
    let msg = load(&binary, r18, Logits::Pair([0, 1]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&binary.display().to_string())
            && msg.contains("1 logit ")
            && msg.contains("Logits::One"),
        "{msg}"
    );

    // A file of another architecture: the missing tensors are listed.
    let densenet = DenseNetConfig::tiny();
    let other = dir.join("densenet.safetensors");
    write(
        &other,
        &random_state_dict(&names(|w| drop(densenet.build(w).unwrap())), 33),
    );
    let err = load(&other, r18, Logits::Pair([0, 1])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Format);
    let msg = err.to_string();
    assert!(
        msg.contains("not a torchvision resnet18 state dict")
            && msg.contains("missing: conv1.weight")
            && msg.contains("layer4.1.bn2.running_var")
            && msg.contains("unexpected: classifier.bias")
            && msg.contains("features.conv0.weight"),
        "{msg}"
    );
    // The other way round: a ResNet as a DenseNet.
    let msg = load(&path, TorchvisionArch::Densenet121, Logits::Pair([0, 1]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not a torchvision densenet121 state dict")
            && msg.contains("features.conv0.weight")
            && msg.contains("unexpected: bn1.bias"),
        "{msg}"
    );
    // ResNet-34's depth is not ResNet-18's.
    let msg = load(&path, TorchvisionArch::Resnet34, Logits::Pair([0, 1]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing: layer1.2.conv1.weight"), "{msg}");
    // A Bottleneck ResNet (ResNet-50's layout) is named as such.
    let mut bottleneck = tensors.clone();
    bottleneck.push((
        "layer1.0.conv3.weight".into(),
        vec![16, 4, 1, 1],
        vec![0.0; 64],
    ));
    let file = dir.join("bottleneck.safetensors");
    write(&file, &bottleneck);
    let msg = load(&file, r18, Logits::Pair([0, 1]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Bottleneck") && msg.contains("resnet34"),
        "{msg}"
    );
    // A missing file.
    let err = load(&dir.join("absent.pth"), r18, Logits::One).unwrap_err();
    assert!(err.to_string().contains("absent.pth"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn names_and_logit_pairs_parse() {
    for (i, name) in TorchvisionArch::NAMES.iter().enumerate() {
        let arch: TorchvisionArch = name.parse().unwrap();
        assert_eq!(arch, TorchvisionArch::ALL[i]);
        assert_eq!(arch.name(), *name);
        assert_eq!(arch.to_string(), *name);
    }
    assert_eq!(
        "efficientnet-b0".parse::<TorchvisionArch>().unwrap(),
        TorchvisionArch::EfficientnetB0
    );
    let err = "resnet50"
        .parse::<TorchvisionArch>()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resnet50") && err.contains("densenet201"),
        "{err}"
    );
    assert_eq!("3, 7".parse::<Logits>().unwrap(), Logits::Pair([3, 7]));
    assert_eq!("one".parse::<Logits>().unwrap(), Logits::One);
    for bad in ["3", "3,3", "a,b", "1,2,3", ""] {
        assert!(bad.parse::<Logits>().is_err(), "{bad}");
    }
    assert_eq!(Logits::One.num_logits(), 1);
    assert_eq!(Logits::Pair([0, 1]).num_logits(), 2);
}

#[test]
fn the_pair_carries_gradients_under_autodiff() {
    type A = Autodiff<NdArray>;
    let dev = Default::default();
    let tmp = temp_dir("autodiff");
    let dir = tmp.path();
    let (path, _) = resnet_file(dir, "grad.safetensors", K, 41);
    let oracle = TorchvisionClassifier::<A>::load_file(
        TorchvisionArch::Resnet18,
        &path,
        Logits::Pair([1, 3]),
        &dev,
    )
    .unwrap();
    let plain = TorchvisionClassifier::<B>::load_file(
        TorchvisionArch::Resnet18,
        &path,
        Logits::Pair([1, 3]),
        &dev,
    )
    .unwrap();
    let x = images::<B>(16, 9);
    // Under autodiff the BatchNorms keep their running statistics: the same logits.
    let xa = Tensor::<A, 4>::from_inner(x.clone()).require_grad();
    let la = oracle.logits(xa.clone()).unwrap();
    let lb = to_vec_f32(&plain.logits(x).unwrap()).unwrap();
    assert!(max_abs_diff(&to_vec_f32(&la.clone().inner()).unwrap(), &lb) <= 1e-5);
    // d(l_3 - l_1)/dx exists and is not zero.
    let margin = la.clone().narrow(1, 1, 1) - la.narrow(1, 0, 1);
    let grads = margin.sum().backward();
    let g = to_vec_f32(&xa.grad(&grads).unwrap()).unwrap();
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| v.abs() > 1e-6));
    let _ = std::fs::remove_dir_all(dir);
}

/// Counts the float parameters that track gradients.
struct Tracked(usize, usize);

impl<Bk: Backend> burn::module::ModuleVisitor<Bk> for Tracked {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Bk, D>>) {
        self.1 += 1;
        self.0 += usize::from(param.is_require_grad());
    }
}

/// A classifier under explanation is loaded frozen: its input gradient flows, and no weight
/// gradient is computed (and thrown away) on each guided step.
#[test]
fn loaded_oracles_are_frozen_and_still_pass_gradients_to_the_input() {
    use burn::module::Module;
    use foil_models::torchvision::TorchvisionNet;
    type A = Autodiff<NdArray>;
    let dev = Default::default();
    let source = OracleSource::Torchvision {
        arch: TorchvisionArch::Resnet18,
        file: fixture("classifiers_resnet.safetensors").into(),
        logits: Logits::Pair([2, 0]),
    };
    let oracle = LoadedOracle::<A>::load(&source, &dev).unwrap();
    let LoadedOracle::Torchvision(net) = &oracle else {
        panic!("a torchvision oracle")
    };
    let TorchvisionNet::ResNet(resnet) = net.net() else {
        panic!("a ResNet")
    };
    let mut tracked = Tracked(0, 0);
    resnet.visit(&mut tracked);
    assert!(tracked.1 > 10, "parameters visited: {}", tracked.1);
    assert_eq!(tracked.0, 0, "parameters still tracking gradients");
    let x = images::<A>(32, 5).require_grad();
    let grads = oracle.logits(x.clone()).unwrap().sum().backward();
    let g = x.grad(&grads).expect("a gradient to the input");
    assert!(to_vec_f32(&g).unwrap().iter().any(|v| *v != 0.0));
}
