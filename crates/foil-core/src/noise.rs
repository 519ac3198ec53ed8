//! Explicit, seeded Gaussian noise.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A seeded source of standard-normal noise.
///
/// Noise is drawn on the host with ChaCha8 and uploaded, so the same seed gives the same
/// numbers on every backend and device (burn's own `B::seed` is per backend and global).
/// Every sampler in foil takes one of these (or a seed to make one); none draws hidden noise.
#[derive(Debug, Clone)]
pub struct Noise {
    rng: ChaCha8Rng,
}

impl Noise {
    /// A noise source starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// `n` standard-normal `f32` values.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect()
    }

    /// A standard-normal tensor of `shape` on `device`.
    pub fn normal<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(self.normal_vec(n), shape), device)
    }

    /// A standard-normal tensor shaped like `like`, on its device.
    pub fn normal_like<B: Backend, const D: usize>(&mut self, like: &Tensor<B, D>) -> Tensor<B, D> {
        self.normal(like.dims(), &like.device())
    }

    /// A new, independent source derived from this one (for per-item streams).
    pub fn fork(&mut self) -> Self {
        Self {
            rng: ChaCha8Rng::from_rng(&mut self.rng),
        }
    }
}
