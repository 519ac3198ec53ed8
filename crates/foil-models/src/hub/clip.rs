//! transformers' CLIP configurations: `CLIPVisionConfig` (or a full `CLIPConfig`) read into a
//! [`ClipVisionConfig`], and `preprocessor_config.json` into a [`ClipImageProcessor`].

use std::path::Path;

use foil_core::Result;
use foil_schedule::diffusers::{ConfigReader, json_same, read_json_file};
use serde_json::{Value, json};

use crate::clip::{ClipActivation, ClipImageProcessor, ClipVisionConfig};

/// The keys every transformers `PretrainedConfig` writes (generation and bookkeeping settings);
/// none changes what a vision tower computes.
const PRETRAINED_CONFIG_KEYS: &[&str] = &[
    "add_cross_attention",
    "architectures",
    "bad_words_ids",
    "begin_suppress_tokens",
    "bos_token_id",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "diversity_penalty",
    "do_sample",
    "early_stopping",
    "encoder_no_repeat_ngram_size",
    "eos_token_id",
    "exponential_decay_length_penalty",
    "finetuning_task",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "gradient_checkpointing",
    "id2label",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "length_penalty",
    "max_length",
    "min_length",
    "no_repeat_ngram_size",
    "num_beam_groups",
    "num_beams",
    "num_return_sequences",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "pad_token_id",
    "prefix",
    "problem_type",
    "remove_invalid_values",
    "repetition_penalty",
    "return_dict",
    "return_dict_in_generate",
    "sep_token_id",
    "suppress_tokens",
    "task_specific_params",
    "temperature",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tie_word_embeddings",
    "tokenizer_class",
    "top_k",
    "top_p",
    "torch_dtype",
    "torchscript",
    "transformers_version",
    "typical_p",
    "use_bfloat16",
    "xla_device",
];

/// Accepts the generic `PretrainedConfig` keys; `pruned_heads` must be empty (pruned heads would
/// change the network).
fn pretrained_keys(r: &mut ConfigReader<'_>) -> Result<()> {
    r.accept(PRETRAINED_CONFIG_KEYS);
    r.off(
        "pruned_heads",
        "foil's CLIP has every attention head (an empty object)",
    )
}

impl ClipVisionConfig {
    /// Reads a transformers `config.json`: a `CLIPVisionModelWithProjection` folder's (as
    /// `kandinsky-2-2-prior/image_encoder`) or a full `CLIPModel`'s.
    pub fn from_transformers_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_transformers_config(&read_json_file(path)?, &path.display().to_string())
    }

    /// A transformers (4.46) `CLIPVisionConfig` (`model_type` "clip_vision_model", with the
    /// `projection_dim` of `CLIPVisionModelWithProjection`) or a full `CLIPConfig`
    /// (`model_type` "clip": its `vision_config`, or `vision_config_dict` which transformers
    /// lets override it, and the top-level `projection_dim`) as a [`ClipVisionConfig`]; `what`
    /// names it in errors. A missing key takes transformers' default.
    ///
    /// - Mapped: `hidden_size`, `intermediate_size`, `projection_dim`, `num_hidden_layers`,
    ///   `num_attention_heads`, `num_channels`, `image_size`, `patch_size`, `layer_norm_eps`,
    ///   `hidden_act` ("gelu" or "quick_gelu"; others refused).
    /// - Accepted at their default 0: `attention_dropout`, `dropout`.
    /// - Accepted whatever their value: `initializer_range`, `initializer_factor`, the generic
    ///   `PretrainedConfig` keys (`architectures`, `torch_dtype`, `transformers_version`,
    ///   generation settings, ...; `pruned_heads` must be empty), `_`-prefixed metadata; in a
    ///   full `CLIPConfig`, `text_config`, `text_config_dict` and `logit_scale_init_value`.
    /// - Any other key is an error.
    pub fn from_transformers_config(json: &Value, what: &str) -> Result<Self> {
        let model_type = json.get("model_type").and_then(Value::as_str);
        if model_type == Some("clip") || json.get("vision_config").is_some() {
            let mut r = ConfigReader::new(json, what)?;
            r.require(
                "model_type",
                json!("clip"),
                "a CLIP configuration (\"clip\")",
            )?;
            let projection_dim = r.usize("projection_dim", 512)?;
            // transformers: `vision_config_dict`, when given, overrides `vision_config`.
            let vision = match (r.raw("vision_config_dict"), r.raw("vision_config")) {
                (Some(v), _) if !v.is_null() => ("vision_config_dict", v),
                (_, Some(v)) if !v.is_null() => ("vision_config", v),
                _ => ("vision_config", &Value::Null),
            };
            r.accept(&[
                "text_config",
                "text_config_dict",
                "logit_scale_init_value",
                "initializer_factor",
            ]);
            pretrained_keys(&mut r)?;
            r.finish()?;
            let empty = json!({});
            let vision_json = if vision.1.is_null() { &empty } else { vision.1 };
            let inner = format!("{what} ({})", vision.0);
            return Self::read_vision(vision_json, &inner, Some(projection_dim));
        }
        Self::read_vision(json, what, None)
    }

    /// A `CLIPVisionConfig` object; `projection_dim` overrides the object's own (a `CLIPConfig`
    /// keeps the projection width at its top level).
    fn read_vision(json: &Value, what: &str, projection_dim: Option<usize>) -> Result<Self> {
        let mut r = ConfigReader::new(json, what)?;
        r.require(
            "model_type",
            json!("clip_vision_model"),
            "a CLIP vision configuration (\"clip_vision_model\")",
        )?;
        let own_projection = r.usize("projection_dim", 512)?;
        let activation = match r.string("hidden_act", "quick_gelu")?.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => {
                return Err(r.error(
                    "hidden_act",
                    format!("foil's CLIP has \"gelu\" and \"quick_gelu\", found \"{other}\""),
                ));
            }
        };
        let config = ClipVisionConfig {
            hidden_size: r.usize("hidden_size", 768)?,
            num_layers: r.usize("num_hidden_layers", 12)?,
            num_heads: r.usize("num_attention_heads", 12)?,
            intermediate_size: r.usize("intermediate_size", 3072)?,
            patch_size: r.usize("patch_size", 32)?,
            image_size: r.usize("image_size", 224)?,
            projection_dim: projection_dim.unwrap_or(own_projection),
            num_channels: r.usize("num_channels", 3)?,
            activation,
            layer_norm_eps: r.f64("layer_norm_eps", 1e-5)?,
        };
        for key in ["attention_dropout", "dropout"] {
            r.require(
                key,
                json!(0.0),
                "a training setting, accepted at its default 0.0",
            )?;
        }
        r.accept(&["initializer_range", "initializer_factor"]);
        pretrained_keys(&mut r)?;
        r.finish()?;
        config
            .validate()
            .map_err(|e| foil_core::Error::format(what.to_string(), e))?;
        Ok(config)
    }
}

impl ClipImageProcessor {
    /// Reads a transformers `preprocessor_config.json`.
    pub fn from_preprocessor_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_preprocessor_config(&read_json_file(path)?, &path.display().to_string())
    }

    /// A transformers (4.46) `CLIPImageProcessor` configuration (`preprocessor_config.json`) as
    /// a [`ClipImageProcessor`]; `what` names it in errors. A missing key takes transformers'
    /// default.
    ///
    /// - Mapped: `size` (`{"shortest_edge": n}` or an integer n), `crop_size`
    ///   (`{"height": n, "width": n}` or an integer n; square), `image_mean`, `image_std`
    ///   (three values each), `do_normalize` (false: mean 0, std 1).
    /// - Required, else refused naming the key: `do_resize` true, `do_center_crop` true,
    ///   `resample` 3 (PIL's bicubic, the filter foil implements), `do_rescale` true with
    ///   `rescale_factor` 1/255 (foil's images are in `[0, 1]` before normalising),
    ///   `image_processor_type` / `feature_extractor_type` a CLIP processor.
    /// - Accepted whatever their value: `do_convert_rgb` (foil's images are RGB),
    ///   `processor_class`, `_`-prefixed metadata.
    /// - Any other key is an error.
    pub fn from_preprocessor_config(json: &Value, what: &str) -> Result<Self> {
        let mut r = ConfigReader::new(json, what)?;
        for key in ["image_processor_type", "feature_extractor_type"] {
            if let Some(v) = r.raw(key) {
                let known = ["CLIPImageProcessor", "CLIPFeatureExtractor"]
                    .iter()
                    .any(|k| json_same(v, &json!(k)));
                if !known {
                    return Err(r.error(
                        key,
                        format!("foil implements CLIPImageProcessor, found {v}"),
                    ));
                }
            }
        }
        let shortest_edge = match r.raw("size") {
            None => 224,
            Some(Value::Object(m)) if m.len() == 1 && m.contains_key("shortest_edge") => {
                r.as_usize("size", &m["shortest_edge"])?
            }
            Some(v @ Value::Number(_)) => r.as_usize("size", v)?,
            Some(v) => {
                return Err(r.error(
                    "size",
                    format!(
                        "foil resizes the shortest edge ({{\"shortest_edge\": n}} or an \
                         integer), found {v}"
                    ),
                ));
            }
        };
        let crop_size = match r.raw("crop_size") {
            None => 224,
            Some(Value::Object(m))
                if m.len() == 2
                    && m.contains_key("height")
                    && m.get("height") == m.get("width") =>
            {
                r.as_usize("crop_size", &m["height"])?
            }
            Some(v @ Value::Number(_)) => r.as_usize("crop_size", v)?,
            Some(v) => {
                return Err(r.error(
                    "crop_size",
                    format!(
                        "foil crops squares ({{\"height\": n, \"width\": n}} or an integer), \
                         found {v}"
                    ),
                ));
            }
        };
        let three = |r: &mut ConfigReader<'_>, key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match r.raw(key) {
                None => Ok(default),
                Some(Value::Array(v)) if v.len() == 3 => {
                    let mut out = [0.0f32; 3];
                    for (o, x) in out.iter_mut().zip(v) {
                        *o = x.as_f64().ok_or_else(|| {
                            r.error(key, format!("expected three numbers, found {x}"))
                        })? as f32;
                    }
                    Ok(out)
                }
                Some(v) => Err(r.error(key, format!("expected three numbers, found {v}"))),
            }
        };
        let mean = three(&mut r, "image_mean", crate::clip::CLIP_MEAN)?;
        let std = three(&mut r, "image_std", crate::clip::CLIP_STD)?;
        if std.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(r.error(
                "image_std",
                format!("expected three finite values > 0, found {std:?}"),
            ));
        }
        let normalize = r.bool("do_normalize", true)?;
        r.require(
            "do_resize",
            json!(true),
            "foil's processor always resizes (true)",
        )?;
        r.require(
            "do_center_crop",
            json!(true),
            "foil's processor always center-crops (true)",
        )?;
        r.require(
            "resample",
            json!(3),
            "foil implements PIL's bicubic filter (3)",
        )?;
        r.require(
            "do_rescale",
            json!(true),
            "foil's images are rescaled to [0, 1] (true)",
        )?;
        let factor = r.f64("rescale_factor", 1.0 / 255.0)?;
        if (factor * 255.0 - 1.0).abs() > 1e-6 {
            return Err(r.error(
                "rescale_factor",
                format!(
                    "foil's images are rescaled by 1/255 (0.00392156862745098), found {factor}"
                ),
            ));
        }
        r.accept(&["do_convert_rgb", "processor_class"]);
        r.finish()?;
        if shortest_edge == 0 || crop_size == 0 || crop_size > shortest_edge {
            return Err(foil_core::Error::format(
                what.to_string(),
                format!(
                    "key `crop_size`: expected in 1..=size ({shortest_edge}), found {crop_size}"
                ),
            ));
        }
        Ok(if normalize {
            Self {
                shortest_edge,
                crop_size,
                mean,
                std,
            }
        } else {
            Self {
                shortest_edge,
                crop_size,
                mean: [0.0; 3],
                std: [1.0; 3],
            }
        })
    }
}
