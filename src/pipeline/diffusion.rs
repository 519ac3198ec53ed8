//! DIFFusion on the networks of model folders: the decoder (with its encoder and class
//! statistics) and the oracle, loaded once ([`Diffusion::load`]), run over a set as DIFFusion,
//! its target-mean baseline or the nearest-neighbour baseline.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use foil_core::Result;
use foil_data::Dataset;
use foil_diffusion::{
    DecoderSpec, DiffusionConfig, DiffusionMethod, EmbeddingDecoder, Editor, Nearest, STATS_FILE,
    load_decoder,
};
use foil_embed::ClassStats;
use foil_models::ensemble::Ensemble;
use foil_run::{RunSummary, run_set};

use super::{OracleSpec, RunOptions, load_oracle};

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

    /// DIFFusion (or its target-mean baseline) of `config` over `data`, writing one result per
    /// input under `out`; inputs already done are skipped.
    pub fn run(
        &self,
        config: DiffusionConfig,
        data: &Dataset,
        out: &Path,
        options: &RunOptions,
    ) -> Result<RunSummary> {
        self.oracle_spec.check_data(data)?;
        let classes = &self.oracle_spec.classes;
        let method = DiffusionMethod::new(self.editor(config)?, &self.oracle, classes, &self.device)?;
        let plan = options.plan(data, out, self.image_size(), &self.device);
        run_set(&method, &self.oracle, &plan)
    }

    /// The nearest-neighbour baseline over `data`: each input's counterfactual is the training
    /// image of `train` of the other class whose embedding is the nearest.
    pub fn run_nearest(
        &self,
        train: &Dataset,
        data: &Dataset,
        out: &Path,
        options: &RunOptions,
    ) -> Result<RunSummary> {
        self.oracle_spec.check_data(data)?;
        self.oracle_spec.check_data(train)?;
        let method = Nearest::new(&self.decoder, &self.oracle, train, self.image_size(), &self.device)?;
        let plan = options.plan(data, out, self.image_size(), &self.device);
        run_set(&method, &self.oracle, &plan)
    }
}
