//! The training-loop core: configuration, metrics log, checkpoints and resume.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use foil_core::image_io::write_atomic;
use foil_core::progress::{self, Tick};
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::data::{Augment, batch_indices};

/// How long and how to train, and where the log and checkpoints go.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Total optimizer steps (a resumed run continues up to this number).
    pub steps: usize,
    /// Images per step (clipped to the data size; a last partial batch of an epoch is dropped).
    pub batch_size: usize,
    /// Adam's peak learning rate (betas 0.9, 0.999, eps 1e-5: burn's `AdamConfig` defaults);
    /// `lr_schedule` says how it changes over the steps.
    pub learning_rate: f64,
    /// How the learning rate changes with the step (constant by default).
    pub lr_schedule: LrSchedule,
    /// Random changes to each training batch (none by default).
    pub augment: Augment,
    /// Seed of everything random in training: the epoch permutations and, for DDPMs, the
    /// timesteps and noise (each draw a pure function of `(seed, step)`), and the initial
    /// weights when the network is built after [`TrainConfig::seed_backend`].
    pub seed: u64,
    /// Write a checkpoint every this many steps (and always after the last step).
    pub checkpoint_every: usize,
    /// Folder of `metrics.jsonl` and `checkpoints/`; rerunning with the same folder resumes.
    pub out_dir: PathBuf,
    /// Completed checkpoints kept (older ones are removed after a newer one is written); >= 1.
    pub keep_checkpoints: usize,
}

impl TrainConfig {
    /// `steps` steps of `batch_size` at `learning_rate`, seed 0, a checkpoint every 100 steps
    /// (and at the end), the last 2 checkpoints kept, everything under `out_dir`.
    pub fn new(
        steps: usize,
        batch_size: usize,
        learning_rate: f64,
        out_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            steps,
            batch_size,
            learning_rate,
            lr_schedule: LrSchedule::Constant,
            augment: Augment::default(),
            seed: 0,
            checkpoint_every: 100,
            out_dir: out_dir.into(),
            keep_checkpoints: 2,
        }
    }

    /// Sets the seed.
    pub fn with_seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }

    /// Seeds the backend's random number generator, from which `Config::init` draws a new
    /// network's weights, with [`TrainConfig::seed`]: call it just before building the network
    /// to train, so that the same seed trains the same network. burn's generator is one per
    /// process, so a network built while another thread draws from it is not reproducible.
    pub fn seed_backend<B: Backend>(&self, device: &B::Device) {
        B::seed(device, self.seed);
    }

    /// Sets the learning-rate schedule.
    pub fn with_lr_schedule(self, lr_schedule: LrSchedule) -> Self {
        Self {
            lr_schedule,
            ..self
        }
    }

    /// Sets the batch augmentation.
    pub fn with_augment(self, augment: Augment) -> Self {
        Self { augment, ..self }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        self.learning_rate * self.lr_schedule.factor(step, self.steps)
    }

    /// Sets the checkpoint interval.
    pub fn with_checkpoint_every(self, checkpoint_every: usize) -> Self {
        Self {
            checkpoint_every,
            ..self
        }
    }

    /// The metrics log, `out_dir/metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.out_dir.join("metrics.jsonl")
    }

    /// The checkpoint folder, `out_dir/checkpoints`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.out_dir.join("checkpoints")
    }

    fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::out_of_range("training steps", ">= 1", self.steps));
        }
        if self.batch_size == 0 {
            return Err(Error::out_of_range("batch size", ">= 1", self.batch_size));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::out_of_range(
                "learning rate",
                "finite and > 0",
                self.learning_rate,
            ));
        }
        if let LrSchedule::Cosine { warmup } = self.lr_schedule
            && warmup >= self.steps
        {
            return Err(Error::out_of_range(
                "learning-rate warm-up steps",
                format!("below the {} training steps", self.steps),
                warmup,
            ));
        }
        self.augment.validate()?;
        if self.checkpoint_every == 0 {
            return Err(Error::out_of_range(
                "checkpoint interval",
                ">= 1",
                self.checkpoint_every,
            ));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::out_of_range(
                "checkpoints kept",
                ">= 1",
                self.keep_checkpoints,
            ));
        }
        Ok(())
    }
}

/// How the learning rate changes over a run of `steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The peak rate at every step.
    #[default]
    Constant,
    /// A linear warm-up from `peak / warmup` to the peak over the first `warmup` steps, then a
    /// half cosine from the peak down to zero at the last step (Loshchilov & Hutter's SGDR
    /// without restarts).
    Cosine {
        /// Warm-up steps (0: start at the peak); below the run's steps.
        warmup: usize,
    },
}

impl LrSchedule {
    /// The multiplier of the peak rate at step `step` (0-based) of a `steps`-step run, in
    /// `[0, 1]`.
    pub fn factor(self, step: usize, steps: usize) -> f64 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine { warmup } => {
                if step < warmup {
                    return (step + 1) as f64 / warmup as f64;
                }
                let span = steps.saturating_sub(warmup).max(1) as f64;
                let progress = ((step - warmup) as f64 / span).min(1.0);
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Optimizer steps done (1-based: the line of the first step says 1).
    pub step: usize,
    /// The batch loss of this step (before the update).
    pub loss: f64,
    /// Classifiers: the fraction of the batch classified right (before the update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// Reads every line of a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| {
            Error::format(
                format!("{} line {}", path.display(), i + 1),
                format!("expected a metrics record {{step, loss[, accuracy]}}: {e}"),
            )
        })?);
    }
    Ok(out)
}

/// A trained model and what happened in this run.
#[derive(Debug)]
pub struct Trained<M> {
    /// The model after the last step.
    pub model: M,
    /// The checkpoint step this run continued from, `None` for a fresh start.
    pub resumed_from: Option<usize>,
    /// `(step, loss)` of the steps run by this call (empty when the checkpoint was already at
    /// `steps`).
    pub losses: Vec<(usize, f64)>,
}

impl<M> Trained<M> {
    /// The last logged loss of this call, NaN when it ran no step (already at `steps`).
    pub fn last_loss(&self) -> f64 {
        self.losses.last().map_or(f64::NAN, |&(_, l)| l)
    }
}

/// What a checkpoint's `state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointState {
    format: String,
    task: String,
    step: usize,
    seed: u64,
    batch_size: usize,
    learning_rate: f64,
    #[serde(default)]
    lr_schedule: LrSchedule,
    #[serde(default)]
    augment: Augment,
    num_params: usize,
}

const FORMAT: &str = "foil-train checkpoint 1";

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// The completed checkpoints `step-XXXXXXXX` under `dir`, ascending by step.
fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// `model` with every float parameter marked as requiring a gradient (and so trained). Modules
/// built on the inner backend and lifted with `AutodiffModule::from_inner` keep their
/// parameters' "no gradient" flag; this makes them trainable.
pub fn trainable<B: AutodiffBackend, M: Module<B>>(model: M) -> M {
    struct RequireGrad;
    impl<B: AutodiffBackend> burn::module::ModuleMapper<B> for RequireGrad {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.require_grad(), mapper)
        }
    }
    model.map(&mut RequireGrad)
}

/// The shapes of every float parameter, in visiting order (to check a loaded record).
fn param_shapes<B: AutodiffBackend, M: Module<B>>(model: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().dims().to_vec());
        }
    }
    let mut v = Shapes(Vec::new());
    model.visit(&mut v);
    v.0
}

fn corrupt(dir: &Path, detail: impl std::fmt::Display) -> Error {
    Error::format(
        format!("checkpoint {}", dir.display()),
        format!(
            "{detail}. Nothing was deleted: move this folder away to resume from an earlier \
             checkpoint, or use a fresh out_dir to start over"
        ),
    )
}

/// Keeps only the metrics lines of steps `<= step` (rewritten atomically), so a resumed run
/// continues an unbroken log.
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let kept: Vec<MetricsLine> = read_metrics(path)?
        .into_iter()
        .filter(|l| l.step <= step)
        .collect();
    let mut bytes = Vec::new();
    for l in &kept {
        let s = serde_json::to_string(l).map_err(|e| Error::format("metrics line", e))?;
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(b'\n');
    }
    write_atomic(path, &bytes)
}

/// The loop shared by every task. `step_fn(model, batch, step)` returns the loss of the batch
/// (a scalar tensor on the autodiff backend) and an optional batch accuracy.
pub(crate) fn run<B, M, F>(
    mut model: M,
    config: &TrainConfig,
    task: &str,
    n_items: usize,
    device: &B::Device,
    mut step_fn: F,
) -> Result<Trained<M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Clone,
    F: FnMut(&M, &[usize], usize) -> Result<(Tensor<B, 1>, Option<f64>)>,
{
    config.validate()?;
    let ckpt_dir = config.checkpoints_dir();
    fs::create_dir_all(&ckpt_dir).map_err(|e| Error::io(&ckpt_dir, e))?;
    let mut optim = AdamConfig::new().init::<B, M>();
    let shapes = param_shapes::<B, M>(&model);
    let num_params = model.num_params();
    let expected_state = |step| CheckpointState {
        format: FORMAT.into(),
        task: task.into(),
        step,
        seed: config.seed,
        batch_size: config.batch_size,
        learning_rate: config.learning_rate,
        lr_schedule: config.lr_schedule,
        augment: config.augment,
        num_params,
    };

    // Resume from the last completed checkpoint, if any.
    let mut start = 0;
    let mut resumed_from = None;
    if let Some((step, dir)) = list_checkpoints(&ckpt_dir)?.pop() {
        let state_path = dir.join("state.json");
        let text = fs::read_to_string(&state_path).map_err(|e| corrupt(&dir, e))?;
        let state: CheckpointState = serde_json::from_str(&text)
            .map_err(|e| corrupt(&dir, format!("state.json is not readable: {e}")))?;
        let want = expected_state(step);
        if state != want {
            return Err(Error::format(
                format!("checkpoint {}", dir.display()),
                format!(
                    "it was written by another run: expected {want:?}, found {state:?} (use the \
                     same task, seed, batch size, learning rate, schedule, augmentation and \
                     model, or a fresh out_dir)"
                ),
            ));
        }
        // Checked before burn reads it: a truncated or foreign record is an error, not a panic.
        let hint = "a checkpoint of this run";
        let loaded =
            foil_models::folder::load_record(model.clone(), &dir.join("model"), hint, device)
                .map_err(|e| corrupt(&dir, e))?;
        let found = param_shapes::<B, M>(&loaded);
        if found != shapes {
            return Err(corrupt(
                &dir,
                format!("parameter shapes differ: expected {shapes:?}, found {found:?}"),
            ));
        }
        let optim_path = dir.join("optim");
        foil_models::folder::check_record(&optim_path, hint).map_err(|e| corrupt(&dir, e))?;
        let optim_record = recorder().load(optim_path.clone(), device).map_err(|e| {
            let file = foil_models::folder::record_file(&optim_path);
            corrupt(&dir, foil_models::folder::record_error(&file, e, hint))
        })?;
        optim = optim.load_record(optim_record);
        model = loaded;
        start = step;
        resumed_from = Some(step);
    }
    let metrics_path = config.metrics_path();
    truncate_metrics(&metrics_path, start)?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;

    // Progress goes to whoever listens (`foil_core::progress`; the CLI draws it).
    let label = format!("train {task}");
    progress::report(&Tick::new(
        &label,
        "steps",
        start.min(config.steps),
        config.steps,
    ));

    let mut losses = Vec::new();
    for step in start..config.steps {
        let batch = batch_indices(n_items, config.batch_size, config.seed, step);
        // Layers that differ in training (BatchNorm) run in training mode for this forward pass.
        let (loss, accuracy) = {
            let _training = foil_core::mode::TrainingMode::enter();
            step_fn(&model, &batch, step)?
        };
        let value = loss
            .clone()
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .ok()
            .and_then(|v| v.first().copied())
            .ok_or_else(|| Error::format("training loss", "expected one value"))?;
        if !value.is_finite() {
            return Err(Error::non_finite(
                "training loss",
                format!("at step {} (lower the learning rate?)", step + 1),
            ));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        if grads.is_empty() {
            return Err(Error::shape(
                "trainable parameters",
                "at least one parameter that requires a gradient",
                "none (a model built on the inner backend and lifted with from_inner? \
                 pass it through foil_train::trainable)",
            ));
        }
        model = optim.step(config.learning_rate_at(step), model, grads);
        let line = MetricsLine {
            step: step + 1,
            loss: value,
            accuracy,
        };
        let s = serde_json::to_string(&line).map_err(|e| Error::format("metrics line", e))?;
        writeln!(log, "{s}").map_err(|e| Error::io(&metrics_path, e))?;
        losses.push((step + 1, value));
        progress::report(&Tick {
            loss: Some(value),
            ..Tick::new(&label, "steps", step + 1, config.steps)
        });
        if (step + 1) % config.checkpoint_every == 0 || step + 1 == config.steps {
            log.flush().map_err(|e| Error::io(&metrics_path, e))?;
            save_checkpoint::<B, M, _>(&model, &optim, &expected_state(step + 1), config)?;
        }
    }
    Ok(Trained {
        model,
        resumed_from,
        losses,
    })
}

/// Writes `checkpoints/step-XXXXXXXX/{model.mpk, optim.mpk, state.json}` into a temporary
/// folder and renames it into place (a crash leaves either the whole checkpoint or none), then
/// removes completed checkpoints beyond `keep_checkpoints`.
fn save_checkpoint<B, M, O>(
    model: &M,
    optim: &O,
    state: &CheckpointState,
    config: &TrainConfig,
) -> Result<()>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Clone,
    O: Optimizer<M, B>,
{
    let root = config.checkpoints_dir();
    let name = format!("step-{:08}", state.step);
    let done = root.join(&name);
    fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    // A fresh temporary folder of a unique name (created exclusively), so two trainers of one
    // folder never write into the same one.
    let tmp = loop {
        let tmp = foil_core::image_io::temp_sibling(&done);
        match fs::create_dir(&tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    };
    let rec_err = |what: &str, e: burn::record::RecorderError| {
        Error::format(format!("writing {what} to {}", tmp.display()), e)
    };
    recorder()
        .record(model.clone().into_record(), tmp.join("model"))
        .map_err(|e| rec_err("model.mpk", e))?;
    recorder()
        .record(optim.to_record(), tmp.join("optim"))
        .map_err(|e| rec_err("optim.mpk", e))?;
    let json = serde_json::to_string_pretty(state).map_err(|e| Error::format("state.json", e))?;
    fs::write(tmp.join("state.json"), json).map_err(|e| Error::io(tmp.join("state.json"), e))?;
    if done.exists() {
        // Same step written again (a rerun after the target was raised and lowered): replace.
        fs::remove_dir_all(&done).map_err(|e| Error::io(&done, e))?;
    }
    fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
    // The rename itself survives a crash once the folder holding it is flushed.
    foil_core::image_io::sync_dir(&root)?;
    let all = list_checkpoints(&root)?;
    if all.len() > config.keep_checkpoints {
        for (_, old) in &all[..all.len() - config.keep_checkpoints] {
            fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
        }
    }
    Ok(())
}
