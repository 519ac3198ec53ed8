"""Record schedule reference values for foil-schedule's parity tests.

Sources:
  * diffusers DDIMScheduler / DDPMScheduler configured as the Kandinsky 2.2 decoder
    (linear 0.00085..0.012, 1000 steps, steps_offset 1, set_alpha_to_one False, 100 steps);
  * guided-diffusion (PyPI guided-diffusion-sdk 1.0.0) SpacedDiffusion for DiME's CelebA model
    (linear schedule over 500 steps, respaced "200", learned sigma).

Usage: tools/.venv/bin/python tools/record_schedules.py
Writes crates/foil-schedule/tests/fixtures/*.json (small; committed).
"""
import json
import pathlib

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/foil-schedule/tests/fixtures"
OUT.mkdir(parents=True, exist_ok=True)
SHAPE = (2, 2, 3, 3)


def flat(t):
    return [float(v) for v in torch.as_tensor(t).double().flatten().tolist()]


def save(name, obj):
    path = OUT / name
    path.write_text(json.dumps(obj, indent=None, separators=(",", ":")))
    print("wrote", path, path.stat().st_size, "bytes")


KANDINSKY = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.00085,
    beta_end=0.012,
    steps_offset=1,
    clip_sample=False,
)


def record_ddim():
    sched = DDIMScheduler(**KANDINSKY, set_alpha_to_one=False)
    sched.set_timesteps(100)
    gen = torch.Generator().manual_seed(0)
    cases = []
    for t in [991, 501, 11, 1]:
        sample = torch.randn(SHAPE, generator=gen)
        eps = torch.randn(SHAPE, generator=gen)
        noise = torch.randn(SHAPE, generator=gen)
        case = dict(t=t, sample=flat(sample), eps=flat(eps), noise=flat(noise))
        for eta in (0.0, 1.0):
            out = sched.step(eps, t, sample, eta=eta, variance_noise=noise)
            case[f"prev_eta{int(eta)}"] = flat(out.prev_sample)
            case["pred_x0"] = flat(out.pred_original_sample)
        prev_t = t - 1000 // 100
        case["variance"] = float(sched._get_variance(t, prev_t))
        cases.append(case)
    # Other spacings, for the timestep lists only.
    spacings = {}
    for spacing in ("leading", "trailing", "linspace"):
        s = DDIMScheduler(**KANDINSKY, set_alpha_to_one=False, timestep_spacing=spacing)
        for n in (1, 7, 50, 100, 333):
            s.set_timesteps(n)
            spacings[f"{spacing}_{n}"] = [int(v) for v in s.timesteps.tolist()]
    save(
        "kandinsky_ddim.json",
        dict(
            alphas_cumprod=flat(sched.alphas_cumprod),
            final_alpha_cumprod=float(sched.final_alpha_cumprod),
            timesteps=[int(v) for v in sched.timesteps.tolist()],
            shape=list(SHAPE),
            cases=cases,
            spacings=spacings,
        ),
    )


def record_ddpm():
    cases = []
    gen = torch.Generator().manual_seed(1)
    for variance_type in ("fixed_small", "learned_range"):
        sched = DDPMScheduler(**KANDINSKY, variance_type=variance_type)
        sched.set_timesteps(100)
        for t in [991, 501, 11]:
            sample = torch.randn(SHAPE, generator=gen)
            eps = torch.randn(SHAPE, generator=gen)
            v = torch.tanh(torch.randn(SHAPE, generator=gen))
            model_out = torch.cat([eps, v], dim=1) if variance_type == "learned_range" else eps
            seed = 1000 + t
            noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
            out = sched.step(model_out, t, sample, generator=torch.Generator().manual_seed(seed))
            cases.append(
                dict(
                    variance_type=variance_type,
                    t=t,
                    sample=flat(sample),
                    eps=flat(eps),
                    v=flat(v),
                    noise=flat(noise),
                    prev=flat(out.prev_sample),
                    pred_x0=flat(out.pred_original_sample),
                )
            )
    save("kandinsky_ddpm.json", dict(shape=list(SHAPE), cases=cases))


def record_guided_diffusion():
    from guided_diffusion.respace import space_timesteps
    from guided_diffusion.script_util import create_gaussian_diffusion

    diffusion = create_gaussian_diffusion(
        steps=500,
        learn_sigma=True,
        noise_schedule="linear",
        timestep_respacing="200",
    )
    use = sorted(space_timesteps(500, "200"))
    gen = torch.Generator().manual_seed(2)
    cases = []
    for index in [199, 120, 59, 1, 0]:
        x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
        eps = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
        v = torch.tanh(torch.randn(SHAPE, generator=gen, dtype=torch.float64))
        model_out = torch.cat([eps, v], dim=1)
        t = torch.full((SHAPE[0],), index, dtype=torch.long)
        seen = {}

        def model(x_in, t_in, **kwargs):
            seen["t"] = int(t_in[0])
            return model_out

        for clip in (False, True):
            out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip)
            cases.append(
                dict(
                    index=index,
                    model_t=seen["t"],
                    clip=clip,
                    x=flat(x),
                    eps=flat(eps),
                    v=flat(v),
                    mean=flat(out["mean"]),
                    log_variance=flat(out["log_variance"]),
                    pred_x0=flat(out["pred_xstart"]),
                )
            )
    other = {
        spec: sorted(space_timesteps(n, spec))
        for n, spec in [(500, "200"), (1000, "ddim50"), (1000, "10,15,20"), (250, "250"), (100, "ddim25")]
    }
    other = {f"{k}": v for k, v in other.items()}
    save(
        "dime_respaced.json",
        dict(
            use_timesteps=use,
            timestep_map=[int(v) for v in diffusion.timestep_map],
            betas=[float(b) for b in diffusion.betas],
            alphas_cumprod=[float(a) for a in diffusion.alphas_cumprod],
            posterior_variance=[float(a) for a in diffusion.posterior_variance],
            posterior_log_variance_clipped=[float(a) for a in diffusion.posterior_log_variance_clipped],
            shape=list(SHAPE),
            cases=cases,
            space_timesteps={
                "500:200": other["200"],
                "1000:ddim50": other["ddim50"],
                "1000:10,15,20": other["10,15,20"],
                "250:250": other["250"],
                "100:ddim25": other["ddim25"],
            },
        ),
    )


if __name__ == "__main__":
    record_ddim()
    record_ddpm()
    record_guided_diffusion()
