//! foil's patch to burn-flex (vendor/burn-flex, PATCH.md) against an independent implementation,
//! burn-ndarray: the convolutions, forward and backward, on random shapes that take each patched
//! path (`conv_winograd.rs`: stride-1 3x3 kernels, 16+ channels, 16+ output tiles once a
//! weight's transform is kept, else 32+, 96+ where gemm runs its AVX-512 kernels;
//! `conv_shifted.rs`: stride 1, 8+ input channels, 2-49 taps, 16 x 16 output pixels or more;
//! `conv_cols.rs`: strides of 2 and smaller outputs) and shapes next to them that take
//! burn-flex's own (1-4 channels, groups); every 2-D weight gradient (`conv_cols.rs`, any groups);
//! the vectorised sigmoid; the threaded element-wise ops; matmuls sharing one right-hand matrix
//! and threaded ones split by columns; products by a kept, packed right-hand matrix;
//! max pooling with its indices and gradient.
#![cfg(all(feature = "flex", feature = "ndarray"))]

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Tensor, TensorData};
use proptest::prelude::*;

/// One convolution: input `[n, c, h, w]`, weight `[co, c, kh, kw]`.
#[derive(Debug, Clone)]
struct Case {
    n: usize,
    c: usize,
    co: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    pad: [usize; 2],
    dilation: [usize; 2],
    stride: [usize; 2],
    groups: usize,
    bias: bool,
    seed: u64,
}

impl Case {
    fn fits(&self) -> bool {
        self.h + 2 * self.pad[0] > self.dilation[0] * (self.kh - 1)
            && self.w + 2 * self.pad[1] > self.dilation[1] * (self.kw - 1)
    }

    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.pad, self.dilation, self.groups)
    }

    /// A stride-1 3x3 convolution of `[n, c, h, w]` to `co` channels, groups 1 (the Winograd
    /// path's kind).
    fn winograd([n, c, co, h, w]: [usize; 5], pad: [usize; 2], bias: bool, seed: u64) -> Case {
        Case {
            n,
            c,
            co,
            h,
            w,
            kh: 3,
            kw: 3,
            pad,
            dilation: [1, 1],
            stride: [1, 1],
            groups: 1,
            bias,
            seed,
        }
    }

    /// A batch of two square `side` x `side` images under a square `k` x `k` kernel with
    /// `k / 2` padding, no dilation, groups 1, a bias, seeded by `c`.
    fn same_padded(c: usize, co: usize, side: usize, k: usize, stride: usize) -> Case {
        Case {
            n: 2,
            c,
            co,
            h: side,
            w: side,
            kh: k,
            kw: k,
            pad: [k / 2, k / 2],
            dilation: [1, 1],
            stride: [stride, stride],
            groups: 1,
            bias: true,
            seed: c as u64,
        }
    }
}

/// Image sides on both sides of the patched path's 256-pixel threshold.
fn side() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=11, 14usize..=24]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=24, 1usize..=20, side(), side()),
        (
            1usize..=5,
            1usize..=5,
            0usize..=3,
            0usize..=3,
            1usize..=2,
            1usize..=2,
        ),
        (
            prop_oneof![4 => Just(1usize), 1 => Just(2usize)],
            prop_oneof![3 => Just(1usize), 1 => Just(2usize)],
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((n, c, co, h, w), (kh, kw, ph, pw, dh, dw), (stride, groups, bias, seed))| Case {
                n,
                c: c.next_multiple_of(groups),
                co: co.next_multiple_of(groups),
                h,
                w,
                kh,
                kw,
                pad: [ph.min(kh - 1), pw.min(kw - 1)],
                dilation: [dh, dw],
                stride: [stride, stride],
                groups,
                bias,
                seed,
            },
        )
        .prop_filter("the kernel fits the padded input", Case::fits)
}

/// Deterministic values in [-1, 1) from a seed.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn tensor<B: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    let len = shape.iter().product();
    Tensor::from_data(
        TensorData::new(values(len, seed), shape),
        &Default::default(),
    )
}

/// Forward output, input gradient and weight gradient of `sum(conv(x) * probe)`.
fn conv_and_grads<B: burn::tensor::backend::AutodiffBackend>(
    case: &Case,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = tensor::<B, 4>([case.n, case.c, case.h, case.w], case.seed).require_grad();
    let weight = tensor::<B, 4>(
        [case.co, case.c / case.groups, case.kh, case.kw],
        case.seed ^ 0x9e37,
    )
    .require_grad();
    let bias = case
        .bias
        .then(|| tensor::<B, 1>([case.co], case.seed ^ 0x51));
    let y = conv2d(x.clone(), weight.clone(), bias, case.options());
    let probe = tensor::<B, 4>(y.dims(), case.seed ^ 0x77);
    let grads = (y.clone() * probe).sum().backward();
    let flat = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap_or_default();
    (
        flat(y.inner()),
        flat(x.grad(&grads).expect("x tracks gradients")),
        flat(weight.grad(&grads).expect("the weight tracks gradients")),
    )
}

/// The transposed convolution of the case, flattened: the weight is [c_in, c_out / groups, kh, kw];
/// with a stride of 2, odd seeds add an output padding of 1.
fn transposed<B: Backend>(case: &Case) -> Vec<f32> {
    let padding_out = case.stride.map(|s| (case.seed as usize % 2).min(s - 1));
    let options = ConvTransposeOptions::new(
        case.stride,
        case.pad,
        padding_out,
        case.dilation,
        case.groups,
    );
    let x = tensor::<B, 4>([case.n, case.c, case.h, case.w], case.seed);
    let weight = tensor::<B, 4>(
        [case.c, case.co / case.groups, case.kh, case.kw],
        case.seed ^ 3,
    );
    let y = conv_transpose2d(x, weight, None, options);
    y.into_data().to_vec::<f32>().unwrap_or_default()
}

fn assert_close(what: &str, flex: &[f32], ndarray: &[f32], case: &Case) {
    assert_within(what, flex, ndarray, 2e-5, case);
}

/// `flex` within `tolerance` times the largest magnitude of `ndarray` (at least 1).
fn assert_within(what: &str, flex: &[f32], ndarray: &[f32], tolerance: f32, case: &Case) {
    assert_eq!(flex.len(), ndarray.len(), "{what} sizes for {case:?}");
    let scale = ndarray.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = flex
        .iter()
        .zip(ndarray)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tolerance * scale,
        "{what}: flex and ndarray differ by {worst} (scale {scale}) for {case:?}"
    );
}

/// [`assert_flex_matches_ndarray`], and the case's transposed convolution too.
fn assert_flex_matches_ndarray_also_transposed(case: &Case) {
    assert_flex_matches_ndarray(case);
    assert_close(
        "transposed output",
        &transposed::<Flex>(case),
        &transposed::<NdArray>(case),
        case,
    );
}

/// The case's output, input gradient and weight gradient on flex against ndarray's.
fn assert_flex_matches_ndarray(case: &Case) {
    let flex = conv_and_grads::<Autodiff<Flex>>(case);
    let ndarray = conv_and_grads::<Autodiff<NdArray>>(case);
    assert_close("output", &flex.0, &ndarray.0, case);
    assert_close("input gradient", &flex.1, &ndarray.1, case);
    assert_close("weight gradient", &flex.2, &ndarray.2, case);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn flex_convolutions_and_their_gradients_equal_ndarrays(case in case()) {
        assert_flex_matches_ndarray(&case);
    }

    #[test]
    fn flex_transposed_convolutions_equal_ndarrays(case in case()) {
        // As a transposed convolution the weight is [c_in, c_out, kh, kw]: c plays c_in.
        let out = |size: usize, k: usize, axis: usize| {
            (size - 1) * case.stride[axis] + case.dilation[axis] * (k - 1) + 1
        };
        prop_assume!(out(case.h, case.kh, 0) > 2 * case.pad[0]);
        prop_assume!(out(case.w, case.kw, 1) > 2 * case.pad[1]);
        assert_close("transposed output", &transposed::<Flex>(&case), &transposed::<NdArray>(&case), &case);
    }

    /// Stride-1 3x3 convolutions with 16+ channels each way (`conv_winograd.rs` from 16 tiles
    /// of 4 x 4 output pixels per call with the weight's transform kept, as here; up to 243
    /// here: sides that are and are not multiples of 4, paddings 0-2, and calls on both sides
    /// of the tile threshold), forward, both gradients, and as transposed convolutions (the
    /// flipped kernel read by the weight transform).
    #[test]
    fn flex_winograd_convolutions_equal_ndarrays(
        (n, c, co, h, w) in (1usize..=3, 16usize..=40, 16usize..=40, 3usize..=38, 3usize..=38),
        (ph, pw, bias, seed) in (0usize..=2, 0usize..=2, any::<bool>(), any::<u64>()),
    ) {
        let case = Case::winograd([n, c, co, h, w], [ph, pw], bias, seed);
        prop_assume!(case.fits());
        assert_flex_matches_ndarray_also_transposed(&case);
    }

    /// The same on wide rows (patch change 12): from 64 output columns on, a row of tiles holds
    /// 16 side by side, whose patches are gathered and whose outputs are written a row at a
    /// time; rows of 16-17 and 30-35 tiles, lane groups that do and do not straddle two rows
    /// of tiles, padded and unpadded edges.
    #[test]
    fn flex_winograd_convolutions_on_wide_rows_equal_ndarrays(
        (n, c, co, h, w) in (1usize..=2, 16usize..=24, 16usize..=24, 3usize..=10, 62usize..=142),
        (ph, pw, bias, seed) in (0usize..=1, 0usize..=2, any::<bool>(), any::<u64>()),
    ) {
        assert_flex_matches_ndarray_also_transposed(&Case::winograd([n, c, co, h, w], [ph, pw], bias, seed));
    }

    /// 1x1 transposed convolutions (the input gradient of every 1x1 convolution: the weight read
    /// transposed by the 1x1 path), any groups.
    #[test]
    fn flex_1x1_transposed_convolutions_equal_ndarrays(case in case()) {
        let case = Case { kh: 1, kw: 1, pad: [0, 0], stride: [1, 1], ..case };
        assert_close("transposed output", &transposed::<Flex>(&case), &transposed::<NdArray>(&case), &case);
        assert_flex_matches_ndarray(&case);
    }
}

/// The sizes the networks use, once each: DiME's ADM at 128 px and DenseNet's 3x3 bottlenecks
/// (the Winograd path from 16 tiles with the weight's transform kept, as here, up to 256 x 256
/// channels where gemm runs its AVX-512 kernels, so ADM's 384-channel 16 x 16 layer takes the
/// shifted path there); ResNet-18's last stages at 128 px, a downsampling
/// convolution whose columns are cut into several tiles, and AlexNet's 5x5 layer at LPIPS's 64 px
/// (`conv_cols`); DenseNet's 1x1 bottlenecks in its first and last blocks (the 1x1 paths);
/// weights above burn-flex's parallel threshold, reordered for the shifted path (a 5x5 layer,
/// 64 -> 192 at 16 x 16); the input gradients of the small and strided layers are one GEMM
/// over the batch and a threaded col2im (`conv_col2im.rs`).
#[test]
fn flex_matches_ndarray_on_network_sized_convolutions() {
    for (c, co, side, k, stride) in [
        (128, 128, 32, 3, 1),
        (32, 32, 16, 3, 1),
        (256, 64, 16, 3, 1),
        (256, 128, 16, 3, 1),
        (384, 384, 16, 3, 1),
        (64, 32, 8, 3, 1),
        (256, 256, 8, 3, 1),
        (512, 512, 4, 3, 1),
        (256, 512, 8, 3, 2),
        (128, 128, 32, 3, 2),
        (64, 192, 7, 5, 1),
        (64, 192, 16, 5, 1),
        (256, 128, 32, 1, 1),
        (1024, 128, 4, 1, 1),
    ] {
        let case = Case::same_padded(c, co, side, k, stride);
        assert_flex_matches_ndarray(&case);
    }
}

/// Input gradients of strided layers through `conv_col2im` at its buffer limits: five images
/// stacked three to a GEMM (a last stack of two), and one image whose columns exceed the budget
/// (its output channels in two chunks).
#[test]
fn flex_col2im_stacks_and_chunks_equal_ndarrays() {
    let stacked = Case {
        n: 5,
        ..Case::same_padded(128, 64, 32, 3, 2)
    };
    let chunked = Case {
        n: 1,
        ..Case::same_padded(128, 16, 64, 3, 2)
    };
    for case in [stacked, chunked] {
        assert_flex_matches_ndarray(&case);
    }
}

/// Forward convolutions on small maps stack whole images into one GEMM per block of output
/// channels (patch change 14): output channels that leave the last block short (20 and 37
/// against blocks of 16 and 32 on two threads), strided and padded layers, batches
/// that end with a partial stack (9 images of 36 positions: stacks of 7 and 2), and ResNet-18's
/// 256-channel 8 x 8 layer at a batch of 3.
#[test]
fn flex_forward_stacks_equal_ndarrays() {
    for (n, c, co, side, k, stride) in [
        (9, 12, 20, 6, 3, 1),
        (4, 10, 37, 9, 3, 2),
        (3, 5, 6, 7, 5, 1),
        (3, 256, 256, 8, 3, 1),
    ] {
        let case = Case {
            n,
            seed: (n * co + side) as u64,
            ..Case::same_padded(c, co, side, k, stride)
        };
        assert_flex_matches_ndarray(&case);
    }
}

/// Output and input gradient of a 32 -> 32 3x3 convolution of two 32 x 32 images (128 tiles:
/// the Winograd path on every CPU) seeded by `seed`, with `weight`.
fn winograd_with<B: burn::tensor::backend::AutodiffBackend>(
    weight: Tensor<B, 4>,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let x = tensor::<B, 4>([2, 32, 32, 32], seed).require_grad();
    let y = conv2d(x.clone(), weight, None, options);
    let probe = tensor::<B, 4>(y.dims(), seed ^ 0x77);
    let grads = (y.clone() * probe).sum().backward();
    let flat = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap_or_default();
    (
        flat(y.inner()),
        flat(x.grad(&grads).expect("x tracks gradients")),
    )
}

/// Winograd's weight transforms kept between calls (patch change 15) follow their weights: the
/// same weight with new inputs, the weight changed in place, freed and replaced by another of
/// the same shape (whose storage may take the freed one's address), and views of one larger
/// weight at two offsets; each forward's input gradient reads the same weight transposed (32 -> 32, so
/// only the reading tells the two transforms apart).
#[test]
fn flex_kept_winograd_weights_follow_their_tensors() {
    let mut flex = tensor::<Autodiff<Flex>, 4>([32, 32, 3, 3], 1);
    let mut ndarray = tensor::<Autodiff<NdArray>, 4>([32, 32, 3, 3], 1);
    for round in 0..9u64 {
        let case = Case::winograd([2, 32, 32, 32, 32], [1, 1], false, round);
        let (y, dx) = winograd_with(flex.clone(), round);
        let (y_ref, dx_ref) = winograd_with(ndarray.clone(), round);
        assert_close(&format!("output, round {round}"), &y, &y_ref, &case);
        assert_close(
            &format!("input gradient, round {round}"),
            &dx,
            &dx_ref,
            &case,
        );
        match round % 3 {
            // The only handle: burn-flex may write in place.
            0 => {
                flex = flex * 1.5 - 0.25;
                ndarray = ndarray * 1.5 - 0.25;
            }
            1 => {
                drop((flex, ndarray));
                flex = tensor([32, 32, 3, 3], round + 100);
                ndarray = tensor([32, 32, 3, 3], round + 100);
            }
            _ => {
                flex = tensor([32, 32, 3, 3], round + 200);
                ndarray = tensor([32, 32, 3, 3], round + 200);
            }
        }
    }
    // Views of one storage at two offsets, twice each.
    let flex = tensor::<Autodiff<Flex>, 4>([35, 32, 3, 3], 7);
    let ndarray = tensor::<Autodiff<NdArray>, 4>([35, 32, 3, 3], 7);
    for (round, first) in [0, 3, 0, 3].into_iter().enumerate() {
        let case = Case::winograd([2, 32, 32, 32, 32], [1, 1], false, first as u64);
        let (y, dx) = winograd_with(flex.clone().narrow(0, first, 32), round as u64);
        let (y_ref, dx_ref) = winograd_with(ndarray.clone().narrow(0, first, 32), round as u64);
        assert_close(&format!("output of view {first}"), &y, &y_ref, &case);
        assert_close(
            &format!("input gradient of view {first}"),
            &dx,
            &dx_ref,
            &case,
        );
    }
}

/// The case's weight `[co, c, 3, 3]` of seeded values, read as `[c_in, c_out, 3, 3]` by the
/// transposed convolution (co -> c channels): on a storage of its own, or (`view`) rows 1.. of
/// a `[co + 1, c, 3, 3]` one.
fn choice_weight<B: Backend>(case: &Case, view: bool, seed: u64) -> Tensor<B, 4> {
    if view {
        tensor::<B, 4>([case.co + 1, case.c, 3, 3], seed).narrow(0, 1, case.co)
    } else {
        tensor::<B, 4>([case.co, case.c, 3, 3], seed)
    }
}

/// burn-flex's `set_winograd_choice` (patch change 18) switches stride-1 3x3 convolutions
/// between the Winograd path and the others, forward and transposed, both equal to ndarray's
/// and different from each other in their rounding (so the switch is seen to act); and the
/// default thresholds pick as measured. A weight met before (here: under the other choices
/// first, or at the first of two calls) is judged with its transform kept: from 16 tiles on,
/// not at 8, and not at 18 tiles of 256 channels with gemm's AVX-512 kernels (two blocks of
/// whole lanes, the second nearly empty). A weight at its first call, or one whose transform
/// cannot be kept (a view inside a larger storage), with the thresholds of a transform at every
/// call: from 32 tiles with the AVX2 kernels, from 96 with the AVX-512 ones. The choice is the
/// calling thread's: the other tests of this binary, on their own threads, keep the thresholds.
#[test]
fn flex_winograd_choice_switches_paths_and_thresholds_follow_the_kept_transform() {
    use burn_flex::ops::conv::{WinogradChoice, set_winograd_choice};

    // gemm's AVX-512 kernels: the crate's `avx512` feature on a CPU with them.
    #[cfg(target_arch = "x86_64")]
    let avx512 = cfg!(feature = "avx512") && std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    let forward = |case: &Case, weight: Tensor<Flex, 4>| {
        let x = tensor::<Flex, 4>([case.n, case.c, case.h, case.w], case.seed);
        conv2d(x, weight, None, case.options())
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let transposed = |case: &Case, weight: Tensor<Flex, 4>| {
        let x = tensor::<Flex, 4>([case.n, case.co, case.h, case.w], case.seed);
        let options = ConvTransposeOptions::new([1, 1], case.pad, [0, 0], [1, 1], 1);
        conv_transpose2d(x, weight, None, options)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    // (input [n, c, co, h, w], the weight a view inside a larger storage, Winograd expected
    // with the transform kept, at a first call)
    let cases = [
        ([2, 128, 128, 16, 16], false, true, !avx512),
        ([1, 64, 32, 16, 16], false, true, false),
        ([4, 32, 48, 8, 8], false, true, false),
        ([2, 64, 64, 8, 8], false, false, false),
        ([2, 256, 256, 12, 12], false, !avx512, false),
        ([2, 128, 128, 16, 16], true, !avx512, !avx512),
        ([2, 32, 32, 32, 32], true, true, true),
    ];
    for (dims, view, kept_pick, first_pick) in cases {
        let case = Case::winograd(dims, [1, 1], false, dims.iter().sum::<usize>() as u64);
        let reference = {
            let x = tensor::<NdArray, 4>([case.n, case.c, case.h, case.w], case.seed);
            conv2d(x, choice_weight(&case, view, 1), None, case.options())
        };
        let reference_transposed = {
            let x = tensor::<NdArray, 4>([case.n, case.co, case.h, case.w], case.seed);
            let options = ConvTransposeOptions::new([1, 1], case.pad, [0, 0], [1, 1], 1);
            conv_transpose2d(x, choice_weight(&case, view, 1), None, options)
        };
        let flat = |t: Tensor<NdArray, 4>| t.into_data().to_vec::<f32>().unwrap();
        let (reference, reference_transposed) = (flat(reference), flat(reference_transposed));
        let w = choice_weight::<Flex>(&case, view, 1);
        let mut outputs = Vec::new();
        for choice in [
            WinogradChoice::Always,
            WinogradChoice::Never,
            WinogradChoice::Thresholds,
        ] {
            set_winograd_choice(choice);
            // Twice: the first call transforms (and keeps) U, the second reads the kept one.
            let runs = [
                forward(&case, w.clone()),
                forward(&case, w.clone()),
                transposed(&case, w.clone()),
                transposed(&case, w.clone()),
            ];
            for (run, output) in runs.iter().enumerate() {
                let what = format!("{choice:?}, call {run}");
                let expected = if run < 2 {
                    &reference
                } else {
                    &reference_transposed
                };
                assert_close(&what, output, expected, &case);
            }
            assert_eq!(
                runs[0], runs[1],
                "{choice:?}: the kept transform's call differs"
            );
            assert_eq!(
                runs[2], runs[3],
                "{choice:?}: the kept transform's call differs"
            );
            outputs.push(runs);
        }
        let [always, never, picked] = [&outputs[0], &outputs[1], &outputs[2]];
        assert_ne!(always[0], never[0], "{case:?}: both choices took one path");
        assert_ne!(
            always[2], never[2],
            "{case:?}: both choices took one path, transposed"
        );
        let path = |winograd: bool| {
            if winograd {
                "Winograd"
            } else {
                "the other paths"
            }
        };
        let expected = if view { first_pick } else { kept_pick };
        assert!(
            picked == if expected { always } else { never },
            "{case:?} (view {view}): the thresholds should pick {}",
            path(expected)
        );
        // A new weight of the same values: its first call as a weight never met, its second
        // as one met before (a view never is).
        let fresh = choice_weight::<Flex>(&case, view, 1);
        let calls = [forward(&case, fresh.clone()), forward(&case, fresh)];
        for (call, expected) in [first_pick, if view { first_pick } else { kept_pick }]
            .into_iter()
            .enumerate()
        {
            let reference = if expected { &always[0] } else { &never[0] };
            assert!(
                calls[call] == *reference,
                "{case:?} (view {view}), a new weight's call {call}: the thresholds should pick {}",
                path(expected)
            );
        }
    }
    set_winograd_choice(WinogradChoice::Thresholds);
}

/// Values across the whole f32 range the sigmoid sees, extremes, infinities, NaN and zero
/// included.
fn sigmoid_inputs() -> Vec<f32> {
    let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
    xs.extend([
        -1e30, -1000.0, -88.0, -87.5, -87.3, -87.0, 87.0, 88.0, 1000.0, 1e30,
    ]);
    xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    xs.extend([
        0.0,
        -0.0,
        1e-8,
        -1e-8,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
    ]);
    // Enough elements for the threaded path (256 Ki) as well.
    let repeats = (300_000 / xs.len()) + 1;
    xs.iter()
        .copied()
        .cycle()
        .take(xs.len() * repeats)
        .collect()
}

/// Flex's sigmoid and SiLU against the same functions in f64, to a few ulp of f32 (ndarray's
/// own f32 sigmoid is up to 8 ulp off for large negative inputs, so it is not the reference).
#[test]
fn flex_sigmoid_and_silu_are_exact_to_a_few_ulp() {
    use burn::tensor::activation::{sigmoid, silu};
    let xs = sigmoid_inputs();
    let n = xs.len();
    let flex = Tensor::<Flex, 1>::from_data(TensorData::new(xs.clone(), [n]), &Default::default());
    let exact = |x: f32| 1.0 / (1.0 + (-(x as f64)).exp());
    type Reference = fn(f32, f64) -> f64;
    let cases: [(&str, Tensor<Flex, 1>, Reference); 2] = [
        ("sigmoid", sigmoid(flex.clone()), |_, s| s),
        ("silu", silu(flex), |x, s| x as f64 * s),
    ];
    for (what, values, reference) in cases {
        let values = values.into_data().to_vec::<f32>().unwrap_or_default();
        assert_eq!(values.len(), n);
        for (x, got) in xs.iter().zip(&values) {
            let want = reference(*x, exact(*x));
            if !want.is_finite() {
                let same = (want.is_nan() && got.is_nan()) || *got as f64 == want;
                assert!(same, "{what}({x}): flex {got}, exact {want}");
                continue;
            }
            // Relative, down to f32's normal range (exp flushes subnormals to 0).
            let floor = (1.0 + x.abs() as f64) * f32::MIN_POSITIVE as f64;
            let tolerance = 3.0 * f32::EPSILON as f64 * want.abs() + floor;
            assert!(
                (*got as f64 - want).abs() <= tolerance,
                "{what}({x}): flex {got}, exact {want}"
            );
        }
    }
}

/// Softmax of one row: `x - max` rounded to f32 as any f32 softmax rounds it, the rest in f64.
fn softmax_reference(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let exps: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Flex's f32 softmax along the last axis against the same sums in f64, to a few ulp, for rows
/// of every length up to past the lanes and the 16 partial sums (patch change 17: the
/// vectorised exponential, in place when the scores are the tensor's own bytes).
#[test]
fn flex_softmax_is_exact_to_a_few_ulp_in_place_or_not() {
    use burn::tensor::activation::softmax;
    for len in [1, 2, 7, 15, 16, 17, 33, 100, 1024, 4099] {
        let rows = 70; // more than one task of 64 rows
        let mut xs = values(rows * len, len as u64);
        for (i, x) in xs.iter_mut().enumerate() {
            // Rows of small, large and masked scores.
            *x *= [1.0, 30.0, 200.0][(i / len) % 3];
            if i % 11 == 3 && len > 1 {
                *x = f32::NEG_INFINITY;
            }
        }
        let input = Tensor::<Flex, 2>::from_data(
            TensorData::new(xs.clone(), [rows, len]),
            &Default::default(),
        );
        let kept = input.clone();
        // Shared (a clone is alive): on a copy. Then unique: in place. Then an offset view.
        let shared = softmax(input.clone(), 1)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let unique = softmax(input, 1).into_data().to_vec::<f32>().unwrap();
        let view = softmax(kept.clone().narrow(0, 1, rows - 1), 1)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(
            kept.into_data().to_vec::<f32>().unwrap(),
            xs,
            "input left as it was"
        );
        for (r, row) in xs.chunks(len).enumerate() {
            for (j, want) in softmax_reference(row).into_iter().enumerate() {
                let tolerance = 4.0 * f32::EPSILON as f64 * want + f32::MIN_POSITIVE as f64;
                let mut got = vec![
                    ("shared", shared[r * len + j]),
                    ("unique", unique[r * len + j]),
                ];
                if r > 0 {
                    got.push(("view", view[(r - 1) * len + j]));
                }
                for (how, got) in got {
                    assert!(
                        (got as f64 - want).abs() <= tolerance,
                        "row {r} of {len}, [{j}] = {}, {how}: flex {got}, exact {want}",
                        row[j]
                    );
                }
            }
        }
    }
    // A convolution's weight, which the Winograd cache then refers to weakly, as the only
    // tensor of its bytes: softmax must copy it, not fail to write it in place.
    let weight = tensor::<Flex, 4>([16, 16, 3, 3], 4);
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let _ = conv2d(
        tensor::<Flex, 4>([2, 16, 32, 32], 6),
        weight.clone(),
        None,
        options,
    );
    let rows = weight
        .clone()
        .reshape([16, 144])
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let normed = softmax(weight.reshape([16, 144]), 1)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (row, out) in rows.chunks(144).zip(normed.chunks(144)) {
        for (want, got) in softmax_reference(row).into_iter().zip(out) {
            assert!((*got as f64 - want).abs() <= 4.0 * f32::EPSILON as f64 * want);
        }
    }
    // NaN stays NaN; a row of -inf is NaN, as 0/0.
    let special = [f32::NAN, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
    let out = softmax(
        Tensor::<Flex, 2>::from_data(
            TensorData::new(special.to_vec(), [2, 2]),
            &Default::default(),
        ),
        1,
    )
    .into_data()
    .to_vec::<f32>()
    .unwrap();
    assert!(out.iter().all(|x| x.is_nan()), "{out:?}");
}

/// The element-wise ops whose loops the patch threads, on 2^19 elements (above the 256 Ki
/// threshold where they split across threads), flattened.
fn element_wise_ops<B: Backend>() -> Vec<Vec<f32>> {
    let shape = [2, 4, 256, 256];
    let a = tensor::<B, 4>(shape, 11);
    let b = tensor::<B, 4>(shape, 12);
    [
        a.clone() + b.clone(),
        a.clone() * b.clone(),
        a.clone() / (b.clone().abs() + 1.0),
        a.clone().exp(),
        a.clone().tanh(),
        // A shared lhs (not unique): the allocating contiguous path.
        a.clone() - b + a * 0.0,
    ]
    .into_iter()
    .map(|t| t.into_data().to_vec::<f32>().unwrap_or_default())
    .collect()
}

#[test]
fn flex_threaded_element_wise_ops_equal_ndarrays() {
    let flex = element_wise_ops::<Flex>();
    let ndarray = element_wise_ops::<NdArray>();
    for (i, (f, n)) in flex.iter().zip(&ndarray).enumerate() {
        assert_eq!(f.len(), n.len());
        let worst = f
            .iter()
            .zip(n)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "op {i}: flex and ndarray differ by {worst}");
    }
}

/// An empty batch or no output channels: the patched path must not divide by zero.
#[test]
fn flex_convolutions_of_empty_batches_are_empty() {
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    for (n, co) in [(0, 8), (2, 0)] {
        let x = tensor::<Flex, 4>([n, 16, 20, 20], 1);
        let weight = tensor::<Flex, 4>([co, 16, 3, 3], 2);
        assert_eq!(
            conv2d(x, weight, None, options.clone()).dims(),
            [n, co, 20, 20]
        );
    }
}

/// `repeat_dim` (patch change 5: written into a buffer of the element's width, in parallel above
/// burn-flex's threshold) on floats and ints.
fn repeated<B: Backend>(shape: [usize; 3], dim: usize, times: usize) -> (Vec<f32>, Vec<i64>) {
    let floats = tensor::<B, 3>(shape, 7).repeat_dim(dim, times);
    let ints = tensor::<B, 3>(shape, 8)
        .mul_scalar(100.0)
        .int()
        .repeat_dim(dim, times);
    (
        floats.into_data().to_vec().unwrap(),
        ints.into_data().convert::<i64>().to_vec().unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn flex_repeat_dim_equals_ndarrays(
        a in 1usize..5, b in 1usize..7, c in 1usize..9, dim in 0usize..3, times in 1usize..5,
    ) {
        let shape = [a, b, c];
        prop_assert_eq!(repeated::<Flex>(shape, dim, times), repeated::<NdArray>(shape, dim, times));
    }
}

/// The same above the parallel threshold (256 Ki elements).
#[test]
fn flex_large_repeat_dim_equals_ndarrays() {
    for dim in 0..3 {
        let shape = [4, 96, 384];
        assert_eq!(
            repeated::<Flex>(shape, dim, 3),
            repeated::<NdArray>(shape, dim, 3),
            "dim {dim}"
        );
    }
}

/// Fresh tensors (patch change 5: allocated at the element's width) of every width read back as
/// zeros, and a matmul into one (its output buffer) is right.
#[test]
fn flex_fresh_tensors_of_every_width_are_zero() {
    use burn::tensor::{DType, Int};
    let device = Default::default();
    for dtype in [DType::F32, DType::F64, DType::F16] {
        let t = Tensor::<Flex, 2>::zeros([3, 5], (&device, dtype));
        assert_eq!(t.dtype(), dtype);
        let v = t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
        assert!(v.iter().all(|x| *x == 0.0), "{dtype:?}");
    }
    let ints = Tensor::<Flex, 2, Int>::zeros([3, 5], &device).into_data();
    assert!(
        ints.convert::<i64>()
            .to_vec::<i64>()
            .unwrap()
            .iter()
            .all(|x| *x == 0)
    );
    let a = tensor::<Flex, 2>([7, 9], 9);
    let b = tensor::<Flex, 2>([9, 4], 10);
    let flex = a.matmul(b).into_data().to_vec::<f32>().unwrap();
    let nd = tensor::<NdArray, 2>([7, 9], 9)
        .matmul(tensor::<NdArray, 2>([9, 4], 10))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (x, y) in flex.iter().zip(&nd) {
        assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{x} vs {y}");
    }
}

/// Depthwise and grouped convolutions' weight gradients (patch change 6 computes every 2-D weight
/// gradient, any groups; the proptest's groups are 1 and 2): MobileNet's and EfficientNet's
/// depthwise 3x3 and 5x5 layers, one strided, and a 4-group layer.
#[test]
fn flex_depthwise_and_grouped_weight_gradients_equal_ndarrays() {
    for (c, co, groups, side, k, stride) in [
        (32, 32, 32, 16, 3, 1),
        (24, 24, 24, 9, 5, 2),
        (16, 32, 16, 8, 3, 1),
        (32, 16, 4, 12, 3, 2),
    ] {
        let case = Case {
            groups,
            bias: false,
            seed: (c * k) as u64,
            ..Case::same_padded(c, co, side, k, stride)
        };
        assert_flex_matches_ndarray(&case);
    }
}

/// Weight gradients on small maps stack whole images into one GEMM (patch change 12): batches
/// that fill several stacks and end with a partial one (5 images of 64 positions: stacks of 4
/// and 1; 7 of 16: 7 at once; 3 of 100: 2 and 1), grouped and strided layers, and ResNet-18's
/// 512-channel 4 x 4 layer at a batch of 3.
#[test]
fn flex_weight_gradients_of_stacked_images_equal_ndarrays() {
    for (n, c, co, side, k, stride, groups) in [
        (5, 16, 8, 8, 3, 1, 1),
        (7, 8, 12, 4, 3, 1, 1),
        (3, 6, 4, 10, 3, 1, 2),
        (5, 12, 8, 16, 3, 2, 1),
        (3, 512, 512, 4, 3, 1, 1),
    ] {
        let case = Case {
            n,
            groups,
            seed: (n * c + side) as u64,
            ..Case::same_padded(c, co, side, k, stride)
        };
        assert_flex_matches_ndarray(&case);
    }
}

/// An empty batch has a zero weight gradient of the weight's shape (patch change 6).
#[test]
fn flex_weight_gradients_of_empty_batches_are_zero() {
    type A = Autodiff<Flex>;
    let x = tensor::<A, 4>([0, 6, 10, 10], 1).require_grad();
    let weight = tensor::<A, 4>([4, 6, 3, 3], 2).require_grad();
    let y = conv2d(
        x,
        weight.clone(),
        None,
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    );
    let grads = y.sum().backward();
    let grad = weight.grad(&grads).expect("the weight tracks gradients");
    assert_eq!(grad.dims(), [4, 6, 3, 3]);
    assert!(
        grad.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| *v == 0.0)
    );
}

/// How the left-hand side of a batched matmul is laid out.
#[derive(Debug, Clone, Copy)]
enum Lhs {
    /// Contiguous `[b1, b2, m, k]`: the batch stacks onto the rows (patch change 7 folds it).
    Contiguous,
    /// `[b1, b2, k, m]` with its last two axes swapped: columns strided.
    Transposed,
    /// Rows `1..m+1` of `[b1, b2, m + 2, k]`: a gap between batch entries.
    Narrowed,
    /// `[b2, b1, m, k]` with its batch axes swapped.
    BatchSwapped,
}

/// `lhs · rhs` with one right-hand matrix `[1, 1, k, n]` shared by the batch (transposed from
/// `[1, 1, n, k]` when asked), flattened.
fn shared_rhs_matmul<B: Backend>(
    [b1, b2, m, k, n]: [usize; 5],
    lhs: Lhs,
    rhs_transposed: bool,
    seed: u64,
) -> Vec<f32> {
    let a = match lhs {
        Lhs::Contiguous => tensor::<B, 4>([b1, b2, m, k], seed),
        Lhs::Transposed => tensor::<B, 4>([b1, b2, k, m], seed).swap_dims(2, 3),
        Lhs::Narrowed => tensor::<B, 4>([b1, b2, m + 2, k], seed).narrow(2, 1, m),
        Lhs::BatchSwapped => tensor::<B, 4>([b2, b1, m, k], seed).swap_dims(0, 1),
    };
    let b = if rhs_transposed {
        tensor::<B, 4>([1, 1, n, k], seed ^ 5).swap_dims(2, 3)
    } else {
        tensor::<B, 4>([1, 1, k, n], seed ^ 5)
    };
    a.matmul(b).into_data().to_vec::<f32>().unwrap()
}

fn assert_matmul_close(flex: &[f32], ndarray: &[f32], what: &str) {
    assert_eq!(flex.len(), ndarray.len(), "{what}");
    for (x, y) in flex.iter().zip(ndarray) {
        assert!(
            (x - y).abs() <= 1e-4 * y.abs().max(1.0),
            "{what}: {x} vs {y}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Patch change 7 (one GEMM when the batch stacks onto the rows) and the layouts it must
    /// leave to the batch-by-batch path, against ndarray.
    #[test]
    fn flex_matmuls_with_a_shared_right_hand_side_equal_ndarrays(
        dims in (1usize..=3, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=9),
        lhs in prop_oneof![Just(Lhs::Contiguous), Just(Lhs::Transposed), Just(Lhs::Narrowed), Just(Lhs::BatchSwapped)],
        rhs_transposed in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dims = [dims.0, dims.1, dims.2, dims.3, dims.4];
        assert_matmul_close(
            &shared_rhs_matmul::<Flex>(dims, lhs, rhs_transposed, seed),
            &shared_rhs_matmul::<NdArray>(dims, lhs, rhs_transposed, seed),
            &format!("{dims:?} {lhs:?} rhs transposed {rhs_transposed}"),
        );
    }
}

/// A `Linear`-sized product above burn-flex's parallel threshold, folded into one threaded GEMM.
#[test]
fn flex_large_matmul_with_a_shared_right_hand_side_equals_ndarrays() {
    let dims = [1, 2, 100, 256, 300];
    assert_matmul_close(
        &shared_rhs_matmul::<Flex>(dims, Lhs::Contiguous, false, 11),
        &shared_rhs_matmul::<NdArray>(dims, Lhs::Contiguous, false, 11),
        "[2, 100, 256] x [256, 300]",
    );
}

/// How the operands of a 2-D matmul are laid out (the split of patch change 16 offsets both
/// the output and the right-hand side by whole columns).
#[derive(Debug, Clone, Copy)]
enum Operands {
    /// `[m, k] x [k, n]`, both contiguous: a `Linear`'s forward.
    Contiguous,
    /// `[m, k] x [n, k]ᵀ`: the right-hand columns strided (a `Linear`'s input gradient).
    RhsTransposed,
    /// `[k, m]ᵀ x [k, n]`: the left-hand rows strided.
    LhsTransposed,
}

/// `[m, k] x [k, n]` laid out as asked, flattened.
fn product<B: Backend>([m, k, n]: [usize; 3], operands: Operands, seed: u64) -> Vec<f32> {
    let (a, b) = match operands {
        Operands::Contiguous => (tensor::<B, 2>([m, k], seed), tensor([k, n], seed ^ 3)),
        Operands::RhsTransposed => (
            tensor::<B, 2>([m, k], seed),
            tensor::<B, 2>([n, k], seed ^ 3).transpose(),
        ),
        Operands::LhsTransposed => (
            tensor::<B, 2>([k, m], seed).transpose(),
            tensor([k, n], seed ^ 3),
        ),
    };
    a.matmul(b).into_data().to_vec::<f32>().unwrap()
}

/// Patch change 16: threaded products of at most 256 rows run as one single-threaded GEMM per
/// thread over its own columns. In pools of 2 and 3 threads (parts of 192 + 108 and
/// 128 + 128 + 44 columns for 300), in every layout, at the row limit and past it, through
/// gemm's one-row path and the folded batch path, against ndarray.
#[test]
fn flex_products_split_by_columns_equal_ndarrays() {
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for dims in [
                [100, 256, 300],
                [256, 128, 300],
                [257, 128, 300],
                [1, 4096, 1800],
            ] {
                for operands in [
                    Operands::Contiguous,
                    Operands::RhsTransposed,
                    Operands::LhsTransposed,
                ] {
                    assert_matmul_close(
                        &product::<Flex>(dims, operands, 5),
                        &product::<NdArray>(dims, operands, 5),
                        &format!("{dims:?} {operands:?} on {threads} threads"),
                    );
                }
            }
            let dims = [1, 2, 50, 768, 200];
            assert_matmul_close(
                &shared_rhs_matmul::<Flex>(dims, Lhs::Contiguous, true, 7),
                &shared_rhs_matmul::<NdArray>(dims, Lhs::Contiguous, true, 7),
                &format!("{dims:?} folded on {threads} threads"),
            );
        });
    }
}

/// Patch change 6 in the other float widths: f64 and f16 through gemm, bf16 through f32; the
/// weight gradient against ndarray's in f32 (f16 and bf16 to their precision).
#[test]
fn flex_weight_gradients_in_every_float_width_equal_ndarrays() {
    use burn::tensor::DType;
    type A = Autodiff<Flex>;
    let case = Case {
        bias: false,
        seed: 21,
        ..Case::same_padded(8, 6, 10, 3, 1)
    };
    let reference = conv_and_grads::<Autodiff<NdArray>>(&case).2;
    for (dtype, tolerance) in [(DType::F64, 1e-5), (DType::F16, 2e-2), (DType::BF16, 4e-2)] {
        let leaf = |shape: [usize; 4], seed: u64| {
            Tensor::<A, 4>::from_inner(tensor::<Flex, 4>(shape, seed).cast(dtype)).require_grad()
        };
        let x = leaf([case.n, case.c, case.h, case.w], case.seed);
        let weight = leaf([case.co, case.c, case.kh, case.kw], case.seed ^ 0x9e37);
        let y = conv2d(x, weight.clone(), None, case.options());
        let probe =
            Tensor::<A, 4>::from_inner(tensor::<Flex, 4>(y.dims(), case.seed ^ 0x77).cast(dtype));
        let grads = (y * probe).sum().backward();
        let grad = weight.grad(&grads).expect("the weight tracks gradients");
        assert_eq!(grad.dtype(), dtype);
        let grad = grad.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        let what = format!("{dtype:?} weight gradient (ndarray's in f32)");
        assert_within(&what, &grad, &reference, tolerance, &case);
    }
}

/// How one operand of a strided binary op is laid out: size-1 dimensions that the op
/// broadcasts, a narrowed dimension (a slice of a larger tensor), two dimensions stored
/// swapped, a flipped dimension.
#[derive(Debug, Clone)]
struct View {
    broadcast: [bool; 4],
    narrow: Option<usize>,
    swap: Option<(usize, usize)>,
    flip: Option<usize>,
}

fn view() -> impl Strategy<Value = View> {
    (
        proptest::array::uniform4(prop::bool::weighted(0.3)),
        proptest::option::of(0usize..4),
        proptest::option::of((0usize..4, 0usize..4)),
        proptest::option::of(0usize..4),
    )
        .prop_map(|(broadcast, narrow, swap, flip)| View {
            broadcast,
            narrow,
            swap,
            flip,
        })
}

/// A tensor of `shape` (with the view's broadcast dimensions at 1) laid out as `view` says.
fn viewed<B: Backend>(shape: [usize; 4], view: &View, seed: u64) -> Tensor<B, 4> {
    let mut dims = shape;
    for (d, &b) in dims.iter_mut().zip(&view.broadcast) {
        if b {
            *d = 1;
        }
    }
    let mut stored = dims;
    if let Some(k) = view.narrow {
        stored[k] += 2;
    }
    if let Some((a, b)) = view.swap {
        stored.swap(a, b);
    }
    let mut t = tensor::<B, 4>(stored, seed);
    if let Some((a, b)) = view.swap {
        t = t.swap_dims(a, b);
    }
    if let Some(k) = view.narrow {
        t = t.narrow(k, 1, dims[k]);
    }
    if let Some(k) = view.flip {
        t = t.flip([k as isize]);
    }
    t
}

/// `lhs + rhs`, `lhs - rhs`, `lhs * rhs`, `lhs / rhs` (rhs kept away from zero) and rhs
/// copied contiguous, flattened.
fn strided_binary_ops<B: Backend>(shape: [usize; 4], views: &(View, View)) -> Vec<Vec<f32>> {
    let lhs = || viewed::<B>(shape, &views.0, 21);
    let rhs = || viewed::<B>(shape, &views.1, 22);
    [
        lhs() + rhs(),
        lhs() - rhs(),
        lhs() * rhs(),
        lhs() / (rhs().abs() + 0.5),
        // A contiguous copy of a strided tensor (a reshape of a permuted one copies).
        rhs().reshape([rhs().dims().iter().product::<usize>(), 1, 1, 1]),
    ]
    .into_iter()
    .map(|t| t.into_data().to_vec::<f32>().unwrap_or_default())
    .collect()
}

fn assert_binary_ops_equal(shape: [usize; 4], views: &(View, View)) {
    let flex = strided_binary_ops::<Flex>(shape, views);
    let ndarray = strided_binary_ops::<NdArray>(shape, views);
    for (op, (f, n)) in ["add", "sub", "mul", "div"]
        .iter()
        .zip(flex.iter().zip(&ndarray))
    {
        assert_eq!(f, n, "{op} of {shape:?} with views {views:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The patch's row-at-a-time binary ops and copies (broadcasts the SIMD patterns miss,
    /// slices, transposes, flips) give ndarray's results bit for bit.
    #[test]
    fn flex_strided_binary_ops_equal_ndarrays(
        shape in proptest::array::uniform4(1usize..7),
        views in (view(), view()),
    ) {
        assert_binary_ops_equal(shape, &views);
    }
}

/// Above the threshold where the rows split across threads: LPIPS' division by a channel norm
/// (`[N, 1, H, W]`), a per-channel weight (`[1, C, 1, 1]`) and a sliced lhs.
#[test]
fn flex_large_strided_binary_ops_equal_ndarrays() {
    let shape = [2, 48, 64, 45];
    let plain = View {
        broadcast: [false; 4],
        narrow: None,
        swap: None,
        flip: None,
    };
    let norm = View {
        broadcast: [false, true, false, false],
        ..plain.clone()
    };
    let channel = View {
        broadcast: [true, false, true, true],
        ..plain.clone()
    };
    let sliced = View {
        narrow: Some(1),
        ..plain.clone()
    };
    for views in [
        (plain.clone(), norm.clone()),
        (plain.clone(), channel.clone()),
        (sliced.clone(), norm),
        (sliced.clone(), sliced),
        (channel, plain),
    ] {
        assert_binary_ops_equal(shape, &views);
    }
}

/// Empty operands with a broadcast: no rows to walk, an empty result (not a division by zero).
#[test]
fn flex_empty_strided_binary_ops_are_empty() {
    let lhs = tensor::<Flex, 2>([0, 3], 1);
    let rhs = tensor::<Flex, 2>([1, 3], 2);
    assert_eq!((lhs.clone() + rhs.clone()).dims(), [0, 3]);
    assert_eq!((lhs.clone() * 2.0 - rhs).dims(), [0, 3]);
    let sliced = tensor::<Flex, 3>([2, 0, 4], 3).narrow(2, 1, 2);
    assert_eq!(
        (sliced.clone() + sliced.swap_dims(0, 2).swap_dims(0, 2)).dims(),
        [2, 0, 2]
    );
}

/// One 2-D max pooling: input `[n, c, h, w]`, kernel, stride, padding, dilation; `ties`: the
/// input rounded to whole numbers (about five distinct values), so that windows hold equal
/// maxima and the index taken among them is compared too.
#[derive(Debug, Clone, Copy)]
struct Pool {
    shape: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
    seed: u64,
    ties: bool,
}

impl Pool {
    /// Output length along one axis (burn's rule), if every window holds an input position:
    /// ndarray and flex disagree on the index of a window that holds none (wholly in the
    /// padding, or stepping over the input with its dilation).
    fn out_len(&self, axis: usize) -> Option<usize> {
        let (input, k, s, p, d) = (
            self.shape[2 + axis],
            self.kernel[axis],
            self.stride[axis],
            self.pad[axis],
            self.dilation[axis],
        );
        let span = d * (k - 1) + 1;
        let padded = input + 2 * p;
        if padded < span {
            return None;
        }
        let out = if self.ceil_mode {
            (padded - span).div_ceil(s) + 1
        } else {
            (padded - span) / s + 1
        };
        let holds_input = |o: usize| (0..k).any(|t| (p..input + p).contains(&(o * s + t * d)));
        (0..out).all(holds_input).then_some(out)
    }

    fn fits(&self) -> bool {
        self.out_len(0).is_some() && self.out_len(1).is_some()
    }
}

fn pool() -> impl Strategy<Value = Pool> {
    (
        (1usize..=2, 1usize..=5, 1usize..=20, 1usize..=20),
        (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        (0usize..=2, 0usize..=2, 1usize..=2, 1usize..=2),
        (any::<bool>(), any::<u64>(), any::<bool>()),
    )
        .prop_map(
            |((n, c, h, w), (kh, kw, sh, sw), (ph, pw, dh, dw), (ceil_mode, seed, ties))| Pool {
                shape: [n, c, h, w],
                kernel: [kh, kw],
                stride: [sh, sw],
                pad: [ph.min(kh / 2), pw.min(kw / 2)],
                dilation: [dh, dw],
                ceil_mode,
                seed,
                ties,
            },
        )
        .prop_filter("every window reaches into the input", Pool::fits)
}

/// Max pooling's output, its indices and the input gradient of `sum(pool(x) * probe)`.
fn pooled_and_grad<B: burn::tensor::backend::AutodiffBackend>(
    pool: &Pool,
) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    use burn::tensor::module::{max_pool2d, max_pool2d_with_indices};
    let x = tensor::<B, 4>(pool.shape, pool.seed);
    let x = if pool.ties {
        x.mul_scalar(1.5).round()
    } else {
        x
    }
    .require_grad();
    let Pool {
        kernel,
        stride,
        pad,
        dilation,
        ceil_mode,
        ..
    } = *pool;
    let (_, indices) =
        max_pool2d_with_indices(x.clone().inner(), kernel, stride, pad, dilation, ceil_mode);
    let y = max_pool2d(x.clone(), kernel, stride, pad, dilation, ceil_mode);
    let probe = tensor::<B, 4>(y.dims(), pool.seed ^ 0x77);
    let grads = (y.clone() * probe).sum().backward();
    let x_grad = x.grad(&grads).expect("x tracks gradients");
    (
        y.inner().into_data().to_vec::<f32>().unwrap_or_default(),
        indices
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap_or_default(),
        x_grad.into_data().to_vec::<f32>().unwrap_or_default(),
    )
}

fn assert_pools_equal(pool: &Pool) {
    let flex = pooled_and_grad::<Autodiff<Flex>>(pool);
    let ndarray = pooled_and_grad::<Autodiff<NdArray>>(pool);
    assert_eq!(flex.0, ndarray.0, "outputs of {pool:?}");
    assert_eq!(flex.1, ndarray.1, "indices of {pool:?}");
    // A pixel that is the maximum of several windows sums their gradients (in any order).
    let worst = flex
        .2
        .iter()
        .zip(&ndarray.2)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-6,
        "input gradients of {pool:?} differ by {worst}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// The patch's max pooling (each window's taps clipped to the input once per output
    /// position, not checked tap by tap) takes the same maxima at the same positions as
    /// ndarray's, with and without padding, dilation, strides and `ceil_mode`.
    #[test]
    fn flex_max_pooling_equals_ndarrays(pool in pool()) {
        assert_pools_equal(&pool);
    }
}

/// ResNet-18's and DenseNet-121's stem pooling at 128 px (3x3, stride 2, padding 1), the
/// same on odd sides at a batch of 3, and with ties (the patch's row-at-a-time pooling must
/// take the first maximum of each window, as ndarray's does).
#[test]
fn flex_max_pooling_of_network_stems_equals_ndarrays() {
    for (shape, ties) in [
        ([2, 64, 64, 64], false),
        ([3, 64, 57, 63], false),
        ([2, 8, 64, 64], true),
    ] {
        assert_pools_equal(&Pool {
            shape,
            kernel: [3, 3],
            stride: [2, 2],
            pad: [1, 1],
            dilation: [1, 1],
            ceil_mode: false,
            seed: shape[2] as u64,
            ties,
        });
    }
}

/// Patch change 20's switch: `set_packed_matmul(false)` sends the calling thread's products to
/// gemm (the same bits as a product whose strided left-hand rows only gemm takes) and `true`
/// back to the packed path (the same bits as before); other threads keep theirs. On a CPU the
/// path does not run on (AVX-512, or no AVX2), both are gemm's.
#[test]
fn flex_packed_matmul_switch_sends_a_threads_products_to_gemm_and_back() {
    use burn_flex::ops::matmul::set_packed_matmul;
    #[cfg(target_arch = "x86_64")]
    let path_runs = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && !is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let path_runs = false;
    let product = |x: &Tensor<Flex, 2>, w: &Tensor<Flex, 2>| -> Vec<f32> {
        x.clone().matmul(w.clone()).into_data().to_vec().unwrap()
    };
    // Depth past gemm's blocks of 512, so that its sums round otherwise than one chain.
    let [rows, k, n] = [8, 1280, 48];
    let strided = tensor::<Flex, 2>([rows, k + 1], 5).narrow(1, 0, k);
    let x = Tensor::<Flex, 2>::from_data(strided.to_data(), &Default::default());
    let w = weight::<Flex>([k, n], true, false, 6);
    let reference = linear_product(
        &tensor::<NdArray, 2>([rows, k + 1], 5).narrow(1, 0, k),
        &weight::<NdArray>([k, n], true, false, 6),
    );

    let packed = product(&x, &w);
    assert!(product(&x, &w) == packed, "the kept panels' call");
    let gemm = product(&strided, &w);
    assert_matmul_close(&packed, &reference, "packed");
    assert_matmul_close(&gemm, &reference, "gemm");
    assert_eq!(
        packed != gemm,
        path_runs,
        "the packed path rounds otherwise than gemm exactly where it runs"
    );

    set_packed_matmul(false);
    assert!(product(&x, &w) == gemm, "switched off: gemm's bits");
    let other = std::thread::scope(|s| s.spawn(|| product(&x, &w)).join().unwrap());
    assert!(other == packed, "another thread keeps its switch on");
    set_packed_matmul(true);
    assert!(
        product(&x, &w) == packed,
        "switched on again: the packed bits"
    );
}

/// The flex tensor under a float tensor.
fn flex_primitive<const D: usize>(t: Tensor<Flex, D>) -> burn_flex::FlexTensor {
    t.into_primitive().tensor()
}

/// Patch change 21: a reshape that inserts or removes dimensions of size 1 is a view of any
/// layout. burn's `linear` unsqueezes a `Linear`'s weight to the input's rank at every call,
/// and a loaded weight is PyTorch's `[out, in]` transposed: that unsqueeze copied the whole
/// weight before. A reshape that merges dimensions of a transposed view still copies.
#[test]
fn flex_unit_dimension_reshapes_of_views_share_their_storage() {
    let [k, n] = [6, 5];
    let w = tensor::<Flex, 2>([n, k], 1).transpose();
    let storage = flex_primitive(w.clone()).data_arc();
    let unsqueezed = flex_primitive(w.clone().reshape([1, k, n]));
    assert!(
        std::sync::Arc::ptr_eq(&storage, &unsqueezed.data_arc()),
        "unsqueeze copied"
    );
    // A new dimension of size 1: the next one's stride times its size, as PyTorch's unsqueeze.
    assert_eq!(unsqueezed.layout().strides(), &[k as isize, 1, k as isize]);
    let squeezed = flex_primitive(w.clone().reshape([1, k, 1, n]).reshape([k, n]));
    assert!(
        std::sync::Arc::ptr_eq(&storage, &squeezed.data_arc()),
        "squeeze copied"
    );
    let merged = flex_primitive(w.clone().reshape([k * n]));
    assert!(!std::sync::Arc::ptr_eq(&storage, &merged.data_arc()));
    assert!(merged.is_contiguous());
    // And burn's `linear` on a 3-D input reads the weight in place, to ndarray's values.
    let x = tensor::<Flex, 3>([2, 3, k], 2);
    let x_ref = tensor::<NdArray, 3>([2, 3, k], 2);
    let w_ref = tensor::<NdArray, 2>([n, k], 1).transpose();
    let y = burn::tensor::module::linear(x, w, None).into_data();
    let y_ref = burn::tensor::module::linear(x_ref, w_ref, None).into_data();
    assert_matmul_close(
        &y.to_vec::<f32>().unwrap(),
        &y_ref.to_vec::<f32>().unwrap(),
        "linear",
    );
}

/// A `[a, b, c, d]` tensor laid out as `view` (size-1 dimensions where it broadcasts), given a
/// dimension of size 1 at `one` (five dimensions), then an element-wise op and a batched
/// product on that view, then back to four dimensions, and with its first dimension of size 1
/// (if any) removed: values, flattened.
fn unit_reshapes<B: Backend>(
    shape: [usize; 4],
    view: &View,
    one: usize,
    seed: u64,
) -> Vec<Vec<f32>> {
    let x = viewed::<B>(shape, view, seed);
    let dims = x.dims();
    let mut five = [1usize; 5];
    for (i, d) in (0..5).filter(|&i| i != one).zip(dims) {
        five[i] = d;
    }
    let y = x.clone().reshape(five);
    let mut probe_dims = five;
    probe_dims[3] = five[4];
    probe_dims[4] = 3;
    let product = y.clone().matmul(tensor::<B, 5>(probe_dims, seed ^ 3));
    let back: Tensor<B, 4> = (y.clone() * 2.0 + tensor::<B, 5>(five, seed ^ 9)).reshape(dims);
    let mut out = vec![
        y.into_data().to_vec().unwrap(),
        product.into_data().to_vec().unwrap(),
        back.into_data().to_vec().unwrap(),
    ];
    if let Some(unit) = dims.iter().position(|&d| d == 1) {
        let mut three = [0usize; 3];
        for (slot, d) in three.iter_mut().zip((0..4).filter(|&i| i != unit)) {
            *slot = dims[d];
        }
        out.push(x.reshape(three).into_data().to_vec().unwrap());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Patch change 21 on every kind of view (broadcast, narrowed, swapped, flipped): a
    /// dimension of size 1 inserted anywhere, and one removed, read the same values as
    /// ndarray's, and ops on the views compute the same.
    #[test]
    fn flex_unit_dimension_reshapes_equal_ndarrays(
        shape in [1usize..5, 1usize..5, 1usize..5, 1usize..5],
        view in view(),
        one in 0usize..5,
        seed in any::<u64>(),
    ) {
        let flex = unit_reshapes::<Flex>(shape, &view, one, seed);
        let ndarray = unit_reshapes::<NdArray>(shape, &view, one, seed);
        prop_assert_eq!(flex.len(), ndarray.len());
        for (f, r) in flex.iter().zip(&ndarray) {
            assert_matmul_close(f, r, &format!("{shape:?} as {view:?}, a 1 at {one}"));
        }
    }
}

/// `x · weight` with `x` `[2, rows / 2, k]` (or `[rows, k]` when `rows` is odd) and `weight`
/// `[k, n]`: a `Linear`'s forward, flattened.
fn linear_product<B: Backend>(x: &Tensor<B, 2>, weight: &Tensor<B, 2>) -> Vec<f32> {
    let [rows, k] = x.dims();
    let out = if rows % 2 == 0 {
        let x3 = x.clone().reshape([2, rows / 2, k]);
        x3.matmul(weight.clone().unsqueeze::<3>())
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    } else {
        x.clone()
            .matmul(weight.clone())
            .into_data()
            .to_vec()
            .unwrap()
    };
    assert_eq!(out.len(), rows * weight.dims()[1]);
    out
}

/// A `[k, n]` weight of seeded values: contiguous, or (`columns`) a contiguous `[n, k]`
/// transposed, as foil keeps a loaded `Linear` weight; with `view`, columns `1..` of a
/// `[k, n + 1]` one (rows `1..` of `[n + 1, k]` transposed), whose storage does not identify it.
fn weight<B: Backend>([k, n]: [usize; 2], columns: bool, view: bool, seed: u64) -> Tensor<B, 2> {
    let extra = usize::from(view);
    if columns {
        tensor::<B, 2>([n + extra, k], seed)
            .narrow(0, extra, n)
            .transpose()
    } else {
        tensor::<B, 2>([k, n + extra], seed).narrow(1, extra, n)
    }
}

/// Patch change 20: f32 products by one right-hand matrix, contiguous by rows or by columns,
/// run a 6 x 16 kernel on AVX2 CPUs without AVX-512, the matrix packed per call at its first
/// use and kept packed from its second. Every call of one weight gives the same bits (the
/// arithmetic does not depend on where the panels come from, nor on the threads), close to
/// ndarray's; rows and columns off the kernel's tile, one row, one column of depth, threaded
/// and not, and past the row limit (gemm); and a kept weight follows its tensor: changed, freed and replaced, and a view into
/// a larger storage (never kept).
#[test]
fn flex_packed_products_are_the_same_on_every_call_and_follow_their_weights() {
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for ([rows, k, n], columns) in [
                ([1, 1, 1], false),
                ([5, 3, 17], true),
                ([6, 16, 16], false),
                ([7, 40, 33], true),
                ([100, 256, 300], false),
                ([100, 256, 300], true),
                ([301, 300, 200], true),
                ([2, 1280, 80], false),
                ([1025, 8, 20], true),
            ] {
                let what = format!(
                    "[{rows}, {k}] x [{k}, {n}] (by columns: {columns}) on {threads} threads"
                );
                let x = tensor::<Flex, 2>([rows, k], 3);
                let x_ref = tensor::<NdArray, 2>([rows, k], 3);
                let mut flex = weight::<Flex>([k, n], columns, false, 4);
                let mut ndarray = weight::<NdArray>([k, n], columns, false, 4);
                for round in 0..7 {
                    let first = linear_product(&x, &flex);
                    assert_matmul_close(
                        &first,
                        &linear_product(&x_ref, &ndarray),
                        &format!("{what}, round {round}"),
                    );
                    for again in 0..2 {
                        assert!(
                            linear_product(&x, &flex) == first,
                            "{what}, round {round}: call {again} after the first differs"
                        );
                    }
                    let seed = round + 100;
                    match round % 3 {
                        // The only handle: burn-flex may write in place.
                        0 => {
                            flex = flex * 1.5 - 0.25;
                            ndarray = ndarray * 1.5 - 0.25;
                        }
                        1 => {
                            drop((flex, ndarray));
                            flex = weight([k, n], columns, false, seed);
                            ndarray = weight([k, n], columns, false, seed);
                        }
                        _ => {
                            flex = weight([k, n], columns, true, seed);
                            ndarray = weight([k, n], columns, true, seed);
                        }
                    }
                }
            }
        });
    }
}
