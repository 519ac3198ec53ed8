//! End to end on a dataset: train the oracle, the DDPM and DIFFusion's decoder with its
//! encoder, compute class statistics, explain a test set with MaskDiME (FastDiME, DiME) or
//! DIFFusion, and score the results. The `foil` command line is a thin layer over this
//! module; everything here is generic over the burn backend.
//!
//! Saved models are a folder each: `model.json` (what to build: a [`OracleSpec`] or a
//! [`DdpmSpec`]) beside burn records (`*.mpk`, full precision), so they load on any backend.
//! Batch runs write one result per input, atomically, and skip inputs already done, so an
//! interrupted run loses nothing and a rerun finishes it.

mod ddpm;
mod decoder;
mod diffusion;
mod evaluate;
mod explain;
mod oracle;
mod report;

pub use ddpm::{DdpmSpec, load_ddpm, train_ddpm_on};
pub use decoder::{
    DecoderSpec, EmbeddingDecoder, EncoderWithHead, LORA_FILE, LoraSpec, STATS_FILE, load_decoder,
    train_decoder_on, tune_decoder_lora, write_class_stats,
};
pub use diffusion::{DiffusionConfig, EditMethod, diffusion_set, lambda_sweep, nearest_set};
pub use evaluate::{
    AttributeOracle, Averaged, DirectionEvaluation, Diversity, ENCODER_CHOICES, Encoder,
    EncoderChoice, EncoderLabel, EvaluateOptions, Metric, Metrics, Note, RunEvaluation,
    SIMILARITY_THRESHOLD, ScorerPaths, Scorers, ScoringOracle, Similarity, evaluate_run, load_clip,
    load_scorers, seed_folders,
};
pub use explain::{
    ExplainConfig, ExplainSummary, GuideModels, ItemResult, MaskFile, Preset, change_map,
    direction_dir, explain_set, grid, mask_share, read_results, result_key, seed_dir, seed_runs,
};
pub(crate) use explain::{save_gray_png, save_png};
pub use oracle::{Arch, Member, OracleSpec, load_oracle, train_oracle};
pub use report::{LPIPS_MIN_SIDE, ScoreOptions, contact_sheets, score_results};

use std::path::Path;

use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use foil_core::image_io::{ColorMode, Resize, write_atomic};
use foil_core::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};

/// How every network of a pipeline sees images: RGB (gray data is replicated), square.
pub fn image_mode(size: u32) -> (ColorMode, Resize) {
    (
        ColorMode::Rgb,
        Resize::Exact {
            width: size,
            height: size,
        },
    )
}

pub(crate) fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::format(path.display().to_string(), e))?;
    write_atomic(path, &text)
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("{what} {}", path.display()), e))
}

/// Reads the `model.json` of a model folder and checks its format tag.
pub(crate) fn read_spec<T: DeserializeOwned>(
    dir: &Path,
    what: &str,
    expected: &str,
    format_of: impl Fn(&T) -> &str,
) -> Result<T> {
    let path = dir.join("model.json");
    let spec: T = read_json(&path, what)?;
    let found = format_of(&spec);
    if found != expected {
        return Err(Error::format(
            path.display().to_string(),
            format!("expected format {expected:?}, found {found:?}"),
        ));
    }
    Ok(spec)
}

/// guided-diffusion's linear schedule for `steps` diffusion steps (betas `1e-4 .. 0.02` scaled
/// by `1000 / steps`), the schedule of the DDPM and of the decoder.
pub(crate) fn linear_schedule(steps: usize) -> Result<foil_schedule::NoiseSchedule> {
    let scale = 1000.0 / steps.max(1) as f64;
    foil_schedule::NoiseSchedule::new(
        &foil_schedule::BetaSchedule::Linear {
            start: scale * 1e-4,
            end: scale * 0.02,
        },
        steps,
    )
}
