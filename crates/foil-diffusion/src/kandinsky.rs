//! DIFFusion's published decoder: the Kandinsky 2.2 decoder UNet over MoVQ latents,
//! conditioned on CLIP image embeddings (the Kandinsky 2.2 prior's ViT-bigG/14 image encoder),
//! as the authors' `KandinskyV22PipelineWithInversion` drives them.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Denoiser, DenoiserOutput, Error, ImageEncoder, Result, profile};
use foil_models::clip::ClipVision;
use foil_models::kandinsky::{KandinskyUNet, MoVq};

use crate::space::{Codec, Decoder};

/// The Kandinsky 2.2 decoder with its autoencoder and the image encoder whose embeddings it
/// takes.
///
/// - As a [`Denoiser`] it is the UNet on MoVQ latents; an unconditioned call sees the null
///   condition.
/// - As an [`ImageEncoder`] it is CLIP: images in `[-1, 1]` through the image processor, then
///   `image_embeds`.
/// - Its null condition is CLIP's embedding of an all-zero `pixel_values` image
///   (`KandinskyV22PriorPipeline.get_zero_embed`, which the authors' inversion and guidance use).
/// - Its [`Codec`] is MoVQ: `encode(x).latents` (unquantized, unscaled) and
///   `decode(latents, force_not_quantize=True)` clamped to `[-1, 1]` (the pipelines' `postprocess`
///   clamps to `[0, 1]` after `x / 2 + 0.5`).
pub struct KandinskyDecoder<B: Backend> {
    unet: KandinskyUNet<B>,
    movq: MoVq<B>,
    encoder: ClipVision<B>,
    null: Tensor<B, 2>,
}

impl<B: Backend> KandinskyDecoder<B> {
    /// Puts the three networks together: the UNet must denoise MoVQ's latents and take CLIP's
    /// embeddings. Computes the null condition (one encoder call).
    pub fn new(unet: KandinskyUNet<B>, movq: MoVq<B>, encoder: ClipVision<B>) -> Result<Self> {
        if unet.channels() != movq.latent_channels() {
            return Err(Error::shape(
                "Kandinsky UNet input channels (MoVQ latent channels)",
                movq.latent_channels(),
                unet.channels(),
            ));
        }
        let dim = encoder.embedding_dim();
        if unet.condition_dim() != Some(dim) {
            return Err(Error::shape(
                "Kandinsky UNet image-embedding width (the CLIP encoder's projection_dim)",
                dim,
                unet.condition_dim().unwrap_or(0),
            ));
        }
        let size = encoder.config().image_size;
        let device =
            unet.devices().into_iter().next().ok_or_else(|| {
                Error::format("Kandinsky UNet", "has no parameters, so no device")
            })?;
        let zeros = Tensor::zeros([1, encoder.config().num_channels, size, size], &device);
        let null = encoder.image_embeds(zeros)?;
        Ok(Self {
            unet,
            movq,
            encoder,
            null,
        })
    }

    /// The UNet.
    pub fn unet(&self) -> &KandinskyUNet<B> {
        &self.unet
    }

    /// The autoencoder.
    pub fn movq(&self) -> &MoVq<B> {
        &self.movq
    }

    /// The image encoder.
    pub fn encoder(&self) -> &ClipVision<B> {
        &self.encoder
    }

    /// The null condition `[1, D]`: CLIP's embedding of all-zero pixel values.
    pub fn zero_embedding(&self) -> &Tensor<B, 2> {
        &self.null
    }

    /// The side images must be a multiple of (MoVQ's downscale times the UNet's).
    pub fn size_multiple(&self) -> usize {
        self.movq.downscale() * self.unet.downscale()
    }
}

impl<B: Backend> Denoiser<B> for KandinskyDecoder<B> {
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
            None => self.null.clone().repeat_dim(0, x_t.dims()[0]),
        };
        self.unet.forward(x_t, t, Some(cond))
    }
}

impl<B: Backend> ImageEncoder<B> for KandinskyDecoder<B> {
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

impl<B: Backend> Codec<B> for KandinskyDecoder<B> {
    fn to_latents(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [_, _, h, w] = images.dims();
        let m = self.size_multiple();
        if !h.is_multiple_of(m) || !w.is_multiple_of(m) {
            return Err(Error::shape(
                "images for the Kandinsky 2.2 decoder",
                format!("sides that are multiples of {m} (MoVQ's and the UNet's downscale)"),
                fmt_dims(&images.dims()),
            ));
        }
        let _span = profile::span(profile::CODEC);
        self.movq.encode(images)
    }

    fn to_images(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let _span = profile::span(profile::CODEC);
        Ok(self.movq.decode(latents)?.clamp(-1.0, 1.0))
    }
}

impl<B: Backend> Decoder<B> for KandinskyDecoder<B> {
    fn null_condition(&self, _device: &B::Device) -> Result<Tensor<B, 2>> {
        Ok(self.null.clone())
    }

    fn codec(&self) -> &dyn Codec<B> {
        self
    }
}
