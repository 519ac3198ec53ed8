//! Times burn-flex's Winograd path for stride-1 3x3 convolutions against its other paths on the
//! same layers, forward and input gradient (the transposed convolution), with each weight's
//! transform kept between calls as a network's is after its first call. The two run
//! alternately in one process (`burn_flex::ops::conv::set_winograd_choice`), 11 rounds of 4
//! calls each after a warm-up round; the fastest call of each is printed, with the ratio and
//! the path the thresholds pick for the layer.
//!
//! Usage: `cargo run --release --bin winograd -- NxCxOxS [NxCxOxS ...]`: batch, channels in,
//! channels out, map side; for example `2x128x128x16` (ResNet-18's second stage at 128 px).

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Distribution, Tensor};
use burn_flex::ops::conv::{WinogradChoice, set_winograd_choice};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type B = Flex;

/// Rounds of the alternation; the first one only warms up.
const ROUNDS: usize = 12;
/// Calls of each path per round.
const CALLS: usize = 4;

/// One layer: batch, channels in and out, map side.
fn parse(arg: &str) -> [usize; 4] {
    let dims: Vec<usize> = arg
        .split('x')
        .map(|d| {
            d.parse()
                .unwrap_or_else(|_| panic!("{arg}: expected NxCxOxS"))
        })
        .collect();
    dims.try_into()
        .unwrap_or_else(|_| panic!("{arg}: expected four sizes, NxCxOxS"))
}

/// The fastest call of `f` in milliseconds, over `CALLS` calls.
fn fastest(f: &dyn Fn()) -> f64 {
    (0..CALLS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// Whether the thresholds send the forward call to Winograd: the outputs of the two choices
/// differ in their rounding, so equal outputs mean the same path.
fn thresholds_pick_winograd(conv: &dyn Fn() -> Tensor<B, 4>) -> bool {
    set_winograd_choice(WinogradChoice::Thresholds);
    let chosen = conv().into_data();
    set_winograd_choice(WinogradChoice::Always);
    let winograd = conv().into_data();
    chosen == winograd
}

fn main() {
    let layers: Vec<[usize; 4]> = std::env::args().skip(1).map(|a| parse(&a)).collect();
    assert!(
        !layers.is_empty(),
        "give layers as NxCxOxS, e.g. 2x128x128x16"
    );
    let device = Default::default();
    println!(
        "| batch x in -> out, map | tiles | forward: other ms | Winograd ms | input gradient: \
         other ms | Winograd ms | thresholds pick |"
    );
    println!("|---|---|---|---|---|---|---|");
    for [n, c, co, side] in layers {
        let normal = |shape: [usize; 4], std| {
            Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, std), &device)
        };
        let x = normal([n, c, side, side], 1.0);
        let w = normal([co, c, 3, 3], 0.05);
        let grad = normal([n, co, side, side], 1.0);
        let forward = || {
            conv2d(
                x.clone(),
                w.clone(),
                None,
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            )
        };
        let backward = || {
            conv_transpose2d(
                grad.clone(),
                w.clone(),
                None,
                ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1),
            )
        };
        let run_forward = || drop(forward().into_primitive());
        let run_backward = || drop(backward().into_primitive());
        // [forward other, forward Winograd, gradient other, gradient Winograd]
        let mut best = [f64::INFINITY; 4];
        for round in 0..ROUNDS {
            for (path, choice) in [WinogradChoice::Never, WinogradChoice::Always]
                .into_iter()
                .enumerate()
            {
                set_winograd_choice(choice);
                for (call, f) in [&run_forward as &dyn Fn(), &run_backward]
                    .into_iter()
                    .enumerate()
                {
                    let t = fastest(f);
                    if round > 0 {
                        best[2 * call + path] = best[2 * call + path].min(t);
                    }
                }
            }
        }
        let pick = if thresholds_pick_winograd(&forward) {
            "Winograd"
        } else {
            "other"
        };
        set_winograd_choice(WinogradChoice::Thresholds);
        let tiles = n * side.div_ceil(4) * side.div_ceil(4);
        println!(
            "| {n} x {c} -> {co}, {side} x {side} | {tiles} | {:.3} | {:.3} ({:.2}x) | {:.3} | \
             {:.3} ({:.2}x) | {pick} |",
            best[0],
            best[1],
            best[1] / best[0],
            best[2],
            best[3],
            best[3] / best[2]
        );
    }
}
