//! The building blocks of guided-diffusion's `UNetModel` (`guided_diffusion/unet.py`), built
//! from a [`Weights`] builder with PyTorch's default initialisation for random weights.

use crate::norm::{group_norm, group_norm_modulated};
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Tensor, backend::Backend};

use crate::weights::{Init, Weights};

/// A 2-D convolution `prefix.weight` / `prefix.bias` (square kernel, symmetric padding).
pub(crate) fn conv<B: Backend>(
    src: &Weights<'_, B>,
    prefix: &str,
    [cin, cout]: [usize; 2],
    kernel: usize,
    stride: usize,
    zero: bool,
) -> Conv2d<B> {
    let bound = 1.0 / ((cin * kernel * kernel) as f64).sqrt();
    let fill = if zero {
        Init::Zeros
    } else {
        Init::uniform(bound)
    };
    let pad = kernel / 2;
    Conv2d {
        weight: src.tensor(
            &format!("{prefix}.weight"),
            [cout, cin, kernel, kernel],
            fill.clone(),
        ),
        bias: Some(src.tensor(&format!("{prefix}.bias"), [cout], fill)),
        stride: [stride, stride],
        kernel_size: [kernel, kernel],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(pad, pad, pad, pad),
    }
}

/// A linear layer from PyTorch's `[out, in]` weight (`nn.Linear`) or `[out, in, 1]` weight
/// (`nn.Conv1d` with kernel 1), stored transposed as burn's `[in, out]`.
pub(crate) fn linear<B: Backend>(
    src: &Weights<'_, B>,
    prefix: &str,
    [cin, cout]: [usize; 2],
    conv1d: bool,
    zero: bool,
) -> Linear<B> {
    let bound = 1.0 / (cin as f64).sqrt();
    let fill = if zero {
        Init::Zeros
    } else {
        Init::uniform(bound)
    };
    let name = format!("{prefix}.weight");
    let weight = if conv1d {
        let w = src.tensor(&name, [cout, cin, 1], fill.clone()).val();
        let [o, i, _] = w.dims();
        w.reshape([o, i])
    } else {
        src.tensor(&name, [cout, cin], fill.clone()).val()
    };
    Linear {
        // Detached: a transposed parameter is no leaf, and autodiff backends refuse to track it.
        weight: Param::from_tensor(weight.transpose().detach()),
        bias: Some(src.tensor(&format!("{prefix}.bias"), [cout], fill)),
    }
}

/// A kernel-1 `Conv1d` (stored as a [`Linear`], weight `[in, out]`) on `[B, C, T]`: the weight
/// multiplies from the left, so input and output stay channel-major and nothing is transposed
/// and copied; the bias is added per `(sample, channel)` row ([`crate::norm::per_row`]).
pub(crate) fn conv1x1<B: Backend>(lin: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let y = lin.weight.val().transpose().unsqueeze::<3>().matmul(x); // [B, out, T]
    match &lin.bias {
        Some(bias) => {
            let dims = y.dims();
            y + crate::norm::per_row(bias.val().reshape([1, dims[1]]), dims)
        }
        None => y,
    }
}

/// guided-diffusion's `normalization(channels)`: `GroupNorm32(32, channels)`, eps 1e-5.
pub(crate) fn norm<B: Backend>(
    src: &Weights<'_, B>,
    prefix: &str,
    channels: usize,
) -> GroupNorm<B> {
    GroupNorm {
        gamma: Some(src.tensor(&format!("{prefix}.weight"), [channels], Init::Ones)),
        beta: Some(src.tensor(&format!("{prefix}.bias"), [channels], Init::Zeros)),
        num_groups: GROUPS,
        num_channels: channels,
        epsilon: 1e-5,
        affine: true,
    }
}

/// Groups of every normalisation layer (`GroupNorm32`).
pub(crate) const GROUPS: usize = 32;

/// Nearest-neighbour upsampling by 2 (`F.interpolate(x, scale_factor=2, mode="nearest")`).
pub(crate) fn upsample_nearest<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .repeat_dim(3, 2)
        .repeat_dim(5, 2)
        .reshape([n, c, 2 * h, 2 * w])
}

/// 2x2 average pooling with stride 2 (`nn.AvgPool2d(2, 2)`).
pub(crate) fn avg_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
}

/// Resampling inside a residual block (`up=True` / `down=True`), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Updown {
    None,
    Up,
    Down,
}

impl Updown {
    fn apply<B: Backend>(self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Updown::None => x,
            Updown::Up => upsample_nearest(x),
            Updown::Down => avg_pool(x),
        }
    }
}

/// guided-diffusion's `ResBlock`: GroupNorm, SiLU, conv; the timestep embedding added (or applied
/// as scale and shift after the second norm); GroupNorm, SiLU, (dropout), conv; plus the skip.
#[derive(Module, Debug)]
pub(crate) struct ResBlock<B: Backend> {
    in_norm: GroupNorm<B>,
    in_conv: Conv2d<B>,
    emb: Linear<B>,
    out_norm: GroupNorm<B>,
    out_conv: Conv2d<B>,
    skip: Option<Conv2d<B>>,
    #[module(skip)]
    updown: Updown,
    #[module(skip)]
    scale_shift: bool,
}

/// Widths and switches of one [`ResBlock`].
pub(crate) struct ResSpec {
    pub channels: usize,
    pub out_channels: usize,
    pub emb_channels: usize,
    pub scale_shift: bool,
    pub updown: Updown,
}

impl<B: Backend> ResBlock<B> {
    pub(crate) fn build(src: &Weights<'_, B>, p: &str, s: &ResSpec) -> Self {
        let (c, o) = (s.channels, s.out_channels);
        let emb_out = if s.scale_shift { 2 * o } else { o };
        Self {
            in_norm: norm(src, &format!("{p}.in_layers.0"), c),
            in_conv: conv(src, &format!("{p}.in_layers.2"), [c, o], 3, 1, false),
            emb: linear(
                src,
                &format!("{p}.emb_layers.1"),
                [s.emb_channels, emb_out],
                false,
                false,
            ),
            out_norm: norm(src, &format!("{p}.out_layers.0"), o),
            out_conv: conv(src, &format!("{p}.out_layers.3"), [o, o], 3, 1, true),
            skip: (o != c).then(|| conv(src, &format!("{p}.skip_connection"), [c, o], 1, 1, false)),
            updown: s.updown,
            scale_shift: s.scale_shift,
        }
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>, emb: &Tensor<B, 2>) -> Tensor<B, 4> {
        let (x, h) = if self.updown == Updown::None {
            let h = self
                .in_conv
                .forward(silu(group_norm(&self.in_norm, x.clone())));
            (x, h)
        } else {
            let h = self
                .updown
                .apply(silu(group_norm(&self.in_norm, x.clone())));
            (self.updown.apply(x), self.in_conv.forward(h))
        };
        let e = self.emb.forward(silu(emb.clone()));
        let [n, k] = e.dims();
        let h = if self.scale_shift {
            let o = k / 2;
            let scale = e.clone().narrow(1, 0, o);
            let shift = e.narrow(1, o, o);
            let h = group_norm_modulated(&self.out_norm, h, scale, shift);
            self.out_conv.forward(silu(h))
        } else {
            let e = e.reshape([n, k, 1, 1]);
            self.out_conv
                .forward(silu(group_norm(&self.out_norm, h + e)))
        };
        let skip = match &self.skip {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}

/// guided-diffusion's `AttentionBlock`: GroupNorm, a kernel-1 `Conv1d` to q, k, v (a linear map
/// here), multi-head dot-product attention over all positions, a zero-initialised projection, and
/// the residual.
#[derive(Module, Debug)]
pub(crate) struct AttentionBlock<B: Backend> {
    norm: GroupNorm<B>,
    qkv: Linear<B>,
    proj_out: Linear<B>,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    new_order: bool,
}

impl<B: Backend> AttentionBlock<B> {
    pub(crate) fn build(
        src: &Weights<'_, B>,
        p: &str,
        channels: usize,
        heads: usize,
        new_order: bool,
    ) -> Self {
        Self {
            norm: norm(src, &format!("{p}.norm"), channels),
            qkv: linear(
                src,
                &format!("{p}.qkv"),
                [channels, 3 * channels],
                true,
                false,
            ),
            proj_out: linear(
                src,
                &format!("{p}.proj_out"),
                [channels, channels],
                true,
                true,
            ),
            heads,
            new_order,
        }
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, hh, ww] = x.dims();
        let t = hh * ww;
        let heads = self.heads;
        let ch = c / heads;
        let x = x.reshape([b, c, t]);
        let qkv = conv1x1(&self.qkv, group_norm(&self.norm, x.clone())); // [B, 3C, T]
        let (q, k, v) = if self.new_order {
            // QKVAttention: split q, k, v first, then heads.
            let part = |i: usize| qkv.clone().narrow(1, i * c, c).reshape([b * heads, ch, t]);
            (part(0), part(1), part(2))
        } else {
            // QKVAttentionLegacy: heads first, then q, k, v inside each head.
            let qkv = qkv.reshape([b * heads, 3 * ch, t]);
            let part = |i: usize| qkv.clone().narrow(1, i * ch, ch);
            (part(0), part(1), part(2))
        };
        // guided-diffusion scales q and k by ch^(-1/4) each (for float16); in float32 scaling q
        // alone by ch^(-1/2) is the same product (exactly so when ch is a power of 4, e.g. 64).
        let scale = 1.0 / (ch as f64).sqrt();
        // weight[b, t, s] = sum_c q[b, c, t] k[b, c, s]
        let weight = (q * scale).swap_dims(1, 2).matmul(k);
        let weight = softmax(weight, 2);
        // a[b, c, t] = sum_s weight[b, t, s] v[b, c, s]
        let a = v.matmul(weight.swap_dims(1, 2)).reshape([b, c, t]);
        let h = conv1x1(&self.proj_out, a);
        (x + h).reshape([b, c, hh, ww])
    }
}

/// `Downsample` (a stride-2 3x3 conv, or 2x2 average pooling) or `Upsample` (nearest 2x, then
/// an optional 3x3 conv) between levels when `resblock_updown` is off.
#[derive(Module, Debug)]
pub(crate) struct Resample<B: Backend> {
    conv: Option<Conv2d<B>>,
    #[module(skip)]
    up: bool,
}

impl<B: Backend> Resample<B> {
    pub(crate) fn build(
        src: &Weights<'_, B>,
        p: &str,
        channels: usize,
        use_conv: bool,
        up: bool,
    ) -> Self {
        let conv = use_conv.then(|| {
            if up {
                conv(src, &format!("{p}.conv"), [channels, channels], 3, 1, false)
            } else {
                conv(src, &format!("{p}.op"), [channels, channels], 3, 2, false)
            }
        });
        Self { conv, up }
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match (self.up, &self.conv) {
            (true, Some(conv)) => conv.forward(upsample_nearest(x)),
            (true, None) => upsample_nearest(x),
            (false, Some(conv)) => conv.forward(x),
            (false, None) => avg_pool(x),
        }
    }
}

/// One element of a `TimestepEmbedSequential`.
// A few dozen layers per network: the variant size difference costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub(crate) enum Layer<B: Backend> {
    /// The input convolution.
    Conv(Conv2d<B>),
    /// A residual block (takes the timestep embedding).
    Res(ResBlock<B>),
    /// A self-attention block.
    Attn(AttentionBlock<B>),
    /// A `Downsample` / `Upsample` layer.
    Resample(Resample<B>),
}

/// guided-diffusion's `TimestepEmbedSequential`.
#[derive(Module, Debug)]
pub(crate) struct Block<B: Backend> {
    pub layers: Vec<Layer<B>>,
}

impl<B: Backend> Block<B> {
    pub(crate) fn forward(&self, mut x: Tensor<B, 4>, emb: &Tensor<B, 2>) -> Tensor<B, 4> {
        for layer in &self.layers {
            x = match layer {
                Layer::Conv(c) => c.forward(x),
                Layer::Res(r) => r.forward(x, emb),
                Layer::Attn(a) => a.forward(x),
                Layer::Resample(r) => r.forward(x),
            };
        }
        x
    }
}
