//! The commands, one file per group: each resolves its (already typed) arguments into the
//! library's pipeline objects ([`foil::pipeline`]) and prints what they return. Here: the
//! argument groups several commands share and the one-line summary of a finished run.

pub mod evaluate;
pub mod explain;
pub mod manifest;
pub mod stats;
pub mod teach;
pub mod train;
pub mod weights;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use clap::Args;
use foil::core::profile::{self, SyncGuard};
use foil::core::{Error, Result};
use foil::data::{Dataset, Source};
use foil::diffusion::{DiffusionConfig, SearchConfig};
use foil::invert::EfInverterConfig;
use foil::pipeline::{self, RunOptions, RunSummary};
use foil::run::Shard;

/// Folder under which runs write their results by default (`results/<method>`).
const RESULTS_DIR: &str = "results";

/// The data and class pair every command works on.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Dataset: `fashion-mnist[:DIR]`, `mnist-json:DIR`, `kiki-bouba[:PER_CLASS:SIZE]` or a
    /// folder with one sub-folder per class.
    #[arg(long, default_value = "fashion-mnist", value_parser = str::parse::<Source>)]
    pub data: Source,
    /// The two classes, by name: `A,B` (A is label 0).
    #[arg(long, value_parser = parse_pair, required_unless_present = "images")]
    pub classes: Option<ClassPair>,
    /// Explain the images of this folder (all of class `--from`, explained towards `--to`)
    /// instead of the test part of `--data` (`foil maskdime`, `foil diffusion`).
    #[arg(long, value_name = "DIR", requires_all = ["from", "to"], conflicts_with = "classes")]
    pub images: Option<PathBuf>,
    /// With `--images`: the class of the images (label 0; as the oracle names it).
    #[arg(long, requires = "images")]
    pub from: Option<String>,
    /// With `--images`: the class to explain them towards (label 1).
    #[arg(long, requires = "images")]
    pub to: Option<String>,
    /// Share of each class held out for testing (datasets without an official test part).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the split (and of procedural data).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Use at most this many training images per class (the first ones).
    #[arg(long)]
    pub train_per_class: Option<usize>,
}

/// Two class names.
#[derive(Debug, Clone)]
pub struct ClassPair(pub [String; 2]);

/// `A,B`: two class names.
pub fn parse_pair(s: &str) -> std::result::Result<ClassPair, String> {
    match s.split(',').collect::<Vec<_>>().as_slice() {
        [a, b] if !a.is_empty() && !b.is_empty() => Ok(ClassPair([a.to_string(), b.to_string()])),
        _ => Err(format!("expected two class names as A,B, found {s:?}")),
    }
}

impl DataArgs {
    /// The training and test images of the class pair (`--train-per-class` applied to the
    /// training part). With `--images`: no training images, the folder as the test part.
    pub fn load(&self) -> Result<(Dataset, Dataset)> {
        if let Some(dir) = &self.images {
            let [from, to] = self.classes();
            let inputs = foil::data::folder::load_flat(dir, &from, &to)?;
            let train = Dataset::new(vec![from, to], Vec::new())?;
            return Ok((train, inputs));
        }
        let [a, b] = self.classes();
        let (train, test) = self
            .data
            .load_pair(&a, &b, self.test_fraction, self.split_seed)?;
        let train = match self.train_per_class {
            Some(n) => train.first_per_class(n)?,
            None => train,
        };
        Ok((train, test))
    }

    /// The training images of every class of the source (not only the pair).
    pub fn load_all_classes(&self) -> Result<Dataset> {
        let (all, _) = self.data.load(self.test_fraction, self.split_seed)?;
        Ok(all)
    }

    /// The class pair, label 0 first (`--classes`, or `--from`, `--to`; clap makes sure one of
    /// them is given).
    pub fn classes(&self) -> [String; 2] {
        match (&self.classes, &self.from, &self.to) {
            (Some(pair), ..) => pair.0.clone(),
            (None, Some(from), Some(to)) => [from.clone(), to.clone()],
            _ => [String::new(), String::new()],
        }
    }
}

/// Which inputs of a test set a counterfactual run explains, how many per call, and with
/// which seeds: shared by `foil maskdime` and `foil diffusion`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Test images per direction (the first ones).
    #[arg(long, default_value_t = 16)]
    pub per_direction: usize,
    /// Images per method call (a sampler call, an inversion and edit batch).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Seed of the method's noise (the sampler's, the inversion's).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run the set once per seed, into <out>/seed-<s>/ (several seeds; one seed: into <out>
    /// itself, as --seed), e.g. for the diversity across seeds.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    pub seeds: Option<Vec<u64>>,
    /// Run into a results folder even if its run manifest (foil-run.json) records other
    /// settings, mixing them (the differences are recorded in the manifest). Without it such a
    /// rerun is refused with the list of differing settings.
    #[arg(long)]
    pub resume_any: bool,
    /// Explain only shard I of N (from 0: `0/4` to `3/4`) of the inputs, whole batches dealt
    /// round-robin, into the same results folder as the other shards (docs/scale.md). Without
    /// it a Slurm array task (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) or a Kubernetes
    /// Indexed Job pod (JOB_COMPLETION_INDEX with FOIL_SHARD_COUNT) runs its shard; `0/1`:
    /// the whole set. Every shard needs the same --per-direction and --batch-size.
    #[arg(long, value_name = "I/N", value_parser = str::parse::<Shard>)]
    pub shard: Option<Shard>,
    /// Wait for the device at the start and end of every network call, so that the time split
    /// printed after each run is the device's: on a GPU the calls otherwise hold only the time
    /// to queue their work. It slows a GPU run (the host no longer queues ahead, and fusion
    /// stops at each call's edges): time a run without it for the seconds per image. Nothing
    /// changes on the CPU.
    #[arg(long)]
    pub sync_timings: bool,
}

impl RunArgs {
    /// One `(seed, folder)` per run under `out` (`--seeds`, else `--seed` into `out` itself);
    /// the shard is checked here too, before anything is loaded.
    pub fn runs(&self, out: &Path) -> Result<Vec<(u64, PathBuf)>> {
        self.shard()?;
        pipeline::seed_runs(out, self.seeds.as_deref().unwrap_or(&[self.seed]))
    }

    /// This process's shard: `--shard`, else the job scheduler's (environment), else all.
    pub fn shard(&self) -> Result<Shard> {
        Shard::resolve(self.shard, |name| std::env::var(name).ok())
    }

    /// With `--sync-timings`, the guard under which this thread's network calls wait for
    /// `device` at their start and end (`foil::core::profile::sync_with`).
    pub fn sync_timings<B: Backend>(&self, device: &B::Device) -> Option<SyncGuard> {
        let device = device.clone();
        let first = std::cell::Cell::new(true);
        self.sync_timings.then(|| {
            profile::sync_with(move || {
                if first.replace(false) {
                    tracing::debug!("--sync-timings: network calls wait for the device");
                }
                if let Err(err) = B::sync(&device) {
                    tracing::warn!("waiting for the device: {err}");
                }
            })
        })
    }

    /// The options of the run with `seed`.
    pub fn options(&self, seed: u64) -> Result<RunOptions> {
        let shard = self.shard()?;
        tracing::debug!(
            "run with seed {seed}: at most {} inputs per direction, {} per call, shard {shard}",
            self.per_direction,
            self.batch_size
        );
        Ok(RunOptions {
            per_direction: Some(self.per_direction),
            batch_size: self.batch_size,
            seed,
            progress: true,
            shard,
        })
    }
}

/// The results folder of a run: `--out`, else `results/<name>`.
pub fn results_dir(out: Option<&Path>, name: &str) -> PathBuf {
    out.map_or_else(|| Path::new(RESULTS_DIR).join(name), Path::to_path_buf)
}

/// DIFFusion's edit settings, shared by `foil diffusion` and `foil teach`.
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// Inversion and regeneration steps (default 50; with the published decoder 100, as the
    /// authors' eval.py).
    #[arg(long = "steps", value_name = "STEPS")]
    pub sampling_steps: Option<usize>,
    /// Edit strength lambda; several (`2,3`) form a ladder: each next strength is tried on the
    /// inputs the previous ones left unflipped.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub lambda: Vec<f64>,
    /// Classifier-free guidance scale while regenerating (1: none).
    #[arg(long, default_value_t = 4.0)]
    pub guidance: f64,
}

impl EditArgs {
    /// DIFFusion's settings: these steps, strengths and guidance over `preset`'s (the
    /// defaults, or [`DiffusionConfig::published`]).
    pub fn config_over(&self, preset: DiffusionConfig) -> Result<DiffusionConfig> {
        if let Some(&bad) = self.lambda.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
            return Err(Error::out_of_range("--lambda", "finite and > 0", bad));
        }
        let (first, rest) = self.lambda.split_first().ok_or_else(|| Error::Empty {
            what: "--lambda".into(),
            hint: "give at least one edit strength".into(),
        })?;
        Ok(DiffusionConfig {
            steps: self.sampling_steps.unwrap_or(preset.steps),
            inverter: EfInverterConfig {
                target_guidance: self.guidance,
                ..preset.inverter
            },
            search: SearchConfig {
                lambda: *first,
                ..preset.search
            },
            extra_lambdas: rest.to_vec(),
        })
    }

    /// DIFFusion's settings over the defaults (foil's own decoders).
    pub fn config(&self) -> Result<DiffusionConfig> {
        self.config_over(DiffusionConfig::default())
    }
}

/// The lines printed per finished run: the summary, then where its time went (the network
/// calls' totals from `foil::core::profile`, and the rest).
pub fn print_summary(name: &str, summary: &RunSummary, out: &Path) {
    let busy = if summary.busy > 0 {
        format!(", {} claimed by another process", summary.busy)
    } else {
        String::new()
    };
    println!(
        "{name}: {} explained ({} flipped), {} already done{busy}, {:.1} s -> {}",
        summary.done,
        summary.flipped,
        summary.skipped,
        summary.seconds,
        out.display()
    );
    let timings = profile::take();
    if summary.done > 0 && !timings.is_empty() {
        let networks: f64 = timings.iter().map(|t| t.seconds).sum();
        let parts: Vec<String> = timings
            .iter()
            .map(|t| format!("{} {:.1} s ({} calls)", t.name, t.seconds, t.calls))
            .collect();
        println!(
            "  time: {}; everything else {:.1} s ({:.0}% of the run in network calls)",
            parts.join(", "),
            (summary.seconds - networks).max(0.0),
            100.0 * networks / summary.seconds.max(f64::MIN_POSITIVE)
        );
    }
}
