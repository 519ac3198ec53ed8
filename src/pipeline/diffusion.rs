//! DIFFusion on the networks of model folders: the decoder (with its encoder and class
//! statistics) and the oracle, loaded once ([`Diffusion::load`]), then DIFFusion
//! ([`Diffusion::arithmetic`]), its target-mean baseline or the nearest-neighbour baseline run
//! over a set ([`Diffusion::run`]).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use foil_core::Result;
use foil_data::Dataset;
use foil_diffusion::{
    DecoderSpec, DiffusionConfig, DiffusionMethod, Editor, EmbeddingDecoder, Nearest, STATS_FILE,
    TargetMean, load_decoder,
};
use foil_embed::ClassStats;
use foil_models::ensemble::Ensemble;
use foil_run::{RunSummary, run_set};

use super::RunOptions;
use foil_models::oracle::{OracleSpec, load_oracle};

/// Where DIFFusion's networks are.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionFiles {
    /// The oracle folder (`foil train oracle`).
    pub oracle: PathBuf,
    /// The decoder folder (`foil train decoder` or `foil train lora`).
    pub decoder: PathBuf,
    /// The class statistics; `None`: the decoder folder's `stats.json`.
    pub stats: Option<PathBuf>,
}

/// DIFFusion's networks, loaded: the decoder and its encoder, their class statistics, the
/// oracle.
pub struct Diffusion<B: Backend> {
    decoder: EmbeddingDecoder<B>,
    decoder_spec: DecoderSpec,
    stats: ClassStats,
    oracle: Ensemble<B>,
    oracle_spec: OracleSpec,
    device: B::Device,
}

impl<B: Backend> Diffusion<B> {
    /// Loads the networks of `files`; the oracle and the decoder must take the same image size,
    /// and the statistics must come from the decoder's encoder.
    pub fn load(files: &DiffusionFiles, device: &B::Device) -> Result<Self> {
        let (oracle_spec, oracle) = load_oracle::<B>(&files.oracle, device)?;
        let (decoder_spec, decoder) = load_decoder::<B>(&files.decoder, device)?;
        if oracle_spec.image_size != decoder_spec.image_size {
            return Err(foil_core::Error::shape(
                "oracle and decoder image sizes",
                oracle_spec.image_size,
                decoder_spec.image_size,
            ));
        }
        let stats_path = files
            .stats
            .clone()
            .unwrap_or_else(|| files.decoder.join(STATS_FILE));
        let stats = ClassStats::load(&stats_path)?;
        stats.check_encoder(&foil_core::ImageEncoder::identity(&decoder))?;
        Ok(Self {
            decoder,
            decoder_spec,
            stats,
            oracle,
            oracle_spec,
            device: device.clone(),
        })
    }

    /// Side of the square images the networks take.
    pub fn image_size(&self) -> u32 {
        self.oracle_spec.image_size
    }

    /// The editing engine of `config` over the decoder.
    pub fn editor(&self, config: DiffusionConfig) -> Result<Editor<'_, B, EmbeddingDecoder<B>>> {
        Editor::new(
            &self.decoder,
            &self.decoder_spec.schedule()?,
            &self.stats,
            config,
            &self.device,
        )
    }

    /// DIFFusion with the settings of `config`, between the oracle's classes.
    pub fn arithmetic(
        &self,
        config: DiffusionConfig,
    ) -> Result<DiffusionMethod<'_, B, EmbeddingDecoder<B>, Ensemble<B>>> {
        DiffusionMethod::new(
            self.editor(config)?,
            &self.oracle,
            &self.oracle_spec.classes,
        )
    }

    /// The target-mean baseline: the same inversion and search, with the other class's mean
    /// embedding in place of the arithmetic.
    pub fn target_mean(
        &self,
        config: DiffusionConfig,
    ) -> Result<TargetMean<'_, B, EmbeddingDecoder<B>, Ensemble<B>>> {
        Ok(TargetMean {
            editor: self.editor(config)?,
            oracle: &self.oracle,
            classes: self.oracle_spec.classes.clone(),
        })
    }

    /// The nearest-neighbour baseline: each input's counterfactual is the training image of
    /// `train` of the other class whose embedding is the nearest.
    pub fn nearest<'a>(
        &'a self,
        train: &'a Dataset,
    ) -> Result<Nearest<'a, B, EmbeddingDecoder<B>, Ensemble<B>>> {
        self.oracle_spec.check_classes(train.class_names())?;
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
        self.oracle_spec.check_classes(data.class_names())?;
        let plan = options.plan(data, out, self.image_size(), &self.device);
        run_set(method, &self.oracle, &plan)
    }
}
