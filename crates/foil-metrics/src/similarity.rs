//! Cosine similarities of embeddings: FS and FVA (face encoders), S3 (SimSiam).

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Error, ImageEncoder, Result};
use serde::{Deserialize, Serialize};

/// Cosine similarity of each original's embedding with its counterfactual's.
pub fn cosine_similarities<B: Backend, E: ImageEncoder<B>>(
    encoder: &E,
    x: Tensor<B, 4>,
    cf: Tensor<B, 4>,
) -> Result<Vec<f64>> {
    if x.dims() != cf.dims() {
        return Err(Error::shape(
            "counterfactuals",
            fmt_dims(&x.dims()),
            fmt_dims(&cf.dims()),
        ));
    }
    let d = encoder.embedding_dim();
    let a = to_vec_f32(&encoder.encode(x)?)?;
    let b = to_vec_f32(&encoder.encode(cf)?)?;
    a.chunks_exact(d)
        .zip(b.chunks_exact(d))
        .enumerate()
        .map(|(i, (a, b))| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na = a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let nb = b.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let cos = dot / (na * nb);
            if cos.is_finite() {
                Ok(cos)
            } else {
                Err(Error::non_finite(
                    format!("cosine of pair {i}"),
                    "(zero or NaN embedding)",
                ))
            }
        })
        .collect()
}

/// The summaries the papers report from cosine similarities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimilaritySummary {
    /// Mean cosine (FS with a face encoder, S3 with SimSiam).
    pub mean: f64,
    /// Share of pairs above `threshold` (FVA with a face encoder at 0.5).
    pub share_above: f64,
    /// The threshold used.
    pub threshold: f64,
}

/// Summarises similarities (FS / S3 mean, FVA share above `threshold`).
pub fn summarize(similarities: &[f64], threshold: f64) -> Result<SimilaritySummary> {
    if similarities.is_empty() {
        return Err(Error::Empty {
            what: "similarities".into(),
            hint: "score at least one pair".into(),
        });
    }
    let n = similarities.len() as f64;
    Ok(SimilaritySummary {
        mean: similarities.iter().sum::<f64>() / n,
        share_above: similarities.iter().filter(|&&s| s > threshold).count() as f64 / n,
        threshold,
    })
}
