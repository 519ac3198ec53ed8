//! MoVQ, the Kandinsky 2.2 image autoencoder: diffusers' `VQModel` with `norm_type="spatial"`
//! (the decoder's norms are modulated by the quantized latents, `SpatialNorm`).
//!
//! Kandinsky's pipelines never quantize: [`MoVq::encode`] is encoder + `quant_conv`, and
//! [`MoVq::decode`] is `decode(latents, force_not_quantize=True)`: `post_quant_conv`, then the
//! decoder conditioned on the latents themselves. The codebook is kept (and loaded) so the
//! parameter count matches the published model, but no step uses it.

use crate::norm;
use burn::module::{Initializer, Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Error, Result};

use super::blocks::{
    attention, conv, conv1, conv3, group_norm, groups_divide, merge_heads, split_heads,
    upsample_nearest, upsample_nearest2x,
};
use crate::weights::{Init, TensorFile, Weights};

/// Groups of every `SpatialNorm` (fixed at 32 in diffusers).
const SPATIAL_GROUPS: usize = 32;
/// Epsilon of every norm of the autoencoder.
const EPS: f64 = 1e-6;

/// The configuration of diffusers' `VQModel` with `norm_type="spatial"` and `act_fn="silu"`.
#[derive(Debug, Clone, PartialEq)]
pub struct MoVqConfig {
    /// Image channels (`in_channels`, 3).
    pub in_channels: usize,
    /// Decoded image channels (`out_channels`, 3).
    pub out_channels: usize,
    /// Latent channels (`latent_channels`, 4).
    pub latent_channels: usize,
    /// Codebook vector width (`vq_embed_dim`, 4).
    pub vq_embed_dim: usize,
    /// Codebook size (`num_vq_embeddings`, 16384).
    pub num_vq_embeddings: usize,
    /// Widths of the resolution levels (`block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Per encoder level: `AttnDownEncoderBlock2D` (true) or `DownEncoderBlock2D` (false).
    pub down_block_attention: Vec<bool>,
    /// Per decoder level, deepest first: `AttnUpDecoderBlock2D` (true) or `UpDecoderBlock2D`.
    pub up_block_attention: Vec<bool>,
    /// Resnets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// GroupNorm groups of the encoder (the decoder's spatial norms always use 32).
    pub norm_num_groups: usize,
    /// `scaling_factor` of the published config (0.18215); Kandinsky's pipelines do not apply it.
    pub scaling_factor: f32,
}

impl Default for MoVqConfig {
    fn default() -> Self {
        Self::kandinsky22()
    }
}

impl MoVqConfig {
    /// The published MoVQ (`kandinsky-community/kandinsky-2-2-decoder`, `movq/config.json`),
    /// 67,832,495 parameters with its codebook.
    pub fn kandinsky22() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            vq_embed_dim: 4,
            num_vq_embeddings: 16384,
            block_out_channels: vec![128, 256, 256, 512],
            down_block_attention: vec![false, false, false, true],
            up_block_attention: vec![true, false, false, false],
            layers_per_block: 2,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
        }
    }

    /// The tiny configuration of the parity fixture (`tools/record_kandinsky.py`): widths 64, 32
    /// (so an encoder and a decoder resnet have 1x1 shortcuts), one resnet per encoder block,
    /// 8 encoder groups, a 32-vector codebook.
    pub fn tiny() -> Self {
        Self {
            num_vq_embeddings: 32,
            block_out_channels: vec![64, 32],
            down_block_attention: vec![false, true],
            up_block_attention: vec![true, false],
            layers_per_block: 1,
            norm_num_groups: 8,
            ..Self::kandinsky22()
        }
    }

    /// The spatial downscale factor, `2^(levels - 1)` (8 for the published model).
    pub fn downscale(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let levels = self.block_out_channels.len();
        if levels == 0
            || self.down_block_attention.len() != levels
            || self.up_block_attention.len() != levels
        {
            return Err(Error::shape(
                "MoVQ block types",
                format!("one down and one up block type per level ({levels} levels, at least 1)"),
                format!(
                    "{} down, {} up",
                    self.down_block_attention.len(),
                    self.up_block_attention.len()
                ),
            ));
        }
        if !groups_divide(self.norm_num_groups, &self.block_out_channels)
            || !groups_divide(SPATIAL_GROUPS, &self.block_out_channels)
        {
            return Err(Error::shape(
                "MoVQ block_out_channels",
                format!(
                    "multiples of norm_num_groups = {} and of the spatial norms' 32 groups",
                    self.norm_num_groups
                ),
                fmt_dims(&self.block_out_channels),
            ));
        }
        if [
            self.in_channels,
            self.out_channels,
            self.latent_channels,
            self.vq_embed_dim,
            self.layers_per_block,
        ]
        .contains(&0)
        {
            return Err(Error::out_of_range(
                "MoVQ channel and layer counts",
                "non-zero",
                format!("{self:?}"),
            ));
        }
        Ok(())
    }

    /// The autoencoder with random weights (burn's default initialisers; the codebook uniform
    /// in `[-1, 1]`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MoVq<B>> {
        self.build(&Weights::random(device))
    }

    /// The autoencoder with all-zero weights (norm scales one), allocated lazily by the OS on
    /// CPU backends: a cheap way to count parameters.
    pub fn init_zeros<B: Backend>(&self, device: &B::Device) -> Result<MoVq<B>> {
        self.build(&Weights::zeros(device))
    }

    /// The autoencoder with weights from `file`, by diffusers' `VQModel` state-dict names
    /// (`encoder.conv_in.weight`, `decoder.up_blocks.0.attentions.0.spatial_norm.conv_y.weight`,
    /// ...; attention weights also under their pre-0.15 names `query`/`key`/`value`/`proj_attn`).
    /// Every missing, wrongly shaped or unexpected tensor is reported in one error.
    pub fn load<B: Backend>(&self, file: TensorFile, device: &B::Device) -> Result<MoVq<B>> {
        let w = Weights::from_file(file, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// Like [`load`](Self::load) but leaves tensors this network does not use in `file`; call
    /// [`TensorFile::finish`] yourself.
    pub fn load_from<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<MoVq<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// The autoencoder with its parameters from `src`, by diffusers' names under `src`'s prefix.
    pub fn build<B: Backend>(&self, src: &Weights<'_, B>) -> Result<MoVq<B>> {
        self.validate()?;
        let ch = &self.block_out_channels;
        let levels = ch.len();
        let g = self.norm_num_groups;
        let zq = self.latent_channels;

        // Encoder.
        let mut down = Vec::with_capacity(levels);
        let mut c_out = ch[0];
        for (i, &width) in ch.iter().enumerate() {
            let c_in = c_out;
            c_out = width;
            let name = format!("encoder.down_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..self.layers_per_block {
                let cin = if j == 0 { c_in } else { c_out };
                resnets.push(VaeResnet::new(
                    src,
                    &format!("{name}.resnets.{j}"),
                    cin,
                    c_out,
                    Some(g),
                    zq,
                ));
                if self.down_block_attention[i] {
                    attentions.push(VaeAttention::new(
                        src,
                        &format!("{name}.attentions.{j}"),
                        c_out,
                        Some(g),
                        zq,
                    ));
                }
            }
            let sampler = (i + 1 < levels).then(|| {
                // Downsample2D(padding=0): pad right and bottom by one, 3x3 stride-2 convolution.
                conv(
                    src,
                    &format!("{name}.downsamplers.0.conv"),
                    [c_out, c_out],
                    3,
                    2,
                    [0, 0, 1, 1],
                )
            });
            down.push(VaeBlock {
                resnets,
                attentions,
                sampler,
            });
        }
        let c_mid = ch[levels - 1];
        let enc_mid = self.mid(src, "encoder.mid_block", c_mid, Some(g));

        // Decoder.
        let dec_mid = self.mid(src, "decoder.mid_block", c_mid, None);
        let mut up = Vec::with_capacity(levels);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut c_out = rev[0];
        for (i, &width) in rev.iter().enumerate() {
            let c_in = c_out;
            c_out = width;
            let name = format!("decoder.up_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..=self.layers_per_block {
                let cin = if j == 0 { c_in } else { c_out };
                resnets.push(VaeResnet::new(
                    src,
                    &format!("{name}.resnets.{j}"),
                    cin,
                    c_out,
                    None,
                    zq,
                ));
                if self.up_block_attention[i] {
                    attentions.push(VaeAttention::new(
                        src,
                        &format!("{name}.attentions.{j}"),
                        c_out,
                        None,
                        zq,
                    ));
                }
            }
            let sampler = (i + 1 < levels)
                .then(|| conv3(src, &format!("{name}.upsamplers.0.conv"), c_out, c_out));
            up.push(VaeBlock {
                resnets,
                attentions,
                sampler,
            });
        }

        Ok(MoVq {
            encoder_conv_in: conv3(src, "encoder.conv_in", self.in_channels, ch[0]),
            encoder_down: down,
            encoder_mid: enc_mid,
            encoder_norm_out: group_norm(src, "encoder.conv_norm_out", g, c_mid, EPS),
            encoder_conv_out: conv3(src, "encoder.conv_out", c_mid, self.latent_channels),
            quant_conv: conv1(src, "quant_conv", self.latent_channels, self.vq_embed_dim),
            codebook: src.tensor(
                "quantize.embedding.weight",
                [self.num_vq_embeddings, self.vq_embed_dim],
                Init::lazy(Initializer::Uniform {
                    min: -1.0,
                    max: 1.0,
                }),
            ),
            post_quant_conv: conv1(
                src,
                "post_quant_conv",
                self.vq_embed_dim,
                self.latent_channels,
            ),
            decoder_conv_in: conv3(src, "decoder.conv_in", self.latent_channels, c_mid),
            decoder_mid: dec_mid,
            decoder_up: up,
            decoder_norm_out: Norm::new(src, "decoder.conv_norm_out", ch[0], None, zq),
            decoder_conv_out: conv3(src, "decoder.conv_out", ch[0], self.out_channels),
            in_channels: self.in_channels,
            latent_channels: self.latent_channels,
            downscale: self.downscale(),
        })
    }

    fn mid<B: Backend>(
        &self,
        src: &Weights<'_, B>,
        name: &str,
        c: usize,
        groups: Option<usize>,
    ) -> VaeBlock<B> {
        let zq = self.latent_channels;
        VaeBlock {
            resnets: (0..2)
                .map(|j| VaeResnet::new(src, &format!("{name}.resnets.{j}"), c, c, groups, zq))
                .collect(),
            attentions: vec![VaeAttention::new(
                src,
                &format!("{name}.attentions.0"),
                c,
                groups,
                zq,
            )],
            sampler: None,
        }
    }
}

/// `GroupNorm` (encoder) or `SpatialNorm` (decoder: GroupNorm(32) of the features, scaled and
/// shifted by 1x1 convolutions of the nearest-upsampled quantized latents).
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    group: GroupNorm<B>,
    conv_y: Option<Conv2d<B>>,
    conv_b: Option<Conv2d<B>>,
}

impl<B: Backend> Norm<B> {
    /// A GroupNorm named `name` when `groups` is given, else a SpatialNorm named `name`
    /// (`{name}.norm_layer`, `{name}.conv_y`, `{name}.conv_b`) conditioned on `zq` channels.
    fn new(src: &Weights<'_, B>, name: &str, c: usize, groups: Option<usize>, zq: usize) -> Self {
        match groups {
            Some(g) => Self {
                group: group_norm(src, name, g, c, EPS),
                conv_y: None,
                conv_b: None,
            },
            None => Self {
                group: group_norm(src, &format!("{name}.norm_layer"), SPATIAL_GROUPS, c, EPS),
                conv_y: Some(conv1(src, &format!("{name}.conv_y"), zq, c)),
                conv_b: Some(conv1(src, &format!("{name}.conv_b"), zq, c)),
            },
        }
    }

    fn forward(&self, x: Tensor<B, 4>, zq: Option<&Tensor<B, 4>>) -> Tensor<B, 4> {
        let normed = norm::group_norm(&self.group, x);
        match (&self.conv_y, &self.conv_b, zq) {
            (Some(cy), Some(cb), Some(zq)) => {
                let factor = normed.dims()[2] / zq.dims()[2];
                let zq = upsample_nearest(zq.clone(), factor);
                normed * cy.forward(zq.clone()) + cb.forward(zq)
            }
            _ => normed,
        }
    }
}

/// diffusers' `ResnetBlock2D` without time embedding (encoder) or `ResnetBlockCondNorm2D` with
/// spatial norms (decoder).
#[derive(Module, Debug)]
pub struct VaeResnet<B: Backend> {
    norm1: Norm<B>,
    conv1: Conv2d<B>,
    norm2: Norm<B>,
    conv2: Conv2d<B>,
    conv_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> VaeResnet<B> {
    fn new(
        src: &Weights<'_, B>,
        name: &str,
        c_in: usize,
        c_out: usize,
        groups: Option<usize>,
        zq: usize,
    ) -> Self {
        Self {
            norm1: Norm::new(src, &format!("{name}.norm1"), c_in, groups, zq),
            conv1: conv3(src, &format!("{name}.conv1"), c_in, c_out),
            norm2: Norm::new(src, &format!("{name}.norm2"), c_out, groups, zq),
            conv2: conv3(src, &format!("{name}.conv2"), c_out, c_out),
            conv_shortcut: (c_in != c_out)
                .then(|| conv1(src, &format!("{name}.conv_shortcut"), c_in, c_out)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>, zq: Option<&Tensor<B, 4>>) -> Tensor<B, 4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone(), zq)));
        let h = self.conv2.forward(silu(self.norm2.forward(h, zq)));
        let x = match &self.conv_shortcut {
            Some(sc) => sc.forward(x),
            None => x,
        };
        x + h
    }
}

/// diffusers' single-head `Attention` of the VAE blocks (`_from_deprecated_attn_block`): group or
/// spatial norm, self-attention over the pixels, output projection, residual.
#[derive(Module, Debug)]
pub struct VaeAttention<B: Backend> {
    norm: Norm<B>,
    to_q: Linear<B>,
    to_k: Linear<B>,
    to_v: Linear<B>,
    to_out: Linear<B>,
}

impl<B: Backend> VaeAttention<B> {
    fn new(src: &Weights<'_, B>, name: &str, c: usize, groups: Option<usize>, zq: usize) -> Self {
        let norm_name = if groups.is_some() {
            "group_norm"
        } else {
            "spatial_norm"
        };
        // Checkpoints written before diffusers 0.15 name the projections query/key/value/proj_attn.
        let old = src.contains(&format!("{name}.query.weight"));
        let [q, k, v, o] = if old {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        Self {
            norm: Norm::new(src, &format!("{name}.{norm_name}"), c, groups, zq),
            to_q: src.linear(&format!("{name}.{q}"), c, c, true),
            to_k: src.linear(&format!("{name}.{k}"), c, c, true),
            to_v: src.linear(&format!("{name}.{v}"), c, c, true),
            to_out: src.linear(&format!("{name}.{o}"), c, c, true),
        }
    }

    fn forward(&self, x: Tensor<B, 4>, zq: Option<&Tensor<B, 4>>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let tokens = self
            .norm
            .forward(x.clone(), zq)
            .reshape([n, c, h * w])
            .swap_dims(1, 2);
        let q = split_heads(self.to_q.forward(tokens.clone()), 1);
        let k = split_heads(self.to_k.forward(tokens.clone()), 1);
        let v = split_heads(self.to_v.forward(tokens), 1);
        let out = self.to_out.forward(merge_heads(attention(q, k, v)));
        out.swap_dims(1, 2).reshape([n, c, h, w]) + x
    }
}

/// One encoder or decoder level (or a middle block): resnets, each followed by an attention
/// layer when the block has them, then an optional resampling convolution.
#[derive(Module, Debug)]
pub struct VaeBlock<B: Backend> {
    resnets: Vec<VaeResnet<B>>,
    attentions: Vec<VaeAttention<B>>,
    sampler: Option<Conv2d<B>>,
}

impl<B: Backend> VaeBlock<B> {
    fn forward_level(
        &self,
        mut x: Tensor<B, 4>,
        zq: Option<&Tensor<B, 4>>,
        up: bool,
    ) -> Tensor<B, 4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, zq);
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(x, zq);
            }
        }
        match &self.sampler {
            Some(conv) if up => conv.forward(upsample_nearest2x(x)),
            Some(conv) => conv.forward(x),
            None => x,
        }
    }

    fn forward_mid(&self, x: Tensor<B, 4>, zq: Option<&Tensor<B, 4>>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, zq);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(attn.forward(x, zq), zq);
        }
        x
    }
}

/// The MoVQ autoencoder. Build it with [`MoVqConfig::init`] or [`MoVqConfig::load`].
#[derive(Module, Debug)]
pub struct MoVq<B: Backend> {
    encoder_conv_in: Conv2d<B>,
    encoder_down: Vec<VaeBlock<B>>,
    encoder_mid: VaeBlock<B>,
    encoder_norm_out: GroupNorm<B>,
    encoder_conv_out: Conv2d<B>,
    quant_conv: Conv2d<B>,
    /// The VQ codebook `[num_vq_embeddings, vq_embed_dim]` (`quantize.embedding.weight`), unused
    /// by Kandinsky's encode and decode.
    codebook: Param<Tensor<B, 2>>,
    post_quant_conv: Conv2d<B>,
    decoder_conv_in: Conv2d<B>,
    decoder_mid: VaeBlock<B>,
    decoder_up: Vec<VaeBlock<B>>,
    decoder_norm_out: Norm<B>,
    decoder_conv_out: Conv2d<B>,
    in_channels: usize,
    latent_channels: usize,
    downscale: usize,
}

impl<B: Backend> MoVq<B> {
    /// Latent channels (4).
    pub fn latent_channels(&self) -> usize {
        self.latent_channels
    }

    /// Spatial downscale factor from images to latents (8).
    pub fn downscale(&self) -> usize {
        self.downscale
    }

    /// Latents `[N, latent, H / f, W / f]` of images `[N, in, H, W]` in `[-1, 1]` (`H`, `W`
    /// multiples of the downscale `f`): `VQModel.encode(x).latents`, unquantized and unscaled.
    pub fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [n, c, h, w] = images.dims();
        let f = self.downscale;
        if n == 0 || c != self.in_channels || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::shape(
                "MoVQ images",
                format!(
                    "[N >= 1, {}, H, W] with H and W multiples of {f}",
                    self.in_channels
                ),
                fmt_dims(&[n, c, h, w]),
            ));
        }
        let mut x = self.encoder_conv_in.forward(images);
        for block in &self.encoder_down {
            x = block.forward_level(x, None, false);
        }
        x = self.encoder_mid.forward_mid(x, None);
        x = self
            .encoder_conv_out
            .forward(silu(norm::group_norm(&self.encoder_norm_out, x)));
        Ok(self.quant_conv.forward(x))
    }

    /// Images `[N, out, h * f, w * f]` (about `[-1, 1]`) from latents `[N, latent, h, w]`:
    /// `VQModel.decode(latents, force_not_quantize=True).sample`.
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [n, c, h, w] = latents.dims();
        if n == 0 || c != self.latent_channels || h == 0 || w == 0 {
            return Err(Error::shape(
                "MoVQ latents",
                format!("[N >= 1, {}, h >= 1, w >= 1]", self.latent_channels),
                fmt_dims(&[n, c, h, w]),
            ));
        }
        let zq = latents.clone();
        let mut x = self
            .decoder_conv_in
            .forward(self.post_quant_conv.forward(latents));
        x = self.decoder_mid.forward_mid(x, Some(&zq));
        for block in &self.decoder_up {
            x = block.forward_level(x, Some(&zq), true);
        }
        let x = silu(self.decoder_norm_out.forward(x, Some(&zq)));
        Ok(self.decoder_conv_out.forward(x))
    }
}
