//! torchvision's AlexNet feature stack, as LPIPS slices it.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Error, Result, tensor::fmt_dims};

use crate::weights::{TensorFile, Weights};

/// Kernel, stride and padding of the five convolutions, and whether a 3x3 / 2 max-pool precedes them.
const LAYERS: [(usize, usize, usize, bool); 5] = [
    (11, 4, 2, false),
    (5, 1, 2, true),
    (3, 1, 1, true),
    (3, 1, 1, false),
    (3, 1, 1, false),
];

/// torchvision's indices of the convolutions inside `alexnet.features`.
pub const TORCH_INDICES: [usize; 5] = [0, 3, 6, 8, 10];

/// Widths of the five convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlexNetConfig {
    /// Output channels of conv1..conv5 (torchvision: 64, 192, 384, 256, 256).
    pub widths: [usize; 5],
}

impl Default for AlexNetConfig {
    fn default() -> Self {
        Self {
            widths: [64, 192, 384, 256, 256],
        }
    }
}

impl AlexNetConfig {
    /// A tiny configuration for parity tests (8, 12, 16, 12, 12).
    pub fn tiny() -> Self {
        Self {
            widths: [8, 12, 16, 12, 12],
        }
    }

    /// The configuration of convolution `i` (0..5).
    fn conv(&self, i: usize) -> Conv2dConfig {
        let (k, s, p, _) = LAYERS[i];
        let input = if i == 0 { 3 } else { self.widths[i - 1] };
        Conv2dConfig::new([input, self.widths[i]], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
    }

    /// The network with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AlexNetFeatures<B> {
        self.build(&Weights::random(device), |i| {
            format!("features.{}", TORCH_INDICES[i])
        })
    }

    /// The network with weights from `file`; `name(i)` gives convolution `i`'s tensor prefix
    /// (`features.{TORCH_INDICES[i]}` for torchvision's own names).
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        name: impl Fn(usize) -> String,
        device: &B::Device,
    ) -> AlexNetFeatures<B> {
        self.build(&Weights::from_file_mut(file, device), name)
    }

    /// The network with its parameters from `w`; `name(i)` gives convolution `i`'s prefix
    /// under `w`'s (`{name}.weight`, `{name}.bias`).
    pub fn build<B: Backend>(
        &self,
        w: &Weights<'_, B>,
        name: impl Fn(usize) -> String,
    ) -> AlexNetFeatures<B> {
        AlexNetFeatures {
            convs: (0..5).map(|i| w.conv2d(&name(i), &self.conv(i))).collect(),
        }
    }
}

/// AlexNet's convolutional features: the ReLU outputs relu1..relu5 that LPIPS compares.
#[derive(Module, Debug)]
pub struct AlexNetFeatures<B: Backend> {
    convs: Vec<Conv2d<B>>,
}

impl<B: Backend> AlexNetFeatures<B> {
    /// Channel widths of the five outputs.
    pub fn widths(&self) -> [usize; 5] {
        let mut w = [0; 5];
        for (slot, conv) in w.iter_mut().zip(&self.convs) {
            *slot = conv.weight.dims()[0];
        }
        w
    }

    /// relu1..relu5 for images `[N, 3, H, W]` (already normalised as the caller's model wants).
    pub fn forward(&self, x: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>> {
        let [n, c, h, w] = x.dims();
        if c != 3 || h < 15 || w < 15 {
            return Err(Error::shape(
                "AlexNet input",
                "[N, 3, H >= 15, W >= 15]",
                fmt_dims(&[n, c, h, w]),
            ));
        }
        let mut h = x;
        let mut outs = Vec::with_capacity(5);
        for (conv, &(_, _, _, pool)) in self.convs.iter().zip(&LAYERS) {
            if pool {
                h = max_pool2d(h, [3, 3], [2, 2], [0, 0], [1, 1], false);
            }
            h = relu(conv.forward(h));
            outs.push(h.clone());
        }
        Ok(outs)
    }
}
