"""Record parity fixtures for foil-models' DiME CelebA classifier (`foil_models::dime_classifier`).

The reference is the authors' own class: `core/classifier/densenet.py` (`DenseNet121`,
`ClassificationModel`) is read with `git show` from the DiME mirror
(/work/.mirror/guillaumejs2403+DiME/repo, or $DIME_REPO), written to a temporary package and
imported. MaskDiME and FastDiME ship the same file byte for byte (checked when their mirrors are
present).

The authors' `DenseNet121` hard-codes `torchvision.models.densenet121(pretrained=False)` and
`output_size = 1024`, so for a tiny fixture two things are substituted, nothing else:
`torchvision.models.densenet121` (as the module sees it) returns a tiny
`torchvision.models.DenseNet(growth_rate=4, block_config=(1, 2), num_init_features=8,
bn_size=2)` (foil's `DenseNetConfig::tiny()` widths), and `output_size` is set to its 14
features after the authors' `__init__` ran. The authors' code then replaces the torchvision
classifier with `Identity`, puts its own `Linear(output_size, 40)` head on top, loads the
checkpoint (`torch.load(path)` then `state_dict['feat_extract']`, `state_dict['classifier']`)
and returns `x[:, query_label]`, the raw logit.

Weights are random (moderate scale), with random BatchNorm affine parameters and running
statistics, in eval mode. Inputs are images in [-1, 1], fed to the model unchanged, as DiME's
`main.py` does (its CelebA dataset ends with `Normalize([0.5] * 3, [0.5] * 3)`; no ImageNet
statistics).

Writes to crates/foil-models/tests/fixtures/:
- dime_classifier_tiny.pth: the authors' checkpoint layout, `torch.save({'feat_extract':
  DenseNet121().state_dict(), 'classifier': Linear.state_dict()})` (names
  `feat_extract.features.conv0.weight`, ..., `weight`, `bias` inside the two dicts; the
  `num_batches_tracked` buffers included), from which `ClassificationModel` is built;
- dime_classifier_tiny_module.pth: the same weights as one flat state dict of
  `DataParallel(ClassificationModel)`: every name prefixed `module.`
  (`module.feat_extract.feat_extract.features.conv0.weight`, `module.classifier.weight`);
- dime_classifier_tiny.safetensors: the same weights as the flat `ClassificationModel.state_dict()`
  without prefix (`feat_extract.feat_extract.features.conv0.weight`, `classifier.weight`;
  float32, `num_batches_tracked` cast), as a conversion to safetensors would hold them;
- dime_classifier_tiny_io.safetensors: `input` [2, 3, 32, 32] and `input_odd` [2, 3, 41, 35] in
  [-1, 1]; `logits_31`, `logits_5` [2]: `ClassificationModel(path, 31)(input)` and
  `ClassificationModel(path, 5)(input)`; `logits_31_odd` [2] for `input_odd`; `all_logits`
  [2, 40]: the second output of `forward(input, get_other_attrs=True)`.

Usage: tools/.venv/bin/python tools/record_dime_classifier.py
Pinned: torch 2.15.0, torchvision 0.29.2 (tools/requirements.txt).
"""
import importlib
import os
import pathlib
import subprocess
import sys
import tempfile

import torch
import torchvision
from safetensors.torch import save_file
from torch_fixtures import randomise
from torch import nn

torch.set_num_threads(1)

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-models/tests/fixtures"
MIRRORS = pathlib.Path("/work/.mirror")
DIME = pathlib.Path(os.environ.get("DIME_REPO", MIRRORS / "guillaumejs2403+DiME/repo"))
SOURCE = "core/classifier/densenet.py"
TINY = dict(growth_rate=4, block_config=(1, 2), num_init_features=8, bn_size=2)
TINY_FEATURES = 14


def git_show(repo, path):
    return subprocess.run(
        ["git", "--git-dir", str(repo), "show", f"HEAD:{path}"],
        check=True, capture_output=True, text=True,
    ).stdout


def import_authors(tmp):
    """The authors' `core/classifier/densenet.py`, imported from a temporary package."""
    src = git_show(DIME, SOURCE)
    for other in ["clguo+MaskDiME", "ppegiosk+FastDiME_CelebA"]:
        repo = MIRRORS / other / "repo"
        if repo.exists():
            assert git_show(repo, SOURCE) == src, f"{other} differs from DiME's {SOURCE}"
            print(f"{other}: {SOURCE} identical to DiME's")
    pkg = pathlib.Path(tmp) / "dime_authors"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "densenet.py").write_text(src)
    sys.path.insert(0, tmp)
    return importlib.import_module("dime_authors.densenet")


def tiny_densenet121(**kwargs):
    """Stands in for `torchvision.models.densenet121(pretrained=False)` in the authors' module."""
    assert kwargs == {"pretrained": False}, kwargs
    return torchvision.models.DenseNet(**TINY)


def patch_tiny(authors):
    """Only the two hard-coded sizes of the authors' `DenseNet121` change."""
    class TinyModels:
        densenet121 = staticmethod(tiny_densenet121)

    class TinyTorchvision:
        models = TinyModels

    authors.torchvision = TinyTorchvision
    original_init = authors.DenseNet121.__init__

    def init(self):
        original_init(self)
        assert self.output_size == 1024
        self.output_size = TINY_FEATURES

    authors.DenseNet121.__init__ = init


def main():
    FIX.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        authors = import_authors(tmp)
        patch_tiny(authors)

        # The training side: the authors' feature extractor and a 40-attribute head.
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        feat_extract = randomise(authors.DenseNet121(), gen)
        assert isinstance(feat_extract.feat_extract.classifier, authors.Identity)
        classifier = randomise(nn.Linear(feat_extract.output_size, 40), gen)
        ckpt = FIX / "dime_classifier_tiny.pth"
        torch.save({"feat_extract": feat_extract.state_dict(), "classifier": classifier.state_dict()}, ckpt)
        assert not any(k.startswith("feat_extract.classifier") for k in feat_extract.state_dict())

        # The explaining side: the authors' class, loading that file as DiME's main.py does.
        model_31 = authors.ClassificationModel(str(ckpt), 31).eval()
        model_5 = authors.ClassificationModel(str(ckpt), 5).eval()
        model_last = authors.ClassificationModel(str(ckpt), -1).eval()

        flat = nn.DataParallel(model_31).state_dict()
        assert "module.feat_extract.feat_extract.features.conv0.weight" in flat
        assert "module.classifier.weight" in flat
        torch.save(flat, FIX / "dime_classifier_tiny_module.pth")
        save_file(
            {k: v.detach().to(torch.float32).contiguous() for k, v in model_31.state_dict().items()},
            str(FIX / "dime_classifier_tiny.safetensors"),
        )

        xgen = torch.Generator().manual_seed(1)
        x = torch.rand(2, 3, 32, 32, generator=xgen) * 2 - 1
        x_odd = torch.rand(2, 3, 41, 35, generator=xgen) * 2 - 1
        with torch.no_grad():
            y31, all_logits = model_31(x, get_other_attrs=True)
            y5 = model_5(x)
            y31_odd = model_31(x_odd)
            y_last = model_last(x)
        assert y31.shape == (2,) and all_logits.shape == (2, 40)
        assert torch.equal(y31, all_logits[:, 31]) and torch.equal(y5, all_logits[:, 5])
        # The authors' default `--query_label -1` is Python indexing: the last attribute, 39.
        assert torch.equal(y_last, all_logits[:, 39])

        save_file(
            {
                "input": x.contiguous(),
                "input_odd": x_odd.contiguous(),
                "logits_31": y31.contiguous(),
                "logits_5": y5.contiguous(),
                "logits_31_odd": y31_odd.contiguous(),
                "all_logits": all_logits.contiguous(),
            },
            str(FIX / "dime_classifier_tiny_io.safetensors"),
            metadata={"torch": torch.__version__, "torchvision": torchvision.__version__},
        )
        n = sum(p.numel() for p in model_31.parameters())
        print(f"dime classifier tiny: {n} params; logits_31 {y31.tolist()}, logits_5 {y5.tolist()}, "
              f"|all| max {all_logits.abs().max():.4f}")

    # The full-size authors' model: densenet121 without its classifier, plus the 40-way head.
    full = sum(p.numel() for p in torchvision.models.densenet121().features.parameters()) + 1024 * 40 + 40
    print(f"full-size ClassificationModel parameters: {full}")


if __name__ == "__main__":
    main()
