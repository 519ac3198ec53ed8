//! Training images held on the device, and the seeded order they are visited in.

use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use foil_core::image_io::{ColorMode, Resize};
use foil_core::tensor::fmt_dims;
use foil_core::{Error, Result};
use foil_data::Dataset;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// Random changes made to each training image of a batch, drawn afresh at every step: the
/// label-preserving augmentations of small-image classifiers (a mirror image and a small
/// translation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Mirror each image left-right with probability 1/2.
    #[serde(default)]
    pub flip: bool,
    /// Translate each image by up to this many pixels in each direction (uniform integers in
    /// `-shift..=shift` for rows and columns), the uncovered border repeating the edge pixels
    /// (for dark-background data such as Fashion-MNIST: the background); 0 for none.
    #[serde(default)]
    pub shift: usize,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether this changes anything.
    pub fn is_none(&self) -> bool {
        !self.flip && self.shift == 0
    }

    /// Mirrors and shifts `images` `[N, C, H, W]`, drawing from `rng` (one flip and one
    /// `(dy, dx)` per image, in order). `shift` must be below half the smaller side.
    pub fn apply<B: Backend>(
        &self,
        images: Tensor<B, 4>,
        rng: &mut impl Rng,
    ) -> Result<Tensor<B, 4>> {
        let [n, _, h, w] = images.dims();
        if 2 * self.shift >= h.min(w) {
            return Err(Error::out_of_range(
                "augmentation shift",
                format!("below half the image side ({h}x{w})"),
                self.shift,
            ));
        }
        let mut images = images;
        if self.flip {
            let keep: Vec<f32> = (0..n)
                .map(|_| f32::from(u8::from(rng.random::<bool>())))
                .collect();
            let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [n]), &images.device())
                .reshape([n, 1, 1, 1]);
            let mirrored = images.clone().flip([3]);
            images = images * keep.clone() + mirrored * (keep.neg() + 1.0);
        }
        if self.shift > 0 {
            let s = self.shift;
            let padded = images.pad([(s, s), (s, s)], PadMode::Edge);
            let span = 0..=2 * s;
            let crops: Vec<Tensor<B, 4>> = (0..n)
                .map(|i| {
                    let (y, x) = (
                        rng.random_range(span.clone()),
                        rng.random_range(span.clone()),
                    );
                    padded
                        .clone()
                        .slice([i..i + 1, 0..padded.dims()[1], y..y + h, x..x + w])
                })
                .collect();
            images = Tensor::cat(crops, 0);
        }
        Ok(images)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.shift > 64 {
            return Err(Error::out_of_range(
                "augmentation shift",
                "at most 64 pixels",
                self.shift,
            ));
        }
        Ok(())
    }
}

/// Images `[N, C, H, W]` in `[-1, 1]` and their labels, converted once and kept on one device,
/// so a training step only gathers a batch.
#[derive(Debug, Clone)]
pub struct ImageSet<B: Backend> {
    images: Tensor<B, 4>,
    labels: Vec<usize>,
}

impl<B: Backend> ImageSet<B> {
    /// The items of `dataset` at `indices` (for example a [`foil_data::Split`]'s `train`),
    /// converted with `mode` and `resize`.
    pub fn from_dataset(
        dataset: &Dataset,
        indices: &[usize],
        mode: ColorMode,
        resize: Resize,
        device: &B::Device,
    ) -> Result<Self> {
        if indices.is_empty() {
            return Err(Error::Empty {
                what: "image set indices".into(),
                hint: "pass at least one item index".into(),
            });
        }
        let (images, labels) = dataset.tensors::<B>(indices, mode, resize, device)?;
        Self::new(images, labels)
    }

    /// An image set from a tensor `[N, C, H, W]` and `N` labels.
    pub fn new(images: Tensor<B, 4>, labels: Vec<usize>) -> Result<Self> {
        let dims = images.dims();
        if dims[0] == 0 || dims[0] != labels.len() {
            return Err(Error::shape(
                "image set",
                format!("[N = {} labels, C, H, W] with N >= 1", labels.len()),
                fmt_dims(&dims),
            ));
        }
        Ok(Self { images, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty (never, for a constructed set).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels, in order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// All images `[N, C, H, W]`.
    pub fn images(&self) -> &Tensor<B, 4> {
        &self.images
    }

    /// `[N, C, H, W]` of the images.
    pub fn dims(&self) -> [usize; 4] {
        self.images.dims()
    }

    /// The device the images live on.
    pub fn device(&self) -> B::Device {
        self.images.device()
    }

    /// The images and labels at `indices` (each below [`ImageSet::len`]).
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor<B, 4>, Vec<usize>)> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::out_of_range(
                "image set index",
                format!("below {}", self.len()),
                i,
            ));
        }
        if indices.is_empty() {
            return Err(Error::Empty {
                what: "batch indices".into(),
                hint: "ask for at least one image".into(),
            });
        }
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(idx, [indices.len()]),
            &self.images.device(),
        );
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok((self.images.clone().select(0, idx), labels))
    }

    /// The batch of training step `step`: [`ImageSet::batch`] at `indices`, then `augment`
    /// with draws that are a pure function of `(seed, step)` (so a resumed run sees the same
    /// batches as an uninterrupted one).
    pub fn training_batch(
        &self,
        indices: &[usize],
        augment: &Augment,
        seed: u64,
        step: usize,
    ) -> Result<(Tensor<B, 4>, Vec<usize>)> {
        let (images, labels) = self.batch(indices)?;
        if augment.is_none() {
            return Ok((images, labels));
        }
        let mut rng = step_rng(seed, step, 3);
        Ok((augment.apply(images, &mut rng)?, labels))
    }

    /// The same images on another backend and device (for example the inner, non-autodiff
    /// backend for evaluation).
    pub fn to_backend<B2: Backend>(&self, device: &B2::Device) -> ImageSet<B2> {
        let data = self.images.to_data();
        ImageSet {
            images: Tensor::from_data(data, device),
            labels: self.labels.clone(),
        }
    }
}

/// SplitMix64 finaliser: derives independent seeds for `(seed, a, b)` so that every random draw
/// of a step is a pure function of the configuration seed and the step (which is what makes
/// resuming exact without saving RNG state).
pub(crate) fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for _ in 0..2 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// A seeded RNG for draw stream `stream` of `step`.
pub(crate) fn step_rng(seed: u64, step: usize, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(seed, step as u64, stream))
}

/// The item indices of optimizer step `step` (0-based): each epoch visits a fresh seeded
/// permutation of `0..n` in batches of `min(batch_size, n)`; a last partial batch is dropped.
pub(crate) fn batch_indices(n: usize, batch_size: usize, seed: u64, step: usize) -> Vec<usize> {
    let bs = batch_size.min(n).max(1);
    let per_epoch = (n / bs).max(1);
    let (epoch, k) = (step / per_epoch, step % per_epoch);
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, epoch as u64, u64::MAX));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order[k * bs..(k + 1) * bs].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations() {
        let mut seen: Vec<usize> = (0..5).flat_map(|s| batch_indices(10, 2, 7, s)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_ne!(batch_indices(10, 10, 7, 0), batch_indices(10, 10, 7, 1));
        assert_eq!(batch_indices(10, 3, 7, 4), batch_indices(10, 3, 7, 4));
        assert_eq!(batch_indices(4, 16, 1, 0).len(), 4);
    }
}
