//! Publishers' folders as they are downloaded: configurations read from their own
//! `config.json`, never hard-coded, and weights by their original names.
//!
//! - diffusers model folders: [`load_unet`] (`unet/`, a `UNet2DConditionModel`),
//!   [`load_movq`] (`movq/`, a `VQModel`), [`load_scheduler`] (`scheduler/`);
//! - a diffusers pipeline folder: [`DecoderPipelineFolder`] (`kandinsky-2-2-decoder`,
//!   `model_index.json` checked to be a Kandinsky 2.2 decoder);
//! - a transformers folder: [`load_clip_vision`] (`image_encoder/` of `kandinsky-2-2-prior`,
//!   its preprocessing from `preprocessor_config.json` there or in `../image_processor/`);
//! - LoRA adapters: [`load_lora_into_unet`] (peft's `save_pretrained` and diffusers' LoRA files).
//!
//! The configuration readers are [`UNetConfig::from_diffusers_config`],
//! [`MoVqConfig::from_diffusers_config`], [`ClipVisionConfig::from_transformers_config`],
//! [`ClipImageProcessor::from_preprocessor_config`], [`PeftLoraConfig::from_config`] and
//! foil-schedule's [`DiffusersScheduler`]. Each reads the keys it knows, refuses a value foil
//! cannot honour naming the file, the key and the value, accepts the keys that do not change
//! what the network computes, and refuses every key it does not know, so a newer library's key
//! that would change the network is never silently ignored. `_`-prefixed keys are metadata.
//!
//! ```no_run
//! # use burn::backend::NdArray;
//! use foil_models::hub::{self, DecoderPipelineFolder};
//! # fn main() -> foil_core::Result<()> {
//! let device = Default::default();
//! let decoder = DecoderPipelineFolder::open("kandinsky-2-2-decoder")?;
//! let unet = decoder.load_unet::<NdArray>(&device)?;
//! let unet = hub::load_lora_into_unet(unet, "my-domain-lora")?;
//! let movq = decoder.load_movq::<NdArray>(&device)?;
//! let steps = decoder.scheduler()?.inference_steps(100)?;
//! let clip = hub::load_clip_vision::<NdArray>("kandinsky-2-2-prior/image_encoder", &device)?;
//! # Ok(()) }
//! ```

mod clip;
mod lora;
mod movq;
mod unet;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use foil_core::{Error, Result};
use foil_schedule::diffusers::{ConfigReader, read_json_file};
use foil_schedule::{DiffusersScheduler, SchedulerClass};
use serde_json::Value;

use crate::clip::{ClipImageProcessor, ClipVision, ClipVisionConfig, ignore_text_tower};
use crate::kandinsky::{KandinskyUNet, MoVq, MoVqConfig, UNetConfig};
use crate::weights::TensorFile;

pub use lora::{
    LoraLayout, LoraModule, PEFT_CONFIG, PeftLoraConfig, UNetLoraFile, load_lora_into_unet,
};

/// The configuration file of a diffusers or transformers model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights stem of a diffusers model folder.
pub const DIFFUSERS_WEIGHTS: &str = "diffusion_pytorch_model";
/// The weights stem of a transformers model folder.
pub const TRANSFORMERS_WEIGHTS: &str = "model";
/// The configuration file of a diffusers scheduler folder.
pub const SCHEDULER_CONFIG: &str = "scheduler_config.json";
/// The configuration file of a transformers image processor.
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";
/// The component index of a diffusers pipeline folder.
pub const MODEL_INDEX: &str = "model_index.json";

/// What errors call a decoder pipeline folder.
const PIPELINE: &str = "Kandinsky 2.2 decoder pipeline";
/// What errors call a UNet folder.
const UNET_FOLDER: &str = "diffusers UNet folder";
/// What errors call a MoVQ folder.
const MOVQ_FOLDER: &str = "diffusers MoVQ folder";

/// `dir/name`, which must be a file: otherwise `<kind>: no <name> in <dir>`.
fn required_file(dir: &Path, name: &str, kind: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::format(
            kind.to_string(),
            format!("no {name} in {}", dir.display()),
        ))
    }
}

/// The weights `stem` of the model folder `dir`, as diffusers and transformers save them (one
/// file, shards with their index, the `.fp16` variant, PyTorch's `.bin`).
fn open_weights(dir: &Path, stem: &str) -> Result<TensorFile> {
    TensorFile::open_folder(dir, stem)
}

/// `_class_name` must be absent or one of `allowed`.
fn class_name(r: &mut ConfigReader<'_>, allowed: &[&str]) -> Result<()> {
    match r.raw("_class_name") {
        None => Ok(()),
        Some(Value::String(name)) if allowed.contains(&name.as_str()) => Ok(()),
        Some(v) => Err(r.error(
            "_class_name",
            format!("expected {}, found {v}", allowed.join(" or ")),
        )),
    }
}

/// A per-level setting foil keeps as one value: an integer, or a list with one equal value per
/// level (`levels` of them).
fn per_level(r: &mut ConfigReader<'_>, key: &str, default: usize, levels: usize) -> Result<usize> {
    match r.raw(key) {
        None => Ok(default),
        Some(Value::Array(items)) => {
            let values = items
                .iter()
                .map(|v| r.as_usize(key, v))
                .collect::<Result<Vec<usize>>>()?;
            match values.first() {
                Some(&first) if values.len() == levels && values.iter().all(|&v| v == first) => {
                    Ok(first)
                }
                _ => Err(r.error(
                    key,
                    format!(
                        "foil supports one value for every level (an integer, or {levels} equal \
                         values), found {}",
                        Value::Array(items.clone())
                    ),
                )),
            }
        }
        Some(v) => r.as_usize(key, v),
    }
}

/// The Kandinsky UNet of a diffusers `unet/` folder: `config.json`
/// ([`UNetConfig::from_diffusers_config`]) and `diffusion_pytorch_model.safetensors` (or its
/// shards, `.fp16` variant or `.bin`).
pub fn load_unet<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<KandinskyUNet<B>> {
    let dir = dir.as_ref();
    let config = UNetConfig::from_diffusers_file(required_file(dir, CONFIG_FILE, UNET_FOLDER)?)?;
    config.load(open_weights(dir, DIFFUSERS_WEIGHTS)?, device)
}

/// The MoVQ autoencoder of a diffusers `movq/` folder: `config.json`
/// ([`MoVqConfig::from_diffusers_config`]) and `diffusion_pytorch_model.safetensors` (or its
/// shards, `.fp16` variant or `.bin`).
pub fn load_movq<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<MoVq<B>> {
    let dir = dir.as_ref();
    let config = MoVqConfig::from_diffusers_file(required_file(dir, CONFIG_FILE, MOVQ_FOLDER)?)?;
    config.load(open_weights(dir, DIFFUSERS_WEIGHTS)?, device)
}

/// The scheduler of a diffusers `scheduler/` folder (`scheduler_config.json`).
pub fn load_scheduler(dir: impl AsRef<Path>) -> Result<DiffusersScheduler> {
    DiffusersScheduler::from_file(required_file(
        dir.as_ref(),
        SCHEDULER_CONFIG,
        "diffusers scheduler folder",
    )?)
}

/// The image processor of a transformers model folder: `dir/preprocessor_config.json`, else
/// `dir/../image_processor/preprocessor_config.json` (the layout of `kandinsky-2-2-prior`),
/// else `None`.
pub fn find_preprocessor_config(dir: impl AsRef<Path>) -> Option<PathBuf> {
    let dir = dir.as_ref();
    let here = dir.join(PREPROCESSOR_CONFIG);
    if here.is_file() {
        return Some(here);
    }
    dir.parent()
        .map(|parent| parent.join("image_processor").join(PREPROCESSOR_CONFIG))
        .filter(|p| p.is_file())
}

/// CLIP's vision tower of a transformers folder: `config.json`
/// ([`ClipVisionConfig::from_transformers_config`]; a `CLIPVisionModelWithProjection`'s, or a
/// full `CLIPModel`'s whose text tower is skipped) and `model.safetensors` (or its shards,
/// `.fp16` variant or `pytorch_model.bin`), with the preprocessing of [`find_preprocessor_config`] (the
/// configuration's default, [`ClipImageProcessor::for_size`], when there is none).
pub fn load_clip_vision<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<ClipVision<B>> {
    let dir = dir.as_ref();
    let config_path = required_file(dir, CONFIG_FILE, "transformers CLIP folder")?;
    let json = read_json_file(&config_path)?;
    let config =
        ClipVisionConfig::from_transformers_config(&json, &config_path.display().to_string())?;
    let full_clip = json.get("vision_config").is_some();
    let mut file = open_weights(dir, TRANSFORMERS_WEIGHTS)?;
    if full_clip {
        ignore_text_tower(&mut file);
    }
    let model = config.load(&mut file, device)?;
    file.finish()?;
    let processor = match find_preprocessor_config(dir) {
        Some(path) => ClipImageProcessor::from_preprocessor_file(path)?,
        None => ClipImageProcessor::for_size(config.image_size),
    };
    model.with_processor(processor).map_err(|e| {
        Error::format(
            dir.display().to_string(),
            format!("the image processor does not fit the network: {e}"),
        )
    })
}

/// The pipeline classes whose folders hold a Kandinsky 2.2 decoder (`unet`, `movq`,
/// `scheduler`) foil can run.
pub const DECODER_PIPELINES: [&str; 2] = ["KandinskyV22Pipeline", "KandinskyV22Img2ImgPipeline"];

/// A diffusers Kandinsky 2.2 decoder pipeline folder (`kandinsky-community/kandinsky-2-2-decoder`
/// as downloaded): `model_index.json` checked, and the paths of its components.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderPipelineFolder {
    /// The pipeline folder.
    pub root: PathBuf,
    /// `_class_name` of `model_index.json` (one of [`DECODER_PIPELINES`]).
    pub class_name: String,
    /// The `unet/` folder.
    pub unet: PathBuf,
    /// The `movq/` folder.
    pub movq: PathBuf,
    /// The `scheduler/` folder.
    pub scheduler: PathBuf,
    /// The scheduler class `model_index.json` names.
    pub scheduler_class: SchedulerClass,
}

impl DecoderPipelineFolder {
    /// Opens the pipeline folder `dir`: reads `model_index.json`, which must name a decoder
    /// pipeline ([`DECODER_PIPELINES`]) with `unet` `["diffusers", "UNet2DConditionModel"]`,
    /// `movq` `["diffusers", "VQModel"]` and `scheduler` `DDPMScheduler` or `DDIMScheduler`
    /// (any other component or value is refused naming its key), and checks that each
    /// component folder exists with its configuration.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let index_path = required_file(&root, MODEL_INDEX, PIPELINE)?;
        let json = read_json_file(&index_path)?;
        let mut r = ConfigReader::new(&json, index_path.display().to_string())?;
        let class = r.string("_class_name", "")?;
        if !DECODER_PIPELINES.contains(&class.as_str()) {
            return Err(r.error(
                "_class_name",
                format!(
                    "foil opens Kandinsky 2.2 decoder pipelines ({}), found \"{class}\"",
                    DECODER_PIPELINES.join(", ")
                ),
            ));
        }
        let mut component = |key: &str, allowed: &[&str]| -> Result<String> {
            let value = r.raw(key).cloned().unwrap_or(Value::Null);
            let class = match value.as_array().map(Vec::as_slice) {
                Some([Value::String(lib), Value::String(class)]) if lib == "diffusers" => {
                    class.clone()
                }
                _ => String::new(),
            };
            if allowed.contains(&class.as_str()) {
                Ok(class)
            } else {
                Err(r.error(
                    key,
                    format!(
                        "expected [\"diffusers\", \"{}\"], found {value}",
                        allowed.join("\" or \"")
                    ),
                ))
            }
        };
        component("unet", &["UNet2DConditionModel"])?;
        component("movq", &["VQModel"])?;
        let scheduler = component("scheduler", &["DDPMScheduler", "DDIMScheduler"])?;
        r.finish()?;
        let scheduler_class = SchedulerClass::from_class_name(&scheduler).ok_or_else(|| {
            Error::format(
                index_path.display().to_string(),
                format!("key `scheduler`: unknown class {scheduler}"),
            )
        })?;
        let folder = Self {
            unet: root.join("unet"),
            movq: root.join("movq"),
            scheduler: root.join("scheduler"),
            root,
            class_name: class,
            scheduler_class,
        };
        for part in [
            "unet/config.json",
            "movq/config.json",
            "scheduler/scheduler_config.json",
        ] {
            required_file(&folder.root, part, PIPELINE)?;
        }
        Ok(folder)
    }

    /// The UNet's configuration (`unet/config.json`).
    pub fn unet_config(&self) -> Result<UNetConfig> {
        UNetConfig::from_diffusers_file(required_file(&self.unet, CONFIG_FILE, UNET_FOLDER)?)
    }

    /// The MoVQ's configuration (`movq/config.json`).
    pub fn movq_config(&self) -> Result<MoVqConfig> {
        MoVqConfig::from_diffusers_file(required_file(&self.movq, CONFIG_FILE, MOVQ_FOLDER)?)
    }

    /// The scheduler (`scheduler/scheduler_config.json`), read as the class `model_index.json`
    /// names, as diffusers loads it.
    pub fn scheduler(&self) -> Result<DiffusersScheduler> {
        let path = required_file(&self.root, "scheduler/scheduler_config.json", PIPELINE)?;
        DiffusersScheduler::from_config_as(
            &read_json_file(&path)?,
            &path.display().to_string(),
            self.scheduler_class,
        )
    }

    /// The UNet ([`load_unet`] on `unet/`).
    pub fn load_unet<B: Backend>(&self, device: &B::Device) -> Result<KandinskyUNet<B>> {
        load_unet(&self.unet, device)
    }

    /// The MoVQ ([`load_movq`] on `movq/`).
    pub fn load_movq<B: Backend>(&self, device: &B::Device) -> Result<MoVq<B>> {
        load_movq(&self.movq, device)
    }
}
