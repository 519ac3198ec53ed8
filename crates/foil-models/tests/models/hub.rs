//! Publishers' folders (`foil_models::hub`): the configuration readers on configs written here
//! (the published ones round-trip to foil's presets, every refusal names its key), and the tiny
//! folders `tools/write_published_tiny.py` writes with diffusers / transformers / peft's own
//! `save_pretrained` under `tests/fixtures/published/`: every folder and weight variant loads,
//! and the UNet with the authors' peft LoRA reproduces diffusers + peft's output.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::Tensor;
use foil_core::ImageEncoder;
use foil_core::tensor::to_vec_f32;
use foil_models::clip::{ClipActivation, ClipImageProcessor, ClipVisionConfig};
use foil_models::hub::{
    self, DecoderPipelineFolder, LoraLayout, PeftLoraConfig, UNetLoraFile, load_lora_into_unet,
};
use foil_models::kandinsky::{KandinskyUNet, MoVqConfig, UNetConfig};
use foil_models::lora::LoraConfig;
use foil_models::weights::{TensorFile, write_f32_safetensors};
use foil_schedule::{SchedulerClass, Spacing, Steps, VarianceType};
use serde_json::{Value, json};

type B = NdArray;

fn published(rel: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/published"
    ))
    .join(rel)
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

/// The error of a reader that must refuse, as text.
fn refusal<T: std::fmt::Debug>(r: foil_core::Result<T>, what: &str) -> String {
    match r {
        Ok(v) => panic!("{what} was accepted: {v:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// UNet2DConditionModel

/// `UNet2DConditionModel(**record_kandinsky.UNET_FULL).save_config()` of diffusers 0.31: the
/// published `kandinsky-2-2-decoder/unet/config.json` with every key diffusers 0.31 writes.
fn unet_full() -> Value {
    serde_json::from_str(
        r#"{
            "_class_name": "UNet2DConditionModel",
            "_diffusers_version": "0.31.0",
            "act_fn": "silu",
            "addition_embed_type": "image",
            "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": null,
            "attention_head_dim": 64,
            "attention_type": "default",
            "block_out_channels": [
                384,
                768,
                1152,
                1536
            ],
            "center_input_sample": false,
            "class_embed_type": null,
            "class_embeddings_concat": false,
            "conv_in_kernel": 3,
            "conv_out_kernel": 3,
            "cross_attention_dim": 768,
            "cross_attention_norm": null,
            "down_block_types": [
                "ResnetDownsampleBlock2D",
                "SimpleCrossAttnDownBlock2D",
                "SimpleCrossAttnDownBlock2D",
                "SimpleCrossAttnDownBlock2D"
            ],
            "downsample_padding": 1,
            "dropout": 0.0,
            "dual_cross_attention": false,
            "encoder_hid_dim": 1280,
            "encoder_hid_dim_type": "image_proj",
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": 4,
            "layers_per_block": 3,
            "mid_block_only_cross_attention": null,
            "mid_block_scale_factor": 1,
            "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
            "norm_eps": 1e-05,
            "norm_num_groups": 32,
            "num_attention_heads": null,
            "num_class_embeds": null,
            "only_cross_attention": false,
            "out_channels": 8,
            "projection_class_embeddings_input_dim": null,
            "resnet_out_scale_factor": 1.0,
            "resnet_skip_time_act": false,
            "resnet_time_scale_shift": "scale_shift",
            "reverse_transformer_layers_per_block": null,
            "sample_size": 64,
            "time_cond_proj_dim": null,
            "time_embedding_act_fn": null,
            "time_embedding_dim": null,
            "time_embedding_type": "positional",
            "timestep_post_act": null,
            "transformer_layers_per_block": 1,
            "up_block_types": [
                "SimpleCrossAttnUpBlock2D",
                "SimpleCrossAttnUpBlock2D",
                "SimpleCrossAttnUpBlock2D",
                "ResnetUpsampleBlock2D"
            ],
            "upcast_attention": false,
            "use_linear_projection": false
        }"#,
    )
    .unwrap()
}

#[test]
fn the_published_unet_config_reads_as_the_decoder_preset() {
    let c = UNetConfig::from_diffusers_config(&unet_full(), "unet/config.json").unwrap();
    assert_eq!(c, UNetConfig::kandinsky22_decoder());
    // Older diffusers wrote fewer keys; the missing ones take diffusers' defaults.
    let mut old = unet_full();
    for key in [
        "attention_type",
        "reverse_transformer_layers_per_block",
        "dropout",
        "mid_block_only_cross_attention",
        "addition_time_embed_dim",
    ] {
        old = without(old, key);
    }
    let old = with(
        old,
        "_name_or_path",
        json!("/cache/kandinsky-2-2-decoder/unet"),
    );
    assert_eq!(
        UNetConfig::from_diffusers_config(&old, "x").unwrap(),
        UNetConfig::kandinsky22_decoder()
    );
    // attention_head_dim and layers_per_block as one value per level.
    let listed = with(unet_full(), "attention_head_dim", json!([64, 64, 64, 64]));
    let listed = with(listed, "layers_per_block", json!([3, 3, 3, 3]));
    assert_eq!(
        UNetConfig::from_diffusers_config(&listed, "x").unwrap(),
        UNetConfig::kandinsky22_decoder()
    );
    let listed = with(
        listed,
        "only_cross_attention",
        json!([false, false, false, false]),
    );
    let listed = with(listed, "transformer_layers_per_block", json!([1, 1, 1, 1]));
    assert!(UNetConfig::from_diffusers_config(&listed, "x").is_ok());
}

#[test]
fn unet_values_foil_cannot_honour_are_refused_naming_the_key() {
    let cases: Vec<(&str, Value)> = vec![
        ("_class_name", json!("UNet2DModel")),
        ("addition_embed_type", json!("text")),
        ("addition_embed_type", Value::Null),
        ("encoder_hid_dim_type", json!("text_proj")),
        ("mid_block_type", json!("UNetMidBlock2DCrossAttn")),
        ("act_fn", json!("gelu")),
        ("time_embedding_type", json!("fourier")),
        ("only_cross_attention", json!(true)),
        ("only_cross_attention", json!([false, true, false, false])),
        ("mid_block_only_cross_attention", json!(true)),
        ("class_embed_type", json!("timestep")),
        ("num_class_embeds", json!(10)),
        ("cross_attention_norm", json!("group_norm")),
        ("num_attention_heads", json!(8)),
        ("time_embedding_dim", json!(1024)),
        ("time_embedding_act_fn", json!("silu")),
        ("timestep_post_act", json!("silu")),
        ("time_cond_proj_dim", json!(256)),
        ("addition_time_embed_dim", json!(256)),
        ("projection_class_embeddings_input_dim", json!(256)),
        ("class_embeddings_concat", json!(true)),
        ("center_input_sample", json!(true)),
        ("resnet_skip_time_act", json!(true)),
        ("dual_cross_attention", json!(true)),
        ("upcast_attention", json!(true)),
        ("use_linear_projection", json!(true)),
        ("conv_in_kernel", json!(5)),
        ("conv_out_kernel", json!(1)),
        ("resnet_time_scale_shift", json!("spatial")),
        ("down_block_types", json!(vec!["CrossAttnDownBlock2D"; 4])),
        ("up_block_types", json!(vec!["UpBlock2D"; 4])),
        (
            "down_block_types",
            json!(vec!["ResnetDownsampleBlock2D"; 3]),
        ),
        ("attention_head_dim", json!([64, 64, 32, 64])),
        ("layers_per_block", json!([3, 3])),
        ("encoder_hid_dim", Value::Null),
        ("norm_num_groups", Value::Null),
        ("dropout", json!(0.1)),
        ("downsample_padding", json!(0)),
        ("attention_type", json!("gated")),
        ("transformer_layers_per_block", json!(2)),
        ("addition_embed_type_num_heads", json!(32)),
        ("in_channels", json!(-4)),
        ("block_out_channels", json!("wide")),
        ("a_future_key", json!(true)),
    ];
    for (key, value) in cases {
        let err = refusal(
            UNetConfig::from_diffusers_config(
                &with(unet_full(), key, value.clone()),
                "u/config.json",
            ),
            &format!("{key} = {value}"),
        );
        assert!(err.contains("u/config.json"), "{key}: {err}");
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
    // A missing key whose diffusers default foil cannot honour is refused too.
    let err = refusal(
        UNetConfig::from_diffusers_config(&without(unet_full(), "mid_block_type"), "x"),
        "mid_block_type missing",
    );
    assert!(err.contains("`mid_block_type`") && err.contains("UNetMidBlock2DCrossAttn"));
    // A buildable-looking config that does not validate names the file.
    let err = refusal(
        UNetConfig::from_diffusers_config(
            &with(unet_full(), "attention_head_dim", json!(100)),
            "x.json",
        ),
        "attention_head_dim 100",
    );
    assert!(
        err.contains("x.json") && err.contains("attention_head_dim"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// VQModel

/// `VQModel(**record_kandinsky.MOVQ_FULL).save_config()` of diffusers 0.31 (the published
/// `kandinsky-2-2-decoder/movq/config.json`).
fn movq_full() -> Value {
    json!({
        "_class_name": "VQModel",
        "_diffusers_version": "0.31.0",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 256, 512],
        "down_block_types": [
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "AttnDownEncoderBlock2D"
        ],
        "force_upcast": false,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "lookup_from_codebook": false,
        "mid_block_add_attention": true,
        "norm_num_groups": 32,
        "norm_type": "spatial",
        "num_vq_embeddings": 16384,
        "out_channels": 3,
        "sample_size": 32,
        "scaling_factor": 0.18215,
        "up_block_types": [
            "AttnUpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D"
        ],
        "vq_embed_dim": 4
    })
}

#[test]
fn the_published_movq_config_reads_as_the_preset() {
    let c = MoVqConfig::from_diffusers_config(&movq_full(), "movq/config.json").unwrap();
    assert_eq!(c, MoVqConfig::kandinsky22());
    // vq_embed_dim null: the latent channels.
    let c = MoVqConfig::from_diffusers_config(&with(movq_full(), "vq_embed_dim", Value::Null), "x")
        .unwrap();
    assert_eq!(c.vq_embed_dim, 4);
    let cases: Vec<(&str, Value)> = vec![
        ("_class_name", json!("AutoencoderKL")),
        ("norm_type", json!("group")),
        ("act_fn", json!("relu")),
        ("mid_block_add_attention", json!(false)),
        ("lookup_from_codebook", json!(true)),
        (
            "down_block_types",
            json!(["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
        ),
        (
            "up_block_types",
            json!([
                "UpDecoderBlock2D",
                "X",
                "UpDecoderBlock2D",
                "UpDecoderBlock2D"
            ]),
        ),
        ("latent_channels", json!(2.5)),
        ("shift_factor", json!(0.1)),
    ];
    for (key, value) in cases {
        let err = refusal(
            MoVqConfig::from_diffusers_config(&with(movq_full(), key, value.clone()), "m.json"),
            &format!("{key} = {value}"),
        );
        assert!(
            err.contains("m.json") && err.contains(&format!("`{key}`")),
            "{key}: {err}"
        );
    }
    // diffusers' default norm_type is "group": a config without it is another network.
    let err = refusal(
        MoVqConfig::from_diffusers_config(&without(movq_full(), "norm_type"), "m.json"),
        "no norm_type",
    );
    assert!(err.contains("`norm_type`"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// CLIP

/// `CLIPVisionConfig(... ViT-bigG/14 ...).save_pretrained()` of transformers 4.46 with the
/// published image encoder's `architectures` and `torch_dtype`
/// (`kandinsky-2-2-prior/image_encoder/config.json`).
fn clip_bigg() -> Value {
    json!({
        "architectures": ["CLIPVisionModelWithProjection"],
        "attention_dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": 1664,
        "image_size": 224,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 48,
        "patch_size": 14,
        "projection_dim": 1280,
        "torch_dtype": "float16",
        "transformers_version": "4.46.3"
    })
}

#[test]
fn clip_configs_read_as_the_presets() {
    let c = ClipVisionConfig::from_transformers_config(&clip_bigg(), "config.json").unwrap();
    assert_eq!(c, ClipVisionConfig::vit_bigg14());
    // Older transformers wrote every PretrainedConfig key and `dropout`.
    let old = with(clip_bigg(), "dropout", json!(0.0));
    let old = with(
        old,
        "_name_or_path",
        json!("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
    );
    let old = with(old, "num_beams", json!(1));
    let old = with(old, "id2label", json!({"0": "LABEL_0"}));
    let old = with(old, "pruned_heads", json!({}));
    assert_eq!(
        ClipVisionConfig::from_transformers_config(&old, "x").unwrap(),
        ClipVisionConfig::vit_bigg14()
    );
    // A full CLIPConfig: vision_config plus the top-level projection_dim.
    let mut vision = without(clip_bigg(), "projection_dim");
    vision = without(vision, "architectures");
    let full = json!({
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": 1280,
        "text_config": {"hidden_size": 1280, "model_type": "clip_text_model"},
        "torch_dtype": "float32",
        "transformers_version": "4.46.3",
        "vision_config": vision
    });
    assert_eq!(
        ClipVisionConfig::from_transformers_config(&full, "clip/config.json").unwrap(),
        ClipVisionConfig::vit_bigg14()
    );
    // OpenAI's ViT-B/32: transformers' defaults (quick_gelu, 768 wide, patch 32, projection 512).
    let b32 = json!({"model_type": "clip", "vision_config": {}, "text_config": {}});
    assert_eq!(
        ClipVisionConfig::from_transformers_config(&b32, "x").unwrap(),
        ClipVisionConfig::vit_b32()
    );
    let cases: Vec<(&str, Value)> = vec![
        ("hidden_act", json!("relu")),
        ("model_type", json!("siglip_vision_model")),
        ("attention_dropout", json!(0.1)),
        ("pruned_heads", json!({"0": [1]})),
        ("num_attention_heads", json!(7)),
        ("use_rope", json!(true)),
    ];
    for (key, value) in cases {
        let err = refusal(
            ClipVisionConfig::from_transformers_config(
                &with(clip_bigg(), key, value.clone()),
                "c.json",
            ),
            &format!("{key} = {value}"),
        );
        assert!(err.contains("c.json"), "{key}: {err}");
        // The heads that do not divide the width are a validation error naming the field.
        let named = if key == "num_attention_heads" {
            "num_heads"
        } else {
            key
        };
        assert!(err.contains(named), "{key}: {err}");
    }
    let bad = json!({"model_type": "clip", "vision_config": with(clip_bigg(), "hidden_act", json!("tanh"))});
    let err = refusal(
        ClipVisionConfig::from_transformers_config(&bad, "f.json"),
        "tanh",
    );
    assert!(
        err.contains("f.json (vision_config)") && err.contains("`hidden_act`"),
        "{err}"
    );
}

/// `CLIPImageProcessor().save_pretrained()` of transformers 4.46.
fn processor_default() -> Value {
    json!({
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": true,
        "do_convert_rgb": true,
        "do_normalize": true,
        "do_rescale": true,
        "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 224}
    })
}

#[test]
fn preprocessor_configs_read_as_clip_processors() {
    let p = ClipImageProcessor::from_preprocessor_config(&processor_default(), "p.json").unwrap();
    assert_eq!(p, ClipImageProcessor::default());
    // The older feature-extractor layout: integer sizes, no rescale keys.
    let old = json!({
        "crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224
    });
    assert_eq!(
        ClipImageProcessor::from_preprocessor_config(&old, "p.json").unwrap(),
        ClipImageProcessor::default()
    );
    let plain = with(processor_default(), "do_normalize", json!(false));
    let p = ClipImageProcessor::from_preprocessor_config(&plain, "p.json").unwrap();
    assert_eq!((p.mean, p.std), ([0.0; 3], [1.0; 3]));
    let cases: Vec<(&str, Value)> = vec![
        ("resample", json!(2)),
        ("do_resize", json!(false)),
        ("do_center_crop", json!(false)),
        ("do_rescale", json!(false)),
        ("rescale_factor", json!(1.0)),
        ("size", json!({"height": 224, "width": 224})),
        ("crop_size", json!({"height": 224, "width": 200})),
        ("crop_size", json!(256)),
        ("image_mean", json!([0.5, 0.5])),
        ("image_std", json!([0.5, 0.0, 0.5])),
        ("image_processor_type", json!("SiglipImageProcessor")),
        ("do_pad", json!(true)),
    ];
    for (key, value) in cases {
        let err = refusal(
            ClipImageProcessor::from_preprocessor_config(
                &with(processor_default(), key, value.clone()),
                "p.json",
            ),
            &format!("{key} = {value}"),
        );
        assert!(
            err.contains("p.json") && err.contains(&format!("`{key}`")),
            "{key}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// peft adapter_config.json

#[test]
fn peft_configs_read_rank_and_alpha() {
    let path = published("lora-peft/adapter_config.json");
    let c = PeftLoraConfig::from_file(&path).unwrap();
    assert_eq!((c.r, c.lora_alpha, c.use_rslora), (4, 8.0, false));
    let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let rs =
        PeftLoraConfig::from_config(&with(json.clone(), "use_rslora", json!(true)), "a").unwrap();
    assert_eq!(rs.effective_alpha(4), 16.0);
    // peft adds keys with every release: unknown ones are accepted while they switch nothing on.
    assert!(
        PeftLoraConfig::from_config(&with(json.clone(), "new_config", Value::Null), "a").is_ok()
    );
    let cases: Vec<(&str, Value)> = vec![
        ("peft_type", json!("LOHA")),
        ("use_dora", json!(true)),
        ("bias", json!("all")),
        ("fan_in_fan_out", json!(true)),
        ("lora_bias", json!(true)),
        ("rank_pattern", json!({"to_q": 8})),
        ("alpha_pattern", json!({"to_q": 8})),
        ("modules_to_save", json!(["conv_in"])),
        ("init_lora_weights", json!("pissa")),
        ("r", json!(0)),
        ("new_config", json!({"enabled": true})),
    ];
    for (key, value) in cases {
        let err = refusal(
            PeftLoraConfig::from_config(&with(json.clone(), key, value.clone()), "adapter.json"),
            &format!("{key} = {value}"),
        );
        assert!(
            err.contains("adapter.json") && err.contains(&format!("`{key}`")),
            "{key}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// LoRA files written here, against foil's own LoRA layout

fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    to_vec_f32(&(a - b).abs().max()).unwrap()[0]
}

fn max_abs<const D: usize>(a: Tensor<B, D>) -> f32 {
    to_vec_f32(&a.abs().max()).unwrap()[0]
}

/// A fresh, empty folder `foil-hub-{name}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-hub-{name}-"))
        .tempdir()
        .unwrap()
}

/// A deterministic pseudo-random vector in `[-scale, scale]`.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Random LoRA factors, in peft's layout, for every projection of the tiny UNet; `name` gives
/// each factor's name in the file from the module path and `true` for A.
fn lora_tensors(
    unet: &KandinskyUNet<B>,
    rank: usize,
    name: impl Fn(&str, bool) -> String,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let config = LoraConfig::new(rank, 1.0, "to_q|to_k|to_v|to_out|add_k_proj|add_v_proj").unwrap();
    let shaped = unet.clone().with_lora(&config).unwrap().lora_tensors();
    shaped
        .iter()
        .enumerate()
        .map(|(i, (peft_name, t))| {
            let [rows, cols] = t.dims();
            let (path, is_a) = match peft_name.strip_suffix(".lora_A.weight") {
                Some(path) => (path, true),
                None => (peft_name.strip_suffix(".lora_B.weight").unwrap(), false),
            };
            (
                name(path, is_a),
                vec![rows, cols],
                values(i as u64, rows * cols, 0.3),
            )
        })
        .collect()
}

/// The same factors as foil's own layout (`<path>.lora_A.weight`) in a [`TensorFile`].
fn foil_layout(
    name: &str,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    rename: impl Fn(&str) -> String,
) -> TensorFile {
    let tmp = temp_dir(&format!("foil-layout-{name}"));
    let dir = tmp.path();
    let path = dir.join("foil.safetensors");
    let renamed: Vec<_> = tensors
        .iter()
        .map(|(n, s, v)| (rename(n), s.clone(), v.clone()))
        .collect();
    write_f32_safetensors(&path, &renamed, &[]).unwrap();
    TensorFile::open(&path).unwrap()
}

/// The tiny UNet of the published fixture (loaded, so clones share their weights: a randomly
/// initialised network is lazy, and each clone would draw its own).
fn tiny_unet() -> KandinskyUNet<B> {
    hub::load_unet::<B>(published("kandinsky-2-2-decoder/unet"), &Default::default()).unwrap()
}

fn tiny_forward(unet: &KandinskyUNet<B>) -> Tensor<B, 4> {
    let dev = Default::default();
    let x = Tensor::<B, 1>::from_floats(values(1, 2 * 4 * 8 * 8, 1.0).as_slice(), &dev)
        .reshape([2, 4, 8, 8]);
    let e = Tensor::<B, 1>::from_floats(values(2, 2 * 24, 1.0).as_slice(), &dev).reshape([2, 24]);
    unet.forward_raw(x, &[999.0, 37.0], e).unwrap()
}

#[test]
fn a_peft_folder_merges_as_foils_own_lora() {
    let unet = tiny_unet();
    let tensors = lora_tensors(&unet, 2, |path, a| {
        format!(
            "base_model.model.{path}.lora_{}.weight",
            if a { "A" } else { "B" }
        )
    });
    let tmp = temp_dir("peft");
    let dir = tmp.path();
    write_f32_safetensors(&dir.join("adapter_model.safetensors"), &tensors, &[]).unwrap();
    let config = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 5.0,
        "target_modules": ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"]});
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();

    let adapter = UNetLoraFile::open(dir).unwrap();
    assert_eq!(adapter.layout, LoraLayout::Peft);
    assert_eq!(adapter.modules.len(), tensors.len() / 2);
    assert!(
        adapter
            .modules
            .iter()
            .all(|m| m.rank == 2 && m.alpha == 5.0)
    );

    let merged = load_lora_into_unet(unet.clone(), dir).unwrap();
    let foil = foil_layout("peft", &tensors, |n| n.replace("base_model.model.", ""));
    let lora = LoraConfig::new(2, 5.0, "to_q|to_k|to_v|to_out|add_k_proj|add_v_proj").unwrap();
    let reference = unet.clone().load_lora(&lora, foil).unwrap();
    let (ours, theirs) = (tiny_forward(&merged), tiny_forward(&reference));
    let d = max_diff(ours.clone(), theirs);
    assert!(d < 1e-4, "{d}");
    assert!(
        max_diff(ours, tiny_forward(&unet)) > 1e-3,
        "the adapter changed nothing"
    );
    // Unmerged, the updates sit beside the layers.
    assert_eq!(
        adapter.attach(unet).unwrap().lora_count(),
        tensors.len() / 2
    );
}

#[test]
fn a_diffusers_file_merges_with_alpha_equal_to_rank() {
    let unet = tiny_unet();
    // diffusers' older names: lora.down / lora.up under `unet.`, and the attention processors'.
    let tensors = lora_tensors(&unet, 3, |path, a| {
        let (attn, proj) = path.rsplit_once(".to_").map_or_else(
            || (String::new(), String::new()),
            |(attn, proj)| (attn.to_string(), format!("to_{proj}")),
        );
        if attn.starts_with("mid_block") {
            let proj = proj.replace(".0", "");
            format!(
                "{attn}.processor.{proj}_lora.{}.weight",
                if a { "down" } else { "up" }
            )
        } else {
            format!("unet.{path}.lora.{}.weight", if a { "down" } else { "up" })
        }
    });
    let tmp = temp_dir("diffusers");
    let dir = tmp.path();
    let file = dir.join("pytorch_lora_weights.safetensors");
    write_f32_safetensors(&file, &tensors, &[("format", "pt")]).unwrap();
    let adapter = UNetLoraFile::open(&file).unwrap();
    assert_eq!(adapter.layout, LoraLayout::Diffusers);
    assert!(
        adapter
            .modules
            .iter()
            .all(|m| m.rank == 3 && m.alpha == 3.0)
    );
    let merged = load_lora_into_unet(unet.clone(), dir).unwrap();

    let lora = LoraConfig::new(3, 3.0, "to_q|to_k|to_v|to_out|add_k_proj|add_v_proj").unwrap();
    let plain = lora_tensors(&unet, 3, |path, a| {
        format!("{path}.lora_{}.weight", if a { "A" } else { "B" })
    });
    let reference = unet
        .clone()
        .load_lora(&lora, foil_layout("diffusers", &plain, str::to_string))
        .unwrap();
    let d = max_diff(tiny_forward(&merged), tiny_forward(&reference));
    assert!(d < 1e-4, "{d}");
}

#[test]
fn lora_files_that_do_not_fit_are_refused() {
    let unet = tiny_unet();
    let tmp = temp_dir("bad-lora");
    let dir = tmp.path();
    let write = |tensors: &[(String, Vec<usize>, Vec<f32>)]| {
        let file = dir.join("pytorch_lora_weights.safetensors");
        write_f32_safetensors(&file, tensors, &[]).unwrap();
        file
    };
    let t = |name: &str, shape: [usize; 2]| {
        (
            name.to_string(),
            shape.to_vec(),
            vec![0.1; shape[0] * shape[1]],
        )
    };
    // A module foil's UNet does not adapt.
    let file = write(&[
        t("unet.conv_in.lora_A.weight", [2, 4]),
        t("unet.conv_in.lora_B.weight", [16, 2]),
    ]);
    let err = refusal(load_lora_into_unet(unet.clone(), &file), "conv_in");
    assert!(err.contains("conv_in"), "{err}");
    // Factors of the wrong width for the projection.
    let file = write(&[
        t("unet.mid_block.attentions.0.to_q.lora_A.weight", [2, 5]),
        t("unet.mid_block.attentions.0.to_q.lora_B.weight", [16, 2]),
    ]);
    let err = refusal(load_lora_into_unet(unet.clone(), &file), "width");
    assert!(err.contains("mid_block.attentions.0.to_q"), "{err}");
    // One factor alone, a stray tensor.
    let file = write(&[t("unet.mid_block.attentions.0.to_q.lora_A.weight", [2, 16])]);
    assert!(refusal(UNetLoraFile::open(&file), "lone A").contains("mid_block.attentions.0.to_q"));
    let file = write(&[t("text_encoder.something.alpha", [1, 1])]);
    assert!(refusal(UNetLoraFile::open(&file), "stray").contains("text_encoder.something.alpha"));
    // A rank other than the config's.
    let peft_tmp = temp_dir("bad-peft");
    let peft = peft_tmp.path();
    write_f32_safetensors(
        &peft.join("adapter_model.safetensors"),
        &[
            t(
                "base_model.model.mid_block.attentions.0.to_q.lora_A.weight",
                [2, 24],
            ),
            t(
                "base_model.model.mid_block.attentions.0.to_q.lora_B.weight",
                [24, 2],
            ),
        ],
        &[],
    )
    .unwrap();
    std::fs::write(
        peft.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 4}"#,
    )
    .unwrap();
    assert!(refusal(UNetLoraFile::open(peft), "rank").contains("r = 4"));
    // A folder with no adapter names what it looked for.
    let empty_tmp = temp_dir("no-lora");
    let empty = empty_tmp.path();
    assert!(refusal(UNetLoraFile::open(empty), "empty").contains("pytorch_lora_weights"));
}

// ---------------------------------------------------------------------------------------------
// The published folders (tools/write_published_tiny.py)

#[test]
fn the_decoder_pipeline_folder_opens_and_loads() {
    let dev = Default::default();
    let decoder = DecoderPipelineFolder::open(published("kandinsky-2-2-decoder")).unwrap();
    assert_eq!(decoder.class_name, "KandinskyV22Pipeline");
    assert_eq!(decoder.scheduler_class, SchedulerClass::Ddpm);
    let config = decoder.unet_config().unwrap();
    assert_eq!(config.block_out_channels, [8, 16, 16]);
    assert_eq!(config.encoder_hid_dim, 24);
    let unet = decoder.load_unet::<B>(&dev).unwrap();
    assert_eq!(unet.out_channels(), 8);
    let movq = decoder.load_movq::<B>(&dev).unwrap();
    assert_eq!(movq.latent_channels(), 4);
    let latents = movq
        .encode(Tensor::<B, 4>::zeros([1, 3, 16, 16], &dev))
        .unwrap();
    assert_eq!(latents.dims(), [1, 4, 8, 8]);
    let scheduler = decoder.scheduler().unwrap();
    assert_eq!(scheduler.variance_type, Some(VarianceType::LearnedRange));
    assert_eq!(scheduler.spacing, Spacing::Leading);
    assert_eq!(
        scheduler.inference_steps(100).unwrap(),
        Steps::inference(&scheduler.schedule, 100, Spacing::Leading, 1, true).unwrap()
    );
    assert_eq!(hub::load_scheduler(&decoder.scheduler).unwrap(), scheduler);
}

#[test]
fn broken_pipeline_folders_are_refused_naming_what_is_missing() {
    let tmp = temp_dir("pipeline");
    let dir = tmp.path();
    let err = refusal(DecoderPipelineFolder::open(dir), "no index");
    assert!(err.contains("no model_index.json in"), "{err}");
    let index = |v: Value| std::fs::write(dir.join("model_index.json"), v.to_string()).unwrap();
    let good = json!({
        "_class_name": "KandinskyV22Pipeline", "_diffusers_version": "0.31.0",
        "movq": ["diffusers", "VQModel"], "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"]
    });
    for (key, value) in [
        ("_class_name", json!("KandinskyV22PriorPipeline")),
        ("scheduler", json!(["diffusers", "UnCLIPScheduler"])),
        ("unet", json!(["diffusers", "UNet2DModel"])),
        ("movq", Value::Null),
        ("prior", json!(["diffusers", "PriorTransformer"])),
    ] {
        index(with(good.clone(), key, value.clone()));
        let err = refusal(
            DecoderPipelineFolder::open(dir),
            &format!("{key} = {value}"),
        );
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
    index(good);
    let err = refusal(DecoderPipelineFolder::open(dir), "no unet");
    assert!(err.contains("no unet/config.json in"), "{err}");
    let err = refusal(
        hub::load_unet::<B>(dir.join("unet"), &Default::default()),
        "no unet",
    );
    assert!(err.contains("no config.json in"), "{err}");
}

#[test]
fn every_weight_variant_loads_the_same_unet() {
    let dev = Default::default();
    let base = hub::load_unet::<B>(published("kandinsky-2-2-decoder/unet"), &dev).unwrap();
    let reference = tiny_forward_published(&base);
    for variant in ["unet-sharded", "unet-fp16", "unet-bin"] {
        let unet = hub::load_unet::<B>(published(&format!("variants/{variant}")), &dev).unwrap();
        let diff = max_diff(tiny_forward_published(&unet), reference.clone());
        assert!(diff < 1e-5, "{variant}: {diff}");
    }
}

fn tiny_forward_published(unet: &KandinskyUNet<B>) -> Tensor<B, 4> {
    let io = published_io();
    unet.forward_raw(io.x, &io.t, io.image_embeds).unwrap()
}

struct LoraIo {
    x: Tensor<B, 4>,
    t: Vec<f32>,
    image_embeds: Tensor<B, 2>,
    out: Tensor<B, 4>,
    out_base: Tensor<B, 4>,
    out_diffusers: Tensor<B, 4>,
}

fn published_io() -> LoraIo {
    let dev = Default::default();
    let mut f = TensorFile::open(published("lora_io.safetensors")).unwrap();
    let t = f.take::<B, 1>("t", [2], &dev).val();
    LoraIo {
        x: f.take("x", [2, 4, 8, 8], &dev).val(),
        t: to_vec_f32(&t).unwrap(),
        image_embeds: f.take("image_embeds", [2, 24], &dev).val(),
        out: f.take("out", [2, 8, 8, 8], &dev).val(),
        out_base: f.take("out_base", [2, 8, 8, 8], &dev).val(),
        out_diffusers: f.take("out_diffusers", [2, 8, 8, 8], &dev).val(),
    }
}

#[test]
fn the_authors_lora_reproduces_diffusers_and_peft() {
    let dev = Default::default();
    let io = published_io();
    let base = hub::load_unet::<B>(published("kandinsky-2-2-decoder/unet"), &dev).unwrap();
    let out_base = base
        .forward_raw(io.x.clone(), &io.t, io.image_embeds.clone())
        .unwrap();
    let d_base = max_diff(out_base, io.out_base.clone());
    assert!(d_base < 1e-4, "base UNet: {d_base}");
    assert!(
        max_diff(io.out.clone(), io.out_base.clone()) > 1e-3,
        "the adapter changes the output"
    );

    // peft's folder (lora_alpha 8, r 4: scale 2), as the authors' eval.py loads it.
    let peft = load_lora_into_unet(base.clone(), published("lora-peft")).unwrap();
    let out = peft
        .forward_raw(io.x.clone(), &io.t, io.image_embeds.clone())
        .unwrap();
    let d = max_diff(out, io.out.clone());
    assert!(
        d < 1e-4,
        "peft LoRA: {d} (output scale {})",
        max_abs(io.out.clone())
    );

    // The same adapter in diffusers' file: diffusers 0.31 loads it with alpha = r (scale 1).
    let adapter = UNetLoraFile::open(published("lora-diffusers")).unwrap();
    assert_eq!(adapter.layout, LoraLayout::Diffusers);
    assert!(
        adapter
            .modules
            .iter()
            .all(|m| m.rank == 4 && m.alpha == 4.0)
    );
    let diffusers = adapter.merge_into(base).unwrap();
    let out = diffusers
        .forward_raw(io.x.clone(), &io.t, io.image_embeds.clone())
        .unwrap();
    let d = max_diff(out, io.out_diffusers);
    assert!(d < 1e-4, "diffusers LoRA: {d}");
}

#[test]
fn the_prior_image_encoder_loads_with_its_processor() {
    let dev = Default::default();
    let clip =
        hub::load_clip_vision::<B>(published("kandinsky-2-2-prior/image_encoder"), &dev).unwrap();
    assert_eq!(clip.config().activation, ClipActivation::Gelu);
    assert_eq!(clip.config().projection_dim, 24);
    // The processor comes from the sibling image_processor/ folder (16 px).
    assert_eq!(clip.processor(), &ClipImageProcessor::for_size(16));
    let images = Tensor::<B, 4>::zeros([2, 3, 20, 24], &dev);
    let embeds = clip.encode(images.clone()).unwrap();
    assert_eq!(embeds.dims(), [2, 24]);
    // PyTorch's .bin variant gives the same network.
    let bin = hub::load_clip_vision::<B>(published("variants/clip-bin"), &dev).unwrap();
    // No preprocessor_config.json there nor beside it: the config's default processor.
    assert_eq!(bin.processor(), &ClipImageProcessor::for_size(16));
    assert!(max_diff(bin.encode(images).unwrap(), embeds) < 1e-5);
}
