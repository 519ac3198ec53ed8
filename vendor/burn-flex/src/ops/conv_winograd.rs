//! Stride-1 3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3) (foil's patch).
//!
//! Cut the output into 4 x 4 tiles; the 6 x 6 input patch `d` under a tile and a 3x3 kernel `g`
//! give the tile as
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; interpolation
//! points 0, ±1, ±2 and ∞). Summed over the input channels, the element-wise product becomes 36
//! independent GEMMs, one per point of the 6 x 6 transform:
//!
//! ```text
//! M[k] (c_out × tiles) = U[k] (c_out × c_in) · V[k] (c_in × tiles),   k = 0 .. 36
//! ```
//!
//! with `U = G g Gᵀ` (the weights, transformed once per call) and `V = Bᵀ d B` (the input,
//! transformed per tile). Each output pixel then costs `36 / 16 = 2.25` multiply-adds per input
//! channel in the GEMMs instead of 9; the transforms are additions, vectorised over 16 tiles (or
//! 16 channels for the weights) at a time.
//!
//! The transforms multiply by up to 8 and divide by 24, so the result carries a few more
//! rounding errors than a direct sum of 9 · c_in products: about 3e-6 of the output's magnitude in
//! f32 over 256 input channels (1e-7 for the direct sum). Only f32 takes this path (f16 and bf16
//! would lose too much, f64 is rarely worth it).
//!
//! A stride-1 transposed convolution is the convolution with the kernel flipped and its channel
//! axes swapped ([`Kernel::Transposed`]): the weight transform reads it so, as the shifted path does.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};

use super::conv_shifted::{Kernel, OutPtr};
use crate::{FlexTensor, Layout};

/// Output pixels per tile side.
const TILE: usize = 4;
/// Input pixels per tile side (`TILE + 3 - 1`).
const SPAN: usize = 6;
/// Points of the 2-D transform (`SPAN²`): one GEMM each.
const POINTS: usize = SPAN * SPAN;
/// Tiles (or channels) transformed together: the transforms' vector width.
const LANES: usize = 16;
/// Fewer channels than this (in or out) make the 36 GEMMs too thin to beat the shifted path.
const MIN_CHANNELS: usize = 16;
/// Fewer tiles in a call than this (8 x 8 maps at batch 1) leave the weight transform, which
/// costs as much as 36 tiles' GEMMs, unpaid for.
const MIN_TILES: usize = 32;
/// Tiles per task at most: 36 GEMMs of this many columns each.
const MAX_BLOCK: usize = 128;

/// One value per lane.
type Lanes = [f32; LANES];

/// Whether `conv3d` (a 2-D convolution expanded to 3-D) can take the Winograd path.
pub(crate) fn applies(
    x_shape: &[usize],
    w_shape: &[usize],
    options: &ConvOptions<3>,
    dtype: DType,
) -> bool {
    let [_, ph, pw] = options.padding;
    let fits = |side: usize, pad: usize| side + 2 * pad >= 3;
    dtype == DType::F32
        && options.groups == 1
        && options.stride == [1, 1, 1]
        && options.dilation[1..] == [1, 1]
        && options.padding[0] == 0
        && x_shape[2] == 1
        && w_shape[2] == 1
        && w_shape[3] == 3
        && w_shape[4] == 3
        && w_shape[0] >= MIN_CHANNELS
        && w_shape[1] >= MIN_CHANNELS
        && fits(x_shape[3], ph)
        && fits(x_shape[4], pw)
        && x_shape[0]
            * (x_shape[3] + 2 * ph - 2).div_ceil(TILE)
            * (x_shape[4] + 2 * pw - 2).div_ceil(TILE)
            >= MIN_TILES
}

/// The Winograd convolution of `x` (`[n, c_in, 1, h, w]`, f32) with `weight` read as `kernel`
/// says; the caller has checked [`applies`] for the equivalent convolution.
pub(crate) fn conv3d(
    x: FlexTensor,
    weight: &FlexTensor,
    kernel: Kernel,
    bias: Option<FlexTensor>,
    options: &ConvOptions<3>,
) -> FlexTensor {
    let x = x.to_contiguous();
    let weight = weight.to_contiguous();
    let x_shape = x.layout().shape();
    let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[3], x_shape[4]);
    let co = match kernel {
        Kernel::Forward => weight.layout().shape()[0],
        Kernel::Transposed => weight.layout().shape()[1],
    };
    let [_, ph, pw] = options.padding;
    let (ho, wo) = (h + 2 * ph - 2, w + 2 * pw - 2);
    let grid = Grid {
        c,
        co,
        tiles: n * ho.div_ceil(TILE) * wo.div_ceil(TILE),
        rows: ho.div_ceil(TILE),
        cols: wo.div_ceil(TILE),
        ho,
        wo,
    };
    let tiles = grid.tiles;

    let u = transform_weights(weight.storage::<f32>(), kernel, co, c);
    let padded = pad_input(x.storage::<f32>(), n, c, [h, w], [ph, pw], &grid);
    let bias = bias.map(|b| b.to_contiguous());
    let bias: Option<&[f32]> = bias.as_ref().map(|b| b.storage());

    #[cfg(feature = "rayon")]
    let threads = rayon::current_num_threads();
    #[cfg(not(feature = "rayon"))]
    let threads: usize = 1;
    let block = tiles
        .div_ceil(2 * threads)
        .next_multiple_of(LANES)
        .clamp(LANES, MAX_BLOCK);
    let blocks = tiles.div_ceil(block);

    let mut out = vec![0f32; n * co * ho * wo];
    let out_ptr = OutPtr(out.as_mut_ptr());
    let task = |b: usize| {
        let first = b * block;
        let width = block.min(tiles - first).next_multiple_of(LANES);
        let v = grid.transform_input(&padded, first, width);
        let mut m = vec![0f32; POINTS * co * width];
        for k in 0..POINTS {
            // SAFETY: lhs is U[k] ([co, c], row stride c), rhs V[k] ([c, width], row stride
            // width), dst M[k] ([co, width], row stride width), all inside their buffers.
            unsafe {
                gemm::gemm(
                    co,
                    width,
                    c,
                    m.as_mut_ptr().add(k * co * width),
                    1,
                    width as isize,
                    false,
                    u.as_ptr().add(k * co * c),
                    1,
                    c as isize,
                    v.as_ptr().add(k * c * width),
                    1,
                    width as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        grid.transform_output(&m, first, width, bias, &out_ptr);
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().for_each(task);
    }
    #[cfg(not(feature = "rayon"))]
    (0..blocks).for_each(task);

    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(vec![n, co, 1, ho, wo])),
        DType::F32,
    )
}

/// How the output is cut into tiles, and the padded input the tiles read.
struct Grid {
    /// Input and output channels.
    c: usize,
    co: usize,
    /// Tiles in the call (all images).
    tiles: usize,
    /// Tile rows and columns per image.
    rows: usize,
    cols: usize,
    /// Output height and width.
    ho: usize,
    wo: usize,
}

impl Grid {
    /// Height and width of a padded input channel: every tile's patch lies inside it.
    fn padded_side(&self) -> [usize; 2] {
        [self.rows * TILE + 2, self.cols * TILE + 2]
    }

    /// Offset of tile `t`'s top-left input pixel in its image's first padded channel, and the
    /// image.
    fn origin(&self, t: usize) -> (usize, usize) {
        let per_image = self.rows * self.cols;
        let (img, within) = (t / per_image, t % per_image);
        let [_, wp] = self.padded_side();
        (img, (within / self.cols) * TILE * wp + (within % self.cols) * TILE)
    }

    /// `V = Bᵀ d B` of the tiles `first ..` (`width` lanes, the ones past `tiles` zero), as
    /// `[POINTS, c, width]`.
    fn transform_input(&self, padded: &[f32], first: usize, width: usize) -> Vec<f32> {
        let [hp, wp] = self.padded_side();
        let plane = hp * wp;
        let mut v = vec![0f32; POINTS * self.c * width];
        for lane0 in (0..width).step_by(LANES) {
            // Each lane's patch start in channel 0, or None past the last tile.
            let starts: [Option<usize>; LANES] = core::array::from_fn(|l| {
                let t = first + lane0 + l;
                (t < self.tiles).then(|| {
                    let (img, at) = self.origin(t);
                    img * self.c * plane + at
                })
            });
            for ci in 0..self.c {
                let mut d = [[0f32; LANES]; POINTS];
                for (l, start) in starts.iter().enumerate() {
                    let Some(start) = start else { continue };
                    let patch = &padded[start + ci * plane..];
                    for r in 0..SPAN {
                        let row = &patch[r * wp..][..SPAN];
                        for (q, value) in row.iter().enumerate() {
                            d[r * SPAN + q][l] = *value;
                        }
                    }
                }
                let transformed = two_sided(&d, bt);
                for (k, lanes) in transformed.iter().enumerate() {
                    v[(k * self.c + ci) * width + lane0..][..LANES].copy_from_slice(lanes);
                }
            }
        }
        v
    }

    /// `Y = Aᵀ M A` of the tiles `first ..`, plus the bias, written into the output.
    fn transform_output(
        &self,
        m: &[f32],
        first: usize,
        width: usize,
        bias: Option<&[f32]>,
        out: &OutPtr<f32>,
    ) {
        let co = self.co;
        let per_image = self.rows * self.cols;
        for o in 0..co {
            let b = bias.map_or(0.0, |b| b[o]);
            for lane0 in (0..width).step_by(LANES) {
                let mut points = [[0f32; LANES]; POINTS];
                for (k, lanes) in points.iter_mut().enumerate() {
                    lanes.copy_from_slice(&m[(k * co + o) * width + lane0..][..LANES]);
                }
                let y = output_tile(&points);
                for l in 0..LANES {
                    let t = first + lane0 + l;
                    if t >= self.tiles {
                        break;
                    }
                    let (img, within) = (t / per_image, t % per_image);
                    let (r0, c0) = ((within / self.cols) * TILE, (within % self.cols) * TILE);
                    let plane = (img * co + o) * self.ho * self.wo;
                    for r in 0..TILE.min(self.ho - r0) {
                        for q in 0..TILE.min(self.wo - c0) {
                            // SAFETY: in bounds (r0 + r < ho, c0 + q < wo); every output pixel
                            // belongs to one tile, and every tile to one task.
                            unsafe {
                                out.write(plane + (r0 + r) * self.wo + c0 + q, y[r * TILE + q][l] + b)
                            };
                        }
                    }
                }
            }
        }
    }
}

/// The input, zero-padded to the tiles' patches: `[n, c, rows·4 + 2, cols·4 + 2]`.
fn pad_input(
    x: &[f32],
    n: usize,
    c: usize,
    [h, w]: [usize; 2],
    [ph, pw]: [usize; 2],
    grid: &Grid,
) -> Vec<f32> {
    let [hp, wp] = grid.padded_side();
    let plane = hp * wp;
    let mut padded = vec![0f32; n * c * plane];
    // Rows past hp - ph (or columns past wp - pw) would be the convolution's bottom and right
    // padding, or lie beyond the last tile: zero either way.
    let (rows, cols) = (h.min(hp - ph), w.min(wp - pw));
    super::par::rows_inplace(&mut padded, plane, |p, dst| {
        let src = &x[p * h * w..][..h * w];
        for (r, src_row) in src.chunks_exact(w).take(rows).enumerate() {
            dst[(r + ph) * wp + pw..][..cols].copy_from_slice(&src_row[..cols]);
        }
    });
    padded
}

/// `U = G g Gᵀ` of every kernel, as `[POINTS, c_out, c_in]` (the GEMMs' left-hand sides).
fn transform_weights(w: &[f32], kernel: Kernel, co: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; POINTS * co * c];
    let u_ptr = OutPtr(u.as_mut_ptr());
    super::par::for_each_index(co, u.len(), |o| {
        for i0 in (0..c).step_by(LANES) {
            let lanes = LANES.min(c - i0);
            // g[tap][lane]: the equivalent convolution's tap from input channel i0 + lane to o.
            let mut g = [[0f32; LANES]; 9];
            for l in 0..lanes {
                let i = i0 + l;
                for (tap, lane) in g.iter_mut().enumerate() {
                    lane[l] = match kernel {
                        Kernel::Forward => w[(o * c + i) * 9 + tap],
                        Kernel::Transposed => w[(i * co + o) * 9 + 8 - tap],
                    };
                }
            }
            let transformed = two_sided(&g, g_rows);
            for (k, lane) in transformed.iter().enumerate() {
                for (l, value) in lane[..lanes].iter().enumerate() {
                    // SAFETY: in bounds (k < POINTS, o < co, i0 + l < c); row o of every
                    // point's matrix is written by the task of o alone.
                    unsafe { u_ptr.write((k * co + o) * c + i0 + l, *value) };
                }
            }
        }
    });
    u
}

/// `T X Tᵀ` for a row transform `T` from `N` to `SPAN` values, `X` being `N x N` (row-major,
/// one [`Lanes`] per element).
fn two_sided<const N: usize, const NN: usize, F: Fn(&[Lanes; N]) -> [Lanes; SPAN]>(
    x: &[Lanes; NN],
    rows: F,
) -> [Lanes; POINTS] {
    // Columns first: cols[j] = T · (column j of X), stored as [SPAN][N].
    let mut by_column = [[[0f32; LANES]; SPAN]; N];
    for (j, column) in by_column.iter_mut().enumerate() {
        let input: [Lanes; N] = core::array::from_fn(|i| x[i * N + j]);
        *column = rows(&input);
    }
    let mut out = [[0f32; LANES]; POINTS];
    for a in 0..SPAN {
        let input: [Lanes; N] = core::array::from_fn(|j| by_column[j][a]);
        let row = rows(&input);
        out[a * SPAN..][..SPAN].copy_from_slice(&row);
    }
    out
}

/// `Aᵀ M A`: the 4 x 4 output tile of the 36 products.
fn output_tile(m: &[Lanes; POINTS]) -> [Lanes; TILE * TILE] {
    let mut by_column = [[[0f32; LANES]; TILE]; SPAN];
    for (j, column) in by_column.iter_mut().enumerate() {
        let input: [Lanes; SPAN] = core::array::from_fn(|i| m[i * SPAN + j]);
        *column = at(&input);
    }
    let mut out = [[0f32; LANES]; TILE * TILE];
    for a in 0..TILE {
        let input: [Lanes; SPAN] = core::array::from_fn(|j| by_column[j][a]);
        out[a * TILE..][..TILE].copy_from_slice(&at(&input));
    }
    out
}

/// `Bᵀ x` for six values per lane.
#[inline(always)]
fn bt(x: &[Lanes; SPAN]) -> [Lanes; SPAN] {
    let mut y = [[0f32; LANES]; SPAN];
    for l in 0..LANES {
        let [x0, x1, x2, x3, x4, x5] = [x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]];
        y[0][l] = 4.0 * x0 - 5.0 * x2 + x4;
        y[1][l] = -4.0 * (x1 + x2) + x3 + x4;
        y[2][l] = 4.0 * (x1 - x2) - x3 + x4;
        y[3][l] = 2.0 * (x3 - x1) - x2 + x4;
        y[4][l] = 2.0 * (x1 - x3) - x2 + x4;
        y[5][l] = 4.0 * x1 - 5.0 * x3 + x5;
    }
    y
}

/// `G g` for three values per lane.
#[inline(always)]
fn g_rows(g: &[Lanes; 3]) -> [Lanes; SPAN] {
    let mut y = [[0f32; LANES]; SPAN];
    for l in 0..LANES {
        let [g0, g1, g2] = [g[0][l], g[1][l], g[2][l]];
        y[0][l] = g0 / 4.0;
        y[1][l] = -(g0 + g1 + g2) / 6.0;
        y[2][l] = -(g0 - g1 + g2) / 6.0;
        y[3][l] = g0 / 24.0 + g1 / 12.0 + g2 / 6.0;
        y[4][l] = g0 / 24.0 - g1 / 12.0 + g2 / 6.0;
        y[5][l] = g2;
    }
    y
}

/// `Aᵀ x` for six values per lane.
#[inline(always)]
fn at(x: &[Lanes; SPAN]) -> [Lanes; TILE] {
    let mut y = [[0f32; LANES]; TILE];
    for l in 0..LANES {
        let [x0, x1, x2, x3, x4, x5] = [x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]];
        let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
        y[0][l] = x0 + s12 + s34;
        y[1][l] = d12 + 2.0 * d34;
        y[2][l] = s12 + 4.0 * s34;
        y[3][l] = d12 + 8.0 * d34 + x5;
    }
    y
}
