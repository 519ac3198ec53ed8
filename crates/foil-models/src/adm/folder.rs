//! The DDPM folder: guided-diffusion's UNet (ADM) with its linear noise schedule, described by
//! a [`DdpmSpec`] beside the record `adm.mpk`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use foil_core::{Error, Result};
use foil_schedule::NoiseSchedule;
use serde::{Deserialize, Serialize};

use super::{Adm, AdmConfig};
use crate::folder::{Format, ModelSpec, load_record, load_spec};
use crate::weights::{TensorFile, Weights};

/// The record file of the network, without burn's `.mpk` extension.
pub const RECORD: &str = "adm";

/// What a DDPM folder holds (`model.json`): the network and its noise schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdpmSpec {
    /// Format version (`foil ddpm 1`).
    pub format: Format,
    /// The classes it was trained on (for the record).
    pub classes: Vec<String>,
    /// Side of the square RGB images.
    pub image_size: u32,
    /// Base width (a multiple of 32: GroupNorm has 32 groups).
    pub model_channels: usize,
    /// Width multipliers per level.
    pub channel_mult: Vec<f64>,
    /// Residual blocks per level.
    pub num_res_blocks: usize,
    /// Resolutions (in pixels) with self-attention.
    pub attention_at: Vec<usize>,
    /// Diffusion steps `T` of guided-diffusion's linear schedule (betas scaled by `1000 / T`).
    pub diffusion_steps: usize,
}

impl DdpmSpec {
    /// A small DDPM for `image_size` images: width 32, two levels, one block each, attention
    /// at a quarter of the resolution, `T = 1000`.
    pub fn small(classes: Vec<String>, image_size: u32) -> Self {
        Self {
            format: Self::expected_format(),
            classes,
            image_size,
            model_channels: 32,
            channel_mult: vec![1.0, 2.0],
            num_res_blocks: 1,
            attention_at: vec![(image_size as usize / 2).max(1)],
            diffusion_steps: 1000,
        }
    }

    /// The network's configuration (guided-diffusion's switches as DiME uses them, fixed
    /// variance: the sampler then uses fixed-small).
    pub fn adm_config(&self) -> AdmConfig {
        AdmConfig {
            image_size: self.image_size as usize,
            in_channels: 3,
            model_channels: self.model_channels,
            learn_sigma: false,
            num_res_blocks: self.num_res_blocks,
            attention_resolutions: vec![],
            channel_mult: self.channel_mult.clone(),
            num_head_channels: Some(32.min(self.model_channels)),
            ..AdmConfig::tiny()
        }
        .with_attention_at(&self.attention_at)
    }

    /// guided-diffusion's linear schedule for `diffusion_steps`.
    pub fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::guided_linear(self.diffusion_steps)
    }

    /// Reads `dir/model.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        load_spec(dir)
    }
}

/// Loads a DDPM folder (written by `foil::pipeline::train_ddpm_on`).
pub fn load_ddpm<B: Backend>(dir: &Path, device: &B::Device) -> Result<(DdpmSpec, Adm<B>)> {
    let spec = DdpmSpec::load(dir)?;
    let net = spec.adm_config().init::<B>(device)?;
    let hint = "train the DDPM first: foil train ddpm";
    let net = load_record(net, &dir.join(RECORD), hint, device)?;
    Ok((spec, net))
}

impl ModelSpec for DdpmSpec {
    const WHAT: &'static str = "DDPM description";

    fn expected_format() -> Format {
        Format::new("ddpm", 1)
    }

    fn format(&self) -> &Format {
        &self.format
    }
}

/// Diffusion steps of DiME's CelebA DDPM (guided-diffusion's linear betas, `--diffusion_steps
/// 500`).
pub const DIME_DIFFUSION_STEPS: usize = 500;

/// Where a DDPM is: a foil folder or a published guided-diffusion checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum DdpmSource {
    /// A DDPM folder (`foil train ddpm`): its `model.json` holds the network, the schedule and
    /// the image size.
    Folder(PathBuf),
    /// A guided-diffusion checkpoint (`.pt`, `.pth`, `.bin`, `.ckpt` or safetensors) of an
    /// unconditional `UNetModel` state dict, its names as they are or all under one prefix
    /// (`module.`, as `DataParallel` saves them), such as DiME's CelebA DDPM.
    Checkpoint {
        /// The weight file.
        file: PathBuf,
        /// The network's hyper-parameters ([`AdmConfig::dime_celeba128`] for DiME's); its
        /// `image_size` is the size the set is explained at.
        config: AdmConfig,
        /// Diffusion steps `T` of guided-diffusion's linear schedule it was trained with
        /// ([`DIME_DIFFUSION_STEPS`] for DiME's).
        diffusion_steps: usize,
    },
}

impl DdpmSource {
    /// The network, its training schedule and its image size.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<(Adm<B>, NoiseSchedule, u32)> {
        match self {
            DdpmSource::Folder(dir) => {
                let (spec, net) = load_ddpm::<B>(dir, device)?;
                Ok((net, spec.schedule()?, spec.image_size))
            }
            DdpmSource::Checkpoint {
                file,
                config,
                diffusion_steps,
            } => {
                if config.num_classes.is_some() {
                    return Err(Error::out_of_range(
                        "guided-diffusion DDPM configuration",
                        "an unconditional model (num_classes None): MaskDiME's DDPM",
                        format!("num_classes {:?}", config.num_classes),
                    ));
                }
                if *diffusion_steps == 0 {
                    return Err(Error::out_of_range("DDPM diffusion steps", ">= 1", 0));
                }
                let size = u32::try_from(config.image_size).map_err(|_| {
                    Error::out_of_range("DDPM image size", "at most u32::MAX", config.image_size)
                })?;
                let net = load_checkpoint::<B>(file, config, device)?;
                Ok((net, NoiseSchedule::guided_linear(*diffusion_steps)?, size))
            }
        }
    }

    /// DiME's CelebA 128 px DDPM from `file` (500 linear steps).
    pub fn dime_celeba128(file: impl Into<PathBuf>) -> Self {
        Self::Checkpoint {
            file: file.into(),
            config: AdmConfig::dime_celeba128(),
            diffusion_steps: DIME_DIFFUSION_STEPS,
        }
    }
}

/// guided-diffusion's UNet from `file` under `config`, its names as they are or under the one
/// prefix (`module.`, ...) that holds them all; one error lists what did not fit.
pub fn load_checkpoint<B: Backend>(
    file: &Path,
    config: &AdmConfig,
    device: &B::Device,
) -> Result<Adm<B>> {
    /// The first tensor of every `UNetModel`.
    const FIRST: &str = "time_embed.0.weight";
    let tensors = TensorFile::open_any(file)?;
    let root = if tensors.contains(FIRST) {
        None
    } else {
        let roots: Vec<String> = tensors
            .names()
            .filter_map(|n| n.strip_suffix(FIRST)?.strip_suffix('.'))
            .map(str::to_string)
            .collect();
        match <[String; 1]>::try_from(roots) {
            Ok([root]) => Some(root),
            // None or several: the names as they are (`finish` lists what is missing).
            Err(_) => None,
        }
    };
    let w = Weights::<B>::from_file(tensors, device);
    let scoped = match &root {
        Some(root) => w.pp(root),
        None => w.clone(),
    };
    let net = config.build(&scoped)?;
    w.finish()?;
    Ok(net)
}
