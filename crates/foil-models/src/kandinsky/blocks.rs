//! Building blocks shared by the Kandinsky 2.2 UNet and MoVQ, after diffusers 0.31.0
//! (`models/resnet.py`, `models/attention_processor.py`, `models/embeddings.py`).

use crate::norm;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::lora::LoraDelta;
use crate::weights::Weights;

/// A torch `nn.Conv2d(c_in, c_out, k, stride, padding)` with bias named `name`; `padding` is
/// (top, left, bottom, right); random: burn's default initialiser.
pub(crate) fn conv<B: Backend>(
    src: &Weights<'_, B>,
    name: &str,
    [c_in, c_out]: [usize; 2],
    k: usize,
    stride: usize,
    [t, l, b, r]: [usize; 4],
) -> Conv2d<B> {
    let config = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(t, l, b, r));
    src.conv2d(name, &config)
}

/// A "same" 3x3 convolution (padding 1).
pub(crate) fn conv3<B: Backend>(
    src: &Weights<'_, B>,
    name: &str,
    c_in: usize,
    c_out: usize,
) -> Conv2d<B> {
    conv(src, name, [c_in, c_out], 3, 1, [1; 4])
}

/// A 1x1 convolution.
pub(crate) fn conv1<B: Backend>(
    src: &Weights<'_, B>,
    name: &str,
    c_in: usize,
    c_out: usize,
) -> Conv2d<B> {
    conv(src, name, [c_in, c_out], 1, 1, [0; 4])
}

/// A torch `nn.GroupNorm(groups, channels, eps)` with affine weights, named `name`.
pub(crate) fn group_norm<B: Backend>(
    src: &Weights<'_, B>,
    name: &str,
    groups: usize,
    channels: usize,
    eps: f64,
) -> GroupNorm<B> {
    src.group_norm(
        name,
        &GroupNormConfig::new(groups, channels).with_epsilon(eps),
    )
}

/// A torch `nn.LayerNorm(dim)` (eps 1e-5) named `name`.
pub(crate) fn layer_norm<B: Backend>(src: &Weights<'_, B>, name: &str, dim: usize) -> LayerNorm<B> {
    src.layer_norm(name, &LayerNormConfig::new(dim))
}

/// Whether `groups` divides every width in `widths`, the condition every GroupNorm needs.
pub(crate) fn groups_divide(groups: usize, widths: &[usize]) -> bool {
    groups > 0 && widths.iter().all(|w| w % groups == 0)
}

/// Nearest-neighbour upsampling by 2 (`F.interpolate(scale_factor=2, mode="nearest")`).
pub fn upsample_nearest2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    upsample_nearest(x, 2)
}

/// Nearest-neighbour upsampling by an integer factor.
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, factor: usize) -> Tensor<B, 4> {
    if factor == 1 {
        return x;
    }
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .repeat_dim(3, factor)
        .repeat_dim(5, factor)
        .reshape([n, c, h * factor, w * factor])
}

/// Sinusoidal timestep features as diffusers' `get_timestep_embedding` computes them in
/// `float32`: `[N, dim]`, `cos` half first when `flip_sin_to_cos`.
pub fn timestep_embedding<B: Backend>(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let ln = -(10000f64.ln() as f32);
    // torch: exp(-ln(10000) * arange(half) / (half - shift)) in float32.
    let freqs: Vec<f32> = (0..half)
        .map(|i| (f64::from(ln * i as f32 / (half as f32 - freq_shift))).exp() as f32)
        .collect();
    let mut values = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let sin = args.iter().map(|a| f64::from(*a).sin() as f32);
        let cos = args.iter().map(|a| f64::from(*a).cos() as f32);
        if flip_sin_to_cos {
            values.extend(cos);
            values.extend(sin);
        } else {
            values.extend(sin);
            values.extend(cos);
        }
        if dim % 2 == 1 {
            values.push(0.0);
        }
    }
    Tensor::from_data(TensorData::new(values, [timesteps.len(), dim]), device)
}

/// Options of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub struct ResnetOptions {
    /// Width of the time embedding, or `None` for a block without one.
    pub temb_channels: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// `time_embedding_norm == "scale_shift"` (else `"default"`, an added shift).
    pub scale_shift: bool,
    /// The output is divided by this.
    pub output_scale_factor: f64,
    /// Nearest 2x upsampling after the first norm (`up=True`).
    pub up: bool,
    /// 2x2 average-pool downsampling after the first norm (`down=True`).
    pub down: bool,
}

/// diffusers' `ResnetBlock2D` (pre-norm, SiLU, optional time embedding, optional 1x1 shortcut,
/// optional parameter-free up/down sampling).
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    time_emb_proj: Option<Linear<B>>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    conv_shortcut: Option<Conv2d<B>>,
    scale_shift: bool,
    up: bool,
    down: bool,
    output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// Builds the block named `name` (`{name}.norm1.weight`, ...).
    pub fn new(
        src: &Weights<'_, B>,
        name: &str,
        c_in: usize,
        c_out: usize,
        o: ResnetOptions,
    ) -> Self {
        let proj_out = if o.scale_shift { 2 * c_out } else { c_out };
        Self {
            norm1: group_norm(src, &format!("{name}.norm1"), o.groups, c_in, o.eps),
            conv1: conv3(src, &format!("{name}.conv1"), c_in, c_out),
            time_emb_proj: o
                .temb_channels
                .map(|t| src.linear(&format!("{name}.time_emb_proj"), t, proj_out, true)),
            norm2: group_norm(src, &format!("{name}.norm2"), o.groups, c_out, o.eps),
            conv2: conv3(src, &format!("{name}.conv2"), c_out, c_out),
            conv_shortcut: (c_in != c_out)
                .then(|| conv1(src, &format!("{name}.conv_shortcut"), c_in, c_out)),
            scale_shift: o.scale_shift,
            up: o.up,
            down: o.down,
            output_scale_factor: o.output_scale_factor,
        }
    }

    /// The block on `x` with time embedding `temb` (`[N, temb_channels]`, ignored by a block
    /// without a time projection).
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut input = x.clone();
        let mut h = silu(norm::group_norm(&self.norm1, x));
        if self.up {
            input = upsample_nearest2x(input);
            h = upsample_nearest2x(h);
        } else if self.down {
            input = avg_pool2d(input, [2, 2], [2, 2], [0, 0], true, false);
            h = avg_pool2d(h, [2, 2], [2, 2], [0, 0], true, false);
        }
        h = self.conv1.forward(h);
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(proj.forward(silu(t.clone()))),
            _ => None,
        };
        h = match temb {
            Some(t) if self.scale_shift => {
                let c = t.dims()[1] / 2;
                let scale = t.clone().narrow(1, 0, c);
                let shift = t.narrow(1, c, c);
                norm::group_norm_modulated(&self.norm2, h, scale, shift)
            }
            Some(t) => {
                let [n, c] = t.dims();
                norm::group_norm(&self.norm2, h + t.reshape([n, c, 1, 1]))
            }
            None => norm::group_norm(&self.norm2, h),
        };
        h = self.conv2.forward(silu(h));
        if let Some(sc) = &self.conv_shortcut {
            input = sc.forward(input);
        }
        let out = input + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// Multi-head attention over `[N, heads, L, d]` tensors: `softmax(q k^T / sqrt(d)) v`.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let d = q.dims()[3];
    let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
    softmax(scores, 3).matmul(v)
}

/// `[N, L, heads * d]` to `[N, heads, L, d]` (diffusers' `head_to_batch_dim(out_dim=4)`).
pub(crate) fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [n, l, inner] = x.dims();
    x.reshape([n, l, heads, inner / heads]).swap_dims(1, 2)
}

/// `[N, heads, L, d]` back to `[N, L, heads * d]`.
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [n, heads, l, d] = x.dims();
    x.swap_dims(1, 2).reshape([n, l, heads * d])
}

/// diffusers' `Attention` with `added_kv_proj_dim` run by `AttnAddedKVProcessor2_0`: group norm on
/// the image tokens, queries from them, keys and values from the conditioning tokens
/// (`add_k_proj`/`add_v_proj`) concatenated before the image tokens' own (`to_k`/`to_v`),
/// output projection and residual.
#[derive(Module, Debug)]
pub struct AddedKvAttention<B: Backend> {
    group_norm: GroupNorm<B>,
    to_q: Linear<B>,
    to_k: Linear<B>,
    to_v: Linear<B>,
    add_k_proj: Linear<B>,
    add_v_proj: Linear<B>,
    to_out: Linear<B>,
    heads: usize,
    // LoRA updates of the six projections (none in a plain layer; see `KandinskyUNet::with_lora`).
    lora_q: Option<LoraDelta<B>>,
    lora_k: Option<LoraDelta<B>>,
    lora_v: Option<LoraDelta<B>>,
    lora_add_k: Option<LoraDelta<B>>,
    lora_add_v: Option<LoraDelta<B>>,
    lora_out: Option<LoraDelta<B>>,
}

/// The diffusers names of an attention layer's six projections.
pub(crate) const PROJECTION_NAMES: [&str; 6] = [
    "to_q",
    "to_k",
    "to_v",
    "add_k_proj",
    "add_v_proj",
    "to_out.0",
];

/// A projection and its optional LoRA update, by diffusers name.
pub(crate) type Projection<'a, B> = (
    &'static str,
    &'a mut Linear<B>,
    &'a mut Option<LoraDelta<B>>,
);

/// `layer(x)`, plus the LoRA update when there is one.
fn project<B: Backend, const D: usize>(
    layer: &Linear<B>,
    lora: &Option<LoraDelta<B>>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match lora {
        Some(delta) => layer.forward(x.clone()) + delta.forward(x),
        None => layer.forward(x),
    }
}

impl<B: Backend> AddedKvAttention<B> {
    /// Builds the layer named `name` for `channels` image channels in heads of `head_dim`, with
    /// conditioning tokens of width `cross_dim`.
    pub fn new(
        src: &Weights<'_, B>,
        name: &str,
        channels: usize,
        head_dim: usize,
        cross_dim: usize,
        groups: usize,
    ) -> Self {
        let heads = channels / head_dim;
        let inner = heads * head_dim;
        Self {
            group_norm: group_norm(src, &format!("{name}.group_norm"), groups, channels, 1e-5),
            to_q: src.linear(&format!("{name}.to_q"), channels, inner, true),
            to_k: src.linear(&format!("{name}.to_k"), channels, inner, true),
            to_v: src.linear(&format!("{name}.to_v"), channels, inner, true),
            add_k_proj: src.linear(&format!("{name}.add_k_proj"), cross_dim, inner, true),
            add_v_proj: src.linear(&format!("{name}.add_v_proj"), cross_dim, inner, true),
            to_out: src.linear(&format!("{name}.to_out.0"), inner, channels, true),
            heads,
            lora_q: None,
            lora_k: None,
            lora_v: None,
            lora_add_k: None,
            lora_add_v: None,
            lora_out: None,
        }
    }

    /// The six projections with their LoRA slots, by their diffusers names (relative to the
    /// layer).
    pub(crate) fn projections_mut(&mut self) -> [Projection<'_, B>; 6] {
        [
            ("to_q", &mut self.to_q, &mut self.lora_q),
            ("to_k", &mut self.to_k, &mut self.lora_k),
            ("to_v", &mut self.to_v, &mut self.lora_v),
            ("add_k_proj", &mut self.add_k_proj, &mut self.lora_add_k),
            ("add_v_proj", &mut self.add_v_proj, &mut self.lora_add_v),
            ("to_out.0", &mut self.to_out, &mut self.lora_out),
        ]
    }

    /// The LoRA updates present, by the projections' diffusers names.
    pub(crate) fn lora_updates(&self) -> Vec<(&'static str, &LoraDelta<B>)> {
        [
            ("to_q", &self.lora_q),
            ("to_k", &self.lora_k),
            ("to_v", &self.lora_v),
            ("add_k_proj", &self.lora_add_k),
            ("add_v_proj", &self.lora_add_v),
            ("to_out.0", &self.lora_out),
        ]
        .into_iter()
        .filter_map(|(name, slot)| slot.as_ref().map(|d| (name, d)))
        .collect()
    }

    /// The layer on image features `x` (`[N, C, H, W]`) with conditioning tokens `context`
    /// (`[N, S, cross_dim]`).
    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let tokens =
            norm::group_norm(&self.group_norm, x.clone().reshape([n, c, h * w])).swap_dims(1, 2);
        let heads = self.heads;
        let q = split_heads(project(&self.to_q, &self.lora_q, tokens.clone()), heads);
        let k_self = split_heads(project(&self.to_k, &self.lora_k, tokens.clone()), heads);
        let v_self = split_heads(project(&self.to_v, &self.lora_v, tokens), heads);
        let k_ctx = split_heads(
            project(&self.add_k_proj, &self.lora_add_k, context.clone()),
            heads,
        );
        let v_ctx = split_heads(
            project(&self.add_v_proj, &self.lora_add_v, context.clone()),
            heads,
        );
        let k = Tensor::cat(vec![k_ctx, k_self], 2);
        let v = Tensor::cat(vec![v_ctx, v_self], 2);
        let out = project(
            &self.to_out,
            &self.lora_out,
            merge_heads(attention(q, k, v)),
        );
        out.swap_dims(1, 2).reshape([n, c, h, w]) + x
    }
}
