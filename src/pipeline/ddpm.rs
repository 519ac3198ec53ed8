//! The unconditional DDPM MaskDiME guides: guided-diffusion's UNet (ADM) at a small width,
//! trained with the simple eps loss on the images of both classes.

use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::record::Recorder;
use burn::tensor::backend::{AutodiffBackend, Backend};
use foil_core::{Error, Result};
use foil_data::Dataset;
use foil_models::adm::{Adm, AdmConfig};
use foil_schedule::NoiseSchedule;
use foil_train::{ImageSet, TrainConfig, train_ddpm, trainable};
use serde::{Deserialize, Serialize};

use foil_core::image_io::image_mode;
use foil_models::folder::{Format, ModelSpec, load_spec, recorder, save_spec};

const RECORD: &str = "adm";

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

/// Trains the DDPM of `spec` on every image of `train` and writes the folder `dir`
/// (`model.json`, `adm.mpk`; the training run under `dir/train` resumes when rerun).
/// Returns the last logged loss.
pub fn train_ddpm_on<B: AutodiffBackend>(
    spec: &DdpmSpec,
    train: &Dataset,
    config: &TrainConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<f64> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (mode, resize) = image_mode(spec.image_size);
    let all: Vec<usize> = (0..train.len()).collect();
    let set = ImageSet::<B>::from_dataset(train, &all, mode, resize, device)?;
    // The ADM builds some parameters from computed tensors: build on the inner backend, lift.
    let inner = spec.adm_config().init::<B::InnerBackend>(device)?;
    let model = trainable(<Adm<B> as AutodiffModule<B>>::from_inner(inner));
    let run = TrainConfig {
        out_dir: dir.join("train"),
        ..config.clone()
    };
    let trained = train_ddpm(model, &set, &spec.schedule()?, &run)?;
    let path = dir.join(RECORD);
    trained
        .model
        .valid()
        .save_file(path.clone(), &recorder())
        .map_err(|e| Error::format(path.display().to_string(), e))?;
    save_spec(dir, spec)?;
    Ok(trained.losses.last().map(|&(_, l)| l).unwrap_or(f64::NAN))
}

/// Loads a DDPM folder written by [`train_ddpm_on`].
pub fn load_ddpm<B: Backend>(dir: &Path, device: &B::Device) -> Result<(DdpmSpec, Adm<B>)> {
    let spec = DdpmSpec::load(dir)?;
    let path = dir.join(RECORD);
    let record = recorder().load(path.clone(), device).map_err(|e| {
        Error::format(
            path.display().to_string(),
            format!("{e} (train the DDPM first: foil train ddpm)"),
        )
    })?;
    let net = spec.adm_config().init::<B>(device)?.load_record(record);
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
