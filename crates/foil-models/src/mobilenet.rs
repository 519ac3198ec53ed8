//! torchvision's MobileNet-V2, loading torchvision's state-dict names
//! (`features.0.{0,1}`, `features.{i}.conv.{..}`, `features.18.{0,1}`, `classifier.1`).
//!
//! BatchNorm follows [`foil_core::mode`] (running statistics unless training); dropout is
//! always the identity.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, Error, Result};

use crate::cnn::{
    ConvBn, Normalization, check_images, conv_bn, conv_config, conv_norm, global_avg_pool,
    make_divisible, relu6,
};
use crate::weights::{TensorFile, Weights};

/// torchvision's inverted-residual setting: expansion `t`, channels `c`, repeats `n`, stride `s`.
const SETTING: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Configuration of MobileNet-V2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileNetV2Config {
    /// Width multiplier (torchvision `width_mult`, 1.0 published); channels are rounded to
    /// multiples of 8 as torchvision does; the last conv keeps 1280 channels for `width_mult <= 1`.
    pub width_mult: f64,
    /// Number of logits (ImageNet: 1000; a one-logit binary classifier: 1).
    pub num_outputs: usize,
    /// Mapping from foil's `[-1, 1]` images to the network's input (ImageNet for torchvision's
    /// weights).
    pub normalization: Normalization,
}

impl Default for MobileNetV2Config {
    /// torchvision's `mobilenet_v2()`: width 1.0, 1000 outputs, ImageNet normalisation
    /// (3,504,872 parameters).
    fn default() -> Self {
        Self {
            width_mult: 1.0,
            num_outputs: 1000,
            normalization: Normalization::imagenet(),
        }
    }
}

impl MobileNetV2Config {
    /// A tiny MobileNet-V2 for tests: `width_mult` 0.1, 3 outputs.
    pub fn tiny() -> Self {
        Self {
            width_mult: 0.1,
            num_outputs: 3,
            ..Self::default()
        }
    }

    /// Sets the number of logits.
    pub fn with_outputs(self, num_outputs: usize) -> Self {
        Self {
            num_outputs,
            ..self
        }
    }

    /// Sets the input normalisation.
    pub fn with_normalization(self, normalization: Normalization) -> Self {
        Self {
            normalization,
            ..self
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.width_mult.is_finite() && self.width_mult > 0.0) {
            return Err(Error::out_of_range(
                "MobileNet-V2 width_mult",
                "finite and > 0",
                self.width_mult,
            ));
        }
        if self.num_outputs == 0 {
            return Err(Error::out_of_range(
                "MobileNet-V2 num_outputs",
                ">= 1",
                self.num_outputs,
            ));
        }
        self.normalization.validate()
    }

    /// The network with random weights (BatchNorm at identity statistics).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MobileNetV2<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with weights from `file`, by torchvision's names; call
    /// [`TensorFile::finish`] afterwards for one error listing every missing, wrongly shaped and
    /// unexpected tensor.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<MobileNetV2<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// [`MobileNetV2Config::load`] from a safetensors or PyTorch (`.pt`, `.pth`, `.bin`) file, checking that every tensor was used.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        device: &B::Device,
    ) -> Result<MobileNetV2<B>> {
        let w = Weights::from_file(TensorFile::open_any(path)?, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// The network with its parameters from `w`, by torchvision's names under `w`'s prefix.
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<MobileNetV2<B>> {
        self.validate()?;
        let wm = self.width_mult;
        let mut input = make_divisible(32.0 * wm);
        let last = make_divisible(1280.0 * wm.max(1.0));
        let features = w.pp("features");
        let stem = conv_norm(&features.pp(0), &conv_config(3, input, 3, 2));
        let mut blocks = Vec::new();
        let mut idx = 1;
        for &(t, c, n, s) in &SETTING {
            let output = make_divisible(c as f64 * wm);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let p = features.pp(idx).pp("conv");
                let hidden = input * t;
                let (expand, next) = if t != 1 {
                    (
                        Some(conv_norm(&p.pp(0), &conv_config(input, hidden, 1, 1))),
                        1,
                    )
                } else {
                    (None, 0)
                };
                let depthwise = conv_norm(
                    &p.pp(next),
                    &conv_config(hidden, hidden, 3, stride).with_groups(hidden),
                );
                let project = conv_bn(
                    &p,
                    &(next + 1).to_string(),
                    &(next + 2).to_string(),
                    &conv_config(hidden, output, 1, 1),
                );
                blocks.push(InvertedResidual {
                    expand,
                    depthwise,
                    project,
                    residual: stride == 1 && input == output,
                });
                input = output;
                idx += 1;
            }
        }
        let head = conv_norm(&features.pp(idx), &conv_config(input, last, 1, 1));
        let classifier = w.linear("classifier.1", last, self.num_outputs, true);
        Ok(MobileNetV2 {
            stem,
            blocks,
            head,
            classifier,
            normalization: self.normalization,
        })
    }
}

/// torchvision's `InvertedResidual`: 1x1 expansion (ReLU6, absent for `t = 1`), 3x3 depthwise
/// (ReLU6), linear 1x1 projection, residual when stride 1 and widths match.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    expand: Option<ConvBn<B>>,
    depthwise: ConvBn<B>,
    project: ConvBn<B>,
    residual: bool,
}

impl<B: Backend> InvertedResidual<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x.clone();
        if let Some(expand) = &self.expand {
            h = relu6(expand.forward(h));
        }
        let h = self.project.forward(relu6(self.depthwise.forward(h)));
        if self.residual { x + h } else { h }
    }
}

/// MobileNet-V2 classifier, see [`MobileNetV2Config`].
#[derive(Module, Debug)]
pub struct MobileNetV2<B: Backend> {
    stem: ConvBn<B>,
    blocks: Vec<InvertedResidual<B>>,
    head: ConvBn<B>,
    classifier: Linear<B>,
    #[module(skip)]
    normalization: Normalization,
}

impl<B: Backend> MobileNetV2<B> {
    /// Logits `[N, K]` for already normalised inputs `[N, 3, H, W]` (torchvision's `forward`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut h = relu6(self.stem.forward(x));
        for block in &self.blocks {
            h = block.forward(h);
        }
        let h = relu6(self.head.forward(h));
        self.classifier.forward(global_avg_pool(h))
    }

    /// The input normalisation applied by [`Classifier::logits`].
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }
}

impl<B: Backend> Classifier<B> for MobileNetV2<B> {
    fn num_logits(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Normalises images in `[-1, 1]` (see [`MobileNetV2Config::normalization`]) and runs the
    /// net.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        check_images("MobileNet-V2 input", images.dims(), 1)?;
        Ok(self.forward(self.normalization.apply(images)))
    }
}
