//! Fréchet distance between Gaussian fits of features (FID), and the split-half sFID.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_core::{Error, ImageEncoder, Result};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// A set of feature vectors, `n` rows of width `d`, in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    rows: DMatrix<f64>,
}

impl Features {
    /// Features from `n` rows of width `d`, row-major; non-finite values are an error.
    pub fn new(values: &[f32], n: usize, d: usize) -> Result<Self> {
        if values.len() != n * d || d == 0 {
            return Err(Error::shape(
                "features",
                format!("{n} x {d} values (d > 0)"),
                values.len(),
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::non_finite(format!("feature row {}", i / d), ""));
        }
        Ok(Self {
            rows: DMatrix::from_row_iterator(n, d, values.iter().map(|&v| v as f64)),
        })
    }

    /// Features from a `[N, D]` tensor.
    pub fn from_tensor<B: Backend>(t: &Tensor<B, 2>) -> Result<Self> {
        let [n, d] = t.dims();
        Self::new(&to_vec_f32(t)?, n, d)
    }

    /// Encodes `images` in batches of `batch` with `encoder`.
    pub fn encode<B: Backend, E: ImageEncoder<B>>(
        encoder: &E,
        images: Tensor<B, 4>,
        batch: usize,
    ) -> Result<Self> {
        let n = images.dims()[0];
        let batch = batch.max(1);
        let mut parts = Vec::new();
        for start in (0..n).step_by(batch) {
            let len = batch.min(n - start);
            parts.push(encoder.encode(images.clone().narrow(0, start, len))?);
        }
        if parts.is_empty() {
            return Err(Error::Empty {
                what: "images".into(),
                hint: "encode at least one image".into(),
            });
        }
        Self::from_tensor(&Tensor::cat(parts, 0))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.nrows()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.nrows() == 0
    }

    /// Feature width.
    pub fn dim(&self) -> usize {
        self.rows.ncols()
    }

    fn select(&self, idx: &[usize]) -> Self {
        Self {
            rows: self.rows.select_rows(idx),
        }
    }
}

/// A Gaussian fit: mean and unbiased covariance (as `numpy.cov`).
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// Mean vector.
    pub mean: DVector<f64>,
    /// Covariance matrix (`n - 1` normalisation).
    pub cov: DMatrix<f64>,
}

impl Gaussian {
    /// Fits features; needs at least as many rows as the feature width, or the covariance is
    /// singular and the distance meaningless.
    pub fn fit(f: &Features) -> Result<Self> {
        let (n, d) = (f.len(), f.dim());
        if n < d.max(2) {
            return Err(Error::out_of_range(
                "number of samples for FID",
                format!(
                    "at least {} (the feature width {d}, and 2 or more)",
                    d.max(2)
                ),
                n,
            ));
        }
        let mean = f.rows.row_mean().transpose();
        let centered = DMatrix::from_fn(n, d, |i, j| f.rows[(i, j)] - mean[j]);
        let cov = centered.tr_mul(&centered) / (n as f64 - 1.0);
        Ok(Self { mean, cov })
    }
}

/// `sqrt` of a symmetric positive semi-definite matrix (negative round-off eigenvalues clamp to 0).
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let roots = eig.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// `|m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`.
///
/// `tr (S1 S2)^(1/2)` is computed as `tr (S1^(1/2) S2 S1^(1/2))^(1/2)`: the two matrices are
/// similar, and the second is symmetric, so two symmetric eigen-decompositions replace the
/// general (complex) `sqrtm` of pytorch-fid, with the same value and no imaginary residue.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.mean.len() != b.mean.len() {
        return Err(Error::shape(
            "Gaussians",
            format!("equal widths ({})", a.mean.len()),
            b.mean.len(),
        ));
    }
    let diff = &a.mean - &b.mean;
    let root_a = sqrt_psd(&a.cov);
    let middle = &root_a * &b.cov * &root_a;
    let middle = (&middle + middle.transpose()) * 0.5;
    let tr_cross: f64 = SymmetricEigen::new(middle)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    let d = diff.dot(&diff) + a.cov.trace() + b.cov.trace() - 2.0 * tr_cross;
    if d.is_finite() {
        Ok(d.max(0.0))
    } else {
        Err(Error::non_finite("Fréchet distance", ""))
    }
}

/// FID between two feature sets.
pub fn fid(real: &Features, fake: &Features) -> Result<f64> {
    frechet_distance(&Gaussian::fit(real)?, &Gaussian::fit(fake)?)
}

/// sFID: split the inputs in two random halves `a`, `b`; average `FID(real_a, cf_b)` and
/// `FID(real_b, cf_a)` (so no counterfactual is compared with its own original); repeat
/// `repeats` times (the protocol: 10) and take the mean. Row `i` of `counterfactuals` must be
/// the counterfactual of row `i` of `real`.
pub fn split_fid(
    real: &Features,
    counterfactuals: &Features,
    repeats: usize,
    seed: u64,
) -> Result<f64> {
    let n = real.len();
    if counterfactuals.len() != n {
        return Err(Error::shape(
            "counterfactual features",
            format!("{n} rows, one per original"),
            counterfactuals.len(),
        ));
    }
    if repeats == 0 {
        return Err(Error::out_of_range("sFID repeats", "at least 1", 0));
    }
    if n / 2 < real.dim().max(2) {
        return Err(Error::out_of_range(
            "number of samples for sFID",
            format!(
                "at least {} (each half needs the feature width {})",
                2 * real.dim().max(2),
                real.dim()
            ),
            n,
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut total = 0.0;
    for _ in 0..repeats {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rng);
        let (a, b) = idx.split_at(n / 2);
        let ab = fid(&real.select(a), &counterfactuals.select(b))?;
        let ba = fid(&real.select(b), &counterfactuals.select(a))?;
        total += (ab + ba) / 2.0;
    }
    Ok(total / repeats as f64)
}
