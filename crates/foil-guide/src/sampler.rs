//! The guided sampler and its scale ladder.

use std::sync::Mutex;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData, activation};

use foil_core::profile;
use foil_core::tensor::{ensure_finite, fmt_dims, index_tensor, per_sample};
use foil_core::{
    Attempt, Classifier, Cost, Denoiser, Error, Explained, FeatureExtractor, Method, Noise,
    Outcome, Request, Result, Setting, escalate, predicted_labels,
};
use foil_schedule::{Steps, VarianceType};

use crate::config::{ClassLoss, CleanEstimate, GuideConfig, MaskPolicy};
use crate::masks::{difference_mask, dual_masks};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;
/// An image batch on the inner (non-autodiff) backend.
type Images<B> = Tensor<Inner<B>, 4>;

/// What the sampler carries from one step to the next.
#[derive(Debug, Clone)]
pub struct Carry<B: Backend> {
    /// The current sample `z_t` (the noised input at the start).
    pub z: Tensor<B, 4>,
    /// Where the next gradient is taken under [`CleanEstimate::FullChain`] and
    /// [`CleanEstimate::PreviousTweedie`]; `None`: at the input itself (the first step).
    pub guide_at: Option<Tensor<B, 4>>,
    /// MaskDiME's dilated `M2` of the previous step; `None` before the first.
    pub inner: Option<Tensor<B, 4>>,
    /// The last dilated outer mask (`M1`, or FastDiME's difference mask); `None` while none.
    pub outer: Option<Tensor<B, 4>>,
}

impl<B: Backend> Carry<B> {
    /// The state before the first step: the noised input `z_tau` and nothing else.
    pub fn start(z: Tensor<B, 4>) -> Self {
        Self {
            z,
            guide_at: None,
            inner: None,
            outer: None,
        }
    }
}

/// The standard-normal noise one step consumes, drawn by the caller (both `[N, C, H, W]`).
#[derive(Debug, Clone)]
pub struct StepNoise<B: Backend> {
    /// Noise of the reverse step (`mu + sigma n`), where the method adds it.
    pub sample: Tensor<B, 4>,
    /// Noise of `q_sample(x, t)`, the background outside the mask at this step's level.
    pub background: Tensor<B, 4>,
}

/// What one guided step computed.
#[derive(Debug, Clone)]
pub struct StepResult<B: Backend> {
    /// The state the next step starts from (its `z` is the next sample).
    pub next: Carry<B>,
    /// The Tweedie estimate at `z_t` (clamped to `[-1, 1]` when `clip_x0`).
    pub x0: Tensor<B, 4>,
    /// The image the classifier and perceptual gradients were taken at.
    pub guided_at: Tensor<B, 4>,
    /// The classifier-loss gradient at `guided_at`, times the scale, divided by `sqrt(abar_t)`
    /// under `scale_grads` (the references' `class_grad_fn(x_t) / alpha_t`).
    pub grad_class: Tensor<B, 4>,
    /// The distance gradient: `lambda_l1 sign(z_t - x)` at the noisy sample plus the perceptual
    /// gradient at `guided_at` (divided by `sqrt(abar_t)` under `scale_grads`).
    pub grad_dist: Tensor<B, 4>,
}

/// The guided sampler: a configuration, its steps, and the models it runs.
pub struct Guide<'a, B: AutodiffBackend, D, C> {
    config: GuideConfig,
    steps: Steps,
    denoiser: &'a D,
    classifier: &'a C,
    perceptual: Option<&'a dyn FeatureExtractor<B>>,
    variance: VarianceType,
    /// The perceptual network's features of the last originals it saw: the inputs stay the
    /// same through every step of an explanation, so their features are computed once.
    reference: Mutex<Option<Reference<B>>>,
}

/// Originals and their perceptual features (detached).
type Reference<B> = (Tensor<Inner<B>, 4>, Vec<Tensor<Inner<B>, 4>>);

struct Run<B: Backend> {
    images: Tensor<B, 4>,
    outer: Option<Tensor<B, 4>>,
    inner: Option<Tensor<B, 4>>,
    denoiser_calls: usize,
    classifier_calls: usize,
}

impl<'a, B, D, C> Guide<'a, B, D, C>
where
    B: AutodiffBackend,
    D: Denoiser<Inner<B>>,
    C: Classifier<B>,
{
    /// A sampler over `steps` (for DiME's CelebA model: 500 steps respaced to 200).
    pub fn new(
        config: GuideConfig,
        steps: Steps,
        denoiser: &'a D,
        classifier: &'a C,
    ) -> Result<Self> {
        config.validate(steps.len())?;
        let variance = config.variance.unwrap_or(if denoiser.learned_variance() {
            VarianceType::LearnedRange
        } else {
            VarianceType::FixedSmall
        });
        Ok(Self {
            config,
            steps,
            denoiser,
            classifier,
            perceptual: None,
            variance,
            reference: Mutex::new(None),
        })
    }

    /// Adds a perceptual feature extractor (MSE of its features, weighted by `lambda_perc`).
    pub fn with_perceptual(mut self, extractor: &'a dyn FeatureExtractor<B>) -> Self {
        self.perceptual = Some(extractor);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &GuideConfig {
        &self.config
    }

    /// The sampling steps.
    pub fn steps(&self) -> &Steps {
        &self.steps
    }

    /// Makes counterfactuals of `x` (`[N, C, H, W]` in `[-1, 1]`) towards `targets` (one class
    /// per input), trying the scale ladder on the inputs not yet flipped
    /// ([`escalate`](foil_core::escalate)). The noised start `q_sample(x, tau)` is drawn once and
    /// reused by every scale, as the references do. Deterministic in `seed`.
    pub fn explain(
        &self,
        x: Tensor<Inner<B>, 4>,
        targets: &[usize],
        seed: u64,
    ) -> Result<Explained<Inner<B>>> {
        let [n, ..] = x.dims();
        self.check_inputs(&x, targets)?;
        ensure_finite(&x, "inputs", "")?;

        let mut noise = Noise::new(seed);
        let start = self.start(x.clone(), noise.normal_like(&x))?;
        let mut costs = vec![Cost::default(); n];
        let climbs = escalate(n, &self.config.scales, |&scale, active| {
            let idx = index_tensor::<Inner<B>>(active, &x.device());
            let xs = x.clone().select(0, idx.clone());
            let zs = start.clone().select(0, idx);
            let ts: Vec<usize> = active.iter().map(|&i| targets[i]).collect();
            let run = self.run(xs, zs, &ts, scale, &mut noise.fork())?;
            let labels = predicted_labels(self.classifier, Tensor::from_inner(run.images.clone()))?;
            let per_input = Cost {
                denoiser_calls: run.denoiser_calls / active.len(),
                // The guidance passes, and the flip check.
                classifier_calls: run.classifier_calls / active.len() + 1,
                encoder_calls: 0,
            };
            Ok(active
                .iter()
                .enumerate()
                .map(|(j, &i)| {
                    costs[i] += per_input;
                    Attempt {
                        flipped: labels[j] == targets[i],
                        value: [
                            Some(run.images.clone().narrow(0, j, 1)),
                            run.outer.as_ref().map(|m| m.clone().narrow(0, j, 1)),
                            run.inner.as_ref().map(|m| m.clone().narrow(0, j, 1)),
                        ],
                    }
                })
                .collect())
        })?;
        let outcomes = climbs
            .iter()
            .zip(&costs)
            .map(|(c, &cost)| Outcome {
                flipped: c.flipped(),
                setting: c.flipped_at.map(|k| Setting::Guidance {
                    scale: self.config.scales[k],
                }),
                cost,
            })
            .collect();
        let mut rows: [Vec<Option<Images<B>>>; 3] = Default::default();
        for climb in climbs {
            for (slot, value) in rows.iter_mut().zip(climb.value) {
                slot.push(value);
            }
        }
        let [images, outer, inner] = rows.map(|v| {
            v.into_iter()
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty())
                .map(|v| Tensor::cat(v, 0))
        });
        let images =
            images.ok_or_else(|| Error::format("guided sampler", "no scale produced an output"))?;
        Ok(Explained {
            images,
            outcomes,
            outer_masks: outer,
            inner_masks: inner,
        })
    }

    /// The noised start `z_tau = q_sample(x, tau)` with standard-normal `noise`.
    pub fn start(
        &self,
        x: Tensor<Inner<B>, 4>,
        noise: Tensor<Inner<B>, 4>,
    ) -> Result<Tensor<Inner<B>, 4>> {
        self.steps.q_sample(x, &[self.config.tau], noise)
    }

    /// One guided step at step index `i` (`tau - 1` down to 0) from `carry`, for inputs `x`
    /// towards `targets` at classifier scale `scale`, with the caller's `noise`:
    ///
    /// 1. `eps, v = denoiser(z_t)`; `x0` the (clipped) Tweedie estimate; `mu`, `Sigma` the
    ///    posterior mean and the model variance (for fixed-small the unclipped posterior
    ///    variance, 0 at `t = 0`: no guidance at the last step);
    /// 2. the gradient image per [`CleanEstimate`];
    /// 3. `g = grad_scale (g_class + g_dist)` with `g_dist = lambda_l1 sign(z_t - x) + g_perc`;
    /// 4. `z = mu - Sigma g` (+ `sigma n` where the method adds noise, never at `t = 0`);
    /// 5. masks: MaskDiME's `M1`, `M2` from this step's classifier gradient, and outside `M1`
    ///    the sample is `q_sample(x, t)` at this step's level; FastDiME's difference mask of
    ///    this step's estimate (after the warm-up) resets the estimate to `x` and the sample
    ///    to `q_sample(x, t)` outside it.
    ///
    /// Under [`CleanEstimate::FullChain`] the caller sets the next `guide_at` with
    /// [`clean_chain`](Self::clean_chain) (the sampler does). This is the reference's loop body
    /// (`core/sample_utils.py` of DiME, FastDiME and MaskDiME) and is tested against it.
    pub fn step(
        &self,
        x: &Tensor<Inner<B>, 4>,
        i: usize,
        targets: &[usize],
        scale: f64,
        carry: Carry<Inner<B>>,
        noise: StepNoise<Inner<B>>,
    ) -> Result<StepResult<Inner<B>>> {
        let cfg = &self.config;
        if i >= cfg.tau {
            return Err(Error::out_of_range(
                "step index",
                format!("below tau = {}", cfg.tau),
                i,
            ));
        }
        self.check_inputs(x, targets)?;
        let dims = x.dims();
        for (what, t) in [
            ("sample z_t", &carry.z),
            ("step noise", &noise.sample),
            ("background noise", &noise.background),
        ] {
            if t.dims() != dims {
                return Err(Error::shape(what, fmt_dims(&dims), fmt_dims(&t.dims())));
            }
        }
        let n = dims[0];
        let dev = x.device();
        let z = carry.z;
        let t = vec![self.steps.timesteps()[i]; n];
        let out = {
            let _span = profile::span(profile::DENOISER);
            self.denoiser.forward(z.clone(), &t, None)?
        };
        let mut x0 = self.steps.predict_x0(z.clone(), &[i], out.eps)?;
        if cfg.clip_x0 {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let log_var = self
            .steps
            .log_variance(&[i], n, self.variance, out.variance, &dev)?;
        let variance = self
            .steps
            .model_variance(&[i], n, self.variance, log_var.clone(), &dev)?;
        let mean = self.steps.posterior_mean(x0.clone(), z.clone(), &[i])?;

        let guided_at = match (cfg.clean, cfg.mask, &carry.inner) {
            (CleanEstimate::Tweedie, MaskPolicy::Dual { .. }, Some(m2)) => {
                blend(m2, x0.clone(), x.clone())
            }
            (CleanEstimate::Tweedie, MaskPolicy::Dual { .. }, None) => x.clone(),
            (CleanEstimate::Tweedie, ..) => x0.clone(),
            (CleanEstimate::FullChain | CleanEstimate::PreviousTweedie, ..) => {
                carry.guide_at.clone().unwrap_or_else(|| x.clone())
            }
        };
        let (grad_class, grad_perc) =
            self.gradients(guided_at.clone(), x.clone(), targets, scale, i)?;
        let divide = if cfg.scale_grads {
            1.0 / self.steps.abar(i).sqrt()
        } else {
            1.0
        };
        let grad_class = grad_class * divide;
        // The L1 term is differentiated at the noisy sample and never divided.
        let grad_dist = (z.clone() - x.clone()).sign() * cfg.lambda_l1 + grad_perc * divide;
        let g = (grad_class.clone() + grad_dist.clone()) * cfg.grad_scale;
        let mut z_next = mean - variance * g;
        let std = (log_var * 0.5).exp();
        let add_noise =
            i > 0 && (cfg.noise_inside_mask || !matches!(cfg.mask, MaskPolicy::Dual { .. }));
        if add_noise {
            z_next = z_next + noise.sample * std;
        }

        let mut next = Carry {
            z: z_next,
            guide_at: None,
            inner: carry.inner,
            outer: carry.outer,
        };
        let mut estimate = x0.clone();
        match cfg.mask {
            MaskPolicy::None => {}
            MaskPolicy::Dual { k, gamma, dilation } => {
                let masks = dual_masks(grad_class.clone(), k, gamma, dilation)?;
                let background = self.steps.q_sample(x.clone(), &[i], noise.background)?;
                next.z = blend(&masks.outer, next.z, background);
                next.inner = Some(masks.inner);
                next.outer = Some(masks.outer);
            }
            MaskPolicy::Difference {
                warmup,
                pool,
                threshold,
            } => {
                if cfg.tau - 1 - i >= warmup {
                    let m = difference_mask(x0.clone(), x.clone(), pool, threshold);
                    estimate = blend(&m, x0.clone(), x.clone());
                    let background = self.steps.q_sample(x.clone(), &[i], noise.background)?;
                    next.z = blend(&m, next.z, background);
                    next.outer = Some(m);
                }
            }
        }
        if cfg.clean == CleanEstimate::PreviousTweedie {
            next.guide_at = Some(estimate);
        }
        Ok(StepResult {
            next,
            x0,
            guided_at,
            grad_class,
            grad_dist,
        })
    }

    /// One pass of the sampler at one classifier scale, from the noised start `z`.
    fn run(
        &self,
        x: Tensor<Inner<B>, 4>,
        z: Tensor<Inner<B>, 4>,
        targets: &[usize],
        scale: f64,
        noise: &mut Noise,
    ) -> Result<Run<Inner<B>>> {
        let cfg = &self.config;
        let [n, ..] = x.dims();
        let (mut d_calls, mut c_calls) = (0, 0);
        let mut carry = Carry::start(z);
        for i in (0..cfg.tau).rev() {
            let step_noise = StepNoise {
                sample: noise.normal_like(&x),
                background: noise.normal_like(&x),
            };
            let step = self.step(&x, i, targets, scale, carry, step_noise)?;
            d_calls += n;
            c_calls += n;
            carry = step.next;
            if cfg.clean == CleanEstimate::FullChain && i > 0 {
                let (clean, calls) = self.clean_chain(carry.z.clone(), i - 1, noise)?;
                carry.guide_at = Some(clean);
                d_calls += calls;
            }
        }
        let mut images = carry.z;
        if let (true, Some(m)) = (cfg.clean_background, &carry.outer) {
            images = blend(m, images, x);
        }
        ensure_finite(&images, "counterfactual", "after the last step")?;
        Ok(Run {
            images,
            outer: carry.outer,
            inner: carry.inner,
            denoiser_calls: d_calls,
            classifier_calls: c_calls,
        })
    }

    /// DiME's clean estimate: the unguided ancestral chain from `z` at step `i` down to 0
    /// (`i + 1` denoiser calls per image). Returns the clean image and the calls spent.
    pub fn clean_chain(
        &self,
        z: Tensor<Inner<B>, 4>,
        i: usize,
        noise: &mut Noise,
    ) -> Result<(Tensor<Inner<B>, 4>, usize)> {
        let [n, ..] = z.dims();
        let mut z = z;
        for k in (0..=i).rev() {
            let out = {
                let _span = profile::span(profile::DENOISER);
                self.denoiser
                    .forward(z.clone(), &vec![self.steps.timesteps()[k]; n], None)?
            };
            let eps = noise.normal_like(&z);
            z = self
                .steps
                .ddpm_step(z, &[k], out, self.variance, self.config.clip_x0, eps)?
                .prev_sample;
        }
        Ok((z, n * (i + 1)))
    }

    /// Targets one per input inside the classifier's classes, channels the denoiser's.
    fn check_inputs(&self, x: &Tensor<Inner<B>, 4>, targets: &[usize]) -> Result<()> {
        let [n, c, h, w] = x.dims();
        if targets.len() != n {
            return Err(Error::shape(
                "targets",
                format!("{n} (one per input)"),
                targets.len(),
            ));
        }
        if c != self.denoiser.channels() {
            return Err(Error::shape(
                "inputs",
                format!("[N, {}, H, W]", self.denoiser.channels()),
                fmt_dims(&[n, c, h, w]),
            ));
        }
        let classes = self.classifier.num_logits().max(2);
        if let Some(&t) = targets.iter().find(|&&t| t >= classes) {
            return Err(Error::out_of_range(
                "target class",
                format!("below {classes} (the classifier's classes)"),
                t,
            ));
        }
        Ok(())
    }

    /// Gradients at `x_est` of the classifier term (scaled by `scale`) and of the perceptual
    /// term (zero without an extractor or with `lambda_perc = 0`), neither divided yet.
    fn gradients(
        &self,
        x_est: Tensor<Inner<B>, 4>,
        x: Tensor<Inner<B>, 4>,
        targets: &[usize],
        scale: f64,
        step: usize,
    ) -> Result<(Images<B>, Images<B>)> {
        let cfg = &self.config;
        let dev = x.device();
        let class_span = profile::span(profile::CLASSIFIER_GRADIENT);
        let leaf = Tensor::<B, 4>::from_inner(x_est.clone()).require_grad();
        let logits = self.classifier.logits(leaf.clone())?;
        let loss = class_loss::<B>(logits, targets, cfg.class_loss, &dev)? * scale;
        let grads = loss.backward();
        let g_class = leaf.grad(&grads).unwrap_or_else(|| x_est.zeros_like());
        drop(class_span);
        ensure_finite(&g_class, "classifier gradient", &format!("at step {step}"))?;

        let mut g_perc = x_est.zeros_like();
        if let (Some(extractor), true) = (self.perceptual, cfg.lambda_perc > 0.0) {
            let _span = profile::span(profile::PERCEPTUAL_GRADIENT);
            let leaf = Tensor::<B, 4>::from_inner(x_est.clone()).require_grad();
            let reference = self.reference_features(extractor, x)?;
            let feats = extractor.features(leaf.clone())?;
            let mut loss: Option<Tensor<B, 1>> = None;
            for (a, b) in feats.into_iter().zip(reference) {
                let n = a.dims()[0] as f64;
                // Per-image mean squared error, summed over the batch so images stay independent.
                let per = (a - Tensor::from_inner(b)).powf_scalar(2.0).mean() * n;
                loss = Some(match loss {
                    Some(l) => l + per,
                    None => per,
                });
            }
            if let Some(loss) = loss {
                let grads = (loss * cfg.lambda_perc).backward();
                if let Some(g) = leaf.grad(&grads) {
                    ensure_finite(&g, "perceptual gradient", &format!("at step {step}"))?;
                    g_perc = g;
                }
            }
        }
        Ok((g_class, g_perc))
    }
}

impl<B, D, C> Guide<'_, B, D, C>
where
    B: AutodiffBackend,
{
    /// The perceptual features of the originals `x`: those of the previous call when `x` is
    /// the same (every step of one explanation), else computed and kept.
    fn reference_features(
        &self,
        extractor: &dyn FeatureExtractor<B>,
        x: Tensor<Inner<B>, 4>,
    ) -> Result<Vec<Tensor<Inner<B>, 4>>> {
        let mut cache = self
            .reference
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, features)) = cache.as_ref()
            && seen.dims() == x.dims()
            && seen
                .clone()
                .equal(x.clone())
                .all()
                .into_data()
                .iter::<bool>()
                .next()
                == Some(true)
        {
            return Ok(features.clone());
        }
        let features: Vec<_> = extractor
            .features(Tensor::from_inner(x.clone()))?
            .into_iter()
            .map(|f| f.inner())
            .collect();
        *cache = Some((x, features.clone()));
        Ok(features)
    }
}

/// `m a + (1 - m) b`, with `m` broadcast over channels (exactly `a` or `b` where `m` is 1 or
/// 0, as the references write it).
fn blend<B: Backend>(m: &Tensor<B, 4>, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    a * m.clone() + b * (m.clone().neg() + 1.0)
}

/// The classifier loss summed over the batch (so each image's gradient is its own).
fn class_loss<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[usize],
    kind: ClassLoss,
    dev: &B::Device,
) -> Result<Tensor<B, 1>> {
    let [n, k] = logits.dims();
    if n != targets.len() || k == 0 {
        return Err(Error::shape(
            "classifier logits",
            format!("[{}, K >= 1]", targets.len()),
            fmt_dims(&[n, k]),
        ));
    }
    if k == 1 {
        // +1 towards class 1, -1 towards class 0.
        let sign: Vec<f64> = targets
            .iter()
            .map(|&t| if t == 1 { 1.0 } else { -1.0 })
            .collect();
        let signed = logits * per_sample::<B>(&sign, dev).reshape([n, 1]);
        return Ok(match kind {
            ClassLoss::Logit => signed.neg().sum(),
            // BCE with logits = softplus(-signed logit).
            ClassLoss::CrossEntropy => softplus(signed.neg()).sum(),
        });
    }
    let idx = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            targets.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [n, 1],
        ),
        dev,
    );
    Ok(match kind {
        ClassLoss::Logit => logits.gather(1, idx).neg().sum(),
        ClassLoss::CrossEntropy => activation::log_softmax(logits, 1)
            .gather(1, idx)
            .neg()
            .sum(),
    })
}

/// `log(1 + e^y)` computed without overflow: `max(y, 0) + log(1 + e^-|y|)`.
fn softplus<B: Backend>(y: Tensor<B, 2>) -> Tensor<B, 2> {
    y.clone().clamp_min(0.0) + (y.abs().neg().exp() + 1.0).log()
}

/// The sampler as a [`Method`] over the inner backend: each batch towards its targets with the
/// request's seed (the labels are not used: the targets say where to go).
impl<B, D, C> Method<Inner<B>> for Guide<'_, B, D, C>
where
    B: AutodiffBackend,
    D: Denoiser<Inner<B>>,
    C: Classifier<B>,
{
    fn name(&self) -> &str {
        self.config.name()
    }

    fn explain(&self, request: Request<'_, Inner<B>>) -> Result<Explained<Inner<B>>> {
        Guide::explain(self, request.images, request.targets, request.seed)
    }
}
