//! The typed report of an evaluation and its JSON.

use std::path::{Path, PathBuf};

use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::scorers::EncoderLabel;
use crate::similarity::SimilaritySummary;

/// A mean over the flipped inputs (the papers' number; `None` when nothing flipped) and over
/// all inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Averaged {
    /// Mean over the inputs whose counterfactual flipped.
    pub flipped: Option<f64>,
    /// Mean over all inputs.
    pub all: f64,
}

/// Cosine-similarity summaries over the flipped inputs and over all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Similarity {
    /// Over the flipped inputs (the papers' FS / FVA / S3); `None` when nothing flipped.
    pub flipped: Option<SimilaritySummary>,
    /// Over all inputs.
    pub all: SimilaritySummary,
}

/// The diversity across seeds: mean pairwise LPIPS (VGG) between the counterfactuals of one
/// input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Diversity {
    /// Mean over the inputs present in every seed.
    pub mean: f64,
    /// Those inputs.
    pub inputs: usize,
    /// Seeds compared.
    pub seeds: usize,
}

/// The metrics of one direction, or of all inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Inputs scored.
    pub inputs: usize,
    /// Of those, flipped (`flipped == true` in their result).
    pub flipped: usize,
    /// `flipped / inputs`: the success ratio over all inputs.
    pub success_ratio: f64,
    /// LPIPS (AlexNet) between original and counterfactual.
    pub lpips: Option<Averaged>,
    /// FID between all originals and the flipped counterfactuals, over the chosen encoder.
    pub fid: Option<f64>,
    /// Split-half FID over the flipped (original, counterfactual) pairs.
    pub sfid: Option<f64>,
    /// COUT with the oracle, from the oracle's prediction on the original to the target.
    pub cout: Option<Averaged>,
    /// MNAC with the multi-attribute oracle.
    pub mnac: Option<Averaged>,
    /// Cosine similarity of the chosen encoder's embeddings (FS / S3 style).
    pub similarity: Option<Similarity>,
    /// Diversity across seeds.
    pub diversity: Option<Diversity>,
    /// Mean share of changed pixels.
    pub changed_fraction: f64,
    /// Mean absolute change, in `[0, 1]` units.
    pub mean_abs_change: f64,
    /// Mean denoiser evaluations per input.
    pub denoiser_calls: f64,
    /// Mean classifier passes per input.
    pub classifier_calls: f64,
}

/// One direction `from -> to` and its metrics: the inputs the oracle predicted as `from`,
/// asked to become `to` (an input the oracle misclassified counts under its prediction, not
/// under its label's folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionEvaluation {
    /// Source class index: the oracle's prediction on the originals.
    pub from: usize,
    /// Target class index.
    pub to: usize,
    /// Source class name.
    pub from_name: String,
    /// Target class name.
    pub to_name: String,
    /// Its metrics.
    pub metrics: Metrics,
}

impl DirectionEvaluation {
    /// `from -> to` by name.
    pub fn label(&self) -> String {
        format!("{} -> {}", self.from_name, self.to_name)
    }
}

/// A metric that may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// LPIPS (AlexNet).
    Lpips,
    /// FID.
    Fid,
    /// sFID.
    Sfid,
    /// COUT.
    Cout,
    /// MNAC.
    Mnac,
    /// Cosine similarity.
    Similarity,
    /// Diversity across seeds.
    Diversity,
}

impl Metric {
    /// The metric's name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Lpips => "LPIPS",
            Metric::Fid => "FID",
            Metric::Sfid => "sFID",
            Metric::Cout => "COUT",
            Metric::Mnac => "MNAC",
            Metric::Similarity => "similarity",
            Metric::Diversity => "diversity",
        }
    }
}

/// Why a metric is `None`, for all inputs (`direction: None`) or one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The metric.
    pub metric: Metric,
    /// The direction (`from -> to`), or `None` for all of them.
    pub direction: Option<String>,
    /// What was missing.
    pub reason: String,
}

/// Everything measured about a results folder, per direction and overall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvaluation {
    /// The method's name.
    pub method: String,
    /// The folder whose results the metrics other than diversity were computed on.
    pub scored_folder: PathBuf,
    /// Seeds found as `seed-<s>/` sub-folders (empty: a single-seed folder).
    pub seeds: Vec<u64>,
    /// The FID / sFID encoder.
    pub fid_encoder: Option<EncoderLabel>,
    /// The cosine-similarity encoder.
    pub similarity_encoder: Option<EncoderLabel>,
    /// The MNAC oracle's attributes, in logit order.
    pub mnac_attributes: Vec<String>,
    /// The attribute MNAC left out, if any (the papers count every one).
    pub mnac_excluded: Option<usize>,
    /// One entry per direction, sorted by `(from, to)`.
    pub directions: Vec<DirectionEvaluation>,
    /// Over all inputs.
    pub overall: Metrics,
    /// Why metrics are `None`.
    pub notes: Vec<Note>,
}

impl RunEvaluation {
    /// JSON text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::format("evaluation", e))
    }

    /// Reads JSON written by [`to_json`](Self::to_json).
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::format("evaluation JSON", e))
    }

    /// Writes the JSON atomically.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        foil_core::image_io::write_atomic(path.as_ref(), self.to_json()?.as_bytes())
    }
}
