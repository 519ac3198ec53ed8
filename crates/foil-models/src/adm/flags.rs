//! guided-diffusion's command-line flags (`script_util.model_and_diffusion_defaults()` and
//! `create_model`), written as a JSON object, as an [`AdmConfig`] and the diffusion steps: how a
//! user describes a guided-diffusion checkpoint foil has no preset for
//! (`foil maskdime --ddpm-config flags.json`).
//!
//! Values may be JSON numbers and booleans or the strings argparse takes (`"True"`, `"128"`).
//! Model flags: `image_size`, `num_channels`, `num_res_blocks`, `num_heads`,
//! `num_heads_upsample`, `num_head_channels` (`-1`: unset), `attention_resolutions` (image
//! resolutions, `"32,16,8"`), `channel_mult` (`""`: `create_model`'s default for the image
//! size), `class_cond`, `learn_sigma`, `use_scale_shift_norm`, `resblock_updown`,
//! `use_new_attention_order`, and `dropout`, `use_checkpoint`, `use_fp16` (which change nothing
//! a loaded network computes in f32). Diffusion flags: `diffusion_steps`, `noise_schedule`
//! (`linear`), `timestep_respacing` (any: foil respaces by its own settings), and `use_kl`,
//! `predict_xstart`, `rescale_timesteps`, `rescale_learned_sigmas` at the values foil's
//! sampler reproduces. Any other key is refused by name.

use std::path::Path;

use foil_core::{Error, Result};
use foil_schedule::diffusers::{ConfigReader, read_json_file};
use serde_json::Value;

use super::AdmConfig;

/// Classes of guided-diffusion's class-conditional models (`NUM_CLASSES`, ImageNet's).
const NUM_CLASSES: usize = 1000;

/// A guided-diffusion checkpoint's network and the diffusion steps it was trained with.
#[derive(Debug, Clone, PartialEq)]
pub struct GuidedDiffusionFlags {
    /// The network.
    pub config: AdmConfig,
    /// `diffusion_steps` (guided-diffusion's default 1000), `None` when the flags omit it.
    pub diffusion_steps: Option<usize>,
}

impl GuidedDiffusionFlags {
    /// Reads a JSON file of flags.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json(&read_json_file(path)?, &path.display().to_string())
    }

    /// Reads flags from a JSON object; `what` names it in errors.
    pub fn from_json(json: &Value, what: &str) -> Result<Self> {
        let mut r = ConfigReader::new(json, what)?;
        let image_size = int(&mut r, "image_size")?.unwrap_or(64);
        let channel_mult = match text(&mut r, "channel_mult")?.as_deref().unwrap_or("") {
            "" => match image_size {
                512 => vec![0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
                256 => vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
                128 => vec![1.0, 1.0, 2.0, 3.0, 4.0],
                64 => vec![1.0, 2.0, 3.0, 4.0],
                other => {
                    return Err(r.error(
                        "channel_mult",
                        format!(
                            "empty, and create_model has no default for image_size {other} \
                             (64, 128, 256, 512): give it, e.g. \"1,1,2,3,4\""
                        ),
                    ));
                }
            },
            list => list
                .split(',')
                .map(|m| m.trim().parse::<f64>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| r.error("channel_mult", format!("{list:?}: {e}")))?,
        };
        let resolutions = text(&mut r, "attention_resolutions")?.unwrap_or("16,8".into());
        let mut attention_at = Vec::new();
        for res in resolutions.split(',').filter(|s| !s.trim().is_empty()) {
            let res: usize = res
                .trim()
                .parse()
                .map_err(|e| r.error("attention_resolutions", format!("{resolutions:?}: {e}")))?;
            if res == 0 || image_size % res != 0 {
                return Err(r.error(
                    "attention_resolutions",
                    format!("{res} does not divide image_size {image_size}"),
                ));
            }
            attention_at.push(res);
        }
        let unset = |v: Option<i64>| v.filter(|&v| v > 0).map(|v| v as usize);
        let num_heads = signed(&mut r, "num_heads")?.unwrap_or(4);
        let config = AdmConfig {
            image_size,
            in_channels: 3,
            model_channels: int(&mut r, "num_channels")?.unwrap_or(128),
            learn_sigma: flag(&mut r, "learn_sigma")?.unwrap_or(false),
            num_res_blocks: int(&mut r, "num_res_blocks")?.unwrap_or(2),
            attention_resolutions: Vec::new(),
            channel_mult,
            conv_resample: true,
            num_classes: flag(&mut r, "class_cond")?
                .unwrap_or(false)
                .then_some(NUM_CLASSES),
            num_heads: unset(Some(num_heads)).unwrap_or(1),
            num_head_channels: unset(signed(&mut r, "num_head_channels")?),
            num_heads_upsample: unset(signed(&mut r, "num_heads_upsample")?),
            use_scale_shift_norm: flag(&mut r, "use_scale_shift_norm")?.unwrap_or(true),
            resblock_updown: flag(&mut r, "resblock_updown")?.unwrap_or(false),
            use_new_attention_order: flag(&mut r, "use_new_attention_order")?.unwrap_or(false),
        }
        .with_attention_at(&attention_at);
        let diffusion_steps = int(&mut r, "diffusion_steps")?;
        if let Some(schedule) = text(&mut r, "noise_schedule")?
            && schedule != "linear"
        {
            return Err(r.error(
                "noise_schedule",
                format!(
                    "foil's guided sampler uses guided-diffusion's linear betas, found {schedule:?}"
                ),
            ));
        }
        for (key, wanted) in [
            ("use_kl", false),
            ("predict_xstart", false),
            ("rescale_timesteps", false),
            ("rescale_learned_sigmas", false),
        ] {
            if let Some(value) = flag(&mut r, key)?
                && value != wanted
            {
                return Err(r.error(
                    key,
                    format!("foil's guided sampler reproduces {key} = {wanted}, found {value}"),
                ));
            }
        }
        r.accept(&[
            "dropout",
            "use_checkpoint",
            "use_fp16",
            "timestep_respacing",
        ]);
        r.finish()?;
        config.validate()?;
        Ok(Self {
            config,
            diffusion_steps,
        })
    }
}

/// A value as argparse would take it: JSON strings are parsed.
fn scalar(r: &mut ConfigReader<'_>, key: &str) -> Option<Value> {
    match r.raw(key)? {
        Value::String(s) => Some(
            serde_json::from_str::<Value>(&s.trim().to_lowercase())
                .unwrap_or_else(|_| Value::String(s.clone())),
        ),
        other => Some(other.clone()),
    }
}

fn signed(r: &mut ConfigReader<'_>, key: &str) -> Result<Option<i64>> {
    match scalar(r, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| r.error(key, format!("expected an integer, found {v}"))),
    }
}

fn int(r: &mut ConfigReader<'_>, key: &str) -> Result<Option<usize>> {
    match signed(r, key)? {
        None => Ok(None),
        Some(v) if v > 0 => Ok(Some(v as usize)),
        Some(v) => Err(r.error(key, format!("expected a positive integer, found {v}"))),
    }
}

fn flag(r: &mut ConfigReader<'_>, key: &str) -> Result<Option<bool>> {
    match scalar(r, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(v) => Err(r.error(key, format!("expected True or False, found {v}"))),
    }
}

fn text(r: &mut ConfigReader<'_>, key: &str) -> Result<Option<String>> {
    match r.raw(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(v) => Err(Error::format(
            r.what().to_string(),
            format!("key `{key}`: expected a string, found {v}"),
        )),
    }
}
