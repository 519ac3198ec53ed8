//! The oracle folder: one or more one-logit torchvision classifiers (ResNet-18, MobileNet-V2,
//! EfficientNet-B0 at a chosen width, `[-1, 1]` input) joined as DIFFusion's mean-of-sigmoids
//! [`Ensemble`], described by an [`OracleSpec`] beside one record per member; and
//! [`OracleSource`] / [`LoadedOracle`], any classifier under explanation: such a folder, DiME's
//! CelebA classifier or a torchvision state dict ([`crate::torchvision`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use foil_core::{Classifier, Error, Result};
use serde::{Deserialize, Serialize};

use crate::cnn::Normalization;
use crate::dime_classifier::{DimeClassifier, DimeClassifierConfig};
use crate::efficientnet::EfficientNetConfig;
use crate::ensemble::Ensemble;
use crate::folder::{Format, ModelSpec, load_record, load_spec};
use crate::mobilenet::MobileNetV2Config;
use crate::resnet::ResNetConfig;
use crate::torchvision::{Logits, TorchvisionArch, TorchvisionClassifier};

/// A classifier architecture (torchvision's, with one logit and `[-1, 1]` input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// ResNet-18 with the small-input stem (3x3 stride-1 `conv1`, no max-pool).
    Resnet18,
    /// MobileNet-V2.
    MobilenetV2,
    /// EfficientNet-B0.
    EfficientnetB0,
}

impl Arch {
    /// The name the command line and file names use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::MobilenetV2 => "mobilenet-v2",
            Arch::EfficientnetB0 => "efficientnet-b0",
        }
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "resnet18" => Ok(Arch::Resnet18),
            "mobilenet-v2" | "mobilenet_v2" => Ok(Arch::MobilenetV2),
            "efficientnet-b0" | "efficientnet_b0" => Ok(Arch::EfficientnetB0),
            _ => Err(Error::out_of_range(
                "classifier architecture",
                "resnet18, mobilenet-v2 or efficientnet-b0",
                format!("{s:?}"),
            )),
        }
    }
}

/// One member of the oracle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Its architecture.
    pub arch: Arch,
    /// Width multiplier against the published network (ResNet: `64 * width` stem channels).
    pub width: f64,
    /// Record file inside the oracle folder, without burn's `.mpk` extension.
    pub file: String,
    /// Accuracy on the held-out set after training (`None` before).
    pub test_accuracy: Option<f64>,
}

impl Member {
    /// An untrained member of `arch` at `width`.
    pub fn new(arch: Arch, width: f64) -> Self {
        // No dot in the name: burn's file recorders set the extension themselves.
        let file = format!("{}-w{}", arch.name(), (width * 1000.0).round() as i64);
        Self {
            arch,
            width,
            file,
            test_accuracy: None,
        }
    }
}

/// What an oracle folder holds (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OracleSpec {
    /// Format version (`foil oracle 1`).
    pub format: Format,
    /// Class names: logit > 0 means `classes[1]`.
    pub classes: [String; 2],
    /// Side of the square RGB input.
    pub image_size: u32,
    /// The members.
    pub members: Vec<Member>,
    /// The ensemble's accuracy on the held-out set after training (`None` before); for one
    /// member, that member's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
}

impl OracleSpec {
    /// An oracle of `members` for `classes` at `image_size`.
    pub fn new(classes: [String; 2], image_size: u32, members: Vec<Member>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::Empty {
                what: "oracle members".into(),
                hint: "name at least one architecture".into(),
            });
        }
        if let Some(m) = members
            .iter()
            .find(|m| !(m.width.is_finite() && m.width > 0.0))
        {
            return Err(Error::out_of_range(
                "member width",
                "finite and > 0",
                m.width,
            ));
        }
        Ok(Self {
            format: Self::expected_format(),
            classes,
            image_size,
            members,
            test_accuracy: None,
        })
    }

    /// Checks that data of classes `names` (by label) has this oracle's classes, in its order.
    pub fn check_classes(&self, names: &[String]) -> Result<()> {
        if self.classes.as_slice() != names {
            return Err(Error::format(
                "oracle classes",
                format!(
                    "the oracle was trained on {:?}, the data has {:?}",
                    self.classes, names
                ),
            ));
        }
        Ok(())
    }

    /// Reads `dir/model.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        load_spec(dir)
    }
}

/// The ResNet-18 of a member of `width` (small-input stem, one logit, no normalisation).
pub fn resnet(width: f64) -> ResNetConfig {
    ResNetConfig {
        width: ((64.0 * width).round() as usize).max(1),
        ..ResNetConfig::resnet18()
    }
    .with_outputs(1)
    .with_small_input(true)
    .with_normalization(Normalization::identity())
}

/// The MobileNet-V2 of a member of `width` (one logit, no normalisation).
pub fn mobilenet(width: f64) -> MobileNetV2Config {
    MobileNetV2Config {
        width_mult: width,
        ..MobileNetV2Config::default()
    }
    .with_outputs(1)
    .with_normalization(Normalization::identity())
}

/// The EfficientNet-B0 of a member of `width` (one logit, no normalisation).
pub fn efficientnet(width: f64) -> EfficientNetConfig {
    EfficientNetConfig {
        width_mult: width,
        ..EfficientNetConfig::b0()
    }
    .with_outputs(1)
    .with_normalization(Normalization::identity())
}

/// Loads the oracle folder `dir` (written by `foil::pipeline::train_oracle`) as an [`Ensemble`] on `B` (an
/// autodiff backend too, for guidance). The weights are frozen (`Module::no_grad`): gradients
/// flow to the input only, and no weight gradient is computed and thrown away.
pub fn load_oracle<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(OracleSpec, Ensemble<B>)> {
    let spec = OracleSpec::load(dir)?;
    let mut members: Vec<Box<dyn Classifier<B>>> = Vec::new();
    const HINT: &str = "train the oracle first: foil train oracle";
    for m in &spec.members {
        let path = dir.join(&m.file);
        let member: Box<dyn Classifier<B>> = match m.arch {
            Arch::Resnet18 => {
                let net = resnet(m.width).init::<B>(device)?;
                Box::new(load_record(net, &path, HINT, device)?.no_grad())
            }
            Arch::MobilenetV2 => {
                let net = mobilenet(m.width).init::<B>(device)?;
                Box::new(load_record(net, &path, HINT, device)?.no_grad())
            }
            Arch::EfficientnetB0 => {
                let net = efficientnet(m.width).init::<B>(device)?;
                Box::new(load_record(net, &path, HINT, device)?.no_grad())
            }
        };
        members.push(member);
    }
    Ok((spec, Ensemble::new(members)?))
}

impl ModelSpec for OracleSpec {
    const WHAT: &'static str = "oracle description";

    fn expected_format() -> Format {
        Format::new("oracle", 1)
    }

    fn format(&self) -> &Format {
        &self.format
    }
}

/// Where an oracle is: a foil oracle folder, DiME's published classifier or a torchvision
/// classifier's state dict.
#[derive(Debug, Clone, PartialEq)]
pub enum OracleSource {
    /// An oracle folder (`foil train oracle`): the data's classes must be the ones it was
    /// trained on, in order.
    Folder(PathBuf),
    /// DiME's CelebA classifier (`classifier.pth`, or a `module.` / flat / safetensors state
    /// dict of the same model), explaining `config.attribute`. It has no class names: label 1
    /// is "the attribute is present" (logit > 0), so the data's second class (label 1) must be
    /// the images with the attribute.
    DimeClassifier {
        /// The weight file.
        file: PathBuf,
        /// The network and the explained attribute ([`DimeClassifierConfig::celeba`]).
        config: DimeClassifierConfig,
    },
    /// A torchvision classifier's state dict (see [`crate::torchvision`]: widths and head read
    /// from the file, ImageNet normalisation inside), explaining the class pair `logits`
    /// stand for. It has no class names: the data's first class (label 0) must be logit
    /// `i`'s, the second `j`'s ([`Logits::Pair`]), or, for a one-logit head, the second the
    /// images whose logit is above 0 ([`Logits::One`]).
    Torchvision {
        /// The architecture.
        arch: TorchvisionArch,
        /// The state-dict file (safetensors or PyTorch).
        file: PathBuf,
        /// The logits of the class pair.
        logits: Logits,
    },
}

impl OracleSource {
    /// DiME's DenseNet-121 CelebA classifier from `file`, explaining `attribute` (31: Smiling).
    pub fn dime_celeba(file: impl Into<PathBuf>, attribute: usize) -> Self {
        Self::DimeClassifier {
            file: file.into(),
            config: DimeClassifierConfig::celeba(attribute),
        }
    }

    /// A torchvision classifier `arch` from the state dict `file`, explaining `logits`.
    pub fn torchvision(arch: TorchvisionArch, file: impl Into<PathBuf>, logits: Logits) -> Self {
        Self::Torchvision {
            arch,
            file: file.into(),
            logits,
        }
    }

    /// Whether this is a published network (not a foil model folder).
    pub fn is_published(&self) -> bool {
        !matches!(self, Self::Folder(_))
    }
}

/// An oracle, loaded: a foil ensemble, DiME's classifier or a torchvision classifier.
pub enum LoadedOracle<B: Backend> {
    /// A foil oracle folder's ensemble, with its spec (classes, image size).
    Folder {
        /// What the folder's `model.json` says.
        spec: OracleSpec,
        /// The networks.
        net: Ensemble<B>,
    },
    /// DiME's CelebA classifier (one logit: the explained attribute's).
    Dime(Box<DimeClassifier<B>>),
    /// A torchvision classifier (one logit, or the class pair's two).
    Torchvision(Box<TorchvisionClassifier<B>>),
}

impl<B: Backend> LoadedOracle<B> {
    /// Loads `source`.
    pub fn load(source: &OracleSource, device: &B::Device) -> Result<Self> {
        match source {
            OracleSource::Folder(dir) => {
                let (spec, net) = load_oracle::<B>(dir, device)?;
                Ok(Self::Folder { spec, net })
            }
            OracleSource::DimeClassifier { file, config } => Ok(Self::Dime(Box::new(
                config.load_file::<B>(file, device)?.no_grad(),
            ))),
            OracleSource::Torchvision { arch, file, logits } => Ok(Self::Torchvision(Box::new(
                TorchvisionClassifier::load_file(*arch, file, *logits, device)?,
            ))),
        }
    }

    /// A folder oracle's spec (`None` for a published classifier).
    pub fn spec(&self) -> Option<&OracleSpec> {
        match self {
            Self::Folder { spec, .. } => Some(spec),
            Self::Dime(_) | Self::Torchvision(_) => None,
        }
    }

    /// The smallest input height and width a published classifier accepts (DenseNets: their
    /// [`crate::densenet::DenseNet::min_input_size`]); `None` for a folder oracle, which takes
    /// its spec's image size.
    pub fn min_input_size(&self) -> Option<usize> {
        match self {
            Self::Folder { .. } => None,
            Self::Dime(net) => Some(net.min_input_size()),
            Self::Torchvision(net) => Some(net.min_input_size()),
        }
    }

    /// Checks that `names` are the classes a folder oracle was trained on, in order; a published
    /// classifier has no class names (label 1: its attribute present, or the second logit of
    /// its pair) and accepts any pair.
    pub fn check_classes(&self, names: &[String]) -> Result<()> {
        match self.spec() {
            Some(spec) => spec.check_classes(names),
            None => Ok(()),
        }
    }
}

impl<B: Backend> Classifier<B> for LoadedOracle<B> {
    fn num_logits(&self) -> usize {
        match self {
            Self::Folder { net, .. } => net.num_logits(),
            Self::Dime(net) => net.num_logits(),
            Self::Torchvision(net) => net.num_logits(),
        }
    }

    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        match self {
            Self::Folder { net, .. } => net.logits(images),
            Self::Dime(net) => net.logits(images),
            Self::Torchvision(net) => net.logits(images),
        }
    }
}
