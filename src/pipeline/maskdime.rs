//! MaskDiME (FastDiME, DiME) on the networks of model folders: the DDPM, the oracle and the
//! optional VGG-19 of the perceptual loss, loaded once ([`MaskDime::load`]) and run over a set
//! by `foil_run::run_set`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use foil_core::{Classifier, Denoiser, Detached, Error, FeatureExtractor, Result};
use foil_data::Dataset;
use foil_guide::{Guide, GuideConfig, MaskPolicy};
use foil_models::adm::Adm;
use foil_models::ensemble::Ensemble;
use foil_models::vgg::{Vgg19Config, Vgg19Perceptual};
use foil_run::{RunSummary, SetRun, run_set};
use foil_schedule::{NoiseSchedule, Steps, space_timesteps};

use super::RunOptions;
use foil_models::adm::folder::load_ddpm;
use foil_models::oracle::{OracleSpec, load_oracle};

/// Which of the three methods of the guided sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// MaskDiME: Tweedie estimate, dual top-k masks.
    Maskdime,
    /// FastDiME: Tweedie estimate, pixel-difference mask.
    Fastdime,
    /// DiME: full-chain clean estimate, no mask.
    Dime,
}

impl Preset {
    /// The lower-case name (also the results sub-folder).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Maskdime => "maskdime",
            Preset::Fastdime => "fastdime",
            Preset::Dime => "dime",
        }
    }
}

/// The guided sampler's settings for a set.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainConfig {
    /// The method.
    pub preset: Preset,
    /// The sampler's settings (start from [`ExplainConfig::new`]'s).
    pub guide: GuideConfig,
    /// Sampling steps: the DDPM's `T` respaced to this many (DiME: 200 of 500).
    pub respaced_steps: usize,
}

impl ExplainConfig {
    /// The preset's published settings adapted to small images: no perceptual network
    /// (`lambda_perc = 0`), start step `tau` = 30 of 100 respaced steps, MaskDiME's top-k share
    /// 0.2 with a 3x3 dilation (a 5x5 dilation of 5% covers most of a 32 px image; on
    /// Fashion-MNIST Shirt vs T-shirt/top a share of 0.1 flipped 33 of 50 inputs and 0.2 flipped
    /// 49, at LPIPS 0.018 and 0.056: docs/pipeline.md).
    pub fn new(preset: Preset) -> Self {
        let guide = match preset {
            Preset::Maskdime => GuideConfig {
                mask: MaskPolicy::Dual {
                    k: 0.2,
                    gamma: 0.5,
                    dilation: foil_guide::Dilation::Square { kernel: 3 },
                },
                ..GuideConfig::maskdime()
            },
            Preset::Fastdime => GuideConfig {
                mask: MaskPolicy::Difference {
                    warmup: 10,
                    pool: 3,
                    threshold: 0.15,
                },
                ..GuideConfig::fastdime()
            },
            Preset::Dime => GuideConfig::dime(),
        };
        Self {
            preset,
            guide: GuideConfig {
                tau: 30,
                lambda_perc: 0.0,
                ..guide
            },
            respaced_steps: 100,
        }
    }
}

/// The networks the guided sampler runs: the unconditional DDPM and its training schedule,
/// the oracle under explanation, and the perceptual network of the distance loss (the
/// references' VGG-19 `features[:18]`; `None` needs `lambda_perc = 0`).
pub struct GuideModels<'a, B: AutodiffBackend, D, C> {
    /// The DDPM (on the inner backend: it is never differentiated).
    pub ddpm: &'a D,
    /// The DDPM's training schedule (respaced to `ExplainConfig::respaced_steps`).
    pub schedule: &'a NoiseSchedule,
    /// The classifier explained; its gradients guide, its prediction sets the targets.
    pub oracle: &'a C,
    /// The perceptual feature extractor, weighted by `lambda_perc`.
    pub perceptual: Option<&'a dyn FeatureExtractor<B>>,
}

impl<B: AutodiffBackend, D, C> Clone for GuideModels<'_, B, D, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: AutodiffBackend, D, C> Copy for GuideModels<'_, B, D, C> {}

impl<'a, B, D, C> GuideModels<'a, B, D, C>
where
    B: AutodiffBackend,
    D: Denoiser<B::InnerBackend>,
    C: Classifier<B>,
{
    /// The sampler of `config` over these networks: the schedule respaced to
    /// `config.respaced_steps`, the perceptual network attached (a weight without one is
    /// refused).
    pub fn guide(&self, config: &ExplainConfig) -> Result<Guide<'a, B, D, C>> {
        let keep = space_timesteps(self.schedule.len(), &config.respaced_steps.to_string())?;
        let steps = Steps::respaced(self.schedule, &keep)?;
        let guide = Guide::<B, _, _>::new(config.guide.clone(), steps, self.ddpm, self.oracle)?;
        match self.perceptual {
            Some(extractor) => Ok(guide.with_perceptual(extractor)),
            None if config.guide.lambda_perc > 0.0 => Err(Error::out_of_range(
                "lambda_perc",
                "0 without a perceptual network (the references' VGG-19: `--perceptual vgg19:FILE`)",
                config.guide.lambda_perc,
            )),
            None => Ok(guide),
        }
    }

    /// Explains every image of `plan.data` (two classes) towards the other class of the
    /// oracle's prediction, writing one result per input under `plan.out`
    /// (`foil_run::run_set`); inputs already done are skipped.
    pub fn run(
        &self,
        config: &ExplainConfig,
        plan: &SetRun<'_, B::InnerBackend>,
    ) -> Result<RunSummary> {
        let guide = self.guide(config)?;
        run_set(&guide, &Detached::<B, C>::new(self.oracle), plan)
    }
}

/// Where MaskDiME's networks are: model folders written by `foil train`, and torchvision's
/// VGG-19 for the perceptual loss.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskDimeFiles {
    /// The oracle folder (`foil train oracle`).
    pub oracle: PathBuf,
    /// The DDPM folder (`foil train ddpm`).
    pub ddpm: PathBuf,
    /// A torchvision `vgg19` state dict and the `features` modules kept (the references: 18).
    pub perceptual: Option<(PathBuf, usize)>,
}

/// MaskDiME's networks, loaded: the DDPM and its schedule, the oracle, the perceptual network.
pub struct MaskDime<B: AutodiffBackend> {
    ddpm: Adm<B::InnerBackend>,
    schedule: NoiseSchedule,
    oracle: Ensemble<B>,
    oracle_spec: OracleSpec,
    perceptual: Option<Vgg19Perceptual<B>>,
    device: B::Device,
}

impl<B: AutodiffBackend> MaskDime<B> {
    /// Loads the networks of `files`; the oracle and the DDPM must take the same image size.
    pub fn load(files: &MaskDimeFiles, device: &B::Device) -> Result<Self> {
        let (oracle_spec, oracle) = load_oracle::<B>(&files.oracle, device)?;
        let (ddpm_spec, ddpm) = load_ddpm::<B::InnerBackend>(&files.ddpm, device)?;
        if oracle_spec.image_size != ddpm_spec.image_size {
            return Err(Error::shape(
                "oracle and DDPM image sizes",
                oracle_spec.image_size,
                ddpm_spec.image_size,
            ));
        }
        let perceptual = match &files.perceptual {
            Some((file, layers)) => Some(Vgg19Perceptual::<B>::load_file(
                file,
                &Vgg19Config::default().with_layers(*layers),
                device,
            )?),
            None => None,
        };
        Ok(Self {
            ddpm,
            schedule: ddpm_spec.schedule()?,
            oracle,
            oracle_spec,
            perceptual,
            device: device.clone(),
        })
    }

    /// Side of the square images the networks take.
    pub fn image_size(&self) -> u32 {
        self.oracle_spec.image_size
    }

    /// The networks, borrowed.
    pub fn models(&self) -> GuideModels<'_, B, Adm<B::InnerBackend>, Ensemble<B>> {
        GuideModels {
            ddpm: &self.ddpm,
            schedule: &self.schedule,
            oracle: &self.oracle,
            perceptual: self
                .perceptual
                .as_ref()
                .map(|p| p as &dyn FeatureExtractor<B>),
        }
    }

    /// [`GuideModels::run`] on these networks, after checking that `data` has the oracle's
    /// classes.
    pub fn run(
        &self,
        config: &ExplainConfig,
        data: &Dataset,
        out: &Path,
        options: &RunOptions,
    ) -> Result<RunSummary> {
        self.oracle_spec.check_classes(data.class_names())?;
        let plan = options.plan(data, out, self.image_size(), &self.device);
        self.models().run(config, &plan)
    }
}
