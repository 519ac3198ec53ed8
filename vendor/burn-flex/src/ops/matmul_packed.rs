//! foil's patch: f32 products by one right-hand matrix (`[.., M, K] x [1.., K, N]`, a `Linear`
//! on a batch of rows) with the right-hand matrix packed once and kept between calls.
//!
//! gemm 0.19 packs the right-hand matrix (the weight: the large operand when the rows are few)
//! at every call, in every thread that works on it, and its AVX2 micro-kernel steps through the
//! broadcast operand with an address chain. Here the weight is laid out once as panels of 16
//! columns (`[N / 16][K][16]`, zero-padded), kept beside the weight like Winograd's transforms
//! (see [`kept`]), and a 6 x 16 AVX2 + FMA kernel reads each panel as it lies and the left-hand
//! rows in place. A weight met for the first time (or past the budget) has each panel packed
//! into a thread's buffer just before use, so the arithmetic is the same on every call: each
//! output is one fused multiply-add chain over `k = 0..K`, whatever the threads, the panel's
//! origin or the call history.
//!
//! Taken for f32 on x86_64 CPUs with AVX2 and FMA and without AVX-512 (where gemm runs its
//! AVX-512 kernels; this kernel was not measured against them), for at most [`MAX_ROWS`]
//! left-hand rows (past them gemm's threading keeps up), when the left-hand rows are
//! contiguous and the right-hand matrix is contiguous row by row or column by column (a loaded
//! `Linear` weight: PyTorch's `[out, in]` transposed). Measured in `tools/gemm-split`
//! (docs/performance.md, "2026-12-04").

use alloc::vec;
use alloc::vec::Vec;

use burn_std::{DType, Shape};

use crate::FlexTensor;

/// Output rows per kernel call.
const MR: usize = 6;
/// Output columns per kernel call (two AVX2 registers), and per packed panel.
const NR: usize = 16;
/// Strips of [`MR`] rows per block: each thread runs its panels over one block of rows at a
/// time, so that the block's rows stay in its cache while the panels pass (258 rows).
const STRIPS_PER_BLOCK: usize = 43;
/// Left-hand rows above which gemm's own threading is as fast or faster (measured equal at 1024
/// rows, 1.03-1.13x the time with this path at 2048-9216 rows; PATCH.md, twentieth change).
const MAX_ROWS: usize = 1024;
/// Multiply-adds below which a product runs on the calling thread alone (as burn-flex's
/// `PARALLEL_THRESHOLD`).
#[cfg(feature = "rayon")]
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// The product `lhs · rhs` by this path, or `None` where it does not apply (then the caller
/// uses gemm).
pub(crate) fn matmul(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<FlexTensor> {
    let f32s = lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32;
    if !switch::get() || !cpu() || !f32s || !lhs.is_contiguous() {
        return None;
    }
    let lhs_shape = lhs.layout().shape();
    let rhs_shape = rhs.layout().shape();
    let (lhs_rank, rhs_rank) = (lhs_shape.num_dims(), rhs_shape.num_dims());
    let k = lhs_shape[lhs_rank - 1];
    let n = rhs_shape[rhs_rank - 1];
    let m: usize = (0..lhs_rank - 1).map(|d| lhs_shape[d]).product();
    if m == 0 || m > MAX_ROWS || n == 0 || k == 0 || (0..rhs_rank - 2).any(|d| rhs_shape[d] != 1)
    {
        return None;
    }
    let rhs_layout = rhs_matrix_layout(rhs, k, n)?;

    let mut out_dims = vec![1usize; rhs_rank.saturating_sub(lhs_rank)];
    out_dims.extend((0..lhs_rank - 1).map(|d| lhs_shape[d]));
    out_dims.push(n);
    let mut output = FlexTensor::empty(Shape::from(out_dims), DType::F32);

    let a = &lhs.storage::<f32>()[lhs.layout().start_offset()..][..m * k];
    let b = Matrix {
        data: &rhs.storage::<f32>()[rhs.layout().start_offset()..][..k * n],
        k,
        n,
        layout: rhs_layout,
    };
    let packed = kept::packed(rhs, &b);
    let product = Product {
        a,
        b,
        packed: packed.as_deref().map(Vec::as_slice),
        m,
    };
    product.run(output.storage_mut::<f32>());
    Some(output)
}

/// Sets whether f32 products called from this thread may take this path, from the next call
/// on (the default: yes; other threads keep theirs; without `std`, every thread's). A switch
/// for measuring the path against gemm on the same build (`examples/published_step` in
/// foil's repository, `repeat N`) and for a process that cannot spare the
/// kept panels' memory: off, nothing more is kept, and what was kept is freed with its weights.
pub fn set_packed_matmul(on: bool) {
    switch::set(on);
}

super::kept::thread_switch! {
    /// The calling thread's switch (without `std`, the process's).
    switch: bool = true,
    from_code |code| code != 0
}

/// How a right-hand matrix's `k x n` values lie in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatrixLayout {
    /// Row by row (`[K, N]` contiguous).
    Rows,
    /// Column by column (a `[N, K]` contiguous matrix transposed: how foil keeps a loaded
    /// `Linear` weight, PyTorch's `[out, in]` read as burn's `[in, out]`).
    Columns,
}

/// `rhs`'s layout when its `k x n` values are contiguous either way, else `None`.
fn rhs_matrix_layout(rhs: &FlexTensor, k: usize, n: usize) -> Option<MatrixLayout> {
    if rhs.is_contiguous() {
        return Some(MatrixLayout::Rows);
    }
    let strides = rhs.layout().strides();
    let rank = strides.len();
    // Size-1 batch dimensions may have any stride; a dimension of size 1 any too.
    let (rs, cs) = (strides[rank - 2], strides[rank - 1]);
    ((k == 1 || rs == 1) && (n == 1 || cs == k as isize)).then_some(MatrixLayout::Columns)
}

/// A right-hand matrix: `k x n` values in `data`, laid out as `layout`.
struct Matrix<'a> {
    data: &'a [f32],
    k: usize,
    n: usize,
    layout: MatrixLayout,
}

/// Whether this CPU takes the path: AVX2 and FMA, no AVX-512.
fn cpu() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && !std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        false
    }
}

/// `b` as panels of [`NR`] columns, `[N / NR][K][NR]`, the last one zero-padded.
fn pack(b: &Matrix<'_>) -> Vec<f32> {
    let mut out = vec![0.0f32; b.n.div_ceil(NR) * b.k * NR];
    for (p, panel) in out.chunks_exact_mut(b.k * NR).enumerate() {
        pack_panel(b, p, panel);
    }
    out
}

/// Panel `p` of `b` into `panel` (`[K][NR]`); columns past `N` are left as they are (zero in a
/// fresh buffer, and never stored from).
fn pack_panel(b: &Matrix<'_>, p: usize, panel: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    let first = p * NR;
    let width = NR.min(n - first);
    match b.layout {
        MatrixLayout::Rows => {
            for (row, dst) in b.data.chunks_exact(n).zip(panel.chunks_exact_mut(NR)) {
                dst[..width].copy_from_slice(&row[first..first + width]);
            }
        }
        MatrixLayout::Columns => {
            for (c, column) in b.data.chunks_exact(k).skip(first).take(width).enumerate() {
                for (dst, value) in panel[c..].iter_mut().step_by(NR).zip(column) {
                    *dst = *value;
                }
            }
        }
    }
}

/// One product's operands: `a` `[M, K]` row-major, `b` `[K, N]`, and `b`'s kept panels if any.
struct Product<'a> {
    a: &'a [f32],
    b: Matrix<'a>,
    packed: Option<&'a [f32]>,
    m: usize,
}

impl Product<'_> {
    /// Writes `out` (`[M, N]` row-major, every element), the panels split among the threads.
    fn run(&self, out: &mut [f32]) {
        let panels = self.b.n.div_ceil(NR);
        #[cfg(feature = "rayon")]
        {
            let work = self.m.saturating_mul(self.b.n).saturating_mul(self.b.k);
            let threads = rayon::current_num_threads().min(panels);
            if threads > 1 && work >= PARALLEL_THRESHOLD {
                let per = panels.div_ceil(threads);
                let out = out.as_mut_ptr() as usize;
                rayon::scope(|scope| {
                    for first in (0..panels).step_by(per) {
                        let last = (first + per).min(panels);
                        // SAFETY: each task writes the columns of its own panels only.
                        scope.spawn(move |_| unsafe { self.panels(first..last, out as *mut f32) });
                    }
                });
                return;
            }
        }
        // SAFETY: `out` holds the whole `[M, N]` output.
        unsafe { self.panels(0..panels, out.as_mut_ptr()) }
    }

    /// Computes the output columns of `panels` into `out` (`[M, N]` row-major).
    ///
    /// # Safety
    /// `out` must hold `M x N` values, and no other thread may write these columns meanwhile.
    unsafe fn panels(&self, panels: core::ops::Range<usize>, out: *mut f32) {
        let (m, k, n) = (self.m, self.b.k, self.b.n);
        let strips = m.div_ceil(MR);
        // The panels of a weight met for the first time, packed one at a time.
        let mut own = if self.packed.is_none() {
            vec![0.0f32; k * NR]
        } else {
            Vec::new()
        };
        let mut block = 0;
        while block < strips {
            let block_end = (block + STRIPS_PER_BLOCK).min(strips);
            for p in panels.clone() {
                let panel = match self.packed {
                    Some(packed) => &packed[p * k * NR..(p + 1) * k * NR],
                    None => {
                        pack_panel(&self.b, p, &mut own);
                        &own[..]
                    }
                };
                let first = p * NR;
                let cols = NR.min(n - first);
                for strip in block..block_end {
                    let row = strip * MR;
                    let rows = MR.min(m - row);
                    // SAFETY: rows `row..row + rows` of `a` (K values each) exist, the panel
                    // holds K x NR values, and the output tile lies inside `out`.
                    unsafe {
                        kernel(
                            Tile {
                                a: self.a.as_ptr().add(row * k),
                                lda: k,
                                rows,
                                c: out.add(row * n + first),
                                ldc: n,
                                cols,
                            },
                            panel.as_ptr(),
                            k,
                        )
                    };
                }
            }
            block = block_end;
        }
    }
}

/// One kernel call's rows: `rows` (at most [`MR`]) left-hand rows from `a`, `lda` apart, and
/// their output tile of `cols` (at most [`NR`]) columns at `c`, rows `ldc` apart.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    lda: usize,
    rows: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

/// `tile.c = tile.a[.., 0..k] · panel`, with `panel` `[k][NR]`. Rows past `tile.rows` repeat
/// the last one: computed, never stored.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the pointers must cover those ranges.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(tile: Tile, panel: *const f32, k: usize) {
    let Tile {
        a,
        lda,
        rows,
        c,
        ldc,
        cols,
    } = tile;
    use core::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let row = |r: usize| a.add(r.min(rows - 1) * lda);
        let (a0, a1, a2, a3, a4, a5) = (row(0), row(1), row(2), row(3), row(4), row(5));
        let mut acc = [_mm256_setzero_ps(); 2 * MR];
        let mut b = panel;
        for p in 0..k {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (r, ar) in [a0, a1, a2, a3, a4, a5].into_iter().enumerate() {
                let x = _mm256_broadcast_ss(&*ar.add(p));
                acc[2 * r] = _mm256_fmadd_ps(x, b0, acc[2 * r]);
                acc[2 * r + 1] = _mm256_fmadd_ps(x, b1, acc[2 * r + 1]);
            }
            b = b.add(NR);
        }
        if cols == NR {
            for r in 0..rows {
                _mm256_storeu_ps(c.add(r * ldc), acc[2 * r]);
                _mm256_storeu_ps(c.add(r * ldc + 8), acc[2 * r + 1]);
            }
        } else {
            let mut staged = [0.0f32; NR];
            for r in 0..rows {
                _mm256_storeu_ps(staged.as_mut_ptr(), acc[2 * r]);
                _mm256_storeu_ps(staged.as_mut_ptr().add(8), acc[2 * r + 1]);
                core::ptr::copy_nonoverlapping(staged.as_ptr(), c.add(r * ldc), cols);
            }
        }
    }
}

/// Never called: [`cpu`] is false off x86_64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: Tile, _: *const f32, _: usize) {
    unreachable!("the packed product runs on x86_64 only")
}

/// Packed right-hand matrices kept between calls (see [`super::kept`]): repacking a weight at
/// every call was a fifth of CLIP ViT-B/32's time. The packed copies together stay under
/// [`kept::BUDGET`].
mod kept {
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    use super::super::kept::{Kept, Met, identifying_storage};
    use super::{Matrix, MatrixLayout};
    use crate::FlexTensor;

    /// Bytes of packed matrices kept at most (all entries together): CLIP ViT-B/32's vision
    /// tower (340 MB of f32 weights in its linear layers) fits.
    pub(super) const BUDGET: usize = 512 << 20;

    /// The packed panels, keyed by a matrix's storage, `k`, `n` and layout.
    static KEPT: Kept<(usize, usize, MatrixLayout)> = Kept::new(BUDGET);

    /// The kept panels of `rhs` (read as `b`): `None` at its first call (it is noted), when it
    /// does not cover its whole storage (its storage does not identify it) or when the budget
    /// is spent; packed and kept at its second call.
    pub(super) fn packed(rhs: &FlexTensor, b: &Matrix<'_>) -> Option<Arc<Vec<f32>>> {
        let storage = identifying_storage(rhs, b.k * b.n)?;
        let key = (b.k, b.n, b.layout);
        match KEPT.meet(&storage, key) {
            Met::First => None,
            Met::Kept(packed) => Some(packed),
            Met::Again => {
                // Packed outside the lock, if it fits.
                let bytes = b.n.div_ceil(super::NR) * super::NR * b.k * size_of::<f32>();
                if !KEPT.fits(bytes) {
                    return None;
                }
                KEPT.keep(&storage, key, Arc::new(super::pack(b)))
            }
        }
    }
}
