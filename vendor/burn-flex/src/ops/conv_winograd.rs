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
//! with `U = G g Gᵀ` (the weights, transformed at a weight's first call and kept for the next
//! ones, see [`kept`]) and `V = Bᵀ d B` (the input, transformed per tile). Each output pixel
//! then costs `36 / 16 = 2.25` multiply-adds per input channel in the GEMMs instead of 9; the
//! transforms are additions, vectorised over 16 tiles (or 16 output channels for the weights)
//! at a time, and compiled for AVX2 and FMA as well as for the build's baseline, picked at run
//! time.
//!
//! The transforms multiply by up to 8 and divide by 24, so the result carries a few more
//! rounding errors than a direct sum of 9 · c_in products: about 3e-6 of the output's magnitude in
//! f32 over 256 input channels (1e-7 for the direct sum). Only f32 takes this path (f16 and bf16
//! would lose too much, f64 is rarely worth it).
//!
//! A stride-1 transposed convolution is the convolution with the kernel flipped and its channel
//! axes swapped ([`Kernel::Transposed`]): the weight transform reads it so, as the shifted path does.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};

use super::conv_shifted::{Kernel, OutPtr};
use crate::ops::conv_cols::threads;
use crate::{FlexTensor, Layout};

/// Output pixels per tile side.
const TILE: usize = 4;
/// Input pixels per tile side (`TILE + 3 - 1`).
const SPAN: usize = 6;
/// Points of the 2-D transform (`SPAN²`): one GEMM each.
const POINTS: usize = SPAN * SPAN;
/// Tiles (or channels) transformed together: the transforms' vector width.
const LANES: usize = 16;
/// Fewer channels than this (in or out) make the 36 GEMMs too thin to beat the shifted path
/// (at 16 the two ran even in per-layer timings, 2026-12-02, the 2-core AMD EPYC dev machine).
const MIN_CHANNELS: usize = 16;
/// When the Winograd path wins. With U transformed at the call it has to earn back writing and
/// reading U (4x the weight) through memory, so it needs enough tiles, and more where U
/// outgrows the caches; with U kept from an earlier call (see [`kept`]) only the transforms of
/// the input and output and the 36 narrow GEMMs are left. How many tiles depends on the
/// GEMM's speed against memory's.
struct Thresholds {
    /// Fewer tiles than this never take the path.
    min_tiles: usize,
    /// Above this many (input, output) channel pairs (36 values of U each), `many_tiles`.
    max_pairs_few_tiles: usize,
    /// Tiles from which every layer size takes the path.
    many_tiles: usize,
    /// Below `many_tiles`, at most a third more lanes than tiles: the last block of a call
    /// computes whole lanes of 16 tiles, so 18 tiles cost as much as 32.
    whole_lanes: bool,
}

/// With gemm's AVX2 kernels and U transformed at the call, in per-layer timings against the
/// shifted path (2026-12-02, the 2-core AMD EPYC dev machine): 16 tiles (a 16 x 16 map at
/// batch 1) left the transform unpaid for; a 512-channel layer was slower with 32 tiles, even
/// with 64, and faster from 128.
const AVX2_GEMM: Thresholds = Thresholds {
    min_tiles: 32,
    max_pairs_few_tiles: 160 * 1024,
    many_tiles: 96,
    whole_lanes: false,
};

/// With gemm's AVX2 kernels and U kept (2026-12-03, a 2-core Intel Xeon VM, `tools/conv-layers`'
/// `winograd` built without its `avx512` feature, the fastest of 44 alternated calls each):
/// from 16 tiles every layer won, forward and transposed, 0.30-0.78x at 16 to 64 tiles of 64
/// to 512 channels and 0.82-0.91x at 18 tiles; 8 tiles ran about even (0.85-1.02x). Not
/// measured on an AMD CPU.
const AVX2_GEMM_KEPT: Thresholds = Thresholds {
    min_tiles: 16,
    max_pairs_few_tiles: usize::MAX,
    many_tiles: 16,
    whole_lanes: false,
};

/// With gemm's AVX-512 kernels and U transformed at the call the direct paths run about twice
/// as fast as with AVX2 and the transform does not. Per-layer timings (2026-12-03, a 2-core
/// Intel Xeon VM with AVX-512, Winograd against the other paths, each median of 20-100 calls,
/// alternated twice): 32 tiles lost 1.2-2x at 32 to 256 channels (256 -> 256 at 16 x 16,
/// batch 2: 10.5 against 5.4 ms), 64 tiles lost up to 1.2x; from 96 tiles 128 channels won
/// (1.3x) and 256 lost, from 128 tiles every size won or ran even (256 channels 1.2x, 128
/// channels 1.25x, 1.9x at 512 tiles).
#[cfg_attr(
    not(all(feature = "x86-v4", feature = "std", target_arch = "x86_64")),
    allow(dead_code)
)]
const AVX512_GEMM: Thresholds = Thresholds {
    min_tiles: 96,
    max_pairs_few_tiles: 32 * 1024,
    many_tiles: 128,
    whole_lanes: false,
};

/// With gemm's AVX-512 kernels and U kept (2026-12-03, the same VM, `tools/conv-layers`'
/// `winograd`, the fastest of 44 alternated calls each): from 16 tiles every layer of up to
/// 256 x 256 channels won, forward and transposed (0.43-0.84x at 16 to 128 tiles), except 18
/// tiles (a 12 x 12 map at batch 2, 1.16-1.21x: two blocks of whole lanes, the second nearly
/// empty); 8 tiles lost 1.32-1.41x; 384 and 512 channels at 32 and 64 tiles ran from 0.83x to
/// 1.24x.
#[cfg_attr(
    not(all(feature = "x86-v4", feature = "std", target_arch = "x86_64")),
    allow(dead_code)
)]
const AVX512_GEMM_KEPT: Thresholds = Thresholds {
    min_tiles: 16,
    max_pairs_few_tiles: 64 * 1024,
    many_tiles: 128,
    whole_lanes: true,
};

/// The thresholds of the GEMM kernels gemm picks on this CPU, for a weight whose U is kept
/// between calls or not.
fn thresholds(kept: bool) -> &'static Thresholds {
    #[cfg(all(feature = "x86-v4", feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx512f") {
        return if kept {
            &AVX512_GEMM_KEPT
        } else {
            &AVX512_GEMM
        };
    }
    if kept { &AVX2_GEMM_KEPT } else { &AVX2_GEMM }
}

/// Tiles per task at most: 36 GEMMs of this many columns each (whole lanes).
const MAX_BLOCK: usize = 128;
const _: () = assert!(MAX_BLOCK % LANES == 0);

/// 1/6, rounded once.
const SIXTH: f32 = 1.0 / 6.0;

/// One value per lane.
type Lanes = [f32; LANES];

/// Whether `conv3d` (a 2-D convolution expanded to 3-D) of `x_shape` with `weight` read as
/// `kernel` can take the Winograd path, and wins there.
pub(crate) fn applies(
    x_shape: &[usize],
    weight: &FlexTensor,
    kernel: Kernel,
    options: &ConvOptions<3>,
) -> bool {
    let w = weight.layout().shape();
    // The equivalent convolution's [c_out, c_in, depth, kh, kw].
    let w_shape = match kernel {
        Kernel::Forward => [w[0], w[1], w[2], w[3], w[4]],
        Kernel::Transposed => [w[1], w[0], w[2], w[3], w[4]],
    };
    let [_, ph, pw] = options.padding;
    let fits = |side: usize, pad: usize| side + 2 * pad >= 3;
    let tiles = x_shape[0]
        * (x_shape[3] + 2 * ph).saturating_sub(2).div_ceil(TILE)
        * (x_shape[4] + 2 * pw).saturating_sub(2).div_ceil(TILE);
    weight.dtype() == DType::F32
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
        && match choice::get() {
            WinogradChoice::Thresholds => {
                let limits = thresholds(kept::keeps(weight, kernel, w_shape[0], w_shape[1]));
                tiles >= limits.min_tiles
                    && (tiles >= limits.many_tiles
                        || (w_shape[0] * w_shape[1] <= limits.max_pairs_few_tiles
                            && (!limits.whole_lanes
                                || 3 * Blocking::new(tiles).lanes() <= 4 * tiles)))
            }
            WinogradChoice::Always => true,
            WinogradChoice::Never => false,
        }
}

/// Which 3x3 convolutions take the Winograd path: a switch for measuring the path against the
/// others on the same build (`tools/conv-layers` in foil's repository), not for tuning a
/// network; every choice gives the same result up to the transforms' rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradChoice {
    /// Those the thresholds of this CPU's GEMM kernels pick (the default).
    Thresholds = 0,
    /// Every one the path can compute (stride 1, f32, at least 16 channels in and out).
    Always = 1,
    /// None.
    Never = 2,
}

super::kept::thread_switch! {
    /// The calling thread's [`WinogradChoice`].
    choice: WinogradChoice = WinogradChoice::Thresholds,
    from_code |code| match code {
        1 => WinogradChoice::Always,
        2 => WinogradChoice::Never,
        _ => WinogradChoice::Thresholds,
    }
}

/// Sets which convolutions called from this thread take the Winograd path, from the next call
/// on (other threads keep theirs; without `std`, every thread's).
pub fn set_winograd_choice(choice: WinogradChoice) {
    choice::set(choice);
}

/// How a call's tiles are cut into tasks: `blocks` blocks of `block` tiles (whole lanes), the
/// last one possibly shorter; a block's transforms and GEMMs run on whole lanes of 16 tiles.
struct Blocking {
    tiles: usize,
    block: usize,
    blocks: usize,
}

impl Blocking {
    /// About two blocks per thread, of 16 to [`MAX_BLOCK`] tiles.
    fn new(tiles: usize) -> Self {
        let block = tiles
            .div_ceil(2 * threads())
            .next_multiple_of(LANES)
            .clamp(LANES, MAX_BLOCK);
        Self {
            tiles,
            block,
            blocks: tiles.div_ceil(block),
        }
    }

    /// The tiles the blocks compute, padding lanes included.
    fn lanes(&self) -> usize {
        let last = self.tiles - (self.blocks - 1) * self.block;
        (self.blocks - 1) * self.block + last.next_multiple_of(LANES)
    }
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
        h,
        w,
        ph,
        pw,
        ho,
        wo,
    };
    let threads = threads();
    let Blocking { block, blocks, .. } = Blocking::new(grid.tiles);
    // Few blocks of tiles (small maps): split the output channels too, so that the threads
    // share U (36 · c · co values, 4x the weight) instead of each block reading all of it.
    let co_block = co
        .div_ceil((2 * threads).div_ceil(blocks))
        .next_multiple_of(LANES)
        .min(co);

    let bias = bias.map(|b| b.to_contiguous());
    // Not zeroed: every output value is written by one task (fresh buffers' `memset` was 4-6 %
    // of a ResNet-18 input gradient's time).
    let mut out = Vec::with_capacity(n * co * ho * wo);
    let plan = Plan {
        u: kept::transformed(weight, kernel, co, c),
        x: x.storage(),
        bias: bias.as_ref().map(|b| b.storage()),
        out: OutPtr(out.as_mut_ptr()),
        block,
        co_block,
        co_blocks: co.div_ceil(co_block),
        grid,
    };
    let jobs = blocks * plan.co_blocks;
    // `v` and `m` are scratch reused across a thread's tasks: every element a task reads is
    // written first (the transform writes all 36 · c · width inputs, the GEMMs all outputs).
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..jobs)
            .into_par_iter()
            .for_each_init(|| (Vec::new(), Vec::new()), |scratch, job| plan.run(scratch, job));
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = (Vec::new(), Vec::new());
        (0..jobs).for_each(|job| plan.run(&mut scratch, job));
    }
    // SAFETY: within the capacity; every pixel is in one tile, every (block of tiles, block of
    // output channels) is one task, and `transform_output` writes all its tiles' pixels.
    unsafe { out.set_len(n * co * ho * wo) };

    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(vec![n, co, 1, ho, wo])),
        DType::F32,
    )
}

/// Whether this CPU runs the AVX2 + FMA copies of the transforms.
fn avx2() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        false
    }
}

/// Everything the tasks share.
struct Plan<'a> {
    /// The transformed weights, `[POINTS, c, co]` (see [`transform_weights`]).
    u: Arc<Vec<f32>>,
    x: &'a [f32],
    bias: Option<&'a [f32]>,
    out: OutPtr<f32>,
    /// Tiles, and output channels, per task.
    block: usize,
    co_block: usize,
    co_blocks: usize,
    grid: Grid,
}

impl Plan<'_> {
    /// Task `job`: one block of tiles and one block of output channels.
    fn run(&self, scratch: &mut (Vec<f32>, Vec<f32>), job: usize) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { self.run_avx2(scratch, job) };
        }
        self.run_inline::<false>(scratch, job)
    }

    /// [`Plan::run`] compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, scratch: &mut (Vec<f32>, Vec<f32>), job: usize) {
        self.run_inline::<true>(scratch, job)
    }

    /// The task; `AVX2`: compiled into [`Plan::run_avx2`] (the CPU has AVX2 and FMA).
    #[inline(always)]
    fn run_inline<const AVX2: bool>(&self, (v, m): &mut (Vec<f32>, Vec<f32>), job: usize) {
        let (grid, c, co) = (&self.grid, self.grid.c, self.grid.co);
        let (b, o0) = (job / self.co_blocks, (job % self.co_blocks) * self.co_block);
        let outputs = self.co_block.min(co - o0);
        let first = b * self.block;
        let width = self.block.min(grid.tiles - first).next_multiple_of(LANES);
        grow(v, POINTS * c * width);
        grow(m, POINTS * outputs * width);
        grid.transform_input::<AVX2>(self.x, first, width, v);
        // V and M keep each channel's 36 points together (`[channel, POINTS, width]`), so the
        // transforms read and write one channel's block at a time; the GEMMs read and write
        // point k's matrix with a row stride of `POINTS · width`.
        let stride = (POINTS * width) as isize;
        for k in 0..POINTS {
            // SAFETY: lhs is rows o0.. of U[k] ([co, c], column stride co), rhs V[k] ([c,
            // width], row stride POINTS · width), dst M[k] ([outputs, width], the same row
            // stride), all inside their buffers.
            unsafe {
                gemm::gemm(
                    outputs,
                    width,
                    c,
                    m.as_mut_ptr().add(k * width),
                    1,
                    stride,
                    false,
                    self.u.as_ptr().add(k * c * co + o0),
                    co as isize,
                    1,
                    v.as_ptr().add(k * width),
                    1,
                    stride,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        let span = Span {
            first,
            width,
            o0,
            outputs,
        };
        grid.transform_output(m, &span, self.bias, &self.out);
    }
}

/// At least `len` elements in `buffer` (new ones zero, old ones kept).
fn grow(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
}

/// One task's share: tiles `first .. first + width` (rounded up to whole lanes) and output
/// channels `o0 .. o0 + outputs`.
struct Span {
    first: usize,
    width: usize,
    o0: usize,
    outputs: usize,
}

/// Where a tile's 6 x 6 input patch lies.
#[derive(Clone, Copy)]
enum Patch {
    /// Past the last tile: all zero.
    None,
    /// Wholly inside the input: the offset of its top-left pixel in its image's channel 0.
    Inside(usize),
    /// Partly in the padding: its image's channel-0 offset and its top-left corner's position,
    /// which may be negative.
    Edge(usize, isize, isize),
}

/// How the output is cut into tiles, and where the tiles read the input.
struct Grid {
    /// Input and output channels.
    c: usize,
    co: usize,
    /// Tiles in the call (all images).
    tiles: usize,
    /// Tile rows and columns per image.
    rows: usize,
    cols: usize,
    /// Input height and width, and the padding above and left of it.
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    /// Output height and width.
    ho: usize,
    wo: usize,
}

impl Grid {
    /// Where tile `t`'s patch lies.
    #[inline(always)]
    fn patch(&self, t: usize) -> Patch {
        if t >= self.tiles {
            return Patch::None;
        }
        let per_image = self.rows * self.cols;
        let (img, within) = (t / per_image, t % per_image);
        let top = ((within / self.cols) * TILE) as isize - self.ph as isize;
        let left = ((within % self.cols) * TILE) as isize - self.pw as isize;
        let image = img * self.c * self.h * self.w;
        let inside = |start: isize, side: usize| start >= 0 && start as usize + SPAN <= side;
        if inside(top, self.h) && inside(left, self.w) {
            Patch::Inside(image + top as usize * self.w + left as usize)
        } else {
            Patch::Edge(image, top, left)
        }
    }

    /// `V = Bᵀ d B` of the tiles `first .. first + width` (those past the last tile zero), into
    /// `v` as `[c, POINTS, width]`, one input channel after another. `AVX2`: the CPU has AVX2
    /// (the caller is compiled for it).
    #[inline(always)]
    fn transform_input<const AVX2: bool>(
        &self,
        x: &[f32],
        first: usize,
        width: usize,
        v: &mut [f32],
    ) {
        let mut patches = [Patch::None; MAX_BLOCK];
        for (t, patch) in patches[..width].iter_mut().enumerate() {
            *patch = self.patch(first + t);
        }
        // Whether a lane group's tiles lie side by side inside the input (one row of tiles):
        // their patches are then one 6 x 66 window, transposed into the lanes with shuffles.
        let mut side_by_side = [None; MAX_BLOCK / LANES];
        if AVX2 {
            for (run, lanes) in side_by_side.iter_mut().zip(patches[..width].chunks_exact(LANES)) {
                if let Patch::Inside(start) = lanes[0]
                    && lanes.iter().enumerate().all(
                        |(l, p)| matches!(*p, Patch::Inside(at) if at == start + l * TILE),
                    )
                {
                    *run = Some(start);
                }
            }
        }
        let mut d = [[0f32; LANES]; POINTS];
        let mut transformed = [[0f32; LANES]; POINTS];
        for ci in 0..self.c {
            let block = &mut v[ci * POINTS * width..][..POINTS * width];
            for (lane0, lanes) in patches[..width].chunks_exact(LANES).enumerate() {
                let run = side_by_side[lane0];
                let lane0 = lane0 * LANES;
                match run {
                    #[cfg(target_arch = "x86_64")]
                    Some(start) => {
                        let (plane, w) = (self.h * self.w, self.w);
                        let window = &x[start + ci * plane..][..(SPAN - 1) * w + WINDOW];
                        // SAFETY: the CPU has AVX2 (`run` is only set when `AVX2`).
                        unsafe { gather_window_avx2(window, w, &mut d) };
                    }
                    _ => self.gather_lanes(x, ci, lanes, &mut d),
                }
                input_tile(&d, &mut transformed);
                for (k, lanes) in transformed.iter().enumerate() {
                    block[k * width + lane0..][..LANES].copy_from_slice(lanes);
                }
            }
        }
    }

    /// The 6 x 6 patches of one lane group's tiles in input channel `ci`, into `d` (zero where
    /// a patch reaches into the padding, or past the last tile), one value at a time.
    #[inline(always)]
    fn gather_lanes(&self, x: &[f32], ci: usize, lanes: &[Patch], d: &mut [Lanes; POINTS]) {
        let (plane, w) = (self.h * self.w, self.w);
        if !lanes.iter().all(|p| matches!(p, Patch::Inside(_))) {
            *d = [[0f32; LANES]; POINTS];
        }
        for (l, patch) in lanes.iter().enumerate() {
            match *patch {
                Patch::None => {}
                Patch::Inside(start) => {
                    let at = start + ci * plane;
                    for r in 0..SPAN {
                        let row = &x[at + r * w..][..SPAN];
                        for (q, value) in row.iter().enumerate() {
                            d[r * SPAN + q][l] = *value;
                        }
                    }
                }
                Patch::Edge(image, top, left) => {
                    let channel = &x[image + ci * plane..][..plane];
                    for r in 0..SPAN {
                        let Ok(y) = usize::try_from(top + r as isize) else {
                            continue;
                        };
                        if y >= self.h {
                            break;
                        }
                        for q in 0..SPAN {
                            let Ok(col) = usize::try_from(left + q as isize) else {
                                continue;
                            };
                            if col >= w {
                                break;
                            }
                            d[r * SPAN + q][l] = channel[y * w + col];
                        }
                    }
                }
            }
        }
    }

    /// `Y = Aᵀ M A` of the span's tiles and output channels, plus the bias, written into the
    /// output one channel after another; `m` is `[outputs, POINTS, width]`.
    #[inline(always)]
    fn transform_output(&self, m: &[f32], span: &Span, bias: Option<&[f32]>, out: &OutPtr<f32>) {
        let per_image = self.rows * self.cols;
        let (image, channel) = (self.co * self.ho * self.wo, self.ho * self.wo);
        // Each tile's output offset in channel 0 and how many rows and columns it keeps.
        let mut targets: [Option<(usize, usize, usize)>; MAX_BLOCK] = [None; MAX_BLOCK];
        for (l, target) in targets[..span.width].iter_mut().enumerate() {
            let t = span.first + l;
            *target = (t < self.tiles).then(|| {
                let (img, within) = (t / per_image, t % per_image);
                let (r0, c0) = ((within / self.cols) * TILE, (within % self.cols) * TILE);
                let at = img * image + r0 * self.wo + c0;
                (at, TILE.min(self.ho - r0), TILE.min(self.wo - c0))
            });
        }
        // Lane groups of 16 whole tiles side by side in one row of tiles: their output rows are
        // written 64 pixels at a time.
        let mut side_by_side = [None; MAX_BLOCK / LANES];
        for (run, lanes) in side_by_side.iter_mut().zip(targets[..span.width].chunks_exact(LANES)) {
            if let Some((at, TILE, TILE)) = lanes[0]
                && lanes.iter().enumerate().all(
                    |(l, t)| matches!(*t, Some((a, TILE, TILE)) if a == at + l * TILE),
                )
            {
                *run = Some(at);
            }
        }
        let mut points = [[0f32; LANES]; POINTS];
        let mut y = [[0f32; LANES]; TILE * TILE];
        for local in 0..span.outputs {
            let o = span.o0 + local;
            let b = bias.map_or(0.0, |b| b[o]);
            let dst = o * channel;
            let block = &m[local * POINTS * span.width..][..POINTS * span.width];
            for (lane0, lanes) in targets[..span.width].chunks_exact(LANES).enumerate() {
                let lane0 = lane0 * LANES;
                for (k, point) in points.iter_mut().enumerate() {
                    point.copy_from_slice(&block[k * span.width + lane0..][..LANES]);
                }
                output_tile(&points, &mut y);
                if let Some(at) = side_by_side[lane0 / LANES] {
                    for r in 0..TILE {
                        // SAFETY: the group's 16 whole tiles side by side in one row of tiles:
                        // row r of them is 64 output pixels in a row, this task's alone.
                        let row = unsafe {
                            core::slice::from_raw_parts_mut(
                                out.ptr().add(dst + at + r * self.wo),
                                TILE * LANES,
                            )
                        };
                        for l in 0..LANES {
                            for q in 0..TILE {
                                row[TILE * l + q] = y[r * TILE + q][l] + b;
                            }
                        }
                    }
                    continue;
                }
                for (l, target) in lanes.iter().enumerate() {
                    let Some((at, rows, cols)) = *target else { break };
                    let at = dst + at;
                    // SAFETY (both arms): in bounds (the tile's rows and columns inside the
                    // output); every output pixel belongs to one tile, and every tile and
                    // output channel to one task.
                    if rows == TILE && cols == TILE {
                        for r in 0..TILE {
                            for q in 0..TILE {
                                unsafe { out.write(at + r * self.wo + q, y[r * TILE + q][l] + b) };
                            }
                        }
                    } else {
                        for r in 0..rows {
                            for q in 0..cols {
                                unsafe { out.write(at + r * self.wo + q, y[r * TILE + q][l] + b) };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Input columns a lane group of 16 side-by-side tiles reads in each row (`4 · 16 + 2`).
const WINDOW: usize = TILE * LANES + SPAN - TILE;

/// The 6 x 6 patches of 16 tiles side by side, from `window` (6 rows of [`WINDOW`] values, row
/// stride `w`), into `d` (`d[r · 6 + q][l]` = row r, column `4 l + q`): each row's 64 values are
/// 16 tiles' columns 0-3, transposed 4 x 4 with shuffles; columns 4 and 5 are the next tile's 0
/// and 1.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_window_avx2(window: &[f32], w: usize, d: &mut [Lanes; POINTS]) {
    use core::arch::x86_64::*;
    // Lanes come out of the in-lane transposes as tiles 0, 2, 4, 6, 1, 3, 5, 7.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // One lane down (lane 7 is refilled from the next group).
    let down = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    for r in 0..SPAN {
        let row = &window[r * w..][..WINDOW];
        let mut columns = [[_mm256_setzero_ps(); 2]; TILE];
        for half in 0..2 {
            // SAFETY: 32 values from 32 · half, inside the row's WINDOW.
            let [a0, a1, a2, a3] = core::array::from_fn(|i| unsafe {
                _mm256_loadu_ps(row.as_ptr().add(32 * half + 8 * i))
            });
            let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
            let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
            let q = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ];
            for (column, q) in columns.iter_mut().zip(q) {
                column[half] = _mm256_permutevar8x32_ps(q, order);
            }
        }
        for (q, column) in columns.iter().enumerate() {
            for (half, lanes) in column.iter().enumerate() {
                // SAFETY: 8 of the 16 lanes.
                unsafe { _mm256_storeu_ps(d[r * SPAN + q][8 * half..].as_mut_ptr(), *lanes) };
            }
        }
        // Columns 4 and 5 of tile l are columns 0 and 1 of tile l + 1: the 17th tile's come
        // from the window's last two values (64 and 65).
        for (q, next) in [(4, TILE * LANES), (5, TILE * LANES + 1)] {
            let column = &columns[q - TILE];
            let after = [_mm256_set1_ps(row[32 + q - TILE]), _mm256_set1_ps(row[next])];
            for half in 0..2 {
                let shifted = _mm256_permutevar8x32_ps(column[half], down);
                let lanes = _mm256_blend_ps::<0x80>(shifted, after[half]);
                // SAFETY: 8 of the 16 lanes.
                unsafe { _mm256_storeu_ps(d[r * SPAN + q][8 * half..].as_mut_ptr(), lanes) };
            }
        }
    }
}

/// Transformed weights kept between calls (see [`super::kept`]): U is 4x the weight, written
/// through memory, and was 7-9 % of a Kandinsky UNet step's samples with the transform redone at
/// every call (`perf`, 2026-12-03, a 2-core Intel Xeon VM). A weight is noted at its first call
/// even where it does not take the path (without U): from its second call [`applies`] judges it
/// with the thresholds for a kept U.
mod kept {
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use burn_std::Bytes;

    use super::super::kept::{Kept, Met, identifying_storage};
    use super::{Kernel, POINTS, transform_weights};
    use crate::FlexTensor;

    /// Bytes of U kept at most (all entries together).
    const BUDGET: usize = 256 << 20;

    /// The transforms, keyed by a weight's storage, shape and kernel.
    static KEPT: Kept<([usize; 5], Kernel)> = Kept::new(BUDGET);

    /// `weight`'s storage when it identifies the weight: contiguous (a transposed view of the
    /// same storage reads other kernels) and covering the whole storage.
    fn storage(weight: &FlexTensor) -> Option<Arc<Bytes>> {
        if !weight.is_contiguous() {
            return None;
        }
        identifying_storage(weight, weight.layout().num_elements())
    }

    /// The key of `weight` (5-D, as `conv3d` holds a 2-D convolution's) read as `kernel`.
    fn key(weight: &FlexTensor, kernel: Kernel) -> ([usize; 5], Kernel) {
        let w = weight.layout().shape();
        ([w[0], w[1], w[2], w[3], w[4]], kernel)
    }

    /// Whether `weight`'s U (read as `kernel`, `co` x `c` channels) is kept, or will be at this
    /// call: the weight was met before and its U fits the budget. A weight not met before is
    /// noted, so that its next call answers yes.
    pub(super) fn keeps(weight: &FlexTensor, kernel: Kernel, co: usize, c: usize) -> bool {
        let Some(storage) = storage(weight) else {
            return false;
        };
        match KEPT.meet(&storage, key(weight, kernel)) {
            Met::First => false,
            Met::Again => KEPT.fits(POINTS * c * co * size_of::<f32>()),
            Met::Kept(_) => true,
        }
    }

    /// U of `weight` (f32) read as `kernel`: the kept one, or a new one, kept when the weight's
    /// storage identifies it and the budget allows.
    pub(super) fn transformed(
        weight: &FlexTensor,
        kernel: Kernel,
        co: usize,
        c: usize,
    ) -> Arc<Vec<f32>> {
        let storage = storage(weight);
        let key = key(weight, kernel);
        if let Some(u) = storage.as_ref().and_then(|s| KEPT.get(s, &key)) {
            return u;
        }
        let contiguous = weight.to_contiguous();
        let u = Arc::new(transform_weights(contiguous.storage::<f32>(), kernel, co, c));
        match storage {
            Some(storage) => KEPT.keep(&storage, key, u.clone()).unwrap_or(u),
            None => u,
        }
    }
}

/// `U = G g Gᵀ` of every kernel, as `[POINTS, c_in, c_out]`: each point's GEMM left-hand side
/// `[c_out, c_in]` stored column-major, which gemm's micro-kernel reads in place for narrow
/// blocks of tiles.
fn transform_weights(w: &[f32], kernel: Kernel, co: usize, c: usize) -> Vec<f32> {
    let len = POINTS * c * co;
    // Not zeroed: every value is written below.
    let mut u = Vec::with_capacity(len);
    let u_ptr = OutPtr(u.as_mut_ptr());
    let avx2 = avx2();
    super::par::for_each_index(c, len, |i| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 and FMA; column i is this task's alone.
            return unsafe { weight_column_avx2(w, kernel, [co, c, i], &u_ptr) };
        }
        let _ = avx2;
        // SAFETY: column i of every point's matrix is written by this task alone.
        unsafe { weight_column(w, kernel, [co, c, i], &u_ptr) }
    });
    // SAFETY: within the capacity; column i of every point's matrix, all co values, was written
    // by task i, for every i < c.
    unsafe { u.set_len(len) };
    u
}

/// [`weight_column`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA; as [`weight_column`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_column_avx2(w: &[f32], kernel: Kernel, dims: [usize; 3], u: &OutPtr<f32>) {
    unsafe { weight_column(w, kernel, dims, u) }
}

/// Column `i` (input channel) of every point's `U` matrix, for `dims = [co, c, i]`.
///
/// # Safety
/// `u` holds `POINTS · c · co` values and no other task writes column `i`.
#[inline(always)]
unsafe fn weight_column(w: &[f32], kernel: Kernel, [co, c, i]: [usize; 3], u: &OutPtr<f32>) {
    let mut g = [[0f32; LANES]; 9];
    let mut transformed = [[0f32; LANES]; POINTS];
    for o0 in (0..co).step_by(LANES) {
        let lanes = LANES.min(co - o0);
        // g[tap][lane]: the equivalent convolution's tap from input channel i to o0 + lane.
        for l in 0..lanes {
            let o = o0 + l;
            for (tap, lane) in g.iter_mut().enumerate() {
                lane[l] = match kernel {
                    Kernel::Forward => w[(o * c + i) * 9 + tap],
                    Kernel::Transposed => w[(i * co + o) * 9 + 8 - tap],
                };
            }
        }
        weight_tile(&g, &mut transformed);
        for (k, lane) in transformed.iter().enumerate() {
            // SAFETY: in bounds (k < POINTS, i < c, o0 + lanes <= co); the caller owns column i.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    lane.as_ptr(),
                    u.ptr().add((k * c + i) * co + o0),
                    lanes,
                )
            };
        }
    }
}

/// Applies a transform of `N` values to `M` along one line of a lane matrix: input `i` is
/// `src[from[i]]`, output `a` goes to `dst[to[a]]`, lane by lane.
#[inline(always)]
fn line<const N: usize, const M: usize>(
    src: &[Lanes],
    from: [usize; N],
    dst: &mut [Lanes],
    to: [usize; M],
    transform: impl Fn([f32; N]) -> [f32; M],
) {
    for l in 0..LANES {
        let y = transform(core::array::from_fn(|i| src[from[i]][l]));
        for (a, value) in y.into_iter().enumerate() {
            dst[to[a]][l] = value;
        }
    }
}

/// `Bᵀ d B` of a 6 x 6 patch (row-major, one [`Lanes`] per element).
#[inline(always)]
fn input_tile(d: &[Lanes; POINTS], out: &mut [Lanes; POINTS]) {
    let mut by_column = [[0f32; LANES]; POINTS];
    for j in 0..SPAN {
        let column = core::array::from_fn(|i| i * SPAN + j);
        line(d, column, &mut by_column, column, bt);
    }
    for a in 0..SPAN {
        let row = core::array::from_fn(|j| a * SPAN + j);
        line(&by_column, row, out, row, bt);
    }
}

/// `G g Gᵀ` of a 3x3 kernel (row-major, one [`Lanes`] per tap), as 6 x 6.
#[inline(always)]
fn weight_tile(g: &[Lanes; 9], out: &mut [Lanes; POINTS]) {
    // G g: 6 x 3.
    let mut by_column = [[0f32; LANES]; SPAN * 3];
    for j in 0..3 {
        line(
            g,
            core::array::from_fn(|i| i * 3 + j),
            &mut by_column,
            core::array::from_fn(|a| a * 3 + j),
            g_rows,
        );
    }
    for a in 0..SPAN {
        line(
            &by_column,
            core::array::from_fn(|j| a * 3 + j),
            out,
            core::array::from_fn(|b| a * SPAN + b),
            g_rows,
        );
    }
}

/// `Aᵀ M A`: the 4 x 4 output tile (row-major) of the 36 products.
#[inline(always)]
fn output_tile(m: &[Lanes; POINTS], out: &mut [Lanes; TILE * TILE]) {
    // Aᵀ M: 4 x 6.
    let mut by_column = [[0f32; LANES]; TILE * SPAN];
    for j in 0..SPAN {
        line(
            m,
            core::array::from_fn(|i| i * SPAN + j),
            &mut by_column,
            core::array::from_fn(|a| a * SPAN + j),
            at,
        );
    }
    for a in 0..TILE {
        line(
            &by_column,
            core::array::from_fn(|j| a * SPAN + j),
            out,
            core::array::from_fn(|b| a * TILE + b),
            at,
        );
    }
}

/// `Bᵀ x`.
#[inline(always)]
fn bt([x0, x1, x2, x3, x4, x5]: [f32; SPAN]) -> [f32; SPAN] {
    [
        4.0 * x0 - 5.0 * x2 + x4,
        -4.0 * (x1 + x2) + x3 + x4,
        4.0 * (x1 - x2) - x3 + x4,
        2.0 * (x3 - x1) - x2 + x4,
        2.0 * (x1 - x3) - x2 + x4,
        4.0 * x1 - 5.0 * x3 + x5,
    ]
}

/// `G g` (multiplications by the reciprocals: a division costs ten).
#[inline(always)]
fn g_rows([g0, g1, g2]: [f32; 3]) -> [f32; SPAN] {
    let sum = g0 + g2;
    let (even, odd) = (g0 * (1.0 / 24.0) + g2 * SIXTH, g1 * (1.0 / 12.0));
    [
        g0 * 0.25,
        -(sum + g1) * SIXTH,
        -(sum - g1) * SIXTH,
        even + odd,
        even - odd,
        g2,
    ]
}

/// `Aᵀ x`.
#[inline(always)]
fn at([x0, x1, x2, x3, x4, x5]: [f32; SPAN]) -> [f32; TILE] {
    let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
    [
        x0 + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + x5,
    ]
}
