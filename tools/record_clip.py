"""Record CLIP vision (transformers 4.46.3 `CLIPVisionModelWithProjection`) parity fixtures.

Usage: tools/.venv/bin/python tools/record_clip.py
Pinned: torch 2.15.0, transformers 4.46.3 (tools/requirements.txt), Pillow 13.0.0 (pulled in by
transformers' image processing). Writes, under crates/foil-models/tests/fixtures/:

1. clip_tiny.safetensors: the state dict (transformers' names) of a seeded random
   CLIPVisionModelWithProjection(CLIPVisionConfig(hidden 32, layers 2, heads 4, intermediate 64,
   patch 8, image 32, projection 16, quick_gelu)); clip_tiny_io.safetensors: its pixel_values
   input [2, 3, 32, 32], image_embeds [2, 16], pooled output [2, 32] and last_hidden_state
   [2, 17, 32], plus image_embeds of the same weights with hidden_act "gelu".
2. clip_params.json: parameter counts of the full published vision towers (ViT-B/32, ViT-L/14,
   ViT-bigG/14), counted on reference models built on the meta device (no memory allocated).
3. clip_preprocess_pil.safetensors: CLIPImageProcessor (resize shortest side to 224 with PIL
   bicubic, center crop 224, rescale, normalise) on a 256x320 uint8 image (`pil.image`), stored
   as the uint8 crop PIL produced (`pil.crop`): rescale + normalise of it is checked here to
   equal the processor's output. clip_preprocess.safetensors: the same resampling in float
   arithmetic, with torch's antialiased bicubic (PIL's filter), one axis at a time like PIL
   (width then height, clamped to [0, 1] after each): `float.*` cases at small sizes, one
   shrinking and one enlarging.
"""
import json
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

torch.set_num_threads(1)
FIX = pathlib.Path(__file__).resolve().parent.parent / "crates/foil-models/tests/fixtures"
FIX.mkdir(parents=True, exist_ok=True)
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            patch_size=8, image_size=32, projection_dim=16, layer_norm_eps=1e-5)
FULL = {
    # openai/clip-vit-base-patch32, openai/clip-vit-large-patch14: vision_config of config.json.
    "vit_b32": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    patch_size=32, image_size=224, projection_dim=512, hidden_act="quick_gelu"),
    "vit_l14": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu"),
    # laion/CLIP-ViT-bigG-14-laion2B-39B-b160k and kandinsky-community/kandinsky-2-2-prior/image_encoder.
    "vit_bigg14": dict(hidden_size=1664, num_hidden_layers=48, num_attention_heads=16, intermediate_size=8192,
                       patch_size=14, image_size=224, projection_dim=1280, hidden_act="gelu"),
}


def tiny():
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY, hidden_act="quick_gelu")).eval()
    # transformers initialises LayerNorms to (1, 0) and embeddings with small std: perturb every
    # parameter so each one matters in the comparison.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        out = model(pixel_values=x)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(FIX / "clip_tiny.safetensors"))
    gelu = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY, hidden_act="gelu")).eval()
    gelu.load_state_dict(state)
    with torch.no_grad():
        embeds_gelu = gelu(pixel_values=x).image_embeds
        pooled = model.vision_model(pixel_values=x).pooler_output
    save_file({
        "input.pixel_values": x,
        "output.image_embeds": out.image_embeds.contiguous(),
        "output.pooled": pooled.contiguous(),
        "output.last_hidden_state": out.last_hidden_state.contiguous(),
        "output.image_embeds_gelu": embeds_gelu.contiguous(),
    }, str(FIX / "clip_tiny_io.safetensors"))
    print("tiny: state", sorted(state), "embeds", out.image_embeds[0, :4].tolist())


def param_counts():
    counts = {}
    for name, cfg in FULL.items():
        with torch.device("meta"):
            m = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg, layer_norm_eps=1e-5))
        counts[name] = sum(p.numel() for p in m.parameters())
    counts["tiny"] = sum(p.numel() for p in CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY)).parameters())
    (FIX / "clip_params.json").write_text(json.dumps(counts, indent=2) + "\n")
    print("params", counts)


def test_image(gen, h, w):
    # Smooth colour fields plus sharp edges and fine noise, so resampling filters matter.
    coarse = torch.rand(1, 3, h // 16, w // 16, generator=gen)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img[:, :, h // 3: h // 2, w // 4: w // 2] = 1.0 - img[:, :, h // 3: h // 2, w // 4: w // 2]
    img = img + (torch.rand(1, 3, h, w, generator=gen) - 0.5) * 0.3
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def float_resize(x01, shortest, crop):
    # CLIP's geometry (transformers' get_resize_output_image_size and center_crop) with float
    # antialiased bicubic (PIL's filter, a = -0.5), width pass then height pass like PIL.
    _, _, h, w = x01.shape
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(shortest * long / short)
    oh, ow = (new_long, shortest) if w <= h else (shortest, new_long)
    f = torch.nn.functional.interpolate
    y = f(x01, size=(h, ow), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    y = f(y, size=(oh, ow), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (oh - crop) // 2, (ow - crop) // 2
    y = y[:, :, top: top + crop, left: left + crop]
    return (y - MEAN) / STD


def preprocess():
    gen = torch.Generator().manual_seed(3)
    out, pil = {}, {}
    # 1. transformers' processor (PIL) at the published size.
    img = test_image(gen, 256, 320)
    proc = CLIPImageProcessor()  # defaults = openai/clip-vit-*'s preprocessor_config.json
    assert proc.size == {"shortest_edge": 224} and proc.crop_size == {"height": 224, "width": 224}
    assert proc.resample == 3  # PIL bicubic
    ref = proc(images=img[0].permute(1, 2, 0).numpy(), return_tensors="pt").pixel_values
    # The uint8 crop PIL produced, recovered exactly from the processor's output.
    crop = ((ref * STD + MEAN) * 255).round()
    again = (crop / 255 - MEAN) / STD
    assert (again - ref).abs().max() < 1e-5, (again - ref).abs().max()
    pil["pil.image"] = img[0].contiguous()
    pil["pil.crop"] = crop[0].to(torch.uint8).contiguous()
    # Float version of the same (for the figure printed below).
    ours = float_resize(img.float() / 255, 224, 224)
    print("pil vs float resampling: max |diff| normalised", (ours - ref).abs().max().item(),
          "in 1/255 levels", ((ours - ref) * STD * 255).abs().max().item())
    # 2. float resampling at small sizes, input in [-1, 1] as foil passes it.
    for name, (h, w, shortest, crop_size) in {"shrink": (40, 50, 24, 20), "enlarge": (12, 10, 32, 28)}.items():
        x = test_image(gen, max(h, 16), max(w, 16))[:, :, :h, :w].float() / 127.5 - 1
        out[f"float.{name}.input"] = x.contiguous()
        out[f"float.{name}.output"] = float_resize((x + 1) / 2, shortest, crop_size).contiguous()
        out[f"float.{name}.sizes"] = torch.tensor([shortest, crop_size], dtype=torch.float32)
    save_file(pil, str(FIX / "clip_preprocess_pil.safetensors"))
    save_file(out, str(FIX / "clip_preprocess.safetensors"))


if __name__ == "__main__":
    tiny()
    param_counts()
    preprocess()
