//! What DIFFusion's engine needs of a decoder: an embedding-conditioned denoiser that is also
//! the image encoder ([`Decoder`]), denoising the images themselves or an autoencoder's latents
//! ([`Codec`]), with the null condition of classifier-free guidance.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Denoiser, ImageEncoder, Result};

/// The space a decoder denoises in: images (`[N, 3, H, W]` in `[-1, 1]`) to what the denoiser
/// sees and back.
pub trait Codec<B: Backend> {
    /// Images to the denoiser's space (MoVQ's encoder, or the identity).
    fn to_latents(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>>;

    /// The denoiser's space back to images in `[-1, 1]` (MoVQ's decoder, clamped, or the
    /// identity).
    fn to_images(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>>;
}

/// Pixel space: the denoiser works on the images themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pixels;

impl<B: Backend> Codec<B> for Pixels {
    fn to_latents(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Ok(images)
    }

    fn to_images(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Ok(latents)
    }
}

/// A DIFFusion decoder: the denoiser conditioned on image embeddings, the encoder that makes
/// them, the null condition and the space it denoises in.
pub trait Decoder<B: Backend>: Denoiser<B> + ImageEncoder<B> {
    /// The null condition `[1, D]`: the unconditional branch of guidance and the condition of
    /// the (unconditional) inversion. Default: the zero embedding.
    fn null_condition(&self, device: &B::Device) -> Result<Tensor<B, 2>> {
        Ok(Tensor::zeros([1, self.embedding_dim()], device))
    }

    /// The space the denoiser works in. Default: [`Pixels`].
    fn codec(&self) -> &dyn Codec<B> {
        &Pixels
    }
}
