//! Loading the networks `foil evaluate` scores with, from the files the user names: LPIPS
//! weights, the FID and similarity encoders ([`EncoderChoice`]: LPIPS, CLIP or InceptionV3),
//! the oracle for COUT and the one-attribute oracles joined for MNAC, into a
//! [`foil_metrics::run::Scorers`] bundle. The scoring itself and its typed report
//! ([`evaluate_run`], [`RunEvaluation`]) are [`foil_metrics::run`]'s, re-exported here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::tensor::backend::Backend;
use foil_core::{Classifier, Error, ImageEncoder, Result};
use foil_metrics::lpips::{Lpips, LpipsEncoder, LpipsNet};
use foil_models::clip::{ClipVision, ClipVisionConfig, ignore_text_tower};
use foil_models::inception::{InceptionV3, InceptionV3Config};
use foil_models::weights::TensorFile;

use super::load_oracle;

pub use foil_metrics::run::{
    AttributeOracle, Averaged, DirectionEvaluation, Diversity, Encoder, EncoderLabel,
    EvaluateOptions, Metric, Metrics, Note, RunEvaluation, SIMILARITY_THRESHOLD, Scorers,
    ScoringOracle, Similarity, evaluate_run, seed_folders,
};

/// The LPIPS AlexNet weights' file name, in [`LPIPS_HOME_DIR`] of foil's home folder.
pub const LPIPS_ALEX_FILE: &str = "alexnet.safetensors";
/// The LPIPS VGG16 weights' file name, in [`LPIPS_HOME_DIR`] of foil's home folder.
pub const LPIPS_VGG_FILE: &str = "vgg16.safetensors";
/// The folder of foil's home ([`foil_core::home`]) where `foil weights lpips` installs the
/// LPIPS weights.
pub const LPIPS_HOME_DIR: &str = "lpips";
/// Where older foils installed the LPIPS weights, relative to the current directory (still
/// looked in, after foil's home).
pub const LPIPS_LEGACY_DIR: &str = "assets/lpips";

/// Where `foil weights lpips` installs the LPIPS weights: `lpips/` in foil's home folder
/// (`$FOIL_HOME`, else the platform cache folder's `foil`); `None` without a home folder.
pub fn lpips_install_dir() -> Option<PathBuf> {
    foil_core::home::home_path(LPIPS_HOME_DIR)
}

/// Finds installed LPIPS weights `file` ([`LPIPS_ALEX_FILE`], [`LPIPS_VGG_FILE`]): in
/// [`lpips_install_dir`], else in [`LPIPS_LEGACY_DIR`] of the current directory. `Err` lists
/// the places looked in, in order.
pub fn installed_lpips(file: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    foil_core::home::locate(
        &Path::new(LPIPS_HOME_DIR).join(file),
        &Path::new(LPIPS_LEGACY_DIR).join(file),
    )
}

/// The spellings [`EncoderChoice`] accepts, for error messages and help texts.
pub const ENCODER_CHOICES: &str = "lpips-alex, lpips-vgg, clip:FILE or inception:FILE";

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
            what: format!("{what} weights for {flag} {choice}").into(),
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
