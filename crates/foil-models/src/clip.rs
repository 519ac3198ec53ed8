//! CLIP's vision tower with its projection: transformers' `CLIPVisionModelWithProjection`
//! (4.46.3), and CLIP's image preprocessing (`CLIPImageProcessor`).
//!
//! The network is a pre-norm vision transformer: a patch convolution (no bias), a learned class
//! token and position embeddings, `pre_layrnorm`, encoder layers
//! (`x + attn(ln1(x))`, `x + mlp(ln2(x))`), then `post_layernorm` on the class token and a
//! bias-free `visual_projection` to the image embedding. Tensor names are transformers' own:
//! `vision_model.embeddings.class_embedding`, `vision_model.encoder.layers.N.self_attn.q_proj.weight`,
//! `visual_projection.weight`, ... The text tower is not part of this module.

use std::path::Path;

use burn::module::{Initializer, Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, from_vec};
use foil_core::{Error, ImageEncoder, Result};

use crate::weights::{Init, TensorFile, Weights};

/// The MLP activation of the encoder layers (`hidden_act` in transformers' config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (`"quick_gelu"`): OpenAI's ViT-B/32 and ViT-L/14.
    QuickGelu,
    /// The exact (erf) GELU (`"gelu"`): OpenCLIP's ViT-bigG/14 (LAION, Kandinsky 2.2's prior).
    Gelu,
}

/// Shape of a CLIP vision tower (transformers' `CLIPVisionConfig` plus `projection_dim`).
///
/// `Default` is [`vit_bigg14`](Self::vit_bigg14), the image encoder of the Kandinsky 2.2 prior
/// that DIFFusion's embeddings come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    /// Width of the transformer (`hidden_size`).
    pub hidden_size: usize,
    /// Number of encoder layers (`num_hidden_layers`).
    pub num_layers: usize,
    /// Attention heads per layer (`num_attention_heads`); must divide `hidden_size`.
    pub num_heads: usize,
    /// Width of the MLP (`intermediate_size`).
    pub intermediate_size: usize,
    /// Side of the square patches (`patch_size`).
    pub patch_size: usize,
    /// Side of the square input images (`image_size`); a multiple of `patch_size`.
    pub image_size: usize,
    /// Width of the image embeddings (`projection_dim`).
    pub projection_dim: usize,
    /// Input channels (`num_channels`, 3).
    pub num_channels: usize,
    /// MLP activation (`hidden_act`).
    pub activation: ClipActivation,
    /// Epsilon of every LayerNorm (`layer_norm_eps`, 1e-5).
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self::vit_bigg14()
    }
}

impl ClipVisionConfig {
    /// OpenAI's ViT-B/32 (`openai/clip-vit-base-patch32`): 768 wide, 12 layers, 12 heads,
    /// MLP 3072, patch 32, image 224, projection 512, quick_gelu.
    pub fn vit_b32() -> Self {
        Self {
            hidden_size: 768,
            num_layers: 12,
            num_heads: 12,
            intermediate_size: 3072,
            patch_size: 32,
            image_size: 224,
            projection_dim: 512,
            num_channels: 3,
            activation: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// OpenAI's ViT-L/14 (`openai/clip-vit-large-patch14`): 1024 wide, 24 layers, 16 heads,
    /// MLP 4096, patch 14, image 224, projection 768, quick_gelu.
    pub fn vit_l14() -> Self {
        Self {
            hidden_size: 1024,
            num_layers: 24,
            num_heads: 16,
            intermediate_size: 4096,
            patch_size: 14,
            projection_dim: 768,
            ..Self::vit_b32()
        }
    }

    /// OpenCLIP's ViT-bigG/14 (`laion/CLIP-ViT-bigG-14-laion2B-39B-b160k`, and the
    /// `image_encoder` of `kandinsky-community/kandinsky-2-2-prior`): 1664 wide, 48 layers,
    /// 16 heads, MLP 8192, patch 14, image 224, projection 1280, gelu.
    pub fn vit_bigg14() -> Self {
        Self {
            hidden_size: 1664,
            num_layers: 48,
            num_heads: 16,
            intermediate_size: 8192,
            patch_size: 14,
            projection_dim: 1280,
            activation: ClipActivation::Gelu,
            ..Self::vit_b32()
        }
    }

    /// A tiny configuration for parity tests: 32 wide, 2 layers, 4 heads, MLP 64, patch 8,
    /// image 32, projection 16, quick_gelu.
    pub fn tiny() -> Self {
        Self {
            hidden_size: 32,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 64,
            patch_size: 8,
            image_size: 32,
            projection_dim: 16,
            ..Self::vit_b32()
        }
    }

    /// This configuration with another MLP activation.
    pub fn with_activation(mut self, activation: ClipActivation) -> Self {
        self.activation = activation;
        self
    }

    /// Number of tokens: one per patch plus the class token.
    pub fn num_positions(&self) -> usize {
        let grid = self.image_size / self.patch_size.max(1);
        grid * grid + 1
    }

    /// A short name: `clip-vit-b32`, `clip-vit-l14`, `clip-vit-bigg14`, or the shape for others.
    pub fn name(&self) -> String {
        for (name, preset) in [
            ("clip-vit-b32", Self::vit_b32()),
            ("clip-vit-l14", Self::vit_l14()),
            ("clip-vit-bigg14", Self::vit_bigg14()),
        ] {
            if *self == preset {
                return name.to_string();
            }
        }
        format!(
            "clip-vision-w{}-l{}-h{}-p{}-i{}-proj{}",
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.patch_size,
            self.image_size,
            self.projection_dim
        )
    }

    /// Checks that the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("image_size", self.image_size),
            ("projection_dim", self.projection_dim),
            ("num_channels", self.num_channels),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(Error::out_of_range(
                    format!("CLIP vision config {what}"),
                    ">= 1",
                    v,
                ));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(Error::out_of_range(
                "CLIP vision config num_heads",
                format!("a divisor of hidden_size {}", self.hidden_size),
                self.num_heads,
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::out_of_range(
                "CLIP vision config patch_size",
                format!("a divisor of image_size {}", self.image_size),
                self.patch_size,
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(Error::out_of_range(
                "CLIP vision config layer_norm_eps",
                "finite and > 0",
                self.layer_norm_eps,
            ));
        }
        Ok(())
    }

    fn wrap<B: Backend>(&self, parts: Parts<B>) -> ClipVision<B> {
        ClipVision {
            class_embedding: parts.class_embedding,
            patch_embedding: parts.patch_embedding,
            position_embedding: parts.position_embedding,
            pre_layrnorm: parts.pre_layrnorm,
            layers: parts.layers,
            post_layernorm: parts.post_layernorm,
            visual_projection: parts.visual_projection,
            config: self.clone(),
            processor: ClipImageProcessor::for_size(self.image_size),
            identity: self.name(),
        }
    }

    /// The network with random weights (lazily initialised: nothing is allocated until a
    /// parameter is used): burn's default linear layers, the class and position embeddings
    /// `Normal(0, 1)`, the patch convolution `Uniform(+-1 / sqrt(fan_in))`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<ClipVision<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with weights from `file`, by transformers' names
    /// (`vision_model.*`, `visual_projection.weight`). Problems are recorded in `file`; call
    /// [`TensorFile::finish`] afterwards to get them all in one error (or use
    /// [`load_file`](Self::load_file)). Errs only on an invalid configuration.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<ClipVision<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// The network with its parameters from `w`, by transformers' names under `w`'s prefix
    /// (`vision_model.embeddings.position_ids`, a buffer transformers >= 4.31 recomputes, is
    /// ignored).
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<ClipVision<B>> {
        self.validate()?;
        let d = self.hidden_size;
        let p = self.patch_size;
        let m = self.intermediate_size;
        let vision = w.pp("vision_model");
        let emb = vision.pp("embeddings");
        emb.ignore(["position_ids"]);
        let ln = LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps);
        let layers = (0..self.num_layers)
            .map(|i| {
                let l = vision.pp("encoder.layers").pp(i);
                EncoderLayer {
                    q_proj: l.linear("self_attn.q_proj", d, d, true),
                    k_proj: l.linear("self_attn.k_proj", d, d, true),
                    v_proj: l.linear("self_attn.v_proj", d, d, true),
                    out_proj: l.linear("self_attn.out_proj", d, d, true),
                    layer_norm1: l.layer_norm("layer_norm1", &ln),
                    fc1: l.linear("mlp.fc1", d, m, true),
                    fc2: l.linear("mlp.fc2", m, d, true),
                    layer_norm2: l.layer_norm("layer_norm2", &ln),
                }
            })
            .collect();
        let normal = Init::lazy(Initializer::Normal {
            mean: 0.0,
            std: 1.0,
        });
        let k = (1.0 / (self.num_channels * p * p) as f64).sqrt();
        Ok(self.wrap(Parts {
            class_embedding: emb.tensor("class_embedding", [d], normal.clone()),
            patch_embedding: emb.tensor(
                "patch_embedding.weight",
                [d, self.num_channels, p, p],
                Init::lazy(Initializer::Uniform { min: -k, max: k }),
            ),
            position_embedding: emb.tensor(
                "position_embedding.weight",
                [self.num_positions(), d],
                normal,
            ),
            pre_layrnorm: vision.layer_norm("pre_layrnorm", &ln),
            layers,
            post_layernorm: vision.layer_norm("post_layernorm", &ln),
            visual_projection: w.linear("visual_projection", d, self.projection_dim, false),
        }))
    }

    /// Loads a `CLIPVisionModelWithProjection` safetensors file (for example
    /// `kandinsky-2-2-prior/image_encoder/model.safetensors`), failing with one error that
    /// lists every missing, wrongly shaped and unexpected tensor.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<ClipVision<B>> {
        let mut file = TensorFile::open_any(path)?;
        let model = self.load(&mut file, device)?;
        file.finish()?;
        Ok(model)
    }

    /// Loads the vision tower out of a full `CLIPModel` safetensors file (text tower included,
    /// as `openai/clip-vit-base-patch32/model.safetensors` ships it): the text tower's tensors,
    /// `text_projection` and `logit_scale` are skipped, everything else must fit.
    pub fn load_clip_model_file<B: Backend>(
        &self,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<ClipVision<B>> {
        let mut file = TensorFile::open_any(path)?;
        ignore_text_tower(&mut file);
        let model = self.load(&mut file, device)?;
        file.finish()?;
        Ok(model)
    }
}

/// Marks the tensors of a `CLIPModel`'s text tower (up to 128 layers), `text_projection` and
/// `logit_scale` as known, so loading the vision tower from a full CLIP checkpoint does not
/// report them as unexpected.
pub fn ignore_text_tower(file: &mut TensorFile) {
    let mut names = vec![
        "logit_scale".to_string(),
        "text_projection.weight".to_string(),
        "text_model.embeddings.token_embedding.weight".to_string(),
        "text_model.embeddings.position_embedding.weight".to_string(),
        "text_model.embeddings.position_ids".to_string(),
        "text_model.final_layer_norm.weight".to_string(),
        "text_model.final_layer_norm.bias".to_string(),
    ];
    for i in 0..128 {
        for part in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "layer_norm1",
            "layer_norm2",
            "mlp.fc1",
            "mlp.fc2",
        ] {
            for kind in ["weight", "bias"] {
                names.push(format!("text_model.encoder.layers.{i}.{part}.{kind}"));
            }
        }
    }
    file.ignore(names);
}

struct Parts<B: Backend> {
    class_embedding: Param<Tensor<B, 1>>,
    patch_embedding: Param<Tensor<B, 4>>,
    position_embedding: Param<Tensor<B, 2>>,
    pre_layrnorm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
    post_layernorm: LayerNorm<B>,
    visual_projection: Linear<B>,
}

/// One pre-norm encoder layer (transformers' `CLIPEncoderLayer`).
#[derive(Module, Debug)]
struct EncoderLayer<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    out_proj: Linear<B>,
    layer_norm1: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    layer_norm2: LayerNorm<B>,
}

impl<B: Backend> EncoderLayer<B> {
    fn forward(&self, x: Tensor<B, 3>, heads: usize, activation: ClipActivation) -> Tensor<B, 3> {
        let [n, l, d] = x.dims();
        let hd = d / heads;
        let h = self.layer_norm1.forward(x.clone());
        let split = |t: Tensor<B, 3>| t.reshape([n, l, heads, hd]).swap_dims(1, 2);
        let q = split(
            self.q_proj
                .forward(h.clone())
                .mul_scalar((hd as f64).powf(-0.5)),
        );
        let k = split(self.k_proj.forward(h.clone()));
        let v = split(self.v_proj.forward(h));
        let attn = softmax(q.matmul(k.swap_dims(2, 3)), 3);
        let o = attn.matmul(v).swap_dims(1, 2).reshape([n, l, d]);
        let x = x + self.out_proj.forward(o);
        let h = self.fc1.forward(self.layer_norm2.forward(x.clone()));
        let h = match activation {
            ClipActivation::QuickGelu => h.clone() * sigmoid(h.mul_scalar(1.702)),
            ClipActivation::Gelu => gelu(h),
        };
        x + self.fc2.forward(h)
    }
}

/// What the vision tower computes for a batch.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput<B: Backend> {
    /// Encoder output `[N, tokens, hidden]` (class token first; before `post_layernorm`),
    /// transformers' `last_hidden_state`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `post_layernorm` of the class token `[N, hidden]`, transformers' `pooler_output`.
    pub pooled: Tensor<B, 2>,
    /// The projected pooled output `[N, projection_dim]`, transformers' `image_embeds`.
    pub image_embeds: Tensor<B, 2>,
}

/// CLIP's vision tower with projection (transformers' `CLIPVisionModelWithProjection`).
///
/// [`forward`](Self::forward) takes preprocessed `pixel_values`; as an [`ImageEncoder`] it takes
/// foil's images in `[-1, 1]` and preprocesses them with its [`ClipImageProcessor`] first.
#[derive(Module, Debug)]
pub struct ClipVision<B: Backend> {
    class_embedding: Param<Tensor<B, 1>>,
    patch_embedding: Param<Tensor<B, 4>>,
    position_embedding: Param<Tensor<B, 2>>,
    pre_layrnorm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
    post_layernorm: LayerNorm<B>,
    visual_projection: Linear<B>,
    #[module(skip)]
    config: ClipVisionConfig,
    #[module(skip)]
    processor: ClipImageProcessor,
    #[module(skip)]
    identity: String,
}

impl<B: Backend> ClipVision<B> {
    /// The configuration the network was built with.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// The preprocessing [`ImageEncoder::encode`] applies.
    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }

    /// This network with another preprocessing for [`ImageEncoder::encode`] (its crop size
    /// must equal the configuration's `image_size`).
    pub fn with_processor(mut self, processor: ClipImageProcessor) -> Result<Self> {
        if processor.crop_size != self.config.image_size {
            return Err(Error::out_of_range(
                "CLIP image processor crop_size",
                format!(
                    "equal to the network's image_size {}",
                    self.config.image_size
                ),
                processor.crop_size,
            ));
        }
        self.processor = processor;
        Ok(self)
    }

    /// This network under another [`ImageEncoder::identity`] (name the weights you loaded, for
    /// example `"kandinsky-2-2-prior/image_encoder"`; the default is the configuration's
    /// [`name`](ClipVisionConfig::name)).
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// Runs the tower on preprocessed `pixel_values` `[N, C, image_size, image_size]`.
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Result<ClipVisionOutput<B>> {
        let c = &self.config;
        let [n, ch, h, w] = pixel_values.dims();
        if n == 0 || ch != c.num_channels || h != c.image_size || w != c.image_size {
            return Err(Error::shape(
                "CLIP pixel_values",
                format!(
                    "[N >= 1, {}, {}, {}]",
                    c.num_channels, c.image_size, c.image_size
                ),
                fmt_dims(&[n, ch, h, w]),
            ));
        }
        let d = c.hidden_size;
        let p = c.patch_size;
        let patches = conv2d(
            pixel_values,
            self.patch_embedding.val(),
            None,
            ConvOptions::new([p, p], [0, 0], [1, 1], 1),
        );
        let patches = patches.flatten::<3>(2, 3).swap_dims(1, 2);
        let cls = self
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .repeat_dim(0, n);
        let x = Tensor::cat(vec![cls, patches], 1) + self.position_embedding.val().unsqueeze::<3>();
        let mut x = self.pre_layrnorm.forward(x);
        for layer in &self.layers {
            x = layer.forward(x, c.num_heads, c.activation);
        }
        let pooled = self
            .post_layernorm
            .forward(x.clone().narrow(1, 0, 1).reshape([n, d]));
        let image_embeds = self.visual_projection.forward(pooled.clone());
        Ok(ClipVisionOutput {
            last_hidden_state: x,
            pooled,
            image_embeds,
        })
    }

    /// Image embeddings `[N, projection_dim]` of preprocessed `pixel_values`.
    pub fn image_embeds(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(self.forward(pixel_values)?.image_embeds)
    }
}

impl<B: Backend> ImageEncoder<B> for ClipVision<B> {
    fn embedding_dim(&self) -> usize {
        self.config.projection_dim
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        self.image_embeds(self.processor.preprocess(images)?)
    }
}

/// The mean CLIP normalises with (OpenAI's, also used by OpenCLIP and Kandinsky 2.2).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// The standard deviation CLIP normalises with.
// The digits as published (OpenAI's CLIP, transformers' OPENAI_CLIP_STD).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// CLIP's image preprocessing (transformers' `CLIPImageProcessor` with its defaults): resize
/// the shortest side to `shortest_edge` with PIL's bicubic filter (antialiased when shrinking),
/// center-crop `crop_size`, then normalise with [`CLIP_MEAN`] and [`CLIP_STD`].
///
/// Works on tensors in float arithmetic, so it differs from the reference (which rounds PIL's
/// two resampling passes to 8 bits) by at most about one 8-bit level; see `docs/models-clip.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    /// Target length of the shorter side (224).
    pub shortest_edge: usize,
    /// Side of the square center crop (224).
    pub crop_size: usize,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

impl Default for ClipImageProcessor {
    fn default() -> Self {
        Self::for_size(224)
    }
}

impl ClipImageProcessor {
    /// Resize and crop to `size`, CLIP's mean and std.
    pub fn for_size(size: usize) -> Self {
        Self {
            shortest_edge: size,
            crop_size: size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Size `(height, width)` an `h x w` image is resized to before cropping (transformers'
    /// `get_resize_output_image_size` with `default_to_square=False`).
    pub fn resized_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        let new_long = ((self.shortest_edge * long) as f64 / short.max(1) as f64) as usize;
        if w <= h {
            (new_long, self.shortest_edge)
        } else {
            (self.shortest_edge, new_long)
        }
    }

    /// Preprocesses images `[N, 3, H, W]` in `[-1, 1]` into CLIP's `pixel_values`
    /// `[N, 3, crop_size, crop_size]`.
    pub fn preprocess<B: Backend>(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [n, c, h, w] = images.dims();
        if n == 0 || c != 3 || h == 0 || w == 0 {
            return Err(Error::shape(
                "CLIP preprocessing input",
                "[N >= 1, 3, H >= 1, W >= 1] in [-1, 1]",
                fmt_dims(&[n, c, h, w]),
            ));
        }
        if self.shortest_edge == 0 || self.crop_size == 0 || self.crop_size > self.shortest_edge {
            return Err(Error::out_of_range(
                "CLIP image processor crop_size",
                format!(
                    "in [1, shortest_edge] (shortest_edge {})",
                    self.shortest_edge
                ),
                self.crop_size,
            ));
        }
        if self.std.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(Error::out_of_range(
                "CLIP image processor std",
                "finite and > 0",
                format!("{:?}", self.std),
            ));
        }
        let device = images.device();
        let (oh, ow) = self.resized_size(h, w);
        let crop = self.crop_size;
        // transformers' center_crop: top = (height - crop) // 2.
        let (top, left) = ((oh - crop) / 2, (ow - crop) / 2);
        // PIL resamples width first, then height, clipping each pass to the valid range. Only
        // the rows and columns the crop keeps are computed.
        let ww = resample_matrix(w, ow, left, crop);
        let wh = resample_matrix(h, oh, top, crop);
        let x = images.add_scalar(1.0).mul_scalar(0.5);
        // Width: [N*C*H, W] @ [W, crop].
        let ww = from_vec::<B, 2>(ww, [crop, w], &device)?.transpose();
        let x = x.reshape([n * c * h, w]).matmul(ww).clamp(0.0, 1.0);
        // Height: [N*C*crop, H] @ [H, crop] on the transposed image.
        let wh = from_vec::<B, 2>(wh, [crop, h], &device)?.transpose();
        let x = x
            .reshape([n, c, h, crop])
            .swap_dims(2, 3)
            .reshape([n * c * crop, h])
            .matmul(wh)
            .clamp(0.0, 1.0)
            .reshape([n, c, crop, crop])
            .swap_dims(2, 3);
        let mean = from_vec::<B, 4>(self.mean.to_vec(), [1, 3, 1, 1], &device)?;
        let std = from_vec::<B, 4>(self.std.to_vec(), [1, 3, 1, 1], &device)?;
        Ok((x - mean) / std)
    }
}

/// PIL's bicubic filter (`a = -0.5`, support 2).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Rows `first..first + count` of PIL's resampling matrix (`precompute_coeffs` in
/// `Resample.c`) from `input` to `output` samples, as `[count, input]` row-major weights: the
/// filter is stretched by the scale when shrinking (antialiasing) and each row sums to one.
fn resample_matrix(input: usize, output: usize, first: usize, count: usize) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let mut m = vec![0.0f32; count * input];
    for (row, out) in (first..first + count).enumerate() {
        let center = (out as f64 + 0.5) * scale;
        // C's (int) truncation, then clamping to the image.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
        let weights: Vec<f64> = (lo..hi)
            .map(|x| bicubic((x as f64 - center + 0.5) / filter_scale))
            .collect();
        let total: f64 = weights.iter().sum();
        for (x, wgt) in (lo..hi).zip(weights) {
            m[row * input + x] = if total != 0.0 { wgt / total } else { wgt } as f32;
        }
    }
    m
}
