//! diffusers' `VQModel` `config.json` read into a [`MoVqConfig`].

use std::path::Path;

use foil_core::Result;
use foil_schedule::diffusers::{ConfigReader, read_json_file};
use serde_json::{Value, json};

use super::class_name;
use crate::kandinsky::MoVqConfig;

impl MoVqConfig {
    /// Reads a diffusers `VQModel` `config.json` (the `movq/` folder of a Kandinsky pipeline).
    pub fn from_diffusers_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_diffusers_config(&read_json_file(path)?, &path.display().to_string())
    }

    /// A diffusers (0.31) `VQModel` configuration as a [`MoVqConfig`]; `what` names it in
    /// errors. A missing key takes diffusers' default.
    ///
    /// - Mapped: `in_channels`, `out_channels`, `latent_channels`, `vq_embed_dim` (null: the
    ///   latent channels), `num_vq_embeddings`, `block_out_channels`, `down_block_types`
    ///   (`DownEncoderBlock2D`, `AttnDownEncoderBlock2D`), `up_block_types` (`UpDecoderBlock2D`,
    ///   `AttnUpDecoderBlock2D`), `layers_per_block`, `norm_num_groups`, `scaling_factor`.
    /// - Required, else refused naming the key: `norm_type` "spatial" (MoVQ's; diffusers'
    ///   default "group" is another network), `act_fn` "silu", `mid_block_add_attention` true,
    ///   `lookup_from_codebook` false.
    /// - Accepted whatever their value: `sample_size` (informative), `force_upcast` (a
    ///   half-precision hint), `_`-prefixed metadata (`_class_name` must be `VQModel`).
    /// - Any other key is an error.
    pub fn from_diffusers_config(json: &Value, what: &str) -> Result<Self> {
        let mut r = ConfigReader::new(json, what)?;
        class_name(&mut r, &["VQModel"])?;
        let block_out_channels = r.usize_list("block_out_channels", &[64])?;
        let levels = block_out_channels.len();
        let block_attention = |r: &mut ConfigReader<'_>,
                               key: &str,
                               default: &str,
                               plain: &str,
                               attn: &str|
         -> Result<Vec<bool>> {
            let names = r.string_list(key, &[default])?;
            let kinds = names
                .iter()
                .map(|name| {
                    if name == plain {
                        Ok(false)
                    } else if name == attn {
                        Ok(true)
                    } else {
                        Err(r.error(
                            key,
                            format!("foil's MoVQ has {plain} and {attn}, found \"{name}\""),
                        ))
                    }
                })
                .collect::<Result<Vec<bool>>>()?;
            if kinds.len() != levels {
                return Err(r.error(
                    key,
                    format!(
                        "expected one per block_out_channels entry ({levels}), found {}",
                        kinds.len()
                    ),
                ));
            }
            Ok(kinds)
        };
        let down_block_attention = block_attention(
            &mut r,
            "down_block_types",
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "AttnDownEncoderBlock2D",
        )?;
        let up_block_attention = block_attention(
            &mut r,
            "up_block_types",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "AttnUpDecoderBlock2D",
        )?;
        let latent_channels = r.usize("latent_channels", 3)?;
        let config = MoVqConfig {
            in_channels: r.usize("in_channels", 3)?,
            out_channels: r.usize("out_channels", 3)?,
            latent_channels,
            vq_embed_dim: r.opt_usize("vq_embed_dim")?.unwrap_or(latent_channels),
            num_vq_embeddings: r.usize("num_vq_embeddings", 256)?,
            block_out_channels,
            down_block_attention,
            up_block_attention,
            layers_per_block: r.usize("layers_per_block", 1)?,
            norm_num_groups: r.usize("norm_num_groups", 32)?,
            scaling_factor: r.f64("scaling_factor", 0.18215)? as f32,
        };
        r.one_of(
            "norm_type",
            json!("group"),
            &[json!("spatial")],
            "foil's MoVQ is the spatial-norm VQModel (\"spatial\"; diffusers' default is \"group\")",
        )?;
        r.require("act_fn", json!("silu"), "foil's MoVQ needs \"silu\"")?;
        r.require(
            "mid_block_add_attention",
            json!(true),
            "foil's MoVQ has mid-block attention (true)",
        )?;
        r.require(
            "lookup_from_codebook",
            json!(false),
            "foil's MoVQ decodes latents without a codebook lookup (false)",
        )?;
        r.accept(&["sample_size", "force_upcast"]);
        r.finish()?;
        config
            .validate()
            .map_err(|e| foil_core::Error::format(what.to_string(), e))?;
        Ok(config)
    }
}
