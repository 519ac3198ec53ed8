//! DIFFusion over a test set: invert each input once (edit-friendly DDPM inversion under the
//! trained decoder), then regenerate it with its embedding moved along the class-mean
//! difference, gentle `T_skip` first, keeping the first output the oracle gives the target.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use foil_core::ImageEncoder;
use foil_core::{Classifier, Error, Result};
use foil_data::Dataset;
use foil_embed::{ClassStats, EfRegenerator, Regenerator, SearchConfig, search, skip_steps};
use foil_invert::{EfInverter, EfInverterConfig};
use foil_schedule::{NoiseSchedule, Spacing, Steps};

use super::decoder::EmbeddingDecoder;
use super::explain::{ExplainSummary, Made, for_each_direction};

/// What a DIFFusion run conditions the regeneration on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EditMethod {
    /// DIFFusion: the input's embedding moved along the class-mean difference,
    /// `|c| (c / |c| + lambda d)`.
    #[default]
    Arithmetic,
    /// The baseline without the arithmetic: the target class's mean embedding alone (rescaled
    /// to the input embedding's norm), from the same inversion and the same `T_skip` search.
    TargetMean,
}

/// Settings of a DIFFusion batch run.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionConfig {
    /// Inference steps `N` of the inversion and regeneration (the reference: 100).
    pub steps: usize,
    /// The inverter (eta, guidance while regenerating).
    pub inverter: EfInverterConfig,
    /// The edit search (`T_skip` values, lambda, edit form).
    pub search: SearchConfig,
    /// DIFFusion's edit or the target-mean baseline.
    pub method: EditMethod,
    /// Stronger edit strengths tried in turn after `search.lambda`, each on the inputs the
    /// previous strengths left unflipped (a new inversion and the whole `T_skip` search per
    /// strength); empty (the reference's single strength) by default. The paper tunes lambda
    /// per dataset; a ladder keeps the gentle strength for the inputs it flips. Arithmetic only.
    pub extra_lambdas: Vec<f64>,
    /// Inputs per batch.
    pub batch_size: usize,
    /// Seed of the inversion noise.
    pub seed: u64,
    /// At most this many inputs per direction (the first ones of the set).
    pub per_direction: Option<usize>,
    /// Side of the square RGB images the decoder and the oracle take.
    pub image_size: u32,
}

impl DiffusionConfig {
    /// The reference's settings with fewer steps: 50 steps (diffusers' leading spacing, offset
    /// 1, no final alpha of one), eta 1, unconditional inversion, guidance 4 when regenerating,
    /// `T_skip` 0.9 down to 0, lambda 2.
    pub fn new(image_size: u32) -> Self {
        Self {
            steps: 50,
            inverter: EfInverterConfig::diffusion(),
            search: SearchConfig::default(),
            method: EditMethod::Arithmetic,
            extra_lambdas: Vec::new(),
            batch_size: 16,
            seed: 0,
            per_direction: None,
            image_size,
        }
    }

    /// The inference steps over `schedule`.
    pub fn inference_steps(&self, schedule: &NoiseSchedule) -> Result<Steps> {
        Steps::inference(schedule, self.steps, Spacing::Leading, 1, false)
    }

    /// The inverter over [`inference_steps`](Self::inference_steps) with `decoder`'s null
    /// condition.
    pub fn inverter_for<B: Backend>(
        &self,
        decoder: &EmbeddingDecoder<B>,
        schedule: &NoiseSchedule,
        device: &B::Device,
    ) -> Result<EfInverter<B>> {
        self.inverter.init(
            self.inference_steps(schedule)?,
            Some(decoder.null_condition(device)),
        )
    }
}

/// Denoiser calls one input cost: the inversion's `N`, then for each tried `T_skip` the
/// `N - skip` regeneration steps, twice each under classifier-free guidance.
fn denoiser_calls(config: &DiffusionConfig, trials: usize) -> usize {
    let n = config.steps;
    let branches = if config.inverter.target_guidance == 1.0 {
        1
    } else {
        2
    };
    let regen: usize = config
        .search
        .t_skips
        .iter()
        .take(trials)
        .map(|&t| n - skip_steps(n, t))
        .sum();
    n + regen * branches
}

/// Explains every image of `data` (two classes, named as in `stats`) towards the other class
/// with DIFFusion, writing per input under `out/<from>_to_<to>/` what
/// [`explain_set`](super::explain_set) writes (the JSON records the `T_skip` that flipped it).
/// Inputs whose `.json` exists are skipped.
#[allow(clippy::too_many_arguments)]
pub fn diffusion_set<B, C>(
    decoder: &EmbeddingDecoder<B>,
    schedule: &NoiseSchedule,
    stats: &ClassStats,
    oracle: &C,
    data: &Dataset,
    out: &Path,
    config: &DiffusionConfig,
    device: &B::Device,
) -> Result<ExplainSummary>
where
    B: Backend,
    C: Classifier<B>,
{
    stats.check_encoder(&decoder.identity())?;
    let classes = data.class_names().to_vec();
    let directions = match classes.as_slice() {
        [a, b] => [stats.direction(a, b)?, stats.direction(b, a)?],
        other => return Err(Error::shape("dataset classes", 2, other.len())),
    };
    let inverter = config.inverter_for(decoder, schedule, device)?;
    let regenerator = EfRegenerator {
        inverter: &inverter,
        denoiser: decoder,
        seed: config.seed,
    };
    let target_means = [
        unit_mean::<B>(stats, &classes[1], device)?,
        unit_mean::<B>(stats, &classes[0], device)?,
    ];
    let search_config = match config.method {
        EditMethod::Arithmetic => config.search.clone(),
        // lambda 0: the search hands the input's own embedding to the regenerator.
        EditMethod::TargetMean => SearchConfig {
            lambda: 0.0,
            form: foil_embed::EditForm::Reference,
            ..config.search.clone()
        },
    };
    for_each_direction::<B, _>(
        data,
        out,
        config.per_direction,
        config.batch_size,
        config.image_size,
        device,
        |x, from, to| {
            let report = match config.method {
                EditMethod::Arithmetic => search(
                    decoder,
                    &regenerator,
                    oracle,
                    x.clone(),
                    &directions[from],
                    to,
                    &search_config,
                )?,
                EditMethod::TargetMean => search(
                    decoder,
                    &TargetMeanRegenerator {
                        inner: &regenerator,
                        unit_mean: target_means[from].clone(),
                    },
                    oracle,
                    x.clone(),
                    &directions[from],
                    to,
                    &search_config,
                )?,
            };
            let lambda = (config.method == EditMethod::Arithmetic).then_some(search_config.lambda);
            let mut made: Vec<Made> = report
                .outcomes
                .iter()
                .map(|o| Made {
                    flipped: o.flipped,
                    scale: None,
                    t_skip: o.t_skip,
                    lambda: lambda.filter(|_| o.flipped),
                    denoiser_calls: denoiser_calls(config, o.trials),
                    // One oracle pass per regeneration tried.
                    classifier_calls: o.trials,
                })
                .collect();
            let mut images = report.images;
            let ladder = match config.method {
                EditMethod::Arithmetic => config.extra_lambdas.as_slice(),
                EditMethod::TargetMean => &[],
            };
            for &lambda in ladder {
                let pending: Vec<usize> = (0..made.len()).filter(|&i| !made[i].flipped).collect();
                if pending.is_empty() {
                    break;
                }
                let idx = index_tensor::<B>(&pending, device);
                let rung = search(
                    decoder,
                    &regenerator,
                    oracle,
                    x.clone().select(0, idx),
                    &directions[from],
                    to,
                    &SearchConfig {
                        lambda,
                        ..search_config.clone()
                    },
                )?;
                let mut rows: Vec<Tensor<B, 4>> = (0..made.len())
                    .map(|i| images.clone().narrow(0, i, 1))
                    .collect();
                for (k, &i) in pending.iter().enumerate() {
                    let o = &rung.outcomes[k];
                    let m = &mut made[i];
                    m.denoiser_calls += denoiser_calls(config, o.trials);
                    m.classifier_calls += o.trials;
                    if o.flipped {
                        m.flipped = true;
                        m.t_skip = o.t_skip;
                        m.lambda = Some(lambda);
                    }
                    // The flip, or this strength's strongest attempt.
                    rows[i] = rung.images.clone().narrow(0, k, 1);
                }
                images = Tensor::cat(rows, 0);
            }
            Ok((images, made))
        },
    )
}

/// `indices` as an index tensor on `device`.
fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// The mean embedding of `class`, scaled to unit norm, as `[1, D]`.
fn unit_mean<B: Backend>(
    stats: &ClassStats,
    class: &str,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let mean = stats.mean(class)?;
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm.is_nan() || norm <= 0.0 {
        return Err(Error::out_of_range(
            format!("norm of the mean embedding of {class:?}"),
            "> 0",
            norm,
        ));
    }
    let values: Vec<f32> = mean.iter().map(|v| (v / norm) as f32).collect();
    foil_core::tensor::from_vec(values, [1, mean.len()], device)
}

/// Regenerates with the target class's mean embedding in place of the condition it is given
/// (rescaled to that condition's norm): the baseline without embedding arithmetic.
struct TargetMeanRegenerator<'a, R, B: Backend> {
    inner: &'a R,
    unit_mean: Tensor<B, 2>,
}

impl<B: Backend, R: Regenerator<B>> Regenerator<B> for TargetMeanRegenerator<'_, R, B> {
    type State = R::State;

    fn num_steps(&self) -> usize {
        self.inner.num_steps()
    }

    fn invert(&self, images: Tensor<B, 4>) -> Result<Self::State> {
        self.inner.invert(images)
    }

    fn generate(
        &self,
        state: &Self::State,
        indices: &[usize],
        cond: Tensor<B, 2>,
        skip: usize,
    ) -> Result<Tensor<B, 4>> {
        let norms = cond.powi_scalar(2).sum_dim(1).sqrt();
        let cond = self.unit_mean.clone().repeat_dim(0, indices.len()) * norms;
        self.inner.generate(state, indices, cond, skip)
    }
}

/// The nearest-neighbour baseline: for each input, the training image of the target class
/// whose embedding is the most cosine-similar to the input's, written as its counterfactual
/// (the JSON records no `T_skip` and no denoiser call).
#[allow(clippy::too_many_arguments)]
pub fn nearest_set<B, E, C>(
    encoder: &E,
    train: &Dataset,
    oracle: &C,
    data: &Dataset,
    out: &Path,
    per_direction: Option<usize>,
    image_size: u32,
    device: &B::Device,
) -> Result<ExplainSummary>
where
    B: Backend,
    E: ImageEncoder<B>,
    C: Classifier<B>,
{
    if train.class_names() != data.class_names() {
        return Err(Error::format(
            "training classes",
            format!(
                "the nearest images come from {:?}, the data has {:?}",
                train.class_names(),
                data.class_names()
            ),
        ));
    }
    let (mode, resize) = super::image_mode(image_size);
    // Unit embeddings of each class's training images, `[M_c, D]`.
    let mut bank = Vec::new();
    for label in 0..train.class_names().len() {
        let items: Vec<usize> = (0..train.len())
            .filter(|&i| train.items()[i].label == label)
            .collect();
        if items.is_empty() {
            return Err(Error::Empty {
                what: format!("training images of {:?}", train.class_names()[label]),
                hint: "the nearest-neighbour baseline needs some".into(),
            });
        }
        let mut parts = Vec::new();
        for chunk in items.chunks(64) {
            let (x, _) = train.tensors::<B>(chunk, mode, resize, device)?;
            parts.push(unit_rows(encoder.encode(x)?));
        }
        bank.push((items, Tensor::cat(parts, 0)));
    }
    for_each_direction::<B, _>(
        data,
        out,
        per_direction,
        16,
        image_size,
        device,
        |x, _, to| {
            let (items, embeddings) = &bank[to];
            let query = unit_rows(encoder.encode(x)?);
            let similarity = query.matmul(embeddings.clone().transpose());
            let best = foil_core::tensor::to_vec_f32(&similarity.argmax(1).float())?;
            let chosen: Vec<usize> = best.iter().map(|&j| items[j as usize]).collect();
            let (images, _) = train.tensors::<B>(&chosen, mode, resize, device)?;
            let labels = foil_core::predicted_labels(oracle, images.clone())?;
            let made = labels
                .iter()
                .map(|&l| Made {
                    flipped: l == to,
                    scale: None,
                    t_skip: None,
                    lambda: None,
                    denoiser_calls: 0,
                    classifier_calls: 1,
                })
                .collect();
            Ok((images, made))
        },
    )
}

fn unit_rows<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norms = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norms
}

/// DIFFusion's transition between an input and its counterfactual: inverts `images` (all of
/// class `from`) once, then regenerates them at each lambda of `lambdas` along the class-mean
/// direction `from -> to`, skipping `skip` of the `config.steps` steps (the skip that flipped
/// them). One `[N, C, H, W]` batch per lambda.
#[allow(clippy::too_many_arguments)]
pub fn lambda_sweep<B: Backend>(
    decoder: &EmbeddingDecoder<B>,
    schedule: &NoiseSchedule,
    stats: &ClassStats,
    config: &DiffusionConfig,
    images: Tensor<B, 4>,
    (from, to): (&str, &str),
    skip: usize,
    lambdas: &[f64],
) -> Result<Vec<Tensor<B, 4>>> {
    stats.check_encoder(&decoder.identity())?;
    let device = images.device();
    let direction = stats.direction(from, to)?;
    let inverter = config.inverter_for(decoder, schedule, &device)?;
    let regenerator = EfRegenerator {
        inverter: &inverter,
        denoiser: decoder,
        seed: config.seed,
    };
    let n = images.dims()[0];
    let embeddings = decoder.encode(images.clone())?;
    let state = regenerator.invert(images)?;
    let all: Vec<usize> = (0..n).collect();
    foil_embed::sweep(embeddings, &direction, lambdas, config.search.form)?
        .into_iter()
        .map(|cond| regenerator.generate(&state, &all, cond, skip))
        .collect()
}
