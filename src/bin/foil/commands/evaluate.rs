//! `foil evaluate`: every metric of both papers over a results folder, per direction, as a
//! table and as typed JSON ([`foil::pipeline::RunEvaluation`]).

use std::path::{Path, PathBuf};

use clap::Args;
use foil::core::{Error, Result};
use foil::pipeline::{
    self, EncoderChoice, EvaluateOptions, LPIPS_ALEX_FILE, LPIPS_VGG_FILE, ScorerPaths,
    installed_lpips, lpips_install_dir,
};

use crate::device::{DeviceArg, with_backend};

/// The spelling of a weights flag that skips what needs the weights.
const SKIP: &str = "none";
/// At most this many inputs per direction in the contact sheets.
const CONTACT_SHEET_ROWS: usize = 16;

/// `foil evaluate` arguments.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Results folder written by `foil maskdime` or `foil diffusion`; with `seed-<s>/`
    /// sub-folders (`--seeds`), the first seed is scored and diversity compares them all.
    #[arg(long, default_value = "results/maskdime")]
    results: PathBuf,
    /// LPIPS AlexNet weights (default: where `foil weights lpips` installs them, lpips/ in
    /// $FOIL_HOME or the user's cache folder, e.g. ~/.cache/foil, else assets/lpips/ of the
    /// current folder); `none` to skip LPIPS.
    #[arg(long, value_parser = parse_weights)]
    lpips: Option<WeightsArg>,
    /// LPIPS VGG16 weights, for the diversity across seeds and `lpips-vgg` encoders (default:
    /// installed by `foil weights lpips`, looked for as --lpips, when present); `none` to skip.
    #[arg(long, value_parser = parse_weights)]
    lpips_vgg: Option<WeightsArg>,
    /// FID / sFID encoder: lpips-alex, lpips-vgg, clip:FILE or inception:FILE (pytorch-fid's
    /// `pt_inception-2015-12-05-6726825d.pth`). Only InceptionV3 FIDs compare with the papers'.
    #[arg(long, value_parser = str::parse::<EncoderChoice>)]
    fid_encoder: Option<EncoderChoice>,
    /// Cosine-similarity encoder (FS / S3 style): lpips-alex, lpips-vgg, clip:FILE.
    #[arg(long, value_parser = str::parse::<EncoderChoice>)]
    similarity_encoder: Option<EncoderChoice>,
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
    /// Where to write the JSON report (default: <results>/metrics.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A weights flag: a file, or `none` to skip what needs the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsArg {
    /// `none`.
    Skip,
    /// A weights file.
    File(PathBuf),
}

fn parse_weights(s: &str) -> std::result::Result<WeightsArg, std::convert::Infallible> {
    Ok(if s == SKIP {
        WeightsArg::Skip
    } else {
        WeightsArg::File(PathBuf::from(s))
    })
}

/// The weights file of `flag`: `value`, else the installed `file` ([`installed_lpips`]: foil's
/// home folder, then the old `assets/lpips/`); `none` skips. A missing file is an error naming
/// the flag and the places looked in, except missing installed weights when `optional` (then
/// skipped).
fn weights(
    flag: &str,
    value: Option<&WeightsArg>,
    file: &str,
    optional: bool,
) -> Result<Option<PathBuf>> {
    let hint = || {
        let home = lpips_install_dir().map_or_else(
            || "foil's home folder (set FOIL_HOME)".to_string(),
            |d| d.display().to_string(),
        );
        format!("run `foil weights lpips` first (installs into {home}), or pass {flag} {SKIP}")
    };
    match value {
        Some(WeightsArg::Skip) => Ok(None),
        Some(WeightsArg::File(path)) if path.is_file() => Ok(Some(path.clone())),
        Some(WeightsArg::File(path)) => Err(Error::Empty {
            what: format!("{flag} weights at {}", path.display()).into(),
            hint: hint(),
        }),
        None => match installed_lpips(file) {
            Ok(path) => Ok(Some(path)),
            Err(_) if optional => Ok(None),
            Err(looked) => Err(Error::Empty {
                what: format!(
                    "{flag} weights (looked for {file} in {})",
                    looked
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into(),
                hint: hint(),
            }),
        },
    }
}

fn method_name(results: &Path) -> String {
    results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `foil evaluate` on `device`.
pub fn run(args: EvaluateArgs, device: DeviceArg) -> Result<()> {
    let paths = ScorerPaths {
        lpips: weights("--lpips", args.lpips.as_ref(), LPIPS_ALEX_FILE, false)?,
        lpips_vgg: weights("--lpips-vgg", args.lpips_vgg.as_ref(), LPIPS_VGG_FILE, true)?,
        fid_encoder: args.fid_encoder.clone(),
        similarity_encoder: args.similarity_encoder.clone(),
        oracle: args.oracle.clone(),
        mnac_oracles: args.mnac_oracle.clone(),
    };
    tracing::debug!("scorers: {paths:?}");
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
    for sheet in pipeline::contact_sheets(&report.scored_folder, CONTACT_SHEET_ROWS)? {
        println!("grid: {}", sheet.display());
    }
    Ok(())
}
