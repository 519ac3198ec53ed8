//! Parity of DiME's CelebA classifier with the authors' own `ClassificationModel` at tiny
//! DenseNet widths (fixtures from `tools/record_dime_classifier.py`), its checkpoint layouts
//! (the authors' nested file, a `module.`-prefixed `DataParallel` state dict, a flat
//! safetensors state dict, a wrapping key) and its typed errors.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::{Classifier, ErrorKind};
use foil_models::cnn::parameter_count;
use foil_models::dime_classifier::{
    CELEBA_ATTRIBUTES, DimeClassifier, DimeClassifierConfig, celeba_attribute_index,
};
use foil_models::weights::{TensorFile, Weights};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The recorded inputs in `[-1, 1]` and the authors' outputs.
struct Io<B: Backend> {
    input: Tensor<B, 4>,
    input_odd: Tensor<B, 4>,
    logits_31: Vec<f32>,
    logits_5: Vec<f32>,
    logits_31_odd: Vec<f32>,
    all_logits: Vec<f32>,
}

fn io<B: Backend>() -> Io<B> {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture("dime_classifier_tiny_io.safetensors")).unwrap();
    let input = f.take::<B, 4>("input", [2, 3, 32, 32], &dev).val();
    let input_odd = f.take::<B, 4>("input_odd", [2, 3, 41, 35], &dev).val();
    let mut vec = |name: &str, shape: Vec<usize>| -> Vec<f32> {
        let t: Tensor<B, 2> = if shape.len() == 1 {
            f.take::<B, 1>(name, [shape[0]], &dev).val().unsqueeze()
        } else {
            f.take::<B, 2>(name, [shape[0], shape[1]], &dev).val()
        };
        to_vec_f32(&t).unwrap()
    };
    let logits_31 = vec("logits_31", vec![2]);
    let logits_5 = vec("logits_5", vec![2]);
    let logits_31_odd = vec("logits_31_odd", vec![2]);
    let all_logits = vec("all_logits", vec![2, 40]);
    f.finish().unwrap();
    Io {
        input,
        input_odd,
        logits_31,
        logits_5,
        logits_31_odd,
        all_logits,
    }
}

/// Worst absolute difference; checks the reference is not trivial.
fn diff(ours: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(ours.len(), expected.len());
    assert!(expected.iter().any(|v| v.abs() > 1e-2), "trivial reference");
    ours.iter()
        .zip(expected)
        .map(|(o, e)| (o - e).abs())
        .fold(0.0, f32::max)
}

/// The explained logit on both inputs and all 40 logits match the authors' model to 1e-4.
fn check_parity<B: Backend>(model: &DimeClassifier<B>, what: &str) -> f32 {
    let io = io::<B>();
    let (expected, expected_odd) = match model.attribute() {
        31 => (&io.logits_31, Some(&io.logits_31_odd)),
        5 => (&io.logits_5, None),
        other => panic!("no recorded logits for attribute {other}"),
    };
    assert_eq!(model.num_logits(), 1);
    let y = model.logits(io.input.clone()).unwrap();
    assert_eq!(y.dims(), [2, 1]);
    let a = diff(&to_vec_f32(&y).unwrap(), expected);
    eprintln!(
        "dime classifier ({what}), attribute {}: max abs {a:e}",
        model.attribute()
    );
    assert!(a <= 1e-4, "{what}: {a}");
    let mut worst = a;
    if let Some(expected_odd) = expected_odd {
        let y = model.logits(io.input_odd).unwrap();
        let a = diff(&to_vec_f32(&y).unwrap(), expected_odd);
        eprintln!("dime classifier ({what}), 41x35: max abs {a:e}");
        assert!(a <= 1e-4, "{what} odd: {a}");
        worst = worst.max(a);
    }
    let all = model.all_logits(io.input).unwrap();
    assert_eq!(all.dims(), [2, 40]);
    let a = diff(&to_vec_f32(&all).unwrap(), &io.all_logits);
    eprintln!("dime classifier ({what}), all 40 logits: max abs {a:e}");
    assert!(a <= 1e-4, "{what} all: {a}");
    worst.max(a)
}

fn load<B: Backend>(file: &str, attribute: usize) -> DimeClassifier<B> {
    DimeClassifierConfig::tiny(attribute)
        .load_file::<B>(fixture(file), &Default::default())
        .unwrap()
}

#[test]
fn matches_the_authors_model_from_their_checkpoint_layout() {
    // The authors' file: {'feat_extract': ..., 'classifier': ...}.
    let model = load::<NdArray>("dime_classifier_tiny.pth", 31);
    check_parity(&model, "nested .pth");
    // The attribute matters: attribute 31's logits are not attribute 5's.
    let y = to_vec_f32(&model.logits(io::<NdArray>().input).unwrap()).unwrap();
    assert!(diff(&y, &io::<NdArray>().logits_5) > 1e-2);
    check_parity(&model.with_attribute(5).unwrap(), "nested .pth");
    // DataParallel(ClassificationModel).state_dict(): every name under `module.`.
    check_parity(
        &load::<NdArray>("dime_classifier_tiny_module.pth", 5),
        "module. .pth",
    );
    // The flat state dict, converted to safetensors.
    check_parity(
        &load::<NdArray>("dime_classifier_tiny.safetensors", 31),
        "flat safetensors",
    );
    // Under autodiff the BatchNorms keep their running statistics, and the explained logit
    // has a gradient with respect to the image.
    type A = Autodiff<NdArray>;
    let model = load::<A>("dime_classifier_tiny.pth", 31);
    check_parity(&model, "Autodiff<NdArray>");
    let x = io::<A>().input.require_grad();
    let grads = model.logits(x.clone()).unwrap().sum().backward();
    let g = to_vec_f32(&x.grad(&grads).unwrap()).unwrap();
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0));
}

/// The flat safetensors fixture with every name passed through `rename` (`None`: dropped).
fn renamed(rename: impl Fn(&str) -> Option<String>) -> TensorFile {
    let bytes = std::fs::read(fixture("dime_classifier_tiny.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, view)| rename(&name).map(|n| (n, view)))
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    TensorFile::from_bytes(&bytes, "renamed").unwrap()
}

#[test]
fn the_layout_is_found_under_a_prefix() {
    type B = NdArray;
    let dev = Default::default();
    for prefix in ["module.", "model_state_dict.", "state_dict.module."] {
        let mut f = renamed(|n| Some(format!("{prefix}{n}")));
        let model = DimeClassifierConfig::tiny(31)
            .load::<B>(&mut f, &dev)
            .unwrap();
        check_parity(&model, prefix);
    }
    // Through a builder scoped by the caller: every tensor of the file is used, nothing else.
    let mut f = renamed(|n| Some(format!("outer.{n}")));
    let w = Weights::<B>::from_file_mut(&mut f, &dev);
    let model = DimeClassifierConfig::tiny(5).build(&w.pp("outer")).unwrap();
    w.finish().unwrap();
    check_parity(&model, "scoped builder");
}

#[test]
fn a_missing_head_key_is_a_typed_error_naming_it() {
    type B = NdArray;
    let dev = Default::default();
    for prefix in ["", "module."] {
        let mut f = renamed(|n| (n != "classifier.weight").then(|| format!("{prefix}{n}")));
        let err = DimeClassifierConfig::tiny(31)
            .load::<B>(&mut f, &dev)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Format);
        let text = err.to_string();
        assert!(
            text.contains(&format!("missing: {prefix}classifier.weight [40, 14]")),
            "{text}"
        );
        // Nothing else is reported: no phantom classifier, no unexpected tensor.
        assert!(
            !text.contains("feat_extract.feat_extract.classifier"),
            "{text}"
        );
        assert!(!text.contains("unexpected"), "{text}");
    }
    // A head of another width: a wrong shape naming the key.
    let err = DimeClassifierConfig::tiny(31)
        .with_num_attributes(41)
        .load_file::<B>(fixture("dime_classifier_tiny.pth"), &dev)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Format);
    assert!(
        err.to_string()
            .contains("classifier.weight: expected [41, 14], found [40, 14]"),
        "{err}"
    );
    // Another feature extractor: DenseNet's names, under the authors' prefix.
    let err = DimeClassifierConfig::tiny(31)
        .with_densenet(foil_models::densenet::DenseNetConfig::tiny().with_blocks([1, 3]))
        .load_file::<B>(fixture("dime_classifier_tiny.pth"), &dev)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("feat_extract.feat_extract.features.denseblock2.denselayer3.norm1.weight"),
        "{err}"
    );
    // A missing file is an I/O error.
    let err = DimeClassifierConfig::tiny(31)
        .load_file::<B>(fixture("no_such_dime_classifier.pth"), &dev)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[test]
fn an_attribute_out_of_range_names_the_index_and_the_count() {
    type B = NdArray;
    let dev = Default::default();
    let err = DimeClassifierConfig::tiny(41)
        .load_file::<B>(fixture("dime_classifier_tiny.pth"), &dev)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    let text = err.to_string();
    assert!(text.contains("found 41"), "{text}");
    assert!(text.contains("40 (0 to 39)"), "{text}");
    let model = load::<B>("dime_classifier_tiny.pth", 39);
    assert_eq!(model.num_attributes(), 40);
    let err = model.with_attribute(40).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    assert!(err.to_string().contains("found 40"), "{err}");
    let err = DimeClassifierConfig::tiny(0)
        .with_num_attributes(0)
        .init::<B>(&dev)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    // Too small or not RGB: shape errors.
    let model = load::<B>("dime_classifier_tiny.pth", 31);
    let err = model
        .logits(Tensor::zeros([1, 3, 4, 32], &dev))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shape);
    let err = model
        .logits(Tensor::zeros([1, 1, 32, 32], &dev))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shape);
}

#[test]
fn celeba_config_has_the_authors_names_and_attributes() {
    type B = NdArray;
    let dev = Default::default();
    assert_eq!(CELEBA_ATTRIBUTES.len(), 40);
    assert_eq!(CELEBA_ATTRIBUTES[31], "Smiling");
    assert_eq!(CELEBA_ATTRIBUTES[39], "Young");
    assert_eq!(celeba_attribute_index("smiling"), Some(31));
    assert_eq!(celeba_attribute_index("Frowning"), None);

    let w = Weights::<B>::recorder(&dev);
    let _ = DimeClassifierConfig::celeba(31).build(&w).unwrap();
    let names = w.recorded();
    let find = |n: &str| names.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
    assert_eq!(
        find("feat_extract.feat_extract.features.conv0.weight"),
        Some(vec![64, 3, 7, 7])
    );
    assert_eq!(
        find("feat_extract.feat_extract.features.norm5.running_var"),
        Some(vec![1024])
    );
    assert_eq!(find("classifier.weight"), Some(vec![40, 1024]));
    assert_eq!(find("classifier.bias"), Some(vec![40]));

    let model = DimeClassifierConfig::celeba(31)
        .build::<B>(&Weights::zeros(&dev))
        .unwrap();
    // The authors' 6,994,856 parameters (tools/record_dime_classifier.py), no more.
    assert_eq!(parameter_count(&model), 6_994_856);
    assert_eq!(model.min_input_size(), 29);
    assert_eq!(model.num_logits(), 1);
    let y = model.logits(Tensor::zeros([1, 3, 64, 64], &dev)).unwrap();
    assert_eq!(y.dims(), [1, 1]);
}

/// The same parity on a GPU backend, with and without autodiff (`--features test-wgpu` for
/// `scripts/wgpu-check.sh`, `test-cuda` for `scripts/gpu-check.sh`; CI builds neither).
#[allow(unused_macros)]
macro_rules! parity_on {
    ($test:ident, $B:ty) => {
        #[test]
        fn $test() {
            let what = stringify!($B);
            check_parity(&load::<$B>("dime_classifier_tiny.pth", 31), what);
            check_parity(&load::<Autodiff<$B>>("dime_classifier_tiny.pth", 5), what);
        }
    };
}
#[cfg(feature = "test-wgpu")]
parity_on!(matches_the_authors_model_on_wgpu, burn::backend::Wgpu);
#[cfg(feature = "test-cuda")]
parity_on!(matches_the_authors_model_on_cuda, burn::backend::Cuda);
