//! Normalisation layers folded into one per-(sample, channel) scale and shift, in the shapes the
//! CPU backends have fast paths for.
//!
//! burn's `GroupNorm::forward` (and a BatchNorm written as `x * gamma.reshape([1, C, 1, 1])`)
//! broadcasts the channel affine over the batch: a `[1, C, 1, 1]` operand against
//! `[N, C, H, W]` with `N > 1` has strides `[0, 1, 0, 0]`, which burn-flex 0.21 recognises only
//! for `N = 1` and otherwise walks element by element (a fifth of an ADM forward on flex,
//! docs/performance.md). Here the per-channel factors are first made into contiguous
//! `[N, C]` tensors (tiny), so the full-size operations are one multiply and one add by a
//! scalar per `(n, c)` row, the backends' per-row fast path, and the division by the standard
//! deviation folds into the scale. Same arithmetic as PyTorch's: statistics of the centred
//! values, biased variance.

use burn::nn::GroupNorm;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `x * scale + shift` per `(sample, channel)`: `x` is `[N, C, ...]`, `scale` and `shift` are
/// `[N, C]` (or `[1, C]`, repeated over the batch here).
pub fn channel_affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Tensor<B, 2>,
    shift: Tensor<B, 2>,
) -> Tensor<B, D> {
    let dims = x.dims();
    x * per_row(scale, dims) + per_row(shift, dims)
}

/// A per-`(sample, channel)` factor `[N, C]` (or `[1, C]`, repeated over the batch) shaped
/// `[N, C, 1, ...]` to broadcast over `dims`, the per-row pattern the CPU backends run fast.
pub(crate) fn per_row<B: Backend, const D: usize>(
    t: Tensor<B, 2>,
    dims: [usize; D],
) -> Tensor<B, D> {
    let (n, c) = (dims[0], dims[1]);
    let t = if t.dims()[0] == n {
        t
    } else {
        t.repeat_dim(0, n)
    };
    let mut shape = [1; D];
    shape[0] = n;
    shape[1] = c;
    t.reshape(shape)
}

/// [`GroupNorm`]'s forward (`[N, C, ...]` input, `C` a multiple of the groups), computed as
/// centred values times one folded scale `gamma / sqrt(var + eps)` plus `beta` per
/// `(sample, channel)`. Equal to `norm.forward(x)` up to float rounding.
pub fn group_norm<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let (centred, std) = centre(norm, x);
    let (gamma, beta) = affine(norm, &centred.device());
    channel_affine(centred, gamma / std, beta)
}

/// `group_norm(norm, x) * (1 + scale) + shift`, the scale-shift conditioning of guided
/// diffusion's and diffusers' ResNet blocks (`scale` and `shift` `[N, C]`, halves of the
/// timestep embedding's projection), in the same two full-size passes as the norm alone:
/// the modulation folds into the per-`(sample, channel)` scale and shift.
pub fn group_norm_modulated<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
    scale: Tensor<B, 2>,
    shift: Tensor<B, 2>,
) -> Tensor<B, D> {
    let (centred, std) = centre(norm, x);
    let (gamma, beta) = affine(norm, &centred.device());
    let factor = scale + 1.0;
    channel_affine(centred, gamma / std * factor.clone(), beta * factor + shift)
}

/// The values centred per `(sample, group)`, and `sqrt(var + eps)` repeated to each channel
/// of its group (`[N, C]`). The scale divides by it rather than multiplying by its reciprocal:
/// the SIMD CPU backends' `recip` is an approximation (1.3e-4 off the recorded ADM outputs).
fn centre<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> (Tensor<B, D>, Tensor<B, 2>) {
    let dims = x.dims();
    let (n, c, g) = (dims[0], dims[1], norm.num_groups);
    let flat = x.reshape([n, g, dims.iter().skip(1).product::<usize>() / g]);
    let centred = flat.clone() - flat.mean_dim(2);
    let var = centred.clone().square().mean_dim(2);
    let std = var
        .add_scalar(norm.epsilon)
        .sqrt()
        .repeat_dim(2, c / g)
        .reshape([n, c]);
    (centred.reshape(dims), std)
}

/// The norm's `gamma` and `beta` as `[1, C]` (ones and zeros without an affine).
fn affine<B: Backend>(norm: &GroupNorm<B>, device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let c = norm.num_channels;
    match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) => (gamma.val().reshape([1, c]), beta.val().reshape([1, c])),
        _ => (Tensor::ones([1, c], device), Tensor::zeros([1, c], device)),
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::nn::GroupNormConfig;
    use burn::tensor::Tolerance;
    use foil_core::Noise;

    use super::*;

    type B = NdArray;

    /// `N(mean, std)` values drawn on the host: the backend's global generator is seeded and
    /// drawn from by `weights::pinned_init` in this same test binary, in parallel.
    fn normal<const D: usize>(shape: [usize; D], mean: f32, std: f32, seed: u64) -> Tensor<B, D> {
        Noise::new(seed)
            .normal::<B, D>(shape, &Default::default())
            .mul_scalar(std)
            .add_scalar(mean)
    }

    /// The norm with gamma ~ N(1, 0.5) and beta ~ N(0, 0.5) instead of ones and zeros.
    fn random_affine(mut norm: GroupNorm<B>) -> GroupNorm<B> {
        let c = norm.num_channels;
        norm.gamma = Some(burn::module::Param::from_tensor(normal([c], 1.0, 0.5, 1)));
        norm.beta = Some(burn::module::Param::from_tensor(normal([c], 0.0, 0.5, 2)));
        norm
    }

    #[test]
    fn group_norm_equals_burns_for_batches_groups_and_ranks() {
        let device = Default::default();
        for (n, c, g, affine) in [
            (1, 8, 4, true),
            (3, 12, 3, true),
            (2, 6, 6, false),
            (2, 4, 1, true),
        ] {
            let norm = GroupNormConfig::new(g, c)
                .with_affine(affine)
                .with_epsilon(1e-6)
                .init::<B>(&device);
            let norm = if affine { random_affine(norm) } else { norm };
            let x4 = normal([n, c, 5, 3], 0.3, 2.0, 3);
            group_norm(&norm, x4.clone())
                .into_data()
                .assert_approx_eq::<f32>(&norm.forward(x4).into_data(), Tolerance::absolute(1e-5));
            let x3 = normal([n, c, 7], -1.0, 3.0, 4);
            group_norm(&norm, x3.clone())
                .into_data()
                .assert_approx_eq::<f32>(&norm.forward(x3).into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn modulated_group_norm_equals_the_norm_times_one_plus_scale_plus_shift() {
        let device = Default::default();
        let (n, c) = (3, 8);
        let norm = random_affine(GroupNormConfig::new(4, c).init::<B>(&device));
        let x = normal([n, c, 4, 4], 0.0, 2.0, 5);
        // Scale and shift as the blocks take them: the two halves of one projection.
        let e = normal([n, 2 * c], 0.0, 1.0, 6);
        let (scale, shift) = (e.clone().narrow(1, 0, c), e.narrow(1, c, c));
        let expected = norm.forward(x.clone()) * (scale.clone().reshape([n, c, 1, 1]) + 1.0)
            + shift.clone().reshape([n, c, 1, 1]);
        group_norm_modulated(&norm, x, scale, shift)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn channel_affine_scales_each_sample_and_channel_by_its_own_factor() {
        let device = Default::default();
        let x = Tensor::<B, 4>::ones([2, 3, 2, 2], &device);
        let scale = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
        let shift = Tensor::<B, 2>::from_floats([[0.5, 0.0, -1.0]], &device);
        let y = channel_affine(x, scale, shift);
        let expected: Vec<f32> = [1.5f32, 2.0, 2.0, 4.5, 5.0, 5.0]
            .iter()
            .flat_map(|&v| [v; 4])
            .collect();
        y.into_data()
            .assert_eq(&burn::tensor::TensorData::new(expected, [2, 3, 2, 2]), true);
    }
}
