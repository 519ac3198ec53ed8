"""Record one-step fixtures of the guided sampler (foil-guide's `Guide::step`) from the authors'
own code: DiME (guillaumejs2403/DiME), FastDiME (ppegiosk/FastDiME_CelebA) and MaskDiME
(clguo/MaskDiME).

Each repository's `core/` package is extracted from a git snapshot and imported as it is, and
the conditioning functions are called from it: `clean_class_cond_fn`, `dist_cond_fn`,
`compute_grad_masks_nested2` (MaskDiME), `generate_mask` (FastDiME), `Normalizer` and
`PerceptualLoss` (torchvision's `vgg19` swapped for the tiny VGG-19 of tools/record_vgg19.py,
since the published weights are not reachable). The loop bodies of `get_DiME_iterative_sampling`,
`get_FastDiME_iterative_sampling` and `get_MaskDiME_sampling_CelebA` are rewritten below line for
line, with the two sources of hidden randomness (`torch.randn_like` for the step noise and
`q_sample`'s own noise for the background) passed in instead, and the mean and variance from
guided-diffusion-sdk's `GaussianDiffusion.p_mean_variance` (the DiME CelebA flags: 500 linear
steps, learn_sigma, respaced to 200).

Networks (all committed fixtures of crates/foil-models): the tiny learned-sigma ADM
(adm_tiny.safetensors, tools/record_adm.py), the tiny small-input ResNet-18 with one logit
(classifiers_resnet_small.safetensors, tools/record_classifiers.py) behind the authors'
`Normalizer` (clamp, [0, 1], ImageNet statistics), and the tiny VGG-19 (vgg19_tiny.pth,
tools/record_vgg19.py) as the perceptual network, `features[:18]`, c = 30.

Settings per method (the published scripts', with small-image masks): tau = 4 (z = q_sample at
index 4, steps 3, 2, 1, 0), L1 0.05, perceptual 30, USE_LOGITS=True;
- DiME: scale 10, gradients divided by sqrt(abar); the gradient image of the later steps is
  given (the inner chain is a plain DDPM loop, tested elsewhere), here the previous x0;
- FastDiME: scale 10, scale_grads=False, warm-up 2, dilation 3, threshold 0.3;
- MaskDiME: scale 8, grad_scale 8, top-k 0.1, x_t_rate 0.5, blur kernel 5, sigma 3, no grads_clip.

Every step starts from the reference's own previous state, so each step is compared alone: the
test feeds step i the recorded outputs of step i + 1 (the sample, MaskDiME's M2, FastDiME's
masked estimate, DiME's previous x0 as its gradient image) and the recorded noise.
Writes crates/foil-guide/tests/fixtures/guide_steps.safetensors (8x8 images, batch 2).

Usage: tools/.venv/bin/python tools/record_guide.py [--mirrors DIR]
  DIR holds the three snapshots as <owner>+<name>/repo git directories (default /work/.mirror,
  where the `fetch` tool puts them); or pass --dime/--fastdime/--maskdime git directories.
"""
import argparse
import importlib
import importlib.util
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import io

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from guided_diffusion.script_util import create_gaussian_diffusion
from guided_diffusion.unet import UNetModel
from guided_diffusion.gaussian_diffusion import _extract_into_tensor

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from record_adm import TINY  # noqa: E402
from record_classifiers import MEAN, STD, tiny_resnet  # noqa: E402
from record_vgg19 import TinyVgg19  # noqa: E402

torch.set_num_threads(1)
MODELS = ROOT / "crates/foil-models/tests/fixtures"
OUT = ROOT / "crates/foil-guide/tests/fixtures"
SIZE, N, TAU = 8, 2, 4


def authors_core(git_dir, name):
    """The repository's `core` package, imported under the name `<name>_core`."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-"))
    tar = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "HEAD", "core"],
                         check=True, capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(tar)).extractall(tmp)
    pkg = f"{name}_core"
    spec = importlib.util.spec_from_file_location(pkg, tmp / "core" / "__init__.py",
                                                  submodule_search_locations=[str(tmp / "core")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[pkg] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{pkg}.sample_utils")


class Query(nn.Module):
    """The classifier's one logit as a vector, like `ClassificationModel.forward`."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[:, 0]


def perceptual(su, vgg):
    """The authors' PerceptualLoss(layer=18, c=30) with the tiny VGG-19 in place of vgg19()."""
    su.vgg19 = lambda pretrained=True: vgg
    loss = su.PerceptualLoss(layer=18, c=30.0)
    loss.eval()
    return loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirrors", default="/work/.mirror")
    ap.add_argument("--dime")
    ap.add_argument("--fastdime")
    ap.add_argument("--maskdime")
    args = ap.parse_args()
    mirrors = pathlib.Path(args.mirrors)
    git = {
        "dime": args.dime or mirrors / "guillaumejs2403+DiME/repo",
        "fastdime": args.fastdime or mirrors / "ppegiosk+FastDiME_CelebA/repo",
        "maskdime": args.maskdime or mirrors / "clguo+MaskDiME/repo",
    }
    su = {k: authors_core(v, k) for k, v in git.items()}

    diffusion = create_gaussian_diffusion(steps=500, learn_sigma=True, noise_schedule="linear",
                                          timestep_respacing="200")
    adm = UNetModel(**TINY).eval()
    adm.load_state_dict({k: v.float() for k, v in load_file(str(MODELS / "adm_tiny.safetensors")).items()})
    resnet = tiny_resnet(4, 1, small_input=True).eval()
    resnet.load_state_dict(load_file(str(MODELS / "classifiers_resnet_small.safetensors")))
    vgg = TinyVgg19().eval()
    vgg.load_state_dict(torch.load(str(MODELS / "vgg19_tiny.pth")))
    for p in list(adm.parameters()) + list(resnet.parameters()) + list(vgg.parameters()):
        p.requires_grad_(False)

    gen = torch.Generator().manual_seed(0)
    randn = lambda: torch.randn(N, 3, SIZE, SIZE, generator=gen)  # noqa: E731
    x = torch.rand(N, 3, SIZE, SIZE, generator=gen) * 1.6 - 0.8
    # Saturated pixels, as real images have: torch.clamp's gradient is 0 exactly at -1 and 1.
    x[:, :, 0, :] = -1.0
    x[0, :, -1, :3] = 1.0
    out = {"x": x}
    shape = x.shape

    def record(method, classifier, z0):
        with torch.no_grad():
            pred = (classifier(x) > 0).long().view(-1)
        target = 1 - pred
        out[f"{method}.target"] = target.float()
        out[f"{method}.z_start"] = z0
        z_t, x_t, m2_prev = z0, x.clone(), None
        for jdx, i in enumerate(range(TAU)[::-1]):
            t = torch.tensor([i] * N)
            sample_noise, bg_noise = randn(), randn()
            pre = f"{method}.{i}"
            out[f"{pre}.sample_noise"], out[f"{pre}.background_noise"] = sample_noise, bg_noise
            with torch.no_grad():
                p = diffusion.p_mean_variance(adm, z_t, t, clip_denoised=True, model_kwargs={})
            alpha_t = _extract_into_tensor(diffusion.sqrt_alphas_cumprod, t, shape)
            nonzero = (t != 0).float().view(-1, 1, 1, 1)
            s = su[method]
            if method == "maskdime":
                pred_xstart = p["pred_xstart"].detach()
                if m2_prev is not None:
                    x_t = m2_prev * pred_xstart + (1 - m2_prev) * x
                else:
                    x_t = x_t
                g_class = s.clean_class_cond_fn(x_t=x_t, y=target, classifier=classifier, s=8.0,
                                                use_logits=True) / alpha_t
                m1, m2 = s.compute_grad_masks_nested2(g_class, topk_ratio1=0.1, topk_ratio2=0.5,
                                                      blur_kernel=5, blur_sigma=3, per_channel=False)
                g_dist = s.dist_cond_fn(z_t=z_t, x_tau=x, x_t=x_t, alpha_t=alpha_t, l1_loss=0.05,
                                        l2_loss=0.0, l_perc=perceptual(s, vgg))
                grads = 8.0 * (g_class + g_dist)
                mean = p["mean"] - p["variance"] * grads
                z_original = diffusion.q_sample(x, t, noise=bg_noise)
                z_next = mean * m1 + z_original * (1 - m1)
                out[f"{pre}.out.m1"], out[f"{pre}.out.m2"] = m1, m2
                guided_at, m2_prev = x_t, m2
            else:
                if method == "dime":
                    g_class = s.clean_class_cond_fn(x_t=x_t, y=target, classifier=classifier, s=10.0,
                                                    use_logits=True) / alpha_t
                    g_dist = s.dist_cond_fn(z_t=z_t, x_tau=x, x_t=x_t, alpha_t=alpha_t, l1_loss=0.05,
                                            l2_loss=0.0, l_perc=perceptual(s, vgg))
                else:
                    g_class = s.clean_class_cond_fn(x_t=x_t, y=target, classifier=classifier, s=10.0,
                                                    use_logits=True)
                    g_dist = s.dist_cond_fn(z_t=z_t, x_tau=x, x_t=x_t, alpha_t=alpha_t, l1_loss=0.05,
                                            l2_loss=0.0, l_perc=perceptual(s, vgg), scale_grads=False)
                mean = p["mean"].float() - p["variance"] * (g_class + g_dist)
                z_next = mean + nonzero * torch.exp(0.5 * p["log_variance"]) * sample_noise
                guided_at = x_t
                x_t = p["pred_xstart"]
                if method == "fastdime" and jdx >= 2:
                    _, dil_mask = s.generate_mask(x, x_t, 3)
                    boolmask = (dil_mask < 0.3).float()
                    x_t = x_t * (1 - boolmask) + boolmask * x
                    z_next = z_next * (1 - boolmask) + boolmask * diffusion.q_sample(x, t, noise=bg_noise)
                    out[f"{pre}.out.mask"] = 1 - boolmask
            out[f"{pre}.out.z"] = z_next
            out[f"{pre}.out.x0"] = p["pred_xstart"]
            out[f"{pre}.out.guided_at"] = guided_at
            out[f"{pre}.out.grad_class"] = g_class
            out[f"{pre}.out.grad_dist"] = g_dist
            if method == "fastdime":
                out[f"{pre}.out.next_guide_at"] = x_t
            print(f"{method} step {i}: |z| {z_next.abs().max():.4f}, |g_class| {g_class.abs().max():.4e}, "
                  f"|g_dist| {g_dist.abs().max():.4e}")
            z_t = z_next

    for method in ("dime", "fastdime", "maskdime"):
        # One logit per image, shape [N], as DiME's `ClassificationModel` returns
        # `x[:, query_label]` (a [N, 1] output would broadcast against the targets in
        # `clean_class_cond_fn`). Like that model it has no clamp: the ImageNet statistics
        # only, as foil's ResNet applies them.
        normalizer = Query(lambda v: resnet(((v + 1) / 2 - MEAN) / STD))
        z0 = diffusion.q_sample(x, torch.tensor([TAU] * N), noise=randn())
        record(method, normalizer, z0)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float32).clone().contiguous() for k, v in out.items()},
              str(OUT / "guide_steps.safetensors"))
    print(f"torch {torch.__version__}; wrote {len(out)} tensors")


if __name__ == "__main__":
    main()
