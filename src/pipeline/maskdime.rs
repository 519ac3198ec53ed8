//! MaskDiME (FastDiME, DiME) on its networks: the DDPM, the oracle and the optional VGG-19 of
//! the perceptual loss, loaded once ([`MaskDime::load`]) and run over a set by
//! `foil_run::run_set`.
//!
//! The DDPM and the oracle come from foil's model folders (`foil train ddpm`, `foil train
//! oracle`) or from the authors' published files ([`DdpmSource::Checkpoint`]: a guided-diffusion
//! state dict such as DiME's CelebA 128 px DDPM; [`OracleSource::DimeClassifier`]: DiME's
//! DenseNet-121 CelebA classifier, one attribute explained). With published files, start from
//! [`ExplainConfig::published`], the authors' scripts' settings.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use foil_core::{Classifier, Denoiser, Detached, Error, FeatureExtractor, Result};
use foil_data::Dataset;
use foil_guide::{Guide, GuideConfig, MaskPolicy};
use foil_models::adm::Adm;
use foil_models::adm::folder::DdpmSource;
use foil_models::vgg::{Vgg19Config, Vgg19Perceptual};
use foil_run::{RunSummary, SetRun, run_set};
use foil_schedule::{NoiseSchedule, Steps, space_timesteps};

use super::RunOptions;
use foil_models::oracle::{LoadedOracle, OracleSource};

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

    /// The preset as the authors' scripts run it on CelebA at 128 px with DiME's published
    /// networks: [`GuideConfig::maskdime`], [`GuideConfig::fastdime`] or [`GuideConfig::dime`]
    /// unchanged (start step `tau` = 60, the perceptual weight 30 of their VGG-19 loss), the
    /// DDPM's 500 diffusion steps respaced to 200. The perceptual weight needs a perceptual
    /// network ([`MaskDimeFiles::perceptual`]); set `guide.lambda_perc` to 0 to run without.
    pub fn published(preset: Preset) -> Self {
        let guide = match preset {
            Preset::Maskdime => GuideConfig::maskdime(),
            Preset::Fastdime => GuideConfig::fastdime(),
            Preset::Dime => GuideConfig::dime(),
        };
        Self {
            preset,
            guide,
            respaced_steps: PUBLISHED_RESPACED_STEPS,
        }
    }
}

/// Sampling steps of the authors' scripts (`--timestep_respacing 200`).
pub const PUBLISHED_RESPACED_STEPS: usize = 200;

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

/// Where MaskDiME's networks are: foil's model folders or the authors' published files, and
/// torchvision's VGG-19 for the perceptual loss.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskDimeFiles {
    /// The oracle.
    pub oracle: OracleSource,
    /// The DDPM.
    pub ddpm: DdpmSource,
    /// A torchvision `vgg19` state dict and the `features` modules kept (the references: 18).
    pub perceptual: Option<(PathBuf, usize)>,
}

impl MaskDimeFiles {
    /// An oracle folder and a DDPM folder (`foil train`), no perceptual network.
    pub fn folders(oracle: impl Into<PathBuf>, ddpm: impl Into<PathBuf>) -> Self {
        Self {
            oracle: OracleSource::Folder(oracle.into()),
            ddpm: DdpmSource::Folder(ddpm.into()),
            perceptual: None,
        }
    }

    /// Whether the DDPM or the oracle is a published network (then
    /// [`ExplainConfig::published`] is the natural start).
    pub fn is_published(&self) -> bool {
        self.oracle.is_published() || matches!(self.ddpm, DdpmSource::Checkpoint { .. })
    }
}

/// MaskDiME's networks, loaded: the DDPM and its schedule, the oracle, the perceptual network.
pub struct MaskDime<B: AutodiffBackend> {
    ddpm: Adm<B::InnerBackend>,
    schedule: NoiseSchedule,
    image_size: u32,
    oracle: LoadedOracle<B>,
    perceptual: Option<Vgg19Perceptual<B>>,
    device: B::Device,
}

impl<B: AutodiffBackend> MaskDime<B> {
    /// Loads the networks of `files`. The image size is the DDPM's (its folder's, or its
    /// checkpoint configuration's `image_size`); a folder oracle must take the same size, and
    /// DiME's classifier must accept it (at least its minimum input size).
    pub fn load(files: &MaskDimeFiles, device: &B::Device) -> Result<Self> {
        let oracle = LoadedOracle::<B>::load(&files.oracle, device)?;
        let (ddpm, schedule, image_size) = files.ddpm.load::<B::InnerBackend>(device)?;
        match &oracle {
            LoadedOracle::Folder { spec, .. } => {
                if spec.image_size != image_size {
                    return Err(Error::shape(
                        "oracle and DDPM image sizes",
                        spec.image_size,
                        image_size,
                    ));
                }
            }
            LoadedOracle::Dime(net) => {
                if (image_size as usize) < net.min_input_size() {
                    return Err(Error::out_of_range(
                        "DDPM image size for DiME's classifier",
                        format!("at least its minimum input size, {}", net.min_input_size()),
                        image_size,
                    ));
                }
            }
            LoadedOracle::Torchvision(net) => {
                if (image_size as usize) < net.min_input_size() {
                    return Err(Error::out_of_range(
                        format!("DDPM image size for torchvision's {}", net.arch()),
                        format!("at least its minimum input size, {}", net.min_input_size()),
                        image_size,
                    ));
                }
            }
        }
        let perceptual = match &files.perceptual {
            // Frozen: the perceptual loss is differentiated with respect to its input only.
            Some((file, layers)) => Some(
                Vgg19Perceptual::<B>::load_file(
                    file,
                    &Vgg19Config::default().with_layers(*layers),
                    device,
                )?
                .no_grad(),
            ),
            None => None,
        };
        Ok(Self {
            ddpm,
            schedule,
            image_size,
            oracle,
            perceptual,
            device: device.clone(),
        })
    }

    /// Side of the square images the networks take.
    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// The oracle explained.
    pub fn oracle(&self) -> &LoadedOracle<B> {
        &self.oracle
    }

    /// The DDPM's training schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The networks, borrowed.
    pub fn models(&self) -> GuideModels<'_, B, Adm<B::InnerBackend>, LoadedOracle<B>> {
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

    /// [`GuideModels::run`] on these networks, after checking that `data` has a folder
    /// oracle's classes (a published classifier has none: the data's label 1 must be its
    /// attribute present).
    pub fn run(
        &self,
        config: &ExplainConfig,
        data: &Dataset,
        out: &Path,
        options: &RunOptions,
    ) -> Result<RunSummary> {
        self.oracle.check_classes(data.class_names())?;
        let plan = options.plan(data, out, self.image_size(), &self.device);
        self.models().run(config, &plan)
    }
}
