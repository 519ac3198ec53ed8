//! DIFFusion over a test set: invert each input once (edit-friendly DDPM inversion under the
//! trained decoder), then regenerate it with its embedding moved along the class-mean
//! difference, gentle `T_skip` first, keeping the first output the oracle gives the target.
//!
//! As diff-usion's `eval.py`: the edit direction follows the input's class folder (its label:
//! `direction_sign` of the data loader), and a flip is the oracle's prediction on the output
//! differing from its prediction on the original (`has_prediction_flipped`), that is reaching
//! the target `1 - prediction`. An input the oracle misclassifies is still edited away from
//! its label, and counts as flipped only if the oracle's prediction changes. The reference
//! stops the `T_skip` search of a whole batch once any of its inputs flips; foil stops per
//! input.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use foil_core::ImageEncoder;
use foil_core::{Classifier, Error, Result};
use foil_data::Dataset;
use foil_embed::{
    ClassStats, Direction, EditOutcome, EfRegenerator, Regenerator, SearchConfig, search,
    skip_steps,
};
use foil_invert::{EfInverter, EfInverterConfig};
use foil_schedule::{NoiseSchedule, Spacing, Steps};

use super::decoder::EmbeddingDecoder;
use super::explain::{ExplainSummary, Made, Produced, SetRun, for_each_direction};

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

/// Explains every image of `data` (two classes, named as in `stats`) with DIFFusion: the edit
/// moves it from its label towards the other class, and it flips when the oracle's prediction
/// reaches the other class of its prediction on the original (see the module docs). Writes per
/// input under `out/<from>_to_<to>/` what [`explain_set`](super::explain_set) writes, without
/// masks (the JSON records the `T_skip` and lambda that flipped it). Inputs whose `.json`
/// exists are skipped.
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
    for_each_direction::<B, _, _>(
        SetRun {
            data,
            out,
            per_direction: config.per_direction,
            batch_size: config.batch_size,
            image_size: config.image_size,
            device,
        },
        |x| foil_core::predicted_labels(oracle, x),
        |x, from, targets| {
            let run = |images: Tensor<B, 4>, targets: &[usize], lambda: f64| match config.method {
                EditMethod::Arithmetic => search_per_target(
                    decoder,
                    &regenerator,
                    oracle,
                    images,
                    &directions[from],
                    targets,
                    &SearchConfig {
                        lambda,
                        ..search_config.clone()
                    },
                ),
                EditMethod::TargetMean => search_per_target(
                    decoder,
                    &TargetMeanRegenerator {
                        inner: &regenerator,
                        unit_mean: target_means[from].clone(),
                    },
                    oracle,
                    images,
                    &directions[from],
                    targets,
                    &search_config,
                ),
            };
            let (outcomes, mut images) = run(x.clone(), targets, search_config.lambda)?;
            let lambda = (config.method == EditMethod::Arithmetic).then_some(search_config.lambda);
            let mut made: Vec<Made> = outcomes
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
                let pending_targets: Vec<usize> = pending.iter().map(|&i| targets[i]).collect();
                let (rung, rung_images) = run(x.clone().select(0, idx), &pending_targets, lambda)?;
                let mut rows: Vec<Tensor<B, 4>> = (0..made.len())
                    .map(|i| images.clone().narrow(0, i, 1))
                    .collect();
                for (k, &i) in pending.iter().enumerate() {
                    let o = &rung[k];
                    let m = &mut made[i];
                    m.denoiser_calls += denoiser_calls(config, o.trials);
                    m.classifier_calls += o.trials;
                    if o.flipped {
                        m.flipped = true;
                        m.t_skip = o.t_skip;
                        m.lambda = Some(lambda);
                    }
                    // The flip, or this strength's strongest attempt.
                    rows[i] = rung_images.clone().narrow(0, k, 1);
                }
                images = Tensor::cat(rows, 0);
            }
            Ok(Produced::unmasked(images, made))
        },
    )
}

/// [`search`] with one target per input: the inputs are searched in groups of equal target
/// (one group, the whole batch, when the oracle agrees with every label), and the outcomes and
/// images come back in input order.
fn search_per_target<B, R, C>(
    decoder: &EmbeddingDecoder<B>,
    regenerator: &R,
    oracle: &C,
    images: Tensor<B, 4>,
    direction: &Direction,
    targets: &[usize],
    config: &SearchConfig,
) -> Result<(Vec<EditOutcome>, Tensor<B, 4>)>
where
    B: Backend,
    R: Regenerator<B>,
    C: Classifier<B>,
{
    let n = targets.len();
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, &t) in targets.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| *g == t) {
            Some((_, members)) => members.push(i),
            None => groups.push((t, vec![i])),
        }
    }
    if let [(target, _)] = groups.as_slice() {
        let report = search(
            decoder,
            regenerator,
            oracle,
            images,
            direction,
            *target,
            config,
        )?;
        return Ok((report.outcomes, report.images));
    }
    let device = images.device();
    let mut outcomes: Vec<Option<EditOutcome>> = vec![None; n];
    let mut rows: Vec<Option<Tensor<B, 4>>> = vec![None; n];
    for (target, members) in groups {
        let subset = images
            .clone()
            .select(0, index_tensor::<B>(&members, &device));
        let report = search(
            decoder,
            regenerator,
            oracle,
            subset,
            direction,
            target,
            config,
        )?;
        for (k, &i) in members.iter().enumerate() {
            outcomes[i] = report.outcomes.get(k).cloned();
            rows[i] = Some(report.images.clone().narrow(0, k, 1));
        }
    }
    let outcomes = outcomes
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::shape("edit search outcomes", n, "fewer"))?;
    let rows = rows
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::shape("edit search images", n, "fewer"))?;
    Ok((outcomes, Tensor::cat(rows, 0)))
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

/// The nearest-neighbour baseline: for each input, the training image of the other class than
/// its label whose embedding is the most cosine-similar to the input's, written as its
/// counterfactual (the JSON records no `T_skip` and no denoiser call). As for
/// [`diffusion_set`], the flip is judged against the oracle's prediction on the original.
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
    for_each_direction::<B, _, _>(
        SetRun {
            data,
            out,
            per_direction,
            batch_size: 16,
            image_size,
            device,
        },
        |x| foil_core::predicted_labels(oracle, x),
        |x, from, targets| {
            let (items, embeddings) = &bank[1 - from];
            let query = unit_rows(encoder.encode(x)?);
            let similarity = query.matmul(embeddings.clone().transpose());
            let best = foil_core::tensor::to_vec_f32(&similarity.argmax(1).float())?;
            let chosen: Vec<usize> = best.iter().map(|&j| items[j as usize]).collect();
            let (images, _) = train.tensors::<B>(&chosen, mode, resize, device)?;
            let labels = foil_core::predicted_labels(oracle, images.clone())?;
            let made = labels
                .iter()
                .zip(targets)
                .map(|(&l, &to)| Made {
                    flipped: l == to,
                    scale: None,
                    t_skip: None,
                    lambda: None,
                    denoiser_calls: 0,
                    classifier_calls: 1,
                })
                .collect();
            Ok(Produced::unmasked(images, made))
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
