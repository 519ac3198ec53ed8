//! Every metric of both papers over a results folder (the format of `foil_run`, written by
//! `foil maskdime` or `foil diffusion`), typed per direction: success ratio, LPIPS over the
//! flipped inputs (the papers' number) and over all, FID and sFID over a chosen encoder, COUT
//! with the oracle, MNAC with a multi-attribute oracle, cosine similarity (FS / S3 style) with a
//! chosen encoder, and the diversity across seeds (`seed-<s>/` sub-folders).
//!
//! [`evaluate_run`] scores a folder with the networks of a [`Scorers`] bundle (built in memory;
//! loading them from files is the facade's `foil::pipeline::load_scorers`) and returns a
//! [`RunEvaluation`], printed as a table (its `Display`) or written as JSON.
//!
//! Protocols follow the authors' scripts (DiME's `compute-fid.sh`, `compute_MNAC.py`,
//! `compute_FVA.py`, `compute_LPIPS.py`): FID compares **all** originals with the **flipped**
//! counterfactuals; MNAC and the similarities are the papers' numbers over the flipped ones;
//! the diversity is over every input present in every seed. Each averaged metric is reported
//! over the flipped inputs and over all of them.

mod report;
mod score;
mod scorers;
mod table;

pub use report::{
    Averaged, DirectionEvaluation, Diversity, Metric, Metrics, Note, RunEvaluation, Similarity,
};
pub use score::{EvaluateOptions, LPIPS_MIN_SIDE, evaluate_run, lpips_resize, seed_folders};
pub use scorers::{AttributeOracle, Encoder, EncoderLabel, Scorers, ScoringOracle};

/// The threshold of the share-above summary of cosine similarities (FVA's 0.5).
pub const SIMILARITY_THRESHOLD: f64 = 0.5;
