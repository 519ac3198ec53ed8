//! The Kandinsky 2.2 decoder UNet: diffusers' `UNet2DConditionModel` with
//! `addition_embed_type="image"`, `encoder_hid_dim_type="image_proj"`, scale-shift resnets and
//! simple cross-attention with added keys and values.

use crate::norm;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Denoiser, DenoiserOutput, Error, Result};

use super::blocks::{
    AddedKvAttention, PROJECTION_NAMES, ResnetBlock2D, ResnetOptions, conv3, group_norm,
    groups_divide, layer_norm, timestep_embedding,
};
use crate::lora::{LoraConfig, LoraDelta};
use crate::weights::{Init, TensorFile, Weights};

/// A down block of the Kandinsky UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    /// `ResnetDownsampleBlock2D`: resnets, then a downsampling resnet.
    ResnetDownsample,
    /// `SimpleCrossAttnDownBlock2D`: resnet + added-KV attention pairs, then a downsampling resnet.
    SimpleCrossAttnDown,
}

/// An up block of the Kandinsky UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    /// `SimpleCrossAttnUpBlock2D`: resnet + added-KV attention pairs, then an upsampling resnet.
    SimpleCrossAttnUp,
    /// `ResnetUpsampleBlock2D`: resnets, then an upsampling resnet.
    ResnetUpsample,
}

/// The configuration of the Kandinsky 2.2 decoder UNet, in diffusers' `UNet2DConditionModel`
/// terms. The fields not listed are fixed at the values of the published decoder:
/// `act_fn="silu"`, `time_embedding_type="positional"`, `addition_embed_type="image"`,
/// `encoder_hid_dim_type="image_proj"`, `mid_block_type="UNetMidBlock2DSimpleCrossAttn"`,
/// no class embedding, `only_cross_attention=false`, `cross_attention_norm=None`, 3x3 `conv_in`
/// and `conv_out`, `center_input_sample=false`, `resnet_skip_time_act=false`.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Latent channels in (`in_channels`, 4).
    pub in_channels: usize,
    /// Channels out (`out_channels`, 8: eps then the learned-range variance values).
    pub out_channels: usize,
    /// Widths of the resolution levels (`block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// `down_block_types`, one per level.
    pub down_block_types: Vec<DownBlockType>,
    /// `up_block_types`, one per level, deepest first.
    pub up_block_types: Vec<UpBlockType>,
    /// Resnets per down block (`layers_per_block`; up blocks have one more).
    pub layers_per_block: usize,
    /// Width of one attention head (`attention_head_dim`).
    pub attention_head_dim: usize,
    /// Width of the conditioning tokens (`cross_attention_dim`).
    pub cross_attention_dim: usize,
    /// Width of the image embeddings (`encoder_hid_dim`, CLIP ViT-bigG/14's 1280).
    pub encoder_hid_dim: usize,
    /// Tokens `ImageProjection` makes from one image embedding (diffusers fixes it at 32).
    pub num_image_text_embeds: usize,
    /// GroupNorm groups (`norm_num_groups`).
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the resnets and the output norm (`norm_eps`).
    pub norm_eps: f64,
    /// `flip_sin_to_cos` of the timestep features.
    pub flip_sin_to_cos: bool,
    /// `freq_shift` of the timestep features.
    pub freq_shift: f32,
    /// `resnet_time_scale_shift == "scale_shift"` (else `"default"`).
    pub scale_shift: bool,
    /// `mid_block_scale_factor`.
    pub mid_block_scale_factor: f64,
    /// `resnet_out_scale_factor`.
    pub resnet_out_scale_factor: f64,
    /// `sample_size`: the latent side the network was trained at (informative).
    pub sample_size: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self::kandinsky22_decoder()
    }
}

impl UNetConfig {
    /// The published decoder (`kandinsky-community/kandinsky-2-2-decoder`, `unet/config.json`),
    /// 1,253,057,288 parameters.
    pub fn kandinsky22_decoder() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            in_channels: 4,
            out_channels: 8,
            block_out_channels: vec![384, 768, 1152, 1536],
            down_block_types: vec![
                ResnetDownsample,
                SimpleCrossAttnDown,
                SimpleCrossAttnDown,
                SimpleCrossAttnDown,
            ],
            up_block_types: vec![
                SimpleCrossAttnUp,
                SimpleCrossAttnUp,
                SimpleCrossAttnUp,
                ResnetUpsample,
            ],
            layers_per_block: 3,
            attention_head_dim: 64,
            cross_attention_dim: 768,
            encoder_hid_dim: 1280,
            num_image_text_embeds: 32,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            scale_shift: true,
            mid_block_scale_factor: 1.0,
            resnet_out_scale_factor: 1.0,
            sample_size: 64,
        }
    }

    /// The tiny configuration of the parity fixture (`tools/record_kandinsky.py`): widths
    /// 16, 16, 24, one resnet per down block, 8 groups, heads of 8, 16-wide tokens, 24-wide
    /// image embeddings.
    pub fn tiny() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            block_out_channels: vec![16, 16, 24],
            down_block_types: vec![ResnetDownsample, SimpleCrossAttnDown, SimpleCrossAttnDown],
            up_block_types: vec![SimpleCrossAttnUp, SimpleCrossAttnUp, ResnetUpsample],
            layers_per_block: 1,
            attention_head_dim: 8,
            cross_attention_dim: 16,
            encoder_hid_dim: 24,
            norm_num_groups: 8,
            sample_size: 8,
            ..Self::kandinsky22_decoder()
        }
    }

    fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    fn resnet(&self, scale: f64) -> ResnetOptions {
        ResnetOptions {
            temb_channels: Some(self.time_embed_dim()),
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            scale_shift: self.scale_shift,
            output_scale_factor: scale,
            up: false,
            down: false,
        }
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let levels = self.block_out_channels.len();
        if levels == 0
            || self.down_block_types.len() != levels
            || self.up_block_types.len() != levels
        {
            return Err(Error::shape(
                "UNet block types",
                format!("one down and one up block type per level ({levels} levels, at least 1)"),
                format!(
                    "{} down, {} up",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        let mut widths = self.block_out_channels.clone();
        widths.push(self.cross_attention_dim);
        if !groups_divide(self.norm_num_groups, &self.block_out_channels) {
            return Err(Error::shape(
                "UNet block_out_channels",
                format!("multiples of norm_num_groups = {}", self.norm_num_groups),
                fmt_dims(&self.block_out_channels),
            ));
        }
        if self.attention_head_dim == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| c % self.attention_head_dim != 0)
        {
            return Err(Error::shape(
                "UNet block_out_channels",
                format!(
                    "multiples of attention_head_dim = {}",
                    self.attention_head_dim
                ),
                fmt_dims(&self.block_out_channels),
            ));
        }
        if [
            self.in_channels,
            self.out_channels,
            self.cross_attention_dim,
            self.encoder_hid_dim,
            self.num_image_text_embeds,
        ]
        .contains(&0)
        {
            return Err(Error::out_of_range(
                "UNet channel counts",
                "non-zero",
                format!("{self:?}"),
            ));
        }
        Ok(())
    }

    /// The network with random weights (burn's default initialisers).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<KandinskyUNet<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with all-zero weights (norm scales one), allocated lazily by the OS on
    /// CPU backends: a cheap way to count the parameters of the full-size network.
    pub fn init_zeros<B: Backend>(&self, device: &B::Device) -> Result<KandinskyUNet<B>> {
        self.build(&Weights::zeros(device))
    }

    /// The network with weights from `file`, by diffusers' `UNet2DConditionModel` state-dict
    /// names (`conv_in.weight`, `down_blocks.1.attentions.0.add_k_proj.weight`, ...). Every
    /// missing, wrongly shaped or unexpected tensor is reported in one error.
    pub fn load<B: Backend>(
        &self,
        file: TensorFile,
        device: &B::Device,
    ) -> Result<KandinskyUNet<B>> {
        let w = Weights::from_file(file, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// Like [`load`](Self::load) but leaves tensors this network does not use in `file`
    /// (for a file that holds more than the UNet); call [`TensorFile::finish`] yourself.
    pub fn load_from<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<KandinskyUNet<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// The network with its parameters from `src`, by diffusers' names under `src`'s prefix.
    pub fn build<B: Backend>(&self, src: &Weights<'_, B>) -> Result<KandinskyUNet<B>> {
        self.validate()?;
        let ch = &self.block_out_channels;
        let levels = ch.len();
        let ted = self.time_embed_dim();
        let groups = self.norm_num_groups;
        let head = self.attention_head_dim;
        let cross = self.cross_attention_dim;
        let res = self.resnet(self.resnet_out_scale_factor);

        let mut down_blocks = Vec::with_capacity(levels);
        let mut c_out = ch[0];
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let c_in = c_out;
            c_out = ch[i];
            let name = format!("down_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..self.layers_per_block {
                let cin = if j == 0 { c_in } else { c_out };
                resnets.push(ResnetBlock2D::new(
                    src,
                    &format!("{name}.resnets.{j}"),
                    cin,
                    c_out,
                    res,
                ));
                if *kind == DownBlockType::SimpleCrossAttnDown {
                    attentions.push(AddedKvAttention::new(
                        src,
                        &format!("{name}.attentions.{j}"),
                        c_out,
                        head,
                        cross,
                        groups,
                    ));
                }
            }
            let downsampler = (i + 1 < levels).then(|| {
                let o = ResnetOptions { down: true, ..res };
                ResnetBlock2D::new(src, &format!("{name}.downsamplers.0"), c_out, c_out, o)
            });
            down_blocks.push(UNetBlock {
                resnets,
                attentions,
                sampler: downsampler,
            });
        }

        let c_mid = ch[levels - 1];
        let mid_res = self.resnet(self.mid_block_scale_factor);
        let mid_block = UNetBlock {
            resnets: (0..2)
                .map(|j| {
                    ResnetBlock2D::new(
                        src,
                        &format!("mid_block.resnets.{j}"),
                        c_mid,
                        c_mid,
                        mid_res,
                    )
                })
                .collect(),
            attentions: vec![AddedKvAttention::new(
                src,
                "mid_block.attentions.0",
                c_mid,
                head,
                cross,
                groups,
            )],
            sampler: None,
        };

        let mut up_blocks = Vec::with_capacity(levels);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut c_out = rev[0];
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let prev = c_out;
            c_out = rev[i];
            let c_in = rev[(i + 1).min(levels - 1)];
            let name = format!("up_blocks.{i}");
            let layers = self.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { c_in } else { c_out };
                let cin = if j == 0 { prev } else { c_out };
                resnets.push(ResnetBlock2D::new(
                    src,
                    &format!("{name}.resnets.{j}"),
                    cin + skip,
                    c_out,
                    res,
                ));
                if *kind == UpBlockType::SimpleCrossAttnUp {
                    attentions.push(AddedKvAttention::new(
                        src,
                        &format!("{name}.attentions.{j}"),
                        c_out,
                        head,
                        cross,
                        groups,
                    ));
                }
            }
            let upsampler = (i + 1 < levels).then(|| {
                let o = ResnetOptions { up: true, ..res };
                ResnetBlock2D::new(src, &format!("{name}.upsamplers.0"), c_out, c_out, o)
            });
            up_blocks.push(UNetBlock {
                resnets,
                attentions,
                sampler: upsampler,
            });
        }

        Ok(KandinskyUNet {
            conv_in: conv3(src, "conv_in", self.in_channels, ch[0]),
            time_linear_1: src.linear("time_embedding.linear_1", ch[0], ted, true),
            time_linear_2: src.linear("time_embedding.linear_2", ted, ted, true),
            add_image_proj: src.linear("add_embedding.image_proj", self.encoder_hid_dim, ted, true),
            add_image_norm: layer_norm(src, "add_embedding.image_norm", ted),
            hid_image_embeds: src.linear(
                "encoder_hid_proj.image_embeds",
                self.encoder_hid_dim,
                self.num_image_text_embeds * cross,
                true,
            ),
            hid_norm: layer_norm(src, "encoder_hid_proj.norm", cross),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(src, "conv_norm_out", groups, ch[0], self.norm_eps),
            conv_out: conv3(src, "conv_out", ch[0], self.out_channels),
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            encoder_hid_dim: self.encoder_hid_dim,
            num_image_text_embeds: self.num_image_text_embeds,
            cross_attention_dim: cross,
            timestep_dim: ch[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift as f64,
        })
    }
}

/// One resolution level (or the middle) of the UNet: resnets, each followed by an attention layer
/// when the block has them, then an optional resampling resnet.
#[derive(Module, Debug)]
pub struct UNetBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<AddedKvAttention<B>>,
    sampler: Option<ResnetBlock2D<B>>,
}

/// The Kandinsky 2.2 decoder UNet. Build it with [`UNetConfig::init`] or [`UNetConfig::load`].
#[derive(Module, Debug)]
pub struct KandinskyUNet<B: Backend> {
    conv_in: Conv2d<B>,
    time_linear_1: Linear<B>,
    time_linear_2: Linear<B>,
    add_image_proj: Linear<B>,
    add_image_norm: LayerNorm<B>,
    hid_image_embeds: Linear<B>,
    hid_norm: LayerNorm<B>,
    down_blocks: Vec<UNetBlock<B>>,
    mid_block: UNetBlock<B>,
    up_blocks: Vec<UNetBlock<B>>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    in_channels: usize,
    out_channels: usize,
    encoder_hid_dim: usize,
    num_image_text_embeds: usize,
    cross_attention_dim: usize,
    timestep_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl<B: Backend> KandinskyUNet<B> {
    /// Output channels (8 for the published decoder: eps then variance values).
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The factor latent sides must be a multiple of, `2^(levels - 1)`.
    pub fn downscale(&self) -> usize {
        1 << self.down_blocks.len().saturating_sub(1)
    }

    /// The raw network output `[N, out_channels, H, W]` for latents `sample` (`[N, in, H, W]`,
    /// `H` and `W` multiples of `2^(levels - 1)`), per-sample `timesteps` and CLIP image
    /// embeddings `image_embeds` (`[N, encoder_hid_dim]`), as diffusers'
    /// `unet(sample, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": ...})`.
    pub fn forward_raw(
        &self,
        sample: Tensor<B, 4>,
        timesteps: &[f32],
        image_embeds: Tensor<B, 2>,
    ) -> Result<Tensor<B, 4>> {
        let [n, c, h, w] = sample.dims();
        let factor = 1usize << (self.down_blocks.len() - 1);
        if c != self.in_channels || n == 0 || h == 0 || w == 0 || h % factor != 0 || w % factor != 0
        {
            return Err(Error::shape(
                "Kandinsky UNet sample",
                format!(
                    "[N >= 1, {}, H, W] with H and W multiples of {factor}",
                    self.in_channels
                ),
                fmt_dims(&[n, c, h, w]),
            ));
        }
        if timesteps.len() != n {
            return Err(Error::shape(
                "Kandinsky UNet timesteps",
                format!("one per sample ({n})"),
                timesteps.len(),
            ));
        }
        let [ne, d] = image_embeds.dims();
        if ne != n || d != self.encoder_hid_dim {
            return Err(Error::shape(
                "Kandinsky UNet image embeddings",
                fmt_dims(&[n, self.encoder_hid_dim]),
                fmt_dims(&[ne, d]),
            ));
        }
        let device = sample.device();
        let t_emb = timestep_embedding::<B>(
            timesteps,
            self.timestep_dim,
            self.flip_sin_to_cos,
            self.freq_shift as f32,
            &device,
        );
        let emb = self
            .time_linear_2
            .forward(silu(self.time_linear_1.forward(t_emb)));
        let aug = self
            .add_image_norm
            .forward(self.add_image_proj.forward(image_embeds.clone()));
        let emb = emb + aug;
        let context = self
            .hid_norm
            .forward(self.hid_image_embeds.forward(image_embeds).reshape([
                n,
                self.num_image_text_embeds,
                self.cross_attention_dim,
            ]));

        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                x = resnet.forward(x, Some(&emb));
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(x, &context);
                }
                skips.push(x.clone());
            }
            if let Some(down) = &block.sampler {
                x = down.forward(x, Some(&emb));
                skips.push(x.clone());
            }
        }
        let mid = &self.mid_block;
        x = mid.resnets[0].forward(x, Some(&emb));
        for (attn, resnet) in mid.attentions.iter().zip(&mid.resnets[1..]) {
            x = attn.forward(x, &context);
            x = resnet.forward(x, Some(&emb));
        }
        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::format("Kandinsky UNet", "skip connections ran out"))?;
                x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(&emb));
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(x, &context);
                }
            }
            if let Some(up) = &block.sampler {
                x = up.forward(x, Some(&emb));
            }
        }
        Ok(self
            .conv_out
            .forward(silu(norm::group_norm(&self.conv_norm_out, x))))
    }
}

/// LoRA domain tuning (DIFFusion's recipe: rank 4, alpha 8 on the attention projections
/// `to_q|to_k|to_v|to_out|add_k_proj|add_v_proj`). The updates live beside the frozen layers;
/// they are exchanged in peft's layout (`<path>.lora_A.weight` `[r, in]`, `<path>.lora_B.weight`
/// `[out, r]`, paths as diffusers names the UNet's modules, e.g.
/// `down_blocks.1.attentions.0.to_q`).
impl<B: Backend> KandinskyUNet<B> {
    /// The attention layers with their diffusers paths.
    fn attention_layers_mut(&mut self) -> Vec<(String, &mut AddedKvAttention<B>)> {
        let mut out = Vec::new();
        for (i, block) in self.down_blocks.iter_mut().enumerate() {
            for (j, a) in block.attentions.iter_mut().enumerate() {
                out.push((format!("down_blocks.{i}.attentions.{j}"), a));
            }
        }
        for (j, a) in self.mid_block.attentions.iter_mut().enumerate() {
            out.push((format!("mid_block.attentions.{j}"), a));
        }
        for (i, block) in self.up_blocks.iter_mut().enumerate() {
            for (j, a) in block.attentions.iter_mut().enumerate() {
                out.push((format!("up_blocks.{i}.attentions.{j}"), a));
            }
        }
        out
    }

    /// The attention layers with their diffusers paths, read-only.
    fn attention_layers(&self) -> Vec<(String, &AddedKvAttention<B>)> {
        let blocks = self
            .down_blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("down_blocks.{i}"), b))
            .chain([("mid_block".to_string(), &self.mid_block)])
            .chain(
                self.up_blocks
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("up_blocks.{i}"), b)),
            );
        blocks
            .flat_map(|(name, block)| {
                block
                    .attentions
                    .iter()
                    .enumerate()
                    .map(move |(j, a)| (format!("{name}.attentions.{j}"), a))
            })
            .collect()
    }

    /// The paths of every projection `config` targets (whether or not it has an update yet).
    pub fn lora_targets(&self, config: &LoraConfig) -> Vec<String> {
        self.attention_layers()
            .into_iter()
            .flat_map(|(prefix, _)| PROJECTION_NAMES.map(|name| format!("{prefix}.{name}")))
            .filter(|path| config.matches(path))
            .collect()
    }

    /// Fresh LoRA updates ([`LoraConfig::delta_for`]: output unchanged until trained) on every
    /// projection `config` targets, replacing any there; the rest of the network is left as it
    /// is (freeze it with `no_grad` first to train the updates alone). Fails when the targets
    /// match no projection.
    pub fn with_lora(mut self, config: &LoraConfig) -> Result<Self> {
        let mut attached = 0;
        for (prefix, attn) in self.attention_layers_mut() {
            for (name, layer, slot) in attn.projections_mut() {
                if config.matches(&format!("{prefix}.{name}")) {
                    *slot = Some(config.delta_for(layer)?);
                    attached += 1;
                }
            }
        }
        if attached == 0 {
            return Err(no_lora_targets(config));
        }
        Ok(self)
    }

    /// Number of projections carrying a LoRA update.
    pub fn lora_count(&self) -> usize {
        self.attention_layers()
            .iter()
            .map(|(_, attn)| attn.lora_updates().len())
            .sum()
    }

    /// The LoRA factors in peft's layout: `(<path>.lora_A.weight, [r, in])` and
    /// `(<path>.lora_B.weight, [out, r])` per adapted projection, without the `alpha / r` scale.
    pub fn lora_tensors(&self) -> Vec<(String, Tensor<B, 2>)> {
        let mut out = Vec::new();
        for (prefix, attn) in self.attention_layers() {
            for (name, delta) in attn.lora_updates() {
                let path = format!("{prefix}.{name}");
                out.push((
                    format!("{path}.lora_A.weight"),
                    delta.lora_a.val().transpose(),
                ));
                out.push((
                    format!("{path}.lora_B.weight"),
                    delta.lora_b.val().transpose(),
                ));
            }
        }
        out
    }

    /// Sets the LoRA updates of every projection `config` targets from `file` (peft's layout,
    /// as [`KandinskyUNet::lora_tensors`] writes; ranks from `config`), then checks that the
    /// file held exactly those tensors with those shapes.
    pub fn load_lora(mut self, config: &LoraConfig, file: TensorFile) -> Result<Self> {
        let r = config.rank;
        let device = self.conv_in.weight.device();
        let w = Weights::<B>::from_file(file, &device);
        let mut found = 0;
        for (prefix, attn) in self.attention_layers_mut() {
            for (name, layer, slot) in attn.projections_mut() {
                let path = format!("{prefix}.{name}");
                if !config.matches(&path) {
                    continue;
                }
                let [d_in, d_out] = layer.weight.dims();
                let p = w.pp(&path);
                let a = p.tensor::<2>("lora_A.weight", [r, d_in], Init::Zeros);
                let b = p.tensor::<2>("lora_B.weight", [d_out, r], Init::Zeros);
                *slot = Some(LoraDelta::new(
                    d_in,
                    d_out,
                    a.val().transpose(),
                    b.val().transpose(),
                    config.alpha,
                )?);
                found += 1;
            }
        }
        w.finish()?;
        if found == 0 {
            return Err(no_lora_targets(config));
        }
        Ok(self)
    }

    /// Sets the LoRA update of the projection at diffusers path `path` (for example
    /// `down_blocks.1.attentions.0.to_q` or `mid_block.attentions.0.to_out.0`), replacing any
    /// there. Fails when the UNet has no such projection or `delta` does not fit its shape.
    pub fn set_lora_update(&mut self, path: &str, delta: LoraDelta<B>) -> Result<()> {
        for (prefix, attn) in self.attention_layers_mut() {
            for (name, layer, slot) in attn.projections_mut() {
                if format!("{prefix}.{name}") != path {
                    continue;
                }
                let [d_in, d_out] = layer.weight.dims();
                let ([a_in, r], [_, b_out]) = (delta.lora_a.dims(), delta.lora_b.dims());
                if (a_in, b_out) != (d_in, d_out) {
                    return Err(Error::shape(
                        format!("LoRA update of `{path}`"),
                        format!("A [{d_in}, r], B [r, {d_out}]"),
                        format!("A [{a_in}, {r}], B [{r}, {b_out}]"),
                    ));
                }
                *slot = Some(delta);
                return Ok(());
            }
        }
        Err(Error::format(
            "Kandinsky UNet LoRA",
            format!(
                "no attention projection `{path}` (LoRA adapts <block>.attentions.<j>.{{{}}})",
                PROJECTION_NAMES.join(", ")
            ),
        ))
    }

    /// The network with every LoRA update folded into its layer's weights (`W + scale A B`):
    /// the same outputs, plain layers, no updates left.
    pub fn merge_lora(mut self) -> Self {
        for (_, attn) in self.attention_layers_mut() {
            for (_, layer, slot) in attn.projections_mut() {
                if let Some(delta) = slot.take() {
                    *layer = delta.merge_into(layer);
                }
            }
        }
        self
    }
}

/// The error of LoRA targets that match no attention projection.
fn no_lora_targets(config: &LoraConfig) -> Error {
    Error::Empty {
        what: format!("LoRA targets {:?} in the Kandinsky UNet", config.targets).into(),
        hint: "name attention projections: to_q|to_k|to_v|to_out|add_k_proj|add_v_proj".into(),
    }
}

impl<B: Backend> Denoiser<B> for KandinskyUNet<B> {
    fn channels(&self) -> usize {
        self.in_channels
    }

    fn learned_variance(&self) -> bool {
        self.out_channels == 2 * self.in_channels
    }

    fn condition_dim(&self) -> Option<usize> {
        Some(self.encoder_hid_dim)
    }

    /// The decoder always needs an image embedding: for the unconditional branch pass the
    /// embedding of an all-zero image (the Kandinsky 2.2 convention), not `None`.
    fn forward(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        let cond = cond.ok_or_else(|| {
            Error::shape(
                "Kandinsky UNet condition",
                format!("image embeddings [N, {}]", self.encoder_hid_dim),
                "none (pass the zero-image embedding for the unconditional branch)",
            )
        })?;
        let steps: Vec<f32> = t.iter().map(|&s| s as f32).collect();
        let out = self.forward_raw(x_t, &steps, cond)?;
        if self.learned_variance() {
            DenoiserOutput::split_learned(out)
        } else {
            Ok(DenoiserOutput::eps(out))
        }
    }
}
