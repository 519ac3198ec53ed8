//! DIFFusion's networks trained on a dataset: a small CLIP-style vision transformer (the image
//! encoder) and a small Kandinsky-style UNet in pixel space conditioned on its embeddings (the
//! decoder), trained together with the eps loss (a diffusion autoencoder), plus the class
//! statistics of the encoder's embeddings that DIFFusion's edit direction comes from.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use foil_core::progress::{self, Tick};
use foil_core::{Denoiser, DenoiserOutput, Error, ImageEncoder, Result, profile};
use foil_data::Dataset;
use foil_embed::{ClassStats, ClassStatsBuilder};
use foil_models::clip::{ClipImageProcessor, ClipVision, ClipVisionConfig};
use foil_models::kandinsky::{DownBlockType, KandinskyUNet, UNetConfig, UpBlockType};
use foil_models::lora::LoraConfig;
use foil_models::weights::{TensorFile, write_f32_safetensors};
use foil_schedule::NoiseSchedule;
use foil_train::{ImageSet, TrainConfig, train_embedding_ddpm, trainable};
use serde::{Deserialize, Serialize};

use foil_core::image_io::image_mode;
use foil_models::folder::{Format, ModelSpec, load_record, load_spec, save_folder, save_spec};

const RECORD: &str = "decoder";
/// File name of a LoRA-tuned decoder's adapters (peft layout, see
/// [`KandinskyUNet::lora_tensors`]).
pub const LORA_FILE: &str = "lora.safetensors";
/// File name of the class statistics inside a decoder folder.
pub const STATS_FILE: &str = "stats.json";

/// What a decoder folder holds (`model.json`): the encoder, the UNet and the noise schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderSpec {
    /// Format version (`foil decoder 1`).
    pub format: Format,
    /// The classes it was trained on (for the record).
    pub classes: Vec<String>,
    /// Side of the square RGB images.
    pub image_size: u32,
    /// Width of the image embeddings (the encoder's projection, the UNet's condition).
    pub embedding_dim: usize,
    /// Width of the vision transformer.
    pub encoder_width: usize,
    /// Its layers.
    pub encoder_layers: usize,
    /// Its attention heads.
    pub encoder_heads: usize,
    /// Side of its square patches (divides `image_size`).
    pub patch_size: usize,
    /// Widths of the UNet's levels (multiples of 16; the first level has no attention).
    pub unet_channels: Vec<usize>,
    /// Tokens the embedding is projected to for the UNet's cross-attention.
    pub condition_tokens: usize,
    /// Diffusion steps `T` of guided-diffusion's linear schedule (betas scaled by `1000 / T`).
    pub diffusion_steps: usize,
    /// Probability that training replaces an embedding by the null (zero) condition.
    pub drop_condition: f64,
    /// Steps of the encoder's pre-training as a cosine classifier of every class of the data
    /// (then frozen while the decoder trains, as Kandinsky's CLIP is); 0: encoder and decoder
    /// train together from scratch.
    #[serde(default)]
    pub encoder_pretraining_steps: usize,
    /// The classes the encoder was pre-trained on (for the record).
    #[serde(default)]
    pub encoder_classes: Vec<String>,
    /// For a LoRA-tuned decoder ([`tune_decoder_lora`]): the base it adapts and the adapters'
    /// settings; the folder then holds `lora.safetensors` instead of `decoder.mpk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
}

/// What a LoRA-tuned decoder folder adds to its base (`model.json`'s `lora`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// The base decoder folder, relative to the LoRA folder.
    pub base: PathBuf,
    /// FNV-1a checksum of the base's `decoder.mpk` (hex): a LoRA folder refuses other weights.
    pub base_checksum: String,
    /// Rank of the updates.
    pub rank: usize,
    /// Their scale numerator (the updates are multiplied by `alpha / rank`).
    pub alpha: f64,
    /// The adapted projections (`|`-separated, as [`LoraConfig::targets`]).
    pub targets: String,
    /// The classes the base was trained on (for the record).
    pub base_classes: Vec<String>,
}

impl LoraSpec {
    /// The adapters' configuration.
    pub fn config(&self) -> Result<LoraConfig> {
        LoraConfig::new(self.rank, self.alpha, self.targets.clone())
    }
}

impl DecoderSpec {
    /// A small decoder for `image_size` images: 32-wide embeddings from a 2-layer, 64-wide ViT
    /// with 4-pixel patches, a two-level UNet 32 and 64 wide, `T = 1000`, 10% condition dropout.
    pub fn small(classes: Vec<String>, image_size: u32) -> Self {
        Self {
            format: Self::expected_format(),
            classes,
            image_size,
            embedding_dim: 32,
            encoder_width: 64,
            encoder_layers: 2,
            encoder_heads: 4,
            patch_size: 4,
            unet_channels: vec![32, 64],
            condition_tokens: 4,
            diffusion_steps: 1000,
            drop_condition: 0.1,
            encoder_pretraining_steps: 0,
            encoder_classes: Vec::new(),
            lora: None,
        }
    }

    /// The encoder's configuration.
    pub fn encoder_config(&self) -> ClipVisionConfig {
        ClipVisionConfig {
            hidden_size: self.encoder_width,
            num_layers: self.encoder_layers,
            num_heads: self.encoder_heads,
            intermediate_size: 4 * self.encoder_width,
            patch_size: self.patch_size,
            image_size: self.image_size as usize,
            projection_dim: self.embedding_dim,
            ..ClipVisionConfig::tiny()
        }
    }

    /// The UNet's configuration (pixel space, three channels in and out, fixed variance).
    pub fn unet_config(&self) -> UNetConfig {
        let levels = self.unet_channels.len();
        let down = (0..levels)
            .map(|i| {
                if i == 0 {
                    DownBlockType::ResnetDownsample
                } else {
                    DownBlockType::SimpleCrossAttnDown
                }
            })
            .collect::<Vec<_>>();
        let up = (0..levels)
            .map(|i| {
                if i + 1 == levels {
                    UpBlockType::ResnetUpsample
                } else {
                    UpBlockType::SimpleCrossAttnUp
                }
            })
            .collect();
        UNetConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: self.unet_channels.clone(),
            down_block_types: down,
            up_block_types: up,
            layers_per_block: 1,
            attention_head_dim: 16,
            cross_attention_dim: self.unet_channels.last().copied().unwrap_or(16),
            encoder_hid_dim: self.embedding_dim,
            num_image_text_embeds: self.condition_tokens,
            norm_num_groups: 8,
            sample_size: self.image_size as usize,
            ..UNetConfig::tiny()
        }
    }

    /// guided-diffusion's linear schedule for `diffusion_steps`.
    pub fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::guided_linear(self.diffusion_steps)
    }

    /// Checks the parts against each other and builds an untrained decoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<EmbeddingDecoder<B>> {
        if self.image_size == 0
            || !(self.image_size as usize).is_multiple_of(self.patch_size.max(1))
        {
            return Err(Error::shape(
                "decoder image size",
                format!("a multiple of the patch size {}", self.patch_size),
                self.image_size,
            ));
        }
        let encoder = self
            .encoder_config()
            .init::<B>(device)?
            .with_processor(ClipImageProcessor::for_size(self.image_size as usize))?;
        let unet = self.unet_config().init::<B>(device)?;
        Ok(EmbeddingDecoder { encoder, unet })
    }

    /// Reads `dir/model.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        load_spec(dir)
    }
}

/// The image encoder and the decoder conditioned on its embeddings, as one module.
///
/// As a [`Denoiser`] it is the UNet (condition: `[N, embedding_dim]` embeddings, the null
/// condition is all zeros); as an [`ImageEncoder`] it is the vision transformer.
#[derive(Module, Debug)]
pub struct EmbeddingDecoder<B: Backend> {
    /// The vision transformer.
    pub encoder: ClipVision<B>,
    /// The UNet.
    pub unet: KandinskyUNet<B>,
}

impl<B: Backend> EmbeddingDecoder<B> {
    /// The null condition `[1, D]` (zeros), the unconditional branch of guidance.
    pub fn null_condition(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::zeros([1, self.encoder.embedding_dim()], device)
    }
}

impl<B: Backend> Denoiser<B> for EmbeddingDecoder<B> {
    fn channels(&self) -> usize {
        self.unet.channels()
    }

    fn learned_variance(&self) -> bool {
        self.unet.learned_variance()
    }

    fn condition_dim(&self) -> Option<usize> {
        self.unet.condition_dim()
    }

    fn forward(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        let cond = match cond {
            Some(c) => c,
            None => {
                let n = x_t.dims()[0];
                self.null_condition(&x_t.device()).repeat_dim(0, n)
            }
        };
        self.unet.forward(x_t, t, Some(cond))
    }
}

/// Pixel space, the zero embedding as the null condition.
impl<B: Backend> crate::Decoder<B> for EmbeddingDecoder<B> {}

impl<B: Backend> ImageEncoder<B> for EmbeddingDecoder<B> {
    fn embedding_dim(&self) -> usize {
        self.encoder.embedding_dim()
    }

    fn identity(&self) -> String {
        self.encoder.identity()
    }

    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let _span = profile::span(profile::IMAGE_ENCODER);
        self.encoder.encode(images)
    }
}

/// The encoder with a cosine classification head: `logits = 10 cos(e, w_k)`, so the classes
/// separate by the embeddings' directions, which DIFFusion's arithmetic works on.
#[derive(Module, Debug)]
pub struct EncoderWithHead<B: Backend> {
    /// The vision transformer.
    pub encoder: ClipVision<B>,
    /// One weight vector per class (`[D] -> [K]`, no bias).
    pub head: burn::nn::Linear<B>,
}

impl<B: Backend> foil_core::Classifier<B> for EncoderWithHead<B> {
    fn num_logits(&self) -> usize {
        self.head.weight.dims()[1]
    }

    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let e = self.encoder.encode(images)?;
        let e = e.clone() / e.powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-6);
        let w = self.head.weight.val();
        let w = w.clone() / w.powi_scalar(2).sum_dim(0).sqrt().clamp_min(1e-6);
        Ok(e.matmul(w) * 10.0)
    }
}

/// Trains the decoder of `spec` on every image of `train` and writes the folder `dir`
/// (`model.json`, `decoder.mpk`; the runs under `dir/encoder-train` and `dir/train` resume when
/// rerun). With `spec.encoder_pretraining_steps > 0` the encoder is first trained as a cosine
/// classifier of every class of `encoder_data` (all ten of Fashion-MNIST's, say: an embedding
/// space that knows the domain, as CLIP's does) and then frozen; otherwise it trains with the
/// decoder. The initial weights come from the backend's generator seeded with `config.seed`
/// (`TrainConfig::seed_backend`). Returns the last logged loss. Compute the class statistics next with
/// [`write_class_stats`].
pub fn train_decoder_on<B: AutodiffBackend>(
    spec: &DecoderSpec,
    train: &Dataset,
    encoder_data: Option<&Dataset>,
    config: &TrainConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<f64> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (mode, resize) = image_mode(spec.image_size);
    // Built on the inner backend and lifted, as the DDPM (parameters made from computed tensors).
    config.seed_backend::<B::InnerBackend>(device);
    let inner = spec.init::<B::InnerBackend>(device)?;
    let mut model = trainable(<EmbeddingDecoder<B> as AutodiffModule<B>>::from_inner(
        inner,
    ));
    let pretrain = spec.encoder_pretraining_steps > 0;
    if pretrain {
        let data = encoder_data.ok_or_else(|| Error::Empty {
            what: "encoder pre-training data".into(),
            hint: "pass the dataset whose classes the encoder learns, or set \
                   encoder_pretraining_steps to 0"
                .into(),
        })?;
        let all: Vec<usize> = (0..data.len()).collect();
        let set = ImageSet::<B>::from_dataset(data, &all, mode, resize, device)?;
        let head = burn::nn::LinearConfig::new(spec.embedding_dim, data.class_names().len())
            .with_bias(false)
            .init::<B>(device);
        let classifier = EncoderWithHead {
            encoder: model.encoder.clone(),
            head,
        };
        let run = TrainConfig {
            out_dir: dir.join("encoder-train"),
            steps: spec.encoder_pretraining_steps,
            ..config.clone()
        };
        let trained = foil_train::train_multiclass(classifier, &set, &run)?;
        model.encoder = trained.model.encoder;
    }
    let trained = train_stage(model, train, spec, !pretrain, config, dir, device)?;
    save_folder(dir, RECORD, trained.model.valid(), spec)?;
    Ok(trained.last_loss())
}

/// The decoder's training run (`dir/train`, resumable) on every image of `train`, with the
/// encoder trained along or frozen.
fn train_stage<B: AutodiffBackend>(
    model: EmbeddingDecoder<B>,
    train: &Dataset,
    spec: &DecoderSpec,
    train_encoder: bool,
    config: &TrainConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<foil_train::Trained<EmbeddingDecoder<B>>> {
    let (mode, resize) = image_mode(spec.image_size);
    let all: Vec<usize> = (0..train.len()).collect();
    let set = ImageSet::<B>::from_dataset(train, &all, mode, resize, device)?;
    let run = TrainConfig {
        out_dir: dir.join("train"),
        ..config.clone()
    };
    train_embedding_ddpm(
        model,
        &set,
        &spec.schedule()?,
        spec.drop_condition,
        train_encoder,
        &run,
    )
}

/// Loads a decoder folder written by [`train_decoder_on`] or [`tune_decoder_lora`] (the base's
/// weights with the adapters merged in). The encoder's identity (stored with class statistics)
/// names the folder's weights by a checksum of its files (for a LoRA folder: the base's record
/// and the adapters), so statistics of other weights are refused.
pub fn load_decoder<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(DecoderSpec, EmbeddingDecoder<B>)> {
    let spec = DecoderSpec::load(dir)?;
    let (checksum, net) = match &spec.lora {
        None => load_decoder_record::<B>(dir, &spec, device)?,
        Some(lora) => {
            let base_dir = dir.join(&lora.base);
            let base_spec = DecoderSpec::load(&base_dir)?;
            if base_spec.lora.is_some() {
                return Err(Error::format(
                    base_dir.display().to_string(),
                    "the base of a LoRA decoder must be a trained decoder, not another LoRA folder",
                ));
            }
            let (base_sum, mut net) = load_decoder_record::<B>(&base_dir, &base_spec, device)?;
            let found = format!("{base_sum:016x}");
            if found != lora.base_checksum {
                return Err(Error::format(
                    dir.join("model.json").display().to_string(),
                    format!(
                        "its adapters were trained on base weights with checksum {}, but {} has {found} \
                         (the base was retrained or replaced: tune the adapters again)",
                        lora.base_checksum,
                        base_dir.display()
                    ),
                ));
            }
            let path = dir.join(LORA_FILE);
            let bytes = std::fs::read(&path).map_err(|e| {
                Error::format(
                    path.display().to_string(),
                    format!("{e} (tune the adapters first: foil train lora)"),
                )
            })?;
            let file = TensorFile::from_bytes(&bytes, path.display().to_string())?;
            net.unet = net.unet.load_lora(&lora.config()?, file)?.merge_lora();
            (fnv1a_extend(base_sum, &bytes), net)
        }
    };
    let net = EmbeddingDecoder {
        encoder: net.encoder.with_identity(format!(
            "foil-vit d{} w{} l{} p{} fnv1a:{checksum:016x}",
            spec.embedding_dim, spec.encoder_width, spec.encoder_layers, spec.patch_size,
        )),
        unet: net.unet,
    };
    Ok((spec, net))
}

/// The decoder record of a trained folder and the checksum of its file.
fn load_decoder_record<B: Backend>(
    dir: &Path,
    spec: &DecoderSpec,
    device: &B::Device,
) -> Result<(u64, EmbeddingDecoder<B>)> {
    let path = dir.join(format!("{RECORD}.mpk"));
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::format(
            path.display().to_string(),
            format!("{e} (train the decoder first: foil train decoder)"),
        )
    })?;
    let hint = "train the decoder first: foil train decoder";
    let net = load_record(spec.init::<B>(device)?, &dir.join(RECORD), hint, device)?;
    Ok((fnv1a(&bytes), net))
}

/// Tunes LoRA adapters (`lora`: rank, alpha, target projections) of the decoder folder `base`
/// on every image of `train` (another class pair, say), with the base's encoder and UNet frozen
/// (the eps loss of [`train_embedding_ddpm`] reaches the adapters only), and writes the LoRA
/// folder `dir`: `model.json` (the base's description, the new classes, and a [`LoraSpec`]
/// naming the base by a relative path and a checksum) and [`LORA_FILE`]; the run under
/// `dir/train` resumes when rerun. Load it with [`load_decoder`]; compute its class statistics
/// next with [`write_class_stats`]. Returns the last logged loss.
pub fn tune_decoder_lora<B: AutodiffBackend>(
    base: &Path,
    train: &Dataset,
    lora: &LoraConfig,
    config: &TrainConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<f64> {
    let base_spec = DecoderSpec::load(base)?;
    if base_spec.lora.is_some() {
        return Err(Error::format(
            base.display().to_string(),
            "tune LoRA adapters on a trained decoder, not on another LoRA folder",
        ));
    }
    let (base_sum, model) = load_decoder_record::<B>(base, &base_spec, device)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    config.seed_backend::<B>(device);
    let mut model = model.no_grad();
    model.unet = model.unet.with_lora(lora)?;
    let trained = train_stage(model, train, &base_spec, false, config, dir, device)?;
    let tensors = trained
        .model
        .valid()
        .unet
        .lora_tensors()
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            Ok((name, shape, foil_core::tensor::to_vec_f32(&t)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let rank = lora.rank.to_string();
    let alpha = lora.alpha.to_string();
    write_f32_safetensors(
        &dir.join(LORA_FILE),
        &tensors,
        &[
            ("format", "peft"),
            ("rank", &rank),
            ("alpha", &alpha),
            ("targets", &lora.targets),
        ],
    )?;
    let spec = DecoderSpec {
        classes: train.class_names().to_vec(),
        lora: Some(LoraSpec {
            base: relative_path(dir, base)?,
            base_checksum: format!("{base_sum:016x}"),
            rank: lora.rank,
            alpha: lora.alpha,
            targets: lora.targets.clone(),
            base_classes: base_spec.classes.clone(),
        }),
        ..base_spec
    };
    save_spec(dir, &spec)?;
    Ok(trained.last_loss())
}

/// `target` relative to the folder `from` (both made absolute first), so a LoRA folder and its
/// base can move together.
fn relative_path(from: &Path, target: &Path) -> Result<PathBuf> {
    let abs = |p: &Path| p.canonicalize().map_err(|e| Error::io(p, e));
    let (from, target) = (abs(from)?, abs(target)?);
    let common = from
        .components()
        .zip(target.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in from.components().skip(common) {
        out.push("..");
    }
    for c in target.components().skip(common) {
        out.push(c);
    }
    Ok(out)
}

/// FNV-1a, 64 bits: a checksum that names a weights file.
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a continued from the hash `h` over more bytes (the checksum of the concatenation).
fn fnv1a_extend(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Class means of `encoder`'s embeddings over every image of `data` (in batches of `batch`),
/// written to `path` (JSON, with the encoder's identity). The batches are reported to
/// [`foil_core::progress`].
pub fn write_class_stats<B: Backend, E: ImageEncoder<B>>(
    encoder: &E,
    data: &Dataset,
    image_size: u32,
    batch: usize,
    path: &Path,
    device: &B::Device,
) -> Result<ClassStats> {
    if batch == 0 {
        return Err(Error::out_of_range("batch size", ">= 1", 0));
    }
    let (mode, resize) = image_mode(image_size);
    let mut builder = ClassStatsBuilder::new(encoder.identity(), encoder.embedding_dim());
    let tick = |done| Tick::new("class statistics", "images", done, data.len());
    progress::report(&tick(0));
    let mut done = 0;
    for (label, name) in data.class_names().iter().enumerate() {
        let items: Vec<usize> = (0..data.len())
            .filter(|&i| data.items()[i].label == label)
            .collect();
        for chunk in items.chunks(batch) {
            let (x, _) = data.tensors::<B>(chunk, mode, resize, device)?;
            builder.add(name, encoder.encode(x)?)?;
            done += chunk.len();
            progress::report(&tick(done));
        }
    }
    let stats = builder.build()?;
    stats.save(path)?;
    Ok(stats)
}

impl ModelSpec for DecoderSpec {
    const WHAT: &'static str = "decoder description";

    fn expected_format() -> Format {
        Format::new("decoder", 1)
    }

    fn format(&self) -> &Format {
        &self.format
    }
}
