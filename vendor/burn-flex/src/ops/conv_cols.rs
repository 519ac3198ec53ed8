//! 2-D convolutions that the shifted-GEMM path does not take (strides above 1, and outputs
//! under 16 x 16 pixels) as im2col in the kernel's own order (foil's patch).
//!
//! burn-flex's im2col path builds its columns channel-last, so every call first reorders the
//! whole kernel (`[c_out, c_in, kh, kw]` to `[c_out, kh, kw, c_in]`), copies the input to NHWC
//! and scatters the GEMM's output back to NCHW. On small maps those copies cost more than the
//! arithmetic: a 3x3, 512-channel layer at 4 x 4 reorders 2.4 M weights for a GEMM of 16
//! columns. Here the columns are built in the kernel's order instead, one row per
//! `(c_in, i, j)`, each row the input pixels that tap reads for a tile of output positions:
//!
//! ```text
//! Y[img][:, tile] = W (c_out × c_in·kh·kw, the weights in place) · cols (c_in·kh·kw × tile)
//! ```
//!
//! and the GEMM writes straight into the NCHW output (row stride `ho·wo`). No weight copy, no
//! NHWC copy, no scatter; rows of the columns are contiguous copies of input rows when the
//! stride is 1.
//!
//! On small maps (an image's columns fit one task and it has under 256 output positions) whole
//! images stand side by side in the columns, and the output channels are cut into one block per
//! thread: each block's GEMM reads its rows of the weight once for the whole stack, and its
//! `[block, images · positions]` result is copied into the images' planes.
//!
//! Transposed convolutions below the shifted path's size are `conv_col2im`'s (they were the
//! flipped convolution through this path).

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_backend::ops::conv::calculate_conv_output_size;
use burn_std::{Bytes, Shape};

use crate::ops::conv_shifted::OutPtr;
use crate::{FlexTensor, Layout};

/// Kernels with more taps than this keep burn-flex's path (burn's weight gradient convolves with
/// the whole output gradient as the "kernel").
const MAX_TAPS: usize = 49;
/// Elements of one task's column buffer (1 MiB of f32): a tile of output positions is cut to fit.
const COL_BUDGET: usize = 1 << 18;
/// The smallest tile of output positions when the buffer budget cuts one.
const MIN_TILE: usize = 64;
/// Elements per task when the weight gradient's per-thread accumulators are summed.
const SUM_SLICE: usize = 1 << 14;
/// The weight gradient stacks whole images along its GEMMs' inner dimension until it has this
/// many output positions: with the 16 positions of a 4 x 4 map, each image's GEMM read and wrote
/// the whole accumulator (2.4 M values for a 512-channel 3x3 layer) for 16 products per value.
const STACK_POSITIONS: usize = 256;

/// Whether `conv3d` (a 2-D convolution expanded to 3-D) can take the kernel-order im2col path.
pub(crate) fn applies(x_shape: &[usize], w_shape: &[usize], options: &ConvOptions<3>) -> bool {
    let taps = w_shape[3] * w_shape[4];
    options.groups == 1
        && options.stride[0] == 1
        && options.padding[0] == 0
        && x_shape[0] > 0
        && w_shape[0] > 0
        && w_shape[1] > 0
        && w_shape[2] == 1
        && x_shape[2] == 1
        && (1..=MAX_TAPS).contains(&taps)
        && output_side(x_shape[3], w_shape[3], options, 1) > 0
        && output_side(x_shape[4], w_shape[4], options, 2) > 0
}

/// Output rows (`axis` 1) or columns (`axis` 2), zero if the kernel does not fit.
fn output_side(side: usize, kernel: usize, options: &ConvOptions<3>, axis: usize) -> usize {
    let span = options.dilation[axis] * (kernel - 1) + 1;
    if side + 2 * options.padding[axis] < span {
        return 0;
    }
    calculate_conv_output_size(
        kernel,
        options.stride[axis],
        options.padding[axis],
        options.dilation[axis],
        side,
    )
}

/// The kernel-order im2col convolution; the caller has checked [`applies`].
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
    let x = x.to_contiguous();
    let weight = weight.to_contiguous();
    let x_shape = x.layout().shape();
    let w_shape = weight.layout().shape();
    let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[3], x_shape[4]);
    let (co, kh, kw) = (w_shape[0], w_shape[3], w_shape[4]);
    let geometry = Geometry {
        h,
        w,
        ho: output_side(h, kh, options, 1),
        wo: output_side(w, kw, options, 2),
        kh,
        kw,
        stride: [options.stride[1], options.stride[2]],
        pad: [options.padding[1], options.padding[2]],
        dilation: [options.dilation[1], options.dilation[2]],
    };
    let (ho, wo) = (geometry.ho, geometry.wo);
    let positions = ho * wo;
    let out_shape = Shape::from(vec![n, co, 1, ho, wo]);
    if positions == 0 {
        return FlexTensor::new(
            Bytes::from_elems(vec![T::zero(); 0]),
            Layout::contiguous(out_shape),
            dtype,
        );
    }
    let depth = c * kh * kw;
    let x_data: &[T] = x.storage();
    let w_data: &[T] = weight.storage();
    let bias = bias.map(|b| b.to_contiguous());
    let bias: Option<&[T]> = bias.as_ref().map(|b| b.storage());

    let tile = tile_for(depth, positions);
    let tiles = positions.div_ceil(tile);
    let stack = images_per_gemm(n, tiles, depth, positions);
    // Not zeroed: the GEMMs (`read_dst` false) or the stacked copies write every value before
    // the bias is added (fresh buffers' `memset` was 4-6 % of a ResNet-18 input gradient's
    // time).
    let mut out: Vec<T> = Vec::with_capacity(n * co * positions);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let problem = Problem {
        x: x_data,
        w: w_data,
        bias,
        geometry: &geometry,
        c,
        co,
        depth,
    };
    if stack > 1 {
        problem.stacked(n, stack, &out_ptr);
    } else {
        problem.per_image(n, tile, &out_ptr);
    }
    // SAFETY: within the capacity, and every value is written (see `Problem`'s two paths).
    unsafe { out.set_len(n * co * positions) };

    FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(out_shape), dtype)
}

/// Images side by side in one GEMM of the forward convolution: more than one when an image's
/// columns fit one task ([`COL_BUDGET`]) and its output positions are few (under
/// [`STACK_POSITIONS`]), as in the weight gradient. One image per GEMM read the whole weight
/// for each image's 16 positions of a 4 x 4 map (ResNet-18's last stage: 9.4 MB of weights
/// per image), and gemm ran its narrowest micro-kernel (16 positions wide).
fn images_per_gemm(n: usize, tiles: usize, depth: usize, positions: usize) -> usize {
    if tiles > 1 {
        return 1;
    }
    (STACK_POSITIONS / positions)
        .min(2 * COL_BUDGET / (depth * positions))
        .clamp(1, n)
}

/// One forward convolution's operands, for [`conv3d`]'s two ways of cutting it into GEMMs.
struct Problem<'a, T> {
    /// The input, `[n, c, h, w]`.
    x: &'a [T],
    /// The weight as a `[co, depth]` matrix, in place.
    w: &'a [T],
    bias: Option<&'a [T]>,
    geometry: &'a Geometry,
    c: usize,
    co: usize,
    /// Rows of the columns: `c · kh · kw`.
    depth: usize,
}

impl<T> Problem<'_, T>
where
    T: num_traits::Float + Send + Sync + 'static,
{
    /// Output positions per image.
    fn positions(&self) -> usize {
        self.geometry.ho * self.geometry.wo
    }

    /// Row `row` (input channel `row / (kh·kw)`, tap `row % (kh·kw)`) of image `img`'s columns
    /// for output positions `t0 .. t0 + dst.len()`; where the tap reads padding `dst` is left
    /// as it is (zero: every caller zeroes its columns once).
    fn fill_row(&self, dst: &mut [T], img: usize, row: usize, t0: usize) {
        let g = self.geometry;
        let (plane, taps) = (g.h * g.w, g.kh * g.kw);
        let input = &self.x[(img * self.c + row / taps) * plane..][..plane];
        g.fill_row(dst, input, (row / g.kw) % g.kh, row % g.kw, t0);
    }

    /// One GEMM per image and tile of output positions, tasks on the threads (each GEMM split
    /// over them too when the tasks are fewer than the threads), writing straight into the
    /// NCHW output.
    fn per_image(&self, n: usize, tile: usize, out: &OutPtr<T>) {
        let (co, depth, positions) = (self.co, self.depth, self.positions());
        let tiles = positions.div_ceil(tile);
        let jobs = n * tiles;
        let parallelism = gemm_parallelism(jobs < threads(), co * tile * depth);
        let task = |job: usize| {
            let img = job / tiles;
            let t0 = (job % tiles) * tile;
            let tn = tile.min(positions - t0);
            let mut cols = vec![T::zero(); depth * tn];
            for (row, dst) in cols.chunks_exact_mut(tn).enumerate() {
                self.fill_row(dst, img, row, t0);
            }
            // SAFETY: lhs is the [co, depth] weight matrix, rhs the task's [depth, tn] columns,
            // dst the [co, tn] block of image `img` at output positions t0.. (row stride
            // `positions`), which no other task writes; `read_dst` is false, so the GEMM
            // writes it all before the bias is added.
            unsafe {
                gemm::gemm(
                    co,
                    tn,
                    depth,
                    out.ptr().add(img * co * positions + t0),
                    1,
                    positions as isize,
                    false,
                    self.w.as_ptr(),
                    1,
                    depth as isize,
                    cols.as_ptr(),
                    1,
                    tn as isize,
                    T::one(),
                    T::one(),
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
            if let Some(b) = self.bias {
                for (o, bo) in b.iter().enumerate() {
                    for i in 0..tn {
                        let at = (img * co + o) * positions + t0 + i;
                        // SAFETY: as above, this task's own block, written by the GEMM.
                        unsafe { out.write(at, out.read(at) + *bo) };
                    }
                }
            }
        };
        for_each_job(jobs, task);
    }

    /// `stack` whole images side by side per GEMM: their columns built once (rows on the
    /// threads), then the output channels cut into one block per thread, each block's GEMM
    /// reading its rows of the weight once for all the images, and its result copied into the
    /// images' NCHW planes.
    fn stacked(&self, n: usize, stack: usize, out: &OutPtr<T>) {
        let (co, depth, positions) = (self.co, self.depth, self.positions());
        let width = stack * positions;
        // Zeroed once: every stack writes the same in-image entries (the padding depends on
        // the geometry alone), and a short last stack uses the first columns of each row.
        let mut cols = vec![T::zero(); depth * width];
        let co_block = co.div_ceil(threads()).next_multiple_of(16).min(co);
        let blocks = co.div_ceil(co_block);
        for first in (0..n).step_by(stack) {
            let images = stack.min(n - first);
            let k = images * positions;
            let fill = |(row, dst): (usize, &mut [T])| {
                for (i, dst) in dst[..k].chunks_exact_mut(positions).enumerate() {
                    self.fill_row(dst, first + i, row, 0);
                }
            };
            #[cfg(feature = "rayon")]
            {
                use rayon::prelude::*;
                cols.par_chunks_exact_mut(width).enumerate().for_each(fill);
            }
            #[cfg(not(feature = "rayon"))]
            cols.chunks_exact_mut(width).enumerate().for_each(fill);
            let cols = &cols;
            let task = |block: usize| {
                let o0 = block * co_block;
                let m = co_block.min(co - o0);
                let mut y = Vec::with_capacity(m * k);
                // SAFETY: lhs is rows o0.. of the [co, depth] weight, rhs the first k columns
                // of the [depth, width] columns (row stride `width`), dst the task's own [m, k]
                // buffer, which the GEMM (`read_dst` false) writes in full before its length
                // is set.
                unsafe {
                    gemm::gemm(
                        m,
                        k,
                        depth,
                        y.as_mut_ptr(),
                        1,
                        k as isize,
                        false,
                        self.w.as_ptr().add(o0 * depth),
                        1,
                        depth as isize,
                        cols.as_ptr(),
                        1,
                        width as isize,
                        T::one(),
                        T::one(),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    y.set_len(m * k);
                }
                for (local, row) in y.chunks_exact(k).enumerate() {
                    let o = o0 + local;
                    let b = self.bias.map_or(T::zero(), |b| b[o]);
                    for (i, values) in row.chunks_exact(positions).enumerate() {
                        let at = ((first + i) * co + o) * positions;
                        for (p, v) in values.iter().enumerate() {
                            // SAFETY: in bounds (image first + i < n, o < co, p < positions);
                            // output channel o of these images is this task's alone.
                            unsafe { out.write(at + p, *v + b) };
                        }
                    }
                }
            };
            for_each_job(blocks, task);
        }
    }
}

/// Runs `task(0 .. jobs)`, on the threads when there are several.
fn for_each_job(jobs: usize, task: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        if jobs > 1 {
            (0..jobs).into_par_iter().for_each(task);
            return;
        }
    }
    (0..jobs).for_each(task);
}

/// Output positions per task: all of them when their columns fit [`COL_BUDGET`], else a tile
/// cut to fit it (at least [`MIN_TILE`]).
fn tile_for(depth: usize, positions: usize) -> usize {
    if depth * positions <= COL_BUDGET {
        positions
    } else {
        (COL_BUDGET / depth).max(MIN_TILE).min(positions)
    }
}

/// The threads rayon runs on (one without rayon); the other convolution paths read it too.
pub(crate) fn threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// Each GEMM splits itself across the threads when `split` (too few tasks to fill them) and its
/// `m·n·k` is large enough to pay for it.
pub(crate) fn gemm_parallelism(split: bool, work: usize) -> gemm::Parallelism {
    #[cfg(feature = "rayon")]
    if split && work >= 64 * 64 * 64 {
        return gemm::Parallelism::Rayon(0);
    }
    let _ = (split, work);
    gemm::Parallelism::None
}

/// Sizes of one 2-D convolution.
struct Geometry {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
}

impl Geometry {
    /// One row of the columns: what tap `(i, j)` reads from `plane` (one input channel) for the
    /// output positions `t0 .. t0 + dst.len()`; zero where it falls in the padding.
    fn fill_row<T: Copy>(&self, dst: &mut [T], plane: &[T], i: usize, j: usize, t0: usize) {
        debug_assert!(i < self.kh && j < self.kw);
        let [sh, sw] = self.stride;
        let [ph, pw] = self.pad;
        let [dh, dw] = self.dilation;
        // Output columns whose input column `ow·sw + j·dw - pw` is inside the image.
        let first = (pw.saturating_sub(j * dw)).div_ceil(sw);
        let last = if self.w + pw > j * dw {
            ((self.w + pw - j * dw - 1) / sw + 1).min(self.wo)
        } else {
            0
        };
        let mut done = 0;
        while done < dst.len() {
            let p = t0 + done;
            let (oh, ow0) = (p / self.wo, p % self.wo);
            let run = (self.wo - ow0).min(dst.len() - done);
            let ih = (oh * sh + i * dh) as isize - ph as isize;
            if ih >= 0 && (ih as usize) < self.h {
                let src = &plane[ih as usize * self.w..][..self.w];
                let (lo, hi) = (first.max(ow0), last.min(ow0 + run));
                if lo < hi {
                    let out = &mut dst[done + lo - ow0..done + hi - ow0];
                    let start = lo * sw + j * dw - pw;
                    if sw == 1 {
                        out.copy_from_slice(&src[start..start + out.len()]);
                    } else {
                        for (k, v) in out.iter_mut().enumerate() {
                            *v = src[start + k * sw];
                        }
                    }
                }
            }
            done += run;
        }
    }
}

/// The weight gradient of a 2-D convolution (any groups, strides, padding, dilation), from the
/// same kernel-order columns as [`conv3d`]:
///
/// ```text
/// dW[group] (c_out/g × c_in/g·kh·kw) += G[img][group rows, tile] · cols[group rows, tile]ᵀ
/// ```
///
/// summed over images and tiles of output positions (on small maps, several whole images at a
/// time: their positions side by side in one GEMM). burn's generic weight gradient is a
/// convolution of the channel-swapped input with the whole output gradient as its kernel
/// (hundreds of taps), which goes to burn-flex's im2col path with two swapped copies and a
/// kernel reorder of the output gradient. `x` is `[n, c_in, h, w]`, `output_grad`
/// `[n, c_out, ho, wo]`; the result has `weight_shape` (`[c_out, c_in / groups, kh, kw]`).
pub(crate) fn conv2d_weight_grad<T>(
    x: FlexTensor,
    output_grad: FlexTensor,
    weight_shape: Shape,
    options: &ConvOptions<2>,
    dtype: DType,
) -> FlexTensor
where
    T: num_traits::Float + bytemuck::Pod + burn_backend::Element + Send + Sync + 'static,
{
    let x = x.to_contiguous();
    let grad = output_grad.to_contiguous();
    let x_shape = x.layout().shape();
    let g_shape = grad.layout().shape();
    let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let (co, ho, wo) = (g_shape[1], g_shape[2], g_shape[3]);
    let (kh, kw) = (weight_shape[2], weight_shape[3]);
    let groups = options.groups;
    let geometry = Geometry {
        h,
        w,
        ho,
        wo,
        kh,
        kw,
        stride: options.stride,
        pad: options.padding,
        dilation: options.dilation,
    };
    let positions = ho * wo;
    let depth = c * kh * kw;
    let (co_g, depth_g) = (co / groups, depth / groups);
    let size = co * depth_g;
    if n == 0 || positions == 0 || size == 0 {
        return FlexTensor::new(
            Bytes::from_elems(vec![T::zero(); size]),
            Layout::contiguous(weight_shape),
            dtype,
        );
    }
    let x_data: &[T] = x.storage();
    let g_data: &[T] = grad.storage();

    let tile = tile_for(depth, positions);
    let tiles = positions.div_ceil(tile);
    // A job is one tile of one image, or several whole images when an image has few positions.
    let stack = if tiles == 1 {
        (STACK_POSITIONS / positions)
            .min(2 * COL_BUDGET / (depth * positions))
            .clamp(1, n)
    } else {
        1
    };
    let jobs = if stack > 1 { n.div_ceil(stack) } else { n * tiles };
    let job_at = |job: usize| {
        if stack > 1 {
            let first = job * stack;
            (first, stack.min(n - first), 0, positions)
        } else {
            let t0 = (job % tiles) * tile;
            (job / tiles, 1, t0, tile.min(positions - t0))
        }
    };
    let inner = stack * tile;
    let threads = threads();
    // One accumulator per part of the jobs, summed in order at the end: the result depends on
    // the thread count, never on the scheduling. With fewer jobs than threads, one part whose
    // GEMMs split themselves.
    let parts = if jobs >= threads { threads } else { 1 };
    let parallelism = gemm_parallelism(parts == 1 && threads > 1, co_g * depth_g * inner);

    let part = |index: usize| {
        // Not zeroed: the part's first GEMMs (`read_dst` false) write every value, the later
        // ones add to them (foil's patch: a 512-channel 3x3 layer at 4 x 4 is one GEMM, and
        // zeroing its 2.4 M values, then reading them back, took a third of its time).
        let mut acc: Vec<T> = Vec::with_capacity(size);
        let mut cols = vec![T::zero(); depth * inner];
        // The output gradient of stacked images, gathered as [co, images · positions].
        let mut stacked = vec![T::zero(); if stack > 1 { co * inner } else { 0 }];
        let jobs = index * jobs / parts..(index + 1) * jobs / parts;
        // Every part has a job (`parts` is 1 or at most `jobs`).
        debug_assert!(!jobs.is_empty());
        let first_job = jobs.start;
        for job in jobs {
            let (img, images, t0, tn) = job_at(job);
            let k = images * tn;
            let cols = &mut cols[..depth * k];
            // Fresh columns are zero; later jobs may lay out other positions.
            if job != first_job {
                cols.fill(T::zero());
            }
            for (row, dst) in cols.chunks_exact_mut(k).enumerate() {
                for (i, dst) in dst.chunks_exact_mut(tn).enumerate() {
                    let plane = &x_data[((img + i) * c + row / (kh * kw)) * h * w..][..h * w];
                    geometry.fill_row(dst, plane, (row / kw) % kh, row % kw, t0);
                }
            }
            let (g, g_stride) = if images == 1 {
                (&g_data[img * co * positions + t0..], positions)
            } else {
                for (o, dst) in stacked[..co * k].chunks_exact_mut(k).enumerate() {
                    for (i, dst) in dst.chunks_exact_mut(tn).enumerate() {
                        dst.copy_from_slice(&g_data[((img + i) * co + o) * positions..][..tn]);
                    }
                }
                (&stacked[..], k)
            };
            for group in 0..groups {
                // SAFETY: lhs is the group's [co_g, k] block of the output gradient (row stride
                // `g_stride`), rhs the transpose of its [depth_g, k] rows of the columns (a
                // [k, depth_g] matrix with row stride 1 and column stride k), dst the group's
                // [co_g, depth_g] rows of this part's own accumulator (capacity `size`), all
                // in bounds; the first job writes them without reading (`read_dst` false),
                // later jobs read what it wrote.
                unsafe {
                    gemm::gemm(
                        co_g,
                        depth_g,
                        k,
                        acc.as_mut_ptr().add(group * co_g * depth_g),
                        1,
                        depth_g as isize,
                        job != first_job,
                        g.as_ptr().add(group * co_g * g_stride),
                        1,
                        g_stride as isize,
                        cols.as_ptr().add(group * depth_g * k),
                        k as isize,
                        1,
                        T::one(),
                        T::one(),
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
            }
        }
        // SAFETY: the first job's GEMMs wrote all `groups · co_g · depth_g = size` values.
        unsafe { acc.set_len(size) };
        acc
    };
    #[cfg(feature = "rayon")]
    let mut partial: alloc::vec::Vec<alloc::vec::Vec<T>> = {
        use rayon::prelude::*;
        (0..parts).into_par_iter().map(part).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let mut partial: alloc::vec::Vec<alloc::vec::Vec<T>> = (0..parts).map(part).collect();
    // Part 0 + part 1 + ... for every element, in slices on the threads.
    let mut total = partial.remove(0);
    let add_parts = |(slice, t): (usize, &mut [T])| {
        let start = slice * SUM_SLICE;
        for other in &partial {
            for (t, o) in t.iter_mut().zip(&other[start..]) {
                *t = *t + *o;
            }
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        total.par_chunks_mut(SUM_SLICE).enumerate().for_each(add_parts);
    }
    #[cfg(not(feature = "rayon"))]
    total.chunks_mut(SUM_SLICE).enumerate().for_each(add_parts);
    FlexTensor::new(Bytes::from_elems(total), Layout::contiguous(weight_shape), dtype)
}
