"""Records pytorch-fid 0.3.0's FID InceptionV3 on formula weights, for
crates/foil-models/tests/models/inception.rs.

Nothing is downloaded: pytorch-fid's `fid_inception_v3()` is built with its weight loader
replaced by one that returns a state dict filled by a formula the Rust test computes too. For
the j-th element (row-major) of the tensor named `name`, with `h = (sum of the UTF-8 bytes of
name mod 1000) * 0.01` and `s = sin(0.7 * j + h)` in float64, cast to float32:

- `*.conv.weight` `[out, in, kh, kw]`: `s / sqrt(in * kh * kw)`;
- `*.bn.weight`: `1 + 0.1 * s`; `*.bn.bias`, `*.bn.running_mean`: `0.1 * s`;
- `*.bn.running_var`: `1 + 0.1 * |s|`; `*.num_batches_tracked`: 0;
- `fc.weight` `[1008, 2048]`: `s / sqrt(2048)`; `fc.bias`: `0.1 * s`.

Writes crates/foil-models/tests/fixtures/inception_io.safetensors: `x75` `[2, 3, 75, 75]` and
`x32` `[1, 3, 32, 32]` (inputs in [0, 1], as pytorch-fid takes them), `pool3_75` (the 2048-d
pool3 features of `InceptionV3(resize_input=False, normalize_input=True)` on `x75`) and
`pool3_32` (of `InceptionV3(resize_input=True, normalize_input=True)` on `x32`, resized to 299
bilinearly); the metadata `state_dict` lists every state-dict name and shape
(`name:d0xd1x...`, joined by `;`).

Run: tools/.venv/bin/pip install pytorch-fid==0.3.0
     tools/.venv/bin/python tools/record_inception.py
"""

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import pytorch_fid
import pytorch_fid.inception as fid

assert pytorch_fid.__version__ == "0.3.0", pytorch_fid.__version__

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/foil-models/tests/fixtures/inception_io.safetensors"


def formula(name, shape):
    """The formula tensor `name` of `shape` (see the module docstring)."""
    n = int(np.prod(shape)) if len(shape) else 1
    h = (sum(name.encode("utf-8")) % 1000) * 0.01
    s = np.sin(0.7 * np.arange(n, dtype=np.float64) + h)
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if name == "fc.weight":
        v = s / math.sqrt(shape[1])
    elif name.endswith("conv.weight"):
        v = s / math.sqrt(shape[1] * shape[2] * shape[3])
    elif name.endswith("bn.weight"):
        v = 1.0 + 0.1 * s
    elif name.endswith("running_var"):
        v = 1.0 + 0.1 * np.abs(s)
    elif name.endswith("bias") or name.endswith("running_mean"):
        v = 0.1 * s
    else:
        raise ValueError(f"no formula for {name}")
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def template():
    """The modules `fid_inception_v3()` builds, for the names and shapes of its state dict."""
    net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    return net


def main():
    shapes = {k: tuple(v.shape) for k, v in template().state_dict().items()}
    state = {k: formula(k, s) for k, s in shapes.items()}
    # pytorch-fid's own fid_inception_v3() (strict load_state_dict), fed the formula weights.
    fid.load_state_dict_from_url = lambda *args, **kwargs: state
    torch.manual_seed(0)
    x75 = torch.rand(2, 3, 75, 75)
    x32 = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        net = fid.InceptionV3([3], resize_input=False, normalize_input=True).eval()
        pool3_75 = net(x75)[0].reshape(2, 2048)
        net = fid.InceptionV3([3], resize_input=True, normalize_input=True).eval()
        pool3_32 = net(x32)[0].reshape(1, 2048)
    listing = ";".join(f"{k}:{'x'.join(map(str, s))}" for k, s in shapes.items())
    save_file(
        {
            "x75": x75.contiguous(),
            "x32": x32.contiguous(),
            "pool3_75": pool3_75.contiguous(),
            "pool3_32": pool3_32.contiguous(),
        },
        str(OUT),
        metadata={"state_dict": listing, "pytorch_fid": pytorch_fid.__version__},
    )
    print(OUT, "pool3_75 mean", pool3_75.mean().item(), "std", pool3_75.std().item(),
          "pool3_32 mean", pool3_32.mean().item(), "std", pool3_32.std().item())


if __name__ == "__main__":
    main()
