//! torchvision's DenseNet-BC (DenseNet-121, 161, 169, 201), loading torchvision's state-dict
//! names (`features.conv0`, `features.norm0`,
//! `features.denseblock{b}.denselayer{l}.norm1/conv1/norm2/conv2`,
//! `features.transition{t}.norm/conv`, `features.norm5`, `classifier`).
//!
//! torchvision's published checkpoints (`densenet121-a639ec97.pth`, ...) spell the dense layers'
//! modules with a dot (`denselayer1.norm.1.weight`, `conv.2.weight`), which torchvision's
//! `densenet._load_state_dict` renames with a regex; both spellings load here, chosen per dense
//! layer by which one the file holds.
//!
//! BatchNorm follows [`foil_core::mode`] (running statistics unless training); dropout
//! (torchvision's `drop_rate`, 0 for every published configuration) is the identity.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, Error, Result};

use crate::cnn::{
    BatchNorm2d, Normalization, batch_norm, check_images, conv_config, global_avg_pool,
};
use crate::weights::{TensorFile, Weights};

/// Configuration of a DenseNet-BC (torchvision's `DenseNet` class).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseNetConfig {
    /// Channels each dense layer adds (`growth_rate`, the paper's `k`; DenseNet-121: 32).
    pub growth_rate: usize,
    /// Dense layers per block (`block_config`; DenseNet-121: `[6, 12, 24, 16]`); a transition
    /// (BatchNorm, ReLU, 1x1 convolution halving the channels, 2x2 average pooling) follows
    /// every block but the last.
    pub blocks: Vec<usize>,
    /// Channels of the stem convolution `conv0` (`num_init_features`; DenseNet-121: 64).
    pub init_features: usize,
    /// Bottleneck width factor: each dense layer's 1x1 convolution has
    /// `bn_size * growth_rate` outputs (`bn_size`; 4 in every published configuration).
    pub bn_size: usize,
    /// Number of logits (ImageNet: 1000; a one-logit binary classifier: 1); 0: no classifier,
    /// as torchvision's model with `classifier = Identity` (no `classifier.*` weights; the
    /// output is the pooled features).
    pub num_outputs: usize,
    /// Mapping from foil's `[-1, 1]` images to the network's input (ImageNet statistics for
    /// torchvision's weights).
    pub normalization: Normalization,
}

impl Default for DenseNetConfig {
    /// torchvision's `densenet121()`.
    fn default() -> Self {
        Self::densenet121()
    }
}

impl DenseNetConfig {
    /// torchvision's `densenet121()`: growth 32, blocks `[6, 12, 24, 16]`, 64 initial features,
    /// `bn_size` 4, 1000 outputs, ImageNet normalisation (7,978,856 parameters).
    pub fn densenet121() -> Self {
        Self {
            growth_rate: 32,
            blocks: vec![6, 12, 24, 16],
            init_features: 64,
            bn_size: 4,
            num_outputs: 1000,
            normalization: Normalization::imagenet(),
        }
    }

    /// torchvision's `densenet161()`: growth 48, blocks `[6, 12, 36, 24]`, 96 initial features
    /// (28,681,000 parameters).
    pub fn densenet161() -> Self {
        Self {
            growth_rate: 48,
            blocks: vec![6, 12, 36, 24],
            init_features: 96,
            ..Self::densenet121()
        }
    }

    /// torchvision's `densenet169()`: blocks `[6, 12, 32, 32]` (14,149,480 parameters).
    pub fn densenet169() -> Self {
        Self {
            blocks: vec![6, 12, 32, 32],
            ..Self::densenet121()
        }
    }

    /// torchvision's `densenet201()`: blocks `[6, 12, 48, 32]` (20,013,928 parameters).
    pub fn densenet201() -> Self {
        Self {
            blocks: vec![6, 12, 48, 32],
            ..Self::densenet121()
        }
    }

    /// A tiny DenseNet for tests: growth 4, blocks `[1, 2]`, 8 initial features, `bn_size` 2,
    /// 3 outputs (`tools/record_densenet.py` records torchvision's twin).
    pub fn tiny() -> Self {
        Self {
            growth_rate: 4,
            blocks: vec![1, 2],
            init_features: 8,
            bn_size: 2,
            num_outputs: 3,
            ..Self::densenet121()
        }
    }

    /// Sets the number of logits (0: no classifier, the pooled features are the output).
    pub fn with_outputs(self, num_outputs: usize) -> Self {
        Self {
            num_outputs,
            ..self
        }
    }

    /// Sets the growth rate, initial features and bottleneck factor (the widths), keeping the
    /// blocks.
    pub fn with_widths(self, growth_rate: usize, init_features: usize, bn_size: usize) -> Self {
        Self {
            growth_rate,
            init_features,
            bn_size,
            ..self
        }
    }

    /// Sets the dense layers per block.
    pub fn with_blocks(self, blocks: impl Into<Vec<usize>>) -> Self {
        Self {
            blocks: blocks.into(),
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

    /// Channels of the features that feed the classifier (DenseNet-121: 1024).
    pub fn num_features(&self) -> usize {
        let mut c = self.init_features;
        for (i, &n) in self.blocks.iter().enumerate() {
            c += n * self.growth_rate;
            if i + 1 < self.blocks.len() {
                c /= 2;
            }
        }
        c
    }

    /// The smallest input height and width the network accepts: the stem divides sizes by 4
    /// (rounding up) and each of the `blocks.len() - 1` transitions halves them (rounding down),
    /// which must leave at least one pixel (DenseNet-121: 29; torch refuses smaller inputs too).
    pub fn min_input_size(&self) -> usize {
        let transitions = self.blocks.len().saturating_sub(1) as u32;
        (1usize << (transitions + 2)).saturating_sub(3).max(1)
    }

    fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("DenseNet growth_rate", self.growth_rate),
            ("DenseNet init_features", self.init_features),
            ("DenseNet bn_size", self.bn_size),
        ] {
            if v == 0 {
                return Err(Error::out_of_range(what, ">= 1", v));
            }
        }
        if self.blocks.is_empty() || self.blocks.len() > 16 || self.blocks.contains(&0) {
            return Err(Error::out_of_range(
                "DenseNet blocks",
                "1 to 16 blocks of >= 1 layers",
                format!("{:?}", self.blocks),
            ));
        }
        self.normalization.validate()
    }

    /// The network with random weights (burn's default convolution and linear initialisers,
    /// BatchNorm at identity statistics).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<DenseNet<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with weights from `file`, by torchvision's names (either spelling of the
    /// dense layers); call [`TensorFile::finish`] afterwards for one error listing every
    /// missing, wrongly shaped and unexpected tensor.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<DenseNet<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// [`DenseNetConfig::load`] from a safetensors or PyTorch (`.pt`, `.pth`, `.bin`) file, such
    /// as torchvision's `densenet121-a639ec97.pth`, checking that every tensor was used.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        device: &B::Device,
    ) -> Result<DenseNet<B>> {
        let w = Weights::from_file(TensorFile::open_any(path)?, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// The network with its parameters from `w`, by torchvision's names under `w`'s prefix.
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<DenseNet<B>> {
        self.validate()?;
        let features = w.pp("features");
        let c0 = self.init_features;
        let conv0 = features.conv2d("conv0", &conv_config(3, c0, 7, 2));
        let norm0 = batch_norm(&features, "norm0", c0);
        let bottleneck = self.bn_size * self.growth_rate;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        let mut transitions = Vec::with_capacity(self.blocks.len() - 1);
        let mut c = c0;
        for (b, &n) in self.blocks.iter().enumerate() {
            let block = features.pp(format!("denseblock{}", b + 1));
            let mut layers = Vec::with_capacity(n);
            for l in 0..n {
                let input = c + l * self.growth_rate;
                let p = block.pp(format!("denselayer{}", l + 1));
                // torchvision's published checkpoints: `norm.1` for `norm1`, and so on.
                let sep = if p.contains("norm.1.weight") { "." } else { "" };
                layers.push(DenseLayer {
                    norm1: batch_norm(&p, &format!("norm{sep}1"), input),
                    conv1: p.conv2d(
                        &format!("conv{sep}1"),
                        &conv_config(input, bottleneck, 1, 1),
                    ),
                    norm2: batch_norm(&p, &format!("norm{sep}2"), bottleneck),
                    conv2: p.conv2d(
                        &format!("conv{sep}2"),
                        &conv_config(bottleneck, self.growth_rate, 3, 1),
                    ),
                });
            }
            blocks.push(DenseBlock { layers });
            c += n * self.growth_rate;
            if b + 1 < self.blocks.len() {
                let t = features.pp(format!("transition{}", b + 1));
                transitions.push(Transition {
                    norm: batch_norm(&t, "norm", c),
                    conv: t.conv2d("conv", &conv_config(c, c / 2, 1, 1)),
                });
                c /= 2;
            }
        }
        let norm5 = batch_norm(&features, "norm5", c);
        let classifier =
            (self.num_outputs > 0).then(|| w.linear("classifier", c, self.num_outputs, true));
        Ok(DenseNet {
            conv0,
            norm0,
            blocks,
            transitions,
            norm5,
            classifier,
            num_features: c,
            min_input_size: self.min_input_size(),
            normalization: self.normalization,
        })
    }
}

/// torchvision's `_DenseLayer`: BatchNorm, ReLU, 1x1 bottleneck convolution, BatchNorm, ReLU,
/// 3x3 convolution to `growth_rate` new channels.
#[derive(Module, Debug)]
pub struct DenseLayer<B: Backend> {
    norm1: BatchNorm2d<B>,
    conv1: Conv2d<B>,
    norm2: BatchNorm2d<B>,
    conv2: Conv2d<B>,
}

impl<B: Backend> DenseLayer<B> {
    /// The new features `[N, growth_rate, H, W]` of the concatenated inputs `x`.
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(relu(self.norm1.forward(x)));
        self.conv2.forward(relu(self.norm2.forward(h)))
    }
}

/// torchvision's `_DenseBlock`: each layer sees the concatenation of the block's input and all
/// earlier layers' outputs; the block returns the concatenation of all of them.
#[derive(Module, Debug)]
pub struct DenseBlock<B: Backend> {
    layers: Vec<DenseLayer<B>>,
}

impl<B: Backend> DenseBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // The running concatenation is kept flat, `[N, C * H * W]` (the same memory as
        // `[N, C, H, W]`): in the backward each layer's input gradient is the sum of a slice
        // of the concatenation's gradient and the layer's own, and burn-flex adds a sliced
        // 2-D tensor row by row but walks a sliced 4-D one element by element (15 % of a
        // DenseNet-121 input gradient, docs/performance.md).
        let [n, c, h, w] = x.dims();
        let mut channels = c;
        let mut flat = x.reshape([n, c * h * w]);
        for layer in &self.layers {
            let new = layer.forward(flat.clone().reshape([n, channels, h, w]));
            let grown = new.dims()[1];
            flat = Tensor::cat(vec![flat, new.reshape([n, grown * h * w])], 1);
            channels += grown;
        }
        flat.reshape([n, channels, h, w])
    }
}

/// torchvision's `_Transition`: BatchNorm, ReLU, 1x1 convolution, 2x2 average pooling
/// (stride 2, sizes rounded down).
#[derive(Module, Debug)]
pub struct Transition<B: Backend> {
    norm: BatchNorm2d<B>,
    conv: Conv2d<B>,
}

impl<B: Backend> Transition<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv.forward(relu(self.norm.forward(x)));
        avg_pool2d(h, [2, 2], [2, 2], [0, 0], true, false)
    }
}

/// A DenseNet-BC classifier (DenseNet-121 / 161 / 169 / 201), see [`DenseNetConfig`].
#[derive(Module, Debug)]
pub struct DenseNet<B: Backend> {
    conv0: Conv2d<B>,
    norm0: BatchNorm2d<B>,
    blocks: Vec<DenseBlock<B>>,
    transitions: Vec<Transition<B>>,
    norm5: BatchNorm2d<B>,
    classifier: Option<Linear<B>>,
    num_features: usize,
    min_input_size: usize,
    #[module(skip)]
    normalization: Normalization,
}

impl<B: Backend> DenseNet<B> {
    /// torchvision's `model.features(x)`: the feature maps `[N, C, H / 32, W / 32]` after
    /// `norm5` (before the final ReLU) for already normalised inputs `[N, 3, H, W]`.
    pub fn feature_maps(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = relu(self.norm0.forward(self.conv0.forward(x)));
        let mut h = max_pool2d(h, [3, 3], [2, 2], [1, 1], [1, 1], false);
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(h);
            if let Some(t) = self.transitions.get(i) {
                h = t.forward(h);
            }
        }
        self.norm5.forward(h)
    }

    /// The pooled features `[N, C]` that feed the classifier (ReLU of
    /// [`feature_maps`](Self::feature_maps), global average) for already normalised inputs.
    pub fn pooled_features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        global_avg_pool(relu(self.feature_maps(x)))
    }

    /// Logits `[N, K]` for already normalised inputs `[N, 3, H, W]` (torchvision's `forward`:
    /// features, ReLU, adaptive average pooling, flatten, classifier; without a classifier,
    /// the pooled features).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let pooled = self.pooled_features(x);
        match &self.classifier {
            Some(classifier) => classifier.forward(pooled),
            None => pooled,
        }
    }

    /// Channels of the pooled features (DenseNet-121: 1024).
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// The smallest input height and width accepted (see [`DenseNetConfig::min_input_size`]).
    pub fn min_input_size(&self) -> usize {
        self.min_input_size
    }

    /// The input normalisation applied by [`Classifier::logits`].
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }
}

impl<B: Backend> Classifier<B> for DenseNet<B> {
    fn num_logits(&self) -> usize {
        self.classifier
            .as_ref()
            .map_or(self.num_features, |c| c.weight.dims()[1])
    }

    /// Normalises images in `[-1, 1]` (see [`DenseNetConfig::normalization`]) and runs the net;
    /// images smaller than [`DenseNet::min_input_size`] are an error.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        check_images("DenseNet input", images.dims(), self.min_input_size)?;
        Ok(self.forward(self.normalization.apply(images)))
    }
}
