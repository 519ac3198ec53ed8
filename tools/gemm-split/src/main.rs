//! Times `[m, k] x [k, n]` products (row-major, as burn-flex's matmul calls gemm) two ways:
//! gemm threading one call itself (`Parallelism::Rayon(0)`), and one single-threaded call per
//! rayon thread over its own columns, rounded up to 64 (patch change 16's split). Each shape
//! runs over several distinct right-hand matrices so that they come from memory, as a network's
//! weights do; 15 rounds alternate the two ways; medians are printed. The two outputs must be
//! equal bit for bit.
//!
//! Usage: `cargo run --release -- MxKxN [MxKxN ...]`, for example CLIP ViT-B/32 at batch 2:
//! `100x768x768 100x768x3072 100x3072x768`.

use std::time::Instant;

/// The column width of each thread's part, as in burn-flex's `split_columns`.
const ALIGN: usize = 64;

/// `out = lhs · rhs` for row-major `[m, k]`, `[k, n]` and `[m, n]` with row stride `stride`.
///
/// # Safety
/// The pointers must cover those matrices.
unsafe fn product(
    [m, k, n]: [usize; 3],
    stride: usize,
    out: *mut f32,
    lhs: *const f32,
    rhs: *const f32,
    parallelism: gemm::Parallelism,
) {
    let stride = stride as isize;
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            stride,
            false,
            lhs,
            1,
            k as isize,
            rhs,
            1,
            stride,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The product as gemm threads it.
fn threaded(dims: [usize; 3], out: &mut [f32], lhs: &[f32], rhs: &[f32]) {
    let stride = dims[2];
    let rayon = gemm::Parallelism::Rayon(0);
    unsafe {
        product(
            dims,
            stride,
            out.as_mut_ptr(),
            lhs.as_ptr(),
            rhs.as_ptr(),
            rayon,
        )
    }
}

/// The product as one single-threaded call per thread over its own columns.
fn split(dims: [usize; 3], out: &mut [f32], lhs: &[f32], rhs: &[f32]) {
    let [m, k, n] = dims;
    let width = n.div_ceil(rayon::current_num_threads()).div_ceil(ALIGN) * ALIGN;
    let (out, lhs, rhs) = (
        out.as_mut_ptr() as usize,
        lhs.as_ptr() as usize,
        rhs.as_ptr() as usize,
    );
    rayon::scope(|scope| {
        for first in (0..n).step_by(width) {
            let columns = width.min(n - first);
            scope.spawn(move |_| unsafe {
                product(
                    [m, k, columns],
                    n,
                    (out as *mut f32).add(first),
                    lhs as *const f32,
                    (rhs as *const f32).add(first),
                    gemm::Parallelism::None,
                )
            });
        }
    });
}

/// Deterministic values in [0, 0.13).
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + seed) % 13) as f32 * 0.01)
        .collect()
}

fn main() {
    type Way = fn([usize; 3], &mut [f32], &[f32], &[f32]);
    let ways: [(&str, Way); 2] = [("gemm threads", threaded), ("split", split)];
    for arg in std::env::args().skip(1) {
        let dims: Vec<usize> = arg.split('x').map(|d| d.parse().expect("MxKxN")).collect();
        let [m, k, n] = dims[..] else {
            panic!("expected MxKxN, found {arg}")
        };
        let count = (64_000_000 / (k * n)).clamp(2, 16);
        let rhs: Vec<Vec<f32>> = (0..count).map(|seed| values(k * n, seed)).collect();
        let lhs = values(m * k, 99);
        let mut outs = [vec![0.0; m * n], vec![0.0; m * n]];
        for (i, (_, way)) in ways.iter().enumerate() {
            way([m, k, n], &mut outs[i], &lhs, &rhs[0]);
        }
        assert!(outs[0] == outs[1], "{arg}: the two ways differ");
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..15 {
            for (i, (_, way)) in ways.iter().enumerate() {
                let start = Instant::now();
                for r in &rhs {
                    way([m, k, n], &mut outs[i], &lhs, r);
                }
                times[i].push(start.elapsed().as_secs_f64() * 1e3 / count as f64);
            }
        }
        let median = |t: &mut Vec<f64>| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let (a, b) = (median(&mut times[0]), median(&mut times[1]));
        println!(
            "{arg}: {} {a:.3} ms, {} {b:.3} ms, ratio {:.2}",
            ways[0].0,
            ways[1].0,
            b / a
        );
    }
}
