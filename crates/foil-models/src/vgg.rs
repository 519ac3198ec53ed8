//! torchvision's VGG feature stacks:
//!
//! - [`Vgg16Features`]: VGG16 as LPIPS slices it (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
//! - [`Vgg19Features`]: VGG-19's `features` truncated after any number of torchvision modules
//!   (`vgg19().features[:layers]`), and [`Vgg19Perceptual`], the perceptual loss network of
//!   DiME / FastDiME / MaskDiME (`features[:18]`, up to relu3_4, on clamped ImageNet-normalised
//!   images) as a [`FeatureExtractor`].
//!
//! Both share [`VggLayout`]: convolutions per block, from which torchvision's module indices
//! (`features.{i}`) follow.

use std::path::Path;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Error, FeatureExtractor, Result, tensor::fmt_dims};

use crate::cnn::Normalization;
use crate::weights::{TensorFile, Weights};

/// One module of torchvision's `vgg.features` `Sequential`, in `make_layers` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggModule {
    /// A 3x3 convolution with padding 1: `block` (0..5), and its number `conv` counted over the
    /// whole stack.
    Conv {
        /// The block, 0..5.
        block: usize,
        /// The convolution's position over the whole stack (0 for the first).
        conv: usize,
    },
    /// A ReLU.
    Relu,
    /// A 2x2 max-pool with stride 2 (ending every block).
    MaxPool,
}

/// The block layout of a VGG (no BatchNorm): convolutions per block, five blocks each ended by
/// a max-pool. torchvision's module indices follow from it: each convolution and each ReLU and
/// each max-pool is one module of `features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VggLayout {
    /// Convolutions in each of the five blocks.
    pub depths: [usize; 5],
}

impl VggLayout {
    /// VGG16, configuration "D": 2, 2, 3, 3, 3 convolutions (31 modules).
    pub const VGG16: Self = Self {
        depths: [2, 2, 3, 3, 3],
    };
    /// VGG-19, configuration "E": 2, 2, 4, 4, 4 convolutions (37 modules).
    pub const VGG19: Self = Self {
        depths: [2, 2, 4, 4, 4],
    };

    /// The modules of `features`, in order: their position is torchvision's index.
    pub fn modules(&self) -> Vec<VggModule> {
        let mut out = Vec::new();
        let mut conv = 0;
        for (block, &depth) in self.depths.iter().enumerate() {
            for _ in 0..depth {
                out.push(VggModule::Conv { block, conv });
                out.push(VggModule::Relu);
                conv += 1;
            }
            out.push(VggModule::MaxPool);
        }
        out
    }

    /// torchvision's index of every convolution, per block.
    pub fn conv_indices(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); 5];
        for (i, m) in self.modules().into_iter().enumerate() {
            if let VggModule::Conv { block, .. } = m {
                out[block].push(i);
            }
        }
        out
    }

    /// 3x3 convolutions (padding 1) per block, from `w`: block `b` has `depths[b]`
    /// convolutions of `widths[b]` outputs, the first taking 3 channels; `name(block, torch
    /// index)` names each.
    fn conv_blocks<B: Backend>(
        &self,
        widths: [usize; 5],
        w: &Weights<'_, B>,
        name: impl Fn(usize, usize) -> String,
    ) -> Vec<Vec<Conv2d<B>>> {
        let indices = self.conv_indices();
        let mut input = 3;
        self.depths
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(b, (&depth, width))| {
                (0..depth)
                    .map(|j| {
                        let conv = w.conv2d(&name(b, indices[b][j]), &conv3x3(input, width));
                        input = width;
                        conv
                    })
                    .collect()
            })
            .collect()
    }
}

/// A 3x3 convolution `[input, output]` with padding 1 and bias.
fn conv3x3(input: usize, output: usize) -> Conv2dConfig {
    Conv2dConfig::new([input, output], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
}

/// VGG's 2x2 max-pool with stride 2 (floor mode, as torch's `MaxPool2d(2, 2)`).
fn pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// torchvision's indices of the thirteen convolutions inside `vgg16.features`, per block.
pub const TORCH_INDICES: [&[usize]; 5] = [
    &[0, 2],
    &[5, 7],
    &[10, 12, 14],
    &[17, 19, 21],
    &[24, 26, 28],
];

/// Widths of the five blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vgg16Config {
    /// Output channels of each block (torchvision: 64, 128, 256, 512, 512).
    pub widths: [usize; 5],
}

impl Default for Vgg16Config {
    fn default() -> Self {
        Self {
            widths: [64, 128, 256, 512, 512],
        }
    }
}

impl Vgg16Config {
    /// A tiny configuration for parity tests (4, 6, 8, 8, 8).
    pub fn tiny() -> Self {
        Self {
            widths: [4, 6, 8, 8, 8],
        }
    }

    /// The network with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vgg16Features<B> {
        self.build(&Weights::random(device), |_, i| format!("features.{i}"))
    }

    /// The network with weights from `file`; `name(block, torch_index)` gives the tensor prefix.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        name: impl Fn(usize, usize) -> String,
        device: &B::Device,
    ) -> Vgg16Features<B> {
        self.build(&Weights::from_file_mut(file, device), name)
    }

    /// The network with its parameters from `w`; `name(block, torch_index)` gives each
    /// convolution's prefix under `w`'s (`features.{torch_index}` for torchvision's names).
    pub fn build<B: Backend>(
        &self,
        w: &Weights<'_, B>,
        name: impl Fn(usize, usize) -> String,
    ) -> Vgg16Features<B> {
        Vgg16Features {
            blocks: VggLayout::VGG16.conv_blocks(self.widths, w, name),
        }
    }
}

/// VGG16's convolutional features: the last ReLU of each of the five blocks.
#[derive(Module, Debug)]
pub struct Vgg16Features<B: Backend> {
    blocks: Vec<Vec<Conv2d<B>>>,
}

impl<B: Backend> Vgg16Features<B> {
    /// Channel widths of the five outputs.
    pub fn widths(&self) -> [usize; 5] {
        let mut w = [0; 5];
        for (slot, block) in w.iter_mut().zip(&self.blocks) {
            *slot = block.last().map_or(0, |c| c.weight.dims()[0]);
        }
        w
    }

    /// relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 for images `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>> {
        let [n, c, h, w] = x.dims();
        if c != 3 || h < 16 || w < 16 {
            return Err(Error::shape(
                "VGG16 input",
                "[N, 3, H >= 16, W >= 16]",
                fmt_dims(&[n, c, h, w]),
            ));
        }
        let mut h = x;
        let mut outs = Vec::with_capacity(5);
        for (b, block) in self.blocks.iter().enumerate() {
            if b > 0 {
                h = pool(h);
            }
            for conv in block {
                h = relu(conv.forward(h));
            }
            outs.push(h.clone());
        }
        Ok(outs)
    }
}

/// Modules in VGG-19's `features` (16 convolutions, 16 ReLUs, 5 max-pools): the largest
/// [`Vgg19Config::layers`].
pub const VGG19_MODULES: usize = 37;

/// The truncation of DiME / FastDiME / MaskDiME's perceptual loss, `vgg19().features[:18]`:
/// everything up to and including relu3_4 (two max-pools, 256 channels at full width).
pub const VGG19_PERCEPTUAL_LAYERS: usize = 18;

/// VGG-19's feature stack, `vgg19().features[:layers]`, with its channel widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vgg19Config {
    /// Output channels of the convolutions of each block (torchvision: 64, 128, 256, 512, 512).
    pub widths: [usize; 5],
    /// How many of the 37 torchvision modules of `features` to keep, in `1..=37` (the
    /// perceptual loss: [`VGG19_PERCEPTUAL_LAYERS`] = 18).
    pub layers: usize,
}

impl Default for Vgg19Config {
    /// torchvision's widths truncated at [`VGG19_PERCEPTUAL_LAYERS`] (the DiME perceptual loss).
    fn default() -> Self {
        Self {
            widths: [64, 128, 256, 512, 512],
            layers: VGG19_PERCEPTUAL_LAYERS,
        }
    }
}

impl Vgg19Config {
    /// torchvision's whole `vgg19().features` (37 modules, ending with the fifth max-pool).
    pub fn full() -> Self {
        Self {
            layers: VGG19_MODULES,
            ..Self::default()
        }
    }

    /// A tiny configuration for parity tests: torchvision's widths divided by 16 (4, 8, 16,
    /// 32, 32), truncated at 18 modules.
    pub fn tiny() -> Self {
        Self {
            widths: [4, 8, 16, 32, 32],
            ..Self::default()
        }
    }

    /// Sets how many torchvision modules of `features` to keep (`1..=37`).
    pub fn with_layers(self, layers: usize) -> Self {
        Self { layers, ..self }
    }

    /// Sets the channel widths of the five blocks.
    pub fn with_widths(self, widths: [usize; 5]) -> Self {
        Self { widths, ..self }
    }

    /// Checks `layers` in `1..=37` and every width >= 1.
    pub fn validate(&self) -> Result<()> {
        if !(1..=VGG19_MODULES).contains(&self.layers) {
            return Err(Error::out_of_range(
                "VGG-19 layers (torchvision modules of `features` kept)",
                format!("in 1..={VGG19_MODULES}"),
                self.layers,
            ));
        }
        if self.widths.contains(&0) {
            return Err(Error::out_of_range(
                "VGG-19 widths",
                "all >= 1",
                format!("{:?}", self.widths),
            ));
        }
        Ok(())
    }

    /// The kept modules, `features[:layers]` (all 37 if `layers` is larger).
    fn plan(&self) -> Vec<VggModule> {
        let mut modules = VggLayout::VGG19.modules();
        modules.truncate(self.layers);
        modules
    }

    /// The network with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Vgg19Features<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with the weights of a torchvision `vgg19` state dict, by its names
    /// `features.{i}.weight` / `features.{i}.bias` (torchvision's module index `i`).
    ///
    /// `classifier.*` tensors and the convolutions after the truncation are marked as used (a
    /// whole `vgg19` file loads into a truncated stack); any other tensor is left for
    /// [`TensorFile::finish`] to report, with the missing and wrongly shaped ones.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<Vgg19Features<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// [`Vgg19Config::load`] from a safetensors or PyTorch (`.pth`, `.pt`, `.bin`) file, such as
    /// torchvision's `vgg19-dcbb9e9d.pth`; one error lists every missing, wrongly shaped and
    /// unexpected tensor.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Vgg19Features<B>> {
        let w = Weights::from_file(TensorFile::open_any(path)?, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// The network with its parameters from `w`, by torchvision's names under `w`'s prefix
    /// (see [`load`](Self::load) for the tensors of a whole `vgg19` that are ignored).
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<Vgg19Features<B>> {
        self.validate()?;
        let plan = self.plan();
        let features = w.pp("features");
        let mut convs = Vec::new();
        let mut input = 3;
        for (i, module) in plan.iter().enumerate() {
            if let VggModule::Conv { block, .. } = *module {
                let output = self.widths[block];
                convs.push(features.conv2d(&i.to_string(), &conv3x3(input, output)));
                input = output;
            }
        }
        for (i, module) in VggLayout::VGG19.modules().into_iter().enumerate() {
            if i >= self.layers && matches!(module, VggModule::Conv { .. }) {
                features.ignore([format!("{i}.weight"), format!("{i}.bias")]);
            }
        }
        let classifier = w.pp("classifier");
        classifier.ignore(classifier.names());
        Ok(Vgg19Features { convs, plan })
    }
}

/// `vgg19().features[:layers]`: 3x3 convolutions, ReLUs and 2x2 max-pools in torchvision's
/// order (see [`Vgg19Config`]). Takes already normalised images; [`Vgg19Perceptual`] does the
/// `[-1, 1]` to ImageNet mapping.
#[derive(Module, Debug)]
pub struct Vgg19Features<B: Backend> {
    convs: Vec<Conv2d<B>>,
    #[module(skip)]
    plan: Vec<VggModule>,
}

impl<B: Backend> Vgg19Features<B> {
    /// How many torchvision modules of `features` are kept.
    pub fn layers(&self) -> usize {
        self.plan.len()
    }

    /// Channels of the output (those of the last kept convolution).
    pub fn out_channels(&self) -> usize {
        self.convs.last().map_or(3, |c| c.weight.dims()[0])
    }

    /// The smallest image side the kept max-pools leave at least one pixel of: `2^pools`.
    pub fn min_side(&self) -> usize {
        let pools = self
            .plan
            .iter()
            .filter(|m| **m == VggModule::MaxPool)
            .count();
        1 << pools
    }

    /// `features[:layers](x)` for normalised images `[N >= 1, 3, H, W]`, `H` and `W` at least
    /// [`min_side`](Self::min_side).
    pub fn forward(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [n, c, h, w] = x.dims();
        let min = self.min_side();
        if n == 0 || c != 3 || h < min || w < min {
            return Err(Error::shape(
                format!("VGG-19 input (features[:{}])", self.layers()),
                format!("[N >= 1, 3, H >= {min}, W >= {min}]"),
                fmt_dims(&[n, c, h, w]),
            ));
        }
        let mut h = x;
        for module in &self.plan {
            h = match *module {
                VggModule::Conv { conv, .. } => self.convs[conv].forward(h),
                VggModule::Relu => relu(h),
                VggModule::MaxPool => pool(h),
            };
        }
        Ok(h)
    }
}

/// `x.clamp(lo, hi)` whose gradient, like `torch.clamp`'s, passes only where `lo < x < hi`
/// (burn's passes at the boundary too).
fn torch_clamp<B: Backend>(x: Tensor<B, 4>, lo: f64, hi: f64) -> Tensor<B, 4> {
    let inside = x
        .clone()
        .greater_elem(lo)
        .bool_and(x.clone().lower_elem(hi))
        .float()
        .detach();
    let clamped = x.clone().clamp(lo, hi).detach();
    x * inside.clone() + clamped * (inside.neg() + 1.0)
}

/// The perceptual-loss network of DiME / FastDiME / MaskDiME (`PerceptualLoss` with its
/// `Normalizer`, `core/sample_utils.py`): images in `[-1, 1]` are clamped to `[-1, 1]`, mapped
/// to `[0, 1]`, normalised with ImageNet statistics and run through `vgg19().features[:layers]`.
///
/// As a [`FeatureExtractor`] it returns that one feature map; the guided sampler's perceptual
/// term (per-image mean squared feature difference, summed over the batch, times
/// `lambda_perc`) is then the reference loss with `c = lambda_perc`, also given directly by
/// [`Vgg19Perceptual::loss`].
#[derive(Module, Debug)]
pub struct Vgg19Perceptual<B: Backend> {
    net: Vgg19Features<B>,
    #[module(skip)]
    normalization: Normalization,
}

impl<B: Backend> Vgg19Perceptual<B> {
    /// Wraps a feature stack with the clamp and the ImageNet normalisation.
    pub fn new(net: Vgg19Features<B>) -> Self {
        Self {
            net,
            normalization: Normalization::imagenet(),
        }
    }

    /// Loads `config`'s stack from a torchvision `vgg19` file (safetensors or PyTorch, for
    /// example `vgg19-dcbb9e9d.pth` with [`Vgg19Config::default`]), see
    /// [`Vgg19Config::load_file`].
    pub fn load_file(
        path: impl AsRef<Path>,
        config: &Vgg19Config,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self::new(config.load_file(path, device)?))
    }

    /// The wrapped feature stack.
    pub fn network(&self) -> &Vgg19Features<B> {
        &self.net
    }

    /// Features `[N, C, H', W']` of images `[N, 3, H, W]` in `[-1, 1]` (values outside are
    /// clamped, with zero gradient there and at exactly -1 and 1, as `torch.clamp`'s gradient
    /// is: clipped clean estimates and saturated inputs sit on the boundary).
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [n, c, h, w] = images.dims();
        if n == 0 || c != 3 {
            return Err(Error::shape(
                "VGG-19 perceptual input",
                "[N >= 1, 3, H, W] (RGB images in [-1, 1])",
                fmt_dims(&[n, c, h, w]),
            ));
        }
        self.net
            .forward(self.normalization.apply(torch_clamp(images, -1.0, 1.0)))
    }

    /// The reference `PerceptualLoss(layer, c)(x0, x1)`: `c * sum_b mean_j (f(x0) - f(x1))^2`
    /// over each image's features, a `[1]` tensor. `x0` and `x1` must have the same shape.
    pub fn loss(&self, x0: Tensor<B, 4>, x1: Tensor<B, 4>, c: f64) -> Result<Tensor<B, 1>> {
        if x0.dims() != x1.dims() {
            return Err(Error::shape(
                "VGG-19 perceptual loss x1",
                fmt_dims(&x0.dims()),
                fmt_dims(&x1.dims()),
            ));
        }
        let f0 = self.forward(x0)?;
        let f1 = self.forward(x1)?;
        let [n, ch, h, w] = f0.dims();
        let per_image = (f0 - f1)
            .powf_scalar(2.0)
            .reshape([n, ch * h * w])
            .mean_dim(1);
        Ok(per_image.sum().mul_scalar(c))
    }
}

impl<B: Backend> FeatureExtractor<B> for Vgg19Perceptual<B> {
    /// One feature map, [`Vgg19Perceptual::forward`].
    fn features(&self, images: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>> {
        Ok(vec![self.forward(images)?])
    }
}
