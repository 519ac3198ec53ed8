//! LoRA adapters of the Kandinsky UNet as their authors' tools save them: peft's
//! `save_pretrained` folders (`adapter_config.json` + `adapter_model.safetensors`, keys
//! `base_model.model.<module>.lora_A.weight`) and diffusers' LoRA files
//! (`pytorch_lora_weights.safetensors`, keys `unet.<module>.lora_A.weight`, or the older
//! `unet.<module>.lora.down.weight` and `<attention>.processor.to_q_lora.down.weight` names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use foil_core::{Error, Result};
use foil_schedule::diffusers::{ConfigReader, is_off, read_json_file};
use serde_json::{Value, json};

use crate::kandinsky::KandinskyUNet;
use crate::lora::LoraDelta;
use crate::weights::TensorFile;

/// A tensor's name and shape.
type NamedShape = (String, Vec<usize>);

/// peft's configuration file beside `adapter_model.safetensors`.
pub const PEFT_CONFIG: &str = "adapter_config.json";

/// How the LoRA tensors were named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraLayout {
    /// peft's `save_pretrained`, with an `adapter_config.json`.
    Peft,
    /// diffusers' `save_lora_weights` (`pytorch_lora_weights.safetensors`), without a config:
    /// alpha is the rank, as diffusers loads such files.
    Diffusers,
}

/// The settings of a peft `adapter_config.json` that change the merged weights.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftLoraConfig {
    /// `r`: the rank of every adapted module.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `use_rslora`: the update is scaled by `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// `target_modules` as written (a list of names, or a regular expression), informative:
    /// the adapter's tensors say which modules it adapts.
    pub target_modules: Value,
}

impl PeftLoraConfig {
    /// Reads peft's `adapter_config.json` at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_config(&read_json_file(path)?, &path.display().to_string())
    }

    /// A peft (0.21) `LoraConfig` as saved by `save_pretrained`; `what` names it in errors.
    ///
    /// - Mapped: `r`, `lora_alpha`, `use_rslora`, `target_modules` (informative).
    /// - Required, else refused naming the key: `peft_type` "LORA", `bias` "none",
    ///   `use_dora`, `fan_in_fan_out`, `lora_bias` false; `rank_pattern`, `alpha_pattern`,
    ///   `modules_to_save`, `layer_replication`, `target_parameters`,
    ///   `trainable_token_indices` empty or null; `init_lora_weights` true, false or
    ///   "gaussian" (the initialisations that leave the base weights alone).
    /// - Accepted whatever their value: `lora_dropout`, `task_type`, `inference_mode`,
    ///   `base_model_name_or_path`, `revision`, `peft_version`, `exclude_modules`,
    ///   `layers_to_transform`, `layers_pattern`, `megatron_core`, `qalora_group_size`,
    ///   `auto_mapping`, `ensure_weight_tying`, `_`-prefixed metadata.
    /// - A key foil does not know is accepted only when it switches something off (null,
    ///   false, empty); peft adds such keys with every release.
    pub fn from_config(json: &Value, what: &str) -> Result<Self> {
        let mut r = ConfigReader::new(json, what)?;
        r.require(
            "peft_type",
            json!("LORA"),
            "foil merges LoRA adapters (\"LORA\")",
        )?;
        let rank = r.usize("r", 8)?;
        let lora_alpha = r.f64("lora_alpha", 8.0)?;
        let use_rslora = r.bool("use_rslora", false)?;
        let target_modules = r.raw("target_modules").cloned().unwrap_or(Value::Null);
        r.require(
            "bias",
            json!("none"),
            "foil's LoRA layers have no bias (\"none\")",
        )?;
        for key in ["use_dora", "fan_in_fan_out", "lora_bias", "use_qalora"] {
            r.require(key, json!(false), "foil merges plain LoRA updates (false)")?;
        }
        for key in [
            "rank_pattern",
            "alpha_pattern",
            "modules_to_save",
            "layer_replication",
            "target_parameters",
            "trainable_token_indices",
        ] {
            r.off(
                key,
                "foil merges one rank and alpha for every module (empty or null)",
            )?;
        }
        r.one_of(
            "init_lora_weights",
            json!(true),
            &[json!(true), json!(false), json!("gaussian")],
            "an initialisation that leaves the base weights unchanged (true, false, \"gaussian\")",
        )?;
        r.accept(&[
            "lora_dropout",
            "task_type",
            "inference_mode",
            "base_model_name_or_path",
            "revision",
            "peft_version",
            "exclude_modules",
            "layers_to_transform",
            "layers_pattern",
            "megatron_core",
            "qalora_group_size",
            "auto_mapping",
            "ensure_weight_tying",
        ]);
        let off: Vec<String> = r
            .unknown_keys()
            .into_iter()
            .filter(|k| json.get(k).is_some_and(is_off))
            .collect();
        let off: Vec<&str> = off.iter().map(String::as_str).collect();
        r.accept(&off);
        r.finish()?;
        if rank == 0 {
            return Err(Error::format(
                what.to_string(),
                "key `r`: expected a rank >= 1, found 0",
            ));
        }
        Ok(Self {
            r: rank,
            lora_alpha,
            use_rslora,
            target_modules,
        })
    }

    /// The alpha that [`LoraDelta::new`] (which scales by `alpha / r`) needs for this
    /// configuration's scale at rank `r`.
    pub fn effective_alpha(&self, r: usize) -> f64 {
        if self.use_rslora {
            self.lora_alpha * (r as f64).sqrt()
        } else {
            self.lora_alpha
        }
    }
}

/// One adapted projection of a LoRA file.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModule {
    /// The projection's path in diffusers' UNet (`down_blocks.1.attentions.0.to_q`).
    pub path: String,
    /// The rank of its update.
    pub rank: usize,
    /// Its alpha: the update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// The file's name of `A` (`[rank, in]`).
    pub a_name: String,
    /// The file's name of `B` (`[out, rank]`).
    pub b_name: String,
    /// `[rank, in]`.
    pub a_shape: [usize; 2],
    /// `[out, rank]`.
    pub b_shape: [usize; 2],
}

/// A LoRA adapter of the Kandinsky UNet on disk, its modules mapped to foil's (diffusers')
/// module paths; [`attach`](Self::attach) puts it on a UNet.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLoraFile {
    /// The weights file.
    pub weights: PathBuf,
    /// How its tensors are named.
    pub layout: LoraLayout,
    /// peft's configuration, when the adapter has one.
    pub config: Option<PeftLoraConfig>,
    /// The adapted projections, by path.
    pub modules: Vec<LoraModule>,
}

impl UNetLoraFile {
    /// Opens a LoRA adapter: a peft folder (`adapter_config.json` and `adapter_model.safetensors`
    /// or `.bin`), a diffusers folder (`pytorch_lora_weights.safetensors` or `.bin`), or a
    /// weights file (with peft's `adapter_config.json` beside it if there is one). Reads the
    /// configuration and the tensors' names and shapes; the values are read by
    /// [`attach`](Self::attach).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (weights, config_path) = if path.is_dir() {
            let config = path.join(PEFT_CONFIG);
            let stem = if config.is_file() {
                "adapter_model"
            } else {
                "pytorch_lora_weights"
            };
            let weights = ["safetensors", "bin"]
                .iter()
                .map(|ext| path.join(format!("{stem}.{ext}")))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    Error::format(
                        path.display().to_string(),
                        format!(
                            "no LoRA adapter here: expected {PEFT_CONFIG} with \
                             adapter_model.safetensors (peft), or pytorch_lora_weights.safetensors \
                             (diffusers); found no {stem}.safetensors or {stem}.bin"
                        ),
                    )
                })?;
            (weights, config.is_file().then_some(config))
        } else if path.is_file() {
            let config = path.parent().map(|d| d.join(PEFT_CONFIG));
            (path.to_path_buf(), config.filter(|c| c.is_file()))
        } else {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such LoRA file or folder"),
            ));
        };
        let config = config_path
            .as_deref()
            .map(PeftLoraConfig::from_file)
            .transpose()?;
        let what = weights.display().to_string();
        let file = TensorFile::open_any(&weights)?;
        let shapes: Vec<NamedShape> = file
            .names()
            .map(|name| (name.to_string(), file.shape(name).unwrap_or(&[]).to_vec()))
            .collect();
        let mut pairs: BTreeMap<String, [Option<NamedShape>; 2]> = BTreeMap::new();
        let layout = if config.is_some() {
            LoraLayout::Peft
        } else {
            LoraLayout::Diffusers
        };
        for (name, shape) in shapes {
            let (path, which) =
                lora_module_path(&name).map_err(|e| Error::format(what.clone(), e))?;
            let slot = &mut pairs.entry(path).or_default()[which];
            *slot = Some((name, shape));
        }
        if pairs.is_empty() {
            return Err(Error::Empty {
                what: format!("LoRA tensors in {what}").into(),
                hint: "expected <module>.lora_A.weight and <module>.lora_B.weight".into(),
            });
        }
        let mut modules = Vec::with_capacity(pairs.len());
        for (path, [a, b]) in pairs {
            let (Some((a_name, a_shape)), Some((b_name, b_shape))) = (a, b) else {
                return Err(Error::format(
                    what.clone(),
                    format!("LoRA module `{path}` has only one of its A (down) and B (up) factors"),
                ));
            };
            let (a_shape, b_shape) = match (a_shape.as_slice(), b_shape.as_slice()) {
                (&[ra, d_in], &[d_out, rb]) if ra == rb && ra > 0 => ([ra, d_in], [d_out, rb]),
                _ => {
                    return Err(Error::shape(
                        format!("LoRA factors of `{path}` in {what}"),
                        "A [r, in] and B [out, r] with the same r >= 1",
                        format!("A {a_shape:?}, B {b_shape:?}"),
                    ));
                }
            };
            modules.push(LoraModule {
                path,
                rank: a_shape[0],
                alpha: 0.0,
                a_name,
                b_name,
                a_shape,
                b_shape,
            });
        }
        match &config {
            Some(c) => {
                for m in &mut modules {
                    if m.rank != c.r {
                        return Err(Error::shape(
                            format!("LoRA rank of `{}` in {what}", m.path),
                            format!("r = {} ({PEFT_CONFIG})", c.r),
                            m.rank,
                        ));
                    }
                    m.alpha = c.effective_alpha(m.rank);
                }
            }
            None => {
                // diffusers (get_peft_kwargs without network alphas): lora_alpha is the rank of
                // the first module (here in name order), for every module.
                let alpha = modules[0].rank as f64;
                for m in &mut modules {
                    m.alpha = alpha;
                }
            }
        }
        Ok(Self {
            weights,
            layout,
            config,
            modules,
        })
    }

    /// `unet` with this adapter's updates beside its projections (replacing any there), not
    /// merged: the adapter can be trained further or saved with
    /// [`KandinskyUNet::lora_tensors`]. Fails naming the module when the UNet has no such
    /// projection or the factors do not fit it, and when the file holds anything else.
    pub fn attach<B: Backend>(&self, mut unet: KandinskyUNet<B>) -> Result<KandinskyUNet<B>> {
        let device = unet
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| Error::format("Kandinsky UNet", "the network has no parameters"))?;
        let mut file = TensorFile::open_any(&self.weights)?;
        for m in &self.modules {
            let a = file.take::<B, 2>(&m.a_name, m.a_shape, &device).val();
            let b = file.take::<B, 2>(&m.b_name, m.b_shape, &device).val();
            let delta = LoraDelta::new(
                m.a_shape[1],
                m.b_shape[0],
                a.transpose(),
                b.transpose(),
                m.alpha,
            )?;
            unet.set_lora_update(&m.path, delta)
                .map_err(|e| Error::format(self.weights.display().to_string(), e))?;
        }
        file.finish()?;
        Ok(unet)
    }

    /// `unet` with this adapter merged into its weights (`W + alpha / r A B`).
    pub fn merge_into<B: Backend>(&self, unet: KandinskyUNet<B>) -> Result<KandinskyUNet<B>> {
        Ok(self.attach(unet)?.merge_lora())
    }
}

/// `unet` with the LoRA adapter at `path` merged into its weights: a peft folder
/// (`adapter_config.json` + `adapter_model.safetensors`; rank and alpha from the config), a
/// diffusers LoRA folder or file (`pytorch_lora_weights.safetensors`; alpha = rank, as diffusers
/// loads it), or a weights file. See [`UNetLoraFile`].
pub fn load_lora_into_unet<B: Backend>(
    unet: KandinskyUNet<B>,
    path: impl AsRef<Path>,
) -> Result<KandinskyUNet<B>> {
    UNetLoraFile::open(path)?.merge_into(unet)
}

/// The module path and factor (0: A / down, 1: B / up) of a LoRA tensor name, in peft's,
/// diffusers' or diffusers' older attention-processor layout.
fn lora_module_path(name: &str) -> std::result::Result<(String, usize), String> {
    let bare = name
        .strip_prefix("base_model.model.")
        .or_else(|| name.strip_prefix("unet."))
        .unwrap_or(name);
    // diffusers' KEYS_TO_ALWAYS_REPLACE and UNET_TO_DIFFUSERS, plus the added-KV processor's
    // add_k_proj_lora / add_v_proj_lora.
    let mut key = bare.replace(".processor.", ".");
    for (old, new) in [
        (".to_out_lora.up.", ".to_out.0.lora_B."),
        (".to_out_lora.down.", ".to_out.0.lora_A."),
        (".to_q_lora.up.", ".to_q.lora_B."),
        (".to_q_lora.down.", ".to_q.lora_A."),
        (".to_k_lora.up.", ".to_k.lora_B."),
        (".to_k_lora.down.", ".to_k.lora_A."),
        (".to_v_lora.up.", ".to_v.lora_B."),
        (".to_v_lora.down.", ".to_v.lora_A."),
        (".add_k_proj_lora.up.", ".add_k_proj.lora_B."),
        (".add_k_proj_lora.down.", ".add_k_proj.lora_A."),
        (".add_v_proj_lora.up.", ".add_v_proj.lora_B."),
        (".add_v_proj_lora.down.", ".add_v_proj.lora_A."),
        (".lora.up.", ".lora_B."),
        (".lora.down.", ".lora_A."),
    ] {
        key = key.replace(old, new);
    }
    if key.contains("lora_magnitude_vector") || key.contains("dora_scale") {
        return Err(format!(
            "`{name}` is a DoRA tensor; foil merges plain LoRA adapters"
        ));
    }
    if let Some(path) = key.strip_suffix(".lora_A.weight") {
        return Ok((path.to_string(), 0));
    }
    if let Some(path) = key.strip_suffix(".lora_B.weight") {
        return Ok((path.to_string(), 1));
    }
    Err(format!(
        "unexpected tensor `{name}`: a UNet LoRA file holds <module>.lora_A.weight and \
         <module>.lora_B.weight (or lora.down / lora.up), optionally under base_model.model. \
         or unet."
    ))
}

#[cfg(test)]
mod tests {
    use super::lora_module_path;

    #[test]
    fn every_layout_maps_to_diffusers_module_paths() {
        let attn = "down_blocks.1.attentions.0";
        for (name, path, which) in [
            (
                format!("base_model.model.{attn}.to_q.lora_A.weight"),
                format!("{attn}.to_q"),
                0,
            ),
            (
                format!("unet.{attn}.to_out.0.lora_B.weight"),
                format!("{attn}.to_out.0"),
                1,
            ),
            (
                format!("unet.{attn}.add_k_proj.lora.down.weight"),
                format!("{attn}.add_k_proj"),
                0,
            ),
            (
                format!("{attn}.processor.to_out_lora.up.weight"),
                format!("{attn}.to_out.0"),
                1,
            ),
            (
                format!("{attn}.processor.add_v_proj_lora.down.weight"),
                format!("{attn}.add_v_proj"),
                0,
            ),
            (
                "mid_block.attentions.0.to_v.lora_B.weight".to_string(),
                "mid_block.attentions.0.to_v".to_string(),
                1,
            ),
        ] {
            assert_eq!(lora_module_path(&name), Ok((path, which)), "{name}");
        }
        assert!(lora_module_path("unet.x.alpha").is_err());
        assert!(
            lora_module_path("unet.a.to_q.lora_magnitude_vector")
                .unwrap_err()
                .contains("DoRA")
        );
    }
}
