//! pytorch-fid's InceptionV3 against pytorch-fid 0.3.0 itself (fixtures from
//! `tools/record_inception.py`): the full-width network on formula weights both sides compute
//! (no 96 MB file is committed), written as a safetensors file and loaded through the normal
//! loader; the state-dict names and shapes; a missing tensor as a typed error.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use foil_core::tensor::to_vec_f32;
use foil_core::{Error, ImageEncoder};
use foil_models::inception::{INCEPTION_FEATURES, InceptionV3Config};
use foil_models::weights::{TensorFile, Weights, write_f32_safetensors};

type B = NdArray;

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/inception_io.safetensors",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The formula of `tools/record_inception.py` for tensor `name` of `shape`.
fn formula(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let h = (name.bytes().map(u64::from).sum::<u64>() % 1000) as f64 * 0.01;
    (0..n)
        .map(|j| {
            let s = (0.7 * j as f64 + h).sin();
            let v = if name == "fc.weight" {
                s / (shape[1] as f64).sqrt()
            } else if name.ends_with("conv.weight") {
                s / ((shape[1] * shape[2] * shape[3]) as f64).sqrt()
            } else if name.ends_with("bn.weight") {
                1.0 + 0.1 * s
            } else if name.ends_with("running_var") {
                1.0 + 0.1 * s.abs()
            } else if name.ends_with("bias") || name.ends_with("running_mean") {
                0.1 * s
            } else {
                panic!("no formula for {name}")
            };
            v as f32
        })
        .collect()
}

/// The names and shapes the network asks for, in build order.
fn recorded() -> Vec<(String, Vec<usize>)> {
    let w = Weights::<B>::recorder(&Default::default());
    InceptionV3Config::fid().build(&w).unwrap();
    w.recorded()
}

/// The formula state dict (the network's tensors and the classifier `fc`), minus `skip`.
fn write_weights(path: &Path, skip: Option<&str>) {
    let mut names = recorded();
    names.push(("fc.weight".into(), vec![1008, 2048]));
    names.push(("fc.bias".into(), vec![1008]));
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .into_iter()
        .filter(|(name, _)| Some(name.as_str()) != skip)
        .map(|(name, shape)| {
            let values = formula(&name, &shape);
            (name, shape, values)
        })
        .collect();
    write_f32_safetensors(path, &tensors, &[]).unwrap();
}

/// One folder for every run: the formula file is written atomically (renamed into place), so
/// concurrent runs replace it with the same bytes and nothing piles up.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("foil-inception-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The formula weights as a safetensors file, written once per test binary.
fn weights_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = temp_dir().join("pt_inception_formula.safetensors");
        write_weights(&path, None);
        path
    })
}

/// A recorded tensor of the fixture.
fn io<const D: usize>(name: &str, shape: [usize; D]) -> Tensor<B, D> {
    let mut file = TensorFile::open(fixture()).unwrap();
    file.take::<B, D>(name, shape, &Default::default()).val()
}

/// Every element within 1e-4 relative (floored at 1e-3 of the largest magnitude).
fn assert_close(got: &Tensor<B, 2>, want: &Tensor<B, 2>, what: &str) {
    let (got, want) = (to_vec_f32(got).unwrap(), to_vec_f32(want).unwrap());
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / (w.abs() + 1e-3 * scale))
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{what}: worst relative difference {worst}");
}

#[test]
fn inception_names_and_shapes_are_pytorch_fids() {
    let bytes = std::fs::read(fixture()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let listing = meta.metadata().as_ref().unwrap()["state_dict"].clone();
    let torch: Vec<(String, Vec<usize>)> = listing
        .split(';')
        .map(|entry| entry.split_once(':').unwrap())
        .filter(|(name, _)| !name.starts_with("fc.") && !name.ends_with("num_batches_tracked"))
        .map(|(name, dims)| {
            let dims = dims.split('x').map(|d| d.parse().unwrap()).collect();
            (name.to_string(), dims)
        })
        .collect();
    let mut ours = recorded();
    ours.sort();
    let mut torch = torch;
    torch.sort();
    assert_eq!(ours.len(), torch.len());
    assert_eq!(ours, torch);
    let params: usize = ours.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert!(params > 21_000_000, "{params}");
}

#[test]
fn inception_pool3_matches_pytorch_fid_at_75_px() {
    let net = InceptionV3Config::fid()
        .with_resize_input(false)
        .load_file::<B>(weights_file(), &Default::default())
        .unwrap();
    assert_eq!(net.embedding_dim(), INCEPTION_FEATURES);
    assert!(
        net.identity().starts_with("inception:"),
        "{}",
        net.identity()
    );
    let x = io("x75", [2, 3, 75, 75]) * 2.0 - 1.0;
    let got = net.encode(x).unwrap();
    assert_eq!(got.dims(), [2, INCEPTION_FEATURES]);
    assert_close(&got, &io("pool3_75", [2, 2048]), "pool3 at 75 px");
    // Too small without resizing: a typed shape error.
    let small = Tensor::<B, 4>::zeros([1, 3, 74, 74], &Default::default());
    assert!(matches!(net.encode(small), Err(Error::Shape { .. })));
}

#[test]
fn inception_resizes_to_299_as_pytorch_fid() {
    let net = InceptionV3Config::fid()
        .load_file::<B>(weights_file(), &Default::default())
        .unwrap();
    assert!(net.resize_input());
    let x = io("x32", [1, 3, 32, 32]) * 2.0 - 1.0;
    let got = net.encode(x).unwrap();
    assert_close(
        &got,
        &io("pool3_32", [1, 2048]),
        "pool3 of 32 px resized to 299",
    );
}

#[test]
fn inception_missing_tensor_is_a_typed_error_naming_it() {
    let missing = "Mixed_6c.branch7x7dbl_3.bn.running_var";
    let path = temp_dir().join(format!("missing-{}.safetensors", std::process::id()));
    write_weights(&path, Some(missing));
    let err = InceptionV3Config::fid()
        .load_file::<B>(&path, &Default::default())
        .err()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(missing), "{text}");
    assert!(text.contains("missing"), "{text}");
    // Random weights build without a file.
    let net = InceptionV3Config::fid()
        .init::<B>(&Default::default())
        .unwrap();
    assert_eq!(net.identity(), "inception");
}
