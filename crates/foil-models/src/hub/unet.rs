//! diffusers' `UNet2DConditionModel` `config.json` read into a [`UNetConfig`].

use std::path::Path;

use foil_core::Result;
use foil_schedule::diffusers::{ConfigReader, read_json_file};
use serde_json::{Value, json};

use super::{class_name, per_level};
use crate::kandinsky::{DownBlockType, UNetConfig, UpBlockType};

impl UNetConfig {
    /// Reads a diffusers `UNet2DConditionModel` `config.json` (the `unet/` folder of a pipeline).
    pub fn from_diffusers_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_diffusers_config(&read_json_file(path)?, &path.display().to_string())
    }

    /// A diffusers (0.31) `UNet2DConditionModel` configuration as a [`UNetConfig`]; `what` names
    /// it in errors. A missing key takes diffusers' default.
    ///
    /// - Mapped: `in_channels`, `out_channels`, `block_out_channels`, `down_block_types`
    ///   (`ResnetDownsampleBlock2D`, `SimpleCrossAttnDownBlock2D`), `up_block_types`
    ///   (`SimpleCrossAttnUpBlock2D`, `ResnetUpsampleBlock2D`), `layers_per_block` and
    ///   `attention_head_dim` (an integer, or a list with one equal value per level),
    ///   `cross_attention_dim`, `encoder_hid_dim`, `norm_num_groups`, `norm_eps`,
    ///   `flip_sin_to_cos`, `freq_shift`, `resnet_time_scale_shift` (`default`, `scale_shift`),
    ///   `mid_block_scale_factor`, `resnet_out_scale_factor`, `sample_size` (0 when null).
    /// - Required at the published decoder's value, else refused naming the key:
    ///   `addition_embed_type` "image", `encoder_hid_dim_type` "image_proj", `mid_block_type`
    ///   "UNetMidBlock2DSimpleCrossAttn", `act_fn` "silu", `time_embedding_type` "positional",
    ///   `only_cross_attention` false, `mid_block_only_cross_attention` null or false,
    ///   `class_embed_type`, `num_class_embeds`, `cross_attention_norm`, `num_attention_heads`,
    ///   `time_embedding_dim`, `time_embedding_act_fn`, `timestep_post_act`, `time_cond_proj_dim`,
    ///   `addition_time_embed_dim`, `projection_class_embeddings_input_dim`,
    ///   `reverse_transformer_layers_per_block` null, `class_embeddings_concat`,
    ///   `center_input_sample`, `resnet_skip_time_act`, `dual_cross_attention`,
    ///   `upcast_attention`, `use_linear_projection` false, `conv_in_kernel` and
    ///   `conv_out_kernel` 3.
    /// - Informative, accepted at diffusers' defaults: `dropout` 0, `downsample_padding` 1,
    ///   `transformer_layers_per_block` 1, `attention_type` "default",
    ///   `addition_embed_type_num_heads` 64; and `_`-prefixed metadata (`_class_name` must be
    ///   `UNet2DConditionModel` when present).
    /// - Any other key is an error.
    pub fn from_diffusers_config(json: &Value, what: &str) -> Result<Self> {
        let mut r = ConfigReader::new(json, what)?;
        class_name(&mut r, &["UNet2DConditionModel"])?;
        let block_out_channels = r.usize_list("block_out_channels", &[320, 640, 1280, 1280])?;
        let levels = block_out_channels.len();
        let down = r.string_list(
            "down_block_types",
            &[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ],
        )?;
        let down_block_types = down
            .iter()
            .map(|name| match name.as_str() {
                "ResnetDownsampleBlock2D" => Ok(DownBlockType::ResnetDownsample),
                "SimpleCrossAttnDownBlock2D" => Ok(DownBlockType::SimpleCrossAttnDown),
                other => Err(r.error(
                    "down_block_types",
                    format!(
                        "foil's Kandinsky UNet has ResnetDownsampleBlock2D and \
                         SimpleCrossAttnDownBlock2D, found \"{other}\""
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up = r.string_list(
            "up_block_types",
            &[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ],
        )?;
        let up_block_types = up
            .iter()
            .map(|name| match name.as_str() {
                "SimpleCrossAttnUpBlock2D" => Ok(UpBlockType::SimpleCrossAttnUp),
                "ResnetUpsampleBlock2D" => Ok(UpBlockType::ResnetUpsample),
                other => Err(r.error(
                    "up_block_types",
                    format!(
                        "foil's Kandinsky UNet has SimpleCrossAttnUpBlock2D and \
                         ResnetUpsampleBlock2D, found \"{other}\""
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        for (key, n) in [
            ("down_block_types", down_block_types.len()),
            ("up_block_types", up_block_types.len()),
        ] {
            if n != levels {
                return Err(r.error(
                    key,
                    format!("expected one per block_out_channels entry ({levels}), found {n}"),
                ));
            }
        }
        let layers_per_block = per_level(&mut r, "layers_per_block", 2, levels)?;
        let attention_head_dim = per_level(&mut r, "attention_head_dim", 8, levels)?;
        let cross_attention_dim = r.usize("cross_attention_dim", 1280)?;
        let encoder_hid_dim = r.opt_usize("encoder_hid_dim")?.ok_or_else(|| {
            r.error(
                "encoder_hid_dim",
                "the image projection needs the image embedding width, found null",
            )
        })?;
        let norm_num_groups = r.opt_usize("norm_num_groups")?;
        let norm_num_groups = match (r.has("norm_num_groups"), norm_num_groups) {
            (false, _) => 32,
            (true, Some(g)) => g,
            (true, None) => {
                return Err(r.error(
                    "norm_num_groups",
                    "foil's Kandinsky UNet has group norms (an integer), found null",
                ));
            }
        };
        let scale_shift = match r.string("resnet_time_scale_shift", "default")?.as_str() {
            "scale_shift" => true,
            "default" => false,
            other => {
                return Err(r.error(
                    "resnet_time_scale_shift",
                    format!("foil supports \"default\" and \"scale_shift\", found \"{other}\""),
                ));
            }
        };
        let sample_size = match r.raw("sample_size") {
            None | Some(Value::Null) => 0,
            Some(Value::Array(sides)) if sides.len() == 2 && sides[0] == sides[1] => {
                r.as_usize("sample_size", &sides[0])?
            }
            Some(v) => r.as_usize("sample_size", v)?,
        };
        let config = UNetConfig {
            in_channels: r.usize("in_channels", 4)?,
            out_channels: r.usize("out_channels", 4)?,
            block_out_channels,
            down_block_types,
            up_block_types,
            layers_per_block,
            attention_head_dim,
            cross_attention_dim,
            encoder_hid_dim,
            // diffusers' ImageProjection default; not a configuration key.
            num_image_text_embeds: 32,
            norm_num_groups,
            norm_eps: r.f64("norm_eps", 1e-5)?,
            flip_sin_to_cos: r.bool("flip_sin_to_cos", true)?,
            freq_shift: r.f64("freq_shift", 0.0)? as f32,
            scale_shift,
            mid_block_scale_factor: r.f64("mid_block_scale_factor", 1.0)?,
            resnet_out_scale_factor: r.f64("resnet_out_scale_factor", 1.0)?,
            sample_size,
        };

        let kandinsky = "foil's Kandinsky UNet needs the Kandinsky 2.2 decoder's";
        let required: [(&str, Value, Value); 7] = [
            ("addition_embed_type", Value::Null, json!("image")),
            ("encoder_hid_dim_type", Value::Null, json!("image_proj")),
            (
                "mid_block_type",
                json!("UNetMidBlock2DCrossAttn"),
                json!("UNetMidBlock2DSimpleCrossAttn"),
            ),
            ("act_fn", json!("silu"), json!("silu")),
            (
                "time_embedding_type",
                json!("positional"),
                json!("positional"),
            ),
            ("conv_in_kernel", json!(3), json!(3)),
            ("conv_out_kernel", json!(3), json!(3)),
        ];
        for (key, default, needed) in required {
            r.one_of(
                key,
                default,
                std::slice::from_ref(&needed),
                &format!("{kandinsky} {needed}"),
            )?;
        }
        // Features foil's network does not have: absent, null or false.
        for key in [
            "only_cross_attention",
            "mid_block_only_cross_attention",
            "class_embed_type",
            "num_class_embeds",
            "cross_attention_norm",
            "num_attention_heads",
            "time_embedding_dim",
            "time_embedding_act_fn",
            "timestep_post_act",
            "time_cond_proj_dim",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
            "reverse_transformer_layers_per_block",
            "class_embeddings_concat",
            "center_input_sample",
            "resnet_skip_time_act",
            "dual_cross_attention",
            "upcast_attention",
            "use_linear_projection",
        ] {
            let value = r.raw(key).cloned().unwrap_or(Value::Null);
            if !all_off(&value) {
                return Err(r.error(
                    key,
                    format!(
                        "{kandinsky} null or false (a feature foil does not have), found {value}"
                    ),
                ));
            }
        }
        // Informative keys, at diffusers' defaults (the values of the published decoder).
        r.require(
            "dropout",
            json!(0.0),
            "a training setting, accepted at its default 0.0",
        )?;
        r.require(
            "downsample_padding",
            json!(1),
            "informative for this network, accepted at its default 1",
        )?;
        r.require(
            "attention_type",
            json!("default"),
            "informative for this network, accepted at its default \"default\"",
        )?;
        r.require(
            "addition_embed_type_num_heads",
            json!(64),
            "informative for image addition embeddings, accepted at its default 64",
        )?;
        let tlpb = r
            .raw("transformer_layers_per_block")
            .cloned()
            .unwrap_or(json!(1));
        if !all_ones(&tlpb) {
            return Err(r.error(
                "transformer_layers_per_block",
                format!(
                    "informative for simple cross-attention blocks, accepted at 1, found {tlpb}"
                ),
            ));
        }
        r.finish()?;
        config
            .validate()
            .map_err(|e| foil_core::Error::format(what.to_string(), e))?;
        Ok(config)
    }
}

/// `null`, `false`, or a (nested) list of those.
fn all_off(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(items) => items.iter().all(all_off),
        _ => false,
    }
}

/// `1`, or a (nested) list of ones.
fn all_ones(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(1.0),
        Value::Array(items) => items.iter().all(all_ones),
        _ => false,
    }
}
