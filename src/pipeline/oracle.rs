//! Training the oracle (`foil_models::oracle`): each member from scratch, then the ensemble
//! scored on the held-out set.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use foil_core::{Classifier, Error, Result};
use foil_data::Dataset;
use foil_models::oracle::{Arch, OracleSpec, efficientnet, load_oracle, mobilenet, resnet};
use foil_train::{
    ImageSet, TrainConfig, evaluate_accuracy, recalibrate_batchnorm, train_classifier,
};

use foil_core::image_io::image_mode;
use foil_models::folder::{save_record, save_spec};

/// Trains every member of `spec` on `train` (labels 0 / 1), scores it and then the ensemble on
/// `test`, and writes the oracle folder `dir` (`model.json`, one record per member; training
/// runs under `dir/train-<member>` resume when rerun). The members' initial weights come from
/// the backend's generator seeded with `config.seed` ([`TrainConfig::seed_backend`]), so one
/// seed trains one oracle. Returns the spec with the test accuracies.
pub fn train_oracle<B: AutodiffBackend>(
    spec: &OracleSpec,
    train: &Dataset,
    test: &Dataset,
    config: &TrainConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<OracleSpec> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (mode, resize) = image_mode(spec.image_size);
    let all = |d: &Dataset| (0..d.len()).collect::<Vec<_>>();
    let train_set = ImageSet::<B>::from_dataset(train, &all(train), mode, resize, device)?;
    let test_set =
        ImageSet::<B::InnerBackend>::from_dataset(test, &all(test), mode, resize, device)?;
    let mut out = spec.clone();
    // The members' initial weights: drawn in order from the seeded generator.
    config.seed_backend::<B>(device);
    for member in &mut out.members {
        let run = TrainConfig {
            out_dir: dir.join(format!("train-{}", member.file)),
            ..config.clone()
        };
        let path = dir.join(&member.file);
        let accuracy = match member.arch {
            Arch::Resnet18 => fit(
                resnet(member.width).init::<B>(device)?,
                &train_set,
                &test_set,
                &run,
                &path,
            )?,
            Arch::MobilenetV2 => fit(
                mobilenet(member.width).init::<B>(device)?,
                &train_set,
                &test_set,
                &run,
                &path,
            )?,
            Arch::EfficientnetB0 => fit(
                efficientnet(member.width).init::<B>(device)?,
                &train_set,
                &test_set,
                &run,
                &path,
            )?,
        };
        member.test_accuracy = Some(accuracy);
    }
    save_spec(dir, &out)?;
    let (_, ensemble) = load_oracle::<B::InnerBackend>(dir, device)?;
    out.test_accuracy = Some(evaluate_accuracy(&ensemble, &test_set, 64)?);
    save_spec(dir, &out)?;
    Ok(out)
}

fn fit<B, M>(
    model: M,
    train: &ImageSet<B>,
    test: &ImageSet<B::InnerBackend>,
    config: &TrainConfig,
    path: &Path,
) -> Result<f64>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B> + Clone,
    M::InnerModule: Classifier<B::InnerBackend>,
{
    let trained = train_classifier(model, train, config)?;
    let model = trained.model.valid();
    let device = train.device();
    let plain = train.to_backend::<B::InnerBackend>(&device);
    recalibrate_batchnorm(&model, &plain, config.batch_size, 50, config.seed)?;
    let accuracy = evaluate_accuracy(&model, test, 64)?;
    save_record(model, path)?;
    Ok(accuracy)
}
