//! Binary ops over strided operands, one row at a time (foil's patch).
//!
//! burn-flex 0.21.0's general binary fallback walks both operands with `StridedIter`: an
//! odometer step over every dimension for every element, on one thread. Broadcasts that its
//! two SIMD patterns miss take it, such as dividing `[N, C, H, W]` by a channel norm
//! `[N, 1, H, W]` or multiplying by per-channel weights `[1, C, 1, 1]` (LPIPS, every
//! BatchNorm), and so does the sum of two gradient slices (a concatenation's backward).
//!
//! Here the shared shape's dimensions are merged wherever both operands allow it (and dropped
//! where their size is 1), the innermost merged dimension becomes a row, and each row is one
//! loop specialised on the two inner strides: 1 (a slice), 0 (a broadcast scalar) or any
//! other. Rows are split across rayon's threads above [`PARALLEL_THRESHOLD`] elements.
//!
//! [`PARALLEL_THRESHOLD`]: super::PARALLEL_THRESHOLD

use alloc::vec::Vec;
use core::mem::MaybeUninit;

use crate::layout::Layout;

/// The operands' shared shape as rows: merged outer dimensions and the row's length and steps.
struct Rows {
    /// Sizes of the outer (merged) dimensions, outermost first.
    outer: Vec<usize>,
    /// Each operand's stride along each outer dimension.
    outer_strides: [Vec<isize>; 2],
    /// Elements per row.
    len: usize,
    /// Each operand's stride along the row.
    step: [isize; 2],
    /// Each operand's storage offset of the first element.
    start: [isize; 2],
}

impl Rows {
    /// Merges the dimensions of `shape` under both operands' layouts.
    fn new(shape: &[usize], layouts: [&Layout; 2]) -> Self {
        let strides = [layouts[0].strides(), layouts[1].strides()];
        let mut sizes: Vec<usize> = Vec::with_capacity(shape.len());
        let mut merged: [Vec<isize>; 2] = [Vec::new(), Vec::new()];
        for (d, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            // Dimension `d` continues the previous kept one when, for both operands, one step
            // along the previous equals `size` steps along `d`.
            let continues = sizes.last().is_some()
                && (0..2).all(|k| {
                    (size as isize)
                        .checked_mul(strides[k][d])
                        .is_some_and(|run| merged[k].last() == Some(&run))
                });
            if continues {
                if let Some(last) = sizes.last_mut() {
                    *last *= size;
                }
                for (k, m) in merged.iter_mut().enumerate() {
                    if let Some(last) = m.last_mut() {
                        *last = strides[k][d];
                    }
                }
            } else {
                sizes.push(size);
                for (k, m) in merged.iter_mut().enumerate() {
                    m.push(strides[k][d]);
                }
            }
        }
        let len = sizes.pop().unwrap_or(1);
        let step = [merged[0].pop().unwrap_or(0), merged[1].pop().unwrap_or(0)];
        Self {
            outer: sizes,
            outer_strides: merged,
            len,
            step,
            start: [
                layouts[0].start_offset() as isize,
                layouts[1].start_offset() as isize,
            ],
        }
    }

    /// Calls `body(row, offsets)` for rows `first..first + count` in order, with each operand's
    /// storage offset of the row's first element.
    fn walk(&self, first: usize, count: usize, mut body: impl FnMut(usize, [isize; 2])) {
        // No rows (an empty tensor, where an outer size may be 0): nothing to decompose.
        if count == 0 {
            return;
        }
        let dims = self.outer.len();
        let mut index = alloc::vec![0usize; dims];
        let mut offsets = self.start;
        let mut rest = first;
        for d in (0..dims).rev() {
            index[d] = rest % self.outer[d];
            rest /= self.outer[d];
            for (k, offset) in offsets.iter_mut().enumerate() {
                *offset += index[d] as isize * self.outer_strides[k][d];
            }
        }
        for row in first..first + count {
            body(row, offsets);
            for d in (0..dims).rev() {
                index[d] += 1;
                if index[d] < self.outer[d] {
                    for (k, offset) in offsets.iter_mut().enumerate() {
                        *offset += self.outer_strides[k][d];
                    }
                    break;
                }
                index[d] = 0;
                for (k, offset) in offsets.iter_mut().enumerate() {
                    *offset -= (self.outer[d] as isize - 1) * self.outer_strides[k][d];
                }
            }
        }
    }

    /// Runs `body(first_row, rows_of_dst)` over blocks of whole rows of a contiguous `dst`,
    /// on rayon's threads when `dst` is large.
    fn split<T: Send>(&self, dst: &mut [T], body: impl Fn(usize, &mut [T]) + Sync) {
        #[cfg(feature = "rayon")]
        if dst.len() >= super::PARALLEL_THRESHOLD {
            use rayon::prelude::*;
            let len = self.len.max(1);
            let rows_per_task = (32 * 1024 / len).max(1);
            dst.par_chunks_mut(rows_per_task * len)
                .enumerate()
                .for_each(|(task, block)| body(task * rows_per_task, block));
            return;
        }
        body(0, dst);
    }
}

/// One operand's elements along a row: `data[start + i * step]`.
#[derive(Clone, Copy)]
struct Run<'a, E> {
    data: &'a [E],
    start: isize,
    step: isize,
}

impl<E: Copy> Run<'_, E> {
    fn at(&self, i: usize) -> E {
        self.data[(self.start + i as isize * self.step) as usize]
    }

    /// The row as a slice, when its step is 1.
    fn slice(&self, len: usize) -> &[E] {
        let start = self.start as usize;
        &self.data[start..start + len]
    }
}

/// `op(lhs, rhs)` element by element over two operands of one logical shape (broadcasts
/// already expanded to stride 0), in row-major order.
pub(crate) fn zip_collect<E, Op>(
    shape: &[usize],
    lhs: (&[E], &Layout),
    rhs: (&[E], &Layout),
    op: Op,
) -> Vec<E>
where
    E: Copy + Send + Sync,
    Op: Fn(E, E) -> E + Sync,
{
    let numel: usize = shape.iter().product();
    let rows = Rows::new(shape, [lhs.1, rhs.1]);
    let mut out: Vec<E> = Vec::with_capacity(numel);
    rows.split(&mut out.spare_capacity_mut()[..numel], |first, block| {
        let count = block.len() / rows.len.max(1);
        rows.walk(first, count, |row, [l, r]| {
            let at = (row - first) * rows.len;
            let dst = &mut block[at..at + rows.len];
            let lhs = Run {
                data: lhs.0,
                start: l,
                step: rows.step[0],
            };
            let rhs = Run {
                data: rhs.0,
                start: r,
                step: rows.step[1],
            };
            write_row(dst, lhs, rhs, &op);
        });
    });
    // SAFETY: `split` hands out every row of the first `numel` slots exactly once (blocks of
    // whole rows, `numel` a multiple of the row length) and `write_row` writes all of a row.
    unsafe { out.set_len(numel) };
    out
}

/// The elements of a strided tensor in row-major order (a contiguous copy).
pub(crate) fn copy_collect<E: Copy + Send + Sync>(src: &[E], layout: &Layout) -> Vec<E> {
    let shape: &[usize] = layout.shape();
    let numel: usize = shape.iter().product();
    let rows = Rows::new(shape, [layout, layout]);
    let mut out: Vec<E> = Vec::with_capacity(numel);
    rows.split(&mut out.spare_capacity_mut()[..numel], |first, block| {
        let count = block.len() / rows.len.max(1);
        rows.walk(first, count, |row, [at, _]| {
            let start = (row - first) * rows.len;
            let dst = &mut block[start..start + rows.len];
            let run = Run {
                data: src,
                start: at,
                step: rows.step[0],
            };
            if run.step == 1 {
                for (d, &v) in dst.iter_mut().zip(run.slice(rows.len)) {
                    d.write(v);
                }
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    d.write(run.at(i));
                }
            }
        });
    });
    // SAFETY: as in `zip_collect`, every row of the first `numel` slots is written once.
    unsafe { out.set_len(numel) };
    out
}

/// `*l = op(*l, rhs)` element by element, where `dst` holds the left operand contiguously.
pub(crate) fn zip_inplace<E, Op>(shape: &[usize], dst: &mut [E], rhs: (&[E], &Layout), op: Op)
where
    E: Copy + Send + Sync,
    Op: Fn(E, E) -> E + Sync,
{
    let numel: usize = shape.iter().product();
    let contiguous = Layout::contiguous(shape.to_vec().into());
    let rows = Rows::new(shape, [&contiguous, rhs.1]);
    rows.split(&mut dst[..numel], |first, block| {
        let count = block.len() / rows.len.max(1);
        rows.walk(first, count, |row, [_, r]| {
            let at = (row - first) * rows.len;
            let rhs = Run {
                data: rhs.0,
                start: r,
                step: rows.step[1],
            };
            apply_row(&mut block[at..at + rows.len], rhs, &op);
        });
    });
}

/// Writes `op(lhs[i], rhs[i])` to every slot of `dst`.
#[inline]
fn write_row<E: Copy, Op: Fn(E, E) -> E>(
    dst: &mut [MaybeUninit<E>],
    lhs: Run<'_, E>,
    rhs: Run<'_, E>,
    op: &Op,
) {
    let len = dst.len();
    match (lhs.step, rhs.step) {
        (1, 1) => {
            for ((d, &a), &b) in dst.iter_mut().zip(lhs.slice(len)).zip(rhs.slice(len)) {
                d.write(op(a, b));
            }
        }
        (1, 0) => {
            let b = rhs.at(0);
            for (d, &a) in dst.iter_mut().zip(lhs.slice(len)) {
                d.write(op(a, b));
            }
        }
        (0, 1) => {
            let a = lhs.at(0);
            for (d, &b) in dst.iter_mut().zip(rhs.slice(len)) {
                d.write(op(a, b));
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                d.write(op(lhs.at(i), rhs.at(i)));
            }
        }
    }
}

/// Replaces every `dst[i]` by `op(dst[i], rhs[i])`.
#[inline]
fn apply_row<E: Copy, Op: Fn(E, E) -> E>(dst: &mut [E], rhs: Run<'_, E>, op: &Op) {
    let len = dst.len();
    match rhs.step {
        1 => {
            for (d, &b) in dst.iter_mut().zip(rhs.slice(len)) {
                *d = op(*d, b);
            }
        }
        0 => {
            let b = rhs.at(0);
            for d in dst.iter_mut() {
                *d = op(*d, b);
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = op(*d, rhs.at(i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_std::Shape;

    fn strided_reference(
        shape: &[usize],
        lhs: (&[f32], &Layout),
        rhs: (&[f32], &Layout),
    ) -> Vec<f32> {
        let l = crate::strided_index::StridedIter::new(lhs.1);
        let r = crate::strided_index::StridedIter::new(rhs.1);
        let out: Vec<f32> = l.zip(r).map(|(i, j)| lhs.0[i] - 2.0 * rhs.0[j]).collect();
        assert_eq!(out.len(), shape.iter().product::<usize>());
        out
    }

    #[test]
    fn broadcast_middle_and_narrowed_operands_match_the_element_walk() {
        let data: Vec<f32> = (0..240).map(|i| i as f32 * 0.5 - 7.0).collect();
        // lhs: [2, 3, 4, 5] narrowed from [2, 4, 4, 5] along dim 1; rhs: [2, 1, 4, 5] expanded.
        let lhs = Layout::contiguous(Shape::from(alloc::vec![2, 4, 4, 5])).narrow(1, 1, 3);
        let rhs = Layout::new(
            Shape::from(alloc::vec![2, 3, 4, 5]),
            alloc::vec![20, 0, 5, 1],
            3,
        );
        let shape = [2, 3, 4, 5];
        let got = zip_collect(&shape, (&data, &lhs), (&data, &rhs), |a, b| a - 2.0 * b);
        assert_eq!(got, strided_reference(&shape, (&data, &lhs), (&data, &rhs)));
    }

    #[test]
    fn permuted_and_flipped_copies_match_the_element_walk() {
        let data: Vec<f32> = (0..360).map(|i| i as f32).collect();
        let base = Layout::contiguous(Shape::from(alloc::vec![3, 4, 5, 6]));
        for layout in [
            base.permute(&[0, 2, 1, 3]),
            base.permute(&[3, 1, 0, 2]),
            base.flip(&[1]).narrow(3, 2, 3),
        ] {
            let walk: Vec<f32> = crate::strided_index::StridedIter::new(&layout)
                .map(|i| data[i])
                .collect();
            assert_eq!(copy_collect(&data, &layout), walk, "{layout:?}");
        }
    }
}
