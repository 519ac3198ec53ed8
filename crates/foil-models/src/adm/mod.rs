//! guided-diffusion's UNet ("ADM", Dhariwal and Nichol 2021; `guided_diffusion/unet.py`,
//! `UNetModel`), the unconditional CelebA DDPM of DiME, FastDiME and MaskDiME.
//!
//! The network predicts `eps` (and, with `learn_sigma`, the learned-range variance channels `v`)
//! for noisy images `x_t` at per-sample timesteps. Weights load by guided-diffusion's own
//! state-dict names (`time_embed.0.weight`, `input_blocks.1.0.in_layers.2.weight`,
//! `middle_block.1.qkv.weight`, `out.2.weight`, ...); the attention `qkv` / `proj_out`
//! kernel-1 `Conv1d`s become linear layers.
//!
//! ```no_run
//! # use burn::backend::NdArray;
//! use foil_models::adm::AdmConfig;
//! # fn main() -> foil_core::Result<()> {
//! let device = Default::default();
//! let _unet = AdmConfig::dime_celeba128()
//!     .load_file::<NdArray>("assets/dime/ddpm-celeba.safetensors", &device)?;
//! # Ok(()) }
//! ```

mod blocks;
pub mod flags;
pub mod folder;

use crate::norm::group_norm;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Denoiser, DenoiserOutput, Error, Result};

use crate::weights::{Init, TensorFile, Weights};
use blocks::{
    AttentionBlock, Block, GROUPS, Layer, ResBlock, ResSpec, Resample, Updown, conv, linear, norm,
};

/// The hyper-parameters of guided-diffusion's `UNetModel`, with the same names and meanings.
///
/// `attention_resolutions` holds downsampling rates as `UNetModel` takes them (`ds`, 1 at full
/// resolution), not the image resolutions of `script_util`'s command-line flag; see
/// [`AdmConfig::with_attention_at`] for that form.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmConfig {
    /// Side of the training images (informative: any size divisible by `2^(levels - 1)` runs).
    pub image_size: usize,
    /// Image channels (3).
    pub in_channels: usize,
    /// Base width (`num_channels`).
    pub model_channels: usize,
    /// Whether the network also predicts the variance (output channels `2 * in_channels`).
    pub learn_sigma: bool,
    /// Residual blocks per level.
    pub num_res_blocks: usize,
    /// Downsampling rates at which attention blocks are inserted.
    pub attention_resolutions: Vec<usize>,
    /// Width multiplier of each level (`int(mult * model_channels)`, as in Python).
    pub channel_mult: Vec<f64>,
    /// Learned 3x3 convolutions in `Downsample` / `Upsample` (only used without `resblock_updown`).
    pub conv_resample: bool,
    /// Number of classes of a class-conditional model (`label_emb`), `None` for unconditional.
    pub num_classes: Option<usize>,
    /// Attention heads (used when `num_head_channels` is `None`).
    pub num_heads: usize,
    /// Fixed channels per head (overrides `num_heads`); guided-diffusion's `-1` is `None`.
    pub num_head_channels: Option<usize>,
    /// Heads of the output (upsampling) path's attention; `None` = `num_heads`.
    pub num_heads_upsample: Option<usize>,
    /// FiLM-like timestep conditioning: `norm(h) * (1 + scale) + shift`.
    pub use_scale_shift_norm: bool,
    /// Residual blocks with up/downsampling instead of `Upsample` / `Downsample`.
    pub resblock_updown: bool,
    /// `QKVAttention` (split q, k, v before heads) instead of `QKVAttentionLegacy`.
    pub use_new_attention_order: bool,
}

impl Default for AdmConfig {
    /// [`AdmConfig::dime_celeba128`].
    fn default() -> Self {
        Self::dime_celeba128()
    }
}

impl AdmConfig {
    /// DiME's unconditional CelebA 128x128 DDPM (also used by FastDiME and MaskDiME): the flags of
    /// DiME's README and `test.sh` / `celeba-train.sh` (`--attention_resolutions 32,16,8
    /// --class_cond False --learn_sigma True --num_channels 128 --num_heads 4 --num_res_blocks 2
    /// --resblock_updown True --use_scale_shift_norm True`, `num_head_channels` left at -1),
    /// `channel_mult` (1, 1, 2, 3, 4) from `create_model` for 128 px. 105,198,598 parameters.
    pub fn dime_celeba128() -> Self {
        Self {
            image_size: 128,
            in_channels: 3,
            model_channels: 128,
            learn_sigma: true,
            num_res_blocks: 2,
            attention_resolutions: vec![],
            channel_mult: vec![1.0, 1.0, 2.0, 3.0, 4.0],
            conv_resample: true,
            num_classes: None,
            num_heads: 4,
            num_head_channels: None,
            num_heads_upsample: None,
            use_scale_shift_norm: true,
            resblock_updown: true,
            use_new_attention_order: false,
        }
        .with_attention_at(&[32, 16, 8])
    }

    /// A tiny configuration with DiME's switches for tests: 16x16 images, widths 32, two levels,
    /// one residual block per level, attention at 8x8 with 16 channels per head, learned sigma.
    pub fn tiny() -> Self {
        Self {
            image_size: 16,
            in_channels: 3,
            model_channels: 32,
            learn_sigma: true,
            num_res_blocks: 1,
            attention_resolutions: vec![2],
            channel_mult: vec![1.0, 1.0],
            conv_resample: true,
            num_classes: None,
            num_heads: 1,
            num_head_channels: Some(16),
            num_heads_upsample: None,
            use_scale_shift_norm: true,
            resblock_updown: true,
            use_new_attention_order: false,
        }
    }

    /// A tiny configuration through the other code paths: class-conditional (3 classes),
    /// convolutional `Downsample` / `Upsample`, additive timestep embedding, the new attention
    /// order with 2 heads at full resolution and in the middle, no learned sigma; widths 32 and 64
    /// (at 32 channels in 32 groups, GroupNorm would cancel the additive embedding).
    pub fn tiny_cond() -> Self {
        Self {
            image_size: 16,
            in_channels: 3,
            model_channels: 32,
            learn_sigma: false,
            num_res_blocks: 1,
            attention_resolutions: vec![1],
            channel_mult: vec![1.0, 2.0],
            conv_resample: true,
            num_classes: Some(3),
            num_heads: 2,
            num_head_channels: None,
            num_heads_upsample: None,
            use_scale_shift_norm: false,
            resblock_updown: false,
            use_new_attention_order: true,
        }
    }

    /// Sets `attention_resolutions` from image resolutions, as `script_util.create_model` reads
    /// `--attention_resolutions 32,16,8` (`ds = image_size / res`).
    pub fn with_attention_at(mut self, resolutions: &[usize]) -> Self {
        self.attention_resolutions = resolutions
            .iter()
            .filter(|&&r| r > 0)
            .map(|&r| self.image_size / r)
            .collect();
        self
    }

    /// Output channels: `in_channels`, doubled with `learn_sigma`.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    /// Width of the timestep embedding (`4 * model_channels`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    fn width(&self, mult: f64) -> usize {
        (mult * self.model_channels as f64) as usize
    }

    fn heads(&self, channels: usize, upsample: bool) -> usize {
        match self.num_head_channels {
            Some(hc) => channels / hc.max(1),
            None if upsample => self.num_heads_upsample.unwrap_or(self.num_heads),
            None => self.num_heads,
        }
    }

    /// Checks that the configuration builds: widths divisible by the 32 normalisation groups,
    /// attention widths divisible by the heads.
    pub fn validate(&self) -> Result<()> {
        let what = "guided-diffusion UNet configuration";
        if self.in_channels == 0
            || self.model_channels == 0
            || self.channel_mult.is_empty()
            || self.channel_mult.len() > 16
        {
            return Err(Error::out_of_range(
                what,
                "in_channels and model_channels non-zero, 1 to 16 levels in channel_mult",
                format!(
                    "in_channels {}, model_channels {}, channel_mult {:?}",
                    self.in_channels, self.model_channels, self.channel_mult
                ),
            ));
        }
        if matches!(self.num_classes, Some(0)) {
            return Err(Error::out_of_range(what, "num_classes >= 1", 0));
        }
        for &m in &self.channel_mult {
            let w = self.width(m);
            if !(m.is_finite() && w > 0 && w.is_multiple_of(GROUPS)) {
                return Err(Error::out_of_range(
                    format!("{what}: level width int({m} * {})", self.model_channels),
                    format!("a positive multiple of {GROUPS} (GroupNorm32)"),
                    w,
                ));
            }
        }
        // (width, output path?) of every attention block: the levels whose rate is listed, and
        // the middle block at the last level.
        let mut attention: Vec<(usize, bool)> = Vec::new();
        for (level, &m) in self.channel_mult.iter().enumerate() {
            if self.attention_resolutions.contains(&(1 << level)) {
                attention.extend([(self.width(m), false), (self.width(m), true)]);
            }
        }
        if let Some(&m) = self.channel_mult.last() {
            attention.push((self.width(m), false));
        }
        for (w, up) in attention {
            let ok = match self.num_head_channels {
                Some(hc) => hc > 0 && w.is_multiple_of(hc),
                None => {
                    let heads = self.heads(w, up);
                    heads > 0 && w.is_multiple_of(heads)
                }
            };
            if !ok {
                return Err(Error::out_of_range(
                    format!("{what}: attention heads of width {w}"),
                    "heads (or channels per head) dividing the width",
                    format!(
                        "num_heads {}, num_head_channels {:?}, num_heads_upsample {:?}",
                        self.num_heads, self.num_head_channels, self.num_heads_upsample
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The network with random weights (PyTorch's default initialisation; the convolutions
    /// guided-diffusion zero-initialises start at zero, so a fresh network outputs zeros).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Adm<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with weights from `file`, by guided-diffusion's state-dict names. Every
    /// missing, wrongly shaped or unexpected tensor is reported in one error.
    pub fn load<B: Backend>(&self, file: TensorFile, device: &B::Device) -> Result<Adm<B>> {
        let w = Weights::from_file(file, device);
        let model = self.build(&w)?;
        w.finish()?;
        Ok(model)
    }

    /// The network from a safetensors or PyTorch (`.pt`, `.pth`, `.bin`) file of guided-diffusion's state dict (see
    /// [`load`](Self::load)).
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        device: &B::Device,
    ) -> Result<Adm<B>> {
        self.load(TensorFile::open_any(path)?, device)
    }

    /// Takes the network's tensors from `file` and leaves the rest there; the caller's
    /// [`TensorFile::finish`] reports what was missing, mismatched or left over.
    pub fn take_from<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<Adm<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// The tensors [`load`](Self::load) takes, in order: guided-diffusion's names and PyTorch
    /// shapes (`B` and `device` only hold one-element placeholders while the list is built).
    pub fn expected_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Vec<(String, Vec<usize>)>> {
        let w = Weights::<B>::recorder(device);
        let _placeholder = self.build(&w)?;
        Ok(w.recorded())
    }

    fn res_spec(&self, channels: usize, out_channels: usize, updown: Updown) -> ResSpec {
        ResSpec {
            channels,
            out_channels,
            emb_channels: self.time_embed_dim(),
            scale_shift: self.use_scale_shift_norm,
            updown,
        }
    }

    /// The network with its parameters from `src` by guided-diffusion's names (under `src`'s
    /// prefix), mirroring `UNetModel.__init__`; random parameters follow PyTorch's defaults
    /// (`Uniform(+-1 / sqrt(fan_in))`, `Normal(0, 1)` for `label_emb`), drawn in build order.
    pub fn build<B: Backend>(&self, src: &Weights<'_, B>) -> Result<Adm<B>> {
        self.validate()?;
        let mc = self.model_channels;
        let ted = self.time_embed_dim();
        let time_embed = [
            linear(src, "time_embed.0", [mc, ted], false, false),
            linear(src, "time_embed.2", [ted, ted], false, false),
        ];
        let label_emb = self.num_classes.map(|k| {
            src.tensor(
                "label_emb.weight",
                [k, ted],
                Init::Draw(Distribution::Normal(0.0, 1.0)),
            )
        });
        let attn = |src: &Weights<'_, B>, p: &str, ch: usize, up: bool| {
            Layer::Attn(AttentionBlock::build(
                src,
                p,
                ch,
                self.heads(ch, up),
                self.use_new_attention_order,
            ))
        };

        let input_ch = self.width(self.channel_mult[0]);
        let mut ch = input_ch;
        let mut input_blocks = vec![Block {
            layers: vec![Layer::Conv(conv(
                src,
                "input_blocks.0.0",
                [self.in_channels, ch],
                3,
                1,
                false,
            ))],
        }];
        let mut chans = vec![ch];
        let mut ds = 1;
        let levels = self.channel_mult.len();
        for (level, &mult) in self.channel_mult.iter().enumerate() {
            for _ in 0..self.num_res_blocks {
                let p = format!("input_blocks.{}", input_blocks.len());
                let out = self.width(mult);
                let mut layers = vec![Layer::Res(ResBlock::build(
                    src,
                    &format!("{p}.0"),
                    &self.res_spec(ch, out, Updown::None),
                ))];
                ch = out;
                if self.attention_resolutions.contains(&ds) {
                    layers.push(attn(src, &format!("{p}.1"), ch, false));
                }
                input_blocks.push(Block { layers });
                chans.push(ch);
            }
            if level != levels - 1 {
                let p = format!("input_blocks.{}.0", input_blocks.len());
                let layer = if self.resblock_updown {
                    Layer::Res(ResBlock::build(
                        src,
                        &p,
                        &self.res_spec(ch, ch, Updown::Down),
                    ))
                } else {
                    Layer::Resample(Resample::build(src, &p, ch, self.conv_resample, false))
                };
                input_blocks.push(Block {
                    layers: vec![layer],
                });
                chans.push(ch);
                ds *= 2;
            }
        }

        let middle_block = Block {
            layers: vec![
                Layer::Res(ResBlock::build(
                    src,
                    "middle_block.0",
                    &self.res_spec(ch, ch, Updown::None),
                )),
                attn(src, "middle_block.1", ch, false),
                Layer::Res(ResBlock::build(
                    src,
                    "middle_block.2",
                    &self.res_spec(ch, ch, Updown::None),
                )),
            ],
        };

        let mut output_blocks = Vec::new();
        for (level, &mult) in self.channel_mult.iter().enumerate().rev() {
            for i in 0..=self.num_res_blocks {
                let p = format!("output_blocks.{}", output_blocks.len());
                let ich = chans.pop().unwrap_or(0);
                let out = self.width(mult);
                let mut layers = vec![Layer::Res(ResBlock::build(
                    src,
                    &format!("{p}.0"),
                    &self.res_spec(ch + ich, out, Updown::None),
                ))];
                ch = out;
                if self.attention_resolutions.contains(&ds) {
                    layers.push(attn(src, &format!("{p}.1"), ch, true));
                }
                if level > 0 && i == self.num_res_blocks {
                    let q = format!("{p}.{}", layers.len());
                    layers.push(if self.resblock_updown {
                        Layer::Res(ResBlock::build(src, &q, &self.res_spec(ch, ch, Updown::Up)))
                    } else {
                        Layer::Resample(Resample::build(src, &q, ch, self.conv_resample, true))
                    });
                    ds /= 2;
                }
                output_blocks.push(Block { layers });
            }
        }

        Ok(Adm {
            time_embed_0: time_embed[0].clone(),
            time_embed_2: time_embed[1].clone(),
            label_emb,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: norm(src, "out.0", ch),
            out_conv: conv(src, "out.2", [input_ch, self.out_channels()], 3, 1, true),
            in_channels: self.in_channels,
            model_channels: mc,
            learn_sigma: self.learn_sigma,
            num_classes: self.num_classes,
            levels,
        })
    }
}

/// guided-diffusion's `UNetModel`: build it with [`AdmConfig::init`] or [`AdmConfig::load`].
#[derive(Module, Debug)]
pub struct Adm<B: Backend> {
    time_embed_0: Linear<B>,
    time_embed_2: Linear<B>,
    /// `[num_classes, time_embed_dim]`, added to the timestep embedding as `onehot(y) @ W`.
    label_emb: Option<Param<Tensor<B, 2>>>,
    input_blocks: Vec<Block<B>>,
    middle_block: Block<B>,
    output_blocks: Vec<Block<B>>,
    out_norm: GroupNorm<B>,
    out_conv: Conv2d<B>,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    model_channels: usize,
    #[module(skip)]
    learn_sigma: bool,
    #[module(skip)]
    num_classes: Option<usize>,
    #[module(skip)]
    levels: usize,
}

/// guided-diffusion's `timestep_embedding(timesteps, dim)` (max period 10000): `[cos | sin]` of
/// `t * exp(-ln(10000) * i / (dim / 2))`, zero-padded for odd `dim`; computed in `f32` in the same
/// order of operations as PyTorch.
pub fn timestep_embedding<B: Backend>(t: &[usize], dim: usize, device: &B::Device) -> Tensor<B, 2> {
    let half = dim / 2;
    let neg_log = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (neg_log * i as f32 / half as f32).exp())
        .collect();
    let mut values = Vec::with_capacity(t.len() * dim);
    for &step in t {
        let step = step as f32;
        values.extend(freqs.iter().map(|f| (step * f).cos()));
        values.extend(freqs.iter().map(|f| (step * f).sin()));
        if dim % 2 == 1 {
            values.push(0.0);
        }
    }
    Tensor::from_data(TensorData::new(values, [t.len(), dim]), device)
}

/// One-hot rows `[N, num_classes]` for class labels, the conditioning a class-conditional
/// [`Adm`] takes through [`Denoiser::forward`].
pub fn one_hot_labels<B: Backend>(
    labels: &[usize],
    num_classes: usize,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    if let Some(&bad) = labels.iter().find(|&&y| y >= num_classes) {
        return Err(Error::out_of_range(
            "class label",
            format!("below num_classes = {num_classes}"),
            bad,
        ));
    }
    let mut values = vec![0f32; labels.len() * num_classes];
    for (row, &y) in labels.iter().enumerate() {
        values[row * num_classes + y] = 1.0;
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [labels.len(), num_classes]),
        device,
    ))
}

impl<B: Backend> Adm<B> {
    /// Number of classes of a class-conditional model.
    pub fn num_classes(&self) -> Option<usize> {
        self.num_classes
    }

    /// The raw network output `[N, out_channels, H, W]` (`eps`, then `v` with `learn_sigma`),
    /// `UNetModel.forward(x, timesteps, y)`. `cond` is the class conditioning `[N, num_classes]`
    /// (one-hot rows, see [`one_hot_labels`]); required by a class-conditional model, ignored by an
    /// unconditional one.
    pub fn output(
        &self,
        x: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 4>> {
        let [n, c, h, w] = x.dims();
        let step = 1usize << (self.levels - 1);
        if n == 0
            || c != self.in_channels
            || h == 0
            || w == 0
            || !h.is_multiple_of(step)
            || !w.is_multiple_of(step)
        {
            return Err(Error::shape(
                "guided-diffusion UNet input",
                format!(
                    "[N >= 1, {}, H, W] with H and W positive multiples of {step}",
                    self.in_channels
                ),
                fmt_dims(&[n, c, h, w]),
            ));
        }
        if t.len() != n {
            return Err(Error::shape(
                "guided-diffusion UNet timesteps",
                format!("one per sample ({n})"),
                t.len(),
            ));
        }
        let device = x.device();
        let emb = timestep_embedding::<B>(t, self.model_channels, &device);
        let mut emb = self
            .time_embed_2
            .forward(silu(self.time_embed_0.forward(emb)));
        if let (Some(table), Some(k)) = (&self.label_emb, self.num_classes) {
            let cond = cond.ok_or_else(|| {
                Error::format(
                    "guided-diffusion UNet conditioning",
                    format!("a class-conditional model needs class rows [{n}, {k}], found none"),
                )
            })?;
            let dims = cond.dims();
            if dims != [n, k] {
                return Err(Error::shape(
                    "guided-diffusion UNet class conditioning",
                    fmt_dims(&[n, k]),
                    fmt_dims(&dims),
                ));
            }
            emb = emb + cond.matmul(table.val());
        }

        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = x;
        for block in &self.input_blocks {
            h = block.forward(h, &emb);
            hs.push(h.clone());
        }
        h = self.middle_block.forward(h, &emb);
        for block in &self.output_blocks {
            let skip = hs.pop().ok_or_else(|| {
                Error::format("guided-diffusion UNet", "fewer skip tensors than blocks")
            })?;
            h = block.forward(Tensor::cat(vec![h, skip], 1), &emb);
        }
        Ok(self.out_conv.forward(silu(group_norm(&self.out_norm, h))))
    }
}

/// `eps` is the first `in_channels` output channels, the variance channels `v` the rest (with
/// `learn_sigma`). An unconditional model ignores `cond`, as the trait documents; a
/// class-conditional one requires one-hot (or soft) class rows `[N, num_classes]`.
impl<B: Backend> Denoiser<B> for Adm<B> {
    fn channels(&self) -> usize {
        self.in_channels
    }

    fn learned_variance(&self) -> bool {
        self.learn_sigma
    }

    /// `Some(num_classes)` for a class-conditional model (one-hot rows), `None` otherwise.
    fn condition_dim(&self) -> Option<usize> {
        self.num_classes
    }

    fn forward(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        let out = self.output(x_t, t, cond)?;
        if self.learn_sigma {
            DenoiserOutput::split_learned(out)
        } else {
            Ok(DenoiserOutput::eps(out))
        }
    }
}
