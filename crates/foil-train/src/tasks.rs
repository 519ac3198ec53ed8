//! The training tasks: a one-logit binary classifier, an eps-prediction DDPM and an
//! embedding-conditioned DDPM with its encoder.

use burn::module::AutodiffModule;
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{
    Classifier, Denoiser, Error, ImageEncoder, Noise, Result, labels_from_logits, predicted_labels,
};
use foil_schedule::{NoiseSchedule, Steps};
use rand::Rng;

use crate::data::{ImageSet, derive_seed, step_rng};
use crate::run::{TrainConfig, Trained, run};

/// Mean binary cross-entropy of `logits` `[N]` against `targets` `[N]` in `{0, 1}`, in the
/// numerically stable form `max(z, 0) - z y + log(1 + exp(-|z|))` (PyTorch's
/// `BCEWithLogitsLoss`).
pub fn bce_with_logits<B: Backend>(logits: Tensor<B, 1>, targets: Tensor<B, 1>) -> Tensor<B, 1> {
    let softplus_neg_abs = logits.clone().abs().neg().exp().log1p();
    (relu(logits.clone()) - logits * targets + softplus_neg_abs).mean()
}

fn check_binary(labels: &[usize]) -> Result<()> {
    if let Some(&l) = labels.iter().find(|&&l| l > 1) {
        return Err(Error::out_of_range(
            "label of a two-class set",
            "0 or 1 (use Dataset::pair to pick two classes)",
            l,
        ));
    }
    Ok(())
}

/// Trains a one-logit binary classifier (logit > 0 means label 1) with BCE-with-logits and Adam
/// on `train`. Each metrics line carries the batch accuracy. Resumes from `config.out_dir`'s
/// last checkpoint when there is one.
pub fn train_classifier<B, M>(
    model: M,
    train: &ImageSet<B>,
    config: &TrainConfig,
) -> Result<Trained<M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B> + Clone,
{
    if model.num_logits() != 1 {
        return Err(Error::shape(
            "binary classifier logits",
            "1 (one logit per image)",
            model.num_logits(),
        ));
    }
    check_binary(train.labels())?;
    let device = train.device();
    run(
        model,
        config,
        "classifier",
        train.len(),
        &device,
        |model, batch, step| {
            let (images, labels) =
                train.training_batch(batch, &config.augment, config.seed, step)?;
            let n = labels.len();
            let logits = model.logits(images)?;
            if logits.dims() != [n, 1] {
                return Err(Error::shape(
                    "classifier logits",
                    format!("[{n}, 1]"),
                    fmt_dims(&logits.dims()),
                ));
            }
            let logits = logits.reshape([n]);
            let y: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let targets = Tensor::<B, 1>::from_data(TensorData::new(y, [n]), &device);
            let values = foil_core::tensor::to_vec_f32(&logits)?;
            let right = values
                .iter()
                .zip(&labels)
                .filter(|&(&z, &l)| usize::from(z > 0.0) == l)
                .count();
            Ok((
                bce_with_logits(logits, targets),
                Some(right as f64 / n as f64),
            ))
        },
    )
}

/// Trains a `K`-class classifier (`K = model.num_logits() >= 2`, labels `0..K`) with softmax
/// cross-entropy and Adam on `train`. Each metrics line carries the batch accuracy. Used to
/// pre-train an image encoder with a linear head on every class of a dataset, so its
/// embeddings know the classes (as CLIP's do) before a decoder learns to read them.
pub fn train_multiclass<B, M>(
    model: M,
    train: &ImageSet<B>,
    config: &TrainConfig,
) -> Result<Trained<M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B> + Clone,
{
    let k = model.num_logits();
    if k < 2 {
        return Err(Error::shape("multi-class logits", "at least 2", k));
    }
    if let Some(&l) = train.labels().iter().find(|&&l| l >= k) {
        return Err(Error::out_of_range(
            "class label",
            format!("below the {k} logits"),
            l,
        ));
    }
    let device = train.device();
    run(
        model,
        config,
        "multiclass",
        train.len(),
        &device,
        |model, batch, step| {
            let (images, labels) =
                train.training_batch(batch, &config.augment, config.seed, step)?;
            let n = labels.len();
            let logits = model.logits(images)?;
            if logits.dims() != [n, k] {
                return Err(Error::shape(
                    "classifier logits",
                    format!("[{n}, {k}]"),
                    fmt_dims(&logits.dims()),
                ));
            }
            let predicted = labels_from_logits(&logits)?;
            let right = predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
            let idx: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let idx =
                Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(idx, [n, 1]), &device);
            let log_p = burn::tensor::activation::log_softmax(logits, 1);
            let loss = log_p.gather(1, idx).mean().neg().reshape([1]);
            Ok((loss, Some(right as f64 / n as f64)))
        },
    )
}

/// The fraction of `data` that `model` classifies right, in batches of `batch_size`.
/// One-logit models predict label 1 for a positive logit; K-logit models the arg-max.
pub fn evaluate_accuracy<B, C>(model: &C, data: &ImageSet<B>, batch_size: usize) -> Result<f64>
where
    B: Backend,
    C: Classifier<B> + ?Sized,
{
    if batch_size == 0 {
        return Err(Error::out_of_range("batch size", ">= 1", batch_size));
    }
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut right = 0;
    for chunk in idx.chunks(batch_size) {
        let (images, labels) = data.batch(chunk)?;
        let pred = predicted_labels(model, images)?;
        right += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
    }
    Ok(right as f64 / data.len() as f64)
}

/// Re-estimates the BatchNorm running statistics of a trained `model` with its final weights
/// ("precise BN"): `batches` forward passes in training mode over seeded batches of `data`, with
/// no gradient and no weight change. The running averages (momentum 0.1) otherwise mix
/// statistics of earlier weights, which can leave a from-scratch classifier right in training
/// mode and near chance in inference mode; after 50 batches the old values weigh under 0.6%.
/// Models without BatchNorm are unchanged.
pub fn recalibrate_batchnorm<B, C>(
    model: &C,
    data: &ImageSet<B>,
    batch_size: usize,
    batches: usize,
    seed: u64,
) -> Result<()>
where
    B: Backend,
    C: Classifier<B> + ?Sized,
{
    if batch_size == 0 {
        return Err(Error::out_of_range("batch size", ">= 1", batch_size));
    }
    let _training = foil_core::mode::TrainingMode::enter();
    for step in 0..batches {
        let idx = crate::data::batch_indices(data.len(), batch_size, seed, step);
        let (images, _) = data.batch(&idx)?;
        model.logits(images)?;
    }
    Ok(())
}

/// Trains an unconditional eps-prediction DDPM on the images of `train` (labels ignored):
/// per step, `t` uniform in `0..T` for each image, `noise ~ N(0, I)`,
/// `x_t = q_sample(x0, t, noise)`, loss `= MSE(eps_pred, noise)` (Ho et al.'s simple loss).
///
/// A model with learned-variance channels (guided-diffusion's `learn_sigma`) is trained on its
/// eps half only: the variance channels get no gradient (guided-diffusion trains them with the
/// variational bound term of its hybrid loss, which is not implemented here), so such a model
/// should be sampled with fixed variances. Timesteps and noise are drawn from
/// `(config.seed, step)` alone, so a resumed run draws exactly what an uninterrupted one would.
pub fn train_ddpm<B, M>(
    model: M,
    train: &ImageSet<B>,
    schedule: &NoiseSchedule,
    config: &TrainConfig,
) -> Result<Trained<M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Denoiser<B> + Clone,
{
    if let Some(dim) = model.condition_dim() {
        return Err(Error::shape(
            "DDPM condition",
            "an unconditional model (condition_dim None)",
            format!("a model conditioned on {dim} values"),
        ));
    }
    check_channels(&model, train, "DDPM")?;
    let steps = Steps::full(schedule);
    let t_max = schedule.len();
    let device = train.device();
    run(
        model,
        config,
        "ddpm",
        train.len(),
        &device,
        |model, batch, step| {
            let (x0, _) = train.training_batch(batch, &config.augment, config.seed, step)?;
            let mut rng = step_rng(config.seed, step, 1);
            let t: Vec<usize> = (0..batch.len())
                .map(|_| rng.random_range(0..t_max))
                .collect();
            let loss = eps_loss(model, &steps, x0, &t, None, config.seed, step)?;
            Ok((loss, None))
        },
    )
}

/// Trains an image-embedding-conditioned denoiser together with the encoder that makes its
/// condition (a diffusion autoencoder, as DIFFusion's decoder needs one): for a batch `x0`,
/// `c = model.encode(x0)`, each row of `c` replaced by the null condition (zeros) with
/// probability `drop_condition` (so classifier-free guidance has an unconditional branch), and
/// the simple eps loss `|eps - model.forward(x_t, t, c)|^2` trains both halves.
///
/// The model implements both [`ImageEncoder`] (its encoder) and [`Denoiser`] (its decoder,
/// with `condition_dim` equal to the embedding width). With `train_encoder = false` the
/// embeddings are detached: a pre-trained encoder stays as it is (Kandinsky's frozen CLIP).
/// Timesteps, noise and dropped rows are drawn from `(config.seed, step)` alone, so a resumed
/// run draws what an uninterrupted one would.
pub fn train_embedding_ddpm<B, M>(
    model: M,
    train: &ImageSet<B>,
    schedule: &NoiseSchedule,
    drop_condition: f64,
    train_encoder: bool,
    config: &TrainConfig,
) -> Result<Trained<M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Denoiser<B> + ImageEncoder<B> + Clone,
{
    if !(0.0..1.0).contains(&drop_condition) {
        return Err(Error::out_of_range(
            "condition drop probability",
            "in [0, 1)",
            drop_condition,
        ));
    }
    let dim = model.embedding_dim();
    if model.condition_dim() != Some(dim) {
        return Err(Error::shape(
            "decoder condition",
            format!("{dim} values (the encoder's embedding width)"),
            format!("{:?}", model.condition_dim()),
        ));
    }
    check_channels(&model, train, "decoder")?;
    let steps = Steps::full(schedule);
    let t_max = schedule.len();
    let device = train.device();
    run(
        model,
        config,
        "embedding-ddpm",
        train.len(),
        &device,
        |model, batch, step| {
            let (x0, _) = train.training_batch(batch, &config.augment, config.seed, step)?;
            let n = batch.len();
            let mut rng = step_rng(config.seed, step, 1);
            let t: Vec<usize> = (0..n).map(|_| rng.random_range(0..t_max)).collect();
            let keep: Vec<f32> = (0..n)
                .map(|_| f32::from(u8::from(rng.random::<f64>() >= drop_condition)))
                .collect();
            let cond = model.encode(x0.clone())?;
            // A frozen encoder: the loss does not reach it.
            let cond = if train_encoder { cond } else { cond.detach() };
            let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [n]), &cond.device());
            let cond = cond * keep.unsqueeze_dim::<2>(1);
            let loss = eps_loss(model, &steps, x0, &t, Some(cond), config.seed, step)?;
            Ok((loss, None))
        },
    )
}

/// The model denoises as many channels as the training images have.
fn check_channels<B: Backend, M: Denoiser<B>>(
    model: &M,
    train: &ImageSet<B>,
    what: &str,
) -> Result<()> {
    let [_, c, _, _] = train.dims();
    if model.channels() != c {
        return Err(Error::shape(
            format!("{what} image channels"),
            model.channels(),
            format!("{c} (the training images)"),
        ));
    }
    Ok(())
}

/// The simple eps loss of one step: noise drawn from `(seed, step)`, `x_t = q_sample(x0, t)`,
/// `mean |model(x_t, t, cond) - noise|^2`.
fn eps_loss<B: Backend, M: Denoiser<B>>(
    model: &M,
    steps: &Steps,
    x0: Tensor<B, 4>,
    t: &[usize],
    cond: Option<Tensor<B, 2>>,
    seed: u64,
    step: usize,
) -> Result<Tensor<B, 1>> {
    let noise = Noise::new(derive_seed(seed, step as u64, 2)).normal_like(&x0);
    let x_t = steps.q_sample(x0, t, noise.clone())?;
    let out = model.forward(x_t, t, cond)?;
    if out.eps.dims() != noise.dims() {
        return Err(Error::shape(
            "predicted noise",
            fmt_dims(&noise.dims()),
            fmt_dims(&out.eps.dims()),
        ));
    }
    Ok((out.eps - noise).powi_scalar(2).mean())
}
