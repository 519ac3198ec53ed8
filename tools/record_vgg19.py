"""Record torchvision parity fixtures for foil-models' VGG-19 feature stack and the perceptual
loss of DiME / FastDiME / MaskDiME.

The reference loss is `PerceptualLoss` of clguo/MaskDiME `core/sample_utils.py` (the same class
in guillaumejs2403/DiME and FastDiME): the images x in [-1, 1] are clamped to [-1, 1], mapped to
[0, 1], normalised with ImageNet statistics and passed through `vgg19().features[:layer]`
(layer = 18 in the published scripts: up to and including relu3_4); the loss is
`c * sum_b mean_j (f(x0)_bj - f(x1)_bj)^2` (c = 30 in the published scripts). It is rewritten
below from that description (Normalizer + PerceptualLoss), not imported.

The network is torchvision's own `vgg.make_layers` on VGG-19's configuration "E" with every
width divided by 16 (4, 8, 16, 32, 32 instead of 64, 128, 256, 512, 512), so the module indices
and hence the state-dict names `features.{i}.weight/bias` are exactly torchvision's. Weights are
random with a fixed seed; a tiny `classifier` is saved beside them so the loader's "classifier.*
is ignored" path is exercised.

Writes to crates/foil-models/tests/fixtures/:
- vgg19_tiny.pth: the state dict, saved with torch's legacy (non-zip) serialisation, as
  torchvision's published `vgg19-dcbb9e9d.pth` is;
- vgg19_tiny_io.safetensors:
  `x0`, `x1` [2, 3, 32, 32] in [-1.25, 1.25] (so the clamp matters),
  `features18`, `features36`, `features37`: `features[:L]` of the normalised clamped x0,
  `loss`: [1] the reference PerceptualLoss(layer=18, c=30)(x0, x1),
  `grad_x0`: its gradient with respect to x0,
  `loss37`, `grad37_x0`: the same with layer = 37 (the whole stack).

Usage: tools/.venv/bin/python tools/record_vgg19.py
Pinned: torch 2.15.0, torchvision 0.29.2 (tools/requirements.txt).
"""
import pathlib

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models import vgg as tv_vgg

torch.set_num_threads(1)

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-models/tests/fixtures"
DIVISOR = 16


class Normalizer(nn.Module):
    """Clamp to [-1, 1], map to [0, 1], ImageNet-normalise, run the wrapped network."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mu", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("sigma", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        x = (torch.clamp(x, -1, 1) + 1) / 2
        return self.net((x - self.mu) / self.sigma)


class PerceptualLoss(nn.Module):
    def __init__(self, features, layer, c):
        super().__init__()
        self.c = c
        self.model = Normalizer(nn.Sequential(*list(features.children())[:layer]))

    def forward(self, x0, x1):
        b = x0.size(0)
        per = F.mse_loss(self.model(x0).view(b, -1), self.model(x1).view(b, -1), reduction="none").mean(dim=1)
        return self.c * per.sum()


class TinyVgg19(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = [v if v == "M" else v // DIVISOR for v in tv_vgg.cfgs["E"]]
        self.features = tv_vgg.make_layers(cfg, batch_norm=False)
        # Not VGG's classifier (512 * 7 * 7 inputs): just keys to be ignored by the loader.
        self.classifier = nn.Sequential(nn.Linear(32, 6), nn.ReLU(True), nn.Dropout(), nn.Linear(6, 3))


def main():
    FIX.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    model = TinyVgg19().eval()
    assert len(model.features) == 37, len(model.features)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                # He-like scale so activations stay O(1) through sixteen ReLU layers.
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, FIX / "vgg19_tiny.pth", _use_new_zipfile_serialization=False)

    x0 = torch.rand(2, 3, 32, 32, generator=gen) * 2.5 - 1.25
    x1 = torch.rand(2, 3, 32, 32, generator=gen) * 2.5 - 1.25
    out = {"x0": x0, "x1": x1}
    with torch.no_grad():
        for layer in (18, 36, 37):
            f = Normalizer(nn.Sequential(*list(model.features.children())[:layer]))(x0)
            out[f"features{layer}"] = f
            print(f"features[:{layer}]: {tuple(f.shape)}, |f| max {f.abs().max():.4f}, mean {f.mean():.4f}")
    for layer, suffix in ((18, ""), (37, "37")):
        leaf = x0.clone().requires_grad_(True)
        loss = PerceptualLoss(model.features, layer, 30.0)(leaf, x1)
        loss.backward()
        out[f"loss{suffix}"] = loss.detach().reshape(1)
        out[f"grad{suffix}_x0"] = leaf.grad
        print(f"layer {layer}: loss {loss.item():.6f}, |grad| max {leaf.grad.abs().max():.6f}")
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}, str(FIX / "vgg19_tiny_io.safetensors"))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")


if __name__ == "__main__":
    main()
