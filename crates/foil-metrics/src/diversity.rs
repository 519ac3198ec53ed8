//! Diversity: how different the counterfactuals of one input are across seeds.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Error, Result};

/// A per-image distance between two batches of images (LPIPS, L2, ...).
pub trait ImageDistance<B: Backend> {
    /// One distance per image pair `(a[i], b[i])`.
    fn distance(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Result<Vec<f64>>;
}

/// Root-mean-square pixel difference, a cheap [`ImageDistance`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RmsDistance;

impl<B: Backend> ImageDistance<B> for RmsDistance {
    fn distance(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Result<Vec<f64>> {
        if a.dims() != b.dims() {
            return Err(Error::shape(
                "image batches",
                fmt_dims(&a.dims()),
                fmt_dims(&b.dims()),
            ));
        }
        let [n, ..] = a.dims();
        let d = to_vec_f32(&(a - b).powf_scalar(2.0).reshape([n as i32, -1]).mean_dim(1))?;
        Ok(d.into_iter().map(|v| (v as f64).sqrt()).collect())
    }
}

/// For each input, the mean distance over all pairs of its counterfactuals; `samples[s]` holds
/// the counterfactuals of every input made with seed `s` (at least two seeds).
pub fn diversity<B: Backend, D: ImageDistance<B>>(
    distance: &D,
    samples: &[Tensor<B, 4>],
) -> Result<Vec<f64>> {
    if samples.len() < 2 {
        return Err(Error::out_of_range(
            "number of seeds for diversity",
            "at least 2",
            samples.len(),
        ));
    }
    let dims = samples[0].dims();
    if let Some(bad) = samples.iter().find(|s| s.dims() != dims) {
        return Err(Error::shape(
            "counterfactual batches",
            fmt_dims(&dims),
            fmt_dims(&bad.dims()),
        ));
    }
    let mut sums = vec![0.0; dims[0]];
    let mut pairs = 0;
    for i in 0..samples.len() {
        for j in i + 1..samples.len() {
            for (s, d) in sums
                .iter_mut()
                .zip(distance.distance(samples[i].clone(), samples[j].clone())?)
            {
                *s += d;
            }
            pairs += 1;
        }
    }
    Ok(sums.into_iter().map(|s| s / pairs as f64).collect())
}
