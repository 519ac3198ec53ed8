//! The inverter: configuration, inversion and regeneration.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::profile;
use foil_core::tensor::{ensure_finite, fmt_dims};
use foil_core::{Denoiser, Error, Noise, Result};
use foil_schedule::Steps;

use crate::NoiseMaps;

/// Settings of an edit-friendly inversion; [`init`](Self::init) builds the [`EfInverter`].
#[derive(Debug, Clone, PartialEq)]
pub struct EfInverterConfig {
    /// DDIM eta in `(0, 1]`: the share of the posterior variance carried by the noise maps.
    /// The reference uses 1.
    pub eta: f64,
    /// Classifier-free guidance scale while inverting with a source condition (1: no CFG).
    /// Scales above 1 are known to break reconstruction when generation uses another scale.
    pub source_guidance: f64,
    /// Classifier-free guidance scale while generating with a target condition (1: no CFG).
    pub target_guidance: f64,
    /// What the inversion keeps of the last noise map `z_0`.
    pub last_map: LastNoiseMap,
}

/// What an inversion keeps of the last noise map `z_0` (the one of the final step to `x_0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastNoiseMap {
    /// Keep it, so that regeneration with the inversion's own condition returns the input
    /// exactly (foil's default; the EF-DDPM authors agree it is right, DDPM_inversion issue 13).
    #[default]
    Keep,
    /// Set it to zero, as the public EF-DDPM and DIFFusion code does (`zs[:, 0] = 0`): the last
    /// step is the mean alone. The published DIFFusion preset uses it.
    Zero,
}

impl Default for EfInverterConfig {
    /// `eta = 1`, no guidance either way, the last noise map kept.
    fn default() -> Self {
        Self {
            eta: 1.0,
            source_guidance: 1.0,
            target_guidance: 1.0,
            last_map: LastNoiseMap::Keep,
        }
    }
}

impl EfInverterConfig {
    /// DIFFusion's public defaults: `eta = 1`, unconditional inversion, target guidance 4
    /// (the last noise map kept: foil's departure, see [`LastNoiseMap`]).
    pub fn diffusion() -> Self {
        Self {
            target_guidance: 4.0,
            ..Self::default()
        }
    }

    /// DIFFusion exactly as the authors' `eval.py` runs it: [`diffusion`](Self::diffusion) with
    /// the last noise map set to zero.
    pub fn diffusion_published() -> Self {
        Self {
            last_map: LastNoiseMap::Zero,
            ..Self::diffusion()
        }
    }

    /// Builds the inverter over `steps`, with the null condition used by the unconditional
    /// branch of classifier-free guidance and by unconditioned calls (`[1, D]` or `[D]`-like
    /// `[1, D]`; `None` for networks without conditioning).
    pub fn init<B: Backend>(
        &self,
        steps: Steps,
        null_condition: Option<Tensor<B, 2>>,
    ) -> Result<EfInverter<B>> {
        if !(self.eta > 0.0 && self.eta <= 1.0) {
            return Err(Error::out_of_range(
                "eta",
                "in (0, 1] (the noise maps divide by eta)",
                self.eta,
            ));
        }
        for (what, w) in [
            ("source guidance", self.source_guidance),
            ("target guidance", self.target_guidance),
        ] {
            if !w.is_finite() {
                return Err(Error::out_of_range(what, "finite", w));
            }
        }
        // With the last map zeroed, the final step needs no noise map, so its variance may be
        // 0 (diffusers' `set_alpha_to_one = true`: the step to abar = 1).
        let first_checked = usize::from(self.last_map == LastNoiseMap::Zero);
        if let Some(k) = (first_checked..steps.len()).find(|&k| steps.ddim_variance(k) <= 0.0) {
            return Err(Error::out_of_range(
                format!(
                    "posterior variance of step {k} (timestep {})",
                    steps.timesteps()[k]
                ),
                "> 0, since the noise map divides by it (build the steps with set_alpha_to_one = false)",
                steps.ddim_variance(k),
            ));
        }
        if let Some(null) = &null_condition {
            let [rows, _] = null.dims();
            if rows != 1 {
                return Err(Error::shape(
                    "null condition",
                    "[1, D]",
                    fmt_dims(&null.dims()),
                ));
            }
            ensure_finite(null, "null condition", "")?;
        }
        let coefs = (0..steps.len())
            .map(|k| {
                let (ap, var) = (steps.abar_prev(k), steps.ddim_variance(k));
                StepCoefs {
                    sqrt_abar_prev: ap.sqrt(),
                    // The reference's direction term uses eta * var (not eta^2 * var).
                    direction: (1.0 - ap - self.eta * var).max(0.0).sqrt(),
                    sigma: self.eta * var.sqrt(),
                }
            })
            .collect();
        Ok(EfInverter {
            config: self.clone(),
            steps,
            null: null_condition,
            coefs,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct StepCoefs {
    sqrt_abar_prev: f64,
    direction: f64,
    sigma: f64,
}

/// Edit-friendly DDPM inversion and regeneration over fixed [`Steps`].
#[derive(Debug, Clone)]
pub struct EfInverter<B: Backend> {
    config: EfInverterConfig,
    steps: Steps,
    null: Option<Tensor<B, 2>>,
    coefs: Vec<StepCoefs>,
}

impl<B: Backend> EfInverter<B> {
    /// The configuration it was built from.
    pub fn config(&self) -> &EfInverterConfig {
        &self.config
    }

    /// The steps it walks.
    pub fn steps(&self) -> &Steps {
        &self.steps
    }

    /// Number of steps `N`.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Inverts images `x0` (`[N, C, H, W]`) into noise maps.
    ///
    /// With `source = None` the model sees the null condition (DIFFusion's public code inverts
    /// this way); with a source condition `[N, D]` it is guided at `source_guidance`.
    pub fn invert<D: Denoiser<B>>(
        &self,
        model: &D,
        x0: Tensor<B, 4>,
        source: Option<Tensor<B, 2>>,
        noise: &mut Noise,
    ) -> Result<NoiseMaps<B>> {
        self.check_input(model, &x0, source.as_ref())?;
        // xs[0] = x0; xs[k + 1] = a fresh q_sample at step k (independent noise per step).
        let mut xs = Vec::with_capacity(self.steps.len() + 1);
        xs.push(x0.clone());
        for k in 0..self.steps.len() {
            let eps = noise.normal_like(&x0);
            xs.push(self.steps.q_sample(x0.clone(), &[k], eps)?);
        }
        self.invert_noised(model, xs, source)
    }

    /// Inverts from the noised samples passed in: `xs[0]` the input `x_0`, `xs[k + 1]` its
    /// sample at step `k` (the reference's `sample_xts_from_x0`), `N + 1` tensors of one shape.
    /// [`invert`](Self::invert) draws them and calls this; passing them in reproduces a
    /// recorded inversion exactly.
    pub fn invert_noised<D: Denoiser<B>>(
        &self,
        model: &D,
        mut xs: Vec<Tensor<B, 4>>,
        source: Option<Tensor<B, 2>>,
    ) -> Result<NoiseMaps<B>> {
        let n_steps = self.steps.len();
        if xs.len() != n_steps + 1 {
            return Err(Error::shape(
                "noised samples",
                format!("{} (the input, then one per step)", n_steps + 1),
                xs.len(),
            ));
        }
        let shape = xs[0].dims();
        if let Some(bad) = xs.iter().find(|x| x.dims() != shape) {
            return Err(Error::shape(
                "noised samples",
                format!("all {}", fmt_dims(&shape)),
                fmt_dims(&bad.dims()),
            ));
        }
        let batch = shape[0];
        self.check_input(model, &xs[0], source.as_ref())?;
        let mut zs = Vec::with_capacity(n_steps);
        for k in (0..n_steps).rev() {
            let mu = self.mean(
                model,
                xs[k + 1].clone(),
                k,
                batch,
                source.clone(),
                self.config.source_guidance,
            )?;
            let c = self.coefs[k];
            if k == 0 && self.config.last_map == LastNoiseMap::Zero {
                // The reference computes z_0 and then sets it to zero; x_0 stays the input.
                zs.push(mu.zeros_like());
                continue;
            }
            let z = (xs[k].clone() - mu.clone()) / c.sigma;
            ensure_finite(&z, "noise map", &format!("at step {k}"))?;
            // Re-derive the sample from z so that regeneration repeats exactly these
            // operations (and no error builds up); x_0 stays the input itself.
            if k > 0 {
                xs[k] = mu + z.clone() * c.sigma;
            }
            zs.push(z);
        }
        zs.reverse();
        NoiseMaps::new(xs, zs, self.steps.timesteps().to_vec(), self.config.eta)
    }

    /// Regenerates images from `maps`, skipping the `skip` noisiest steps: starts at the
    /// inverted sample `x_{N - skip}` and runs the remaining `N - skip` steps with `target`
    /// (`[N, D]`, or `None` for the null condition) at `target_guidance`.
    /// `skip = 0` runs every step; `skip = N` returns the input images.
    pub fn generate<D: Denoiser<B>>(
        &self,
        model: &D,
        maps: &NoiseMaps<B>,
        target: Option<Tensor<B, 2>>,
        skip: usize,
    ) -> Result<Tensor<B, 4>> {
        let n_steps = self.steps.len();
        if maps.timesteps() != self.steps.timesteps() || maps.eta() != self.config.eta {
            return Err(Error::format(
                "noise maps",
                format!(
                    "made over {} steps with eta {}, this inverter walks {} steps with eta {} \
                     (invert again, or build the inverter with the maps' steps)",
                    maps.timesteps().len(),
                    maps.eta(),
                    n_steps,
                    self.config.eta
                ),
            ));
        }
        if skip > n_steps {
            return Err(Error::out_of_range(
                "skip",
                format!("at most the number of steps, {n_steps}"),
                skip,
            ));
        }
        let mut x = maps.x(n_steps - skip).clone();
        let batch = maps.batch_size();
        self.check_input(model, &x, target.as_ref())?;
        for k in (0..n_steps - skip).rev() {
            x = self.step(model, x, k, batch, target.clone(), maps.z(k).clone())?;
        }
        Ok(x)
    }

    /// One regeneration step from `x` at step `k` (`[N, C, H, W]`) with the noise map `z` of
    /// that step passed in: `mu(x; target, target_guidance) + sigma_k z`, the EF-DDPM
    /// `reverse_step` with its `variance_noise`. [`generate`](Self::generate) is a loop over it.
    pub fn generate_step<D: Denoiser<B>>(
        &self,
        model: &D,
        x: Tensor<B, 4>,
        k: usize,
        target: Option<Tensor<B, 2>>,
        z: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        if k >= self.steps.len() {
            return Err(Error::out_of_range(
                "step",
                format!("below the number of steps, {}", self.steps.len()),
                k,
            ));
        }
        if z.dims() != x.dims() {
            return Err(Error::shape(
                "noise map",
                fmt_dims(&x.dims()),
                fmt_dims(&z.dims()),
            ));
        }
        self.check_input(model, &x, target.as_ref())?;
        let batch = x.dims()[0];
        self.step(model, x, k, batch, target, z)
    }

    fn step<D: Denoiser<B>>(
        &self,
        model: &D,
        x: Tensor<B, 4>,
        k: usize,
        batch: usize,
        target: Option<Tensor<B, 2>>,
        z: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>> {
        let mu = self.mean(model, x, k, batch, target, self.config.target_guidance)?;
        Ok(mu + z * self.coefs[k].sigma)
    }

    /// The deterministic part of step `k`: `sqrt(abar_prev) x0_hat + direction * eps`.
    fn mean<D: Denoiser<B>>(
        &self,
        model: &D,
        x: Tensor<B, 4>,
        k: usize,
        batch: usize,
        cond: Option<Tensor<B, 2>>,
        scale: f64,
    ) -> Result<Tensor<B, 4>> {
        let eps = self.guided_eps(model, x.clone(), k, batch, cond, scale)?;
        let x0 = self.steps.predict_x0(x, &[k], eps.clone())?;
        let c = self.coefs[k];
        Ok(x0 * c.sqrt_abar_prev + eps * c.direction)
    }

    /// `eps_u + w (eps_c - eps_u)`, both branches in one batched call.
    fn guided_eps<D: Denoiser<B>>(
        &self,
        model: &D,
        x: Tensor<B, 4>,
        k: usize,
        batch: usize,
        cond: Option<Tensor<B, 2>>,
        scale: f64,
    ) -> Result<Tensor<B, 4>> {
        let t = self.steps.timesteps()[k];
        let null = self.null.as_ref().map(|n| n.clone().repeat_dim(0, batch));
        let _span = profile::span(profile::DENOISER);
        match cond {
            None => Ok(model.forward(x, &vec![t; batch], null)?.eps),
            Some(c) if scale == 1.0 => Ok(model.forward(x, &vec![t; batch], Some(c))?.eps),
            Some(c) => {
                let null = null.ok_or_else(|| {
                    Error::format(
                        "classifier-free guidance",
                        format!("scale {scale} needs a null condition; the inverter was built without one"),
                    )
                })?;
                let out = model.forward(
                    Tensor::cat(vec![x.clone(), x], 0),
                    &vec![t; 2 * batch],
                    Some(Tensor::cat(vec![null, c], 0)),
                )?;
                let eps_u = out.eps.clone().narrow(0, 0, batch);
                let eps_c = out.eps.narrow(0, batch, batch);
                Ok(eps_u.clone() + (eps_c - eps_u) * scale)
            }
        }
    }

    fn check_input<D: Denoiser<B>>(
        &self,
        model: &D,
        x: &Tensor<B, 4>,
        cond: Option<&Tensor<B, 2>>,
    ) -> Result<()> {
        let dims = x.dims();
        if dims[1] != model.channels() {
            return Err(Error::shape(
                "images",
                format!("[N, {}, H, W] (the denoiser's channels)", model.channels()),
                fmt_dims(&dims),
            ));
        }
        ensure_finite(x, "images", "")?;
        let width = model.condition_dim();
        if let (Some(null), Some(w)) = (&self.null, width)
            && null.dims()[1] != w
        {
            return Err(Error::shape(
                "null condition",
                format!("[1, {w}]"),
                fmt_dims(&null.dims()),
            ));
        }
        if let Some(c) = cond {
            let expected = [dims[0], width.unwrap_or(c.dims()[1])];
            if c.dims() != expected {
                return Err(Error::shape(
                    "condition",
                    fmt_dims(&expected),
                    fmt_dims(&c.dims()),
                ));
            }
            ensure_finite(c, "condition", "")?;
        }
        Ok(())
    }
}
