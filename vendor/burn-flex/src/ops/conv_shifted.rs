//! Stride-1 convolutions as one GEMM per kernel tap, reading the input in place (foil's patch).
//!
//! Zero-pad each input channel into rows of width `wp = w + 2·pad_w` and flatten it. The input
//! pixel that kernel tap `(i, j)` reads for the output at the flat padded position
//! `p = oh·wp + ow` is then `p + i·dil_h·wp + j·dil_w`: one constant offset per tap. So the output
//! over all padded positions is
//!
//! ```text
//! Σ_(i, j)  W[:, :, i, j] (c_out × c_in)  ·  X_pad[:, off_ij .. off_ij + P] (c_in × P)
//! ```
//!
//! one GEMM per tap whose right-hand side is a strided view of the padded input: no im2col
//! buffer is built, and the GEMM runs at the micro-kernel's speed (2-5x the im2col path on a
//! 3x3, 128-512 channel convolution). The last `wp - wo` columns of every output row are junk
//! (they wrap into the next row) and are dropped when a tile is written out.
//!
//! A transposed convolution with stride 1 is the same convolution with the kernel flipped and
//! its two channel axes swapped, padded by `dil·(k - 1) - pad`: burn computes the input gradient
//! of every convolution that way, so backward passes take this path too (or, below this path's
//! size, `conv_col2im`).

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::{ConvOptions, ConvTransposeOptions};
use burn_std::{Bytes, Shape};

use crate::{FlexTensor, Layout};

/// Kernels with more taps than this keep the im2col path (burn's weight gradient convolves
/// with the whole output gradient as the "kernel": thousands of one-channel-deep taps).
const MAX_TAPS: usize = 49;
/// Fewer input channels than this make each per-tap GEMM too shallow to pay off.
const MIN_CHANNELS: usize = 8;
/// Output positions (padded width) per task: the `c_out × TILE` accumulator stays in L2.
const TILE: usize = 1024;
/// Smaller outputs (fewer pixels than 16 x 16 per image) keep the im2col path: each per-tap
/// GEMM would be too small to amortise its set-up (measured on 3x3 convolutions at 4-128 px).
const MIN_OUTPUT_PIXELS: usize = 256;

/// Output pixels per image of a stride-1 convolution, if the kernel fits the padded input.
fn output_pixels(
    side: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
    kernel: [usize; 2],
) -> usize {
    let span = |i: usize| dilation[i] * (kernel[i] - 1);
    let out = |i: usize| (side[i] + 2 * pad[i]).saturating_sub(span(i));
    out(0) * out(1)
}

/// Whether `conv3d` (a 2-D convolution expanded to 3-D) can take the shifted-GEMM path.
pub(crate) fn applies(x_shape: &[usize], w_shape: &[usize], options: &ConvOptions<3>) -> bool {
    let taps = w_shape[3] * w_shape[4];
    options.groups == 1
        && options.stride == [1, 1, 1]
        && options.padding[0] == 0
        && x_shape[0] > 0
        && w_shape[0] > 0
        && w_shape[2] == 1
        && x_shape[2] == 1
        && (2..=MAX_TAPS).contains(&taps)
        && w_shape[1] >= MIN_CHANNELS
        && output_pixels(
            [x_shape[3], x_shape[4]],
            [options.padding[1], options.padding[2]],
            [options.dilation[1], options.dilation[2]],
            [w_shape[3], w_shape[4]],
        ) >= MIN_OUTPUT_PIXELS
}

/// Whether `conv_transpose3d` takes a transposed convolution: the shifted-GEMM (or Winograd)
/// path when the equivalent convolution is large enough for it, else `conv_col2im` (a GEMM and a
/// col2im, no flipped copy of the weight).
pub(crate) fn applies_transposed(
    x_shape: &[usize],
    w_shape: &[usize],
    options: &ConvTransposeOptions<3>,
) -> bool {
    let taps = w_shape[3] * w_shape[4];
    options.groups == 1
        && options.stride == [1, 1, 1]
        && options.padding_out == [0, 0, 0]
        && options.padding[0] == 0
        && x_shape[0] > 0
        && x_shape[1] > 0
        && x_shape[3] > 0
        && x_shape[4] > 0
        && w_shape[1] > 0
        && w_shape[2] == 1
        && x_shape[2] == 1
        && (2..=MAX_TAPS).contains(&taps)
        && options.padding[1] <= options.dilation[1] * (w_shape[3] - 1)
        && options.padding[2] <= options.dilation[2] * (w_shape[4] - 1)
}

/// A transposed convolution (stride 1) as the equivalent convolution.
pub(crate) fn conv_transpose3d<T>(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvTransposeOptions<3>,
    dtype: DType,
) -> FlexTensor
where
    T: num_traits::Float + bytemuck::Pod + burn_backend::Element + Send + Sync + 'static,
{
    let weight = weight.to_contiguous();
    let w_shape = weight.layout().shape();
    let (c_in, c_out, kh, kw) = (w_shape[0], w_shape[1], w_shape[3], w_shape[4]);
    let [_, dh, dw] = options.dilation;
    let conv = ConvOptions::new(
        [1, 1, 1],
        [
            0,
            dh * (kh - 1) - options.padding[1],
            dw * (kw - 1) - options.padding[2],
        ],
        options.dilation,
        1,
    );
    let flipped_shape = [c_out, c_in, 1, kh, kw];
    if crate::ops::conv_winograd::applies(x.layout().shape(), &weight, Kernel::Transposed, &conv) {
        return crate::ops::conv_winograd::conv3d(x, &weight, Kernel::Transposed, bias, &conv);
    }
    if applies(x.layout().shape(), &flipped_shape, &conv) {
        // The shifted path reads the transposed weight flipped in place (one reorder).
        return shifted::<T>(x, &weight, Kernel::Transposed, bias, &conv, dtype);
    }
    // Below both paths' sizes: one GEMM over the batch and a col2im (no flipped weight copy).
    debug_assert!(crate::ops::conv_col2im::applies(
        x.layout().shape(),
        w_shape,
        options
    ));
    crate::ops::conv_col2im::conv_transpose::<T>(x, weight, bias, options, dtype)
}

/// How the shifted path reads its weight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kernel {
    /// A convolution's, `[c_out, c_in, 1, kh, kw]`.
    Forward,
    /// A transposed convolution's, `[c_in, c_out, 1, kh, kw]`: the equivalent convolution's
    /// weight with its channel axes swapped and each kernel rotated by 180 degrees.
    Transposed,
}

/// The shifted-GEMM convolution; the caller has checked [`applies`].
pub(crate) fn conv3d<T>(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<3>,
    dtype: DType,
) -> FlexTensor
where
    T: num_traits::Float + bytemuck::Pod + burn_backend::Element + Send + Sync + 'static,
{
    let weight = weight.to_contiguous();
    shifted::<T>(x, &weight, Kernel::Forward, bias, options, dtype)
}

/// [`conv3d`] with the weight (contiguous) read as `kernel` says.
fn shifted<T>(
    x: FlexTensor,
    weight: &FlexTensor,
    kernel_order: Kernel,
    bias: Option<FlexTensor>,
    options: &ConvOptions<3>,
    dtype: DType,
) -> FlexTensor
where
    T: num_traits::Float + bytemuck::Pod + burn_backend::Element + Send + Sync + 'static,
{
    let x = x.to_contiguous();
    let x_shape = x.layout().shape();
    let w_shape = weight.layout().shape();
    let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[3], x_shape[4]);
    let co = match kernel_order {
        Kernel::Forward => w_shape[0],
        Kernel::Transposed => w_shape[1],
    };
    let (kh, kw) = (w_shape[3], w_shape[4]);
    let [_, ph, pw] = options.padding;
    let [_, dh, dw] = options.dilation;
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    let (ho, wo) = (hp - dh * (kh - 1), wp - dw * (kw - 1));
    // Each padded channel, plus the slack the last tap reads past the bottom-right corner.
    let row_len = hp * wp + dw * (kw - 1);
    let taps = kh * kw;
    let x_data: &[T] = x.storage();
    let w_data: &[T] = weight.storage();

    let mut padded = vec![T::zero(); n * c * row_len];
    let pad_channel = |(plane, dst): (usize, &mut [T])| {
        let src = &x_data[plane * h * w..][..h * w];
        for (r, src_row) in src.chunks_exact(w).enumerate() {
            let start = (r + ph) * wp + pw;
            dst[start..start + w].copy_from_slice(src_row);
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        padded
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(pad_channel);
    }
    #[cfg(not(feature = "rayon"))]
    padded.chunks_mut(row_len).enumerate().for_each(pad_channel);

    // One contiguous [c_out, c_in] matrix per tap; each task fills the rows of a range of
    // output channels in every tap's matrix, reading the weight in its stored order (on the
    // threads from burn-flex's parallel threshold of elements on).
    // Not zeroed: the tasks write every value (fresh buffers' `memset` was 4-6 % of a
    // ResNet-18 input gradient's time).
    let mut per_tap = Vec::with_capacity(taps * co * c);
    let per_tap_ptr = OutPtr(per_tap.as_mut_ptr());
    crate::ops::par::for_each_index(co, taps * co * c, |o| {
        for i in 0..c {
            let taps_of = match kernel_order {
                Kernel::Forward => &w_data[(o * c + i) * taps..][..taps],
                Kernel::Transposed => &w_data[(i * co + o) * taps..][..taps],
            };
            for (t, v) in taps_of.iter().enumerate() {
                // The equivalent convolution's tap t is the transposed kernel's tap taps-1-t.
                let t = match kernel_order {
                    Kernel::Forward => t,
                    Kernel::Transposed => taps - 1 - t,
                };
                // SAFETY: in bounds (t < taps, o < co, i < c); row o of every tap's matrix is
                // written by the task of o alone.
                unsafe { per_tap_ptr.write((t * co + o) * c + i, *v) };
            }
        }
    });
    // SAFETY: within the capacity, and every value is written above (all taps and c_in columns
    // of every output channel's row).
    unsafe { per_tap.set_len(taps * co * c) };
    let bias = bias.map(|b| b.to_contiguous());
    let bias: Option<&[T]> = bias.as_ref().map(|b| b.storage());

    // Tasks: (image, tile of padded positions, block of output channels). Split the output
    // channels only when images x tiles alone would leave threads idle.
    let positions = ho * wp;
    let tiles = positions.div_ceil(TILE);
    #[cfg(feature = "rayon")]
    let threads = rayon::current_num_threads();
    #[cfg(not(feature = "rayon"))]
    let threads: usize = 1;
    let wanted_blocks = (2 * threads).div_ceil(n * tiles);
    let co_block = co
        .div_ceil(wanted_blocks.max(1))
        .next_multiple_of(16)
        .min(co);
    let blocks = co.div_ceil(co_block);

    // Not zeroed: every value is written by one task.
    let mut out = Vec::with_capacity(n * co * ho * wo);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let task = |job: usize| {
        let img = job / (tiles * blocks);
        let t0 = (job / blocks % tiles) * TILE;
        let o0 = (job % blocks) * co_block;
        let tn = TILE.min(positions - t0);
        let m = co_block.min(co - o0);
        let mut acc = vec![T::zero(); m * tn];
        for t in 0..taps {
            let off = (t / kw) * dh * wp + (t % kw) * dw;
            // SAFETY: lhs is [m, c] inside `per_tap` (row stride c), rhs is [c, tn] inside
            // `padded` (row stride row_len; off + t0 + tn <= row_len by the slack above), dst is
            // the task's own [m, tn] buffer.
            unsafe {
                gemm::gemm(
                    m,
                    tn,
                    c,
                    acc.as_mut_ptr(),
                    1,
                    tn as isize,
                    t > 0,
                    per_tap.as_ptr().add((t * co + o0) * c),
                    1,
                    c as isize,
                    padded.as_ptr().add(img * c * row_len + off + t0),
                    1,
                    row_len as isize,
                    T::one(),
                    T::one(),
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        for (local, row) in acc.chunks_exact(tn).enumerate() {
            let o = o0 + local;
            let b = bias.map_or(T::zero(), |b| b[o]);
            let plane = (img * co + o) * ho * wo;
            let (mut r, mut col) = (t0 / wp, t0 % wp);
            for v in row {
                if col < wo {
                    // SAFETY: every (img, o, r, col < wo) is written by exactly one task.
                    unsafe { out_ptr.write(plane + r * wo + col, *v + b) };
                }
                col += 1;
                if col == wp {
                    col = 0;
                    r += 1;
                }
            }
        }
    };
    let jobs = n * tiles * blocks;
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..jobs).into_par_iter().for_each(task);
    }
    #[cfg(not(feature = "rayon"))]
    (0..jobs).for_each(task);
    // SAFETY: within the capacity; the tasks cover every image, output channel and position
    // (r < ho, col < wo), and each wrote its own.
    unsafe { out.set_len(n * co * ho * wo) };

    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(vec![n, co, 1, ho, wo])),
        dtype,
    )
}

/// The output buffer, written by disjoint tasks.
pub(crate) struct OutPtr<T>(pub(crate) *mut T);

// SAFETY: tasks write disjoint elements of a buffer that outlives them.
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Send> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// The buffer's start.
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }

    /// # Safety
    /// `offset` is in bounds and no other task writes it.
    pub(crate) unsafe fn write(&self, offset: usize, value: T) {
        unsafe { self.0.add(offset).write(value) }
    }

    /// # Safety
    /// `offset` is in bounds, written before, and no other task writes it.
    pub(crate) unsafe fn read(&self, offset: usize) -> T {
        unsafe { self.0.add(offset).read() }
    }
}
