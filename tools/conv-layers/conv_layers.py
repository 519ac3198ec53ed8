"""PyTorch's times for the layers `cargo run --release` in this folder times on burn-flex.

Each convolution forward (`F.conv2d`), its input gradient as autograd computes it
(`torch.ops.aten.convolution_backward` with only the input's mask set) and its weight gradient
(the same call with only the weight's mask set), the fastest of `--reps`
calls after two warm-ups in milliseconds, one markdown row per layer, then the network's total
weighted by each layer's count, then the stem's max pooling with indices and its backward.
Same layer list as `src/main.rs`.

Usage: tools/.venv/bin/python tools/conv-layers/conv_layers.py --threads 2 [--size 128]
[--batch 2] [--reps 20]
"""

import argparse
import time

import torch
import torch.nn.functional as F


def resnet18(size):
    """(name, c_in, side, c_out, kernel, stride, padding, count) of torchvision's ResNet-18."""
    s1 = size // 4
    return [
        ("stem 7x7/2", 3, size, 64, 7, 2, 3, 1),
        ("layer1 3x3", 64, s1, 64, 3, 1, 1, 4),
        ("layer2 3x3/2", 64, s1, 128, 3, 2, 1, 1),
        ("layer2 1x1/2", 64, s1, 128, 1, 2, 0, 1),
        ("layer2 3x3", 128, s1 // 2, 128, 3, 1, 1, 3),
        ("layer3 3x3/2", 128, s1 // 2, 256, 3, 2, 1, 1),
        ("layer3 1x1/2", 128, s1 // 2, 256, 1, 2, 0, 1),
        ("layer3 3x3", 256, s1 // 4, 256, 3, 1, 1, 3),
        ("layer4 3x3/2", 256, s1 // 4, 512, 3, 2, 1, 1),
        ("layer4 1x1/2", 256, s1 // 4, 512, 1, 2, 0, 1),
        ("layer4 3x3", 512, s1 // 8, 512, 3, 1, 1, 3),
    ]


def fastest_ms(reps, f):
    f()
    f()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"PyTorch {torch.__version__}, resnet18 at {args.size} px, batch {args.batch}, "
          f"{args.threads} threads, fastest of {args.reps}\n")
    print("| layer | input | count | forward ms | input gradient ms | weight gradient ms |")
    print("|---|---|---|---|---|---|")
    total_f = total_b = total_w = 0.0
    with torch.no_grad():
        for name, c_in, side, c_out, k, s, p, count in resnet18(args.size):
            x = torch.randn(args.batch, c_in, side, side)
            w = torch.randn(c_out, c_in, k, k) * 0.05
            y = F.conv2d(x, w, stride=s, padding=p)
            g = torch.randn_like(y)
            fwd = fastest_ms(args.reps, lambda: F.conv2d(x, w, stride=s, padding=p))

            def input_grad():
                dx = torch.ops.aten.convolution_backward(
                    g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                    [True, False, False])[0]
                assert dx.shape == x.shape

            def weight_grad():
                dw = torch.ops.aten.convolution_backward(
                    g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                    [False, True, False])[1]
                assert dw.shape == w.shape

            bwd = fastest_ms(args.reps, input_grad)
            wgt = fastest_ms(args.reps, weight_grad)
            total_f += fwd * count
            total_b += bwd * count
            total_w += wgt * count
            print(f"| {name} | {c_in}x{side}x{side} -> {c_out} | {count} | {fwd:.3f} | {bwd:.3f} "
                  f"| {wgt:.3f} |")
    print(f"| total | | | {total_f:.2f} | {total_b:.2f} | {total_w:.2f} |")
    # ResNet-18's max pooling after the stem, as autograd runs it: with indices, then backward.
    side = args.size // 2
    x = torch.randn(args.batch, 64, side, side)
    with torch.no_grad():
        fwd = fastest_ms(args.reps, lambda: F.max_pool2d(x, 3, 2, 1, return_indices=True))
        y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
        g = torch.randn_like(y)
        bwd = fastest_ms(args.reps, lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            g, x, [3, 3], [2, 2], [1, 1], [1, 1], False, idx))
    print(f"\nmax pool 3x3/2 with indices, {args.batch}x64x{side}x{side}: forward {fwd:.3f} ms, "
          f"backward {bwd:.3f} ms")


if __name__ == "__main__":
    main()
