//! The three model roles the methods are generic over.

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::Result;

/// What a denoiser predicts for a batch of noisy images.
#[derive(Debug, Clone)]
pub struct DenoiserOutput<B: Backend> {
    /// The predicted noise `eps`, shaped like `x_t` (`[N, C, H, W]`).
    pub eps: Tensor<B, 4>,
    /// The learned-variance channels `v` in `[-1, 1]` (`[N, C, H, W]`), for networks that
    /// predict them (guided-diffusion with `learn_sigma`, the Kandinsky 2.2 decoder's second
    /// half of its 8 output channels); `None` for fixed-variance networks.
    pub variance: Option<Tensor<B, 4>>,
}

impl<B: Backend> DenoiserOutput<B> {
    /// An output with noise prediction only.
    pub fn eps(eps: Tensor<B, 4>) -> Self {
        Self {
            eps,
            variance: None,
        }
    }

    /// Splits a `2C`-channel network output into `eps` (first `C`) and variance (last `C`),
    /// the layout of guided-diffusion and the Kandinsky 2.2 decoder.
    pub fn split_learned(out: Tensor<B, 4>) -> Result<Self> {
        let [n, c2, h, w] = out.dims();
        if c2 % 2 != 0 || c2 == 0 {
            return Err(crate::Error::shape(
                "learned-variance output",
                "an even, non-zero channel count (eps then v)",
                format!("[{n}, {c2}, {h}, {w}]"),
            ));
        }
        let c = c2 / 2;
        Ok(Self {
            eps: out.clone().narrow(1, 0, c),
            variance: Some(out.narrow(1, c, c)),
        })
    }
}

/// A noise-prediction network: `eps_theta(x_t, t, cond)`.
///
/// Timesteps are per sample and in the network's own (training) numbering, so a batch may mix
/// steps. `cond` is an optional conditioning tensor `[N, D]` (an image embedding for the
/// Kandinsky decoder); unconditional networks ignore it.
pub trait Denoiser<B: Backend> {
    /// Number of image channels the network denoises (3 for RGB, 4 for MoVQ latents, ...).
    fn channels(&self) -> usize;

    /// Whether [`DenoiserOutput::variance`] is filled.
    fn learned_variance(&self) -> bool;

    /// Width `D` of the conditioning vectors, or `None` for an unconditional network.
    fn condition_dim(&self) -> Option<usize>;

    /// Predicts the noise in `x_t` (`[N, C, H, W]`) at per-sample timesteps `t` (length `N`).
    fn forward(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>>;
}

/// A classifier under explanation, or an oracle: images in `[-1, 1]` to logits.
pub trait Classifier<B: Backend> {
    /// Number of logits per image. A one-logit binary classifier returns 1.
    fn num_logits(&self) -> usize;

    /// Logits `[N, num_logits]` for images `[N, C, H, W]` in `[-1, 1]`.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>>;
}

/// The labels a classifier gives: `logit > 0` (sigmoid above 0.5) for a one-logit classifier,
/// the arg-max otherwise.
pub fn predicted_labels<B: Backend, C: Classifier<B> + ?Sized>(
    classifier: &C,
    images: Tensor<B, 4>,
) -> Result<Vec<usize>> {
    let [n, ..] = images.dims();
    let logits = {
        let _span = crate::profile::span(crate::profile::CLASSIFIER_PREDICTION);
        classifier.logits(images)?
    };
    let [rows, k] = logits.dims();
    if rows != n {
        return Err(crate::Error::shape(
            "classifier logits",
            format!("[{n}, K >= 1]"),
            crate::tensor::fmt_dims(&[rows, k]),
        ));
    }
    labels_from_logits(&logits)
}

/// The labels of logits `[N, K]`: `logit > 0` for `K = 1`, the arg-max otherwise
/// (what [`predicted_labels`] applies to a classifier's output).
pub fn labels_from_logits<B: Backend>(logits: &Tensor<B, 2>) -> Result<Vec<usize>> {
    let [rows, k] = logits.dims();
    if k == 0 {
        return Err(crate::Error::shape(
            "classifier logits",
            "[N, K >= 1]",
            crate::tensor::fmt_dims(&[rows, k]),
        ));
    }
    let values = crate::tensor::to_vec_f32(logits)?;
    if values.iter().any(|v| v.is_nan()) {
        return Err(crate::Error::non_finite("classifier logits", ""));
    }
    Ok(values
        .chunks_exact(k)
        .map(|row| {
            if k == 1 {
                usize::from(row[0] > 0.0)
            } else {
                (0..k).fold(0, |best, i| if row[i] > row[best] { i } else { best })
            }
        })
        .collect())
}

/// An image encoder (CLIP vision, a face-recognition net, an Inception pool layer, ...).
pub trait ImageEncoder<B: Backend> {
    /// Width of the embeddings.
    fn embedding_dim(&self) -> usize;

    /// A stable name of the encoder and its weights, stored beside statistics computed with it
    /// so they are never mixed with another encoder's.
    fn identity(&self) -> String;

    /// Embeddings `[N, D]` for images `[N, C, H, W]` in `[-1, 1]`.
    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>>;
}

/// A perceptual feature extractor (VGG or AlexNet layers, ...): images in `[-1, 1]` to a list
/// of feature maps, compared layer by layer by perceptual losses.
pub trait FeatureExtractor<B: Backend> {
    /// Feature maps `[N, C_l, H_l, W_l]`, one per layer.
    fn features(&self, images: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>>;
}

impl<B: Backend, T: Denoiser<B> + ?Sized> Denoiser<B> for &T {
    fn channels(&self) -> usize {
        (**self).channels()
    }
    fn learned_variance(&self) -> bool {
        (**self).learned_variance()
    }
    fn condition_dim(&self) -> Option<usize> {
        (**self).condition_dim()
    }
    fn forward(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        (**self).forward(x_t, t, cond)
    }
}

impl<B: Backend, T: Classifier<B> + ?Sized> Classifier<B> for &T {
    fn num_logits(&self) -> usize {
        (**self).num_logits()
    }
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        (**self).logits(images)
    }
}

impl<B: Backend, T: ImageEncoder<B> + ?Sized> ImageEncoder<B> for &T {
    fn embedding_dim(&self) -> usize {
        (**self).embedding_dim()
    }
    fn identity(&self) -> String {
        (**self).identity()
    }
    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        (**self).encode(images)
    }
}

/// A classifier of an autodiff backend `B` run on `B`'s inner backend, without gradients (for
/// the oracle's predictions beside a method that differentiates it).
pub struct Detached<'a, B, C> {
    classifier: &'a C,
    backend: std::marker::PhantomData<B>,
}

impl<'a, B, C> Detached<'a, B, C> {
    /// `classifier` seen from `B`'s inner backend.
    pub fn new(classifier: &'a C) -> Self {
        Self {
            classifier,
            backend: std::marker::PhantomData,
        }
    }
}

impl<B: AutodiffBackend, C: Classifier<B>> Classifier<B::InnerBackend> for Detached<'_, B, C> {
    fn num_logits(&self) -> usize {
        self.classifier.num_logits()
    }
    fn logits(&self, images: Tensor<B::InnerBackend, 4>) -> Result<Tensor<B::InnerBackend, 2>> {
        Ok(self.classifier.logits(Tensor::from_inner(images))?.inner())
    }
}
