//! Building blocks shared by the torchvision classifiers ([`crate::resnet`],
//! [`crate::mobilenet`], [`crate::efficientnet`]): BatchNorm (inference by default, training under
//! [`foil_core::mode::TrainingMode`]), [`parameter_count`], input normalisation,
//! and the layers the three build from a [`Weights`] builder by torchvision's state-dict names.

use burn::module::{Module, ModuleVisitor, Param, RunningState};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Slice, Tensor, TensorData, backend::Backend};
use foil_core::{Error, Result, tensor::fmt_dims};

use crate::weights::{Init, Weights};

/// How a classifier maps foil's `[-1, 1]` images to the input range its weights expect:
/// `((x + 1) / 2 - mean) / std` per RGB channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Per-channel mean in `[0, 1]` units.
    pub mean: [f32; 3],
    /// Per-channel standard deviation in `[0, 1]` units.
    pub std: [f32; 3],
}

impl Default for Normalization {
    /// [`Normalization::imagenet`], what torchvision's published weights were trained with.
    fn default() -> Self {
        Self::imagenet()
    }
}

impl Normalization {
    /// ImageNet statistics (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225), the
    /// normalisation of every torchvision classification weight.
    pub fn imagenet() -> Self {
        Self {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Mean 0.5, std 0.5: the network sees foil's `[-1, 1]` images unchanged (for classifiers
    /// trained on `[-1, 1]` inputs, as guided-diffusion's and many counterfactual papers' are).
    pub fn identity() -> Self {
        Self {
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// Checks that every std is finite and positive and every mean finite.
    pub fn validate(&self) -> Result<()> {
        for c in 0..3 {
            if !(self.std[c].is_finite() && self.std[c] > 0.0) {
                return Err(Error::out_of_range(
                    format!("normalisation std[{c}]"),
                    "finite and > 0",
                    self.std[c],
                ));
            }
            if !self.mean[c].is_finite() {
                return Err(Error::out_of_range(
                    format!("normalisation mean[{c}]"),
                    "finite",
                    self.mean[c],
                ));
            }
        }
        Ok(())
    }

    /// Applies `((x + 1) / 2 - mean) / std` to images `[N, 3, H, W]`.
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = x.device();
        let scale: Vec<f32> = self.std.iter().map(|s| 0.5 / s).collect();
        let shift: Vec<f32> = (0..3).map(|c| (0.5 - self.mean[c]) / self.std[c]).collect();
        let scale = Tensor::<B, 1>::from_data(TensorData::new(scale, [3]), &device);
        let shift = Tensor::<B, 1>::from_data(TensorData::new(shift, [3]), &device);
        x * scale.reshape([1, 3, 1, 1]) + shift.reshape([1, 3, 1, 1])
    }
}

/// BatchNorm2d as torchvision computes it: in inference (the default, also under autodiff)
/// `(x - running_mean) / sqrt(running_var + eps) * weight + bias`; while
/// [`foil_core::mode::is_training`] is on, with the batch's statistics (biased variance), and
/// the running averages updated with momentum 0.1 (unbiased variance), as `nn.BatchNorm2d`.
///
/// burn's own `BatchNorm` switches to batch statistics whenever the backend tracks gradients,
/// which would change a classifier's output while a guided sampler differentiates through it;
/// this one follows foil's explicit training mode instead. `weight` and `bias` are parameters;
/// the running statistics are buffers: saved in burn records (so training checkpoints keep them)
/// but not counted by [`parameter_count`], as torchvision's `parameters()` does not count them.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale (torchvision `weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Shift (torchvision `bias`).
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running variance.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Added to the variance (torchvision's default 1e-5).
    pub eps: f64,
}

/// torchvision's BatchNorm momentum: `running = (1 - m) * running + m * batch`.
const BN_MOMENTUM: f64 = 0.1;

impl<B: Backend> BatchNorm2d<B> {
    /// Normalises `[N, C, H, W]`: running statistics, or batch statistics in training mode.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let (mean, var) = if foil_core::mode::is_training() && n * h * w > 1 {
            let flat = x.clone().swap_dims(0, 1).reshape([c, n * h * w]);
            let mean = flat.clone().mean_dim(1).reshape([c]);
            let var = (flat - mean.clone().reshape([c, 1]))
                .square()
                .mean_dim(1)
                .reshape([c]);
            let count = (n * h * w) as f64;
            let unbiased = var.clone().detach().mul_scalar(count / (count - 1.0));
            let m = BN_MOMENTUM;
            let old_mean = self.running_mean.value_sync().detach();
            let old_var = self.running_var.value_sync().detach();
            self.running_mean
                .update(old_mean.mul_scalar(1.0 - m) + mean.clone().detach().mul_scalar(m));
            self.running_var
                .update(old_var.mul_scalar(1.0 - m) + unbiased.mul_scalar(m));
            (mean, var)
        } else {
            (
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
            )
        };
        let scale = self.weight.val() / var.add_scalar(self.eps).sqrt();
        let shift = self.bias.val() - mean * scale.clone();
        crate::norm::channel_affine(x, scale.reshape([1, c]), shift.reshape([1, c]))
    }
}

/// The number of trainable parameters of a module, BatchNorm running statistics excluded: the
/// figure torchvision's `sum(p.numel() for p in model.parameters())` gives.
pub fn parameter_count<B: Backend, M: Module<B>>(module: &M) -> usize {
    struct Counter {
        field: Vec<String>,
        count: usize,
    }
    impl<B: Backend> ModuleVisitor<B> for Counter {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.field.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.field.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let buffer = matches!(
                self.field.last().map(String::as_str),
                Some("running_mean" | "running_var")
            );
            if !buffer {
                self.count += param.lazy_shape().num_elements();
            }
        }
    }
    let mut counter = Counter {
        field: Vec::new(),
        count: 0,
    };
    module.visit(&mut counter);
    counter.count
}

/// Global average pooling `[N, C, H, W] -> [N, C]`.
pub fn global_avg_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

/// `min(max(x, 0), 6)`, torch's ReLU6.
pub fn relu6<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.clamp(0.0, 6.0)
}

/// Checks classifier input `[N >= 1, 3, H >= min, W >= min]`.
pub fn check_images(
    what: impl Into<std::borrow::Cow<'static, str>>,
    dims: [usize; 4],
    min: usize,
) -> Result<()> {
    let [n, c, h, w] = dims;
    if n == 0 || c != 3 || h < min || w < min {
        return Err(Error::shape(
            what,
            format!("[N >= 1, 3, H >= {min}, W >= {min}] (images in [-1, 1])"),
            fmt_dims(&dims),
        ));
    }
    Ok(())
}

/// A 1 x 1 convolution with a stride (ResNet's downsampling shortcut), as a stride-1 1 x 1
/// convolution of every `stride`-th pixel: the same values, and the same gradients.
///
/// Why not `conv.forward(x)`: burn-cubecl 0.21 (wgpu, CUDA) computes a convolution's input
/// gradient with a direct transposed-convolution kernel that returns zeros wherever the kernel is
/// smaller than the stride (`kernel * dilation - stride < 0` leaves its loop empty), so the
/// shortcut's gradient vanished and a ResNet's input gradient was wrong on those backends
/// (`gpu::*::op_gradients_match_ndarray`, docs/backends.md). A strided slice's gradient is a
/// strided assignment, which every backend gets right. Any other convolution (a larger kernel,
/// padding) goes through `conv.forward(x)` unchanged.
pub fn pointwise_strided<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let unpadded = matches!(
        conv.padding,
        PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
    );
    if conv.kernel_size != [1, 1] || !unpadded {
        return conv.forward(x);
    }
    let [sh, sw] = conv.stride;
    let x = if sh == 1 && sw == 1 {
        x
    } else {
        x.slice([
            Slice::full(),
            Slice::full(),
            Slice::new(0, None, sh as isize),
            Slice::new(0, None, sw as isize),
        ])
    };
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        ConvOptions::new([1, 1], [0, 0], [1, 1], conv.groups),
    )
}

/// A bias-free `k x k` convolution `[input, output]` with torch's padding `(k - 1) / 2` and
/// `stride` (chain `with_groups` / `with_bias` for the others); burn's default initialiser.
pub fn conv_config(input: usize, output: usize, k: usize, stride: usize) -> Conv2dConfig {
    let p = (k - 1) / 2;
    Conv2dConfig::new([input, output], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
}

/// A BatchNorm (eps 1e-5) of `c` channels named `{name}.weight/bias/running_mean/running_var`
/// (`{name}.num_batches_tracked` is ignored); random: identity (scale one, shift zero, running
/// mean zero, running variance one).
pub fn batch_norm<B: Backend>(w: &Weights<'_, B>, name: &str, c: usize) -> BatchNorm2d<B> {
    let w = w.pp(name);
    w.ignore(["num_batches_tracked"]);
    BatchNorm2d {
        weight: w.tensor("weight", [c], Init::Ones),
        bias: w.tensor("bias", [c], Init::Zeros),
        running_mean: RunningState::new(w.tensor("running_mean", [c], Init::Zeros).val().detach()),
        running_var: RunningState::new(w.tensor("running_var", [c], Init::Ones).val().detach()),
        eps: 1e-5,
    }
}

/// A convolution followed by a BatchNorm (torchvision's `Conv2dNormActivation`
/// without its activation, which the caller applies).
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// The convolution (no bias).
    pub conv: Conv2d<B>,
    /// Its BatchNorm.
    pub bn: BatchNorm2d<B>,
}

impl<B: Backend> ConvBn<B> {
    /// `bn(conv(x))`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// A bias-free convolution `conv` (from `config`) and a BatchNorm `bn` of its outputs.
pub fn conv_bn<B: Backend>(
    w: &Weights<'_, B>,
    conv: &str,
    bn: &str,
    config: &Conv2dConfig,
) -> ConvBn<B> {
    ConvBn {
        conv: w.conv2d(conv, config),
        bn: batch_norm(w, bn, config.channels[1]),
    }
}

/// torchvision's `Conv2dNormActivation` under `w`'s prefix: the convolution `0`, the BatchNorm `1`.
pub fn conv_norm<B: Backend>(w: &Weights<'_, B>, config: &Conv2dConfig) -> ConvBn<B> {
    conv_bn(w, "0", "1", config)
}

/// torchvision's `_make_divisible(v, 8)`: `v` rounded to the nearest multiple of 8 (at least 8),
/// never more than 10% below `v`.
pub fn make_divisible(v: f64) -> usize {
    let d: f64 = 8.0;
    let mut new_v = d.max(((v + d / 2.0) / d).floor() * d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use foil_core::Noise;
    use proptest::prelude::*;

    use super::*;

    type A = Autodiff<NdArray>;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// `pointwise_strided` is the strided 1 x 1 convolution: same output, same input
        /// gradient, for odd and even maps and strides that do and do not divide them; and a
        /// padded 3 x 3 convolution passed to it is left as it is.
        #[test]
        fn pointwise_strided_equals_the_strided_convolution(
            n in 1usize..3, c_in in 1usize..5, c_out in 1usize..5,
            h in 1usize..10, w in 1usize..10, stride in 1usize..4, k in prop::sample::select(vec![1usize, 3]),
        ) {
            // Host-side noise, not the backend's global generator: `weights::pinned_init` seeds
            // that one and draws from it in this same test binary.
            let device = Default::default();
            let mut noise = Noise::new((n * 1000 + c_in * 100 + h * 10 + w) as u64);
            let mut conv = conv_config(c_in, c_out, k, stride)
                .with_bias(true)
                .with_initializer(burn::nn::Initializer::Zeros)
                .init::<A>(&device);
            conv.weight = Param::from_tensor(noise.normal([c_out, c_in, k, k], &device));
            conv.bias = Some(Param::from_tensor(noise.normal([c_out], &device)));
            let x = noise.normal::<A, 4>([n, c_in, h, w], &device);
            let run = |ours: bool| {
                let x = x.clone().require_grad();
                let y = if ours { pointwise_strided(&conv, x.clone()) } else { conv.forward(x.clone()) };
                let probe = Tensor::<A, 4>::ones(y.dims(), &device).cumsum(3);
                let grads = (y.clone() * probe).sum().backward();
                (y.into_data(), x.grad(&grads).unwrap().into_data())
            };
            let ((y1, g1), (y2, g2)) = (run(true), run(false));
            prop_assert_eq!(y1.shape.clone(), y2.shape.clone());
            y1.assert_approx_eq::<f32>(&y2, burn::tensor::Tolerance::absolute(1e-5));
            g1.assert_approx_eq::<f32>(&g2, burn::tensor::Tolerance::absolute(1e-5));
        }
    }
}
