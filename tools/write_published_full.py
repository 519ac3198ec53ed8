"""Write FULL-SIZE random-weight folders in the publishers' layouts (not committed): the
Kandinsky 2.2 decoder (kandinsky-community/kandinsky-2-2-decoder: model_index.json, scheduler/,
unet/, movq/) and the prior's image encoder and processor (kandinsky-community/kandinsky-2-2-prior:
image_encoder/, image_processor/), float32 safetensors, the same layouts as
tools/write_published_tiny.py at the published sizes.

Pinned versions: torch 2.15.0, diffusers 0.31.0, transformers 4.46.3 (tools/requirements.txt).

Usage: tools/.venv/bin/python tools/write_published_full.py OUTDIR [--parts P,P,...] [--dry-run]
                                                             [--max-shard-size SIZE]
  --parts      any of model_index, scheduler, movq, unet, image_processor, image_encoder
               (default: all). `--parts model_index,scheduler,movq,image_processor` is a quick
               (about 10 s) check of the script.
  --dry-run    build every network on the meta device (nothing allocated, nothing written) and
               print its parameter count and float32 bytes.
  --max-shard-size  passed to save_pretrained (default 20GB: one weight file per network, as the
               tiny folders; transformers' own default, 5GB, splits the encoder in two shards).

Sizes (float32; the counts of crates/foil-models/tests/fixtures/kandinsky_params.json and
clip_params.json): UNet 1,253,057,288 parameters (5.01 GB), MoVQ 67,832,495 (0.27 GB, the
16384 x 4 codebook included), CLIP ViT-bigG/14 vision with projection 1,844,907,264 (7.38 GB):
about 12.7 GB of disk. Memory-frugal: one network is built (the libraries' own random init), saved, deleted and
garbage-collected at a time; the measured peak is 8.0 GB resident (the encoder). The whole run
took 57 s on 2 CPU cores (UNet: built 8 s, saved 8 s; encoder: built 20 s, saved 13 s); the
written weight files' tensor names were checked against the libraries' state dicts.
"""
import argparse
import gc
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from record_kandinsky import MOVQ_FULL, UNET_FULL  # noqa: E402
from write_published_tiny import PROCESSOR, SCHEDULER  # noqa: E402

from diffusers import DDPMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel  # noqa: E402
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402

torch.set_num_threads(2)

# laion/CLIP-ViT-bigG-14-laion2B-39B-b160k's vision tower = kandinsky-2-2-prior/image_encoder.
CLIP_FULL = dict(hidden_size=1664, num_hidden_layers=48, num_attention_heads=16, intermediate_size=8192,
                 patch_size=14, image_size=224, projection_dim=1280, hidden_act="gelu", layer_norm_eps=1e-5)
PROCESSOR_FULL = dict(PROCESSOR, size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
PARTS = ["model_index", "scheduler", "movq", "unet", "image_processor", "image_encoder"]
BUILDERS = {
    "unet": lambda: UNet2DConditionModel(**UNET_FULL),
    "movq": lambda: VQModel(**MOVQ_FULL),
    "image_encoder": lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_FULL)),
}
FOLDERS = {"unet": "kandinsky-2-2-decoder/unet", "movq": "kandinsky-2-2-decoder/movq",
           "image_encoder": "kandinsky-2-2-prior/image_encoder"}


def report(name, model):
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n:,} parameters, {4 * n:,} bytes in float32 ({4 * n / 2**30:.2f} GiB)", flush=True)


def write_network(name, out, max_shard_size):
    t0 = time.time()
    model = BUILDERS[name]().eval()
    report(name, model)
    t1 = time.time()
    model.save_pretrained(out / FOLDERS[name], max_shard_size=max_shard_size, safe_serialization=True)
    t2 = time.time()
    del model
    gc.collect()
    size = sum(p.stat().st_size for p in (out / FOLDERS[name]).iterdir())
    print(f"  {FOLDERS[name]}: {size:,} bytes; built in {t1 - t0:.0f} s, saved in {t2 - t1:.0f} s", flush=True)


def write_model_index(out):
    # KandinskyV22Pipeline's own model_index.json: the modules' classes only, so the networks can
    # live on the meta device (nothing allocated) for this.
    with torch.device("meta"):
        unet, movq = UNet2DConditionModel(**UNET_FULL), VQModel(**MOVQ_FULL)
    pipe = KandinskyV22Pipeline(unet=unet, scheduler=DDPMScheduler.from_config(SCHEDULER), movq=movq)
    pipe.save_config(out / "kandinsky-2-2-decoder")
    del pipe, unet, movq
    gc.collect()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=pathlib.Path)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--max-shard-size", default="20GB")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    if args.dry_run:
        for name in BUILDERS:
            with torch.device("meta"):
                report(name, BUILDERS[name]())
        return
    out = args.outdir
    t0 = time.time()
    for part in parts:
        if part == "model_index":
            write_model_index(out)
        elif part == "scheduler":
            DDPMScheduler.from_config(SCHEDULER).save_pretrained(out / "kandinsky-2-2-decoder/scheduler")
        elif part == "image_processor":
            CLIPImageProcessor(**PROCESSOR_FULL).save_pretrained(out / "kandinsky-2-2-prior/image_processor")
        else:
            write_network(part, out, args.max_shard_size)
    print(f"wrote {parts} under {out} in {time.time() - t0:.0f} s")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>14,}  {p.relative_to(out)}")


if __name__ == "__main__":
    main()
