"""Record torchvision parity fixtures for foil-models' image classifiers.

Builds, with torchvision's own classes and a fixed seed, tiny random variants of
- ResNet-18 (torchvision.models.resnet.ResNet with BasicBlock [2, 2, 2, 2], its layers rebuilt by
  torchvision's own `_make_layer` at base width 4 instead of 64), once with the published stem and
  once with foil's small-input stem (3x3 stride-1 conv1, no max-pool: NOT a torchvision option,
  patched in here as `conv1 = Conv2d(3, w, 3, 1, 1)`, `maxpool = Identity()`),
- MobileNet-V2 (torchvision.models.mobilenet_v2(width_mult=0.1)),
- EfficientNet-B0's structure at width_mult 0.1, depth_mult 0.5
  (torchvision.models.efficientnet._efficientnet_conf + EfficientNet),
in eval mode with randomised BatchNorm affine parameters AND running statistics (so the eval-mode
BatchNorm is really exercised). Each model sees images x in [-1, 1] mapped to ImageNet
normalisation, ((x + 1) / 2 - mean) / std, exactly as foil's classifiers do.

Writes to crates/foil-models/tests/fixtures/:
- classifiers_<net>.safetensors: the state dict under torchvision's names (float32; the int64
  `num_batches_tracked` buffers are cast to float32 because foil's TensorFile reads float tensors
  only; foil ignores them by name);
- classifiers_<net>_io.safetensors: `input` [2, 3, 32, 32] in [-1, 1] and `output` logits;
- classifiers_params.json: parameter counts of the full published configurations, counted from
  torchvision's models (resnet18, mobilenet_v2, efficientnet_b0 with 1000 classes).

Usage: tools/.venv/bin/python tools/record_classifiers.py
Pinned: torch 2.15.0, torchvision 0.29.2 (tools/requirements.txt).
"""
import json
import pathlib

import torch
import torchvision
from safetensors.torch import save_file
from torch_fixtures import MEAN, STD, randomise
from torch import nn
from torchvision.models import efficientnet as tv_eff
from torchvision.models import resnet as tv_resnet

torch.set_num_threads(1)


ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-models/tests/fixtures"


def tiny_resnet(width, outputs, small_input):
    m = tv_resnet.ResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=outputs)
    # torchvision has no width knob for BasicBlock: rebuild the layers with its own _make_layer.
    m.inplanes = width
    if small_input:
        m.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
    else:
        m.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.layer1 = m._make_layer(tv_resnet.BasicBlock, width, 2)
    m.layer2 = m._make_layer(tv_resnet.BasicBlock, 2 * width, 2, stride=2)
    m.layer3 = m._make_layer(tv_resnet.BasicBlock, 4 * width, 2, stride=2)
    m.layer4 = m._make_layer(tv_resnet.BasicBlock, 8 * width, 2, stride=2)
    m.fc = nn.Linear(8 * width, outputs)
    return m


def tiny_efficientnet(width_mult, depth_mult, outputs):
    setting, last = tv_eff._efficientnet_conf("efficientnet_b0", width_mult=width_mult, depth_mult=depth_mult)
    return tv_eff.EfficientNet(setting, 0.2, last_channel=last, num_classes=outputs)


def record(name, model):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    with torch.no_grad():
        y = model(((x + 1) / 2 - MEAN) / STD)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(FIX / f"classifiers_{name}.safetensors"))
    save_file({"input": x.contiguous(), "output": y.contiguous()}, str(FIX / f"classifiers_{name}_io.safetensors"))
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} params, output {tuple(y.shape)}, |y| max {y.abs().max():.4f}")


def main():
    FIX.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    record("resnet", randomise(tiny_resnet(4, 3, small_input=False), gen).eval())
    record("resnet_small", randomise(tiny_resnet(4, 1, small_input=True), gen).eval())
    record("mobilenet", randomise(torchvision.models.mobilenet_v2(width_mult=0.1, num_classes=3), gen).eval())
    record("efficientnet", randomise(tiny_efficientnet(0.1, 0.5, 3), gen).eval())

    counts = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "resnet18": sum(p.numel() for p in torchvision.models.resnet18().parameters()),
        "mobilenet_v2": sum(p.numel() for p in torchvision.models.mobilenet_v2().parameters()),
        "efficientnet_b0": sum(p.numel() for p in torchvision.models.efficientnet_b0().parameters()),
    }
    # The numbers torchvision publishes in its weight metadata.
    assert counts["resnet18"] == 11_689_512, counts
    assert counts["mobilenet_v2"] == 3_504_872, counts
    assert counts["efficientnet_b0"] == 5_288_548, counts
    (FIX / "classifiers_params.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(counts)


if __name__ == "__main__":
    main()
