//! torchvision's ResNet with BasicBlocks (ResNet-18, ResNet-34), loading torchvision's
//! state-dict names (`conv1`, `bn1`, `layer{1..4}.{i}.conv1/bn1/conv2/bn2`,
//! `layer{k}.0.downsample.0/1`, `fc`).
//!
//! BatchNorm ([`BatchNorm2d`]) follows [`foil_core::mode`]: running statistics unless
//! training; `num_batches_tracked` is ignored.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, Error, Result};

use crate::cnn::{
    BatchNorm2d, Normalization, batch_norm, check_images, conv_config, global_avg_pool,
    pointwise_strided,
};
use crate::weights::{TensorFile, Weights};

/// Configuration of a BasicBlock ResNet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResNetConfig {
    /// Width of the stem and of `layer1`; `layer2..4` have 2x, 4x, 8x (torchvision: 64).
    pub width: usize,
    /// BasicBlocks per stage (ResNet-18: `[2, 2, 2, 2]`; ResNet-34: `[3, 4, 6, 3]`).
    pub blocks: [usize; 4],
    /// Number of logits (ImageNet: 1000; a one-logit binary classifier: 1).
    pub num_outputs: usize,
    /// foil option, NOT torchvision's default: for 28-64 px images, a 3x3 stride-1 `conv1`
    /// without the max-pool (the CIFAR-style stem). `conv1.weight` is then `[width, 3, 3, 3]`,
    /// so published ImageNet weights do not load into it.
    pub small_input: bool,
    /// Mapping from foil's `[-1, 1]` images to the network's input (ImageNet statistics for
    /// torchvision's weights).
    pub normalization: Normalization,
}

impl Default for ResNetConfig {
    /// torchvision's `resnet18()`: width 64, `[2, 2, 2, 2]`, 1000 outputs, ImageNet stem and
    /// normalisation.
    fn default() -> Self {
        Self::resnet18()
    }
}

impl ResNetConfig {
    /// torchvision's `resnet18()` (11,689,512 parameters).
    pub fn resnet18() -> Self {
        Self {
            width: 64,
            blocks: [2, 2, 2, 2],
            num_outputs: 1000,
            small_input: false,
            normalization: Normalization::imagenet(),
        }
    }

    /// torchvision's `resnet34()` (same BasicBlock, `[3, 4, 6, 3]`).
    pub fn resnet34() -> Self {
        Self {
            blocks: [3, 4, 6, 3],
            ..Self::resnet18()
        }
    }

    /// A tiny ResNet-18 for tests: width 4, 3 outputs, published stem.
    pub fn tiny() -> Self {
        Self {
            width: 4,
            num_outputs: 3,
            ..Self::resnet18()
        }
    }

    /// Sets the number of logits.
    pub fn with_outputs(self, num_outputs: usize) -> Self {
        Self {
            num_outputs,
            ..self
        }
    }

    /// Sets the small-input stem (see [`ResNetConfig::small_input`]).
    pub fn with_small_input(self, small_input: bool) -> Self {
        Self {
            small_input,
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
        if self.width == 0 {
            return Err(Error::out_of_range("ResNet width", ">= 1", self.width));
        }
        if self.num_outputs == 0 {
            return Err(Error::out_of_range(
                "ResNet num_outputs",
                ">= 1",
                self.num_outputs,
            ));
        }
        if self.blocks.contains(&0) {
            return Err(Error::out_of_range(
                "ResNet blocks per stage",
                "all >= 1",
                format!("{:?}", self.blocks),
            ));
        }
        self.normalization.validate()
    }

    /// The network with random weights (BatchNorm at identity statistics).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<ResNet<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with weights from `file`, by torchvision's names; call
    /// [`TensorFile::finish`] afterwards for one error listing every missing, wrongly shaped and
    /// unexpected tensor.
    pub fn load<B: Backend>(&self, file: &mut TensorFile, device: &B::Device) -> Result<ResNet<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// [`ResNetConfig::load`] from a safetensors or PyTorch (`.pt`, `.pth`, `.bin`) file, checking that every tensor was used.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        device: &B::Device,
    ) -> Result<ResNet<B>> {
        let w = Weights::from_file(TensorFile::open_any(path)?, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// The network with its parameters from `w`, by torchvision's names under `w`'s prefix.
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<ResNet<B>> {
        self.validate()?;
        let width = self.width;
        let k = if self.small_input { 3 } else { 7 };
        let stride = if self.small_input { 1 } else { 2 };
        let conv1 = w.conv2d("conv1", &conv_config(3, width, k, stride));
        let bn1 = batch_norm(w, "bn1", width);
        let mut layers = Vec::with_capacity(4);
        let mut input = width;
        for (stage, &n) in self.blocks.iter().enumerate() {
            let planes = width << stage;
            let mut blocks = Vec::with_capacity(n);
            for i in 0..n {
                let s = if i == 0 && stage > 0 { 2 } else { 1 };
                let b = w.pp(format!("layer{}", stage + 1)).pp(i);
                let downsample = (s != 1 || input != planes).then(|| {
                    (
                        b.conv2d("downsample.0", &conv_config(input, planes, 1, s)),
                        batch_norm(&b, "downsample.1", planes),
                    )
                });
                blocks.push(BasicBlock {
                    conv1: b.conv2d("conv1", &conv_config(input, planes, 3, s)),
                    bn1: batch_norm(&b, "bn1", planes),
                    conv2: b.conv2d("conv2", &conv_config(planes, planes, 3, 1)),
                    bn2: batch_norm(&b, "bn2", planes),
                    downsample,
                });
                input = planes;
            }
            layers.push(blocks);
        }
        let fc = w.linear("fc", input, self.num_outputs, true);
        Ok(ResNet {
            conv1,
            bn1,
            layers,
            fc,
            max_pool: !self.small_input,
            normalization: self.normalization,
        })
    }
}

/// torchvision's BasicBlock: two 3x3 convolutions with BatchNorm, plus a shortcut (a 1x1
/// convolution and BatchNorm where the shape changes).
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm2d<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm2d<B>,
    downsample: Option<(Conv2d<B>, BatchNorm2d<B>)>,
}

impl<B: Backend> BasicBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let h = self.bn2.forward(self.conv2.forward(h));
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(pointwise_strided(conv, x)),
            None => x,
        };
        relu(h + shortcut)
    }
}

/// A BasicBlock ResNet classifier (ResNet-18 / 34), see [`ResNetConfig`].
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm2d<B>,
    layers: Vec<Vec<BasicBlock<B>>>,
    fc: Linear<B>,
    max_pool: bool,
    #[module(skip)]
    normalization: Normalization,
}

impl<B: Backend> ResNet<B> {
    /// Logits `[N, K]` for already normalised inputs `[N, 3, H, W]` (torchvision's `forward`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut h = relu(self.bn1.forward(self.conv1.forward(x)));
        if self.max_pool {
            h = max_pool2d(h, [3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for stage in &self.layers {
            for block in stage {
                h = block.forward(h);
            }
        }
        self.fc.forward(global_avg_pool(h))
    }

    /// The input normalisation applied by [`Classifier::logits`].
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }
}

impl<B: Backend> Classifier<B> for ResNet<B> {
    fn num_logits(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Normalises images in `[-1, 1]` (see [`ResNetConfig::normalization`]) and runs the net.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        check_images("ResNet input", images.dims(), 1)?;
        Ok(self.forward(self.normalization.apply(images)))
    }
}
