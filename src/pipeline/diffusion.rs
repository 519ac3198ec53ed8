//! DIFFusion on loaded networks: a decoder (foil's own from a model folder, or the published
//! Kandinsky 2.2 decoder with the prior's CLIP image encoder), its class statistics and the
//! oracle, loaded once ([`Diffusion::load`], [`Diffusion::load_published`]), then DIFFusion
//! ([`Diffusion::arithmetic`]), its target-mean baseline or the nearest-neighbour baseline run
//! over a set ([`Diffusion::run`]).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use foil_core::{Error, ImageEncoder, Result};
use foil_data::Dataset;
use foil_diffusion::{
    Decoder, DiffusionConfig, DiffusionMethod, Editor, EmbeddingDecoder, KandinskyDecoder, Nearest,
    STATS_FILE, TargetMean, load_decoder,
};
use foil_embed::ClassStats;
use foil_models::oracle::{LoadedOracle, OracleSource};
use foil_run::{RunSummary, run_set};
use foil_schedule::{NoiseSchedule, Spacing, Steps};

use super::RunOptions;

/// Where DIFFusion's networks are, for a decoder foil trained.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionFiles {
    /// The oracle folder (`foil train oracle`).
    pub oracle: PathBuf,
    /// The decoder folder (`foil train decoder` or `foil train lora`).
    pub decoder: PathBuf,
    /// The class statistics; `None`: the decoder folder's `stats.json`.
    pub stats: Option<PathBuf>,
}

/// Where the published DIFFusion networks are, as downloaded from the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedDiffusionFiles {
    /// The Kandinsky 2.2 decoder pipeline folder (`kandinsky-community/kandinsky-2-2-decoder`:
    /// `model_index.json`, `unet/`, `movq/`, `scheduler/`).
    pub decoder: PathBuf,
    /// The image encoder: the Kandinsky 2.2 prior folder (with `image_encoder/` and
    /// `image_processor/`) or a transformers CLIP vision folder itself.
    pub encoder: PathBuf,
    /// A LoRA adapter of the UNet (peft's folder or a diffusers LoRA file), merged on load.
    pub lora: Option<PathBuf>,
    /// Class statistics of the encoder's embeddings (`foil stats --encoder ...`).
    pub stats: PathBuf,
    /// The classifier that judges flips.
    pub oracle: OracleSource,
    /// Side of the square images (512 in the authors' runs; a multiple of the latent factor).
    pub image_size: u32,
}

/// How inference steps are spaced over the decoder's training schedule (diffusers'
/// `set_timesteps`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// The training noise schedule.
    pub schedule: NoiseSchedule,
    /// The spacing of the inference timesteps.
    pub spacing: Spacing,
    /// `steps_offset` (leading spacing only).
    pub steps_offset: usize,
    /// `set_alpha_to_one`.
    pub set_alpha_to_one: bool,
}

impl StepPlan {
    /// `n` inference steps.
    pub fn steps(&self, n: usize) -> Result<Steps> {
        Steps::inference(
            &self.schedule,
            n,
            self.spacing,
            self.steps_offset,
            self.set_alpha_to_one,
        )
    }
}

/// DIFFusion's networks, loaded: the decoder and its encoder, how its steps are spaced, the
/// class statistics, the oracle.
pub struct Diffusion<B: Backend, D = EmbeddingDecoder<B>> {
    decoder: D,
    plan: StepPlan,
    stats: ClassStats,
    oracle: LoadedOracle<B>,
    image_size: u32,
    device: B::Device,
}

impl<B: Backend> Diffusion<B> {
    /// Loads the networks of `files`; the oracle and the decoder must take the same image size,
    /// and the statistics must come from the decoder's encoder.
    pub fn load(files: &DiffusionFiles, device: &B::Device) -> Result<Self> {
        let oracle = LoadedOracle::<B>::load(&OracleSource::Folder(files.oracle.clone()), device)?;
        let (spec, decoder) = load_decoder::<B>(&files.decoder, device)?;
        if let Some(oracle_spec) = oracle.spec()
            && oracle_spec.image_size != spec.image_size
        {
            return Err(Error::shape(
                "oracle and decoder image sizes",
                oracle_spec.image_size,
                spec.image_size,
            ));
        }
        let stats_path = files
            .stats
            .clone()
            .unwrap_or_else(|| files.decoder.join(STATS_FILE));
        let plan = StepPlan {
            schedule: spec.schedule()?,
            spacing: Spacing::Leading,
            steps_offset: 1,
            set_alpha_to_one: false,
        };
        Self::new(decoder, plan, &stats_path, oracle, spec.image_size, device)
    }
}

impl<B: Backend> Diffusion<B, KandinskyDecoder<B>> {
    /// Loads the published networks of `files`: the Kandinsky 2.2 decoder (UNet, MoVQ and
    /// scheduler from their `config.json` files, the LoRA merged), the prior's CLIP image
    /// encoder, the statistics (which must come from that encoder) and the oracle.
    pub fn load_published(files: &PublishedDiffusionFiles, device: &B::Device) -> Result<Self> {
        let (decoder, plan) = super::published::load_kandinsky::<B>(
            &files.decoder,
            &files.encoder,
            files.lora.as_deref(),
            device,
        )?;
        let m = decoder.size_multiple() as u32;
        if files.image_size == 0 || !files.image_size.is_multiple_of(m) {
            return Err(Error::out_of_range(
                "image size",
                format!("a positive multiple of {m} (the latent factor of MoVQ and the UNet)"),
                files.image_size,
            ));
        }
        let oracle = LoadedOracle::<B>::load(&files.oracle, device)?;
        Self::new(
            decoder,
            plan,
            &files.stats,
            oracle,
            files.image_size,
            device,
        )
    }
}

impl<B: Backend, D: Decoder<B>> Diffusion<B, D> {
    /// Puts loaded networks together; the statistics at `stats` must come from the decoder's
    /// encoder.
    pub fn new(
        decoder: D,
        plan: StepPlan,
        stats: &Path,
        oracle: LoadedOracle<B>,
        image_size: u32,
        device: &B::Device,
    ) -> Result<Self> {
        let stats = ClassStats::load(stats)?;
        stats.check_encoder(&decoder.identity())?;
        Ok(Self {
            decoder,
            plan,
            stats,
            oracle,
            image_size,
            device: device.clone(),
        })
    }

    /// Side of the square images the networks take.
    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// The decoder.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// The class statistics.
    pub fn stats(&self) -> &ClassStats {
        &self.stats
    }

    /// The oracle.
    pub fn oracle(&self) -> &LoadedOracle<B> {
        &self.oracle
    }

    /// How the decoder's inference steps are spaced.
    pub fn step_plan(&self) -> &StepPlan {
        &self.plan
    }

    /// The editing engine of `config` over the decoder.
    pub fn editor(&self, config: DiffusionConfig) -> Result<Editor<'_, B, D>> {
        let steps = self.plan.steps(config.steps)?;
        Editor::with_steps(&self.decoder, steps, &self.stats, config, &self.device)
    }

    /// The class pair DIFFusion edits between: the oracle's classes, else the statistics'
    /// first two.
    fn classes(&self, data_classes: Option<&[String]>) -> Result<[String; 2]> {
        let names: Vec<String> = match (self.oracle.spec(), data_classes) {
            (Some(spec), _) => spec.classes.to_vec(),
            (None, Some(names)) => names.to_vec(),
            (None, None) => self.stats.names().to_vec(),
        };
        match names.as_slice() {
            [a, b] => Ok([a.clone(), b.clone()]),
            other => Err(Error::shape("classes of the oracle", 2, other.len())),
        }
    }

    /// DIFFusion with the settings of `config`, between the oracle's classes (a published
    /// oracle has none: the statistics' two classes, label 0 first).
    pub fn arithmetic(
        &self,
        config: DiffusionConfig,
    ) -> Result<DiffusionMethod<'_, B, D, LoadedOracle<B>>> {
        DiffusionMethod::new(self.editor(config)?, &self.oracle, &self.classes(None)?)
    }

    /// DIFFusion between the classes of `data` (for a published oracle, whose labels the data
    /// names).
    pub fn arithmetic_for(
        &self,
        config: DiffusionConfig,
        data: &Dataset,
    ) -> Result<DiffusionMethod<'_, B, D, LoadedOracle<B>>> {
        let classes = self.classes(Some(data.class_names()))?;
        DiffusionMethod::new(self.editor(config)?, &self.oracle, &classes)
    }

    /// The target-mean baseline: the same inversion and search, with the other class's mean
    /// embedding in place of the arithmetic.
    pub fn target_mean(
        &self,
        config: DiffusionConfig,
    ) -> Result<TargetMean<'_, B, D, LoadedOracle<B>>> {
        Ok(TargetMean {
            editor: self.editor(config)?,
            oracle: &self.oracle,
            classes: self.classes(None)?,
        })
    }

    /// The nearest-neighbour baseline: each input's counterfactual is the training image of
    /// `train` of the other class whose embedding is the nearest.
    pub fn nearest<'a>(&'a self, train: &'a Dataset) -> Result<Nearest<'a, B, D, LoadedOracle<B>>>
    where
        D: ImageEncoder<B>,
    {
        self.oracle.check_classes(train.class_names())?;
        Nearest::new(
            &self.decoder,
            &self.oracle,
            train,
            self.image_size(),
            &self.device,
        )
    }

    /// Runs `method` (one of the above) over `data`, writing one result per input under `out`;
    /// inputs already done are skipped. `data` must have the oracle's classes.
    pub fn run<M: foil_core::Method<B>>(
        &self,
        method: &M,
        data: &Dataset,
        out: &Path,
        options: &RunOptions,
    ) -> Result<RunSummary> {
        self.oracle.check_classes(data.class_names())?;
        let plan = options.plan(data, out, self.image_size(), &self.device);
        run_set(method, &self.oracle, &plan)
    }
}
