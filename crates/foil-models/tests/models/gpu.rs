//! The networks' parity checks once more on a GPU backend, with the same fixtures and tolerances:
//! `--features test-wgpu` (Vulkan/Metal/DX12, or lavapipe on a CPU: `scripts/wgpu-check.sh`) and
//! `--features test-cuda` (`scripts/gpu-check.sh`). CI builds neither. The guided samplers
//! differentiate the networks, so the gradients of the ops they use are compared with ndarray's
//! one op at a time, then through a whole classifier.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, activation};

/// The ops whose gradients the classifiers and the perceptual loss need, by name.
pub(crate) const OPS: [&str; 16] = [
    "conv2d 3x3",
    "conv2d 3x3 stride 2",
    "conv2d 3x3, 3 channels at 32x32",
    "conv2d 3x3 stride 2 at 32x32",
    "conv2d 1x1 stride 2 (foil's pointwise_strided)",
    "channel_affine (foil's BatchNorm)",
    "residual add and relu",
    "global average pool and linear",
    "relu",
    "affine (inference BatchNorm)",
    "max_pool2d 3x3 stride 2",
    "avg_pool2d 2x2",
    "adaptive_avg_pool2d to 1x1",
    "linear",
    "softplus",
    "square and mean",
];

/// Standard-normal values from `seed`, generated on the host: the same on every backend.
fn tensor<A: AutodiffBackend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<A, D> {
    foil_core::Noise::new(seed).normal(shape, &Default::default())
}

/// The gradient of `sum(op(x) * probe)` to `x` for the op named `OPS[which]`; `x` is
/// `[2, 4, 8, 8]` unless the name gives a map size (then 4 channels unless it says otherwise).
pub(crate) fn op_gradient<A: AutodiffBackend>(which: usize) -> Vec<f32> {
    let op = OPS[which];
    let channels = if op.contains("3 channels") { 3 } else { 4 };
    let size = if op.contains("32x32") { 32 } else { 8 };
    let x = tensor::<A, 4>([2, channels, size, size], 1).require_grad();
    let w = tensor::<A, 4>([6, channels, 3, 3], 2);
    let conv = |stride, kernel: Tensor<A, 4>| {
        let pad = kernel.dims()[2] / 2;
        conv2d(
            x.clone(),
            kernel,
            None,
            ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
        )
    };
    let y: Tensor<A, 2> = match op {
        "conv2d 3x3" => conv(1, w).flatten(1, 3),
        "conv2d 3x3 stride 2" => conv(2, w).flatten(1, 3),
        "conv2d 3x3, 3 channels at 32x32" => conv(1, w).flatten(1, 3),
        "conv2d 3x3 stride 2 at 32x32" => conv(2, w).flatten(1, 3),
        // burn's own `conv2d` here has a zero input gradient on burn-cubecl 0.21 (kernel smaller
        // than the stride; see `foil_models::cnn::pointwise_strided`), which ResNets avoid.
        "conv2d 1x1 stride 2 (foil's pointwise_strided)" => {
            let mut conv = foil_models::cnn::conv_config(4, 6, 1, 2).init::<A>(&x.device());
            conv.weight = burn::module::Param::from_tensor(tensor::<A, 4>([6, 4, 1, 1], 2));
            foil_models::cnn::pointwise_strided(&conv, x.clone()).flatten(1, 3)
        }
        "channel_affine (foil's BatchNorm)" => foil_models::norm::channel_affine(
            x.clone(),
            tensor::<A, 2>([1, 4], 3),
            tensor::<A, 2>([1, 4], 4),
        )
        .flatten(1, 3),
        "residual add and relu" => {
            activation::relu(conv(1, tensor::<A, 4>([4, 4, 3, 3], 2)) + x.clone()).flatten(1, 3)
        }
        "global average pool and linear" => {
            let pooled = x.clone().reshape([2, 4, 64]).mean_dim(2).reshape([2, 4]);
            pooled.matmul(tensor::<A, 2>([4, 5], 5)) + tensor::<A, 2>([1, 5], 7)
        }
        "relu" => activation::relu(x.clone()).flatten(1, 3),
        "affine (inference BatchNorm)" => (x.clone() * tensor::<A, 4>([1, 4, 1, 1], 3)
            + tensor::<A, 4>([1, 4, 1, 1], 4))
        .flatten(1, 3),
        "max_pool2d 3x3 stride 2" => {
            max_pool2d(x.clone(), [3, 3], [2, 2], [1, 1], [1, 1], false).flatten(1, 3)
        }
        "avg_pool2d 2x2" => {
            avg_pool2d(x.clone(), [2, 2], [2, 2], [0, 0], true, false).flatten(1, 3)
        }
        "adaptive_avg_pool2d to 1x1" => adaptive_avg_pool2d(x.clone(), [1, 1]).flatten(1, 3),
        "linear" => x
            .clone()
            .flatten::<2>(1, 3)
            .matmul(tensor::<A, 2>([256, 5], 5)),
        "softplus" => activation::softplus(x.clone(), 1.0).flatten(1, 3),
        "square and mean" => x.clone().powf_scalar(2.0).mean().reshape([1, 1]),
        other => unreachable!("{other}"),
    };
    let probe = tensor::<A, 2>(y.dims(), 6);
    let grads = (y * probe).sum().backward();
    x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap()
}

/// Tolerance of the op-by-op comparison: ndarray's SIMD `exp` and `log` are a few 1e-4 from
/// flex's in softplus's gradient; a wrong gradient is off by far more.
pub(crate) const OP_TOL: f32 = 1e-3;

/// Max |a - b| relative to the largest |b| (at least 1e-3).
pub(crate) fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

/// One module of tests per backend, each calling the generic parity functions of this binary.
#[allow(unused_macros)]
macro_rules! parity_on {
    ($backend:ident, $B:ty) => {
        mod $backend {
            use burn::backend::Autodiff;
            use foil_models::adm::AdmConfig;

            type B = $B;
            const NAME: &str = stringify!($backend);

            #[test]
            fn adm_matches_guided_diffusion() {
                crate::adm::parity::<B>("tiny", &AdmConfig::tiny(), NAME);
                crate::adm::parity::<B>("tiny_cond", &AdmConfig::tiny_cond(), NAME);
            }

            #[test]
            fn resnet_matches_torchvision_with_and_without_autodiff() {
                crate::classifiers::resnet_parity::<B>(NAME);
                crate::classifiers::resnet_parity::<Autodiff<B>>(NAME);
            }

            #[test]
            fn clip_vision_matches_transformers() {
                crate::clip::tiny_parity::<B>(NAME);
                crate::clip::float_preprocess_parity::<B>(NAME);
            }

            #[test]
            fn kandinsky_unet_matches_diffusers() {
                crate::kandinsky_unet::parity::<B>(NAME);
            }

            #[test]
            fn movq_matches_diffusers() {
                crate::kandinsky_movq::parity::<B>(NAME);
            }

            #[test]
            fn vgg19_features_match_torchvision() {
                crate::vgg19::features_parity::<B>(NAME);
            }

            #[test]
            fn op_gradients_match_ndarray() {
                use burn::backend::NdArray;
                let mut wrong = Vec::new();
                for (i, op) in super::OPS.iter().enumerate() {
                    let ours = super::op_gradient::<Autodiff<B>>(i);
                    let cpu = super::op_gradient::<Autodiff<NdArray>>(i);
                    let d = super::rel_diff(&ours, &cpu);
                    eprintln!("{NAME}: gradient of {op}: max rel diff to ndarray {d:e}");
                    if !(d <= super::OP_TOL) {
                        wrong.push(format!("{op} ({d:e})"));
                    }
                }
                assert!(
                    wrong.is_empty(),
                    "{NAME}: wrong gradients: {}",
                    wrong.join(", ")
                );
            }

            #[test]
            fn classifier_input_gradient_matches_ndarray() {
                use burn::backend::NdArray;
                let ours = crate::classifiers::small_resnet_input_gradient::<Autodiff<B>>();
                let cpu = crate::classifiers::small_resnet_input_gradient::<Autodiff<NdArray>>();
                let d = super::rel_diff(&ours, &cpu);
                eprintln!("{NAME}: ResNet input gradient: max rel diff to ndarray {d:e}");
                assert!(d <= 1e-4, "{NAME}: ResNet input gradient differs by {d:e}");
            }
        }
    };
}

#[cfg(feature = "test-wgpu")]
parity_on!(wgpu, burn::backend::Wgpu);

#[cfg(feature = "test-cuda")]
parity_on!(cuda, burn::backend::Cuda);

/// The op-by-op gradient comparison on flex, so that it runs in CI too (flex's convolutions and
/// pools are its own, independent of ndarray's).
#[test]
fn flex_op_gradients_match_ndarray() {
    use burn::backend::{Autodiff, Flex, NdArray};
    for (i, op) in OPS.iter().enumerate() {
        let d = rel_diff(
            &op_gradient::<Autodiff<Flex>>(i),
            &op_gradient::<Autodiff<NdArray>>(i),
        );
        assert!(d <= OP_TOL, "flex: gradient of {op} differs by {d:e}");
    }
}
