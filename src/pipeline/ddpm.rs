//! Training the unconditional DDPM MaskDiME guides (`foil_models::adm::folder`): guided-diffusion's
//! UNet at a small width, the simple eps loss on the images of both classes.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use foil_core::{Error, Result};
use foil_data::Dataset;
use foil_models::adm::Adm;
use foil_models::adm::folder::{DdpmSpec, RECORD};
use foil_train::{ImageSet, TrainConfig, train_ddpm, trainable};

use foil_core::image_io::image_mode;
use foil_models::folder::save_folder;

/// Trains the DDPM of `spec` on every image of `train` and writes the folder `dir`
/// (`model.json`, `adm.mpk`; the training run under `dir/train` resumes when rerun), from
/// initial weights drawn with `config.seed` ([`TrainConfig::seed_backend`]). Returns the last
/// logged loss.
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
    config.seed_backend::<B::InnerBackend>(device);
    let inner = spec.adm_config().init::<B::InnerBackend>(device)?;
    let model = trainable(<Adm<B> as AutodiffModule<B>>::from_inner(inner));
    let run = TrainConfig {
        out_dir: dir.join("train"),
        ..config.clone()
    };
    let trained = train_ddpm(model, &set, &spec.schedule()?, &run)?;
    save_folder(dir, RECORD, trained.model.valid(), spec)?;
    Ok(trained.last_loss())
}
