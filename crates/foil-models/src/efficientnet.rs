//! torchvision's EfficientNet (B0 and its width / depth scalings), loading torchvision's
//! state-dict names (`features.0.{0,1}`, `features.{s}.{j}.block.{k}` with
//! SqueezeExcitation `fc1` / `fc2`, `features.8.{0,1}`, `classifier.1`).
//!
//! BatchNorm follows [`foil_core::mode`] (running statistics unless training); stochastic depth
//! and dropout are always the identity.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, Error, Result};

use crate::cnn::{
    ConvBn, Normalization, check_images, conv_config, conv_norm, global_avg_pool, make_divisible,
};
use crate::weights::{TensorFile, Weights};

/// torchvision's B0 stages: expansion, kernel, stride, input and output channels, layers.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// Configuration of an EfficientNet (B-series, MBConv blocks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EfficientNetConfig {
    /// Channel multiplier (B0: 1.0; torchvision rounds channels to multiples of 8).
    pub width_mult: f64,
    /// Layer-count multiplier (B0: 1.0; layers per stage are `ceil(n * depth_mult)`).
    pub depth_mult: f64,
    /// Number of logits (ImageNet: 1000; a one-logit binary classifier: 1).
    pub num_outputs: usize,
    /// Mapping from foil's `[-1, 1]` images to the network's input (ImageNet for torchvision's
    /// weights).
    pub normalization: Normalization,
}

impl Default for EfficientNetConfig {
    /// torchvision's `efficientnet_b0()` (5,288,548 parameters).
    fn default() -> Self {
        Self::b0()
    }
}

impl EfficientNetConfig {
    /// torchvision's `efficientnet_b0()`: width 1.0, depth 1.0, 1000 outputs, ImageNet
    /// normalisation.
    pub fn b0() -> Self {
        Self {
            width_mult: 1.0,
            depth_mult: 1.0,
            num_outputs: 1000,
            normalization: Normalization::imagenet(),
        }
    }

    /// torchvision's `efficientnet_b1()` structure (width 1.0, depth 1.1; its published
    /// weights expect 240 px inputs).
    pub fn b1() -> Self {
        Self {
            depth_mult: 1.1,
            ..Self::b0()
        }
    }

    /// A tiny EfficientNet for tests: width 0.1, depth 0.5, 3 outputs.
    pub fn tiny() -> Self {
        Self {
            width_mult: 0.1,
            depth_mult: 0.5,
            num_outputs: 3,
            ..Self::b0()
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
        for (what, v) in [
            ("EfficientNet width_mult", self.width_mult),
            ("EfficientNet depth_mult", self.depth_mult),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::out_of_range(what, "finite and > 0", v));
            }
        }
        if self.num_outputs == 0 {
            return Err(Error::out_of_range(
                "EfficientNet num_outputs",
                ">= 1",
                self.num_outputs,
            ));
        }
        self.normalization.validate()
    }

    /// The network with random weights (BatchNorm at identity statistics).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<EfficientNet<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with weights from `file`, by torchvision's names; call
    /// [`TensorFile::finish`] afterwards for one error listing every missing, wrongly shaped and
    /// unexpected tensor.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<EfficientNet<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// [`EfficientNetConfig::load`] from a safetensors or PyTorch (`.pt`, `.pth`, `.bin`) file, checking that every tensor was used.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        device: &B::Device,
    ) -> Result<EfficientNet<B>> {
        let w = Weights::from_file(TensorFile::open_any(path)?, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// The network with its parameters from `w`, by torchvision's names under `w`'s prefix.
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<EfficientNet<B>> {
        self.validate()?;
        let ch = |c: usize| make_divisible(c as f64 * self.width_mult);
        let features = w.pp("features");
        let stem_width = ch(STAGES[0].3);
        let stem = conv_norm(&features.pp(0), &conv_config(3, stem_width, 3, 2));
        let mut blocks = Vec::new();
        let mut last = stem_width;
        for (s, &(t, k, stride, cin, cout, n)) in STAGES.iter().enumerate() {
            let layers = (n as f64 * self.depth_mult).ceil() as usize;
            let (cin, cout) = (ch(cin), ch(cout));
            for j in 0..layers {
                let (input, stride) = if j == 0 { (cin, stride) } else { (cout, 1) };
                let p = features.pp(s + 1).pp(j).pp("block");
                let expanded = make_divisible((input * t) as f64);
                let mut idx = 0;
                let expand = (expanded != input).then(|| {
                    idx += 1;
                    conv_norm(&p.pp(0), &conv_config(input, expanded, 1, 1))
                });
                let depthwise = conv_norm(
                    &p.pp(idx),
                    &conv_config(expanded, expanded, k, stride).with_groups(expanded),
                );
                let squeeze = (input / 4).max(1);
                let q = p.pp(idx + 1);
                let se = SqueezeExcitation {
                    fc1: q.conv2d("fc1", &conv_config(expanded, squeeze, 1, 1).with_bias(true)),
                    fc2: q.conv2d("fc2", &conv_config(squeeze, expanded, 1, 1).with_bias(true)),
                };
                let project = conv_norm(&p.pp(idx + 2), &conv_config(expanded, cout, 1, 1));
                blocks.push(MbConv {
                    expand,
                    depthwise,
                    se,
                    project,
                    residual: stride == 1 && input == cout,
                });
            }
            last = cout;
        }
        let head_width = 4 * last;
        let head = conv_norm(
            &features.pp(STAGES.len() + 1),
            &conv_config(last, head_width, 1, 1),
        );
        let classifier = w.linear("classifier.1", head_width, self.num_outputs, true);
        Ok(EfficientNet {
            stem,
            blocks,
            head,
            classifier,
            normalization: self.normalization,
        })
    }
}

/// torchvision's `SqueezeExcitation` with SiLU: `x * sigmoid(fc2(silu(fc1(mean_hw(x)))))`.
#[derive(Module, Debug)]
pub struct SqueezeExcitation<B: Backend> {
    fc1: Conv2d<B>,
    fc2: Conv2d<B>,
}

impl<B: Backend> SqueezeExcitation<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, _, _] = x.dims();
        let s = global_avg_pool(x.clone()).reshape([n, c, 1, 1]);
        let s = sigmoid(self.fc2.forward(silu(self.fc1.forward(s))));
        x * s
    }
}

/// torchvision's `MBConv`: 1x1 expansion (SiLU, absent when it would not widen), depthwise
/// `k x k` (SiLU), squeeze-excitation, linear 1x1 projection, residual when stride 1 and widths
/// match (stochastic depth is the identity in evaluation).
#[derive(Module, Debug)]
pub struct MbConv<B: Backend> {
    expand: Option<ConvBn<B>>,
    depthwise: ConvBn<B>,
    se: SqueezeExcitation<B>,
    project: ConvBn<B>,
    residual: bool,
}

impl<B: Backend> MbConv<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x.clone();
        if let Some(expand) = &self.expand {
            h = silu(expand.forward(h));
        }
        let h = self.se.forward(silu(self.depthwise.forward(h)));
        let h = self.project.forward(h);
        if self.residual { x + h } else { h }
    }
}

/// EfficientNet classifier, see [`EfficientNetConfig`].
#[derive(Module, Debug)]
pub struct EfficientNet<B: Backend> {
    stem: ConvBn<B>,
    blocks: Vec<MbConv<B>>,
    head: ConvBn<B>,
    classifier: Linear<B>,
    #[module(skip)]
    normalization: Normalization,
}

impl<B: Backend> EfficientNet<B> {
    /// Logits `[N, K]` for already normalised inputs `[N, 3, H, W]` (torchvision's `forward`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut h = silu(self.stem.forward(x));
        for block in &self.blocks {
            h = block.forward(h);
        }
        let h = silu(self.head.forward(h));
        self.classifier.forward(global_avg_pool(h))
    }

    /// The input normalisation applied by [`Classifier::logits`].
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }
}

impl<B: Backend> Classifier<B> for EfficientNet<B> {
    fn num_logits(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Normalises images in `[-1, 1]` (see [`EfficientNetConfig::normalization`]) and runs the
    /// net.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        check_images("EfficientNet input", images.dims(), 1)?;
        Ok(self.forward(self.normalization.apply(images)))
    }
}
