//! `foil evaluate`: every metric of both papers over a results folder, per direction, as a
//! table and as typed JSON ([`foil::pipeline::RunEvaluation`]).

use std::path::{Path, PathBuf};

use clap::Args;
use foil::core::{Error, Result};
use foil::pipeline::{self, EncoderChoice, EvaluateOptions, ScorerPaths};

use crate::device::{DeviceArg, with_backend};

const LPIPS_ALEX: &str = "assets/lpips/alexnet.safetensors";
const LPIPS_VGG: &str = "assets/lpips/vgg16.safetensors";

/// `foil evaluate` arguments.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Results folder written by `foil maskdime` or `foil diffusion`; with `seed-<s>/`
    /// sub-folders (`--seeds`), the first seed is scored and diversity compares them all.
    #[arg(long, default_value = "results/maskdime")]
    results: PathBuf,
    /// LPIPS AlexNet weights (`foil weights lpips`); `none` to skip LPIPS.
    #[arg(long, default_value = LPIPS_ALEX)]
    lpips: String,
    /// LPIPS VGG16 weights, for the diversity across seeds and `lpips-vgg` encoders (default
    /// assets/lpips/vgg16.safetensors when present); `none` to skip.
    #[arg(long)]
    lpips_vgg: Option<String>,
    /// FID / sFID encoder: lpips-alex, lpips-vgg, clip:FILE or inception:FILE (pytorch-fid's
    /// `pt_inception-2015-12-05-6726825d.pth`). Only InceptionV3 FIDs compare with the papers'.
    #[arg(long)]
    fid_encoder: Option<String>,
    /// Cosine-similarity encoder (FS / S3 style): lpips-alex, lpips-vgg, clip:FILE.
    #[arg(long)]
    similarity_encoder: Option<String>,
    /// Oracle folder (`foil train oracle`), for COUT.
    #[arg(long)]
    oracle: Option<PathBuf>,
    /// Multi-attribute oracle for MNAC: oracle folders, one attribute each, comma-separated.
    #[arg(long, value_delimiter = ',')]
    mnac_oracle: Vec<PathBuf>,
    /// MNAC: leave out this attribute (index into --mnac-oracle); the papers count all.
    #[arg(long)]
    mnac_exclude: Option<usize>,
    /// COUT insertion steps.
    #[arg(long, default_value_t = 50)]
    cout_steps: usize,
    /// sFID repetitions.
    #[arg(long, default_value_t = 10)]
    sfid_repeats: usize,
    /// Seed of the sFID splits.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per network call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Device: cpu, ndarray, flex, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where to write the JSON report (default: <results>/metrics.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A weights path: `none` skips; a missing file is an error naming the flag, except a missing
/// default when `default_optional` (then skipped).
fn weights(
    flag: &str,
    value: Option<&str>,
    default: &str,
    optional: bool,
) -> Result<Option<PathBuf>> {
    let (value, given) = match value {
        Some(v) => (v, true),
        None => (default, false),
    };
    if value == "none" {
        return Ok(None);
    }
    let path = PathBuf::from(value);
    if path.exists() {
        Ok(Some(path))
    } else if optional && !given {
        Ok(None)
    } else {
        Err(Error::Empty {
            what: format!("{flag} weights at {}", path.display()),
            hint: format!("run `foil weights lpips` first, or pass {flag} none"),
        })
    }
}

fn encoder(value: &Option<String>) -> Result<Option<EncoderChoice>> {
    value.as_deref().map(str::parse).transpose()
}

fn method_name(results: &Path) -> String {
    results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `foil evaluate`.
pub fn run(args: EvaluateArgs) -> Result<()> {
    let device: DeviceArg = args.device.parse()?;
    let paths = ScorerPaths {
        lpips: weights("--lpips", Some(&args.lpips), LPIPS_ALEX, false)?,
        lpips_vgg: weights("--lpips-vgg", args.lpips_vgg.as_deref(), LPIPS_VGG, true)?,
        fid_encoder: encoder(&args.fid_encoder)?,
        similarity_encoder: encoder(&args.similarity_encoder)?,
        oracle: args.oracle.clone(),
        mnac_oracles: args.mnac_oracle.clone(),
    };
    let options = EvaluateOptions {
        method: method_name(&args.results),
        cout_steps: args.cout_steps,
        sfid_repeats: args.sfid_repeats,
        seed: args.seed,
        batch_size: args.batch_size,
        mnac_exclude: args.mnac_exclude,
    };
    let report = with_backend!(device, |B, dev| {
        type I = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
        let scorers = pipeline::load_scorers::<I>(&paths, &dev)?;
        pipeline::evaluate_run::<I>(&args.results, &scorers, &options, &dev)
    })?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| args.results.join("metrics.json"));
    report.write_json(&json)?;
    println!("{report}");
    println!("report written to {}", json.display());
    for sheet in pipeline::contact_sheets(&report.scored_folder, 16)? {
        println!("grid: {}", sheet.display());
    }
    Ok(())
}
