"""Write FULL-SIZE random-weight files of MaskDiME's published networks (not committed), in the
authors' exact layouts, for the load-memory and step-time check of examples/maskdime_step.rs:

- OUTDIR/ddpm-celeba.pt: DiME's unconditional CelebA 128 px DDPM, guided-diffusion-sdk's
  `create_model(**FULL_FLAGS)` with the flags of DiME's README / test.sh (tools/record_adm.py's
  FULL_FLAGS, `AdmConfig::dime_celeba128()`), `torch.save(model.state_dict(), ...)`: a plain state
  dict (105,198,598 parameters, the count of
  crates/foil-models/tests/fixtures/adm_dime_celeba128_keys.json, checked here together with
  every name and shape). With `--module`, also OUTDIR/ddpm-celeba-module.pt: the same weights
  with every name prefixed `module.` (the DataParallel form).
- OUTDIR/classifier.pth: DiME's CelebA classifier, built by the authors' own
  `core/classifier/densenet.py` (imported by tools/record_dime_classifier.py's `import_authors`
  from the DiME mirror, here WITHOUT its tiny patch: torchvision's full `densenet121`), randomised
  by `torch_fixtures.randomise` as the tiny fixture is, saved as the authors' training code saves
  it: `torch.save({'feat_extract': DenseNet121().state_dict(), 'classifier':
  Linear(1024, 40).state_dict()})`; then loaded back by the authors' `ClassificationModel(path, 31)`
  as a check. `DimeClassifierConfig::celeba(31)` / `OracleSource::dime_celeba(file, 31)` load it.
- OUTDIR/vgg19.pth: `torchvision.models.vgg19()` (random, torchvision's init),
  `torch.save(model.state_dict(), ...)`, the layout of torchvision's `vgg19-dcbb9e9d.pth`
  (`features.{i}.weight`, `classifier.{0,3,6}.*`).

Prints each network's parameter count and float32 bytes, and the bytes of the part the MaskDiME
perceptual loss loads (`vgg19().features[:18]`). One network is built, saved and freed at a time.

Where the DiME mirror is not at hand (a GPU machine that reaches nothing: scripts/gpu-check.sh),
`--without-authors` builds the classifier file from torchvision's `densenet121` with its
`classifier` replaced by a parameterless module, which is all the authors' `DenseNet121` is: the
same names and shapes (checked against the authors' module whenever the mirror is there), but
not loaded back by their `ClassificationModel`.

Usage: tools/.venv/bin/python tools/write_dime_full.py OUTDIR [--module] [--seed N] [--without-authors]
Pinned: torch 2.15.0, torchvision 0.29.2, guided-diffusion-sdk 1.0.0 (tools/requirements.txt).
"""
import argparse
import gc
import json
import pathlib
import sys
import tempfile
import time

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from record_adm import FULL_FLAGS  # noqa: E402
from record_dime_classifier import import_authors  # noqa: E402
from torch_fixtures import randomise  # noqa: E402

from guided_diffusion.script_util import create_model  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEYS = ROOT / "crates/foil-models/tests/fixtures/adm_dime_celeba128_keys.json"
# torchvision's vgg19().features: the modules the perceptual loss keeps (DiME's `--l_perc_layer`).
PERCEPTUAL_LAYERS = 18


def count(params):
    return sum(p.numel() for p in params)


def report(name, n, path=None):
    size = f"; {path.name}: {path.stat().st_size:,} bytes on disk" if path else ""
    print(f"{name}: {n:,} parameters, {4 * n:,} bytes in float32 ({4 * n / 1e6:.1f} MB){size}",
          flush=True)


def write_ddpm(out, seed, module):
    t0 = time.time()
    torch.manual_seed(seed)
    model = create_model(**FULL_FLAGS).eval()
    expected = json.loads(KEYS.read_text())
    shapes = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert shapes == expected["tensors"], "names or shapes differ from adm_dime_celeba128_keys.json"
    n = count(model.parameters())
    assert n == expected["num_params"], (n, expected["num_params"])
    # Every weight random (the zero_module output convolutions included), as record_adm.py's
    # --full-random does, so the step computes on non-zero values.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in pname or "layers.0" in pname or pname.startswith("out.0")):
                p.copy_((1.0 if pname.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn_like(p) / fan_in**0.5)
    path = out / "ddpm-celeba.pt"
    state = model.state_dict()
    torch.save(state, path)
    report("DiME CelebA 128 px DDPM (guided-diffusion UNetModel)", n, path)
    if module:
        mpath = out / "ddpm-celeba-module.pt"
        torch.save({"module." + k: v for k, v in state.items()}, mpath)
        print(f"  {mpath.name}: {mpath.stat().st_size:,} bytes (names prefixed module.)", flush=True)
    print(f"  built and saved in {time.time() - t0:.0f} s", flush=True)
    del model, state
    gc.collect()
    return n


class StandInDenseNet121(nn.Module):
    """The parameters of the authors' `DenseNet121` without their module: torchvision's
    densenet121 under `feat_extract`, its classifier replaced by one with no parameters."""

    def __init__(self):
        super().__init__()
        self.feat_extract = torchvision.models.densenet121()
        self.feat_extract.classifier = nn.Identity()
        self.output_size = 1024


def layout(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def save_classifier(features, out, seed):
    """Randomises `features()` (a `DenseNet121` of the authors' or the stand-in) and a
    Linear(1024, 40) head as the tiny fixture is, saves them as the authors' training code does
    (`{'feat_extract': ..., 'classifier': ...}`); returns the file and the parameter count."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    feat_extract = randomise(features(), gen)
    assert feat_extract.output_size == 1024
    classifier = randomise(nn.Linear(feat_extract.output_size, 40), gen)
    path = out / "classifier.pth"
    torch.save({"feat_extract": feat_extract.state_dict(), "classifier": classifier.state_dict()}, path)
    return path, count(feat_extract.parameters()) + count(classifier.parameters())


def write_classifier_without_authors(out, seed):
    t0 = time.time()
    path, n = save_classifier(StandInDenseNet121, out, seed)
    report("DiME CelebA classifier, stand-in for the authors' module (DenseNet-121 features + "
           "Linear(1024, 40))", n, path)
    print(f"  not loaded back by the authors' code (--without-authors); {time.time() - t0:.0f} s",
          flush=True)
    return n


def write_classifier(out, seed):
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        authors = import_authors(tmp)
        features = authors.DenseNet121()
        assert layout(features) == layout(StandInDenseNet121()), \
            "--without-authors's stand-in no longer matches the authors' DenseNet121"
        assert isinstance(features.feat_extract.classifier, authors.Identity)
        path, n = save_classifier(authors.DenseNet121, out, seed)
        # The authors' explaining side loads it (DiME's main.py: ClassificationModel(path, 31)).
        model = authors.ClassificationModel(str(path), 31).eval()
        assert count(model.parameters()) == n
        with torch.no_grad():
            y = model(torch.rand(1, 3, 128, 128) * 2 - 1)
        assert y.shape == (1,) and torch.isfinite(y).all()
    report("DiME CelebA classifier (DenseNet-121 features + Linear(1024, 40))", n, path)
    print(f"  loaded back by the authors' ClassificationModel(path, 31); logit {y.item():.4f}; "
          f"{time.time() - t0:.0f} s", flush=True)
    return n


def write_vgg19(out, seed):
    t0 = time.time()
    torch.manual_seed(seed)
    model = torchvision.models.vgg19().eval()
    path = out / "vgg19.pth"
    torch.save(model.state_dict(), path)
    n = count(model.parameters())
    kept = count(model.features[:PERCEPTUAL_LAYERS].parameters())
    report("torchvision vgg19 (whole file)", n, path)
    report(f"  of which features[:{PERCEPTUAL_LAYERS}] (what the perceptual loss loads)", kept)
    print(f"  {time.time() - t0:.0f} s", flush=True)
    del model
    gc.collect()
    return n, kept


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=pathlib.Path)
    parser.add_argument("--module", action="store_true",
                        help="also write ddpm-celeba-module.pt (names prefixed module.)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--without-authors", action="store_true",
                        help="classifier.pth from a stand-in with the authors' names and shapes "
                        "(no DiME mirror needed)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.outdir.mkdir(parents=True, exist_ok=True)
    ddpm = write_ddpm(args.outdir, args.seed, args.module)
    write = write_classifier_without_authors if args.without_authors else write_classifier
    clf = write(args.outdir, args.seed + 1)
    vgg, kept = write_vgg19(args.outdir, args.seed + 2)
    loaded = ddpm + clf + kept
    report("MaskDiME's loaded networks (DDPM + classifier + VGG-19 features[:18])", loaded)
    report("all three files' parameters", ddpm + clf + vgg)


if __name__ == "__main__":
    main()
