"""Write TINY random-weight folders in the publishers' exact layouts, with the libraries' own
save_pretrained, under tests/fixtures/published/ (committed; about 3 MB in all).

Pinned versions: torch 2.15.0, diffusers 0.31.0, transformers 4.46.3, peft 0.21.2, accelerate
1.15.0, safetensors (tools/requirements.txt).

Usage: tools/.venv/bin/python tools/write_published_tiny.py        (about 10 s on 2 cores)
       then tools/record_diffusion_published.py (this script replaces the whole folder, the
       recording included).

Layouts written (every weight rounded to a float16-representable value first, so the fp16 variant
is exact; networks run in float32):

kandinsky-2-2-decoder/          as KandinskyV22Pipeline(unet, scheduler, movq).save_pretrained writes it
    model_index.json
    scheduler/scheduler_config.json   DDPMScheduler with the published decoder's values (SCHEDULER
                                      below; `set_alpha_to_one` is not a DDPMScheduler argument: it is
                                      kept as a hidden config key, as in the published file)
    unet/config.json + diffusion_pytorch_model.safetensors   UNet2DConditionModel, the published
                                      decoder's block types and flags (record_kandinsky.UNET_FULL) at
                                      the width of UNET below
    movq/config.json + diffusion_pytorch_model.safetensors   VQModel norm_type "spatial" (MOVQ below)
kandinsky-2-2-prior/
    image_encoder/config.json + model.safetensors   CLIPVisionModelWithProjection (CLIP below)
    image_processor/preprocessor_config.json        CLIPImageProcessor (16 px, CLIP mean/std, bicubic)
lora-peft/                      the authors' kandinsky_lora_train.py adapter: LoraConfig(r=4,
                                lora_alpha=8.0, init_lora_weights="gaussian", target_modules =
                                get_target_modules(LayerNames.xattnp) = to_k, to_q, to_v, to_out.0,
                                add_k_proj, add_v_proj), get_peft_model(copy.deepcopy(unet)),
                                lora_net.save_pretrained(dir): adapter_config.json,
                                adapter_model.safetensors (+ peft's README.md model card). lora_B is
                                random (peft's "gaussian" init leaves it zero).
lora-diffusers/pytorch_lora_weights.safetensors   the same adapter as diffusers' training scripts
                                save it: StableDiffusionLoraLoaderMixin.save_lora_weights(dir,
                                unet_lora_layers=convert_state_dict_to_diffusers(
                                get_peft_model_state_dict(unet))) on a UNet given the adapter with
                                unet.add_adapter. diffusers 0.31 writes no alpha: its loader then
                                uses lora_alpha = r (scale 1, not the adapter's 8/4 = 2); see
                                `out_diffusers` below.
variants/unet-sharded/          UNet save_pretrained(max_shard_size="200KB"): 3 shards + the
                                diffusion_pytorch_model.safetensors.index.json
variants/unet-fp16/             UNet in float16, save_pretrained(variant="fp16"):
                                diffusion_pytorch_model.fp16.safetensors
variants/unet-bin/              UNet save_pretrained(safe_serialization=False):
                                diffusion_pytorch_model.bin
variants/clip-bin/              CLIP encoder save_pretrained(safe_serialization=False): pytorch_model.bin
lora_io.safetensors             one forward of the tiny UNet loaded from kandinsky-2-2-decoder/unet:
                                `x` [2,4,8,8], `t` [2] (timesteps 999 and 37 as float32; the run used
                                int64), `image_embeds` [2,24]; `out` [2,8,8,8] with the peft adapter
                                (PeftModel.from_pretrained(unet, lora-peft), as eval.py loads it),
                                `out_base` without it, `out_diffusers` with lora-diffusers loaded by
                                diffusers' own loader (StableDiffusionLoraLoaderMixin.lora_state_dict +
                                load_lora_into_unet).

Each variant is checked here to load back (from_pretrained) and give the same output as the main
folder; the peft adapter is checked to change the output.
"""
import copy
import json
import os
import pathlib
import shutil
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from record_kandinsky import MOVQ_TINY, UNET_TINY, randomise_norms, to_half_precision_values  # noqa: E402

from diffusers import DDPMScheduler, KandinskyV22Pipeline, StableDiffusionPipeline, UNet2DConditionModel, VQModel  # noqa: E402
from diffusers.utils import convert_state_dict_to_diffusers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402

torch.set_num_threads(2)
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/published"

# The published decoder's scheduler/scheduler_config.json values.
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.00085,
    beta_end=0.012,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
    variance_type="learned_range",
    prediction_type="epsilon",
    thresholding=False,
)

# record_kandinsky's tiny UNet (the published types and flags: ResnetDownsampleBlock2D +
# SimpleCrossAttn blocks, image addition embedding, image_proj encoder_hid, scale_shift) at a
# smaller first width, so that the four UNet copies below stay small. 2 heads of 8 in the
# attention blocks, unequal widths (a 1x1 shortcut in the first up/down transitions).
UNET = dict(UNET_TINY, block_out_channels=[8, 16, 16])
# record_kandinsky's tiny MoVQ at width 32 (SpatialNorm always uses 32 groups); one downsampling
# (latents are S/2), sample_size = the recorded image side.
MOVQ = dict(MOVQ_TINY, block_out_channels=[32, 32], sample_size=32)
# CLIP ViT-bigG/14 vision (gelu, layer_norm_eps 1e-5, with projection) at a tiny size; the
# projection is the UNet's encoder_hid_dim.
CLIP = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4,
            image_size=16, projection_dim=UNET["encoder_hid_dim"], hidden_act="gelu", layer_norm_eps=1e-5)
# The prior's image_processor/preprocessor_config.json at 16 px instead of 224.
PROCESSOR = dict(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, resample=3,
                 do_center_crop=True, do_normalize=True, do_rescale=True, do_resize=True, do_convert_rgb=True,
                 image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
# kandinsky_lora_train.py: LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian",
# target_modules=get_target_modules(LayerNames.xattnp, unet)), configs/lora/*.yaml: rank 4, lora_alpha 8.0.
LORA = dict(r=4, lora_alpha=8.0, init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"])


def build_unet(gen):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET).eval()
    randomise_norms(unet, gen)
    to_half_precision_values(unet)
    return unet


def build_movq(gen):
    torch.manual_seed(1)
    movq = VQModel(**MOVQ).eval()
    randomise_norms(movq, gen)
    to_half_precision_values(movq)
    return movq


def build_clip(gen):
    torch.manual_seed(2)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP)).eval()
    # transformers initialises LayerNorms to (1, 0) and embeddings with a small std: perturb every
    # parameter so that each one matters (as record_clip.py does).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    to_half_precision_values(model)
    return model


def build_scheduler():
    # from_config keeps the keys DDPMScheduler does not take (set_alpha_to_one) as hidden config
    # entries, and save_pretrained writes them: the published file has the same mix.
    return DDPMScheduler.from_config(SCHEDULER)


def unet_forward(unet, x, t, emb):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": emb}).sample


def add_lora(unet, gen):
    """The authors' adapter on a copy of `unet`, lora_B random (peft's gaussian init zeroes it)."""
    lora_net = get_peft_model(copy.deepcopy(unet), LoraConfig(**LORA))
    with torch.no_grad():
        for name, p in lora_net.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            if "lora_" in name:
                p.copy_(p.half().float())
    return lora_net.to(torch.float32)


def file_list(root):
    rows = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rows.append((str(p.relative_to(root)), p.stat().st_size))
    return rows


def main():
    t0 = time.time()
    if os.environ.get("PYTHONHASHSEED") != "0":
        # peft writes target_modules from a set: fix the string hash so the file is reproducible.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    gen = torch.Generator().manual_seed(11)
    unet, movq, clip = build_unet(gen), build_movq(gen), build_clip(gen)
    scheduler = build_scheduler()

    dec = OUT / "kandinsky-2-2-decoder"
    KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq).save_pretrained(dec)
    prior = OUT / "kandinsky-2-2-prior"
    clip.save_pretrained(prior / "image_encoder")
    CLIPImageProcessor(**PROCESSOR).save_pretrained(prior / "image_processor")

    # Loader variants of the same UNet / encoder.
    var = OUT / "variants"
    unet.save_pretrained(var / "unet-sharded", max_shard_size="200KB")
    copy.deepcopy(unet).to(torch.float16).save_pretrained(var / "unet-fp16", variant="fp16")
    unet.save_pretrained(var / "unet-bin", safe_serialization=False)
    clip.save_pretrained(var / "clip-bin", safe_serialization=False)

    # LoRA: the authors' peft adapter, and the same weights in diffusers' LoRA file layout.
    lora_net = add_lora(unet, gen)
    lora_net.save_pretrained(OUT / "lora-peft")
    diff_unet = copy.deepcopy(unet)
    diff_unet.add_adapter(LoraConfig(**LORA))
    peft_sd = get_peft_model_state_dict(lora_net)
    diff_sd = get_peft_model_state_dict(diff_unet)
    assert sorted(k.removeprefix("base_model.model.") for k in peft_sd) == sorted(diff_sd), "adapter keys differ"
    with torch.no_grad():
        params = dict(diff_unet.named_parameters())
        for k, v in peft_sd.items():
            k = k.removeprefix("base_model.model.").replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
            params[k].copy_(v)
    StableDiffusionPipeline.save_lora_weights(
        save_directory=OUT / "lora-diffusers",
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(diff_unet)),
        safe_serialization=True,
    )

    # lora_io: forwards of the UNet loaded back from the published folder.
    gen_io = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 8, generator=gen_io)
    t = torch.tensor([999, 37], dtype=torch.int64)
    emb = torch.randn(2, UNET["encoder_hid_dim"], generator=gen_io)
    base = UNet2DConditionModel.from_pretrained(dec, subfolder="unet").eval()
    out_base = unet_forward(base, x, t, emb)
    peft_unet = PeftModel.from_pretrained(UNet2DConditionModel.from_pretrained(dec, subfolder="unet"), OUT / "lora-peft").eval()
    out = unet_forward(peft_unet, x, t, emb)
    sd, alphas = StableDiffusionPipeline.lora_state_dict(OUT / "lora-diffusers")
    d_unet = UNet2DConditionModel.from_pretrained(dec, subfolder="unet").eval()
    StableDiffusionPipeline.load_lora_into_unet(sd, alphas, unet=d_unet)
    out_diffusers = unet_forward(d_unet, x, t, emb)
    save_file({"x": x, "t": t.float(), "image_embeds": emb, "out": out.contiguous(), "out_base": out_base.contiguous(),
               "out_diffusers": out_diffusers.contiguous()}, str(OUT / "lora_io.safetensors"))
    print("lora: |out - out_base| max", (out - out_base).abs().max().item(), "|out_base| max", out_base.abs().max().item())
    print("lora: diffusers file vs peft |diff| max", (out_diffusers - out).abs().max().item(),
          "network_alphas", alphas, "keys e.g.", sorted(sd)[:2])
    assert (out - out_base).abs().max() > 1e-2, "the adapter does not change the output"
    # The diffusers file has no alpha: diffusers' loader applies B A at scale 1, peft at
    # alpha / r = 2. With every B doubled, diffusers' loader gives peft's output.
    d2_unet = UNet2DConditionModel.from_pretrained(dec, subfolder="unet").eval()
    sd2 = {k: v * 2 if ("lora_B" in k or "lora.up" in k) else v for k, v in sd.items()}
    StableDiffusionPipeline.load_lora_into_unet(sd2, alphas, unet=d2_unet)
    diff2 = (unet_forward(d2_unet, x, t, emb) - out).abs().max().item()
    print("lora: diffusers file with B doubled vs peft |diff| max", diff2)
    assert diff2 < 1e-5

    # Every variant loads back to the same network.
    ref = unet_forward(unet, x, t, emb)
    assert torch.equal(ref, out_base)
    for name, kw in {"unet-sharded": {}, "unet-bin": {}, "unet-fp16": {"variant": "fp16"}}.items():
        m = UNet2DConditionModel.from_pretrained(var / name, **kw).float().eval()
        diff = (unet_forward(m, x, t, emb) - ref).abs().max().item()
        assert diff == 0.0, (name, diff)
    pix = torch.randn(2, 3, 16, 16, generator=gen_io)
    with torch.no_grad():
        e_ref = clip(pixel_values=pix).image_embeds
        for path in (prior / "image_encoder", var / "clip-bin"):
            e = CLIPVisionModelWithProjection.from_pretrained(path).eval()(pixel_values=pix).image_embeds
            assert torch.equal(e, e_ref), path
    movq2 = VQModel.from_pretrained(dec, subfolder="movq").eval()
    assert all(torch.equal(a, b) for a, b in zip(movq.state_dict().values(), movq2.state_dict().values()))

    sched_cfg = json.loads((dec / "scheduler/scheduler_config.json").read_text())
    print("scheduler_config.json:", sched_cfg)
    adapter_cfg = json.loads((OUT / "lora-peft/adapter_config.json").read_text())
    print("adapter_config.json: r", adapter_cfg["r"], "alpha", adapter_cfg["lora_alpha"], "targets",
          adapter_cfg["target_modules"], "base", adapter_cfg.get("base_model_name_or_path"))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print("params: unet", n(unet), "movq", n(movq), "clip", n(clip), "lora", sum(v.numel() for v in peft_sd.values()))
    total = 0
    for rel, size in file_list(OUT):
        total += size
        print(f"{size:>9}  {rel}")
    print(f"total {total} bytes; {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
