//! End to end on a dataset: train the oracle and the DDPM, load the networks of both methods
//! from their model folders ([`MaskDime::load`], [`Diffusion::load`]) and run them over a set
//! (`foil_run::run_set`), then score the results. The `foil` command line is a thin layer
//! over this module; everything here is generic over the burn backend.
//!
//! Saved models are a folder each: `model.json` (what to build: a [`OracleSpec`], a
//! [`DdpmSpec`] or a [`DecoderSpec`]) beside burn records (`*.mpk`, full precision), so they
//! load on any backend. Runs write one result per input, atomically, and skip inputs already
//! done, so an interrupted run loses nothing and a rerun finishes it.

mod ddpm;
mod diffusion;
mod evaluate;
mod maskdime;
mod oracle;
mod published;
mod report;

use std::path::Path;

use burn::tensor::backend::Backend;
use foil_data::Dataset;
use foil_run::SetRun;

pub use ddpm::train_ddpm_on;
pub use diffusion::{Diffusion, DiffusionFiles, PublishedDiffusionFiles, StepPlan};
pub use evaluate::{
    AttributeOracle, Averaged, DirectionEvaluation, Diversity, ENCODER_CHOICES, Encoder,
    EncoderChoice, EncoderLabel, EvaluateOptions, LPIPS_ALEX_FILE, LPIPS_HOME_DIR,
    LPIPS_LEGACY_DIR, LPIPS_VGG_FILE, Metric, Metrics, Note, RunEvaluation, SIMILARITY_THRESHOLD,
    ScorerPaths, Scorers, ScoringOracle, Similarity, evaluate_run, installed_lpips, load_clip,
    load_inception, load_scorers, lpips_install_dir, seed_folders,
};
pub use foil_core::image_io::image_mode;
pub use foil_diffusion::{
    DecoderSpec, DiffusionConfig, EmbeddingDecoder, EncoderWithHead, LORA_FILE, LoraSpec,
    STATS_FILE, load_decoder, train_decoder_on, tune_decoder_lora, write_class_stats,
};
pub use foil_models::adm::folder::{DIME_DIFFUSION_STEPS, DdpmSource};
pub use foil_models::adm::folder::{DdpmSpec, load_ddpm};
pub use foil_models::oracle::{Arch, Member, OracleSpec, load_oracle};
pub use foil_models::oracle::{LoadedOracle, OracleSource};
pub use foil_run::{
    ItemResult, MaskFile, RunSummary, change_map, direction_dir, grid, mask_share, read_results,
    result_key, run_set, seed_dir, seed_runs,
};
pub use maskdime::{
    ExplainConfig, GuideModels, MaskDime, MaskDimeFiles, PUBLISHED_RESPACED_STEPS, Preset,
};
pub use oracle::train_oracle;
pub use published::{image_encoder_dir, load_kandinsky};
pub use report::{LPIPS_MIN_SIDE, contact_sheets};

/// How a set is run by the pipeline objects: which inputs, how many per call, which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// At most this many inputs per label (the first ones of the set); `None`: all.
    pub per_direction: Option<usize>,
    /// Inputs per method call.
    pub batch_size: usize,
    /// The seed of every batch.
    pub seed: u64,
    /// Report each finished input: to the [`foil_core::progress`] sink when one is installed
    /// (the `foil` command line's bars and lines), else as a line on stderr
    /// ([`print_progress`]).
    pub progress: bool,
    /// The part of the inputs this process explains (`foil_run::shard`; default: all).
    pub shard: foil_run::Shard,
}

/// The line printed per finished input when [`RunOptions::progress`] is on:
/// `[done/total] source: flipped|not flipped (flips so far, seconds)`.
pub fn print_progress(p: &foil_run::Progress<'_>) {
    eprintln!(
        "[{}/{}] {}: {} ({} flipped so far, {:.1} s)",
        p.done,
        p.total,
        p.item.source,
        if p.item.flipped {
            "flipped"
        } else {
            "not flipped"
        },
        p.flipped,
        p.seconds
    );
}

/// What [`RunOptions::progress`] does with a finished input: a [`foil_core::progress::Tick`]
/// (task `explain`, with the flips so far and the input's outcome as its note) to the
/// installed sink, else [`print_progress`].
pub fn report_progress(p: &foil_run::Progress<'_>) {
    use foil_core::progress::{self, Tick};
    if !progress::has_sink() {
        print_progress(p);
        return;
    }
    let note = format!(
        "{}: {}",
        p.item.source,
        if p.item.flipped {
            "flipped"
        } else {
            "not flipped"
        }
    );
    progress::report(&Tick {
        flipped: Some(p.flipped),
        note: Some(&note),
        seconds: Some(p.seconds),
        ..Tick::new("explain", "inputs", p.done, p.total)
    });
}

impl Default for RunOptions {
    /// Every input, 16 per call, seed 0.
    fn default() -> Self {
        Self {
            per_direction: None,
            batch_size: 16,
            seed: 0,
            progress: false,
            shard: foil_run::Shard::WHOLE,
        }
    }
}

impl RunOptions {
    /// The set run over `data` into `out` at `image_size` on `device`.
    pub fn plan<'a, B: Backend>(
        &self,
        data: &'a Dataset,
        out: &'a Path,
        image_size: u32,
        device: &'a B::Device,
    ) -> SetRun<'a, B> {
        SetRun {
            per_direction: self.per_direction,
            batch_size: self.batch_size,
            seed: self.seed,
            progress: self
                .progress
                .then_some(&report_progress as &dyn Fn(&foil_run::Progress<'_>)),
            shard: self.shard,
            ..SetRun::new(data, out, image_size, device)
        }
    }
}
