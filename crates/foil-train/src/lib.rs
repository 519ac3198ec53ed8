//! Training loops for foil, generic over a burn
//! [`AutodiffBackend`](burn::tensor::backend::AutodiffBackend).
//!
//! - [`train_classifier`]: a one-logit binary classifier (any module implementing
//!   [`foil_core::Classifier`]) with BCE-with-logits on a two-class set; [`evaluate_accuracy`]
//!   for the held-out side;
//! - [`train_ddpm`]: an unconditional eps-prediction DDPM (any module implementing
//!   [`foil_core::Denoiser`]) with the simple MSE loss;
//! - the shared loop ([`TrainConfig`]): Adam with a constant or cosine [`LrSchedule`], batch
//!   [`Augment`]ation (mirror, shifts), seeded shuffling, a JSON-lines metrics log
//!   (`metrics.jsonl`), atomic checkpoints (model and Adam state, burn's named MessagePack
//!   records at full precision) and resume: rerunning with the same `out_dir` continues from the
//!   last checkpoint, and gives the same weights as an uninterrupted run;
//! - [`train_multiclass`]: a `K`-class classifier with softmax cross-entropy (an encoder's
//!   pre-training on every class of a dataset);
//! - [`train_embedding_ddpm`]: an image-embedding-conditioned denoiser trained jointly with its
//!   encoder (condition dropout for classifier-free guidance), the decoder DIFFusion edits with;
//! - [`recalibrate_batchnorm`]: BatchNorm running statistics re-estimated with the final weights;
//! - [`ImageSet`]: the training images, converted once and kept on the device.
//!
//! No RNG state is saved: every random draw of step `s` (the epoch's permutation, DDPM
//! timesteps and noise) is a pure function of `(seed, s)`.
//!
//! ```no_run
//! # fn main() -> foil_core::Result<()> {
//! use burn::backend::{Autodiff, Flex};
//! use foil_core::image_io::{ColorMode, Resize};
//! use foil_models::resnet::ResNetConfig;
//! use foil_train::{ImageSet, TrainConfig, evaluate_accuracy, recalibrate_batchnorm, train_classifier};
//! use burn::module::AutodiffModule;
//!
//! // burn-flex: its convolution backward is much faster than burn-ndarray's (docs/train.md).
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let data = foil_data::procedural::kiki_bouba(200, 16, 0)?;
//! let split = data.split(0.2, 0)?;
//! let train = ImageSet::<B>::from_dataset(&data, &split.train, ColorMode::Rgb, Resize::Keep, &device)?;
//! let test = ImageSet::<Flex>::from_dataset(&data, &split.test, ColorMode::Rgb, Resize::Keep, &device)?;
//! let model = ResNetConfig::tiny().with_outputs(1).with_small_input(true).init::<B>(&device)?;
//! let config = TrainConfig::new(300, 32, 3e-3, "runs/kiki-bouba");
//! let trained = train_classifier(model, &train, &config)?;
//! let model = trained.model.valid();
//! // Running BatchNorm statistics re-estimated with the final weights.
//! recalibrate_batchnorm(&model, &train.to_backend::<Flex>(&device), 32, 50, 0)?;
//! let accuracy = evaluate_accuracy(&model, &test, 64)?;
//! # let _ = accuracy;
//! # Ok(())
//! # }
//! ```

mod data;
mod run;
mod tasks;

pub use data::{Augment, ImageSet};
pub use run::{LrSchedule, MetricsLine, TrainConfig, Trained, read_metrics, trainable};
pub use tasks::{
    bce_with_logits, evaluate_accuracy, recalibrate_batchnorm, train_classifier, train_ddpm,
    train_embedding_ddpm, train_multiclass,
};
