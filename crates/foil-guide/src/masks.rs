//! Gradient masks: MaskDiME's dual top-k masks and FastDiME's difference mask.

use burn::tensor::{Tensor, TensorData, backend::Backend, module::max_pool2d};
use foil_core::tensor::to_vec_f32;
use foil_core::{Error, Result};

/// How binary masks are grown after selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dilation {
    /// No growth.
    None,
    /// A `kernel x kernel` neighbourhood (max-pool, stride 1). For binary masks this equals the
    /// reference's Gaussian blur (kernel 5, sigma 3) followed by `> 0`, whose kernel is
    /// positive everywhere in its window.
    Square {
        /// Odd window side (the reference: 5).
        kernel: usize,
    },
}

impl Dilation {
    /// Grows `mask` (`[N, 1, H, W]`, 0 or 1).
    pub fn apply<B: Backend>(self, mask: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Dilation::None => mask,
            Dilation::Square { kernel } => {
                let p = kernel / 2;
                max_pool2d(mask, [kernel, kernel], [1, 1], [p, p], [1, 1], false)
            }
        }
    }

    pub(crate) fn validate(self) -> Result<()> {
        match self {
            Dilation::Square { kernel } if kernel % 2 == 0 => Err(Error::out_of_range(
                "dilation kernel",
                "odd (3, 5, ...)",
                kernel,
            )),
            _ => Ok(()),
        }
    }
}

/// MaskDiME's two masks for one step.
#[derive(Debug, Clone)]
pub struct DualMasks<B: Backend> {
    /// `M1` before dilation: the top `k` share of pixels by gradient magnitude.
    pub outer_raw: Tensor<B, 4>,
    /// `M2` before dilation: the top `gamma` share of the pixels of `M1`.
    pub inner_raw: Tensor<B, 4>,
    /// `M1` after dilation: where the sampler may change the image.
    pub outer: Tensor<B, 4>,
    /// `M2` after dilation: where the clean estimate replaces the original.
    pub inner: Tensor<B, 4>,
}

/// Number of pixels a share selects: `floor(share * total)`, at least one (the references'
/// `max(1, int(k * n))`).
pub fn selected_count(share: f64, total: usize) -> usize {
    ((share * total as f64).floor() as usize).clamp(1, total)
}

/// Masks (`[N, 1, H, W]`, 0 or 1) of exactly the `counts[j]` largest values of each image's
/// `magnitude`, ties broken by the lower pixel index. One ordering serves every count, so the
/// mask of a smaller count lies inside the mask of a larger one.
fn top_counts<B: Backend, const K: usize>(
    magnitude: Tensor<B, 4>,
    counts: [usize; K],
) -> Result<[Tensor<B, 4>; K]> {
    let [n, _, h, w] = magnitude.dims();
    let hw = h * w;
    let values = to_vec_f32(&magnitude)?;
    let mut masks: [Vec<f32>; K] = std::array::from_fn(|_| vec![0.0f32; n * hw]);
    let mut order: Vec<usize> = Vec::with_capacity(hw);
    for (img, row) in values.chunks(hw).enumerate() {
        order.clear();
        order.extend(0..hw);
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for (mask, &count) in masks.iter_mut().zip(&counts) {
            for &p in &order[..count.min(hw)] {
                mask[img * hw + p] = 1.0;
            }
        }
    }
    let device = magnitude.device();
    Ok(masks.map(|m| Tensor::from_data(TensorData::new(m, [n, 1, h, w]), &device)))
}

/// MaskDiME's masks from the classifier gradient `grad` (`[N, C, H, W]`): `M1` holds exactly
/// `floor(k HW)` pixels, the largest by channel-mean absolute gradient, `M2` exactly
/// `floor(gamma |M1|)` of them (so `M2 ⊆ M1`), ties broken by pixel index; both are then
/// dilated.
pub fn dual_masks<B: Backend>(
    grad: Tensor<B, 4>,
    k: f64,
    gamma: f64,
    dilation: Dilation,
) -> Result<DualMasks<B>> {
    check_share("k", k)?;
    check_share("gamma", gamma)?;
    dilation.validate()?;
    let [_, _, h, w] = grad.dims();
    let magnitude = grad.abs().mean_dim(1);
    let n1 = selected_count(k, h * w);
    let n2 = selected_count(gamma, n1);
    // M2 is the top n2 of M1's pixels: the first n2 of the same ordering.
    let [outer_raw, inner_raw] = top_counts(magnitude, [n1, n2])?;
    Ok(DualMasks {
        outer: dilation.apply(outer_raw.clone()),
        inner: dilation.apply(inner_raw.clone()),
        outer_raw,
        inner_raw,
    })
}

/// FastDiME's mask: the `pool x pool` max-pool of the per-image normalised `sum_c |a - b|`,
/// thresholded at `threshold` (1 where the images differ enough to keep the edit).
pub fn difference_mask<B: Backend>(
    a: Tensor<B, 4>,
    b: Tensor<B, 4>,
    pool: usize,
    threshold: f64,
) -> Tensor<B, 4> {
    let [n, _, h, w] = a.dims();
    let diff = (a - b).abs().sum_dim(1); // [N, 1, H, W]
    let max = diff
        .clone()
        .reshape([n, h * w])
        .max_dim(1)
        .clamp_min(1e-12)
        .reshape([n, 1, 1, 1]);
    let p = pool / 2;
    let pooled = max_pool2d(diff / max, [pool, pool], [1, 1], [p, p], [1, 1], false);
    pooled.greater_equal_elem(threshold).float()
}

pub(crate) fn check_share(what: &'static str, v: f64) -> Result<()> {
    if v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(Error::out_of_range(what, "in (0, 1]", v))
    }
}
