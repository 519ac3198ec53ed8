"""Record parity fixtures for the Kandinsky 2.2 decoder networks with diffusers 0.31.0.

Pinned versions: torch 2.15.0, diffusers 0.31.0, safetensors (tools/requirements.txt).

1. UNet: diffusers `UNet2DConditionModel` with the Kandinsky 2.2 decoder's block types and flags
   (addition_embed_type="image", encoder_hid_dim_type="image_proj", resnet_time_scale_shift=
   "scale_shift", simple cross-attention with added K/V) at a tiny width, random weights (norm
   affines randomised too), its state dict (diffusers names) plus inputs and output, to
   crates/foil-models/tests/fixtures/kandinsky_unet_tiny.safetensors. The weights are rounded
   to float16 values before the run and stored as float16 (exactly), inputs/outputs as float32.
2. MoVQ: diffusers `VQModel` with norm_type="spatial" at a tiny width, same recipe, to
   crates/foil-models/tests/fixtures/kandinsky_movq_tiny.safetensors (encode = encoder +
   quant_conv, decode = post_quant_conv + spatial-norm decoder with force_not_quantize=True).
3. Parameter counts of both networks at the full published configuration (built on the meta
   device, no weights) to crates/foil-models/tests/fixtures/kandinsky_params.json.

Usage: tools/.venv/bin/python tools/record_kandinsky.py
"""
import json
import pathlib

import torch
from diffusers import UNet2DConditionModel, VQModel
from safetensors.torch import save_file

torch.set_num_threads(1)
ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-models/tests/fixtures"

# kandinsky-community/kandinsky-2-2-decoder, unet/config.json (diffusers 0.18 era), the fields
# that change the network; everything else is at UNet2DConditionModel's default.
UNET_FULL = dict(
    act_fn="silu",
    addition_embed_type="image",
    addition_embed_type_num_heads=64,
    attention_head_dim=64,
    block_out_channels=[384, 768, 1152, 1536],
    center_input_sample=False,
    class_embed_type=None,
    cross_attention_dim=768,
    down_block_types=[
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ],
    downsample_padding=1,
    encoder_hid_dim=1280,
    encoder_hid_dim_type="image_proj",
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=3,
    mid_block_scale_factor=1,
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    norm_eps=1e-05,
    norm_num_groups=32,
    only_cross_attention=False,
    out_channels=8,
    resnet_time_scale_shift="scale_shift",
    sample_size=64,
    up_block_types=[
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ],
)

UNET_TINY = dict(
    UNET_FULL,
    block_out_channels=[16, 16, 24],
    down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"],
    up_block_types=["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=8,
    cross_attention_dim=16,
    encoder_hid_dim=24,
    sample_size=8,
)

# kandinsky-community/kandinsky-2-2-decoder, movq/config.json.
MOVQ_FULL = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 256, 512],
    down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    norm_type="spatial",
    num_vq_embeddings=16384,
    out_channels=3,
    sample_size=32,
    scaling_factor=0.18215,
    up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    vq_embed_dim=4,
)

MOVQ_TINY = dict(
    MOVQ_FULL,
    # The decoder's SpatialNorm always uses 32 groups: widths must be multiples of 32. Unequal
    # widths put a 1x1 shortcut in an encoder and a decoder resnet.
    block_out_channels=[64, 32],
    down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
    up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
    layers_per_block=1,
    norm_num_groups=8,
    num_vq_embeddings=32,
    sample_size=8,
)


def randomise_norms(model, gen):
    """GroupNorm/LayerNorm affines start at 1 and 0; perturb them so a wrong name shows."""
    for name, p in model.named_parameters():
        if "norm" in name.split(".")[-2] or name.split(".")[-2].startswith("norm"):
            with torch.no_grad():
                if name.endswith("weight"):
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def to_half_precision_values(model):
    """Round every weight to a float16 value (the network still runs in float32), so the
    fixture can store the weights as float16 exactly and stay small."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def state(model):
    return {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}


def record_unet(gen):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_TINY).eval()
    randomise_norms(unet, gen)
    to_half_precision_values(unet)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    timesteps = torch.tensor([999, 37], dtype=torch.int64)
    image_embeds = torch.randn(2, UNET_TINY["encoder_hid_dim"], generator=gen)
    with torch.no_grad():
        out = unet(sample, timesteps, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": image_embeds}).sample
    tensors = state(unet)
    n = sum(v.numel() for v in tensors.values())
    tensors.update(
        {
            "io.sample": sample,
            "io.timesteps": timesteps.float(),
            "io.image_embeds": image_embeds,
            "io.output": out,
        }
    )
    save_file(tensors, str(FIX / "kandinsky_unet_tiny.safetensors"))
    print("unet tiny params", n, "output", tuple(out.shape), "abs max", out.abs().max().item())


def record_movq(gen):
    torch.manual_seed(0)
    movq = VQModel(**MOVQ_TINY).eval()
    randomise_norms(movq, gen)
    to_half_precision_values(movq)
    image = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    latents_in = torch.randn(2, 4, 4, 4, generator=gen)
    with torch.no_grad():
        latents = movq.encode(image).latents
        decoded = movq.decode(latents_in, force_not_quantize=True).sample
    tensors = state(movq)
    n = sum(v.numel() for v in tensors.values())
    tensors.update(
        {"io.image": image, "io.latents": latents.contiguous(), "io.latents_in": latents_in, "io.decoded": decoded.contiguous()}
    )
    save_file(tensors, str(FIX / "kandinsky_movq_tiny.safetensors"))
    print("movq tiny params", n, "latents", tuple(latents.shape), "decoded", tuple(decoded.shape))


def full_counts():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET_FULL)
        movq = VQModel(**MOVQ_FULL)
    counts = {
        "diffusers": "0.31.0",
        "unet_kandinsky22_decoder": sum(p.numel() for p in unet.parameters()),
        "movq_kandinsky22": sum(p.numel() for p in movq.parameters()),
        "movq_kandinsky22_without_codebook": sum(
            p.numel() for n, p in movq.named_parameters() if not n.startswith("quantize.")
        ),
    }
    (FIX / "kandinsky_params.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(counts)


if __name__ == "__main__":
    FIX.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    record_unet(gen)
    record_movq(gen)
    full_counts()
