//! Element-wise loops split across rayon's threads for large tensors (foil's patch).
//!
//! burn-flex 0.21.0 runs its element-wise unary and binary ops on one thread; on a network's
//! activations (millions of elements) that left the other cores idle between convolutions.
//! Below [`PARALLEL_THRESHOLD`](super::PARALLEL_THRESHOLD) elements the loops stay sequential.

use alloc::vec::Vec;
use core::mem::MaybeUninit;

/// Elements per rayon task: large enough to amortise the task, small enough to balance.
#[cfg(feature = "rayon")]
const CHUNK: usize = 32 * 1024;

/// `*x = op(*x)` for every element.
pub(crate) fn map_inplace<E: Copy + Send, Op: Fn(E) -> E + Sync>(data: &mut [E], op: Op) {
    #[cfg(feature = "rayon")]
    if data.len() >= super::PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        data.par_chunks_mut(CHUNK)
            .for_each(|chunk| map_slice(chunk, &op));
        return;
    }
    map_slice(data, &op);
}

/// The loop of [`map_inplace`], inlined into each caller so that it vectorises with `op`
/// inlined.
#[inline(always)]
fn map_slice<E: Copy, Op: Fn(E) -> E>(data: &mut [E], op: &Op) {
    for x in data.iter_mut() {
        *x = (*op)(*x);
    }
}

/// `op(x)` for every element, collected.
pub(crate) fn map_collect<E: Copy + Sync, R: Send, Op: Fn(E) -> R + Sync>(
    src: &[E],
    op: Op,
) -> Vec<R> {
    let mut out: Vec<R> = Vec::with_capacity(src.len());
    let dst = &mut out.spare_capacity_mut()[..src.len()];
    #[cfg(feature = "rayon")]
    if src.len() >= super::PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| map_into(d, s, &op));
    } else {
        map_into(dst, src, &op);
    }
    #[cfg(not(feature = "rayon"))]
    map_into(dst, src, &op);
    // SAFETY: `map_into` wrote every one of the first `src.len()` slots (the chunks of `dst`
    // and `src` pair up one to one).
    unsafe { out.set_len(src.len()) };
    out
}

/// The loop of [`map_collect`], inlined into each caller so that it vectorises with `op`
/// inlined (through rayon's `map(..).collect()`, a build kept SiLU's sigmoid behind a call per
/// element: scalar, 2x slower).
#[inline(always)]
fn map_into<E: Copy, R, Op: Fn(E) -> R>(dst: &mut [MaybeUninit<R>], src: &[E], op: &Op) {
    for (d, &x) in dst.iter_mut().zip(src) {
        d.write((*op)(x));
    }
}

/// `*l = op(*l, r)` element by element.
pub(crate) fn zip_inplace<E: Copy + Send + Sync, Op: Fn(E, E) -> E + Sync>(
    lhs: &mut [E],
    rhs: &[E],
    op: Op,
) {
    chunks_inplace(lhs, rhs, |l, r| {
        l.iter_mut().zip(r).for_each(|(l, &r)| *l = op(*l, r))
    });
}

/// `kernel(lhs_chunk, rhs_chunk)` over matching chunks (for the SIMD in-place kernels).
pub(crate) fn chunks_inplace<E: Send + Sync, K: Fn(&mut [E], &[E]) + Sync>(
    lhs: &mut [E],
    rhs: &[E],
    kernel: K,
) {
    let len = lhs.len().min(rhs.len());
    let (lhs, rhs) = (&mut lhs[..len], &rhs[..len]);
    #[cfg(feature = "rayon")]
    if len >= super::PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        lhs.par_chunks_mut(CHUNK)
            .zip(rhs.par_chunks(CHUNK))
            .for_each(|(l, r)| kernel(l, r));
        return;
    }
    kernel(lhs, rhs);
}

/// `op(l, r)` element by element, collected.
pub(crate) fn zip_collect<E: Copy + Sync, R: Send, Op: Fn(E, E) -> R + Sync>(
    lhs: &[E],
    rhs: &[E],
    op: Op,
) -> Vec<R> {
    #[cfg(feature = "rayon")]
    if lhs.len() >= super::PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        return lhs
            .par_iter()
            .zip(rhs.par_iter())
            .with_min_len(CHUNK)
            .map(|(&a, &b)| op(a, b))
            .collect();
    }
    lhs.iter().zip(rhs).map(|(&a, &b)| op(a, b)).collect()
}

/// `op(i)` for every `i < n`, on the threads when the work touches at least the parallel
/// threshold of `elements`.
pub(crate) fn for_each_index<Op: Fn(usize) + Sync + Send>(n: usize, elements: usize, op: Op) {
    #[cfg(feature = "rayon")]
    if elements >= super::PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        (0..n).into_par_iter().with_min_len(16).for_each(op);
        return;
    }
    let _ = elements;
    (0..n).for_each(op);
}
