//! The run manifest ([`foil::run::manifest`]) of the commands that write results folders
//! (`foil maskdime`, `foil diffusion`): their resolved settings, the models they load with
//! checksums, and the claim of each run folder before any input is explained; and reading it
//! back for `foil teach`.
//!
//! Compared (a rerun into the same folder must match, or pass `--resume-any`): the command, the
//! seed, the method's whole resolved configuration (`method.*`), the data (`data.*`: source,
//! classes, `--images`, test fraction, split seed, training images per class), the image size,
//! the batch size (each batch is seeded alike, so batches shape the noise), the oracle, the
//! backend (backends differ in the last bits) and the models' checksums. Not compared (recorded
//! as the folder's first run had them): `--per-direction` (which inputs this call covers, not
//! how each is made), the device index (`cuda:0` and `cuda:1` run the same backend), and
//! whatever may differ between shards of one job (the shard, threads, progress output).

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use foil::core::Result;
use foil::diffusion::DiffusionConfig;
use foil::guide::GuideConfig;
use foil::invert::EfInverterConfig;
use foil::pipeline::{DdpmSource, ExplainConfig, MaskDimeFiles, OracleSource};
use foil::run::manifest::{Claim, MANIFEST_FILE, RunManifest};
use serde_json::{Value, json};

use super::{DataArgs, RunArgs};

/// A command's manifest: the settings resolved before the networks load; the models'
/// checksums taken once, at the first claim, after the networks loaded (so a missing or broken
/// file is reported by its loader, with its hints); claimed per run folder.
pub struct RunRecord {
    manifest: RunManifest,
    models: Vec<(String, PathBuf)>,
    checksummed: OnceCell<RunManifest>,
    resume_any: bool,
}

impl RunRecord {
    /// `foil maskdime`'s settings and models.
    pub fn maskdime(
        data: &DataArgs,
        run: &RunArgs,
        config: &ExplainConfig,
        files: &MaskDimeFiles,
    ) -> Result<Self> {
        let mut manifest = common("maskdime", data, run)?
            .setting("method", explain_settings(config))?
            .setting("oracle", oracle_settings(&files.oracle))?;
        let mut models = vec![("oracle", oracle_file(&files.oracle))];
        manifest = match &files.ddpm {
            DdpmSource::Folder(dir) => {
                models.push(("ddpm", dir));
                manifest.setting("ddpm", "folder")?
            }
            DdpmSource::Checkpoint {
                file,
                config,
                diffusion_steps,
            } => {
                models.push(("ddpm", file));
                manifest.setting(
                    "ddpm",
                    json!({
                        "config": format!("{config:?}"),
                        "diffusion_steps": diffusion_steps,
                    }),
                )?
            }
        };
        if let Some((file, layers)) = &files.perceptual {
            models.push(("perceptual", file));
            manifest = manifest.setting("perceptual_layers", layers)?;
        }
        Ok(Self::new(manifest, &models, run))
    }

    fn new(manifest: RunManifest, models: &[(&str, &Path)], run: &RunArgs) -> Self {
        Self {
            manifest,
            models: models
                .iter()
                .map(|(role, path)| (role.to_string(), path.to_path_buf()))
                .collect(),
            checksummed: OnceCell::new(),
            resume_any: run.resume_any,
        }
    }

    /// `foil diffusion`'s settings and models: `method` is the edit (arithmetic or a baseline),
    /// `models` the files and folders loaded by role (`decoder` for a foil decoder folder,
    /// `kandinsky`, `image_encoder`, `lora`, `stats`).
    pub fn diffusion(
        data: &DataArgs,
        run: &RunArgs,
        method: &str,
        config: &DiffusionConfig,
        oracle: &OracleSource,
        models: &[(&str, &Path)],
    ) -> Result<Self> {
        let manifest = common("diffusion", data, run)?
            .setting("method", diffusion_settings(method, config))?
            .setting("oracle", oracle_settings(oracle))?;
        let mut all = vec![("oracle", oracle_file(oracle))];
        all.extend_from_slice(models);
        Ok(Self::new(manifest, &all, run))
    }

    /// The manifest with the models' checksums, taken on the first call.
    fn checksummed(&self) -> Result<&RunManifest> {
        if let Some(done) = self.checksummed.get() {
            return Ok(done);
        }
        let mut manifest = self.manifest.clone();
        for (role, path) in &self.models {
            manifest = manifest.model(role, path)?;
        }
        Ok(self.checksummed.get_or_init(|| manifest))
    }

    /// Claims run folder `out` for the run with `seed` at `image_size` on backend `B` (before
    /// any input is explained): refused when the folder was written with other settings,
    /// unless `--resume-any`, which is recorded and said on stderr.
    pub fn claim<B>(&self, out: &Path, seed: u64, image_size: u32) -> Result<()> {
        let manifest = self
            .checksummed()?
            .with_seed(seed)
            .setting("image_size", image_size)?
            .setting("backend", std::any::type_name::<B>())?;
        if let Claim::Overridden(differences) = manifest.claim(out, self.resume_any)? {
            let list: Vec<String> = differences.iter().map(ToString::to_string).collect();
            tracing::warn!(
                "--resume-any: mixing other settings into {} ({}); recorded in its {}",
                out.display(),
                list.join("; "),
                MANIFEST_FILE
            );
        }
        Ok(())
    }
}

/// The settings every set-explaining command has: data, batch size; the not-compared ones
/// (inputs per direction, the shard).
fn common(command: &str, data: &DataArgs, run: &RunArgs) -> Result<RunManifest> {
    RunManifest::new(command, run.seed)
        .setting(
            "data",
            json!({
                "source": data.data.to_string(),
                "classes": data.classes(),
                "images": data.images.as_ref().map(|p| p.display().to_string()),
                "test_fraction": data.test_fraction,
                "split_seed": data.split_seed,
                "train_per_class": data.train_per_class,
            }),
        )?
        .setting("batch_size", run.batch_size)?
        .not_compared("per_direction", run.per_direction)?
        .not_compared("shard", run.shard()?.to_string())
}

/// Every field of MaskDiME's resolved configuration (destructured without `..`, so a new field
/// cannot be left out of the manifest unnoticed).
fn explain_settings(config: &ExplainConfig) -> Value {
    let ExplainConfig {
        preset,
        guide,
        respaced_steps,
    } = config;
    let GuideConfig {
        clean,
        mask,
        class_loss,
        tau,
        scales,
        grad_scale,
        lambda_l1,
        lambda_perc,
        scale_grads,
        variance,
        clip_x0,
        noise_inside_mask,
        clean_background,
    } = guide;
    json!({
        "preset": preset.name(),
        "respaced_steps": respaced_steps,
        "clean": format!("{clean:?}"),
        "mask": format!("{mask:?}"),
        "class_loss": format!("{class_loss:?}"),
        "tau": tau,
        "scales": scales,
        "grad_scale": grad_scale,
        "lambda_l1": lambda_l1,
        "lambda_perc": lambda_perc,
        "scale_grads": scale_grads,
        "variance": format!("{variance:?}"),
        "clip_x0": clip_x0,
        "noise_inside_mask": noise_inside_mask,
        "clean_background": clean_background,
    })
}

/// Every field of DIFFusion's resolved configuration, and the edit (`method.name`).
fn diffusion_settings(method: &str, config: &DiffusionConfig) -> Value {
    let DiffusionConfig {
        steps,
        inverter,
        search,
        extra_lambdas,
    } = config;
    let EfInverterConfig {
        eta,
        source_guidance,
        target_guidance,
        last_map,
    } = inverter;
    let foil::diffusion::SearchConfig {
        t_skips,
        lambda,
        form,
    } = search;
    json!({
        "name": method,
        "steps": steps,
        "inverter": {
            "eta": eta,
            "source_guidance": source_guidance,
            "target_guidance": target_guidance,
            "last_map": format!("{last_map:?}"),
        },
        "search": {
            "t_skips": t_skips,
            "lambda": lambda,
            "form": format!("{form:?}"),
        },
        "extra_lambdas": extra_lambdas,
    })
}

/// The oracle's kind and what it explains (its file is a model, checksummed).
fn oracle_settings(oracle: &OracleSource) -> Value {
    match oracle {
        OracleSource::Folder(_) => json!("folder"),
        OracleSource::DimeClassifier { config, .. } => json!(format!("dime {config:?}")),
        OracleSource::Torchvision { arch, logits, .. } => {
            json!(format!("torchvision {arch} {logits:?}"))
        }
    }
}

/// The oracle's file or folder.
fn oracle_file(oracle: &OracleSource) -> &Path {
    match oracle {
        OracleSource::Folder(dir) => dir,
        OracleSource::DimeClassifier { file, .. } | OracleSource::Torchvision { file, .. } => file,
    }
}

/// The run settings `foil teach` takes from a results folder's manifest (`None` where the
/// manifest does not record them, e.g. a MaskDiME run's edit settings).
#[derive(Debug, Clone, Default)]
pub struct RecordedRun {
    /// The dataset spec (`data.source`).
    pub source: Option<String>,
    /// The class pair (`data.classes`).
    pub classes: Option<[String; 2]>,
    /// `--images` (`data.images`).
    pub images: Option<String>,
    /// `data.test_fraction`.
    pub test_fraction: Option<f64>,
    /// `data.split_seed`.
    pub split_seed: Option<u64>,
    /// `data.train_per_class`.
    pub train_per_class: Option<usize>,
    /// The seed.
    pub seed: u64,
    /// A foil decoder folder the run loaded (`foil diffusion` without `--kandinsky`).
    pub decoder: Option<String>,
    /// DIFFusion's steps (`method.steps`).
    pub steps: Option<usize>,
    /// DIFFusion's strengths, the first then the ladder (`method.search.lambda`,
    /// `method.extra_lambdas`).
    pub lambdas: Option<Vec<f64>>,
    /// DIFFusion's regeneration guidance (`method.inverter.target_guidance`).
    pub guidance: Option<f64>,
}

impl RecordedRun {
    /// What the manifest of results folder `dir` records (`None`: no manifest). With
    /// `seed-<s>/` run folders (`--seeds`) and none at `dir` itself, the first seed's.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        let manifest = match RunManifest::read(dir)? {
            Some(m) => m,
            None => match foil::pipeline::seed_folders(dir)?.first() {
                Some((_, first)) => match RunManifest::read(first)? {
                    Some(m) => m,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let get = |key: &str| manifest.get(key).filter(|v| !v.is_null());
        let classes =
            get("data.classes").and_then(|v| serde_json::from_value::<[String; 2]>(v.clone()).ok());
        let lambdas = get("method.search.lambda")
            .and_then(Value::as_f64)
            .map(|first| {
                let mut all = vec![first];
                if let Some(extra) = get("method.extra_lambdas").and_then(Value::as_array) {
                    all.extend(extra.iter().filter_map(Value::as_f64));
                }
                all
            });
        let diffusion = manifest.command == "diffusion";
        Ok(Some(Self {
            source: get("data.source")
                .and_then(Value::as_str)
                .map(str::to_string),
            classes,
            images: get("data.images")
                .and_then(Value::as_str)
                .map(str::to_string),
            test_fraction: get("data.test_fraction").and_then(Value::as_f64),
            split_seed: get("data.split_seed").and_then(Value::as_u64),
            train_per_class: get("data.train_per_class")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
            seed: manifest.seed,
            decoder: manifest
                .models
                .get("decoder")
                .filter(|_| diffusion)
                .map(|c| c.path.clone()),
            steps: get("method.steps")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .filter(|_| diffusion),
            lambdas: lambdas.filter(|_| diffusion),
            guidance: get("method.inverter.target_guidance")
                .and_then(Value::as_f64)
                .filter(|_| diffusion),
        }))
    }
}
