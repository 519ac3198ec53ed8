//! The Kandinsky 2.2 decoder UNet against diffusers 0.31.0's `UNet2DConditionModel`
//! (fixtures recorded by `tools/record_kandinsky.py`).

use burn::backend::{Flex, NdArray};
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::{Denoiser, Error};
use foil_models::kandinsky::UNetConfig;
use foil_models::weights::TensorFile;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Io<B: Backend> {
    sample: Tensor<B, 4>,
    timesteps: Vec<usize>,
    image_embeds: Tensor<B, 2>,
    output: Tensor<B, 4>,
}

/// Takes the inputs and output out of the fixture; the rest are the UNet's weights.
fn take_io<B: Backend>(file: &mut TensorFile) -> Io<B> {
    let dev = Default::default();
    let t = file.take::<B, 1>("io.timesteps", [2], &dev).val();
    Io {
        sample: file.take("io.sample", [2, 4, 8, 8], &dev).val(),
        timesteps: to_vec_f32(&t)
            .unwrap()
            .iter()
            .map(|&v| v as usize)
            .collect(),
        image_embeds: file.take("io.image_embeds", [2, 24], &dev).val(),
        output: file.take("io.output", [2, 8, 8, 8], &dev).val(),
    }
}

fn max_abs_diff<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    to_vec_f32(&(a - b).abs().max()).unwrap()[0]
}

/// One step on the recorded inputs on `B`, raw and as a `Denoiser`: within 1e-4 of diffusers.
pub(crate) fn parity<B: Backend>(backend: &str) {
    let dev = Default::default();
    let mut file = TensorFile::open(fixture("kandinsky_unet_tiny.safetensors")).unwrap();
    let io = take_io::<B>(&mut file);
    let unet = UNetConfig::tiny().load_from::<B>(&mut file, &dev).unwrap();
    file.finish().unwrap();

    let steps: Vec<f32> = io.timesteps.iter().map(|&t| t as f32).collect();
    let raw = unet
        .forward_raw(io.sample.clone(), &steps, io.image_embeds.clone())
        .unwrap();
    let diff = max_abs_diff(raw, io.output.clone());
    let scale = to_vec_f32(&io.output.clone().abs().max()).unwrap()[0];
    assert!(
        scale > 0.1,
        "the reference output is trivially small ({scale})"
    );

    // As a Denoiser: eps = first 4 channels, variance = last 4.
    let out = Denoiser::forward(&unet, io.sample, &io.timesteps, Some(io.image_embeds)).unwrap();
    let eps_diff = max_abs_diff(out.eps, io.output.clone().narrow(1, 0, 4));
    let var_diff = max_abs_diff(out.variance.unwrap(), io.output.narrow(1, 4, 4));
    assert!(
        eps_diff <= 1e-4 && var_diff <= 1e-4,
        "{backend}: eps {eps_diff}, variance {var_diff}"
    );
    eprintln!("Kandinsky UNet tiny, {backend}: max |ours - diffusers| = {diff:e}");
    assert!(diff <= 1e-4, "{backend}: max abs diff {diff}");
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
fn a_perturbed_weight_breaks_parity() {
    type B = NdArray<f32>;
    let dev = Default::default();
    let bytes = std::fs::read(fixture("kandinsky_unet_tiny.safetensors")).unwrap();
    let mut file = TensorFile::from_bytes(&bytes, "fixture").unwrap();
    let io = take_io::<B>(&mut file);
    let unet = UNetConfig::tiny().load_from::<B>(&mut file, &dev).unwrap();
    // Swapping the conditioning changes the output: the image embedding is used.
    let other = io.image_embeds.clone().flip([0]);
    let steps: Vec<f32> = io.timesteps.iter().map(|&t| t as f32).collect();
    let swapped = unet.forward_raw(io.sample.clone(), &steps, other).unwrap();
    assert!(max_abs_diff(swapped, io.output.clone()) > 1e-2);
    // Other timesteps change it too.
    let later = unet
        .forward_raw(io.sample, &[500.0, 500.0], io.image_embeds)
        .unwrap();
    assert!(max_abs_diff(later, io.output) > 1e-2);
}

#[test]
fn missing_and_misshaped_tensors_are_reported() {
    type B = NdArray<f32>;
    let dev = Default::default();
    let mut file = TensorFile::open(fixture("kandinsky_unet_tiny.safetensors")).unwrap();
    let _ = take_io::<B>(&mut file);
    // A wider config: every weight of the widest level has the wrong shape.
    let mut config = UNetConfig::tiny();
    config.cross_attention_dim = 8;
    config.layers_per_block = 2;
    let err = config
        .load_from::<B>(&mut file, &dev)
        .and_then(|_| file.finish());
    let msg = match err {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    };
    assert!(
        msg.contains("missing") && msg.contains("down_blocks.0.resnets.1.conv1.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("wrong shape") && msg.contains("add_k_proj"),
        "{msg}"
    );
    // The published config on the tiny file: nothing fits.
    let mut file = TensorFile::open(fixture("kandinsky_unet_tiny.safetensors")).unwrap();
    let _ = take_io::<B>(&mut file);
    assert!(UNetConfig::default().load::<B>(file, &dev).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    type B = NdArray<f32>;
    let dev = Default::default();
    let unet = UNetConfig::tiny().init::<B>(&dev).unwrap();
    let x = Tensor::<B, 4>::zeros([1, 4, 8, 8], &dev);
    let c = Tensor::<B, 2>::zeros([1, 24], &dev);
    assert!(Denoiser::forward(&unet, x.clone(), &[1], None).is_err());
    assert!(Denoiser::forward(&unet, x.clone(), &[1, 2], Some(c.clone())).is_err());
    assert!(Denoiser::forward(&unet, x.clone(), &[1], Some(Tensor::zeros([1, 23], &dev))).is_err());
    assert!(
        Denoiser::forward(
            &unet,
            Tensor::zeros([1, 4, 6, 6], &dev),
            &[1],
            Some(c.clone())
        )
        .is_err()
    );
    assert!(Denoiser::forward(&unet, Tensor::zeros([1, 3, 8, 8], &dev), &[1], Some(c)).is_err());
    assert_eq!(Denoiser::<B>::condition_dim(&unet), Some(24));
    assert!(Denoiser::<B>::learned_variance(&unet));
    let mut bad = UNetConfig::tiny();
    bad.norm_num_groups = 5;
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
    let unet = UNetConfig::kandinsky22_decoder()
        .init_zeros::<B>(&Default::default())
        .unwrap();
    let expected = published_count("unet_kandinsky22_decoder");
    assert_eq!(expected, 1_253_057_288);
    assert_eq!(unet.num_params(), expected);
}

/// LoRA on the UNet whose base is the diffusers-parity fixture: fresh updates change nothing,
/// trained-looking updates change the output, merging keeps it, and the peft-layout tensors
/// round-trip through a safetensors file; files of the wrong rank or with missing tensors and
/// targets that match nothing are errors.
#[test]
fn lora_updates_merge_and_round_trip() {
    use foil_models::lora::LoraConfig;
    use foil_models::weights::write_f32_safetensors;
    type B = NdArray<f32>;
    let dev = Default::default();
    let mut file = TensorFile::open(fixture("kandinsky_unet_tiny.safetensors")).unwrap();
    let io = take_io::<B>(&mut file);
    let unet = UNetConfig::tiny().load_from::<B>(&mut file, &dev).unwrap();
    let run = |u: &foil_models::kandinsky::KandinskyUNet<B>| {
        Denoiser::forward(
            u,
            io.sample.clone(),
            &io.timesteps,
            Some(io.image_embeds.clone()),
        )
        .unwrap()
        .eps
    };
    let base_out = run(&unet);

    let config = LoraConfig::new(2, 4.0, "to_q|to_k|to_v|to_out|add_k_proj|add_v_proj").unwrap();
    let targets = unet.lora_targets(&config);
    assert!(
        !targets.is_empty() && targets.len().is_multiple_of(6),
        "{targets:?}"
    );
    assert!(targets.iter().any(|t| t.ends_with("attentions.0.to_out.0")));
    let fresh = unet.clone().with_lora(&config).unwrap();
    assert_eq!(fresh.lora_count(), targets.len());
    assert!(max_abs_diff(run(&fresh), base_out.clone()) == 0.0);

    // Updates with non-zero B (as after training), written in peft's layout.
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = fresh
        .lora_tensors()
        .into_iter()
        .enumerate()
        .map(|(i, (name, t))| {
            let shape = t.dims().to_vec();
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|k| (((k * 7 + i * 13) % 17) as f32 - 8.0) * 0.02)
                .collect();
            (name, shape, values)
        })
        .collect();
    assert!(
        tensors
            .iter()
            .any(|(n, s, _)| n.ends_with(".lora_A.weight") && s[0] == 2)
    );
    let dir = std::env::temp_dir().join(format!("foil-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lora.safetensors");
    write_f32_safetensors(&path, &tensors, &[("rank", "2")]).unwrap();
    let tuned = unet
        .clone()
        .load_lora(&config, TensorFile::open(&path).unwrap())
        .unwrap();
    let tuned_out = run(&tuned);
    let moved = max_abs_diff(tuned_out.clone(), base_out.clone());
    assert!(moved > 1e-3, "the updates changed nothing ({moved})");
    // The tensors read back are the ones written.
    for ((name, t), (wname, _, values)) in tuned.lora_tensors().iter().zip(&tensors) {
        assert_eq!(name, wname);
        assert_eq!(&to_vec_f32(t).unwrap(), values);
    }
    let merged = tuned.merge_lora();
    assert_eq!(merged.lora_count(), 0);
    let diff = max_abs_diff(run(&merged), tuned_out);
    eprintln!("LoRA on the tiny UNet: moved {moved:e}, merged vs adapted {diff:e}");
    assert!(diff < 1e-4, "merged differs by {diff}");

    // Another rank than the file's: every tensor is misshaped, and one error says so.
    let rank3 = LoraConfig::new(3, 4.0, config.targets.clone()).unwrap();
    let err = unet
        .clone()
        .load_lora(&rank3, TensorFile::open(&path).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("lora_A.weight"), "{err}");
    // Fewer targets than the file has: its extra tensors are reported as unexpected.
    let only_q = LoraConfig::new(2, 4.0, "to_q").unwrap();
    assert!(
        unet.clone()
            .load_lora(&only_q, TensorFile::open(&path).unwrap())
            .is_err()
    );
    // Targets that match no projection.
    let none = LoraConfig::new(2, 4.0, "conv1").unwrap();
    assert!(unet.clone().with_lora(&none).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
