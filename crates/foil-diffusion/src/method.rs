//! DIFFusion as a [`Method`]: invert each input once (edit-friendly DDPM inversion under the
//! decoder), then regenerate it with its embedding moved along the class-mean difference,
//! gentle `T_skip` first, keeping the first output the oracle gives the target; a ladder of
//! stronger edit strengths for the inputs still unflipped. Also the nearest-neighbour baseline
//! ([`Nearest`]); the target-mean baseline is its own method (`crate::TargetMean`).
//!
//! As diff-usion's `eval.py`: the edit direction follows the input's label
//! (`direction_sign` of the data loader), and a flip is the oracle's prediction on the output
//! reaching the request's target (`1 - prediction`, `has_prediction_flipped`). An input the
//! oracle misclassifies is still edited away from its label, and counts as flipped only if the
//! oracle's prediction changes. The reference stops the `T_skip` search of a whole batch once
//! any of its inputs flips; foil stops per input.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use foil_core::image_io::image_mode;
use foil_core::tensor::{index_tensor, to_vec_f32, unit_rows};
use foil_core::{
    Attempt, Classifier, Cost, Error, Explained, ImageEncoder, Method, Outcome, Request, Result,
    Setting, escalate, predicted_labels,
};
use foil_data::Dataset;
use foil_embed::{ClassStats, Direction, sweep};
use foil_invert::{EfInverter, EfInverterConfig};
use foil_schedule::{NoiseSchedule, Spacing, Steps};

use crate::search::{EditOutcome, EfRegenerator, Regenerator, SearchConfig, search, skip_steps};
use crate::space::Decoder;

/// Inference steps of the authors' `eval.py` (`num_inference_steps=100`).
pub const PUBLISHED_STEPS: usize = 100;

/// DIFFusion's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionConfig {
    /// Inference steps `N` of the inversion and regeneration (the reference: 100).
    pub steps: usize,
    /// The inverter (eta, guidance while regenerating).
    pub inverter: EfInverterConfig,
    /// The edit search (`T_skip` values, lambda, edit form).
    pub search: SearchConfig,
    /// Stronger edit strengths tried in turn after `search.lambda`, each on the inputs the
    /// previous strengths left unflipped (a new inversion and the whole `T_skip` search per
    /// strength); empty (the reference's single strength) by default. The paper tunes lambda
    /// per dataset; a ladder keeps the gentle strength for the inputs it flips.
    pub extra_lambdas: Vec<f64>,
}

impl Default for DiffusionConfig {
    /// The reference's settings with fewer steps: 50 steps (diffusers' leading spacing, offset
    /// 1, no final alpha of one), eta 1, unconditional inversion, guidance 4 when regenerating,
    /// `T_skip` 0.9 down to 0, lambda 2.
    fn default() -> Self {
        Self {
            steps: 50,
            inverter: EfInverterConfig::diffusion(),
            search: SearchConfig::default(),
            extra_lambdas: Vec::new(),
        }
    }
}

impl DiffusionConfig {
    /// The authors' `eval.py` settings for the published Kandinsky 2.2 decoder: 100 steps,
    /// eta 1, unconditional inversion with the last noise map set to zero
    /// ([`EfInverterConfig::diffusion_published`]), guidance 4 when regenerating, `T_skip`
    /// 0.9, 0.8, ..., 0, lambda 2, the reference's edit form, no ladder.
    pub fn published() -> Self {
        Self {
            steps: PUBLISHED_STEPS,
            inverter: EfInverterConfig::diffusion_published(),
            ..Self::default()
        }
    }

    /// The inference steps over `schedule`.
    pub fn inference_steps(&self, schedule: &NoiseSchedule) -> Result<Steps> {
        Steps::inference(schedule, self.steps, Spacing::Leading, 1, false)
    }

    /// The edit strengths tried in turn: `search.lambda`, then `extra_lambdas`.
    pub fn lambdas(&self) -> Vec<f64> {
        let mut all = vec![self.search.lambda];
        all.extend(&self.extra_lambdas);
        all
    }

    /// Denoiser calls one search of `trials` regenerations costs an input: the inversion's `N`,
    /// then for each tried `T_skip` the `N - skip` regeneration steps, twice each under
    /// classifier-free guidance.
    pub fn denoiser_calls(&self, trials: usize) -> usize {
        let n = self.steps;
        let branches = if self.inverter.target_guidance == 1.0 {
            1
        } else {
            2
        };
        let regen: usize = self
            .search
            .t_skips
            .iter()
            .take(trials)
            .map(|&t| n - skip_steps(n, t))
            .sum();
        n + regen * branches
    }
}

/// DIFFusion's editing engine: a decoder (an embedding-conditioned denoiser that is also the
/// image encoder), its inverter and the class statistics of its encoder.
pub struct Editor<'a, B: Backend, D> {
    decoder: &'a D,
    stats: &'a ClassStats,
    config: DiffusionConfig,
    inverter: EfInverter<B>,
}

impl<'a, B, D> Editor<'a, B, D>
where
    B: Backend,
    D: Decoder<B>,
{
    /// The engine over `schedule` (the decoder's training schedule); `stats` must come from the
    /// decoder's own encoder. The null condition of guidance is the zero embedding.
    pub fn new(
        decoder: &'a D,
        schedule: &NoiseSchedule,
        stats: &'a ClassStats,
        config: DiffusionConfig,
        device: &B::Device,
    ) -> Result<Self> {
        Self::with_steps(
            decoder,
            config.inference_steps(schedule)?,
            stats,
            config,
            device,
        )
    }

    /// The engine over inference `steps` built by the caller (for example from a diffusers
    /// scheduler config); `steps` must have `config.steps` steps.
    pub fn with_steps(
        decoder: &'a D,
        steps: Steps,
        stats: &'a ClassStats,
        config: DiffusionConfig,
        device: &B::Device,
    ) -> Result<Self> {
        if steps.len() != config.steps {
            return Err(Error::shape(
                "inference steps",
                format!("{} (the settings' steps)", config.steps),
                steps.len(),
            ));
        }
        stats.check_encoder(&decoder.identity())?;
        let null = decoder.null_condition(device)?;
        let inverter = config.inverter.init(steps, Some(null))?;
        Ok(Self {
            decoder,
            stats,
            config,
            inverter,
        })
    }

    /// The settings.
    pub fn config(&self) -> &DiffusionConfig {
        &self.config
    }

    /// The inverter.
    pub fn inverter(&self) -> &EfInverter<B> {
        &self.inverter
    }

    /// The class statistics.
    pub fn stats(&self) -> &ClassStats {
        self.stats
    }

    /// The decoder (also the image encoder).
    pub fn decoder(&self) -> &D {
        self.decoder
    }

    /// Inversion and regeneration under the decoder, inverting with noise seeded by `seed`.
    pub fn regenerator(&self, seed: u64) -> EfRegenerator<'_, B, D> {
        EfRegenerator {
            inverter: &self.inverter,
            denoiser: self.decoder,
            codec: self.decoder.codec(),
            seed,
        }
    }

    /// DIFFusion's transition between inputs and their counterfactuals: inverts `images` (all
    /// of class `from`) once, then regenerates them at each lambda of `lambdas` along the
    /// class-mean direction `from -> to`, skipping `skip` steps (the skip that flipped them).
    /// One `[N, C, H, W]` batch per lambda.
    pub fn sweep(
        &self,
        images: Tensor<B, 4>,
        (from, to): (&str, &str),
        skip: usize,
        lambdas: &[f64],
        seed: u64,
    ) -> Result<Vec<Tensor<B, 4>>> {
        let direction = self.stats.direction(from, to)?;
        let regenerator = self.regenerator(seed);
        let n = images.dims()[0];
        let embeddings = self.decoder.encode(images.clone())?;
        let state = regenerator.invert(images)?;
        let all: Vec<usize> = (0..n).collect();
        sweep(embeddings, &direction, lambdas, self.config.search.form)?
            .into_iter()
            .map(|cond| regenerator.generate(&state, &all, cond, skip))
            .collect()
    }
}

/// DIFFusion as a [`Method`] on a two-class problem: the editing engine, the oracle that judges
/// flips, and the two directions between the classes.
pub struct DiffusionMethod<'a, B: Backend, D, C> {
    editor: Editor<'a, B, D>,
    oracle: &'a C,
    /// Class-mean directions away from label 0 and away from label 1.
    directions: [Direction; 2],
}

impl<'a, B, D, C> DiffusionMethod<'a, B, D, C>
where
    B: Backend,
    D: Decoder<B>,
    C: Classifier<B>,
{
    /// DIFFusion between `classes` (label 0, label 1, as named in the editor's statistics),
    /// judged by `oracle`.
    pub fn new(editor: Editor<'a, B, D>, oracle: &'a C, classes: &[String; 2]) -> Result<Self> {
        let stats = editor.stats;
        let [a, b] = classes;
        Ok(Self {
            directions: [stats.direction(a, b)?, stats.direction(b, a)?],
            editor,
            oracle,
        })
    }

    /// The editing engine.
    pub fn editor(&self) -> &Editor<'a, B, D> {
        &self.editor
    }

    /// The search of `images` (all labelled `from`) towards `target` at strength `lambda`.
    fn search(
        &self,
        images: Tensor<B, 4>,
        from: usize,
        target: usize,
        lambda: f64,
        seed: u64,
    ) -> Result<(Vec<EditOutcome>, Tensor<B, 4>)> {
        let config = &self.editor.config;
        let report = search(
            self.editor.decoder,
            &self.editor.regenerator(seed),
            self.oracle,
            images,
            &self.directions[from],
            target,
            &SearchConfig {
                lambda,
                ..config.search.clone()
            },
        )?;
        Ok((report.outcomes, report.images))
    }
}

impl<B, D, C> Method<B> for DiffusionMethod<'_, B, D, C>
where
    B: Backend,
    D: Decoder<B>,
    C: Classifier<B>,
{
    fn name(&self) -> &str {
        "diffusion"
    }

    /// Per group of inputs with the same label and target: the edit search at each strength
    /// of the ladder ([`DiffusionConfig::lambdas`]) on the inputs not yet flipped.
    fn explain(&self, request: Request<'_, B>) -> Result<Explained<B>> {
        let Request {
            images,
            labels,
            targets,
            seed,
        } = request;
        check_request(&images, labels, targets)?;
        let config = &self.editor.config;
        let lambdas = config.lambdas();
        let keys = keys(labels, targets);
        let mut rows = Rows::new(targets.len());
        for ((from, target), members) in groups(&keys) {
            let x = subset(&images, &members, targets.len());
            let mut costs = vec![Cost::default(); members.len()];
            let climbs = escalate(members.len(), &lambdas, |&lambda, active| {
                let xs = subset(&x, active, members.len());
                let (outcomes, found) = self.search(xs, from, target, lambda, seed)?;
                Ok(outcomes
                    .into_iter()
                    .enumerate()
                    .map(|(j, o)| {
                        costs[active[j]] += Cost {
                            denoiser_calls: config.denoiser_calls(o.trials),
                            // One oracle pass per regeneration tried.
                            classifier_calls: o.trials,
                            encoder_calls: 1,
                        };
                        let setting = o.t_skip.map(|t_skip| Setting::Edit {
                            t_skip,
                            lambda: Some(lambda),
                        });
                        Attempt {
                            flipped: o.flipped,
                            value: (found.clone().narrow(0, j, 1), setting),
                        }
                    })
                    .collect())
            })?;
            for ((&i, climb), cost) in members.iter().zip(climbs).zip(costs) {
                let (image, setting) = climb.value;
                let outcome = Outcome {
                    flipped: climb.flipped_at.is_some(),
                    setting: setting.filter(|_| climb.flipped_at.is_some()),
                    cost,
                };
                rows.put(i, image, outcome);
            }
        }
        rows.finish()
    }
}

/// The nearest-neighbour baseline as a [`Method`]: for each input, the training image of the
/// other class than its label whose embedding is the most cosine-similar to the input's.
pub struct Nearest<'a, B: Backend, E, C> {
    encoder: &'a E,
    oracle: &'a C,
    train: &'a Dataset,
    image_size: u32,
    /// Per label: the training items and their unit embeddings `[M_c, D]`.
    bank: Vec<(Vec<usize>, Tensor<B, 2>)>,
}

impl<'a, B, E, C> Nearest<'a, B, E, C>
where
    B: Backend,
    E: ImageEncoder<B>,
    C: Classifier<B>,
{
    /// Embeds every image of `train` (two classes) at `image_size` with `encoder`.
    pub fn new(
        encoder: &'a E,
        oracle: &'a C,
        train: &'a Dataset,
        image_size: u32,
        device: &B::Device,
    ) -> Result<Self> {
        let (mode, resize) = image_mode(image_size);
        let mut bank = Vec::new();
        for label in 0..train.class_names().len() {
            let items: Vec<usize> = (0..train.len())
                .filter(|&i| train.items()[i].label == label)
                .collect();
            if items.is_empty() {
                return Err(Error::Empty {
                    what: format!("training images of {:?}", train.class_names()[label]).into(),
                    hint: "the nearest-neighbour baseline needs some".into(),
                });
            }
            let mut parts = Vec::new();
            for chunk in items.chunks(64) {
                let (x, _) = train.tensors::<B>(chunk, mode, resize, device)?;
                parts.push(unit_rows(encoder.encode(x)?, 1e-12));
            }
            bank.push((items, Tensor::cat(parts, 0)));
        }
        Ok(Self {
            encoder,
            oracle,
            train,
            image_size,
            bank,
        })
    }

    /// The classes the nearest images come from, by label.
    pub fn class_names(&self) -> &[String] {
        self.train.class_names()
    }
}

impl<B, E, C> Method<B> for Nearest<'_, B, E, C>
where
    B: Backend,
    E: ImageEncoder<B>,
    C: Classifier<B>,
{
    fn name(&self) -> &str {
        "nearest"
    }

    fn explain(&self, request: Request<'_, B>) -> Result<Explained<B>> {
        let Request {
            images,
            labels,
            targets,
            ..
        } = request;
        check_request(&images, labels, targets)?;
        let (mode, resize) = image_mode(self.image_size);
        let device = images.device();
        let mut rows = Rows::new(targets.len());
        for (from, members) in groups(labels) {
            let (items, embeddings) = &self.bank[1 - from];
            let query = unit_rows(
                self.encoder
                    .encode(subset(&images, &members, targets.len()))?,
                1e-12,
            );
            let similarity = query.matmul(embeddings.clone().transpose());
            let best = to_vec_f32(&similarity.argmax(1).float())?;
            let chosen: Vec<usize> = best.iter().map(|&j| items[j as usize]).collect();
            let (found, _) = self.train.tensors::<B>(&chosen, mode, resize, &device)?;
            let predicted = predicted_labels(self.oracle, found.clone())?;
            for (j, &i) in members.iter().enumerate() {
                let cost = Cost {
                    denoiser_calls: 0,
                    classifier_calls: 1,
                    encoder_calls: 1,
                };
                let outcome = Outcome {
                    flipped: predicted[j] == targets[i],
                    setting: None,
                    cost,
                };
                rows.put(i, found.clone().narrow(0, j, 1), outcome);
            }
        }
        rows.finish()
    }
}

/// Checks a request: one label and one target per image, each 0 or 1.
pub(crate) fn check_request<B: Backend>(
    images: &Tensor<B, 4>,
    labels: &[usize],
    targets: &[usize],
) -> Result<()> {
    let n = images.dims()[0];
    if labels.len() != n || targets.len() != n {
        return Err(Error::shape(
            "labels and targets of a request",
            format!("{n} each (one per image)"),
            format!("{} labels, {} targets", labels.len(), targets.len()),
        ));
    }
    if let Some(&bad) = labels.iter().chain(targets).find(|&&c| c > 1) {
        return Err(Error::out_of_range("class of a request", "0 or 1", bad));
    }
    Ok(())
}

/// The `(label, target)` pair of each input of a request.
pub(crate) fn keys(labels: &[usize], targets: &[usize]) -> Vec<(usize, usize)> {
    labels
        .iter()
        .copied()
        .zip(targets.iter().copied())
        .collect()
}

/// Indices of equal keys, groups in order of first appearance.
pub(crate) fn groups<K: PartialEq + Copy>(keys: &[K]) -> Vec<(K, Vec<usize>)> {
    let mut found: Vec<(K, Vec<usize>)> = Vec::new();
    for (i, &k) in keys.iter().enumerate() {
        match found.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(i),
            None => found.push((k, vec![i])),
        }
    }
    found
}

/// The rows `members` of `x` (of `n` rows); `x` itself when they are all of them, in order.
pub(crate) fn subset<B: Backend>(x: &Tensor<B, 4>, members: &[usize], n: usize) -> Tensor<B, 4> {
    if members.len() == n && members.iter().enumerate().all(|(k, &i)| k == i) {
        x.clone()
    } else {
        x.clone().select(0, index_tensor(members, &x.device()))
    }
}

/// Per-input answers gathered in input order.
pub(crate) struct Rows<B: Backend> {
    images: Vec<Option<Tensor<B, 4>>>,
    outcomes: Vec<Option<Outcome>>,
}

impl<B: Backend> Rows<B> {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            images: vec![None; n],
            outcomes: vec![None; n],
        }
    }

    pub(crate) fn put(&mut self, i: usize, image: Tensor<B, 4>, outcome: Outcome) {
        self.images[i] = Some(image);
        self.outcomes[i] = Some(outcome);
    }

    pub(crate) fn finish(self) -> Result<Explained<B>> {
        let n = self.images.len();
        let images = self
            .images
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::shape("counterfactuals of a batch", n, "fewer"))?;
        let outcomes = self
            .outcomes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::shape("outcomes of a batch", n, "fewer"))?;
        Ok(Explained::unmasked(Tensor::cat(images, 0), outcomes))
    }
}
