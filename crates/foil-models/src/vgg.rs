//! torchvision's VGG16 feature stack, as LPIPS slices it (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Error, Result, tensor::fmt_dims};

use crate::weights::TensorFile;

/// Convolutions per block.
const DEPTHS: [usize; 5] = [2, 2, 3, 3, 3];

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

    fn convs<B: Backend>(&self, device: &B::Device) -> Vec<Vec<Conv2d<B>>> {
        let mut input = 3;
        DEPTHS
            .iter()
            .zip(self.widths)
            .map(|(&depth, w)| {
                (0..depth)
                    .map(|_| {
                        let conv = Conv2dConfig::new([input, w], [3, 3])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .init(device);
                        input = w;
                        conv
                    })
                    .collect()
            })
            .collect()
    }

    /// The network with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vgg16Features<B> {
        Vgg16Features {
            blocks: self.convs(device),
        }
    }

    /// The network with weights from `file`; `name(block, torch_index)` gives the tensor prefix.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        name: impl Fn(usize, usize) -> String,
        device: &B::Device,
    ) -> Vgg16Features<B> {
        let mut blocks = self.convs::<B>(device);
        for (b, block) in blocks.iter_mut().enumerate() {
            for (j, conv) in block.iter_mut().enumerate() {
                let [o, c, k, _] = conv.weight.dims();
                let base = name(b, TORCH_INDICES[b][j]);
                conv.weight = file.take(&format!("{base}.weight"), [o, c, k, k], device);
                conv.bias = Some(file.take(&format!("{base}.bias"), [o], device));
            }
        }
        Vgg16Features { blocks }
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
                h = max_pool2d(h, [2, 2], [2, 2], [0, 0], [1, 1], false);
            }
            for conv in block {
                h = relu(conv.forward(h));
            }
            outs.push(h.clone());
        }
        Ok(outs)
    }
}
