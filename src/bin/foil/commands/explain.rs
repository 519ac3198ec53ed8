//! `foil maskdime` and `foil diffusion`: counterfactuals for the test images of a class pair,
//! both directions, by the library's pipeline objects ([`MaskDime`], [`Diffusion`]); one
//! summary line per run (per seed).

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use foil::core::{Error, Result};
use foil::guide::MaskPolicy;
use foil::pipeline::{Diffusion, DiffusionFiles, ExplainConfig, MaskDime, MaskDimeFiles, Preset};

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

/// `foil maskdime` arguments.
#[derive(Debug, Args)]
pub struct MaskdimeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Oracle folder (`foil train oracle`).
    #[arg(long, default_value = "runs/oracle")]
    oracle: PathBuf,
    /// DDPM folder (`foil train ddpm`).
    #[arg(long, default_value = "runs/ddpm")]
    ddpm: PathBuf,
    /// Sampler preset.
    #[arg(long, value_enum, default_value = "maskdime")]
    preset: PresetArg,
    #[command(flatten)]
    run: RunArgs,
    /// Start step tau (of the respaced steps).
    #[arg(long)]
    tau: Option<usize>,
    /// Respaced sampling steps.
    #[arg(long, default_value_t = 100)]
    respaced_steps: usize,
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
        let mut config = ExplainConfig::new(self.preset.into());
        if let Some(tau) = self.tau {
            config.guide.tau = tau;
        }
        if let Some(scales) = &self.scales {
            config.guide.scales = scales.clone();
        }
        if let Some(fraction) = self.mask_fraction {
            match &mut config.guide.mask {
                MaskPolicy::Dual { k, .. } => *k = fraction,
                _ => {
                    return Err(Error::out_of_range(
                        "--mask-fraction",
                        "only with --preset maskdime (its dual top-k masks)",
                        fraction,
                    ));
                }
            }
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
        config.respaced_steps = self.respaced_steps;
        Ok(config)
    }

    /// Where the networks are.
    fn files(&self) -> MaskDimeFiles {
        MaskDimeFiles {
            oracle: self.oracle.clone(),
            ddpm: self.ddpm.clone(),
            perceptual: self
                .perceptual
                .as_ref()
                .map(|PerceptualArg::Vgg19(file)| (file.clone(), self.perceptual_layers)),
        }
    }
}

/// `foil maskdime` on `device`: the networks loaded once, the set explained once per seed.
pub fn maskdime(args: MaskdimeArgs, device: DeviceArg) -> Result<()> {
    let config = args.config()?;
    let name = config.preset.name();
    let out = results_dir(args.out.as_deref(), name);
    let runs = args.run.runs(&out)?;
    let (_, test) = args.data.load()?;
    let files = args.files();
    with_backend!(device, |B, dev| {
        let maskdime = MaskDime::<B>::load(&files, &dev)?;
        for (seed, out) in &runs {
            let summary = maskdime.run(&config, &test, out, &args.run.options(*seed))?;
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
    /// Oracle folder (`foil train oracle`).
    #[arg(long, default_value = "runs/oracle")]
    oracle: PathBuf,
    /// Decoder folder (`foil train decoder`), with its `stats.json`.
    #[arg(long, default_value = "runs/decoder")]
    decoder: PathBuf,
    /// Class statistics (default: <decoder>/stats.json).
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

/// `foil diffusion` on `device`: the networks loaded once, the set edited once per seed (the
/// nearest-neighbour baseline: once).
pub fn diffusion(args: DiffusionArgs, device: DeviceArg) -> Result<()> {
    let mut config = args.edit.config()?;
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
    let (train, test) = args.data.load()?;
    let name = out
        .file_name()
        .map_or("diffusion".into(), |n| n.to_string_lossy().into_owned());
    let files = DiffusionFiles {
        oracle: args.oracle.clone(),
        decoder: args.decoder.clone(),
        stats: args.stats.clone(),
    };
    with_backend!(device, |B, dev| {
        let diffusion = Diffusion::<<B as AutodiffBackend>::InnerBackend>::load(&files, &dev)?;
        for (seed, out) in &runs {
            let options = args.run.options(*seed);
            let summary = match args.method {
                MethodArg::Arithmetic => {
                    let method = diffusion.arithmetic(config.clone())?;
                    diffusion.run(&method, &test, out, &options)
                }
                MethodArg::TargetMean => {
                    let method = diffusion.target_mean(config.clone())?;
                    diffusion.run(&method, &test, out, &options)
                }
                MethodArg::Nearest => {
                    diffusion.run(&diffusion.nearest(&train)?, &test, out, &options)
                }
            }?;
            print_summary(&name, &summary, out);
        }
        Ok::<(), Error>(())
    })
}
