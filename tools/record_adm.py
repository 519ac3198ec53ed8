"""Record guided-diffusion UNet (ADM) reference data with guided-diffusion-sdk 1.0.0 (openai/guided-diffusion
as published on PyPI, guided_diffusion/unet.py), torch 2.15.0 (see tools/requirements.txt).

1. Two tiny random configurations of `UNetModel`, built with the library's own class, every weight
   randomised (including the convolutions `zero_module` zeroes, or the output would be all zeros):
   - `tiny`: the DiME flavour (learn_sigma, use_scale_shift_norm, resblock_updown, legacy attention
     order, num_head_channels), 16x16 images;
   - `tiny_cond`: the other code paths (class-conditional label_emb, conv_resample Downsample /
     Upsample, additive time embedding, new attention order, num_heads, no learned sigma), with a
     64-wide second level (32 channels in 32 groups would cancel an additive embedding).
   Each writes crates/foil-models/tests/fixtures/adm_<name>.safetensors (the state dict, guided-diffusion's
   names) and adm_<name>_io.safetensors (input x, per-sample timesteps, labels, output).
   The weights are rounded to float16-representable values and stored as float16 (exact, half the size);
   the forward pass runs in float32.
2. The full DiME CelebA-128 configuration (the flags of DiME's README / test.sh / celeba-train.sh:
   --image_size 128 --attention_resolutions 32,16,8 --class_cond False --learn_sigma True
   --num_channels 128 --num_heads 4 --num_res_blocks 2 --resblock_updown True --use_scale_shift_norm True,
   channel_mult "" -> (1, 1, 2, 3, 4)), built on the meta device (nothing allocated): its state-dict
   names and shapes and its parameter count go to crates/foil-models/tests/fixtures/adm_dime_celeba128_keys.json.

3. Optional, not committed (420 MB): `--full-random DIR` builds the full DiME configuration with random
   weights (zero_module convolutions included), writes DIR/adm_full.pt (a DDP-style `module.`-prefixed state
   dict, the form DiME publishes) and DIR/adm_full_io.safetensors (2 images 128x128, timesteps 3 and 180, and
   the output). Convert the .pt with tools/convert_adm.py and run the ignored Rust test:
       FOIL_ADM_FULL=DIR cargo test -p foil-models --test models adm:: -- --ignored

Usage: tools/.venv/bin/python tools/record_adm.py [--full-random DIR]
"""
import json
import pathlib
import sys

import torch
from guided_diffusion.script_util import create_model
from guided_diffusion.unet import UNetModel
from safetensors.torch import save_file

torch.set_num_threads(1)
ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/foil-models/tests/fixtures"

# Keep in sync with AdmConfig::tiny() / AdmConfig::tiny_cond() in crates/foil-models/src/adm.
TINY = dict(
    image_size=16,
    in_channels=3,
    model_channels=32,
    out_channels=6,
    num_res_blocks=1,
    attention_resolutions=(2,),
    channel_mult=(1, 1),
    num_heads=1,
    num_head_channels=16,
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_new_attention_order=False,
)
TINY_COND = dict(
    image_size=16,
    in_channels=3,
    model_channels=32,
    out_channels=3,
    num_res_blocks=1,
    attention_resolutions=(1,),
    channel_mult=(1, 2),
    num_classes=3,
    num_heads=2,
    num_head_channels=-1,
    use_scale_shift_norm=False,
    resblock_updown=False,
    conv_resample=True,
    use_new_attention_order=True,
)


def record(name, cfg, seed):
    torch.manual_seed(seed)
    model = UNetModel(**cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.startswith("out.0") or ".in_layers.0." in pname or ".out_layers.0." in pname:
                # GroupNorm affine: around 1 (weight) / 0 (bias).
                base = 1.0 if pname.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn_like(p))
            elif pname.startswith("label_emb"):
                p.copy_(torch.randn_like(p) * 0.5)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn_like(p) / fan_in**0.5)
            p.copy_(p.half().float())
    gen = torch.Generator().manual_seed(seed + 1)
    n = 3
    x = torch.randn(n, cfg["in_channels"], cfg["image_size"], cfg["image_size"], generator=gen)
    t = torch.tensor([0, 137, 499], dtype=torch.long)
    io = {"input.x": x, "input.t": t.float()}
    kwargs = {}
    if cfg.get("num_classes"):
        y = torch.tensor([2, 0, 1], dtype=torch.long)
        kwargs["y"] = y
        io["input.y"] = y.float()
    with torch.no_grad():
        out = model(x, t, **kwargs)
    io["output"] = out
    # The test must be able to fail: the timesteps (and labels) must change the output. (With 32
    # channels in 32 groups, an additive embedding is cancelled by the next GroupNorm: that is why
    # tiny_cond has a 64-wide level.)
    with torch.no_grad():
        t2 = torch.tensor([400, 137, 499], dtype=torch.long)
        dt = (model(x, t2, **kwargs) - out)[0].abs().max().item()
        dy = 0.0
        if "y" in kwargs:
            dy = (model(x, t, y=(kwargs["y"] + 1) % 3) - out).abs().max().item()
    print(f"{name}: max |change| with another timestep {dt:.4f}, with other labels {dy:.4f}")
    assert dt > 1e-2 and ("y" not in kwargs or dy > 1e-2)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, output |max| {out.abs().max():.4f}, std {out.std():.4f}")
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(FIX / f"adm_{name}.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, str(FIX / f"adm_{name}_io.safetensors"))


# DiME's README / test.sh / celeba-train.sh flags (AdmConfig::dime_celeba128()).
FULL_FLAGS = dict(
    image_size=128,
    num_channels=128,
    num_res_blocks=2,
    channel_mult="",
    learn_sigma=True,
    class_cond=False,
    attention_resolutions="32,16,8",
    num_heads=4,
    num_head_channels=-1,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    dropout=0.0,
    resblock_updown=True,
    use_fp16=False,
    use_new_attention_order=False,
)


def record_full():
    with torch.device("meta"):
        model = create_model(**FULL_FLAGS)
    tensors = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    params = sum(p.numel() for p in model.parameters())
    doc = {
        "source": "guided-diffusion-sdk 1.0.0 guided_diffusion.script_util.create_model, DiME CelebA-128 flags",
        "num_params": params,
        "tensors": tensors,
    }
    lines = ",\n".join(json.dumps(t) for t in tensors)
    text = f'{{"source": {json.dumps(doc["source"])},\n"num_params": {params},\n"tensors": [\n{lines}\n]}}\n'
    assert json.loads(text) == doc
    (FIX / "adm_dime_celeba128_keys.json").write_text(text)
    print(f"dime_celeba128: {params} params, {len(tensors)} tensors")


def record_full_random(out_dir):
    out_dir = pathlib.Path(out_dir)
    torch.manual_seed(3)
    model = create_model(**FULL_FLAGS).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in pname or "layers.0" in pname or pname.startswith("out.0")):
                p.copy_((1.0 if pname.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn_like(p) / fan_in**0.5)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, out_dir / "adm_full.pt")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 128, 128, generator=gen)
    t = torch.tensor([3, 180])
    with torch.no_grad():
        out = model(x, t)
    save_file({"input.x": x, "input.t": t.float(), "output": out}, str(out_dir / "adm_full_io.safetensors"))
    print(f"full random: output |max| {out.abs().max():.4f}; now run tools/convert_adm.py {out_dir}/adm_full.pt {out_dir}/adm_full.safetensors")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--full-random":
        record_full_random(sys.argv[2])
        sys.exit()
    FIX.mkdir(parents=True, exist_ok=True)
    record("tiny", TINY, 0)
    record("tiny_cond", TINY_COND, 10)
    record_full()
