//! MNAC: the number of attributes a multi-attribute oracle sees change.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Classifier, Error, Result};

/// For each pair, how many of the oracle's attributes (`sigmoid(logit) > 0.5`) differ between
/// the original and the counterfactual, the target attribute included. This is the papers'
/// MNAC: DiME's `compute_MNAC.py` (reused by FastDiME and MaskDiME) sums
/// `(sigmoid(oracle(x)) > 0.5) != (sigmoid(oracle(cf)) > 0.5)` over all 40 CelebA attributes,
/// and computes it over the successful counterfactuals only. [`mnac_excluding`] is the
/// explicit departure that leaves the target attribute out.
pub fn mnac<B: Backend, C: Classifier<B>>(
    oracle: &C,
    x: Tensor<B, 4>,
    cf: Tensor<B, 4>,
) -> Result<Vec<usize>> {
    changed(oracle, x, cf, None)
}

/// [`mnac`] without the attribute `exclude` (the one the counterfactual was asked to change);
/// not the papers' protocol, which counts every attribute (see [`mnac`]).
pub fn mnac_excluding<B: Backend, C: Classifier<B>>(
    oracle: &C,
    x: Tensor<B, 4>,
    cf: Tensor<B, 4>,
    exclude: usize,
) -> Result<Vec<usize>> {
    let k = oracle.num_logits();
    if exclude >= k {
        return Err(Error::out_of_range(
            "excluded attribute",
            format!("below {k}"),
            exclude,
        ));
    }
    changed(oracle, x, cf, Some(exclude))
}

fn changed<B: Backend, C: Classifier<B>>(
    oracle: &C,
    x: Tensor<B, 4>,
    cf: Tensor<B, 4>,
    exclude: Option<usize>,
) -> Result<Vec<usize>> {
    if x.dims() != cf.dims() {
        return Err(Error::shape(
            "counterfactuals",
            fmt_dims(&x.dims()),
            fmt_dims(&cf.dims()),
        ));
    }
    let k = oracle.num_logits();
    let a = to_vec_f32(&oracle.logits(x)?)?;
    let b = to_vec_f32(&oracle.logits(cf)?)?;
    if a.iter().chain(&b).any(|v| v.is_nan()) {
        return Err(Error::non_finite("oracle logits", ""));
    }
    Ok(a.chunks_exact(k)
        .zip(b.chunks_exact(k))
        .map(|(a, b)| {
            (0..k)
                .filter(|&j| Some(j) != exclude && (a[j] > 0.0) != (b[j] > 0.0))
                .count()
        })
        .collect())
}
