"""Record LPIPS reference values with the `lpips` 0.1.4 package (the official implementation).

1. Tiny random configuration (AlexNet widths 8, 12, 16, 12, 12): the lpips model with its
   convolutions and heads swapped for small random ones; its state dict (lpips' own names) and
   outputs on random image pairs go to crates/foil-metrics/tests/fixtures/lpips_tiny.safetensors.
   CI runs this parity test.
2. Published weights: assets/lpips/alexnet.safetensors (tools/convert_lpips.py) loaded into the
   lpips model; checks that the converted heads equal lpips 0.1.4's weights/v0.1/alex.pth, and
   records distances on fixed image pairs to tests/fixtures/lpips_alex_values.safetensors.

Usage: tools/.venv/bin/python tools/record_lpips.py   (after tools/convert_lpips.py)
"""
import pathlib

import lpips
import torch
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-metrics/tests/fixtures"
WIDTHS = [8, 12, 16, 12, 12]
LAYERS = [(11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)]
SLOTS = [("slice1", "0"), ("slice2", "3"), ("slice3", "6"), ("slice4", "8"), ("slice5", "10")]


def model():
    # pnet_rand: no torchvision download; pretrained=False: no head weights loaded yet.
    return lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False).eval()


def images(gen, n, size=64):
    # Smooth-ish images in [-1, 1]: upsampled noise plus fine noise.
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=gen) * 2 - 1
    fine = (torch.rand(n, 3, size, size, generator=gen) * 2 - 1) * 0.2
    return (nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False) + fine).clamp(-1, 1)


def tiny():
    torch.manual_seed(0)
    m = model()
    cin = 3
    for (sl, idx), w, (k, s, p) in zip(SLOTS, WIDTHS, LAYERS):
        getattr(m.net, sl)._modules[idx] = nn.Conv2d(cin, w, k, s, p)
        cin = w
    for i, w in enumerate(WIDTHS):
        conv = nn.Conv2d(w, 1, 1, bias=False)
        conv.weight.data.uniform_(0, 1)
        getattr(m, f"lin{i}").model[1] = conv
    gen = torch.Generator().manual_seed(1)
    a, b = images(gen, 3), images(gen, 3)
    with torch.no_grad():
        d = m(a, b).flatten()
    # `lins.*` aliases `lin*`; keep one name per tensor.
    state = {k: v.clone().contiguous() for k, v in m.state_dict().items() if not k.startswith("lins.")}
    save_file(state, str(FIX / "lpips_tiny.safetensors"))
    save_file({"input.a": a, "input.b": b, "output.distance": d}, str(FIX / "lpips_tiny_io.safetensors"))
    print("tiny distances", d.tolist())


def published():
    conv = load_file(str(ROOT / "assets/lpips/alexnet.safetensors"))
    official = torch.load(pathlib.Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu")
    for i in range(5):
        ours, theirs = conv[f"lin{i}.model.1.weight"], official[f"lin{i}.model.1.weight"]
        assert torch.equal(ours, theirs), f"head {i} differs from lpips 0.1.4"
    m = model()
    for (sl, idx), j in zip(SLOTS, [0, 3, 6, 8, 10]):
        layer = getattr(m.net, sl)._modules[idx]
        layer.weight.data.copy_(conv[f"features.{j}.weight"])
        layer.bias.data.copy_(conv[f"features.{j}.bias"])
    m.load_state_dict(official, strict=False)
    gen = torch.Generator().manual_seed(2)
    a, b = images(gen, 4), images(gen, 4)
    b[3] = a[3]  # one identical pair: distance 0
    with torch.no_grad():
        d = m(a, b).flatten()
    save_file({"input.a": a, "input.b": b, "output.distance": d}, str(FIX / "lpips_alex_values.safetensors"))
    print("published-weight distances", d.tolist(), "(heads equal lpips 0.1.4's)")


if __name__ == "__main__":
    FIX.mkdir(parents=True, exist_ok=True)
    tiny()
    published()
