//! The DDPM folder: guided-diffusion's UNet (ADM) with its linear noise schedule, described by
//! a [`DdpmSpec`] beside the record `adm.mpk`.

use std::path::Path;

use burn::tensor::backend::Backend;
use foil_core::Result;
use foil_schedule::NoiseSchedule;
use serde::{Deserialize, Serialize};

use super::{Adm, AdmConfig};
use crate::folder::{Format, ModelSpec, load_record, load_spec};

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
