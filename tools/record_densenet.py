"""Record torchvision parity fixtures for foil-models' DenseNet (`foil_models::densenet`).

Builds, with torchvision's own class and a fixed seed, a tiny DenseNet-BC:
`torchvision.models.DenseNet(growth_rate=4, block_config=(1, 2), num_init_features=8,
bn_size=2, num_classes=3)` (foil's `DenseNetConfig::tiny()`), in eval mode with randomised
convolution / linear weights, BatchNorm affine parameters AND running statistics (so the
eval-mode BatchNorm is really exercised). The model sees images x in [-1, 1] mapped to ImageNet
normalisation, ((x + 1) / 2 - mean) / std, exactly as foil's classifiers do.

Writes to crates/foil-models/tests/fixtures/:
- densenet_tiny.safetensors: the state dict under torchvision's current names
  (`features.denseblock1.denselayer1.norm1.weight`, ...; float32, the int64
  `num_batches_tracked` buffers cast to float32, which foil ignores by name);
- densenet_tiny_legacy.pth: the same weights under the dotted names of torchvision's published
  checkpoints (`...denselayer1.norm.1.weight`, `conv.2`, ...: the spelling that torchvision's
  `densenet._load_state_dict` renames with a regex), without `num_batches_tracked`, saved with
  torch's legacy (non-zip) serialisation, as `densenet121-a639ec97.pth` is;
- densenet_tiny_io.safetensors: `input` [2, 3, 32, 32] and `input_odd` [2, 3, 41, 35] in
  [-1, 1] (odd sizes: the transitions' 2x2 average pooling floors), `output` / `output_odd`
  their logits [2, 3], and `features` [2, 14]: the pooled features of `input` (relu of
  `features`, global average) that feed the classifier;
- densenet_params.json: the parameter counts of torchvision's `densenet121()`, `densenet161()`,
  `densenet169()` and `densenet201()` (1000 classes).

Usage: tools/.venv/bin/python tools/record_densenet.py
Pinned: torch 2.15.0, torchvision 0.29.2 (tools/requirements.txt).
"""
import json
import pathlib
import re

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torch_fixtures import MEAN, STD, randomise
from torch import nn

torch.set_num_threads(1)


ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-models/tests/fixtures"
# The inverse of torchvision's rename in `densenet._load_state_dict`.
NEW_NAME = re.compile(r"^(.*denselayer\d+\.)(norm|relu|conv)([12])\.(weight|bias|running_mean|running_var)$")


def legacy_name(key):
    m = NEW_NAME.match(key)
    return f"{m.group(1)}{m.group(2)}.{m.group(3)}.{m.group(4)}" if m else key


def main():
    FIX.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(
        growth_rate=4, block_config=(1, 2), num_init_features=8, bn_size=2, num_classes=3
    )
    model = randomise(model, gen).eval()

    xgen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=xgen) * 2 - 1
    x_odd = torch.rand(2, 3, 41, 35, generator=xgen) * 2 - 1
    with torch.no_grad():
        y = model(((x + 1) / 2 - MEAN) / STD)
        y_odd = model(((x_odd + 1) / 2 - MEAN) / STD)
        feats = F.adaptive_avg_pool2d(F.relu(model.features(((x + 1) / 2 - MEAN) / STD)), 1).flatten(1)

    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(FIX / "densenet_tiny.safetensors"))
    legacy = {
        legacy_name(k): v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert sum(k != legacy_name(k) for k in state) > 0
    assert any(".norm.1." in k for k in legacy) and any(".conv.2." in k for k in legacy)
    torch.save(legacy, FIX / "densenet_tiny_legacy.pth", _use_new_zipfile_serialization=False)
    save_file(
        {
            "input": x.contiguous(),
            "output": y.contiguous(),
            "input_odd": x_odd.contiguous(),
            "output_odd": y_odd.contiguous(),
            "features": feats.contiguous(),
        },
        str(FIX / "densenet_tiny_io.safetensors"),
    )
    n = sum(p.numel() for p in model.parameters())
    print(f"densenet tiny: {n} params, features {tuple(feats.shape)}, output {tuple(y.shape)}, "
          f"|y| max {y.abs().max():.4f}, |y_odd| max {y_odd.abs().max():.4f}")

    counts = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    for name in ["densenet121", "densenet161", "densenet169", "densenet201"]:
        counts[name] = sum(p.numel() for p in getattr(torchvision.models, name)().parameters())
    # The numbers torchvision publishes in its weight metadata.
    assert counts["densenet121"] == 7_978_856, counts
    assert counts["densenet161"] == 28_681_000, counts
    assert counts["densenet169"] == 14_149_480, counts
    assert counts["densenet201"] == 20_013_928, counts
    (FIX / "densenet_params.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(counts)


if __name__ == "__main__":
    main()
