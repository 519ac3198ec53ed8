//! Times `[m, k] x [k, n]` products (row-major, as burn-flex's matmul calls gemm) three ways:
//! gemm threading one call itself (`Parallelism::Rayon(0)`), one single-threaded call per
//! rayon thread over its own columns, rounded up to 64 (patch change 16's split), and the
//! patched burn-flex's `matmul` on tensors of the same values, each right-hand tensor kept
//! across the calls as a network keeps its weights (patch change 20 packs it at its second
//! call; where change 20 does not apply, this is gemm again), and the same on right-hand tensors
//! that change 20 never keeps (views one row into a larger storage: packed at every call, as a
//! weight past its budget). Each shape runs over several
//! distinct right-hand matrices so that they come from memory, as a network's weights do; one
//! untimed round, then 15 rounds alternate the four ways; medians are printed. The two gemm
//! outputs must be equal bit for bit, burn-flex's close to them and equal to each other.
//!
//! Usage: `cargo run --release -- MxKxN [MxKxN ...]`, for example CLIP ViT-B/32 at batch 2:
//! `100x768x768 100x768x3072 100x3072x768`.

use std::time::Instant;

use burn_backend::TensorData;
use burn_flex::FlexTensor;

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

/// `values` as a burn-flex tensor of `shape`.
fn flex_tensor(values: &[f32], shape: [usize; 2]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values.to_vec(), shape))
}

/// `values` (`[k, n]`) as rows `1..` of a `[k + 1, n]` burn-flex tensor: contiguous, but its
/// storage does not identify it, so change 20 never keeps it.
fn flex_view(values: &[f32], [k, n]: [usize; 2]) -> FlexTensor {
    let mut padded = vec![0.0; n];
    padded.extend_from_slice(values);
    flex_tensor(&padded, [k + 1, n]).narrow(0, 1, k)
}

fn main() {
    const WAYS: [&str; 4] = ["gemm threads", "split", "burn-flex", "not kept"];
    for arg in std::env::args().skip(1) {
        let dims: Vec<usize> = arg.split('x').map(|d| d.parse().expect("MxKxN")).collect();
        let [m, k, n] = dims[..] else {
            panic!("expected MxKxN, found {arg}")
        };
        let count = (64_000_000 / (k * n)).clamp(2, 16);
        let rhs: Vec<Vec<f32>> = (0..count).map(|seed| values(k * n, seed)).collect();
        let lhs = values(m * k, 99);
        let lhs_flex = flex_tensor(&lhs, [m, k]);
        let rhs_flex: Vec<FlexTensor> = rhs.iter().map(|r| flex_tensor(r, [k, n])).collect();
        let rhs_views: Vec<FlexTensor> = rhs.iter().map(|r| flex_view(r, [k, n])).collect();
        let mut outs = [0; 4].map(|_| vec![0.0; m * n]);
        // One way's product by right-hand matrix `r` into `out`.
        let run = |way: usize, r: usize, out: &mut [f32]| match way {
            0 => threaded([m, k, n], out, &lhs, &rhs[r]),
            1 => split([m, k, n], out, &lhs, &rhs[r]),
            _ => {
                let rhs = if way == 2 { &rhs_flex } else { &rhs_views };
                let product = burn_flex::ops::matmul::matmul(lhs_flex.clone(), rhs[r].clone());
                out.copy_from_slice(product.storage::<f32>());
            }
        };
        for (way, out) in outs.iter_mut().enumerate() {
            for r in 0..count {
                run(way, r, out);
            }
        }
        assert!(outs[0] == outs[1], "{arg}: the two gemm ways differ");
        let scale = outs[0].iter().fold(1.0f32, |s, v| s.max(v.abs()));
        let worst = outs[0]
            .iter()
            .zip(&outs[2])
            .fold(0.0f32, |w, (a, b)| w.max((a - b).abs()));
        assert!(worst <= 1e-5 * scale, "{arg}: burn-flex differs by {worst}");
        assert!(
            outs[2] == outs[3],
            "{arg}: burn-flex kept and not kept differ"
        );
        let mut times = [0; 4].map(|_| Vec::new());
        for _ in 0..15 {
            for (way, out) in outs.iter_mut().enumerate() {
                let start = Instant::now();
                for r in 0..count {
                    run(way, r, out);
                }
                times[way].push(start.elapsed().as_secs_f64() * 1e3 / count as f64);
            }
        }
        let median = |t: &mut Vec<f64>| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let [a, b, c, d] = times.each_mut().map(median);
        println!(
            "{arg}: {} {a:.3} ms, {} {b:.3} ms, {} {c:.3} ms, {} {d:.3} ms; split/threads {:.2}, \
             burn-flex/split {:.2}, not kept/split {:.2}",
            WAYS[0],
            WAYS[1],
            WAYS[2],
            WAYS[3],
            b / a,
            c / b,
            d / b
        );
    }
}
