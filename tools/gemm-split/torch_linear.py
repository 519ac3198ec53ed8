"""PyTorch's side of `tools/gemm-split`: `F.linear` on the same `MxKxN` shapes (row-major
`[M, K]` times a `[K, N]` weight, stored as PyTorch's `[N, K]`), over distinct weights, the
thread count given, best of 5 rounds per shape, in milliseconds per product.

Usage: `tools/.venv/bin/python tools/gemm-split/torch_linear.py --threads 2 100x768x768 ...`
"""

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("shapes", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for shape in args.shapes:
        m, k, n = (int(d) for d in shape.split("x"))
        count = min(max(64_000_000 // (k * n), 2), 16)
        weights = [torch.randn(n, k) for _ in range(count)]
        x = torch.randn(m, k)
        best = float("inf")
        with torch.no_grad():
            for _ in range(5):
                start = time.perf_counter()
                for w in weights:
                    torch.nn.functional.linear(x, w)
                best = min(best, (time.perf_counter() - start) / count)
        print(f"{shape}: torch {best * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
