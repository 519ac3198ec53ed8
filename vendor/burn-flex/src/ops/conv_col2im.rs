//! Transposed 2-D convolutions on small maps as one GEMM over the batch and a col2im on the
//! threads (foil's patch).
//!
//! A transposed convolution (stride `s`, padding `p`, dilation `d`) scatters every input pixel,
//! times the kernel, into the output:
//!
//! ```text
//! out[img, o, ih·s + i·d - p, iw·s + j·d - p] += Σ_c x[img, c, ih, iw] · w[c, o, i, j]
//! ```
//!
//! With the weight read as the `[c_in, c_out·kh·kw]` matrix it is stored as, and the images'
//! pixels side by side,
//!
//! ```text
//! Y (c_out·kh·kw × n·h·w) = Wᵀ · X (c_in × n·h·w)
//! ```
//!
//! and col2im adds row `(o, i, j)` of `Y`, shifted by `(i·d - p, j·d - p)` (every `s`-th pixel),
//! into output plane `o`. One GEMM reads the weight once for the whole batch, in its stored
//! order. This replaces, for groups of 1, burn-flex's GEMM + col2im per image and group with its
//! col2im on one thread (strides above 1: the input gradient of every downsampling
//! convolution), and the stride-1 transposed convolutions that the Winograd and shifted paths
//! do not take, which were the flipped convolution through `conv_cols`: on ResNet-18's
//! 512-channel layers at 4 x 4, reordering the 2.4 M weights into the flipped kernel was most
//! of that route's time (its reads a weight row apart, and the copy's traffic).

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvTransposeOptions;
use burn_backend::ops::conv::calculate_conv_transpose_output_size;
use burn_std::{Bytes, Shape};

use crate::{FlexTensor, Layout};

/// Kernels with more taps than this keep burn-flex's path (as the convolutions' `conv_cols`).
const MAX_TAPS: usize = 49;
/// Elements of `Y` per GEMM (4 MiB of f32): images are stacked up to it, and when one image's
/// columns exceed it, the output channels are cut into chunks that fit.
const Y_BUDGET: usize = 1 << 20;
/// The col2im splits across the threads from this many added values on.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
const PARALLEL_ADDS: usize = 1 << 15;

/// Whether [`conv_transpose`] takes a transposed convolution (2-D expanded to 3-D, groups 1).
pub(crate) fn applies(
    x_shape: &[usize],
    w_shape: &[usize],
    options: &ConvTransposeOptions<3>,
) -> bool {
    let taps = w_shape[3] * w_shape[4];
    options.groups == 1
        && options.stride[0] == 1
        && options.padding[0] == 0
        && options.padding_out[0] == 0
        && x_shape[2] == 1
        && w_shape[2] == 1
        && x_shape.iter().all(|&s| s > 0)
        && w_shape[1] > 0
        && (1..=MAX_TAPS).contains(&taps)
}

/// `x` `[n, c_in, 1, h, w]`, `weight` `[c_in, c_out, 1, kh, kw]`; the caller has checked
/// [`applies`].
pub(crate) fn conv_transpose<T>(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvTransposeOptions<3>,
    dtype: DType,
) -> FlexTensor
where
    T: num_traits::Float + bytemuck::Pod + burn_backend::Element + Send + Sync + 'static,
{
    let x = x.to_contiguous();
    let weight = weight.to_contiguous();
    let x_shape = x.layout().shape();
    let w_shape = weight.layout().shape();
    let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[3], x_shape[4]);
    let (co, kh, kw) = (w_shape[1], w_shape[3], w_shape[4]);
    let side = |axis: usize, kernel: usize, input: usize| {
        calculate_conv_transpose_output_size(
            kernel,
            options.stride[axis],
            options.padding[axis],
            options.padding_out[axis],
            options.dilation[axis],
            input,
        )
    };
    let scatter = Scatter {
        h,
        w,
        ho: side(1, kh, h),
        wo: side(2, kw, w),
        kw,
        stride: [options.stride[1], options.stride[2]],
        pad: [options.padding[1], options.padding[2]],
        dilation: [options.dilation[1], options.dilation[2]],
    };
    let taps = kh * kw;
    let pixels = h * w;
    let plane = scatter.ho * scatter.wo;
    let out_shape = Shape::from(vec![n, co, 1, scatter.ho, scatter.wo]);
    let mut out = vec![T::zero(); n * co * plane];
    if out.is_empty() {
        return FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(out_shape), dtype);
    }
    let x_data: &[T] = x.storage();
    let w_data: &[T] = weight.storage();
    let bias = bias.map(|b| b.to_contiguous());
    let bias: Option<&[T]> = bias.as_ref().map(|b| b.storage());

    // Images per GEMM, and output channels per GEMM when one image's columns exceed the budget.
    let stack = (Y_BUDGET / (co * taps * pixels)).clamp(1, n);
    let chunk = (Y_BUDGET / (taps * pixels)).clamp(1, co);
    // Neither buffer is zeroed (a `memset` of up to 4 MiB per call): `stacked` is refilled for
    // each stack of images, and `y` holds exactly the values its last GEMM wrote.
    let mut stacked: Vec<T> = Vec::with_capacity(if stack > 1 { c * stack * pixels } else { 0 });
    let mut y: Vec<T> = Vec::with_capacity(chunk * taps * stack * pixels);

    for first in (0..n).step_by(stack) {
        let images = stack.min(n - first);
        let cols = images * pixels;
        // X: the images' channels side by side, [c_in, images·h·w] (the input itself for one).
        let (rhs, rhs_rs) = if images == 1 {
            (&x_data[first * c * pixels..][..c * pixels], pixels)
        } else {
            stacked.clear();
            for ci in 0..c {
                for img in first..first + images {
                    stacked.extend_from_slice(&x_data[(img * c + ci) * pixels..][..pixels]);
                }
            }
            (&stacked[..], cols)
        };
        for o0 in (0..co).step_by(chunk) {
            let channels = chunk.min(co - o0);
            let rows = channels * taps;
            // SAFETY: dst is `y`'s first `rows × cols` block (row stride `cols`); lhs is the
            // weight's columns `o0·taps..` read as `[rows, c_in]` (element (r, k) at
            // `k·co·taps + o0·taps + r`, inside the `[c_in, co·taps]` weight); rhs is the
            // `[c_in, cols]` matrix above (row stride `rhs_rs`). `read_dst` is false: the GEMM
            // writes all of dst, which is within `y`'s capacity (`rows·cols` is at most
            // `chunk·taps·stack·pixels`), and the length is set to that block after it.
            unsafe {
                gemm::gemm(
                    rows,
                    cols,
                    c,
                    y.as_mut_ptr(),
                    1,
                    cols as isize,
                    false,
                    w_data.as_ptr().add(o0 * taps),
                    (co * taps) as isize,
                    1,
                    rhs.as_ptr(),
                    1,
                    rhs_rs as isize,
                    T::zero(),
                    T::one(),
                    false,
                    false,
                    false,
                    crate::ops::conv_cols::gemm_parallelism(true, rows * cols * c),
                );
                y.set_len(rows * cols);
            }
            for img in 0..images {
                let planes = &mut out[((first + img) * co + o0) * plane..][..channels * plane];
                let fill = |(o, dst): (usize, &mut [T])| {
                    let row = (o * taps) * cols + img * pixels;
                    for t in 0..taps {
                        scatter.add_tap(dst, &y[row + t * cols..][..pixels], t / kw, t % kw);
                    }
                    if let Some(b) = bias {
                        let b = b[o0 + o];
                        dst.iter_mut().for_each(|v| *v = *v + b);
                    }
                };
                #[cfg(feature = "rayon")]
                if rows * pixels >= PARALLEL_ADDS {
                    use rayon::prelude::*;
                    let min = (PARALLEL_ADDS / (taps * pixels)).max(1);
                    planes
                        .par_chunks_mut(plane)
                        .enumerate()
                        .with_min_len(min)
                        .for_each(fill);
                    continue;
                }
                planes.chunks_mut(plane).enumerate().for_each(fill);
            }
        }
    }
    FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(out_shape), dtype)
}

/// Where one tap of the kernel sends each input pixel.
struct Scatter {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    kw: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
}

impl Scatter {
    /// `dst[oh, ow] += src[ih, iw]` for tap `(i, j)`: `oh = ih·s + i·d - p` (and so `ow`), for
    /// the input pixels whose target lies inside the `ho x wo` plane `dst`.
    fn add_tap<T: num_traits::Float>(&self, dst: &mut [T], src: &[T], i: usize, j: usize) {
        debug_assert!(j < self.kw);
        let [sh, sw] = self.stride;
        let (rows, oh0) = inside(self.h, self.ho, sh, i * self.dilation[0], self.pad[0]);
        let (cols, ow0) = inside(self.w, self.wo, sw, j * self.dilation[1], self.pad[1]);
        if cols.is_empty() {
            return;
        }
        for (r, ih) in rows.enumerate() {
            let src = &src[ih * self.w + cols.start..ih * self.w + cols.end];
            let out_row = &mut dst[(oh0 + r * sh) * self.wo..][..self.wo];
            if sw == 1 {
                let out = &mut out_row[ow0..ow0 + src.len()];
                for (o, s) in out.iter_mut().zip(src) {
                    *o = *o + *s;
                }
            } else {
                for (k, s) in src.iter().enumerate() {
                    let o = &mut out_row[ow0 + k * sw];
                    *o = *o + *s;
                }
            }
        }
    }
}

/// The input positions `lo..hi` along one axis whose target `ix·stride + offset - pad` lies in
/// `0..out`, and the first one's target.
fn inside(
    input: usize,
    out: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> (core::ops::Range<usize>, usize) {
    // ix·stride + offset >= pad
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // ix·stride + offset < out + pad
    let hi = if out + pad > offset {
        (out + pad - offset).div_ceil(stride).min(input)
    } else {
        0
    };
    if lo >= hi {
        return (0..0, 0);
    }
    (lo..hi, lo * stride + offset - pad)
}
