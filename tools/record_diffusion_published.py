"""Method-level parity recording of DIFFusion's edit (cvlab-columbia/diff-usion, eval.py and
models/kandinsky_pipelines.py) on the tiny published-layout folders that
tools/write_published_tiny.py writes, with the diffusers / transformers components loaded FROM
THOSE FOLDERS (from_pretrained on the paths), driven step by step as the authors' code does.

Pinned versions: torch 2.15.0, diffusers 0.31.0, transformers 4.46.3, safetensors (tools/requirements.txt).
The authors pin diffusers 0.32.2 / transformers 4.41.0 / torch 2.3.0 (not run here).

Usage: tools/.venv/bin/python tools/write_published_tiny.py   (first: the folders)
       tools/.venv/bin/python tools/record_diffusion_published.py   (about 10 s on 2 cores)
Writes tests/fixtures/published/diffusion_parity.safetensors (float32 tensors).

What is reproduced (the authors' names in brackets):
  pipeline = KandinskyV22Pipeline.from_pretrained(decoder folder)   [eval.py]
  pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config); set_timesteps(N)
  image_processor / image_encoder = CLIPImageProcessor / CLIPVisionModelWithProjection
      .from_pretrained(prior folder, subfolder=...)                  [KandinskyV22PipelineWithInversion]
  null embedding = KandinskyV22PriorPipeline.get_zero_embed: image_encoder(zeros(1, 3, 16, 16))
      .image_embeds at the encoder's image_size, repeated over the batch  [prior.get_zero_embed]
  movq_processor = VaeImageProcessor() (the authors' VQVAEImageProcessor has the same settings:
      do_resize, lanczos, do_normalize; a tensor input of the target size is not resized)
  CLIP embeddings: image_encoder(**image_processor(images=<[B,3,S,S] in [0,1]>, return_tensors="pt",
      do_rescale=False)).image_embeds   [eval.py, scripts/save_embeds.py]. transformers' resize
      goes through PIL: the float image is turned into uint8 by x * 255 (in float64, back to
      float32) then truncation, not rounding (exact for k / 255 inputs like these: checked for all
      k), resampled by PIL (bicubic, 32 -> 16 here), divided by 255, center-cropped, normalised.
  edited embeds (ManipulateMode.cond_avg, direction_sign -1 for an input of class 0, m_scale 2):
      n = e / |e|; e' = (n + sign * m_scale * (mean(pos / |pos|) - mean(neg / |neg|))) * |e|
      with pos = class-0 embeds ("0_val.pt"), neg = class-1 embeds ("1_val.pt").
  ef_ddpm_inversion(source_embeds=None, image, eta=1, generator=torch.Generator("cpu").manual_seed(0)):
      w0 = movq.encode(movq_processor.preprocess(image, S, S)).latents (no scaling factor), then
      inversion_forward_process with the null embedding only (no CFG when source_embeds is None).
  sample_ddpm(xts, zs, target_embeds=e', guidance_scale=4, eta=1, T_skip=round(t, 3) for t in
      np.linspace(0.9, 0, 10), output_type="pt", mode=cond_avg, manipulation_scale=2):
      T_skip -> int(T_skip * N); inversion_reverse_process with CFG against the null embedding;
      movq.decode(latents, force_not_quantize=True), movq_processor.postprocess(.., "pt") =
      (x / 2 + 0.5).clamp(0, 1).

Index conventions (N = 10 steps; DDIM "leading" spacing, steps_offset 1):
  timesteps[k], k = 0..N-1, descending: 901, 801, ..., 101, 1.
  xts[:, 0] = w0; xts[:, j] (j = 1..N) = the latent at timestep timesteps[N - j]
      (xts[:, 1] at t = 1, xts[:, N] at t = 901). sample_xts_from_x0 fills j = 1, 2, ..., N in that
      order (ascending t), one randn_tensor(w0.shape, generator) draw each:
      xts[:, j] = w0 * sqrt(abar[t]) + noise_j * sqrt(1 - abar[t]).
  Forward loop (inversion_forward_process), k = 0..N-1, t = timesteps[k], idx = N - 1 - k:
      eps = unet(xts[:, idx + 1], t, null)[:, :4]   (xts[:, idx + 1] already corrected by the
      previous iteration); mu = sqrt(a_prev) * (xts[:, idx+1] - sqrt(1 - abar[t]) eps) / sqrt(abar[t])
      + sqrt(1 - a_prev - eta * var_t) * eps; z = (xts[:, idx] - mu) / (eta * sqrt(var_t));
      zs[:, idx] = z; xts[:, idx] = mu + eta * sqrt(var_t) * z.  After the loop zs[:, 0] = 0.
      a_prev = abar[t - 100] or, for t - 100 < 0, final_alpha_cumprod = abar[0] (set_alpha_to_one
      false); var_t = (1 - a_prev) / (1 - abar[t]) * (1 - abar[t] / a_prev)   [get_variance].
      So zs[:, idx] belongs to the step from timesteps[N - 1 - idx] (zs[:, N-1] to the t = 901 step,
      zs[:, 0], zeroed, to the t = 1 step).
  Reverse (inversion_reverse_process) for T_skip s = int(T_skip * N), M = N - s:
      xt = xts_inverted[:, M] (timestep timesteps[s]); for p = 0..M-1: t = timesteps[s + p],
      idx = M - 1 - p (= N - 1 - (s + p), the forward's idx of the same t):
      eps = CFG(unet([xt, xt], t, [null, e'])[:, :4], 4); xt = reverse_step(eps, t, xt, eta, zs[:, idx])
      = sqrt(a_prev) * pred_x0 + sqrt(1 - a_prev - eta * var_t) * eps + eta * sqrt(var_t) * zs[:, idx].
  `xts` is recorded as sample_xts_from_x0 returned it (before the loop); `xts_inverted` after it.
  The two differ only by rounding (mu + s * ((x - mu) / s)); the reverse starts from xts_inverted.

The 8-channel UNet output: the authors keep it whole when `scheduler.config.variance_type` is
"learned" or "learned_range" and otherwise take its first 4 channels (noise_pred.split(4, dim=1)[0]).
DDIMScheduler.from_config keeps the DDPM config's variance_type as a hidden config entry, so with
the published value "learned_range" their test is true, nothing is split, and the next line
(xt - sqrt(1 - abar) * noise_pred with 4 vs 8 channels) raises; this script shows that error and
then takes the first 4 channels (the epsilon half; CFG of the whole output then splitting equals
CFG of the epsilon half), which is the only way the authors' formulas run.

Tensors written (D = 24 = CLIP projection_dim, S = 32, latents h = w = 16, N = 10):
  image [1,3,S,S], class0_images [3,3,S,S], class1_images [3,3,S,S]: smooth random images in [0,1],
      quantised to k / 255 (as ToDtype(float32, scale=True) of decoded files gives);
  pixel_values [1,3,16,16] (image_processor output for `image`); image_embeds [1,D];
  zero_embeds [1,D]; class0_embeds [3,D]; class1_embeds [3,D]; edited_embeds [1,D];
  w0 [1,4,h,w]; decoded_w0 [1,3,S,S] (movq decode of w0, postprocessed to [0,1]);
  xts [1,N+1,4,h,w]; xts_inverted [1,N+1,4,h,w]; zs [1,N,4,h,w]; timesteps [N];
  t_skips [10] (0.9, 0.8, ..., 0.0); t_skip_steps [10] (int(T_skip * N) as float);
  latents_{i} [1,4,h,w] and sample_{i} [1,3,S,S] for T_skip = t_skips[i], i = 0..9;
  reconstruction [1,4,h,w]: the check below's output (T_skip 0, null embedding, no CFG).

Check done here: regenerating with T_skip = 0, the null (source) embedding and no CFG retraces
xts_inverted[:, idx] at every step idx >= 1; its last step (t = 1, noise zs[:, 0] = 0) gives
mu instead of w0, off by eta * sqrt(var_1) * z_0 (z_0 the zeroed noise); printed.
"""
import pathlib
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

torch.set_num_threads(2)
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/published"
DEC = OUT / "kandinsky-2-2-decoder"
PRIOR = OUT / "kandinsky-2-2-prior"

S = 32  # image side
N = 10  # inference steps
ETA = 1.0
GS_TARGET = 4.0
M_SCALE = 2.0
DIRECTION_SIGN = -1  # eval.py get_direction_sign(0): the input is of class 0


class Authors:
    """The authors' KandinskyV22PipelineWithInversion methods used by eval.py, on components
    loaded from the folders (their __init__ downloads the prior from the hub instead)."""

    def __init__(self):
        pipe = KandinskyV22Pipeline.from_pretrained(DEC)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.pipe = pipe
        self.unet, self.movq, self.scheduler = pipe.unet.eval(), pipe.movq.eval(), pipe.scheduler
        self.image_processor = CLIPImageProcessor.from_pretrained(PRIOR, subfolder="image_processor")
        self.image_encoder = CLIPVisionModelWithProjection.from_pretrained(PRIOR, subfolder="image_encoder").eval()
        # The prior pipeline's get_zero_embed only reads `image_encoder` and `device`.
        self.prior = SimpleNamespace(image_encoder=self.image_encoder, device=torch.device("cpu"))
        self.movq_processor = VaeImageProcessor(do_resize=True, resample="lanczos", do_normalize=True)
        self.keeps_variance = hasattr(self.scheduler.config, "variance_type") and self.scheduler.config.variance_type in [
            "learned",
            "learned_range",
        ]

    def get_zero_embed(self, batch_size):
        return KandinskyV22PriorPipeline.get_zero_embed(self.prior, batch_size=batch_size)

    def unet_out(self, x, t, embeds):
        return self.unet(x, timestep=t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": embeds}).sample

    def eps(self, noise_pred, channels):
        # The authors: `if not keeps_variance: noise_pred, _ = noise_pred.split(channels, dim=1)`.
        # With keeps_variance the 8 channels reach 4-channel arithmetic and fail (shown in main);
        # the split half is what their formulas need.
        return noise_pred.split(channels, dim=1)[0]

    def sample_xts_from_x0(self, x0, timesteps, num_inference_steps, generator):
        bsz, in_channels, height, width = x0.shape
        alpha_bar = self.scheduler.alphas_cumprod
        sqrt_one_minus_alpha_bar = (1 - alpha_bar) ** 0.5
        t_to_idx = {int(v): k for k, v in enumerate(timesteps)}
        xts = torch.zeros((bsz, num_inference_steps + 1, in_channels, height, width))
        xts[:, 0, ...] = x0
        for t in reversed(timesteps):
            idx = num_inference_steps - t_to_idx[int(t)]
            noise = randn_tensor(shape=x0.shape, generator=generator, device=torch.device("cpu"), dtype=x0.dtype)
            xts[:, idx, ...] = x0 * (alpha_bar[t] ** 0.5) + noise * sqrt_one_minus_alpha_bar[t]
        return xts

    def get_variance(self, timestep):
        s = self.scheduler
        prev_timestep = timestep - s.config.num_train_timesteps // s.num_inference_steps
        alpha_prod_t = s.alphas_cumprod[timestep]
        alpha_prod_t_prev = s.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else s.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        return (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)

    def inversion_forward_process(self, x0, num_inference_steps, etas, generator):
        """image_embeds=None (eval.py's source_embeds=None): the null embedding only, no CFG."""
        s = self.scheduler
        bsz, in_channels, height, width = x0.shape
        uncond_embeds = self.get_zero_embed(bsz)
        timesteps = s.timesteps
        etas = [etas] * num_inference_steps
        xts = self.sample_xts_from_x0(x0, timesteps, num_inference_steps, generator)
        xts_before = xts.clone()
        alpha_bar = s.alphas_cumprod
        zs = torch.zeros((bsz, num_inference_steps, in_channels, height, width))
        t_to_idx = {int(v): k for k, v in enumerate(timesteps)}
        for t in timesteps:
            idx = num_inference_steps - t_to_idx[int(t)] - 1
            xt = xts[:, idx + 1, ...]
            with torch.no_grad():
                noise_pred = self.eps(self.unet_out(xt, t, uncond_embeds), x0.shape[1])
            xtm1 = xts[:, idx, ...]
            pred_original_sample = (xt - (1 - alpha_bar[t]) ** 0.5 * noise_pred) / alpha_bar[t] ** 0.5
            prev_timestep = t - s.config.num_train_timesteps // s.num_inference_steps
            alpha_prod_t_prev = s.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else s.final_alpha_cumprod
            variance = self.get_variance(t)
            pred_sample_direction = (1 - alpha_prod_t_prev - etas[idx] * variance) ** 0.5 * noise_pred
            mu_xt = alpha_prod_t_prev ** 0.5 * pred_original_sample + pred_sample_direction
            z = (xtm1 - mu_xt) / (etas[idx] * variance**0.5)
            zs[:, idx, ...] = z
            xtm1 = mu_xt + (etas[idx] * variance**0.5) * z
            xts[:, idx, ...] = xtm1
        z0 = zs[:, 0].clone()
        zs[:, 0, ...] = torch.zeros_like(zs[:, 0, ...])
        return zs, xts, xts_before, z0

    def reverse_step(self, model_output, timestep, sample, eta, variance_noise):
        s = self.scheduler
        prev_timestep = timestep - s.config.num_train_timesteps // s.num_inference_steps
        alpha_prod_t = s.alphas_cumprod[timestep]
        alpha_prod_t_prev = s.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else s.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        variance = self.get_variance(timestep)
        pred_sample_direction = (1 - alpha_prod_t_prev - eta * variance) ** (0.5) * model_output
        prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
        if eta > 0:
            prev_sample = prev_sample + eta * variance ** (0.5) * variance_noise
        return prev_sample

    def inversion_reverse_process(self, xT, guidance_scale, image_embeds, etas, zs, trace=None):
        """negative_image_embeds=None, mode=cond_avg (plain CFG), no mask / controller."""
        s = self.scheduler
        bsz = xT.shape[0]
        do_cfg = guidance_scale > 1
        uncond_embeds = self.get_zero_embed(bsz)
        if do_cfg:
            image_embeds = torch.cat([uncond_embeds, image_embeds])
        etas = [etas] * s.num_inference_steps
        timesteps = s.timesteps
        xt = xT.clone()
        sub = timesteps[-zs.shape[1]:]
        t_to_idx = {int(v): k for k, v in enumerate(sub)}
        for t in sub:
            idx = s.num_inference_steps - t_to_idx[int(t)] - (s.num_inference_steps - zs.shape[1] + 1)
            with torch.no_grad():
                latents = torch.cat([xt])
                latent_model_input = torch.cat([xt, latents]) if do_cfg else latents
                noise_pred = self.unet_out(latent_model_input, t, image_embeds)
                z = zs[:, idx]
                noise_pred = self.eps(noise_pred, xt.shape[1])
                if do_cfg:
                    out_uncond, out_cond = noise_pred.chunk(2)
                    noise_pred = out_uncond + guidance_scale * (out_cond - out_uncond)
            xt = self.reverse_step(noise_pred, t, xt, eta=etas[idx], variance_noise=z)
            if trace is not None:
                trace.append((idx, xt.clone()))
        return xt

    def decode(self, latents):
        with torch.no_grad():
            image = self.movq.decode(latents, force_not_quantize=True)["sample"]
        return self.movq_processor.postprocess(image.detach(), output_type="pt")

    def sample_ddpm(self, latents, zs, target_embeds, num_inference_steps, guidance_scale, eta, T_skip):
        if isinstance(T_skip, float):
            T_skip = int(T_skip * num_inference_steps)
        out = self.inversion_reverse_process(
            xT=latents[:, num_inference_steps - T_skip],
            guidance_scale=guidance_scale,
            image_embeds=target_embeds,
            etas=eta,
            zs=zs[:, : (num_inference_steps - T_skip)],
        )
        return out, self.decode(out), T_skip

    def clip_embeds(self, images):
        with torch.no_grad():
            inputs = self.image_processor(images=images, return_tensors="pt", do_rescale=False)
            return inputs.pixel_values, self.image_encoder(**inputs).image_embeds


def smooth_images(gen, n, tint):
    """Bicubic-upsampled 4x4 colour fields plus mild noise, quantised to k / 255."""
    coarse = torch.rand(n, 3, 4, 4, generator=gen) * 0.8 + 0.1
    img = F.interpolate(coarse, size=(S, S), mode="bicubic", align_corners=False)
    img = img + torch.tensor(tint).view(1, 3, 1, 1) + 0.04 * torch.randn(n, 3, S, S, generator=gen)
    return (img.clamp(0, 1) * 255).round() / 255


def main():
    t0 = time.time()
    a = Authors()
    s = a.scheduler
    assert s.config.set_alpha_to_one is False and torch.equal(s.final_alpha_cumprod, s.alphas_cumprod[0])
    print("DDIMScheduler.from_config: variance_type kept =", s.config.get("variance_type"),
          "-> authors' split skipped:", a.keeps_variance)

    gen = torch.Generator().manual_seed(3)
    image = smooth_images(gen, 1, (0.0, 0.0, 0.0))
    class0 = smooth_images(gen, 3, (0.1, 0.0, -0.1))
    class1 = smooth_images(gen, 3, (-0.1, 0.0, 0.1))

    # CLIP embeddings and the edit (eval.py, cond_avg).
    pixel_values, image_embeds = a.clip_embeds(image)
    _, pos_embeds = a.clip_embeds(class0)
    _, neg_embeds = a.clip_embeds(class1)
    with torch.no_grad():
        zero_embeds = a.get_zero_embed(1)
    orig = image_embeds.clone()
    norm_image_embeds = orig / orig.norm(dim=-1, keepdim=True)
    norm_pos_mean = (pos_embeds / pos_embeds.norm(dim=-1, keepdim=True)).mean(0)
    norm_neg_mean = (neg_embeds / neg_embeds.norm(dim=-1, keepdim=True)).mean(0)
    edited = norm_image_embeds + DIRECTION_SIGN * M_SCALE * (norm_pos_mean - norm_neg_mean)
    edited = edited * orig.norm(dim=-1, keepdim=True)

    # ef_ddpm_inversion.
    generator = torch.Generator(device="cpu").manual_seed(0)
    pre = a.movq_processor.preprocess(image, height=S, width=S)
    with torch.no_grad():
        w0 = a.movq.encode(pre).latents
    s.set_timesteps(N)
    if a.keeps_variance:
        # What the authors' next line does with the unsplit output.
        with torch.no_grad():
            out8 = a.unet_out(w0, s.timesteps[0], a.get_zero_embed(1))
        try:
            _ = w0 - (1 - s.alphas_cumprod[s.timesteps[0]]) ** 0.5 * out8
        except RuntimeError as e:
            print("authors' unsplit path:", str(e).splitlines()[0])
    zs, xts_inv, xts, z0 = a.inversion_forward_process(w0, N, ETA, generator)

    tensors = {
        "image": image, "class0_images": class0, "class1_images": class1,
        "pixel_values": pixel_values, "image_embeds": image_embeds, "zero_embeds": zero_embeds,
        "class0_embeds": pos_embeds, "class1_embeds": neg_embeds, "edited_embeds": edited,
        "w0": w0, "decoded_w0": a.decode(w0), "xts": xts, "xts_inverted": xts_inv, "zs": zs,
        "timesteps": s.timesteps.float(),
    }
    t_skips = [round(t, 3) for t in np.linspace(0.9, 0.0, 10)]
    steps = []
    for i, t_skip in enumerate(t_skips):
        latents, sample, k = a.sample_ddpm(xts_inv, zs, edited, N, GS_TARGET, ETA, t_skip)
        steps.append(k)
        tensors[f"latents_{i}"] = latents
        tensors[f"sample_{i}"] = sample
        print(f"T_skip {t_skip}: {N - k} steps from xts[:, {N - k}], latents |max| {latents.abs().max():.3f},"
              f" sample mean {sample.mean():.3f} (clamped share {((sample == 0) | (sample == 1)).float().mean():.2f})")
    tensors["t_skips"] = torch.tensor(t_skips, dtype=torch.float32)
    tensors["t_skip_steps"] = torch.tensor(steps, dtype=torch.float32)

    # Reconstruction check: T_skip 0, the null embedding, no CFG.
    trace = []
    rec = a.inversion_reverse_process(xts_inv[:, N], 1.0, zero_embeds, ETA, zs, trace=trace)
    worst = max((x - xts_inv[:, idx]).abs().max().item() for idx, x in trace if idx >= 1)
    sigma1 = ETA * a.get_variance(s.timesteps[-1]) ** 0.5
    last = (rec - (xts_inv[:, 0] - sigma1 * z0)).abs().max().item()
    print(f"reconstruction: steps idx>=1 vs xts_inverted |diff| max {worst:.2e}; final vs w0 |diff| max"
          f" {(rec - w0).abs().max():.4f} (sigma_1 = {sigma1:.4f}, |z_0| max {z0.abs().max():.2f});"
          f" final vs w0 - sigma_1 z_0 {last:.2e}")
    assert worst < 1e-4 and last < 1e-4
    tensors["reconstruction"] = rec

    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    path = OUT / "diffusion_parity.safetensors"
    save_file(tensors, str(path))
    for k, v in tensors.items():
        if not k.startswith(("latents_", "sample_")) or k.endswith("_0"):
            print(f"  {k:14} {list(v.shape)}")
    print(f"wrote {path} ({path.stat().st_size} bytes) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
