//! torchvision's image classifiers as the classifier under explanation: a state dict of
//! `resnet18` / `resnet34`, `densenet121` / `161` / `169` / `201`, `efficientnet_b0` / `b1` or
//! `mobilenet_v2` (ImageNet weights or fine-tuned, any head width), ImageNet normalisation
//! inside, and the logits that stand for the explained class pair ([`Logits`]).
//!
//! # What is read from the file
//!
//! The architecture's name fixes its depth (blocks per stage, dense layers per block, the
//! EfficientNet depth multiplier); the widths and the head's width are read from the file's
//! shapes, so a fine-tuned head (`model.fc = nn.Linear(512, 2)`) or a width-scaled network loads
//! without a configuration:
//!
//! - ResNet: `conv1.weight` `[width, 3, 7, 7]` and `fc.weight` `[K, 8 * width]`;
//! - DenseNet: `features.conv0.weight` (initial features), the first dense layer's `conv1` /
//!   `conv2` (bottleneck width and growth rate; either spelling of the dense layers) and
//!   `classifier.weight` `[K, C]`;
//! - EfficientNet and MobileNet-V2: the width multiplier is the input channels of the head
//!   convolution (`features.8.0.weight`, `features.18.0.weight`) over 320, the last stage's
//!   published width (every multiple of 0.025, which includes each torchvision configuration,
//!   is recovered exactly), and `classifier.1.weight` `[K, C]`.
//!
//! Where a tensor is absent the published value is assumed, so a file of another architecture
//! fails with the loader's list of missing and unexpected tensors.
//!
//! # Layouts
//!
//! The state dict's names as torchvision writes them, at the file's root or under one prefix:
//! `module.` (`DataParallel`), a wrapping key of a training checkpoint (`state_dict.`, `model.`,
//! ...; nested dictionaries read flattened with `.`), found by the unique name ending in the
//! head's weight (`fc.weight`, `classifier.weight`, `classifier.1.weight`). Tensors outside that
//! prefix (an optimizer's state) are ignored; BatchNorm's `num_batches_tracked` too. Files:
//! safetensors, or PyTorch (`.pt`, `.pth`, `.bin`, `.ckpt`).
//!
//! # Input
//!
//! Images in `[-1, 1]` (foil's convention) are mapped to `[0, 1]` and normalised with ImageNet's
//! mean and standard deviation, `((x + 1) / 2 - mean) / std`, as torchvision's weights expect.
//! Bottleneck ResNets (ResNet-50, 101, 152) are not built here.

use std::path::Path;
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, Error, Result};

use crate::cnn::Normalization;
use crate::densenet::{DenseNet, DenseNetConfig};
use crate::efficientnet::{EfficientNet, EfficientNetConfig};
use crate::mobilenet::{MobileNetV2, MobileNetV2Config};
use crate::resnet::{ResNet, ResNetConfig};
use crate::weights::{TensorFile, Weights};

/// A torchvision classification architecture foil builds, by torchvision's function name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TorchvisionArch {
    /// `resnet18`: BasicBlocks `[2, 2, 2, 2]`.
    Resnet18,
    /// `resnet34`: BasicBlocks `[3, 4, 6, 3]`.
    Resnet34,
    /// `densenet121`: dense blocks `[6, 12, 24, 16]`.
    Densenet121,
    /// `densenet161`: dense blocks `[6, 12, 36, 24]`.
    Densenet161,
    /// `densenet169`: dense blocks `[6, 12, 32, 32]`.
    Densenet169,
    /// `densenet201`: dense blocks `[6, 12, 48, 32]`.
    Densenet201,
    /// `efficientnet_b0`: depth multiplier 1.0.
    EfficientnetB0,
    /// `efficientnet_b1`: depth multiplier 1.1.
    EfficientnetB1,
    /// `mobilenet_v2`.
    MobilenetV2,
}

impl TorchvisionArch {
    /// Every architecture, in the order of [`TorchvisionArch::NAMES`].
    pub const ALL: [Self; 9] = [
        Self::Resnet18,
        Self::Resnet34,
        Self::Densenet121,
        Self::Densenet161,
        Self::Densenet169,
        Self::Densenet201,
        Self::EfficientnetB0,
        Self::EfficientnetB1,
        Self::MobilenetV2,
    ];

    /// Their names (torchvision's functions; `-` for `_` is accepted too).
    pub const NAMES: [&'static str; 9] = [
        "resnet18",
        "resnet34",
        "densenet121",
        "densenet161",
        "densenet169",
        "densenet201",
        "efficientnet_b0",
        "efficientnet_b1",
        "mobilenet_v2",
    ];

    /// torchvision's function name (`resnet18`, `efficientnet_b0`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Resnet18 => "resnet18",
            Self::Resnet34 => "resnet34",
            Self::Densenet121 => "densenet121",
            Self::Densenet161 => "densenet161",
            Self::Densenet169 => "densenet169",
            Self::Densenet201 => "densenet201",
            Self::EfficientnetB0 => "efficientnet_b0",
            Self::EfficientnetB1 => "efficientnet_b1",
            Self::MobilenetV2 => "mobilenet_v2",
        }
    }

    /// The head's module name in torchvision's state dict (`fc`, `classifier`, `classifier.1`).
    pub fn head(self) -> &'static str {
        match self {
            Self::Resnet18 | Self::Resnet34 => "fc",
            Self::Densenet121 | Self::Densenet161 | Self::Densenet169 | Self::Densenet201 => {
                "classifier"
            }
            Self::EfficientnetB0 | Self::EfficientnetB1 | Self::MobilenetV2 => "classifier.1",
        }
    }

    /// The network's configuration for the state dict of `file` under `root` (see the
    /// [module docs](self)): this architecture's depth, the widths and head width of the file,
    /// ImageNet normalisation.
    fn config(self, file: &TensorFile, root: &str) -> Result<NetConfig> {
        let shape = |name: &str| file.shape(&join(root, name)).map(<[usize]>::to_vec);
        let dim = |name: &str, axis: usize| shape(name).and_then(|s| s.get(axis).copied());
        let head = format!("{}.weight", self.head());
        let imagenet = Normalization::imagenet();
        Ok(match self {
            Self::Resnet18 | Self::Resnet34 => {
                if shape("layer1.0.conv3.weight").is_some() {
                    return Err(Error::format(
                        file.what().to_owned(),
                        format!(
                            "a Bottleneck ResNet (it has {}): ResNet-50, 101, 152 or a wide \
                             ResNet, which foil does not build; foil builds the BasicBlock \
                             ResNets, resnet18 and resnet34",
                            join(root, "layer1.0.conv3.weight")
                        ),
                    ));
                }
                let published = if self == Self::Resnet18 {
                    ResNetConfig::resnet18()
                } else {
                    ResNetConfig::resnet34()
                };
                NetConfig::ResNet(ResNetConfig {
                    width: dim("conv1.weight", 0).unwrap_or(published.width),
                    num_outputs: dim(&head, 0).unwrap_or(published.num_outputs),
                    small_input: false,
                    normalization: imagenet,
                    ..published
                })
            }
            Self::Densenet121 | Self::Densenet161 | Self::Densenet169 | Self::Densenet201 => {
                let published = match self {
                    Self::Densenet161 => DenseNetConfig::densenet161(),
                    Self::Densenet169 => DenseNetConfig::densenet169(),
                    Self::Densenet201 => DenseNetConfig::densenet201(),
                    _ => DenseNetConfig::densenet121(),
                };
                let layer = "features.denseblock1.denselayer1";
                let either = |a: &str, b: &str| {
                    dim(&format!("{layer}.{a}.weight"), 0)
                        .or_else(|| dim(&format!("{layer}.{b}.weight"), 0))
                };
                let init = dim("features.conv0.weight", 0).unwrap_or(published.init_features);
                let growth = either("conv2", "conv.2").unwrap_or(published.growth_rate);
                let bottleneck =
                    either("conv1", "conv.1").unwrap_or(published.bn_size * published.growth_rate);
                if growth == 0 || bottleneck % growth != 0 {
                    return Err(Error::format(
                        file.what().to_owned(),
                        format!(
                            "{}: the bottleneck width {bottleneck} (conv1's outputs) is not a \
                             multiple of the growth rate {growth} (conv2's outputs), as \
                             torchvision's DenseNet makes it (bn_size * growth_rate)",
                            join(root, layer)
                        ),
                    ));
                }
                let outputs = dim(&head, 0).unwrap_or(published.num_outputs);
                NetConfig::DenseNet(
                    published
                        .with_widths(growth, init, bottleneck / growth)
                        .with_outputs(outputs)
                        .with_normalization(imagenet),
                )
            }
            Self::EfficientnetB0 | Self::EfficientnetB1 => {
                let published = if self == Self::EfficientnetB0 {
                    EfficientNetConfig::b0()
                } else {
                    EfficientNetConfig::b1()
                };
                NetConfig::EfficientNet(EfficientNetConfig {
                    width_mult: width_mult(dim("features.8.0.weight", 1), published.width_mult),
                    num_outputs: dim(&head, 0).unwrap_or(published.num_outputs),
                    normalization: imagenet,
                    ..published
                })
            }
            Self::MobilenetV2 => {
                let published = MobileNetV2Config::default();
                NetConfig::MobileNetV2(MobileNetV2Config {
                    width_mult: width_mult(dim("features.18.0.weight", 1), published.width_mult),
                    num_outputs: dim(&head, 0).unwrap_or(published.num_outputs),
                    normalization: imagenet,
                })
            }
        })
    }
}

impl std::fmt::Display for TorchvisionArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TorchvisionArch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let key = s.replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|a| a.name() == key)
            .ok_or_else(|| {
                Error::out_of_range(
                    "torchvision architecture",
                    format!("one of {}", Self::NAMES.join(", ")),
                    format!("{s:?}"),
                )
            })
    }
}

/// The width multiplier whose last stage has `last` channels (320 at 1.0), or `published`.
fn width_mult(last: Option<usize>, published: f64) -> f64 {
    match last {
        Some(c) if c > 0 => c as f64 / 320.0,
        _ => published,
    }
}

/// `root.name`, or `name` at the root.
fn join(root: &str, name: &str) -> String {
    if root.is_empty() {
        name.to_owned()
    } else {
        format!("{root}.{name}")
    }
}

/// Which of a classifier's logits stand for the explained class pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// A one-logit head (a binary classifier, DiME's convention): label 1 when the logit is
    /// above 0 (sigmoid above 0.5), label 0 otherwise.
    One,
    /// A multi-class head: logit `i` stands for label 0 (the pair's first class), logit `j`
    /// for label 1. The classifier reports `[l_i, l_j]` and its label is their arg-max.
    Pair([usize; 2]),
}

impl Logits {
    /// How many logits the classifier reports: 1 or 2.
    pub fn num_logits(self) -> usize {
        match self {
            Logits::One => 1,
            Logits::Pair(_) => 2,
        }
    }

    /// Checks this choice against a head of `width` logits in `file`: [`Logits::One`] needs a
    /// one-logit head, [`Logits::Pair`] two different indices below `width`.
    pub fn check(self, width: usize, file: &str) -> Result<()> {
        match self {
            Logits::One if width == 1 => Ok(()),
            Logits::One => Err(Error::format(
                file.to_owned(),
                format!(
                    "the classifier's head has {width} logits, not one: name the two that \
                     stand for the class pair (Logits::Pair, --logits I,J on the command line, \
                     indices 0 to {})",
                    width.saturating_sub(1)
                ),
            )),
            Logits::Pair([i, j]) if i == j => Err(Error::out_of_range(
                "the class pair's logits",
                "two different indices",
                format!("{i},{j}"),
            )),
            Logits::Pair(pair) => match pair.into_iter().find(|&k| k >= width) {
                None => Ok(()),
                Some(k) => {
                    let hint = if width == 1 {
                        "; a one-logit head is used without indices (Logits::One: label 1 when \
                         the logit is above 0)"
                    } else {
                        ""
                    };
                    Err(Error::out_of_range(
                        format!("logit index for {file}"),
                        format!(
                            "below the width of its head, {width} logit{} (0 to {}){hint}",
                            if width == 1 { "" } else { "s" },
                            width.saturating_sub(1)
                        ),
                        k,
                    ))
                }
            },
        }
    }
}

impl FromStr for Logits {
    type Err = Error;
    /// `I,J` (a [`Logits::Pair`]) or `one` ([`Logits::One`]).
    fn from_str(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("one") {
            return Ok(Logits::One);
        }
        let bad = || {
            Error::out_of_range(
                "the class pair's logits",
                "two indices I,J (the logits of labels 0 and 1) or `one`",
                format!("{s:?}"),
            )
        };
        let (i, j) = s.split_once(',').ok_or_else(bad)?;
        let i = i.trim().parse::<usize>().map_err(|_| bad())?;
        let j = j.trim().parse::<usize>().map_err(|_| bad())?;
        if i == j {
            return Err(bad());
        }
        Ok(Logits::Pair([i, j]))
    }
}

/// A network's configuration, read from a file.
#[derive(Debug, Clone)]
enum NetConfig {
    ResNet(ResNetConfig),
    DenseNet(DenseNetConfig),
    EfficientNet(EfficientNetConfig),
    MobileNetV2(MobileNetV2Config),
}

/// A loaded torchvision network.
#[derive(Debug)]
pub enum TorchvisionNet<B: Backend> {
    /// ResNet-18 / 34.
    ResNet(ResNet<B>),
    /// DenseNet-121 / 161 / 169 / 201.
    DenseNet(DenseNet<B>),
    /// EfficientNet-B0 / B1.
    EfficientNet(EfficientNet<B>),
    /// MobileNet-V2.
    MobileNetV2(MobileNetV2<B>),
}

impl<B: Backend> TorchvisionNet<B> {
    /// The network as a classifier of images in `[-1, 1]` (every head logit, ImageNet
    /// normalisation inside).
    pub fn as_classifier(&self) -> &dyn Classifier<B> {
        match self {
            Self::ResNet(net) => net,
            Self::DenseNet(net) => net,
            Self::EfficientNet(net) => net,
            Self::MobileNetV2(net) => net,
        }
    }
}

/// A torchvision classifier under explanation: the network (ImageNet normalisation inside) and
/// the [`Logits`] of the class pair. As a [`foil_core::Classifier`] of images in `[-1, 1]` it
/// reports one logit ([`Logits::One`]) or the pair's two ([`Logits::Pair`]).
#[derive(Debug)]
pub struct TorchvisionClassifier<B: Backend> {
    arch: TorchvisionArch,
    net: TorchvisionNet<B>,
    logits: Logits,
    min_input_size: usize,
}

impl<B: Backend> TorchvisionClassifier<B> {
    /// Loads `arch` from the state-dict file at `path` (safetensors or PyTorch; see the
    /// [module docs](self) for the layouts) explaining `logits`.
    pub fn load_file(
        arch: TorchvisionArch,
        path: impl AsRef<Path>,
        logits: Logits,
        device: &B::Device,
    ) -> Result<Self> {
        let mut file = TensorFile::open_any(path)?;
        Self::load(arch, &mut file, logits, device)
    }

    /// Loads `arch` from `file`, checked at once: one error lists every missing, wrongly shaped
    /// and unexpected tensor; `logits` must fit the head read from the file
    /// ([`Logits::check`]).
    pub fn load(
        arch: TorchvisionArch,
        file: &mut TensorFile,
        logits: Logits,
        device: &B::Device,
    ) -> Result<Self> {
        let what = file.what().to_owned();
        let root = layout_root(file, &format!("{}.weight", arch.head()))?;
        let config = arch.config(file, &root)?;
        if !root.is_empty() {
            let inside = format!("{root}.");
            let outside: Vec<String> = file
                .names()
                .filter(|n| !n.starts_with(&inside))
                .map(str::to_owned)
                .collect();
            file.ignore(outside);
        }
        let net = {
            let w = Weights::from_file_mut(file, device);
            let w = if root.is_empty() { w } else { w.pp(&root) };
            let net = match &config {
                // Frozen: a classifier under explanation is differentiated with respect to its
                // input only, so no weight gradient is computed (and thrown away).
                NetConfig::ResNet(c) => TorchvisionNet::ResNet(c.build(&w)?.no_grad()),
                NetConfig::DenseNet(c) => TorchvisionNet::DenseNet(c.build(&w)?.no_grad()),
                NetConfig::EfficientNet(c) => TorchvisionNet::EfficientNet(c.build(&w)?.no_grad()),
                NetConfig::MobileNetV2(c) => TorchvisionNet::MobileNetV2(c.build(&w)?.no_grad()),
            };
            w.finish().map_err(|e| match e {
                Error::Format { what, detail } => Error::Format {
                    what,
                    detail: format!("not a torchvision {} state dict: {detail}", arch.name()),
                },
                other => other,
            })?;
            net
        };
        let width = net.as_classifier().num_logits();
        logits.check(width, &what)?;
        let min_input_size = match &net {
            TorchvisionNet::DenseNet(net) => net.min_input_size(),
            _ => 1,
        };
        Ok(Self {
            arch,
            net,
            logits,
            min_input_size,
        })
    }

    /// The architecture.
    pub fn arch(&self) -> TorchvisionArch {
        self.arch
    }

    /// The network.
    pub fn net(&self) -> &TorchvisionNet<B> {
        &self.net
    }

    /// The logits that stand for the class pair.
    pub fn pair(&self) -> Logits {
        self.logits
    }

    /// The head's width (the file's number of classes).
    pub fn num_outputs(&self) -> usize {
        self.net.as_classifier().num_logits()
    }

    /// The smallest input height and width accepted (DenseNet: see
    /// [`DenseNet::min_input_size`]; the others: 1).
    pub fn min_input_size(&self) -> usize {
        self.min_input_size
    }

    /// Every logit of the head `[N, num_outputs]` for images `[N, 3, H, W]` in `[-1, 1]`
    /// (ImageNet normalisation inside).
    pub fn all_logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        self.net.as_classifier().logits(images)
    }
}

impl<B: Backend> Classifier<B> for TorchvisionClassifier<B> {
    fn num_logits(&self) -> usize {
        self.logits.num_logits()
    }

    /// The class pair's logits for images `[N, 3, H, W]` in `[-1, 1]`: `[N, 1]` (the head's
    /// one logit) or `[N, 2]` (`[l_i, l_j]`).
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let all = self.all_logits(images)?;
        Ok(match self.logits {
            Logits::One => all,
            Logits::Pair([i, j]) => {
                Tensor::cat(vec![all.clone().narrow(1, i, 1), all.narrow(1, j, 1)], 1)
            }
        })
    }
}

/// The prefix of `file` under which the state dict is: empty when `head` is at the root (or
/// nowhere: the loader then lists what is missing), else the one prefix of the names ending
/// in `.{head}`; two such prefixes are an error naming them.
fn layout_root(file: &TensorFile, head: &str) -> Result<String> {
    if file.contains(head) {
        return Ok(String::new());
    }
    let dotted = format!(".{head}");
    let roots: Vec<&str> = file
        .names()
        .filter_map(|n| n.strip_suffix(dotted.as_str()))
        .collect();
    match roots.as_slice() {
        [] => Ok(String::new()),
        [root] => Ok((*root).to_owned()),
        _ => Err(Error::format(
            file.what().to_owned(),
            format!(
                "{} state dicts in one file (under {}): keep one",
                roots.len(),
                roots.join(", ")
            ),
        )),
    }
}
