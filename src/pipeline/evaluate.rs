//! Every metric of both papers over a results folder written by `foil maskdime` or
//! `foil diffusion`, typed per direction: success ratio, LPIPS over the flipped inputs (the
//! papers' number) and over all, FID and sFID over a chosen encoder, COUT with the oracle, MNAC
//! with a multi-attribute oracle, cosine similarity (FS / S3 style) with a chosen encoder, and
//! the diversity across seeds (`seed-<s>/` sub-folders).
//!
//! Protocols follow the authors' scripts (DiME's `compute-fid.sh`, `compute_MNAC.py`,
//! `compute_FVA.py`, `compute_LPIPS.py`): FID compares **all** originals with the **flipped**
//! counterfactuals; MNAC and the similarities are the papers' numbers over the flipped ones;
//! the diversity is over every input present in every seed. Each averaged metric is reported
//! over the flipped inputs and over all of them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::tensor::{Tensor, backend::Backend};
use foil_core::image_io::{ColorMode, Resize, images_to_tensor, load};
use foil_core::tensor::to_vec_f32;
use foil_core::{Classifier, Error, ImageEncoder, Result};
use foil_metrics::cout::cout;
use foil_metrics::diversity::{ImageDistance, diversity};
use foil_metrics::fid::{Features, fid, split_fid};
use foil_metrics::lpips::{Lpips, LpipsEncoder, LpipsNet};
use foil_metrics::mnac::{mnac, mnac_excluding};
use foil_metrics::similarity::{SimilaritySummary, cosine_similarities, summarize};
use foil_models::clip::{ClipVision, ClipVisionConfig, ignore_text_tower};
use foil_models::inception::{InceptionV3, InceptionV3Config};
use foil_models::weights::TensorFile;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::explain::{ItemResult, read_results};
use super::report::lpips_resize;
use super::{image_mode, load_oracle};

/// The spellings [`EncoderChoice`] accepts, for error messages and help texts.
pub const ENCODER_CHOICES: &str = "lpips-alex, lpips-vgg, clip:FILE or inception:FILE";

/// The threshold of the share-above summary of cosine similarities (FVA's 0.5).
pub const SIMILARITY_THRESHOLD: f64 = 0.5;

/// An image encoder for FID / sFID or the cosine similarities, as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderChoice {
    /// `lpips-alex`: LPIPS's AlexNet, spatial mean of its last feature map (256 wide).
    LpipsAlex,
    /// `lpips-vgg`: LPIPS's VGG16, spatial mean of its last feature map (512 wide).
    LpipsVgg,
    /// `clip:FILE`: a CLIP vision tower with projection (ViT-B/32, ViT-L/14 or ViT-bigG/14,
    /// told apart by their layer count), from a `CLIPVisionModelWithProjection` or full
    /// `CLIPModel` safetensors file.
    Clip(PathBuf),
    /// `inception:FILE`: pytorch-fid's InceptionV3 pool3 features (2048 wide, inputs resized
    /// to 299), the papers' FID encoder, from pytorch-fid's `pt_inception` state dict.
    Inception(PathBuf),
}

impl FromStr for EncoderChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let file = |rest: &str| -> Result<PathBuf> {
            if rest.is_empty() {
                Err(Error::out_of_range("encoder", ENCODER_CHOICES, s))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match s {
            "lpips-alex" => Ok(Self::LpipsAlex),
            "lpips-vgg" => Ok(Self::LpipsVgg),
            _ => {
                if let Some(rest) = s.strip_prefix("clip:") {
                    Ok(Self::Clip(file(rest)?))
                } else if let Some(rest) = s.strip_prefix("inception:") {
                    Ok(Self::Inception(file(rest)?))
                } else {
                    Err(Error::out_of_range("encoder", ENCODER_CHOICES, s))
                }
            }
        }
    }
}

impl fmt::Display for EncoderChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LpipsAlex => write!(f, "lpips-alex"),
            Self::LpipsVgg => write!(f, "lpips-vgg"),
            Self::Clip(p) => write!(f, "clip:{}", p.display()),
            Self::Inception(p) => write!(f, "inception:{}", p.display()),
        }
    }
}

/// Which encoder a number used, recorded in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderLabel {
    /// The encoder as the user named it (`lpips-alex`, `clip:FILE`, ...).
    pub name: String,
    /// Whether it is InceptionV3, the only encoder whose FIDs compare with the papers'.
    pub inception: bool,
}

/// An encoder ready to use, with its label.
pub struct Encoder<B: Backend> {
    /// What the report says was used.
    pub label: EncoderLabel,
    /// The network.
    pub net: Box<dyn ImageEncoder<B>>,
}

/// A classifier ready to score with: the oracle (two classes) or a multi-attribute oracle.
pub struct ScoringOracle<B: Backend> {
    /// Class or attribute names, one per logit (a one-logit oracle: its two classes).
    pub names: Vec<String>,
    /// Side of the square RGB images it takes.
    pub image_size: u32,
    /// The network.
    pub classifier: Box<dyn Classifier<B>>,
}

/// A multi-attribute oracle made of one-logit oracles, one attribute each: its logits are the
/// members' logits side by side, so MNAC counts the members whose decision changes.
pub struct AttributeOracle<B: Backend> {
    members: Vec<Box<dyn Classifier<B>>>,
}

impl<B: Backend> AttributeOracle<B> {
    /// Joins one-logit classifiers; each must have exactly one logit.
    pub fn new(members: Vec<Box<dyn Classifier<B>>>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::Empty {
                what: "attribute oracles".into(),
                hint: "give at least one oracle folder".into(),
            });
        }
        if let Some((i, m)) = members
            .iter()
            .enumerate()
            .find(|(_, m)| m.num_logits() != 1)
        {
            return Err(Error::shape(
                format!("attribute oracle {i} logits"),
                "1 per image",
                m.num_logits(),
            ));
        }
        Ok(Self { members })
    }
}

impl<B: Backend> Classifier<B> for AttributeOracle<B> {
    fn num_logits(&self) -> usize {
        self.members.len()
    }

    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let columns = self
            .members
            .iter()
            .map(|m| m.logits(images.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(columns, 1))
    }
}

/// The networks an evaluation scores with; every `None` leaves its metrics `None`, with a
/// note in the report saying what to pass.
#[derive(Default)]
pub struct Scorers<B: Backend> {
    /// LPIPS with AlexNet (DIFFusion's LPIPS).
    pub lpips: Option<Lpips<B>>,
    /// LPIPS with VGG16, for the diversity across seeds (the papers' sigma_L).
    pub diversity_lpips: Option<Lpips<B>>,
    /// The FID / sFID encoder.
    pub fid_encoder: Option<Encoder<B>>,
    /// The cosine-similarity encoder (FS / S3 style).
    pub similarity_encoder: Option<Encoder<B>>,
    /// The oracle, for COUT.
    pub oracle: Option<ScoringOracle<B>>,
    /// The multi-attribute oracle, for MNAC.
    pub mnac_oracle: Option<ScoringOracle<B>>,
}

/// Files the [`Scorers`] are loaded from (see [`load_scorers`]).
#[derive(Debug, Clone, Default)]
pub struct ScorerPaths {
    /// LPIPS AlexNet weights (`foil weights lpips`).
    pub lpips: Option<PathBuf>,
    /// LPIPS VGG16 weights (`foil weights lpips`).
    pub lpips_vgg: Option<PathBuf>,
    /// FID / sFID encoder.
    pub fid_encoder: Option<EncoderChoice>,
    /// Cosine-similarity encoder.
    pub similarity_encoder: Option<EncoderChoice>,
    /// Oracle folder (`foil train oracle`), for COUT.
    pub oracle: Option<PathBuf>,
    /// Oracle folders, one attribute each, joined as the MNAC oracle.
    pub mnac_oracles: Vec<PathBuf>,
}

/// Loads every network `paths` names, before anything is scored, so a wrong path or file fails
/// at once. An encoder that needs LPIPS weights not given is an error naming the flag.
pub fn load_scorers<B: Backend>(paths: &ScorerPaths, device: &B::Device) -> Result<Scorers<B>> {
    let lpips = |path: &Option<PathBuf>, net: LpipsNet| -> Result<Option<Lpips<B>>> {
        path.as_ref()
            .map(|p| Lpips::load(p, net, device))
            .transpose()
    };
    let lpips_alex = lpips(&paths.lpips, LpipsNet::alex())?;
    let lpips_vgg = lpips(&paths.lpips_vgg, LpipsNet::vgg())?;
    let encoder = |choice: &Option<EncoderChoice>, flag: &str| -> Result<Option<Encoder<B>>> {
        let Some(choice) = choice else {
            return Ok(None);
        };
        let needs = |what: &str, weights_flag: &str| Error::Empty {
            what: format!("{what} weights for {flag} {choice}"),
            hint: format!("run `foil weights lpips` or pass {weights_flag} FILE"),
        };
        let net: Box<dyn ImageEncoder<B>> = match choice {
            EncoderChoice::LpipsAlex => Box::new(LpipsEncoder::new(
                lpips(&paths.lpips, LpipsNet::alex())?
                    .ok_or_else(|| needs("LPIPS AlexNet", "--lpips"))?,
                "lpips-alex",
            )),
            EncoderChoice::LpipsVgg => Box::new(LpipsEncoder::new(
                lpips(&paths.lpips_vgg, LpipsNet::vgg())?
                    .ok_or_else(|| needs("LPIPS VGG16", "--lpips-vgg"))?,
                "lpips-vgg",
            )),
            EncoderChoice::Clip(file) => Box::new(load_clip::<B>(file, device)?),
            EncoderChoice::Inception(file) => Box::new(load_inception::<B>(file, device)?),
        };
        let name = match choice {
            EncoderChoice::Inception(file) => format!("InceptionV3 ({})", file.display()),
            other => other.to_string(),
        };
        Ok(Some(Encoder {
            label: EncoderLabel {
                name,
                inception: matches!(choice, EncoderChoice::Inception(_)),
            },
            net,
        }))
    };
    let fid_encoder = encoder(&paths.fid_encoder, "--fid-encoder")?;
    let similarity_encoder = encoder(&paths.similarity_encoder, "--similarity-encoder")?;
    let oracle = match &paths.oracle {
        Some(dir) => {
            let (spec, net) = load_oracle::<B>(dir, device)?;
            Some(ScoringOracle {
                names: spec.classes.to_vec(),
                image_size: spec.image_size,
                classifier: Box::new(net),
            })
        }
        None => None,
    };
    let mnac_oracle = if paths.mnac_oracles.is_empty() {
        None
    } else {
        let mut members: Vec<Box<dyn Classifier<B>>> = Vec::new();
        let (mut names, mut size) = (Vec::new(), None);
        for dir in &paths.mnac_oracles {
            let (spec, net) = load_oracle::<B>(dir, device)?;
            if *size.get_or_insert(spec.image_size) != spec.image_size {
                return Err(Error::shape(
                    format!("image size of the MNAC oracle {}", dir.display()),
                    size.unwrap_or_default(),
                    spec.image_size,
                ));
            }
            names.push(spec.classes[1].clone());
            members.push(Box::new(net));
        }
        Some(ScoringOracle {
            names,
            image_size: size.unwrap_or_default(),
            classifier: Box::new(AttributeOracle::new(members)?),
        })
    };
    Ok(Scorers {
        lpips: lpips_alex,
        diversity_lpips: lpips_vgg,
        fid_encoder,
        similarity_encoder,
        oracle,
        mnac_oracle,
    })
}

/// Loads pytorch-fid's InceptionV3 (resizing to 299, pool3 features) from its
/// `pt_inception-2015-12-05-6726825d.pth` (or the same state dict as safetensors); a file that
/// does not exist is an I/O error that names InceptionV3 and the file to get.
pub fn load_inception<B: Backend>(path: &Path, device: &B::Device) -> Result<InceptionV3<B>> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no InceptionV3 weights here (pytorch-fid's pt_inception-2015-12-05-6726825d.pth)",
            ),
        ));
    }
    InceptionV3Config::fid().load_file(path, device)
}

/// Loads a CLIP vision tower, choosing ViT-B/32, ViT-L/14 or ViT-bigG/14 by the number of
/// encoder layers in the file (12, 24, 48); a full `CLIPModel` file's text tower is skipped.
pub fn load_clip<B: Backend>(path: &Path, device: &B::Device) -> Result<ClipVision<B>> {
    let mut file = TensorFile::open_any(path)?;
    let layers = (0..)
        .take_while(|i| {
            file.contains(&format!(
                "vision_model.encoder.layers.{i}.self_attn.q_proj.weight"
            ))
        })
        .count();
    let config = match layers {
        12 => ClipVisionConfig::vit_b32(),
        24 => ClipVisionConfig::vit_l14(),
        48 => ClipVisionConfig::vit_bigg14(),
        n => {
            return Err(Error::format(
                path.display().to_string(),
                format!(
                    "a CLIP vision tower with 12 (ViT-B/32), 24 (ViT-L/14) or 48 (ViT-bigG/14) \
                     layers `vision_model.encoder.layers.N`, found {n}"
                ),
            ));
        }
    };
    if file.contains("text_model.embeddings.token_embedding.weight") {
        ignore_text_tower(&mut file);
    }
    let model = config.load(&mut file, device)?;
    file.finish()?;
    Ok(model.with_identity(format!("clip:{}", path.display())))
}

/// Settings of an evaluation besides the networks.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateOptions {
    /// The method's name in the report.
    pub method: String,
    /// COUT insertion steps (the protocol: 50).
    pub cout_steps: usize,
    /// sFID repetitions (the protocol: 10).
    pub sfid_repeats: usize,
    /// Seed of the sFID splits.
    pub seed: u64,
    /// Images per network call.
    pub batch_size: usize,
    /// MNAC: leave out this attribute (an index into the MNAC oracle's attributes); `None`
    /// counts every attribute, as the papers' `compute_MNAC.py` does.
    pub mnac_exclude: Option<usize>,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        Self {
            method: String::new(),
            cout_steps: 50,
            sfid_repeats: 10,
            seed: 0,
            batch_size: 32,
            mnac_exclude: None,
        }
    }
}

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

/// The seed folders `seed-<s>/` under `out`, sorted by seed.
pub fn seed_folders(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let path = entry.map_err(|e| Error::io(out, e))?.path();
        let seed = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("seed-"))
            .and_then(|s| s.parse::<u64>().ok());
        if let (Some(seed), true) = (seed, path.is_dir()) {
            seeds.push((seed, path));
        }
    }
    seeds.sort();
    Ok(seeds)
}

fn png(json: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}.{suffix}.png",
        json.with_extension("").display()
    ))
}

fn chunks(n: usize, batch: usize) -> impl Iterator<Item = Range<usize>> {
    let batch = batch.max(1);
    (0..n).step_by(batch).map(move |s| s..(s + batch).min(n))
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The flipped-only and all-inputs means of `values` over the inputs `idx`.
fn averaged(values: &[f64], idx: &[usize], flipped: &[bool]) -> Option<Averaged> {
    Some(Averaged {
        all: mean(idx.iter().map(|&i| values[i]))?,
        flipped: mean(idx.iter().filter(|&&i| flipped[i]).map(|&i| values[i])),
    })
}

/// Per-item scores computed once, aggregated per scope.
#[derive(Default)]
struct PerItem {
    lpips: Option<Vec<f64>>,
    cout: Option<Vec<f64>>,
    mnac: Option<Vec<f64>>,
    similarity: Option<Vec<f64>>,
    /// Original and counterfactual features (row per item) and the width.
    features: Option<(Vec<f32>, Vec<f32>, usize)>,
    /// Diversity per item of the scored folder (`None` where absent from a seed).
    diversity: Option<(Vec<Option<f64>>, usize)>,
}

/// Scores the results under `results` with `scorers`. When `results` holds `seed-<s>/`
/// folders, the lowest seed's folder is scored and the diversity compares every seed; else
/// `results` itself is scored and the diversity is `None`. Nothing is written.
pub fn evaluate_run<B: Backend>(
    results: &Path,
    scorers: &Scorers<B>,
    options: &EvaluateOptions,
    device: &B::Device,
) -> Result<RunEvaluation> {
    let seeds = seed_folders(results)?;
    let scored = seeds
        .first()
        .map_or_else(|| results.to_path_buf(), |(_, p)| p.clone());
    let items = read_results(&scored)?;
    if items.is_empty() {
        return Err(Error::Empty {
            what: format!("results under {}", scored.display()),
            hint: "run `foil maskdime` or `foil diffusion` first".into(),
        });
    }
    let classes = items[0].1.classes.clone();
    if let Some((path, r)) = items.iter().find(|(_, r)| r.classes != classes) {
        return Err(Error::format(
            path.display().to_string(),
            format!(
                "classes {:?}, the other results have {classes:?}",
                r.classes
            ),
        ));
    }
    if let Some(o) = &scorers.oracle
        && o.names.as_slice() != classes.as_slice()
    {
        return Err(Error::format(
            "oracle classes",
            format!(
                "the oracle was trained on {:?}, the results are of {classes:?}",
                o.names
            ),
        ));
    }
    if let (Some(o), Some(j)) = (&scorers.mnac_oracle, options.mnac_exclude)
        && j >= o.names.len()
    {
        return Err(Error::out_of_range(
            "excluded MNAC attribute",
            format!("below {} (the MNAC oracle's attributes)", o.names.len()),
            j,
        ));
    }
    let n = items.len();
    let flipped: Vec<bool> = items.iter().map(|(_, r)| r.flipped).collect();
    let origs = items
        .iter()
        .map(|(p, _)| load(png(p, "orig")))
        .collect::<Result<Vec<_>>>()?;
    let cfs = items
        .iter()
        .map(|(p, _)| load(png(p, "cf")))
        .collect::<Result<Vec<_>>>()?;
    let lpips_size = lpips_resize(&origs);
    let tensors = |r: &Range<usize>, resize: Resize| -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        Ok((
            images_to_tensor::<B>(&origs[r.clone()], ColorMode::Rgb, resize, device)?,
            images_to_tensor::<B>(&cfs[r.clone()], ColorMode::Rgb, resize, device)?,
        ))
    };
    let batch = options.batch_size;
    let mut per = PerItem::default();

    if let Some(net) = &scorers.lpips {
        let mut v = Vec::with_capacity(n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, lpips_size)?;
            v.extend(net.distance(a, b)?);
        }
        per.lpips = Some(v);
    }
    if let Some(o) = &scorers.oracle {
        let (_, resize) = image_mode(o.image_size);
        let c: &dyn Classifier<B> = &*o.classifier;
        let mut v = Vec::with_capacity(n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, resize)?;
            let src: Vec<usize> = items[r.clone()].iter().map(|(_, i)| i.predicted).collect();
            let tgt: Vec<usize> = items[r.clone()].iter().map(|(_, i)| i.to).collect();
            v.extend(cout(&c, a, b, &src, &tgt, options.cout_steps)?);
        }
        per.cout = Some(v);
    }
    if let Some(o) = &scorers.mnac_oracle {
        let (_, resize) = image_mode(o.image_size);
        let c: &dyn Classifier<B> = &*o.classifier;
        let mut v = Vec::with_capacity(n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, resize)?;
            let counts = match options.mnac_exclude {
                Some(j) => mnac_excluding(&c, a, b, j)?,
                None => mnac(&c, a, b)?,
            };
            v.extend(counts.into_iter().map(|k| k as f64));
        }
        per.mnac = Some(v);
    }
    if let Some(e) = &scorers.similarity_encoder {
        let net: &dyn ImageEncoder<B> = &*e.net;
        let mut v = Vec::with_capacity(n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, lpips_size)?;
            v.extend(cosine_similarities(&net, a, b)?);
        }
        per.similarity = Some(v);
    }
    if let Some(e) = &scorers.fid_encoder {
        let (mut fa, mut fb) = (Vec::new(), Vec::new());
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, lpips_size)?;
            fa.extend(to_vec_f32(&e.net.encode(a)?)?);
            fb.extend(to_vec_f32(&e.net.encode(b)?)?);
        }
        let d = fa.len() / n;
        per.features = Some((fa, fb, d));
    }
    if let (Some(net), true) = (&scorers.diversity_lpips, seeds.len() >= 2) {
        per.diversity = Some((
            diversity_per_item(&scored, &items, &seeds, net, batch, device)?,
            seeds.len(),
        ));
    }

    // Scopes: each direction, then everything.
    let mut by_direction: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, (_, r)) in items.iter().enumerate() {
        by_direction.entry((r.predicted, r.to)).or_default().push(i);
    }
    let mut notes = Vec::new();
    let name = |k: usize| {
        classes
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    };
    let mut directions = Vec::new();
    for ((from, to), idx) in &by_direction {
        let label = format!("{} -> {}", name(*from), name(*to));
        let metrics = scope_metrics(
            &items,
            idx,
            &flipped,
            &per,
            options,
            Some(&label),
            &mut notes,
        );
        directions.push(DirectionEvaluation {
            from: *from,
            to: *to,
            from_name: name(*from),
            to_name: name(*to),
            metrics,
        });
    }
    let all: Vec<usize> = (0..n).collect();
    let overall = scope_metrics(&items, &all, &flipped, &per, options, None, &mut notes);

    let missing = |metric: Metric, reason: &str, notes: &mut Vec<Note>| {
        notes.push(Note {
            metric,
            direction: None,
            reason: reason.into(),
        })
    };
    if scorers.lpips.is_none() {
        missing(
            Metric::Lpips,
            "no LPIPS AlexNet weights (--lpips)",
            &mut notes,
        );
    }
    if scorers.fid_encoder.is_none() {
        for m in [Metric::Fid, Metric::Sfid] {
            missing(m, "no encoder chosen (--fid-encoder)", &mut notes);
        }
    }
    if scorers.oracle.is_none() {
        missing(Metric::Cout, "no oracle given (--oracle DIR)", &mut notes);
    }
    if scorers.mnac_oracle.is_none() {
        missing(
            Metric::Mnac,
            "no multi-attribute oracle given (--mnac-oracle DIR,DIR,..)",
            &mut notes,
        );
    }
    if scorers.similarity_encoder.is_none() {
        missing(
            Metric::Similarity,
            "no encoder chosen (--similarity-encoder)",
            &mut notes,
        );
    }
    if seeds.len() < 2 {
        missing(
            Metric::Diversity,
            &format!(
                "needs two or more seed-<s>/ folders (`--seeds 0,1,2`), found {}",
                seeds.len()
            ),
            &mut notes,
        );
    } else if scorers.diversity_lpips.is_none() {
        missing(
            Metric::Diversity,
            "no LPIPS VGG16 weights (--lpips-vgg)",
            &mut notes,
        );
    }
    Ok(RunEvaluation {
        method: options.method.clone(),
        scored_folder: scored,
        seeds: seeds.iter().map(|(s, _)| *s).collect(),
        fid_encoder: scorers.fid_encoder.as_ref().map(|e| e.label.clone()),
        similarity_encoder: scorers.similarity_encoder.as_ref().map(|e| e.label.clone()),
        mnac_attributes: scorers
            .mnac_oracle
            .as_ref()
            .map(|o| o.names.clone())
            .unwrap_or_default(),
        mnac_excluded: scorers.mnac_oracle.as_ref().and(options.mnac_exclude),
        directions,
        overall,
        notes,
    })
}

/// Per input of the scored (first) seed, the mean pairwise LPIPS between its counterfactuals
/// across all seeds; `None` for an input missing from some seed.
fn diversity_per_item<B: Backend>(
    scored: &Path,
    items: &[(PathBuf, ItemResult)],
    seeds: &[(u64, PathBuf)],
    net: &Lpips<B>,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Option<f64>>> {
    // An input is known by its path under the seed folder: `<from>_to_<to>/<key>`.
    let relative: Vec<PathBuf> = items
        .iter()
        .map(|(p, _)| p.strip_prefix(scored).unwrap_or(p).to_path_buf())
        .collect();
    let present: Vec<usize> = (0..items.len())
        .filter(|&i| {
            seeds
                .iter()
                .all(|(_, dir)| dir.join(&relative[i]).is_file())
        })
        .collect();
    let mut out = vec![None; items.len()];
    for r in chunks(present.len(), batch) {
        let idx = &present[r];
        let mut samples = Vec::with_capacity(seeds.len());
        for (_, dir) in seeds {
            let images = idx
                .iter()
                .map(|&i| load(png(&dir.join(&relative[i]), "cf")))
                .collect::<Result<Vec<DynamicImage>>>()?;
            let resize = lpips_resize(&images);
            samples.push(images_to_tensor::<B>(
                &images,
                ColorMode::Rgb,
                resize,
                device,
            )?);
        }
        for (&i, d) in idx.iter().zip(diversity(net, &samples)?) {
            out[i] = Some(d);
        }
    }
    Ok(out)
}

fn scope_metrics(
    items: &[(PathBuf, ItemResult)],
    idx: &[usize],
    flipped: &[bool],
    per: &PerItem,
    options: &EvaluateOptions,
    direction: Option<&str>,
    notes: &mut Vec<Note>,
) -> Metrics {
    let inputs = idx.len();
    let n_flipped = idx.iter().filter(|&&i| flipped[i]).count();
    let of = |f: fn(&ItemResult) -> f64| mean(idx.iter().map(|&i| f(&items[i].1))).unwrap_or(0.0);
    let mut note = |metric: Metric, reason: String| {
        notes.push(Note {
            metric,
            direction: direction.map(str::to_string),
            reason,
        })
    };
    let av = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| averaged(v, idx, flipped));
    let similarity = per.similarity.as_ref().and_then(|v| {
        let values = |keep: &dyn Fn(usize) -> bool| -> Vec<f64> {
            idx.iter().filter(|&&i| keep(i)).map(|&i| v[i]).collect()
        };
        Some(Similarity {
            all: summarize(&values(&|_| true), SIMILARITY_THRESHOLD).ok()?,
            flipped: summarize(&values(&|i| flipped[i]), SIMILARITY_THRESHOLD).ok(),
        })
    });
    let (mut fid_value, mut sfid_value) = (None, None);
    if let Some((fa, fb, d)) = &per.features {
        let rows = |f: &[f32], keep: &dyn Fn(usize) -> bool| -> Result<Features> {
            let chosen: Vec<usize> = idx.iter().copied().filter(|&i| keep(i)).collect();
            let values: Vec<f32> = chosen
                .iter()
                .flat_map(|&i| f[i * d..(i + 1) * d].iter().copied())
                .collect();
            Features::new(&values, chosen.len(), *d)
        };
        let real = rows(fa, &|_| true);
        let real_flipped = rows(fa, &|i| flipped[i]);
        let cf_flipped = rows(fb, &|i| flipped[i]);
        match (&real, &cf_flipped) {
            (Ok(real), Ok(cf)) => match fid(real, cf) {
                Ok(v) => fid_value = Some(v),
                Err(e) => note(Metric::Fid, e.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => note(Metric::Fid, e.to_string()),
        }
        match (&real_flipped, &cf_flipped) {
            (Ok(real), Ok(cf)) => match split_fid(real, cf, options.sfid_repeats, options.seed) {
                Ok(v) => sfid_value = Some(v),
                Err(e) => note(Metric::Sfid, e.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => note(Metric::Sfid, e.to_string()),
        }
    }
    let diversity = per.diversity.as_ref().and_then(|(v, seeds)| {
        let present: Vec<f64> = idx.iter().filter_map(|&i| v[i]).collect();
        Some(Diversity {
            mean: mean(present.iter().copied())?,
            inputs: present.len(),
            seeds: *seeds,
        })
    });
    if per.diversity.is_some() && diversity.is_none() {
        note(
            Metric::Diversity,
            "no input is present in every seed folder".into(),
        );
    }
    Metrics {
        inputs,
        flipped: n_flipped,
        success_ratio: n_flipped as f64 / inputs.max(1) as f64,
        lpips: av(&per.lpips),
        fid: fid_value,
        sfid: sfid_value,
        cout: av(&per.cout),
        mnac: av(&per.mnac),
        similarity,
        diversity,
        changed_fraction: of(|r| r.changed_fraction),
        mean_abs_change: of(|r| r.mean_abs_change),
        denoiser_calls: of(|r| r.denoiser_calls as f64),
        classifier_calls: of(|r| r.classifier_calls as f64),
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn rows(m: &Metrics) -> Vec<(String, String)> {
    let sim = |f: fn(&Similarity) -> Option<f64>| m.similarity.as_ref().and_then(f);
    vec![
        ("inputs".into(), m.inputs.to_string()),
        ("flipped".into(), m.flipped.to_string()),
        ("success ratio".into(), format!("{:.4}", m.success_ratio)),
        (
            "LPIPS, flipped (papers)".into(),
            cell(m.lpips.and_then(|a| a.flipped)),
        ),
        ("LPIPS, all".into(), cell(m.lpips.map(|a| a.all))),
        ("FID".into(), cell(m.fid)),
        ("sFID".into(), cell(m.sfid)),
        ("COUT, all".into(), cell(m.cout.map(|a| a.all))),
        ("COUT, flipped".into(), cell(m.cout.and_then(|a| a.flipped))),
        (
            "MNAC, flipped (papers)".into(),
            cell(m.mnac.and_then(|a| a.flipped)),
        ),
        ("MNAC, all".into(), cell(m.mnac.map(|a| a.all))),
        (
            "similarity, flipped".into(),
            cell(sim(|s| s.flipped.map(|f| f.mean))),
        ),
        (
            format!("  share > {SIMILARITY_THRESHOLD}, flipped"),
            cell(sim(|s| s.flipped.map(|f| f.share_above))),
        ),
        ("similarity, all".into(), cell(sim(|s| Some(s.all.mean)))),
        (
            "diversity (LPIPS VGG)".into(),
            cell(m.diversity.map(|d| d.mean)),
        ),
        (
            "changed fraction".into(),
            format!("{:.4}", m.changed_fraction),
        ),
        (
            "mean abs change".into(),
            format!("{:.4}", m.mean_abs_change),
        ),
        (
            "denoiser calls / input".into(),
            format!("{:.1}", m.denoiser_calls),
        ),
    ]
}

impl fmt::Display for RunEvaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = if self.method.is_empty() {
            "evaluation"
        } else {
            &self.method
        };
        writeln!(f, "{title}: {}", self.scored_folder.display())?;
        if !self.seeds.is_empty() {
            writeln!(
                f,
                "seeds {:?}: diversity compares them all; every other metric is of the first \
                 seed's folder",
                self.seeds
            )?;
        }
        for (what, label) in [
            ("FID / sFID encoder", &self.fid_encoder),
            ("similarity encoder", &self.similarity_encoder),
        ] {
            if let Some(l) = label {
                let caveat = if l.inception {
                    "InceptionV3: compares with the papers"
                } else {
                    "not InceptionV3: does not compare with the papers' numbers"
                };
                writeln!(f, "{what}: {} ({caveat})", l.name)?;
            }
        }
        if !self.mnac_attributes.is_empty() {
            let excluded = match self.mnac_excluded {
                Some(j) => format!(
                    ", without {} (not the papers' count)",
                    self.mnac_attributes.get(j).map_or("?", String::as_str)
                ),
                None => ", every attribute counted (as the papers)".into(),
            };
            writeln!(
                f,
                "MNAC attributes: {}{excluded}",
                self.mnac_attributes.join(", ")
            )?;
        }
        let mut columns = vec![("all".to_string(), rows(&self.overall))];
        for d in &self.directions {
            columns.push((d.label(), rows(&d.metrics)));
        }
        let labels: Vec<&String> = columns[0].1.iter().map(|(k, _)| k).collect();
        let first = labels.iter().map(|k| k.len()).max().unwrap_or(0);
        let widths: Vec<usize> = columns
            .iter()
            .map(|(h, r)| {
                r.iter()
                    .map(|(_, v)| v.len())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        write!(f, "{:first$}", "")?;
        for ((h, _), w) in columns.iter().zip(&widths) {
            write!(f, "  {h:>w$}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:-<1$}",
            "",
            first + widths.iter().map(|w| w + 2).sum::<usize>()
        )?;
        for (row, label) in labels.iter().enumerate() {
            write!(f, "{label:first$}")?;
            for ((_, r), w) in columns.iter().zip(&widths) {
                write!(f, "  {:>w$}", r[row].1)?;
            }
            writeln!(f)?;
        }
        if !self.notes.is_empty() {
            writeln!(f, "not computed (-):")?;
            for n in &self.notes {
                let scope = n
                    .direction
                    .as_ref()
                    .map_or(String::new(), |d| format!(" ({d})"));
                writeln!(f, "  {}{scope}: {}", n.metric.name(), n.reason)?;
            }
        }
        Ok(())
    }
}
