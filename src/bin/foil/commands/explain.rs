//! `foil maskdime` and `foil diffusion`: counterfactuals for the test images of a class pair,
//! both directions, by the library's pipeline objects ([`MaskDime`], [`Diffusion`]); one
//! summary line per run (per seed).

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use foil::core::{Error, Result};
use foil::data::Dataset;
use foil::diffusion::Decoder;
use foil::models::adm::AdmConfig;
use foil::models::adm::flags::GuidedDiffusionFlags;
use foil::models::dime_classifier::{DimeClassifierConfig, celeba_attribute_index};
use foil::models::torchvision::{Logits, TorchvisionArch};
use foil::pipeline::{
    DIME_DIFFUSION_STEPS, DdpmSource, Diffusion, DiffusionConfig, DiffusionFiles, ExplainConfig,
    MaskDime, MaskDimeFiles, OracleSource, Preset, PublishedDiffusionFiles,
};

use super::manifest::RunRecord;
use super::{DataArgs, EditArgs, RunArgs, print_summary, results_dir};
use crate::device::{DeviceArg, with_backend};

/// Weight of the perceptual loss when `--perceptual` is given without `--lambda-perc` (the
/// authors' scripts' `--l_perc`).
const DEFAULT_LAMBDA_PERC: f64 = 30.0;

/// Which sampler preset.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// MaskDiME (dual top-k masks).
    Maskdime,
    /// FastDiME (pixel-difference mask).
    Fastdime,
    /// DiME (full-chain clean estimate).
    Dime,
}

impl From<PresetArg> for Preset {
    fn from(preset: PresetArg) -> Self {
        match preset {
            PresetArg::Maskdime => Preset::Maskdime,
            PresetArg::Fastdime => Preset::Fastdime,
            PresetArg::Dime => Preset::Dime,
        }
    }
}

/// The oracle every explaining command names: a foil oracle folder, or a published classifier.
#[derive(Debug, Args)]
pub struct OracleArgs {
    /// Oracle folder (`foil train oracle`).
    #[arg(long, default_value = "runs/oracle")]
    oracle: PathBuf,
    /// Published classifier under explanation instead of an oracle folder, ARCH:FILE.
    /// DiME's CelebA classifier, `dime-densenet121:FILE` (the authors' `classifier.pth`) or
    /// `dime-tiny:FILE` (tests), needs --attribute; label 1 (the second of --classes) must be
    /// the images with the attribute. A torchvision state dict (`.pth`, `.pt`, `.bin` or
    /// safetensors; `module.` or a `state_dict` / `model` wrapper tolerated), ARCH one of
    /// resnet18, resnet34, densenet121, densenet161, densenet169, densenet201,
    /// efficientnet_b0, efficientnet_b1, mobilenet_v2: widths and head read from the file,
    /// ImageNet normalisation applied; a multi-class head needs --logits.
    #[arg(long, value_name = "ARCH:FILE", value_parser = parse_classifier, conflicts_with = "oracle")]
    classifier: Option<ClassifierArg>,
    /// With a DiME classifier: the attribute it explains, a CelebA index (0 to 39; the
    /// authors' scripts: 31, Smiling) or name (`Smiling`).
    #[arg(long, value_parser = parse_attribute, requires = "classifier")]
    attribute: Option<usize>,
    /// With a torchvision classifier of a multi-class head: the logits of the class pair, I,J
    /// (logit I stands for the first of --classes, J for the second; the label is their
    /// arg-max). Without it the head must have one logit (label 1: logit above 0).
    #[arg(
        long,
        value_name = "I,J",
        value_parser = parse_logits,
        requires = "classifier",
        conflicts_with = "attribute"
    )]
    logits: Option<[usize; 2]>,
}

impl OracleArgs {
    /// The oracle named: the published classifier (its attribute or logits checked here, before
    /// any data is read), else the folder.
    fn source(&self) -> Result<OracleSource> {
        match &self.classifier {
            Some(classifier) => classifier.source(self.attribute, self.logits),
            None => Ok(OracleSource::Folder(self.oracle.clone())),
        }
    }
}

/// `foil maskdime` arguments.
#[derive(Debug, Args)]
pub struct MaskdimeArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    oracle: OracleArgs,
    /// DDPM folder (`foil train ddpm`).
    #[arg(long, default_value = "runs/ddpm")]
    ddpm: PathBuf,
    /// Published DDPM instead of a folder: a guided-diffusion checkpoint (`.pt`, `.pth` or
    /// safetensors, names with or without `module.`), such as DiME's CelebA DDPM. The set is
    /// explained at its configuration's image size.
    #[arg(long, value_name = "FILE", conflicts_with = "ddpm")]
    ddpm_checkpoint: Option<PathBuf>,
    /// The checkpoint's network: `dime-celeba128` (DiME's CelebA 128 px UNet, the default),
    /// `tiny` (16 px, for tests), or `FILE.json`, guided-diffusion's flags as a JSON object
    /// (`{"image_size": 256, "num_channels": 256, "attention_resolutions": "32,16,8", ...}`).
    #[arg(long, value_parser = parse_ddpm_config, requires = "ddpm_checkpoint")]
    ddpm_config: Option<DdpmConfigArg>,
    /// Diffusion steps the checkpoint was trained with (guided-diffusion's linear betas;
    /// default: the flags file's `diffusion_steps`, else 500, DiME's).
    #[arg(long, requires = "ddpm_checkpoint")]
    diffusion_steps: Option<usize>,
    /// Sampler preset.
    #[arg(long, value_enum, default_value = "maskdime")]
    preset: PresetArg,
    #[command(flatten)]
    run: RunArgs,
    /// Start step tau (of the respaced steps; default 30, with a published network 60).
    #[arg(long)]
    tau: Option<usize>,
    /// Respaced sampling steps (default 100, with a published network 200).
    #[arg(long)]
    respaced_steps: Option<usize>,
    /// Guidance scales tried in turn on inputs not yet flipped.
    #[arg(long, value_delimiter = ',')]
    scales: Option<Vec<f64>>,
    /// MaskDiME: share of pixels in the editable mask M1 (in (0, 1]; default 0.2).
    #[arg(long)]
    mask_fraction: Option<f64>,
    /// Perceptual network of the distance loss, `vgg19:FILE`: a torchvision `vgg19` state dict
    /// (`vgg19-dcbb9e9d.pth` or safetensors), as the authors' scripts use (`features[:18]`).
    #[arg(long, value_parser = parse_perceptual)]
    perceptual: Option<PerceptualArg>,
    /// VGG-19 modules kept for the perceptual loss (the scripts' `--l_perc_layer`).
    #[arg(long, default_value_t = 18)]
    perceptual_layers: usize,
    /// Weight of the perceptual loss (the scripts' `--l_perc`; default 30 with --perceptual).
    #[arg(long)]
    lambda_perc: Option<f64>,
    /// Results folder (default: results/<preset>); finished inputs are skipped on rerun.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A perceptual network named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum PerceptualArg {
    /// torchvision's VGG-19 from a state-dict file.
    Vgg19(PathBuf),
}

/// A `--ddpm-checkpoint` network.
#[derive(Debug, Clone, PartialEq)]
pub enum DdpmConfigArg {
    /// DiME's unconditional CelebA 128 px UNet (`AdmConfig::dime_celeba128`).
    DimeCeleba128,
    /// A tiny 16 px UNet with DiME's switches (`AdmConfig::tiny`, for tests).
    Tiny,
    /// A JSON file of guided-diffusion's flags (`GuidedDiffusionFlags`).
    Flags(PathBuf),
}

fn parse_ddpm_config(s: &str) -> std::result::Result<DdpmConfigArg, String> {
    match s {
        "dime-celeba128" => Ok(DdpmConfigArg::DimeCeleba128),
        "tiny" => Ok(DdpmConfigArg::Tiny),
        file if file.ends_with(".json") => Ok(DdpmConfigArg::Flags(PathBuf::from(file))),
        other => Err(format!(
            "expected dime-celeba128, tiny or a JSON file of guided-diffusion's flags \
             (FILE.json), found {other:?}"
        )),
    }
}

impl DdpmConfigArg {
    /// The network's hyper-parameters and, from a flags file, its diffusion steps.
    fn config(&self) -> Result<(AdmConfig, Option<usize>)> {
        match self {
            DdpmConfigArg::DimeCeleba128 => Ok((AdmConfig::dime_celeba128(), None)),
            DdpmConfigArg::Tiny => Ok((AdmConfig::tiny(), None)),
            DdpmConfigArg::Flags(file) => {
                let flags = GuidedDiffusionFlags::from_file(file)?;
                Ok((flags.config, flags.diffusion_steps))
            }
        }
    }
}

/// A published classifier named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassifierArg {
    /// DiME's DenseNet-121 CelebA classifier.
    DimeDensenet121(PathBuf),
    /// Its tiny twin (tests).
    DimeTiny(PathBuf),
    /// A torchvision classifier's state dict.
    Torchvision(TorchvisionArch, PathBuf),
}

impl ClassifierArg {
    /// The oracle source: a DiME classifier explaining `attribute` (checked against its head),
    /// a torchvision classifier explaining the pair `logits` (none: a one-logit head). A flag
    /// the classifier does not take, or a missing --attribute, is an error naming the flag.
    fn source(&self, attribute: Option<usize>, logits: Option<[usize; 2]>) -> Result<OracleSource> {
        let dime = |file: &PathBuf, config: fn(usize) -> DimeClassifierConfig| {
            if logits.is_some() {
                return Err(Error::format(
                    "--logits",
                    "is for torchvision classifiers; DiME's classifier explains --attribute",
                ));
            }
            let attribute = attribute.ok_or_else(|| {
                Error::out_of_range(
                    "--attribute",
                    "given with DiME's classifier: the CelebA attribute it explains, an index \
                     (31) or a name (Smiling)",
                    "none",
                )
            })?;
            let config = config(attribute);
            config.validate()?;
            Ok(OracleSource::DimeClassifier {
                file: file.clone(),
                config,
            })
        };
        match self {
            ClassifierArg::DimeDensenet121(file) => dime(file, DimeClassifierConfig::celeba),
            ClassifierArg::DimeTiny(file) => dime(file, DimeClassifierConfig::tiny),
            ClassifierArg::Torchvision(arch, file) => {
                if let Some(attribute) = attribute {
                    return Err(Error::out_of_range(
                        "--attribute",
                        format!(
                            "absent with a torchvision classifier ({arch}): name its class \
                             pair's logits with --logits I,J"
                        ),
                        attribute,
                    ));
                }
                let logits = logits.map_or(Logits::One, Logits::Pair);
                Ok(OracleSource::torchvision(*arch, file.clone(), logits))
            }
        }
    }
}

fn parse_classifier(s: &str) -> std::result::Result<ClassifierArg, String> {
    let expected = || {
        format!(
            "expected dime-densenet121:FILE (DiME's CelebA classifier), dime-tiny:FILE or \
             ARCH:FILE with ARCH a torchvision architecture ({}), found {s:?}",
            TorchvisionArch::NAMES.join(", ")
        )
    };
    match s.split_once(':') {
        Some((_, "")) | None => Err(expected()),
        Some(("dime-densenet121", file)) => Ok(ClassifierArg::DimeDensenet121(PathBuf::from(file))),
        Some(("dime-tiny", file)) => Ok(ClassifierArg::DimeTiny(PathBuf::from(file))),
        Some((arch, file)) => match arch.parse::<TorchvisionArch>() {
            Ok(arch) => Ok(ClassifierArg::Torchvision(arch, PathBuf::from(file))),
            Err(_) => Err(expected()),
        },
    }
}

/// `--logits I,J`: two different logit indices.
fn parse_logits(s: &str) -> std::result::Result<[usize; 2], String> {
    match s.parse::<Logits>() {
        Ok(Logits::Pair(pair)) => Ok(pair),
        _ => Err(format!(
            "expected two different logit indices I,J (the class pair's), found {s:?}"
        )),
    }
}

/// A CelebA attribute by index or name; the range is checked against the classifier's head.
fn parse_attribute(s: &str) -> std::result::Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .or_else(|| celeba_attribute_index(s))
        .ok_or_else(|| {
            format!("expected a CelebA attribute index (0 to 39) or name (Smiling), found {s:?}")
        })
}

fn parse_perceptual(s: &str) -> std::result::Result<PerceptualArg, String> {
    match s.split_once(':') {
        Some(("vgg19", file)) if !file.is_empty() => Ok(PerceptualArg::Vgg19(PathBuf::from(file))),
        _ => Err(format!(
            "expected vgg19:FILE (a torchvision vgg19 state dict), found {s:?}"
        )),
    }
}

impl MaskdimeArgs {
    /// The preset's settings with the flags' changes.
    fn config(&self) -> Result<ExplainConfig> {
        let mut config = if self.is_published() {
            ExplainConfig::published(self.preset.into())
        } else {
            ExplainConfig::new(self.preset.into())
        };
        if let Some(tau) = self.tau {
            config.guide.tau = tau;
        }
        if let Some(scales) = &self.scales {
            config.guide.scales = scales.clone();
        }
        if let Some(fraction) = self.mask_fraction {
            config.guide = config.guide.with_mask_share(fraction).map_err(|_| {
                Error::out_of_range(
                    "--mask-fraction",
                    "only with --preset maskdime (its dual top-k masks)",
                    fraction,
                )
            })?;
        }
        config.guide.lambda_perc = match (&self.perceptual, self.lambda_perc) {
            (Some(_), weight) => weight.unwrap_or(DEFAULT_LAMBDA_PERC),
            (None, Some(w)) if w > 0.0 => {
                return Err(Error::out_of_range(
                    "--lambda-perc",
                    "0 without --perceptual vgg19:FILE (the perceptual network)",
                    w,
                ));
            }
            (None, _) => 0.0,
        };
        if let Some(steps) = self.respaced_steps {
            config.respaced_steps = steps;
        }
        Ok(config)
    }

    /// Whether a published network is named (`--ddpm-checkpoint`, `--classifier`).
    fn is_published(&self) -> bool {
        self.ddpm_checkpoint.is_some() || self.oracle.classifier.is_some()
    }

    /// Where the networks are; a published classifier's attribute or logits are checked here,
    /// before any data is read.
    fn files(&self) -> Result<MaskDimeFiles> {
        let oracle = self.oracle.source()?;
        let ddpm = match &self.ddpm_checkpoint {
            Some(file) => {
                let (config, flag_steps) = self
                    .ddpm_config
                    .clone()
                    .unwrap_or(DdpmConfigArg::DimeCeleba128)
                    .config()?;
                DdpmSource::Checkpoint {
                    file: file.clone(),
                    config,
                    diffusion_steps: self
                        .diffusion_steps
                        .or(flag_steps)
                        .unwrap_or(DIME_DIFFUSION_STEPS),
                }
            }
            None => DdpmSource::Folder(self.ddpm.clone()),
        };
        Ok(MaskDimeFiles {
            oracle,
            ddpm,
            perceptual: self
                .perceptual
                .as_ref()
                .map(|PerceptualArg::Vgg19(file)| (file.clone(), self.perceptual_layers)),
        })
    }
}

/// `foil maskdime` on `device`: the networks loaded once, the set explained once per seed.
pub fn maskdime(args: MaskdimeArgs, device: DeviceArg) -> Result<()> {
    let config = args.config()?;
    let name = config.preset.name();
    let out = results_dir(args.out.as_deref(), name);
    let runs = args.run.runs(&out)?;
    let files = args.files()?;
    let record = RunRecord::maskdime(&args.data, &args.run, &config, &files)?;
    let (_, test) = args.data.load()?;
    with_backend!(device, |B, dev| {
        let _sync = args.run.sync_timings::<B>(&dev);
        let maskdime = MaskDime::<B>::load(&files, &dev)?;
        for (seed, out) in &runs {
            record.claim::<B>(out, *seed, maskdime.image_size())?;
            let summary = maskdime.run(&config, &test, out, &args.run.options(*seed)?)?;
            print_summary(name, &summary, out);
        }
        Ok::<(), Error>(())
    })
}

/// `foil diffusion` arguments.
#[derive(Debug, Args)]
pub struct DiffusionArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    oracle: OracleArgs,
    /// Decoder folder (`foil train decoder`), with its `stats.json`.
    #[arg(long, default_value = "runs/decoder")]
    decoder: PathBuf,
    /// The published decoder instead of a foil folder: the Kandinsky 2.2 decoder pipeline
    /// folder as downloaded (`kandinsky-community/kandinsky-2-2-decoder`: model_index.json,
    /// unet/, movq/, scheduler/). Runs the authors' eval.py settings (100 steps, guidance 4,
    /// T_skip 0.9..0, lambda 2); needs --image-encoder and --stats.
    #[arg(long, value_name = "DIR", conflicts_with = "decoder", requires_all = ["image_encoder", "stats"])]
    kandinsky: Option<PathBuf>,
    /// With --kandinsky: the CLIP image encoder, the Kandinsky 2.2 prior folder
    /// (`kandinsky-community/kandinsky-2-2-prior`, with image_encoder/ and image_processor/) or
    /// a transformers CLIP vision folder.
    #[arg(long, value_name = "DIR", requires = "kandinsky")]
    image_encoder: Option<PathBuf>,
    /// With --kandinsky: a LoRA adapter of the UNet (the authors' peft folder with
    /// adapter_config.json, or a diffusers pytorch_lora_weights.safetensors), merged on load.
    #[arg(long, value_name = "PATH", requires = "kandinsky")]
    lora: Option<PathBuf>,
    /// With --kandinsky: side of the square images (a multiple of the latent factor, 64 for
    /// the published networks).
    #[arg(long, default_value_t = 512, requires = "kandinsky")]
    image_size: u32,
    /// Class statistics (default: <decoder>/stats.json; with --kandinsky: `foil stats
    /// --image-encoder DIR` of the same encoder).
    #[arg(long)]
    stats: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    edit: EditArgs,
    /// T_skip values tried in turn, gentle first (default 0.9,0.8,...,0).
    #[arg(long, value_delimiter = ',')]
    t_skips: Option<Vec<f64>>,
    /// DIFFusion's embedding arithmetic, or a baseline: the target class's mean embedding alone
    /// (same inversion and search), or the nearest target-class training image by embedding.
    #[arg(long, value_enum, default_value = "arithmetic")]
    method: MethodArg,
    /// Results folder (default: results/diffusion, or results/<method> for a baseline);
    /// finished inputs are skipped on rerun.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What `foil diffusion` conditions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// DIFFusion: the embedding moved along the class-mean difference.
    Arithmetic,
    /// Baseline: the target class's mean embedding alone.
    TargetMean,
    /// Baseline: the nearest target-class training image by embedding.
    Nearest,
}

impl MethodArg {
    /// The results sub-folder of `results/` by default.
    fn folder(self) -> &'static str {
        match self {
            MethodArg::Arithmetic => "diffusion",
            MethodArg::TargetMean => "target-mean",
            MethodArg::Nearest => "nearest",
        }
    }
}

/// `foil diffusion`'s run manifest: the settings and the models it loads (a published pipeline
/// or foil's folders).
fn diffusion_record(
    args: &DiffusionArgs,
    config: &DiffusionConfig,
    oracle: &OracleSource,
) -> Result<RunRecord> {
    let method = args.method.folder();
    match (&args.kandinsky, &args.image_encoder, &args.stats) {
        (Some(decoder), Some(encoder), Some(stats)) => {
            let mut models = vec![
                ("kandinsky", decoder.as_path()),
                ("image_encoder", encoder.as_path()),
                ("stats", stats.as_path()),
            ];
            if let Some(lora) = &args.lora {
                models.push(("lora", lora.as_path()));
            }
            RunRecord::diffusion(&args.data, &args.run, method, config, oracle, &models)
        }
        _ => {
            let mut models = vec![("decoder", args.decoder.as_path())];
            if let Some(stats) = &args.stats {
                models.push(("stats", stats.as_path()));
            }
            let oracle = OracleSource::Folder(args.oracle.oracle.clone());
            RunRecord::diffusion(&args.data, &args.run, method, config, &oracle, &models)
        }
    }
}

/// `foil diffusion` on `device`: the networks loaded once, the set edited once per seed (the
/// nearest-neighbour baseline: once).
pub fn diffusion(args: DiffusionArgs, device: DeviceArg) -> Result<()> {
    let preset = if args.kandinsky.is_some() {
        DiffusionConfig::published()
    } else {
        DiffusionConfig::default()
    };
    let mut config = args.edit.config_over(preset)?;
    if let Some(t_skips) = &args.t_skips {
        config.search.t_skips = t_skips.clone();
    }
    let out = results_dir(args.out.as_deref(), args.method.folder());
    let runs = args.run.runs(&out)?;
    if args.method == MethodArg::Nearest && runs.len() > 1 {
        return Err(Error::out_of_range(
            "--seeds",
            "one seed with --method nearest (the nearest image has no randomness)",
            runs.len(),
        ));
    }
    let oracle = args.oracle.source()?;
    let record = diffusion_record(&args, &config, &oracle)?;
    let (train, test) = args.data.load()?;
    let name = out
        .file_name()
        .map_or("diffusion".into(), |n| n.to_string_lossy().into_owned());
    with_backend!(device, |B, dev| {
        type I = <B as AutodiffBackend>::InnerBackend;
        let _sync = args.run.sync_timings::<I>(&dev);
        match (&args.kandinsky, &args.image_encoder, &args.stats) {
            (Some(decoder), Some(encoder), Some(stats)) => {
                let files = PublishedDiffusionFiles {
                    decoder: decoder.clone(),
                    encoder: encoder.clone(),
                    lora: args.lora.clone(),
                    stats: stats.clone(),
                    oracle: oracle.clone(),
                    image_size: args.image_size,
                };
                let diffusion = Diffusion::<I, _>::load_published(&files, &dev)?;
                let run = (&record, runs.as_slice());
                run_diffusion(&diffusion, &args, &config, (&train, &test), run, &name)
            }
            _ => {
                let files = DiffusionFiles {
                    oracle: args.oracle.oracle.clone(),
                    decoder: args.decoder.clone(),
                    stats: args.stats.clone(),
                };
                let diffusion = Diffusion::<I>::load(&files, &dev)?;
                let run = (&record, runs.as_slice());
                run_diffusion(&diffusion, &args, &config, (&train, &test), run, &name)
            }
        }
    })
}

/// The runs of `foil diffusion` over loaded networks, one per seed, each folder claimed with
/// the run manifest first.
fn run_diffusion<B: burn::tensor::backend::Backend, D: Decoder<B>>(
    diffusion: &Diffusion<B, D>,
    args: &DiffusionArgs,
    config: &DiffusionConfig,
    (train, test): (&Dataset, &Dataset),
    (record, runs): (&RunRecord, &[(u64, PathBuf)]),
    name: &str,
) -> Result<()> {
    for (seed, out) in runs {
        record.claim::<B>(out, *seed, diffusion.image_size())?;
        let options = args.run.options(*seed)?;
        let summary = match args.method {
            MethodArg::Arithmetic => {
                let method = diffusion.arithmetic_for(config.clone(), test)?;
                diffusion.run(&method, test, out, &options)
            }
            MethodArg::TargetMean => {
                let method = diffusion.target_mean(config.clone())?;
                diffusion.run(&method, test, out, &options)
            }
            MethodArg::Nearest => {
                if train.is_empty() {
                    return Err(Error::Empty {
                        what: "training images for --method nearest".into(),
                        hint: "name a dataset with --data and --classes (not --images)".into(),
                    });
                }
                diffusion.run(&diffusion.nearest(train)?, test, out, &options)
            }
        }?;
        print_summary(name, &summary, out);
    }
    Ok(())
}
