//! CLIP vision tower and preprocessing against transformers 4.46.3 (fixtures recorded by
//! `tools/record_clip.py`): network parity on a tiny random `CLIPVisionModelWithProjection`,
//! parameter counts of the published towers, and `CLIPImageProcessor` parity, kept apart.

use burn::backend::{Flex, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::ImageEncoder;
use foil_core::tensor::to_vec_f32;
use foil_models::clip::{
    CLIP_MEAN, CLIP_STD, ClipActivation, ClipImageProcessor, ClipVision, ClipVisionConfig,
};
use foil_models::weights::TensorFile;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn max_diff<B: Backend, const D: usize>(a: &Tensor<B, D>, b: &Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (to_vec_f32(a).unwrap(), to_vec_f32(b).unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs<B: Backend, const D: usize>(a: &Tensor<B, D>) -> f32 {
    to_vec_f32(a)
        .unwrap()
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
}

struct TinyIo<B: Backend> {
    pixel_values: Tensor<B, 4>,
    image_embeds: Tensor<B, 2>,
    pooled: Tensor<B, 2>,
    last_hidden_state: Tensor<B, 3>,
    image_embeds_gelu: Tensor<B, 2>,
}

fn tiny_io<B: Backend>() -> TinyIo<B> {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture("clip_tiny_io.safetensors")).unwrap();
    let io = TinyIo {
        pixel_values: f.take("input.pixel_values", [2, 3, 32, 32], &dev).val(),
        image_embeds: f.take("output.image_embeds", [2, 16], &dev).val(),
        pooled: f.take("output.pooled", [2, 32], &dev).val(),
        last_hidden_state: f.take("output.last_hidden_state", [2, 17, 32], &dev).val(),
        image_embeds_gelu: f.take("output.image_embeds_gelu", [2, 16], &dev).val(),
    };
    f.finish().unwrap();
    io
}

/// Network parity (tolerance 1e-4); returns the worst difference.
pub(crate) fn tiny_parity<B: Backend>(backend: &str) -> f32 {
    let dev = Default::default();
    let io = tiny_io::<B>();
    let model: ClipVision<B> = ClipVisionConfig::tiny()
        .load_file(fixture("clip_tiny.safetensors"), &dev)
        .unwrap();
    let out = model.forward(io.pixel_values.clone()).unwrap();
    let d_embeds = max_diff(&out.image_embeds, &io.image_embeds);
    let d_pooled = max_diff(&out.pooled, &io.pooled);
    let d_hidden = max_diff(&out.last_hidden_state, &io.last_hidden_state);
    eprintln!(
        "{backend}: max |ours - transformers| image_embeds {d_embeds:e}, pooled {d_pooled:e}, \
         last_hidden_state {d_hidden:e}"
    );
    assert!(max_abs(&io.image_embeds) > 0.1, "fixture is trivial");
    for (what, d) in [
        ("image_embeds", d_embeds),
        ("pooled", d_pooled),
        ("last_hidden_state", d_hidden),
    ] {
        assert!(d <= 1e-4, "{backend} {what}: max diff {d:e} > 1e-4");
    }

    // The same weights with the exact GELU (bigG's activation).
    let gelu: ClipVision<B> = ClipVisionConfig::tiny()
        .with_activation(ClipActivation::Gelu)
        .load_file(fixture("clip_tiny.safetensors"), &dev)
        .unwrap();
    let embeds = gelu.image_embeds(io.pixel_values.clone()).unwrap();
    let d_gelu = max_diff(&embeds, &io.image_embeds_gelu);
    eprintln!("{backend}: gelu image_embeds max diff {d_gelu:e}");
    assert!(d_gelu <= 1e-4, "{backend} gelu: max diff {d_gelu:e}");
    // The activation matters: quick_gelu's reference is far from gelu's output.
    assert!(max_diff(&embeds, &io.image_embeds) > 1e-3);
    d_embeds.max(d_pooled).max(d_hidden).max(d_gelu)
}

#[test]
fn tiny_clip_vision_matches_transformers_on_ndarray_and_flex() {
    tiny_parity::<NdArray>("ndarray");
    tiny_parity::<Flex>("flex");
}

/// The fixture's tensors, with `edit` applied: `None` drops a tensor, `Some` replaces it.
type Edit = dyn Fn(&str, &[usize], &[f32]) -> Option<(Vec<usize>, Vec<f32>)>;

fn rewritten(edit: &Edit, extra: Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<u8> {
    let bytes = std::fs::read(fixture("clip_tiny.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some((shape, values)) = edit(&name, view.shape(), &values) {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.push((name, shape, data));
        }
    }
    for (name, shape, values) in extra {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.push((name, shape, data));
    }
    let views: Vec<(String, TensorView)> = out
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load_bytes<B: Backend>(
    config: &ClipVisionConfig,
    bytes: &[u8],
) -> foil_core::Result<ClipVision<B>> {
    let mut file = TensorFile::from_bytes(bytes, "edited clip_tiny")?;
    let model = config.load(&mut file, &Default::default())?;
    file.finish()?;
    Ok(model)
}

#[test]
fn a_perturbed_weight_breaks_parity() {
    type B = NdArray;
    let io = tiny_io::<B>();
    let bytes = rewritten(
        &|name, shape, values| {
            let mut values = values.to_vec();
            if name == "vision_model.encoder.layers.1.mlp.fc2.bias" {
                values[3] += 0.05;
            }
            Some((shape.to_vec(), values))
        },
        Vec::new(),
    );
    let model = load_bytes::<B>(&ClipVisionConfig::tiny(), &bytes).unwrap();
    let embeds = model.image_embeds(io.pixel_values).unwrap();
    let d = max_diff(&embeds, &io.image_embeds);
    assert!(d > 1e-3, "perturbation went unnoticed: {d:e}");
}

#[test]
fn wrong_or_missing_tensors_are_all_reported() {
    type B = NdArray;
    let bytes = rewritten(
        &|name, shape, values| match name {
            "visual_projection.weight" => None,
            "vision_model.encoder.layers.0.self_attn.k_proj.bias" => {
                Some((vec![shape[0] - 1], values[1..].to_vec()))
            }
            _ => Some((shape.to_vec(), values.to_vec())),
        },
        vec![(
            "vision_model.encoder.layers.2.mlp.fc1.bias".into(),
            vec![64],
            vec![0.0; 64],
        )],
    );
    let err = load_bytes::<B>(&ClipVisionConfig::tiny(), &bytes)
        .expect_err("broken weights must not load")
        .to_string();
    eprintln!("{err}");
    for needle in [
        "missing: visual_projection.weight [16, 32]",
        "wrong shape: vision_model.encoder.layers.0.self_attn.k_proj.bias: expected [32], found [31]",
        "unexpected: vision_model.encoder.layers.2.mlp.fc1.bias",
    ] {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }

    // A configuration that does not match the file: every layer shape is reported.
    let mut wide = ClipVisionConfig::tiny();
    wide.projection_dim = 8;
    wide.num_layers = 3;
    let err = wide
        .load_file::<B>(fixture("clip_tiny.safetensors"), &Default::default())
        .expect_err("a mismatched config must not load")
        .to_string();
    assert!(
        err.contains("visual_projection.weight: expected [8, 32], found [16, 32]"),
        "{err}"
    );
    assert!(
        err.contains("missing: vision_model.encoder.layers.2."),
        "{err}"
    );

    // An invalid configuration is an error, not a panic.
    let mut bad = ClipVisionConfig::tiny();
    bad.num_heads = 5;
    assert!(bad.init::<B>(&Default::default()).is_err());
}

#[test]
fn wrong_input_shapes_are_errors() {
    type B = NdArray;
    let dev = Default::default();
    let model: ClipVision<B> = ClipVisionConfig::tiny().init(&dev).unwrap();
    let err = model
        .forward(Tensor::zeros([1, 3, 32, 24], &dev))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("expected shape [N >= 1, 3, 32, 32], found [1, 3, 32, 24]"),
        "{err}"
    );
    assert!(model.encode(Tensor::zeros([1, 1, 40, 40], &dev)).is_err());
    let bad = ClipImageProcessor {
        crop_size: 300,
        ..Default::default()
    };
    assert!(
        bad.preprocess::<B>(Tensor::zeros([1, 3, 40, 40], &dev))
            .is_err()
    );
    assert!(model.with_processor(ClipImageProcessor::default()).is_err());
}

/// Counts parameters by their declared shapes, without initialising lazy random weights.
struct LazyCount(usize);

impl<B: Backend> ModuleVisitor<B> for LazyCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 += param.lazy_shape().num_elements();
    }
}

fn reference_count(name: &str) -> usize {
    let json = std::fs::read_to_string(fixture("clip_params.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v[name].as_u64().unwrap() as usize
}

#[test]
fn parameter_counts_match_the_published_towers() {
    type B = NdArray;
    let dev = Default::default();
    for (name, config) in [
        ("vit_b32", ClipVisionConfig::vit_b32()),
        ("vit_l14", ClipVisionConfig::vit_l14()),
        ("vit_bigg14", ClipVisionConfig::vit_bigg14()),
    ] {
        let model: ClipVision<B> = config.init(&dev).unwrap();
        let mut count = LazyCount(0);
        model.visit(&mut count);
        eprintln!("{name}: {} parameters", count.0);
        assert_eq!(count.0, reference_count(name), "{name}");
    }
    assert_eq!(ClipVisionConfig::default(), ClipVisionConfig::vit_bigg14());
    // burn's own count (which initialises the weights) agrees, on the tiny tower and ViT-B/32.
    let tiny: ClipVision<B> = ClipVisionConfig::tiny().init(&dev).unwrap();
    assert_eq!(tiny.num_params(), reference_count("tiny"));
    let loaded: ClipVision<B> = ClipVisionConfig::tiny()
        .load_file(fixture("clip_tiny.safetensors"), &dev)
        .unwrap();
    assert_eq!(loaded.num_params(), reference_count("tiny"));
    let b32: ClipVision<B> = ClipVisionConfig::vit_b32().init(&dev).unwrap();
    assert_eq!(b32.num_params(), reference_count("vit_b32"));
}

/// Float resampling against torch's antialiased bicubic (PIL's filter), tolerance 1e-5.
pub(crate) fn float_preprocess_parity<B: Backend>(backend: &str) -> f32 {
    let dev = Default::default();
    let mut f = TensorFile::open(fixture("clip_preprocess.safetensors")).unwrap();
    let mut worst = 0.0f32;
    for (name, h, w, shortest, crop) in [("shrink", 40, 50, 24, 20), ("enlarge", 12, 10, 32, 28)] {
        let sizes = to_vec_f32(
            &f.take::<B, 1>(&format!("float.{name}.sizes"), [2], &dev)
                .val(),
        )
        .unwrap();
        assert_eq!(sizes, [shortest as f32, crop as f32]);
        let input = f.take::<B, 4>(&format!("float.{name}.input"), [1, 3, h, w], &dev);
        let expected = f.take::<B, 4>(&format!("float.{name}.output"), [1, 3, crop, crop], &dev);
        let processor = ClipImageProcessor {
            shortest_edge: shortest,
            crop_size: crop,
            ..Default::default()
        };
        let ours = processor.preprocess(input.val()).unwrap();
        let d = max_diff(&ours, &expected.val());
        eprintln!("{backend} {name}: max |ours - torch antialiased bicubic| = {d:e}");
        assert!(d <= 1e-5, "{backend} {name}: {d:e}");
        worst = worst.max(d);
    }
    f.finish().unwrap();
    worst
}

#[test]
fn float_resampling_matches_torch_antialiased_bicubic_on_ndarray_and_flex() {
    float_preprocess_parity::<NdArray>("ndarray");
    float_preprocess_parity::<Flex>("flex");
}

#[test]
fn preprocessing_matches_clip_image_processor_within_one_level() {
    type B = NdArray;
    let dev = Default::default();
    let bytes = std::fs::read(fixture("clip_preprocess_pil.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let image = st.tensor("pil.image").unwrap();
    let crop = st.tensor("pil.crop").unwrap();
    assert_eq!(
        (image.dtype(), image.shape()),
        (Dtype::U8, &[3, 256, 320][..])
    );
    assert_eq!(
        (crop.dtype(), crop.shape()),
        (Dtype::U8, &[3, 224, 224][..])
    );
    // foil's images: uint8 / 127.5 - 1.
    let x: Vec<f32> = image
        .data()
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    let x = Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(x, [1, 3, 256, 320]), &dev);
    let ours = to_vec_f32(&ClipImageProcessor::default().preprocess(x).unwrap()).unwrap();
    // transformers' output is exactly normalise(crop / 255) (asserted by the recording script).
    let plane = 224 * 224;
    let (mut worst_levels, mut worst_norm, mut off) = (0.0f32, 0.0f32, 0usize);
    for (i, (&o, &c)) in ours.iter().zip(crop.data()).enumerate() {
        let ch = i / plane;
        let reference = (c as f32 / 255.0 - CLIP_MEAN[ch]) / CLIP_STD[ch];
        let levels = ((o * CLIP_STD[ch] + CLIP_MEAN[ch]) * 255.0 - c as f32).abs();
        worst_levels = worst_levels.max(levels);
        worst_norm = worst_norm.max((o - reference).abs());
        off += usize::from(levels > 0.5);
    }
    eprintln!(
        "vs CLIPImageProcessor: max {worst_levels:.3} levels of 1/255, max {worst_norm:e} \
         normalised, {off} of {} values more than half a level off",
        ours.len()
    );
    // Tolerance: 1.5 levels of 1/255 (PIL rounds each of its two passes to 8 bits).
    assert!(worst_levels <= 1.5, "{worst_levels}");
    assert!(worst_norm <= 1.5 / 255.0 / CLIP_STD[1]);
}

#[test]
fn as_an_image_encoder_it_preprocesses_then_projects() {
    type B = NdArray;
    let dev = Default::default();
    let model: ClipVision<B> = ClipVisionConfig::tiny()
        .load_file(fixture("clip_tiny.safetensors"), &dev)
        .unwrap();
    assert_eq!(model.embedding_dim(), 16);
    assert!(
        model
            .identity()
            .starts_with("clip-vision-w32-l2-h4-p8-i32-proj16")
    );
    let images = Tensor::<B, 4>::random(
        [3, 3, 40, 52],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &dev,
    );
    let embeds = model.encode(images.clone()).unwrap();
    assert_eq!(embeds.dims(), [3, 16]);
    let by_hand = model
        .image_embeds(ClipImageProcessor::for_size(32).preprocess(images).unwrap())
        .unwrap();
    assert!(max_diff(&embeds, &by_hand) == 0.0);
    let named = model.with_identity("kandinsky-2-2-prior/image_encoder");
    assert_eq!(named.identity(), "kandinsky-2-2-prior/image_encoder");
    assert_eq!(ClipVisionConfig::vit_bigg14().name(), "clip-vit-bigg14");
}

#[test]
fn the_vision_tower_loads_out_of_a_full_clip_model_file() {
    type B = NdArray;
    // The non-vision names of transformers' CLIPModel state dict (tiny text tower, 2 layers).
    let mut text = vec![
        ("logit_scale".to_string(), vec![1]),
        ("text_projection.weight".to_string(), vec![16, 32]),
        (
            "text_model.embeddings.token_embedding.weight".to_string(),
            vec![10, 32],
        ),
        (
            "text_model.embeddings.position_embedding.weight".to_string(),
            vec![7, 32],
        ),
        ("text_model.final_layer_norm.weight".to_string(), vec![32]),
        ("text_model.final_layer_norm.bias".to_string(), vec![32]),
    ];
    for i in 0..2 {
        for (part, shape) in [
            ("self_attn.q_proj", [32, 32]),
            ("self_attn.k_proj", [32, 32]),
            ("self_attn.v_proj", [32, 32]),
            ("self_attn.out_proj", [32, 32]),
            ("mlp.fc1", [64, 32]),
            ("mlp.fc2", [32, 64]),
        ] {
            let base = format!("text_model.encoder.layers.{i}.{part}");
            text.push((format!("{base}.weight"), shape.to_vec()));
            text.push((format!("{base}.bias"), vec![shape[0]]));
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            let base = format!("text_model.encoder.layers.{i}.{ln}");
            text.push((format!("{base}.weight"), vec![32]));
            text.push((format!("{base}.bias"), vec![32]));
        }
    }
    let extra = text
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, shape, vec![0.5; n])
        })
        .collect();
    let bytes = rewritten(
        &|_, shape, values| Some((shape.to_vec(), values.to_vec())),
        extra,
    );
    let path =
        std::env::temp_dir().join(format!("foil_clip_full_{}.safetensors", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let dev = Default::default();
    let strict = ClipVisionConfig::tiny().load_file::<B>(&path, &dev);
    let full = ClipVisionConfig::tiny().load_clip_model_file::<B>(&path, &dev);
    std::fs::remove_file(&path).unwrap();
    let err = strict
        .expect_err("text tensors are unexpected for a vision-only load")
        .to_string();
    assert!(
        err.contains("unexpected: logit_scale, text_model."),
        "{err}"
    );
    let model = full.unwrap();
    let io = tiny_io::<B>();
    let d = max_diff(
        &model.image_embeds(io.pixel_values).unwrap(),
        &io.image_embeds,
    );
    assert!(d <= 1e-4, "{d:e}");
}
