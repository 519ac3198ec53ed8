//! DIFFusion over a test set: invert each input once (edit-friendly DDPM inversion under the
//! trained decoder), then regenerate it with its embedding moved along the class-mean
//! difference, gentle `T_skip` first, keeping the first output the oracle gives the target.

use std::path::Path;

use burn::tensor::backend::Backend;
use foil_core::{Classifier, Error, Result};
use foil_data::Dataset;
use foil_embed::{ClassStats, EfRegenerator, SearchConfig, search};
use foil_invert::EfInverterConfig;
use foil_schedule::{NoiseSchedule, Spacing, Steps};

use super::decoder::EmbeddingDecoder;
use super::explain::{ExplainSummary, Made, for_each_direction};

/// Settings of a DIFFusion batch run.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionConfig {
    /// Inference steps `N` of the inversion and regeneration (the reference: 100).
    pub steps: usize,
    /// The inverter (eta, guidance while regenerating).
    pub inverter: EfInverterConfig,
    /// The edit search (`T_skip` values, lambda, edit form).
    pub search: SearchConfig,
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
        .map(|t| n - ((n as f64 * t) + 1e-9).floor() as usize)
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
    use foil_core::ImageEncoder;
    stats.check_encoder(&decoder.identity())?;
    let classes = data.class_names().to_vec();
    let directions = match classes.as_slice() {
        [a, b] => [stats.direction(a, b)?, stats.direction(b, a)?],
        other => return Err(Error::shape("dataset classes", 2, other.len())),
    };
    let inverter = config.inverter.init(
        config.inference_steps(schedule)?,
        Some(decoder.null_condition(device)),
    )?;
    let regenerator = EfRegenerator {
        inverter: &inverter,
        denoiser: decoder,
        seed: config.seed,
    };
    for_each_direction::<B, _>(
        data,
        out,
        config.per_direction,
        config.batch_size,
        config.image_size,
        device,
        |x, from, to| {
            let report = search(
                decoder,
                &regenerator,
                oracle,
                x,
                &directions[from],
                to,
                &config.search,
            )?;
            let made = report
                .outcomes
                .iter()
                .map(|o| Made {
                    flipped: o.flipped,
                    scale: None,
                    t_skip: o.t_skip,
                    denoiser_calls: denoiser_calls(config, o.trials),
                    // One oracle pass per regeneration tried.
                    classifier_calls: o.trials,
                })
                .collect();
            Ok((report.images, made))
        },
    )
}
