//! MNAC: the number of attributes a multi-attribute oracle sees change.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Classifier, Error, Result};

/// For each pair, how many of the oracle's attributes (`sigmoid(logit) > 0.5`) differ between
/// the original and the counterfactual. The target attribute itself counts too; subtract it
/// (or use [`mnac_excluding`]) for the papers' "non-target" count.
pub fn mnac<B: Backend, C: Classifier<B>>(
    oracle: &C,
    x: Tensor<B, 4>,
    cf: Tensor<B, 4>,
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
            a.iter()
                .zip(b)
                .filter(|(a, b)| (**a > 0.0) != (**b > 0.0))
                .count()
        })
        .collect())
}

/// [`mnac`] without the attribute `exclude` (the one the counterfactual was asked to change).
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
    let a = oracle.logits(x.clone())?;
    let b = oracle.logits(cf.clone())?;
    let (a, b) = (to_vec_f32(&a)?, to_vec_f32(&b)?);
    Ok(a.chunks_exact(k)
        .zip(b.chunks_exact(k))
        .map(|(a, b)| {
            (0..k)
                .filter(|&j| j != exclude && (a[j] > 0.0) != (b[j] > 0.0))
                .count()
        })
        .collect())
}
