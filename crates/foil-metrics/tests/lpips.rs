//! LPIPS against the `lpips` package: a tiny random configuration (always), and the published
//! AlexNet weights when `tools/convert_lpips.py` has produced them.

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::Noise;
use foil_core::tensor::to_vec_f32;
use foil_metrics::diversity::ImageDistance;
use foil_metrics::lpips::{Lpips, default_weights_path};
use foil_models::alexnet::AlexNetConfig;
use foil_models::weights::TensorFile;
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn io<B: Backend>(name: &str) -> (Tensor<B, 4>, Tensor<B, 4>, Vec<f32>) {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture(name)).unwrap();
    let d = f
        .take::<NdArray, 1>(
            "output.distance",
            [if name.contains("tiny") { 3 } else { 4 }],
            &Default::default(),
        )
        .val();
    let n = d.dims()[0];
    let a = f.take::<B, 4>("input.a", [n, 3, 64, 64], &dev).val();
    let b = f.take::<B, 4>("input.b", [n, 3, 64, 64], &dev).val();
    f.finish().unwrap();
    (a, b, to_vec_f32(&d).unwrap())
}

fn tiny_parity<B: Backend>() {
    let dev = Default::default();
    let model = Lpips::<B>::load(
        fixture("lpips_tiny.safetensors"),
        AlexNetConfig::tiny(),
        &dev,
    )
    .unwrap();
    let (a, b, expected) = io::<B>("lpips_tiny_io.safetensors");
    let ours = model.distance(a, b).unwrap();
    let worst = ours
        .iter()
        .zip(&expected)
        .map(|(o, e)| (o - *e as f64).abs())
        .fold(0.0, f64::max);
    eprintln!("max |ours - lpips| = {worst:e}");
    for (o, e) in ours.iter().zip(&expected) {
        assert!((o - *e as f64).abs() <= 1e-4, "ours {o}, lpips {e}");
    }
}

#[test]
fn tiny_lpips_matches_the_lpips_package() {
    tiny_parity::<NdArray>();
    tiny_parity::<Flex>();
}

#[test]
fn published_alexnet_lpips_matches_the_lpips_package() {
    let path = default_weights_path();
    let path = if path.is_relative() {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    } else {
        path
    };
    if !path.exists() {
        eprintln!(
            "skipped: {} not found (run tools/convert_lpips.py to convert the published weights)",
            path.display()
        );
        return;
    }
    let model =
        Lpips::<NdArray>::load(&path, AlexNetConfig::default(), &Default::default()).unwrap();
    let (a, b, expected) = io::<NdArray>("lpips_alex_values.safetensors");
    let ours = model.distance(a, b).unwrap();
    let worst = ours
        .iter()
        .zip(&expected)
        .map(|(o, e)| (o - *e as f64).abs())
        .fold(0.0, f64::max);
    eprintln!("max |ours - lpips| = {worst:e}");
    for (o, e) in ours.iter().zip(&expected) {
        assert!((o - *e as f64).abs() <= 1e-4, "ours {o}, lpips {e}");
    }
}

#[test]
fn loading_reports_every_mismatch_at_once() {
    let err = Lpips::<NdArray>::load(
        fixture("lpips_tiny.safetensors"),
        AlexNetConfig::default(),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("wrong shape")
            && err.contains("net.slice1.0.weight")
            && err.contains("lin4.model.1.weight"),
        "{err}"
    );
    let err = Lpips::<NdArray>::load(
        fixture("lpips_tiny_io.safetensors"),
        AlexNetConfig::tiny(),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("missing") && err.contains("unexpected: input.a"),
        "{err}"
    );
    assert!(
        Lpips::<NdArray>::load(
            fixture("fid.json"),
            AlexNetConfig::tiny(),
            &Default::default()
        )
        .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn lpips_is_zero_on_identical_images_and_symmetric(seed in any::<u64>()) {
        type B = NdArray;
        let dev = Default::default();
        B::seed(&dev, seed);
        let model = Lpips::<B>::random(AlexNetConfig::tiny(), &dev);
        let mut noise = Noise::new(seed);
        let a: Tensor<B, 4> = noise.normal([2, 3, 32, 32], &dev).tanh();
        let b: Tensor<B, 4> = noise.normal([2, 3, 32, 32], &dev).tanh();
        for d in model.distance(a.clone(), a.clone()).unwrap() {
            prop_assert!(d.abs() < 1e-6);
        }
        let ab = model.distance(a.clone(), b.clone()).unwrap();
        let ba = model.distance(b, a).unwrap();
        for (x, y) in ab.iter().zip(&ba) {
            prop_assert!(*x > 0.0 && (x - y).abs() < 1e-5 * (1.0 + x));
        }
    }
}
