//! Gradient masks: MaskDiME's dual top-k masks and FastDiME's difference mask.

use burn::tensor::{Tensor, backend::Backend, module::max_pool2d};
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

/// Number of pixels a share selects: `round(share * total)`, at least one.
pub fn selected_count(share: f64, total: usize) -> usize {
    ((share * total as f64).round() as usize).clamp(1, total)
}

/// `[N, 1, H, W]` mask of the `count` largest values of each image's `magnitude` (`[N, 1, H, W]`).
fn top_count<B: Backend>(magnitude: Tensor<B, 4>, count: usize) -> Tensor<B, 4> {
    let [n, _, h, w] = magnitude.dims();
    if count >= h * w {
        return magnitude.ones_like();
    }
    let flat = magnitude.reshape([n, h * w]);
    let threshold = flat.clone().topk(count, 1).narrow(1, count - 1, 1); // [N, 1]
    flat.greater_equal(threshold).float().reshape([n, 1, h, w])
}

/// MaskDiME's masks from the classifier gradient `grad` (`[N, C, H, W]`): `M1` holds the top `k`
/// share of pixels by channel-mean absolute gradient, `M2` the top `gamma` share of `M1`'s pixels
/// (so `M2 ⊆ M1`); both are then dilated.
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
    let outer_raw = top_count(magnitude.clone(), n1);
    // The top n2 pixels overall are the top n2 of M1, since M1 holds the top n1 >= n2.
    let inner_raw = top_count(magnitude, n2) * outer_raw.clone();
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

pub(crate) fn check_share(what: &str, v: f64) -> Result<()> {
    if v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(Error::out_of_range(what, "in (0, 1]", v))
    }
}
