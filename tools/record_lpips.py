"""Record LPIPS reference values with the `lpips` 0.1.4 package (the official implementation).

1. Tiny random configurations (AlexNet widths 8, 12, 16, 12, 12; VGG16 widths 4, 6, 8, 8, 8):
   the lpips model with its convolutions and heads swapped for small random ones; its state dict
   (lpips' own names) and outputs on random image pairs go to
   crates/foil-metrics/tests/fixtures/lpips_{alex,vgg}_tiny{,_io}.safetensors. CI runs these.
2. Published weights: assets/lpips/{alexnet,vgg16}.safetensors (tools/convert_lpips.py) loaded
   into the lpips model; checks that the converted heads equal lpips 0.1.4's weights/v0.1/*.pth,
   and records distances on fixed image pairs to tests/fixtures/lpips_{alex,vgg}_values.safetensors.

Usage: tools/.venv/bin/python tools/record_lpips.py   (after tools/convert_lpips.py)
"""
import pathlib

import lpips
import torch
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-metrics/tests/fixtures"
# Tiny widths, and (slice, torchvision index, kernel, stride, padding, width) per convolution.
ALEX = [("slice1", 0, 11, 4, 2, 8), ("slice2", 3, 5, 1, 2, 12), ("slice3", 6, 3, 1, 1, 16), ("slice4", 8, 3, 1, 1, 12), ("slice5", 10, 3, 1, 1, 12)]
VGG_WIDTHS = [4, 6, 8, 8, 8]
VGG_INDICES = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
VGG = [(f"slice{b + 1}", i, 3, 1, 1, VGG_WIDTHS[b]) for b, idx in enumerate(VGG_INDICES) for i in idx]
TAPS = {"alex": [8, 12, 16, 12, 12], "vgg": VGG_WIDTHS}


def model(net):
    # pnet_rand: no torchvision download; pretrained=False: no head weights loaded yet.
    return lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False).eval()


def images(gen, n, size=64):
    # Smooth-ish images in [-1, 1]: upsampled noise plus fine noise.
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=gen) * 2 - 1
    fine = (torch.rand(n, 3, size, size, generator=gen) * 2 - 1) * 0.2
    return (nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False) + fine).clamp(-1, 1)


def tiny(net, layers):
    torch.manual_seed(0)
    m = model(net)
    cin = 3
    for sl, idx, k, s, p, w in layers:
        getattr(m.net, sl)._modules[str(idx)] = nn.Conv2d(cin, w, k, s, p)
        cin = w
    for i, w in enumerate(TAPS[net]):
        conv = nn.Conv2d(w, 1, 1, bias=False)
        conv.weight.data.uniform_(0, 1)
        getattr(m, f"lin{i}").model[1] = conv
    gen = torch.Generator().manual_seed(1)
    a, b = images(gen, 3), images(gen, 3)
    with torch.no_grad():
        d = m(a, b).flatten()
    # `lins.*` aliases `lin*`; keep one name per tensor.
    state = {k: v.clone().contiguous() for k, v in m.state_dict().items() if not k.startswith("lins.")}
    save_file(state, str(FIX / f"lpips_{net}_tiny.safetensors"))
    save_file({"input.a": a, "input.b": b, "output.distance": d}, str(FIX / f"lpips_{net}_tiny_io.safetensors"))
    print(net, "tiny distances", d.tolist())


def published(net, file, layers):
    conv = load_file(str(ROOT / "assets/lpips" / file))
    official = torch.load(pathlib.Path(lpips.__file__).parent / f"weights/v0.1/{net}.pth", map_location="cpu")
    for i in range(5):
        ours, theirs = conv[f"lin{i}.model.1.weight"], official[f"lin{i}.model.1.weight"]
        assert torch.equal(ours, theirs), f"{net} head {i} differs from lpips 0.1.4"
    m = model(net)
    for sl, idx, *_ in layers:
        layer = getattr(m.net, sl)._modules[str(idx)]
        layer.weight.data.copy_(conv[f"features.{idx}.weight"])
        layer.bias.data.copy_(conv[f"features.{idx}.bias"])
    m.load_state_dict(official, strict=False)
    gen = torch.Generator().manual_seed(2)
    a, b = images(gen, 4), images(gen, 4)
    b[3] = a[3]  # one identical pair: distance 0
    with torch.no_grad():
        d = m(a, b).flatten()
    save_file({"input.a": a, "input.b": b, "output.distance": d}, str(FIX / f"lpips_{net}_values.safetensors"))
    print(net, "published-weight distances", d.tolist(), "(heads equal lpips 0.1.4's)")


if __name__ == "__main__":
    FIX.mkdir(parents=True, exist_ok=True)
    tiny("alex", ALEX)
    tiny("vgg", VGG)
    published("alex", "alexnet.safetensors", ALEX)
    published("vgg", "vgg16.safetensors", VGG)
