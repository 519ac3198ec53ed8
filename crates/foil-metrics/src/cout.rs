//! COUT: counterfactual transition, the insertion curve of counterfactual pixels.

use burn::tensor::{Tensor, TensorData, activation, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Classifier, Error, Result};

/// Class probabilities from logits: `sigmoid` for one logit (`[1 - p, p]`), softmax otherwise.
fn probabilities<B: Backend>(logits: Tensor<B, 2>) -> Result<(Vec<f32>, usize)> {
    let k = logits.dims()[1];
    if k == 1 {
        let p = to_vec_f32(&activation::sigmoid(logits))?;
        Ok((p.iter().flat_map(|&p| [1.0 - p, p]).collect(), 2))
    } else {
        Ok((to_vec_f32(&activation::softmax(logits, 1))?, k))
    }
}

/// COUT of each counterfactual (Khorram and Fuxin): pixels of `cf` are inserted into `x` in
/// `steps` equal parts, most-changed first (by `sum_c |cf - x|`); the score is the trapezoid
/// AUC of `p(target)` minus that of `p(source)` along the way, in `[-1, 1]`.
pub fn cout<B: Backend, C: Classifier<B>>(
    classifier: &C,
    x: Tensor<B, 4>,
    cf: Tensor<B, 4>,
    source: &[usize],
    target: &[usize],
    steps: usize,
) -> Result<Vec<f64>> {
    let dims = x.dims();
    let [n, c, h, w] = dims;
    if cf.dims() != dims {
        return Err(Error::shape(
            "counterfactuals",
            fmt_dims(&dims),
            fmt_dims(&cf.dims()),
        ));
    }
    if source.len() != n || target.len() != n {
        return Err(Error::shape(
            "source and target classes",
            format!("{n} each"),
            format!("{} and {}", source.len(), target.len()),
        ));
    }
    if steps == 0 {
        return Err(Error::out_of_range(
            "COUT steps",
            "at least 1 (the protocol: 50)",
            0,
        ));
    }
    let classes = classifier.num_logits().max(2);
    if let Some(&bad) = source.iter().chain(target).find(|&&k| k >= classes) {
        return Err(Error::out_of_range(
            "class",
            format!("below {classes}"),
            bad,
        ));
    }
    let device = x.device();
    let (xv, cv) = (to_vec_f32(&x)?, to_vec_f32(&cf)?);
    let (plane, image) = (h * w, c * h * w);
    let mut scores = Vec::with_capacity(n);
    for i in 0..n {
        let (xi, ci) = (
            &xv[i * image..(i + 1) * image],
            &cv[i * image..(i + 1) * image],
        );
        let change: Vec<f32> = (0..plane)
            .map(|p| {
                (0..c)
                    .map(|ch| (ci[ch * plane + p] - xi[ch * plane + p]).abs())
                    .sum()
            })
            .collect();
        let mut order: Vec<usize> = (0..plane).collect();
        order.sort_by(|&a, &b| change[b].total_cmp(&change[a]));
        let mut batch = Vec::with_capacity((steps + 1) * image);
        let mut current = xi.to_vec();
        let mut inserted = 0;
        for s in 0..=steps {
            let upto = ((s as f64 / steps as f64) * plane as f64).round() as usize;
            for &p in &order[inserted..upto] {
                for ch in 0..c {
                    current[ch * plane + p] = ci[ch * plane + p];
                }
            }
            inserted = upto;
            batch.extend_from_slice(&current);
        }
        let images =
            Tensor::<B, 4>::from_data(TensorData::new(batch, [steps + 1, c, h, w]), &device);
        let (p, k) = probabilities(classifier.logits(images)?)?;
        let auc = |class: usize| -> f64 {
            let ys: Vec<f64> = (0..=steps).map(|s| p[s * k + class] as f64).collect();
            ys.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / steps as f64
        };
        let score = auc(target[i]) - auc(source[i]);
        if !score.is_finite() {
            return Err(Error::non_finite("COUT", format!("for input {i}")));
        }
        scores.push(score);
    }
    Ok(scores)
}
