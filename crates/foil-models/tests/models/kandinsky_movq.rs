//! MoVQ (Kandinsky 2.2's autoencoder) against diffusers 0.31.0's `VQModel` with
//! `norm_type="spatial"` (fixtures recorded by `tools/record_kandinsky.py`).

use burn::backend::{Flex, NdArray};
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::Error;
use foil_core::tensor::to_vec_f32;
use foil_models::kandinsky::MoVqConfig;
use foil_models::weights::TensorFile;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Io<B: Backend> {
    image: Tensor<B, 4>,
    latents: Tensor<B, 4>,
    latents_in: Tensor<B, 4>,
    decoded: Tensor<B, 4>,
}

/// Takes the inputs and outputs out of the fixture; the rest are the autoencoder's weights.
fn take_io<B: Backend>(file: &mut TensorFile) -> Io<B> {
    let dev = Default::default();
    Io {
        image: file.take("io.image", [2, 3, 8, 8], &dev).val(),
        latents: file.take("io.latents", [2, 4, 4, 4], &dev).val(),
        latents_in: file.take("io.latents_in", [2, 4, 4, 4], &dev).val(),
        decoded: file.take("io.decoded", [2, 3, 8, 8], &dev).val(),
    }
}

fn max_abs_diff<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    to_vec_f32(&(a - b).abs().max()).unwrap()[0]
}

fn max_abs<B: Backend>(a: Tensor<B, 4>) -> f32 {
    to_vec_f32(&a.abs().max()).unwrap()[0]
}

/// Encodes and decodes the recorded inputs on `B`; both within 1e-4 of diffusers.
pub(crate) fn parity<B: Backend>(backend: &str) {
    let dev = Default::default();
    let mut file = TensorFile::open(fixture("kandinsky_movq_tiny.safetensors")).unwrap();
    let io = take_io::<B>(&mut file);
    let movq = MoVqConfig::tiny().load_from::<B>(&mut file, &dev).unwrap();
    file.finish().unwrap();
    assert!(max_abs(io.latents.clone()) > 0.1 && max_abs(io.decoded.clone()) > 0.1);
    let enc = max_abs_diff(movq.encode(io.image).unwrap(), io.latents);
    let dec = max_abs_diff(movq.decode(io.latents_in).unwrap(), io.decoded);
    eprintln!("MoVQ tiny, {backend}: encode max diff {enc:e}, decode max diff {dec:e}");
    assert!(
        enc <= 1e-4 && dec <= 1e-4,
        "{backend}: encode {enc}, decode {dec}"
    );
}

#[test]
fn tiny_parity_ndarray() {
    parity::<NdArray<f32>>("NdArray");
}

#[test]
fn tiny_parity_flex() {
    parity::<Flex>("Flex");
}

#[test]
fn the_decoder_is_conditioned_on_the_latents() {
    type B = NdArray<f32>;
    let dev = Default::default();
    let mut file = TensorFile::open(fixture("kandinsky_movq_tiny.safetensors")).unwrap();
    let io = take_io::<B>(&mut file);
    let movq = MoVqConfig::tiny().load_from::<B>(&mut file, &dev).unwrap();
    let other = movq.decode(io.latents_in.flip([0])).unwrap();
    assert!(max_abs_diff(other, io.decoded) > 1e-2);
}

#[test]
fn missing_and_misshaped_tensors_are_reported() {
    type B = NdArray<f32>;
    let dev = Default::default();
    let mut file = TensorFile::open(fixture("kandinsky_movq_tiny.safetensors")).unwrap();
    let _ = take_io::<B>(&mut file);
    let mut config = MoVqConfig::tiny();
    config.layers_per_block = 2;
    config.num_vq_embeddings = 64;
    let err = config.load::<B>(file, &dev);
    let msg = match err {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    };
    assert!(
        msg.contains("missing") && msg.contains("encoder.down_blocks.0.resnets.1.conv1.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("wrong shape") && msg.contains("quantize.embedding.weight"),
        "{msg}"
    );
}

#[test]
fn bad_inputs_are_errors() {
    type B = NdArray<f32>;
    let dev = Default::default();
    let movq = MoVqConfig::tiny().init::<B>(&dev).unwrap();
    assert_eq!(movq.downscale(), 2);
    assert!(movq.encode(Tensor::zeros([1, 3, 7, 8], &dev)).is_err());
    assert!(movq.encode(Tensor::zeros([1, 4, 8, 8], &dev)).is_err());
    assert!(movq.decode(Tensor::zeros([1, 3, 4, 4], &dev)).is_err());
    assert_eq!(
        movq.decode(Tensor::zeros([1, 4, 3, 5], &dev))
            .unwrap()
            .dims(),
        [1, 3, 6, 10]
    );
    let mut bad = MoVqConfig::tiny();
    bad.block_out_channels = vec![16, 32];
    assert!(bad.init::<B>(&dev).is_err());
}

fn published_count(key: &str) -> usize {
    let text = std::fs::read_to_string(fixture("kandinsky_params.json")).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"{key}\"")))
        .unwrap();
    line.split(':')
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

#[test]
fn published_config_parameter_count() {
    type B = NdArray<f32>;
    let movq = MoVqConfig::kandinsky22()
        .init_zeros::<B>(&Default::default())
        .unwrap();
    let expected = published_count("movq_kandinsky22");
    assert_eq!(expected, 67_832_495);
    assert_eq!(movq.num_params(), expected);
}
