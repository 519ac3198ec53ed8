"""Convert a guided-diffusion UNet checkpoint (a PyTorch state dict, e.g. DiME's `ddpm-celeba.pt`)
into safetensors with guided-diffusion's own tensor names, the file foil_models::adm::AdmConfig::load_file reads.

DiME's CelebA DDPM (also used by FastDiME and MaskDiME) is published in DiME's README
(https://github.com/guillaumejs2403/DiME, "Diffusion Model" download link, saved as models/ddpm-celeba.pt).
The script strips a DistributedDataParallel `module.` prefix if present, checks the state dict against
guided-diffusion's UNetModel built with DiME's flags (strict load: no missing or unexpected names, same
shapes), and writes float32 tensors.

Usage (from the workspace root):
    tools/.venv/bin/python tools/convert_adm.py models/ddpm-celeba.pt [assets/dime/ddpm-celeba.safetensors]
Needs torch, safetensors and guided-diffusion-sdk 1.0.0 (tools/requirements.txt).
"""
import pathlib
import sys

import torch
from guided_diffusion.script_util import create_model
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "assets/dime/ddpm-celeba.safetensors"
# AdmConfig::dime_celeba128(): DiME's README / test.sh flags.
DIME_FLAGS = dict(
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


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    src = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) == 3 else DEFAULT_OUT
    state = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    with torch.device("meta"):
        model = create_model(**DIME_FLAGS)
    # Strict: raises with the missing / unexpected names and any shape mismatch.
    model.load_state_dict(state, strict=True, assign=True)
    tensors = {k: v.detach().float().contiguous() for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    n = sum(v.numel() for v in tensors.values())
    print(f"{out}: {len(tensors)} tensors, {n} parameters")


if __name__ == "__main__":
    main()
