//! The steps a sampler visits, and all per-step tensor math.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::per_sample;
use foil_core::{DenoiserOutput, Error, Result};

use crate::NoiseSchedule;

/// How diffusers spreads `N` inference steps over `T` training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spacing {
    /// `t = i * (T / N) + steps_offset` for `i < N` (integer stride; Kandinsky 2.2, the
    /// edit-friendly inversion code: 991, 981, ..., 1 for 100 of 1000 with offset 1).
    #[default]
    Leading,
    /// `t = round(T - i * T / N) - 1`: always includes `T - 1`.
    Trailing,
    /// `t = round(linspace(0, T - 1, N))`.
    Linspace,
}

/// How the variance of the reverse step is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VarianceType {
    /// The posterior variance `beta_tilde_t` (guided-diffusion's log clipped at `t = 0`).
    #[default]
    FixedSmall,
    /// `beta_t`, with the first step's replaced by `beta_tilde_1` (guided-diffusion).
    FixedLarge,
    /// The network outputs the log-variance directly.
    Learned,
    /// The network outputs `v` in `[-1, 1]`; `log var = frac log(beta_t) + (1 - frac) log(beta_tilde_t)`
    /// with `frac = (v + 1) / 2` (guided-diffusion, the Kandinsky 2.2 decoder).
    LearnedRange,
}

/// The result of one reverse step.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// The sample at the next (less noisy) step.
    pub prev_sample: Tensor<B, 4>,
    /// The clean-image estimate used by the step.
    pub pred_x0: Tensor<B, 4>,
    /// The deterministic part of the step (the posterior mean for DDPM).
    pub mean: Tensor<B, 4>,
    /// The standard deviation the noise was scaled by (broadcastable to the sample).
    pub std: Tensor<B, 4>,
}

/// The steps a sampler visits, ascending: step `k` feeds timestep `timesteps[k]` to the network
/// and moves from `abar[k]` to `abar_prev[k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Steps {
    num_train_timesteps: usize,
    timesteps: Vec<usize>,
    abar: Vec<f64>,
    abar_prev: Vec<f64>,
}

impl Steps {
    /// Every step of the training schedule, in order.
    pub fn full(schedule: &NoiseSchedule) -> Self {
        let keep: Vec<usize> = (0..schedule.len()).collect();
        Self::respaced(schedule, &keep).expect("the full range is a valid subset")
    }

    /// guided-diffusion respacing: keep the steps `keep` (strictly increasing, each below
    /// `T`). The kept steps form a new chain whose betas are `1 - abar_s / abar_prev_kept`, so
    /// `abar` at every kept step is exactly the original one.
    pub fn respaced(schedule: &NoiseSchedule, keep: &[usize]) -> Result<Self> {
        if keep.is_empty() {
            return Err(Error::Empty {
                what: "kept timesteps".into(),
                hint: "respacing needs at least one step".into(),
            });
        }
        if let Some(w) = keep.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::format(
                "kept timesteps",
                format!("must be strictly increasing, found {} then {}", w[0], w[1]),
            ));
        }
        let abar = keep
            .iter()
            .map(|&t| schedule.abar(t))
            .collect::<Result<Vec<_>>>()?;
        let mut abar_prev = vec![1.0];
        abar_prev.extend_from_slice(&abar[..abar.len() - 1]);
        Ok(Self {
            num_train_timesteps: schedule.len(),
            timesteps: keep.to_vec(),
            abar,
            abar_prev,
        })
    }

    /// diffusers-style spacing of `num_inference_steps` steps (as `DDIMScheduler.set_timesteps`).
    ///
    /// Each step moves from `t` to `t - T / N` (integer division). Past the first training
    /// step the target is `abar = 1` if `set_alpha_to_one`, else `abar_0` (Kandinsky 2.2:
    /// `false`). `steps_offset` applies to [`Spacing::Leading`] only, as in diffusers.
    pub fn inference(
        schedule: &NoiseSchedule,
        num_inference_steps: usize,
        spacing: Spacing,
        steps_offset: usize,
        set_alpha_to_one: bool,
    ) -> Result<Self> {
        let t_train = schedule.len();
        if num_inference_steps == 0 || num_inference_steps > t_train {
            return Err(Error::out_of_range(
                "number of inference steps",
                format!("in 1..={t_train} (the training steps)"),
                num_inference_steps,
            ));
        }
        let n = num_inference_steps;
        let mut timesteps: Vec<usize> = match spacing {
            Spacing::Leading => {
                let ratio = t_train / n;
                (0..n).map(|i| i * ratio + steps_offset).collect()
            }
            Spacing::Trailing => {
                let ratio = t_train as f64 / n as f64;
                (0..n)
                    .map(|i| round_half_even(t_train as f64 - i as f64 * ratio) as usize - 1)
                    .rev()
                    .collect()
            }
            Spacing::Linspace => {
                let last = (t_train - 1) as f64;
                (0..n)
                    .map(|i| {
                        let x = if n == 1 {
                            0.0
                        } else {
                            last * i as f64 / (n - 1) as f64
                        };
                        round_half_even(x) as usize
                    })
                    .collect()
            }
        };
        timesteps.dedup();
        if let Some(&t) = timesteps.iter().find(|&&t| t >= t_train) {
            return Err(Error::out_of_range(
                "inference timestep (after steps_offset)",
                format!("below {t_train}"),
                t,
            ));
        }
        let final_abar = if set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        let jump = t_train / n;
        let abar = timesteps
            .iter()
            .map(|&t| schedule.alphas_cumprod()[t])
            .collect();
        let abar_prev = timesteps
            .iter()
            .map(|&t| {
                t.checked_sub(jump)
                    .map_or(final_abar, |p| schedule.alphas_cumprod()[p])
            })
            .collect();
        Ok(Self {
            num_train_timesteps: t_train,
            timesteps,
            abar,
            abar_prev,
        })
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    /// Always false: there is at least one step.
    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }

    /// Number of steps `T` of the training schedule these steps were taken from: every
    /// timestep lies in `0..T`.
    pub fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }

    /// Network timesteps, ascending (`timesteps()[k]` for step `k`).
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// Network timesteps in sampling order (descending), as diffusers lists them.
    pub fn timesteps_desc(&self) -> Vec<usize> {
        self.timesteps.iter().rev().copied().collect()
    }

    /// `abar` at step `k`.
    pub fn abar(&self, k: usize) -> f64 {
        self.abar[k]
    }

    /// `abar` of the step that step `k` moves to.
    pub fn abar_prev(&self, k: usize) -> f64 {
        self.abar_prev[k]
    }

    /// `abar` at every step, ascending.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.abar
    }

    /// The effective beta of step `k`: `1 - abar_k / abar_prev_k`.
    pub fn beta(&self, k: usize) -> f64 {
        1.0 - self.abar[k] / self.abar_prev[k]
    }

    /// The effective betas of all steps (the respaced schedule's betas).
    pub fn betas(&self) -> Vec<f64> {
        (0..self.len()).map(|k| self.beta(k)).collect()
    }

    /// The posterior variance `beta_tilde_k = (1 - abar_prev) / (1 - abar) * beta_k`.
    pub fn posterior_variance(&self, k: usize) -> f64 {
        (1.0 - self.abar_prev[k]) / (1.0 - self.abar[k]) * self.beta(k)
    }

    /// `log beta_tilde_k`, with step 0's value (0 when `abar_prev = 1`) replaced by step 1's,
    /// as guided-diffusion's `posterior_log_variance_clipped`.
    pub fn posterior_log_variance_clipped(&self, k: usize) -> f64 {
        let v = self.posterior_variance(k);
        if k == 0 && self.len() > 1 {
            self.posterior_variance(1).ln()
        } else {
            v.max(1e-20).ln()
        }
    }

    /// The DDIM variance `sigma^2 / eta^2 = (1 - abar_prev)/(1 - abar) (1 - abar/abar_prev)`.
    /// Equal to [`posterior_variance`](Self::posterior_variance).
    pub fn ddim_variance(&self, k: usize) -> f64 {
        self.posterior_variance(k)
    }

    fn check_ks(&self, ks: &[usize], batch: usize) -> Result<()> {
        if ks.len() != batch && ks.len() != 1 {
            return Err(Error::shape(
                "step indices",
                format!("1 (shared) or {batch} (one per sample)"),
                ks.len(),
            ));
        }
        if let Some(&k) = ks.iter().find(|&&k| k >= self.len()) {
            return Err(Error::out_of_range(
                "step index",
                format!("below {} (the number of steps)", self.len()),
                k,
            ));
        }
        Ok(())
    }

    /// `[N, 1, 1, 1]` (or `[1, 1, 1, 1]` for a shared index) of `f(k)` per sample.
    fn coef<B: Backend>(
        &self,
        ks: &[usize],
        batch: usize,
        device: &B::Device,
        f: impl Fn(usize) -> f64,
    ) -> Result<Tensor<B, 4>> {
        self.check_ks(ks, batch)?;
        let v: Vec<f64> = ks.iter().map(|&k| f(k)).collect();
        Ok(per_sample(&v, device))
    }

    /// Forward noising: `x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) noise`.
    pub fn q_sample<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        ks: &[usize],
        noise: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        same_dims(&x0, &noise, "q_sample noise")?;
        let (n, dev) = (x0.dims()[0], x0.device());
        let a = self.coef::<B>(ks, n, &dev, |k| self.abar[k].sqrt())?;
        let s = self.coef::<B>(ks, n, &dev, |k| (1.0 - self.abar[k]).sqrt())?;
        Ok(x0 * a + noise * s)
    }

    /// The one-step (Tweedie) clean estimate `x0 = (x_k - sqrt(1 - abar_k) eps) / sqrt(abar_k)`.
    pub fn predict_x0<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        ks: &[usize],
        eps: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        same_dims(&x_t, &eps, "predicted noise")?;
        let (n, dev) = (x_t.dims()[0], x_t.device());
        let a = self.coef::<B>(ks, n, &dev, |k| 1.0 / self.abar[k].sqrt())?;
        let s = self.coef::<B>(ks, n, &dev, |k| {
            ((1.0 - self.abar[k]) / self.abar[k]).sqrt()
        })?;
        Ok(x_t * a - eps * s)
    }

    /// The noise implied by a clean estimate: `eps = (x_k - sqrt(abar_k) x0) / sqrt(1 - abar_k)`.
    pub fn predict_eps<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        ks: &[usize],
        x0: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        same_dims(&x_t, &x0, "clean estimate")?;
        let (n, dev) = (x_t.dims()[0], x_t.device());
        let a = self.coef::<B>(ks, n, &dev, |k| 1.0 / (1.0 - self.abar[k]).sqrt())?;
        let b = self.coef::<B>(ks, n, &dev, |k| {
            (self.abar[k] / (1.0 - self.abar[k])).sqrt()
        })?;
        Ok(x_t * a - x0 * b)
    }

    /// The mean of `q(x_prev | x_k, x0)`.
    pub fn posterior_mean<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        x_t: Tensor<B, 4>,
        ks: &[usize],
    ) -> Result<Tensor<B, 4>> {
        same_dims(&x_t, &x0, "clean estimate")?;
        let (n, dev) = (x_t.dims()[0], x_t.device());
        let c0 = self.coef::<B>(ks, n, &dev, |k| {
            self.abar_prev[k].sqrt() * self.beta(k) / (1.0 - self.abar[k])
        })?;
        let ct = self.coef::<B>(ks, n, &dev, |k| {
            (1.0 - self.beta(k)).sqrt() * (1.0 - self.abar_prev[k]) / (1.0 - self.abar[k])
        })?;
        Ok(x0 * c0 + x_t * ct)
    }

    /// The log-variance of the reverse step, broadcastable to the sample: `[N, 1, 1, 1]` for
    /// fixed types, the shape of `v` for learned ones (which need `v`).
    pub fn log_variance<B: Backend>(
        &self,
        ks: &[usize],
        batch: usize,
        kind: VarianceType,
        v: Option<Tensor<B, 4>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        let fixed_large = |k: usize| {
            if k == 0 && self.len() > 1 {
                self.posterior_variance(1).ln()
            } else {
                self.beta(k).ln()
            }
        };
        match (kind, v) {
            (VarianceType::FixedSmall, _) => self.coef(ks, batch, device, |k| {
                self.posterior_log_variance_clipped(k)
            }),
            (VarianceType::FixedLarge, _) => self.coef(ks, batch, device, fixed_large),
            (VarianceType::Learned, Some(v)) => {
                self.check_ks(ks, batch)?;
                Ok(v)
            }
            (VarianceType::LearnedRange, Some(v)) => {
                let min = self.coef::<B>(ks, batch, device, |k| {
                    self.posterior_log_variance_clipped(k)
                })?;
                let max = self.coef::<B>(ks, batch, device, |k| self.beta(k).ln())?;
                let frac = (v + 1.0) * 0.5;
                Ok(frac.clone() * max + (frac.neg() + 1.0) * min)
            }
            (kind, None) => Err(Error::format(
                "denoiser output",
                format!("{kind:?} needs the learned-variance channels, the denoiser gave none"),
            )),
        }
    }

    /// The variance guided-diffusion's `p_mean_variance` returns beside the mean, by which a
    /// guided sampler shifts the mean (`mu - variance g`): for fixed-small the *unclipped*
    /// posterior variance (0 at step 0, so the last step takes no guidance), otherwise
    /// `exp(log_var)` with `log_var` from [`log_variance`](Self::log_variance).
    pub fn model_variance<B: Backend>(
        &self,
        ks: &[usize],
        batch: usize,
        kind: VarianceType,
        log_var: Tensor<B, 4>,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        match kind {
            VarianceType::FixedSmall => {
                self.coef(ks, batch, device, |k| self.posterior_variance(k))
            }
            _ => Ok(log_var.exp()),
        }
    }

    /// One ancestral DDPM step from `x_k` with the network output `out` and standard-normal
    /// `noise`: `x_prev = mu(x_k, x0_hat) + exp(log_var / 2) noise`, no noise where `k = 0`.
    /// `clip_x0` clamps the clean estimate to `[-1, 1]` first (guided-diffusion's
    /// `clip_denoised`).
    pub fn ddpm_step<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        ks: &[usize],
        out: DenoiserOutput<B>,
        kind: VarianceType,
        clip_x0: bool,
        noise: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        same_dims(&x_t, &noise, "step noise")?;
        let (n, dev) = (x_t.dims()[0], x_t.device());
        let mut x0 = self.predict_x0(x_t.clone(), ks, out.eps)?;
        if clip_x0 {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let mean = self.posterior_mean(x0.clone(), x_t, ks)?;
        let log_var = self.log_variance(ks, n, kind, out.variance, &dev)?;
        let nonzero = self.coef::<B>(ks, n, &dev, |k| if k == 0 { 0.0 } else { 1.0 })?;
        let std = (log_var * 0.5).exp() * nonzero;
        Ok(StepOutput {
            prev_sample: mean.clone() + noise * std.clone(),
            pred_x0: x0,
            mean,
            std,
        })
    }

    /// One DDIM step (Song et al., eq. 12): `x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev -
    /// sigma^2) eps + sigma noise`, `sigma = eta sqrt(ddim_variance)`. `noise` is required
    /// when `eta > 0`; with `eta = 0` the step is deterministic.
    pub fn ddim_step<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        ks: &[usize],
        eps: Tensor<B, 4>,
        eta: f64,
        noise: Option<Tensor<B, 4>>,
    ) -> Result<StepOutput<B>> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::out_of_range("DDIM eta", "finite and >= 0", eta));
        }
        let (n, dev) = (x_t.dims()[0], x_t.device());
        let x0 = self.predict_x0(x_t, ks, eps.clone())?;
        let sigma = |k: usize| eta * self.ddim_variance(k).sqrt();
        let c0 = self.coef::<B>(ks, n, &dev, |k| self.abar_prev[k].sqrt())?;
        let ce = self.coef::<B>(ks, n, &dev, |k| {
            (1.0 - self.abar_prev[k] - sigma(k).powi(2)).max(0.0).sqrt()
        })?;
        let std = self.coef::<B>(ks, n, &dev, sigma)?;
        let mean = x0.clone() * c0 + eps * ce;
        let prev_sample = match noise {
            Some(z) => {
                same_dims(&mean, &z, "step noise")?;
                mean.clone() + z * std.clone()
            }
            None if eta == 0.0 => mean.clone(),
            None => {
                return Err(Error::format(
                    "DDIM step",
                    format!("eta = {eta} > 0 needs a noise tensor, none was given"),
                ));
            }
        };
        Ok(StepOutput {
            prev_sample,
            pred_x0: x0,
            mean,
            std,
        })
    }

    /// DDIM inversion with `eta = 0`, the step [`ddim_step`](Self::ddim_step) undoes: from
    /// `x_prev` (at `abar_prev`) to `x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps` with
    /// `x0 = (x_prev - sqrt(1 - abar_prev) eps) / sqrt(abar_prev)` and the same `eps`.
    pub fn ddim_inverse_step<B: Backend>(
        &self,
        x_prev: Tensor<B, 4>,
        ks: &[usize],
        eps: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        same_dims(&x_prev, &eps, "predicted noise")?;
        let (n, dev) = (x_prev.dims()[0], x_prev.device());
        let a = self.coef::<B>(ks, n, &dev, |k| 1.0 / self.abar_prev[k].sqrt())?;
        let s = self.coef::<B>(ks, n, &dev, |k| {
            ((1.0 - self.abar_prev[k]) / self.abar_prev[k]).sqrt()
        })?;
        let x0 = x_prev * a - eps.clone() * s;
        let c0 = self.coef::<B>(ks, n, &dev, |k| self.abar[k].sqrt())?;
        let ce = self.coef::<B>(ks, n, &dev, |k| (1.0 - self.abar[k]).sqrt())?;
        Ok(x0 * c0 + eps * ce)
    }
}

fn same_dims<B: Backend>(a: &Tensor<B, 4>, b: &Tensor<B, 4>, what: &'static str) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(Error::shape(
            what,
            foil_core::tensor::fmt_dims(&a.dims()),
            foil_core::tensor::fmt_dims(&b.dims()),
        ))
    }
}

pub(crate) fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}
