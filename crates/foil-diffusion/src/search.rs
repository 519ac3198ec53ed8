//! DIFFusion's edit search: gentle edits first, stronger ones only where needed.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::index_tensor;
use foil_core::{Attempt, Classifier, Denoiser, Error, ImageEncoder, Noise, Result, escalate};
use foil_invert::{EfInverter, NoiseMaps};

use foil_embed::{Direction, EditForm, apply};

use crate::space::Codec;
#[cfg(doc)]
use crate::space::Pixels;

/// Inverts images once and regenerates them under new conditions (the decoder side of DIFFusion).
pub trait Regenerator<B: Backend> {
    /// What an inversion keeps (noise maps, latents, ...).
    type State;

    /// Number of sampling steps `N`; `skip` ranges over `0..=N`.
    fn num_steps(&self) -> usize;

    /// Inverts a batch of images.
    fn invert(&self, images: Tensor<B, 4>) -> Result<Self::State>;

    /// Regenerates the batch items `indices` of `state` with conditions `cond` (`[indices.len(), D]`),
    /// skipping the `skip` noisiest steps.
    fn generate(
        &self,
        state: &Self::State,
        indices: &[usize],
        cond: Tensor<B, 2>,
        skip: usize,
    ) -> Result<Tensor<B, 4>>;
}

/// A [`Regenerator`] from an [`EfInverter`] and an embedding-conditioned denoiser working in
/// the space of `codec` (the images themselves, [`Pixels`], or an autoencoder's latents),
/// inverting with a fixed seed.
pub struct EfRegenerator<'a, B: Backend, D> {
    /// The inverter.
    pub inverter: &'a EfInverter<B>,
    /// The image-conditioned denoiser.
    pub denoiser: &'a D,
    /// Images to the denoiser's space and back.
    pub codec: &'a dyn Codec<B>,
    /// Seed of the inversion noise.
    pub seed: u64,
}

impl<B: Backend, D: Denoiser<B>> Regenerator<B> for EfRegenerator<'_, B, D> {
    type State = NoiseMaps<B>;

    fn num_steps(&self) -> usize {
        self.inverter.num_steps()
    }

    fn invert(&self, images: Tensor<B, 4>) -> Result<NoiseMaps<B>> {
        let latents = self.codec.to_latents(images)?;
        self.inverter
            .invert(self.denoiser, latents, None, &mut Noise::new(self.seed))
    }

    fn generate(
        &self,
        state: &NoiseMaps<B>,
        indices: &[usize],
        cond: Tensor<B, 2>,
        skip: usize,
    ) -> Result<Tensor<B, 4>> {
        let maps = state.select(indices)?;
        let latents = self
            .inverter
            .generate(self.denoiser, &maps, Some(cond), skip)?;
        self.codec.to_images(latents)
    }
}

/// Steps skipped for `T_skip` out of `n_steps`: `floor(n_steps * T_skip)`, as the reference's
/// `int(100 * T_skip)` (with a little slack so that `0.3 * 10` counts as 3).
pub fn skip_steps(n_steps: usize, t_skip: f64) -> usize {
    ((n_steps as f64 * t_skip) + 1e-9).floor() as usize
}

/// The labels an oracle gives (`foil_core::predicted_labels`): `logit > 0` for one logit, the
/// arg-max otherwise.
pub use foil_core::predicted_labels as oracle_labels;

/// Settings of the edit search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// `T_skip` values tried in order; each skips `floor(N * T_skip)` steps. The reference:
    /// 0.9, 0.8, ..., 0.0 (gentle first).
    pub t_skips: Vec<f64>,
    /// Edit strength lambda (the reference default is 2; the paper tunes it per dataset).
    pub lambda: f64,
    /// How the direction is added.
    pub form: EditForm,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            t_skips: vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
            lambda: 2.0,
            form: EditForm::Reference,
        }
    }
}

/// What the search found for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct EditOutcome {
    /// Whether some `T_skip` made the oracle answer the target.
    pub flipped: bool,
    /// The `T_skip` that did it (`None` if none did).
    pub t_skip: Option<f64>,
    /// The number of skipped steps that did it.
    pub skip: Option<usize>,
    /// Regenerations tried for this input.
    pub trials: usize,
    /// The lambda used.
    pub lambda: f64,
}

/// The search over a batch.
#[derive(Debug, Clone)]
pub struct SearchReport<B: Backend> {
    /// One outcome per input, in input order.
    pub outcomes: Vec<EditOutcome>,
    /// The counterfactuals `[N, C, H, W]`: the first flipped output, or the last (strongest)
    /// attempt for inputs that never flipped.
    pub images: Tensor<B, 4>,
    /// Images regenerated in all (one per input and trial).
    pub generated: usize,
    /// Images the oracle labelled in all.
    pub oracle_calls: usize,
}

impl<B: Backend> SearchReport<B> {
    /// Flips over all inputs (the public evaluation divided by the flipped ones only).
    pub fn success_ratio(&self) -> f64 {
        let flipped = self.outcomes.iter().filter(|o| o.flipped).count();
        flipped as f64 / self.outcomes.len().max(1) as f64
    }
}

/// Runs the edit search on `images` (all of class `direction.from()`), aiming at the oracle
/// label `target`: encode, invert once, then for each `T_skip` regenerate the inputs not yet
/// flipped with `apply(c, direction, lambda)` and keep each input's first flipped output (the
/// shared [`escalate`] ladder).
pub fn search<B, E, R, C>(
    encoder: &E,
    regenerator: &R,
    oracle: &C,
    images: Tensor<B, 4>,
    direction: &Direction,
    target: usize,
    config: &SearchConfig,
) -> Result<SearchReport<B>>
where
    B: Backend,
    E: ImageEncoder<B>,
    R: Regenerator<B>,
    C: Classifier<B>,
{
    let [n, ..] = images.dims();
    let n_steps = regenerator.num_steps();
    if config.t_skips.is_empty() {
        return Err(Error::Empty {
            what: "T_skip schedule".into(),
            hint: "give at least one value in [0, 1]".into(),
        });
    }
    if let Some(bad) = config.t_skips.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        return Err(Error::out_of_range("T_skip", "in [0, 1]", bad));
    }
    let width = oracle.num_logits();
    if target >= width.max(2) {
        return Err(Error::out_of_range(
            "target label",
            format!("below {}", width.max(2)),
            target,
        ));
    }
    let embeddings = encoder.encode(images.clone())?;
    let state = regenerator.invert(images)?;
    let device = embeddings.device();
    let climbs = escalate(n, &config.t_skips, |&t_skip, active| {
        let skip = skip_steps(n_steps, t_skip);
        let cond = apply(
            embeddings.clone().select(0, index_tensor(active, &device)),
            direction,
            config.lambda,
            config.form,
        )?;
        let out = regenerator.generate(&state, active, cond, skip.min(n_steps))?;
        let labels = oracle_labels(oracle, out.clone())?;
        Ok(labels
            .iter()
            .enumerate()
            .map(|(j, &label)| Attempt {
                flipped: label == target,
                value: out.clone().narrow(0, j, 1),
            })
            .collect())
    })?;
    let generated: usize = climbs.iter().map(|c| c.attempts).sum();
    let oracle_calls = generated;
    let outcomes = climbs
        .iter()
        .map(|c| {
            let t_skip = c.flipped_at.map(|k| config.t_skips[k]);
            EditOutcome {
                flipped: c.flipped(),
                t_skip,
                skip: t_skip.map(|t| skip_steps(n_steps, t)),
                trials: c.attempts,
                lambda: config.lambda,
            }
        })
        .collect();
    let images = Tensor::cat(climbs.into_iter().map(|c| c.value).collect(), 0);
    Ok(SearchReport {
        outcomes,
        images,
        generated,
        oracle_calls,
    })
}
