"""Time the PyTorch reference implementations of foil's networks, at the configurations and
batches of benches/networks.rs (random weights, float32, CPU or CUDA), for scripts/bench.sh.

Pinned versions: torch 2.15.0, torchvision 0.29.2, diffusers 0.31.0, transformers 4.46.3,
guided-diffusion-sdk 1.0.0, lpips 0.1.4 (tools/requirements.txt).

| name | network and call |
|---|---|
| adm_forward | guided-diffusion `create_model` with DiME's flags (tools/convert_adm.py), batch 2, 128 px, one timestep |
| densenet121_grad | torchvision densenet121 (eval), batch 2, 128 px, forward + autograd.grad of the logit sum to the input |
| resnet18_grad | torchvision resnet18 (eval), the same |
| resnet18_grad_tracked | the same, but `backward()` of the logit sum: the weight gradients too (x.grad and every p.grad) |
| kandinsky_unet_step | diffusers UNet2DConditionModel, the published decoder's flags (tools/record_kandinsky.py) at widths 128, 256, 384, 512, latents 2 x 4 x 32 x 32 (null + edited condition of one latent), then the guidance sum |
| movq_decode | diffusers VQModel, the published MoVQ flags at widths 64, 128, 128, 256, decode 2 x 4 x 32 x 32 (force_not_quantize) |
| clip_b32 | transformers CLIPVisionModelWithProjection, ViT-B/32 config, batch 2, 224 px, image_embeds |
| lpips_alex | lpips.LPIPS(net="alex") with random backbone and heads (pretrained=False, pnet_rand=True: nothing downloaded), batch 2, 64 px |

Only with --only (the published DIFFusion networks at full size, as examples/published_step.rs
calls them; docs/published.md):

| name | network and call |
|---|---|
| kandinsky_unet_full | the published decoder UNet (1.25 G parameters), latents 2 x 4 x 64 x 64 (512 px; null + edited condition), the epsilon half |
| movq_encode_full | the published MoVQ, encode 1 x 3 x 512 x 512 |
| movq_decode_full | the published MoVQ, decode 1 x 4 x 64 x 64 (force_not_quantize) |
| clip_bigg | CLIP ViT-bigG/14 vision tower with projection (kandinsky-2-2-prior's image_encoder), 1 x 3 x 224 x 224, image_embeds |

Each network: one warm-up call, then `--repeats` timed calls (default 3); prints one JSON line
per network, {"name", "seconds" (the median), "samples", "threads", "torch", "device"}, on stdout.
`--device cuda` builds every model and input on the GPU (float32, TF32 off, as foil computes)
and synchronises before reading the clock (scripts/gpu-check.sh).

Usage: tools/.venv/bin/python tools/bench_torch.py [--threads 2] [--repeats 3] [--only adm_forward,clip_b32] [--device cpu]
"""
import argparse
import json
import pathlib
import statistics
import sys
import time
import warnings

import torch

# lpips 0.1.4 calls torchvision.alexnet(pretrained=False): deprecated, equivalent to weights=None.
warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

BATCH = 2
GUIDANCE = 4.0


def adm():
    from convert_adm import DIME_FLAGS
    from guided_diffusion.script_util import create_model

    model = create_model(**DIME_FLAGS).eval()
    x = torch.randn(BATCH, 3, 128, 128)
    t = torch.full((BATCH,), 500, dtype=torch.int64)

    def run():
        with torch.no_grad():
            return model(x, t)

    return run


def classifier_grad(model, tracked=False):
    """Forward + gradient of the logit sum to the input; `tracked`: every weight gradient too."""
    model = model.eval()
    x0 = torch.rand(BATCH, 3, 128, 128) * 2 - 1

    def run():
        x = x0.clone().requires_grad_(True)
        if tracked:
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
            return x.grad
        (g,) = torch.autograd.grad(model(x).sum(), x)
        return g

    return run


def densenet():
    import torchvision

    return classifier_grad(torchvision.models.densenet121(weights=None))


def resnet():
    import torchvision

    return classifier_grad(torchvision.models.resnet18(weights=None))


def resnet_tracked():
    import torchvision

    return classifier_grad(torchvision.models.resnet18(weights=None), tracked=True)


def kandinsky_unet(full=False):
    """The decoder UNet on one latent under the null and the edited condition (batch 2). Mid
    size: widths 128-512, latents 32 x 32, then the guidance sum; `full`: the published widths,
    latents 64 x 64 (512 px), the epsilon half, as examples/published_step.rs."""
    from diffusers import UNet2DConditionModel
    from record_kandinsky import UNET_FULL

    cfg = UNET_FULL if full else dict(UNET_FULL, block_out_channels=[128, 256, 384, 512], sample_size=32)
    side = 64 if full else 32
    model = UNet2DConditionModel(**cfg).eval()
    latent = torch.randn(1, 4, side, side)
    latents = torch.cat([latent, latent])
    embeds = torch.randn(BATCH, cfg["encoder_hid_dim"])
    t = torch.full((BATCH,), 501 if full else 500, dtype=torch.int64)

    def run():
        with torch.no_grad():
            out = model(latents, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": embeds}).sample
            if full:
                return out[:, :4]
            uncond, cond = out[:, :4].chunk(2)
            return uncond + GUIDANCE * (cond - uncond)

    return run


def movq():
    from diffusers import VQModel
    from record_kandinsky import MOVQ_FULL

    model = VQModel(**dict(MOVQ_FULL, block_out_channels=[64, 128, 128, 256])).eval()
    latents = torch.randn(BATCH, 4, 32, 32)

    def run():
        with torch.no_grad():
            return model.decode(latents, force_not_quantize=True).sample

    return run


def clip():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    # openai/clip-vit-base-patch32's vision_config; ClipVisionConfig::vit_b32().
    cfg = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        patch_size=32,
        image_size=224,
        projection_dim=512,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    model = CLIPVisionModelWithProjection(cfg).eval()
    pixels = torch.randn(BATCH, 3, 224, 224)

    def run():
        with torch.no_grad():
            return model(pixel_values=pixels).image_embeds

    return run


def lpips_alex():
    import lpips

    model = lpips.LPIPS(pretrained=False, net="alex", pnet_rand=True, verbose=False).eval()
    a = torch.rand(BATCH, 3, 64, 64) * 2 - 1
    b = torch.rand(BATCH, 3, 64, 64) * 2 - 1

    def run():
        with torch.no_grad():
            return model(a, b)

    return run


def movq_full(encode):
    from diffusers import VQModel
    from record_kandinsky import MOVQ_FULL

    model = VQModel(**MOVQ_FULL).eval()
    image = torch.rand(1, 3, 512, 512) * 2 - 1
    latents = torch.randn(1, 4, 64, 64)

    def run():
        with torch.no_grad():
            if encode:
                return model.encode(image).latents
            return model.decode(latents, force_not_quantize=True).sample

    return run


def clip_bigg():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from write_published_full import CLIP_FULL

    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_FULL)).eval()
    pixels = torch.randn(1, 3, 224, 224)

    def run():
        with torch.no_grad():
            return model(pixel_values=pixels).image_embeds

    return run


NETWORKS = {
    "adm_forward": adm,
    "densenet121_grad": densenet,
    "resnet18_grad": resnet,
    "resnet18_grad_tracked": resnet_tracked,
    "kandinsky_unet_step": kandinsky_unet,
    "movq_decode": movq,
    "clip_b32": clip,
    "lpips_alex": lpips_alex,
}

# The published DIFFusion networks at full size, as examples/published_step.rs calls them (its
# `step` and `repeat N` modes; docs/published.md): only by name with --only (minutes each, and
# up to 8 GB of memory), never in the default set.
FULL_NETWORKS = {
    "kandinsky_unet_full": lambda: kandinsky_unet(full=True),
    "movq_encode_full": lambda: movq_full(encode=True),
    "movq_decode_full": lambda: movq_full(encode=False),
    "clip_bigg": clip_bigg,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (foil: rayon's, all cores)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up; the median is reported")
    p.add_argument("--only", default="", help="comma-separated names (default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (models and inputs built there)")
    args = p.parse_args()
    if args.device != "cpu":
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            p.error("--device cuda: this torch sees no CUDA device")
        torch.set_default_device(args.device)
        # foil computes in float32; TF32 matmuls/convolutions would not be the same arithmetic.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    networks = {**NETWORKS, **FULL_NETWORKS}
    names = [n for n in args.only.split(",") if n] or list(NETWORKS)
    unknown = [n for n in names if n not in networks]
    if unknown:
        p.error(f"unknown network(s) {unknown}; expected some of {list(networks)}")

    failed = []
    for name in names:
        # One network failing (an import on another machine's packages, memory) costs only its
        # own row: the others are still timed, and the exit status says so.
        try:
            torch.manual_seed(0)
            run = networks[name]()
            # Set after building: importing the recorders sets one thread.
            torch.set_num_threads(args.threads)
            run()  # warm-up
            sync()
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run()
                sync()
                samples.append(time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001 (reported, then the next network)
            print(f"{name}: failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        line = {
            "name": name,
            "seconds": statistics.median(samples),
            "samples": samples,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": args.device,
        }
        print(json.dumps(line), flush=True)
        del run
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
