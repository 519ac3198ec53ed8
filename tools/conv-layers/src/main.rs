//! Times each convolution of a network on burn-flex (foil's patched copy): forward and input
//! gradient, the two calls `resnet18_grad` makes per layer (`conv2d`, and the transposed
//! convolution burn's autodiff computes the input gradient with, `conv2d_x_backward`'s padding
//! arithmetic), and the weight gradient `resnet18_grad_tracked` adds (burn-flex's
//! `conv2d_weight_backward`). Prints one markdown row per layer: its shape, how many times the
//! network runs it, and the fastest of `--reps` calls of each after two warm-ups, in
//! milliseconds, then the network's total (times weighted by the counts). `conv_layers.py` in
//! this folder times the same layers in PyTorch (`F.conv2d`, `aten.convolution_backward` for
//! the input, then for the weight). For ResNet-18 both then time the max pooling after the
//! stem, with indices as autodiff runs it, and its backward.
//!
//! Usage: `cargo run --release -- [--net resnet18] [--size 128] [--batch 2] [--reps 20]`.

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, ModuleOps};
use burn::tensor::{Distribution, Tensor};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type B = Flex;

/// One convolution: input channels and map side, output channels, kernel, stride, padding,
/// and how many times the network runs it.
#[derive(Clone, Copy)]
struct Layer {
    name: &'static str,
    c_in: usize,
    side: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    count: usize,
}

impl Layer {
    fn side_out(&self) -> usize {
        (self.side + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

/// torchvision's ResNet-18 at `size` pixels (square).
fn resnet18(size: usize) -> Vec<Layer> {
    let s1 = size / 4; // after the stem's stride 2 and the max pool's
    let layer = |name, c_in, side, c_out, kernel, stride, padding, count| Layer {
        name,
        c_in,
        side,
        c_out,
        kernel,
        stride,
        padding,
        count,
    };
    vec![
        layer("stem 7x7/2", 3, size, 64, 7, 2, 3, 1),
        layer("layer1 3x3", 64, s1, 64, 3, 1, 1, 4),
        layer("layer2 3x3/2", 64, s1, 128, 3, 2, 1, 1),
        layer("layer2 1x1/2", 64, s1, 128, 1, 2, 0, 1),
        layer("layer2 3x3", 128, s1 / 2, 128, 3, 1, 1, 3),
        layer("layer3 3x3/2", 128, s1 / 2, 256, 3, 2, 1, 1),
        layer("layer3 1x1/2", 128, s1 / 2, 256, 1, 2, 0, 1),
        layer("layer3 3x3", 256, s1 / 4, 256, 3, 1, 1, 3),
        layer("layer4 3x3/2", 256, s1 / 4, 512, 3, 2, 1, 1),
        layer("layer4 1x1/2", 256, s1 / 4, 512, 1, 2, 0, 1),
        layer("layer4 3x3", 512, s1 / 8, 512, 3, 1, 1, 3),
    ]
}

/// The fastest of `reps` calls of `f` after two warm-up calls, in milliseconds: on a VM whose
/// host takes the cores away at times, the one figure that noise only ever raises.
fn fastest_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.into_iter().fold(f64::INFINITY, f64::min)
}

/// The forward call, the input gradient's and the weight gradient's, in milliseconds.
fn time_layer(layer: &Layer, batch: usize, reps: usize) -> [f64; 3] {
    let device = Default::default();
    let (s, p) = ([layer.stride; 2], [layer.padding; 2]);
    let side_out = layer.side_out();
    let x = Tensor::<B, 4>::random(
        [batch, layer.c_in, layer.side, layer.side],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let w = Tensor::<B, 4>::random(
        [layer.c_out, layer.c_in, layer.kernel, layer.kernel],
        Distribution::Normal(0.0, 0.05),
        &device,
    );
    let grad = Tensor::<B, 4>::random(
        [batch, layer.c_out, side_out, side_out],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let forward = fastest_ms(reps, || {
        let y = conv2d(
            x.clone(),
            w.clone(),
            None,
            ConvOptions::new(s, p, [1, 1], 1),
        );
        std::hint::black_box(y.into_primitive());
    });
    // burn-backend's `calculate_padding_out`: what the transposed convolution adds at the end
    // to give back the input's size.
    let full = (side_out - 1) * layer.stride + layer.kernel;
    let padding_out = layer.side + 2 * layer.padding - full;
    let options = ConvTransposeOptions::new(s, p, [padding_out; 2], [1, 1], 1);
    let backward = fastest_ms(reps, || {
        let dx = conv_transpose2d(grad.clone(), w.clone(), None, options.clone());
        assert_eq!(dx.dims(), [batch, layer.c_in, layer.side, layer.side]);
        std::hint::black_box(dx.into_primitive());
    });
    let weight_grad = fastest_ms(reps, || {
        let dw = B::conv2d_weight_backward(
            x.clone().into_primitive().tensor(),
            w.clone().into_primitive().tensor(),
            grad.clone().into_primitive().tensor(),
            ConvOptions::new(s, p, [1, 1], 1),
        );
        std::hint::black_box(dw);
    });
    [forward, backward, weight_grad]
}

/// ResNet-18's max pooling after the stem (3x3, stride 2, padding 1) as its autodiff runs it:
/// the forward with indices and the backward, in milliseconds.
fn time_max_pool(batch: usize, channels: usize, side: usize, reps: usize) -> [f64; 2] {
    let device = Default::default();
    let x = Tensor::<B, 4>::random(
        [batch, channels, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .into_primitive()
    .tensor();
    let pool = |x| B::max_pool2d_with_indices(x, [3, 3], [2, 2], [1, 1], [1, 1], false);
    let forward = fastest_ms(reps, || {
        std::hint::black_box(pool(x.clone()).output);
    });
    let pooled = pool(x.clone());
    let grad = Tensor::<B, 4>::random(
        [batch, channels, side.div_ceil(2), side.div_ceil(2)],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .into_primitive()
    .tensor();
    let backward = fastest_ms(reps, || {
        let dx = B::max_pool2d_with_indices_backward(
            x.clone(),
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
            grad.clone(),
            pooled.indices.clone(),
        );
        std::hint::black_box(dx.x_grad);
    });
    [forward, backward]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut net, mut size, mut batch, mut reps) = ("resnet18".to_string(), 128, 2, 20);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--net" => net = value,
            "--size" => size = value.parse().expect("--size: an integer"),
            "--batch" => batch = value.parse().expect("--batch: an integer"),
            "--reps" => reps = value.parse().expect("--reps: an integer"),
            other => panic!("unknown flag {other}; expected --net, --size, --batch or --reps"),
        }
    }
    let layers = match net.as_str() {
        "resnet18" => resnet18(size),
        other => panic!("unknown network {other}; expected resnet18"),
    };
    let threads = rayon_threads();
    println!(
        "burn-flex, {net} at {size} px, batch {batch}, {threads} threads, fastest of {reps}\n"
    );
    println!("| layer | input | count | forward ms | input gradient ms | weight gradient ms |");
    println!("|---|---|---|---|---|---|");
    let mut totals = [0.0; 3];
    for layer in &layers {
        let [f, b, w] = time_layer(layer, batch, reps);
        for (total, t) in totals.iter_mut().zip([f, b, w]) {
            *total += t * layer.count as f64;
        }
        println!(
            "| {} | {}x{}x{} -> {} | {} | {f:.3} | {b:.3} | {w:.3} |",
            layer.name, layer.c_in, layer.side, layer.side, layer.c_out, layer.count
        );
    }
    let [f, b, w] = totals;
    println!("| total | | | {f:.2} | {b:.2} | {w:.2} |");
    if net == "resnet18" {
        let [forward, backward] = time_max_pool(batch, 64, size / 2, reps);
        println!(
            "\nmax pool 3x3/2 with indices, {batch}x64x{0}x{0}: forward {forward:.3} ms, \
             backward {backward:.3} ms",
            size / 2
        );
    }
}

/// The threads burn-flex runs on (rayon's global pool: `RAYON_NUM_THREADS`, else the cores).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
