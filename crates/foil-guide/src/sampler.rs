//! The guided sampler and its scale ladder.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData, activation};
use foil_core::tensor::{ensure_finite, fmt_dims, per_sample};
use foil_core::{Classifier, Denoiser, Error, FeatureExtractor, Noise, Result, predicted_labels};
use foil_schedule::{Steps, VarianceType};

use crate::config::{ClassLoss, CleanEstimate, GuideConfig, MaskPolicy};
use crate::masks::{difference_mask, dual_masks};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;
/// An image batch on the inner (non-autodiff) backend.
type Images<B> = Tensor<Inner<B>, 4>;

/// What happened to one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the classifier gives the target for the counterfactual.
    pub flipped: bool,
    /// The guidance scale that flipped it (`None`: none of the ladder did).
    pub scale: Option<f64>,
    /// Denoiser evaluations spent on this input (one per image and call).
    pub denoiser_calls: usize,
    /// Classifier forward-and-backward passes spent on this input (guidance plus flip checks).
    pub classifier_calls: usize,
}

/// The sampler's results for a batch.
#[derive(Debug, Clone)]
pub struct Counterfactuals<B: Backend> {
    /// The counterfactuals `[N, C, H, W]`: the flipped output, or the last scale's attempt.
    pub images: Tensor<B, 4>,
    /// One outcome per input.
    pub outcomes: Vec<Outcome>,
    /// The final dilated outer mask (`M1`, or FastDiME's difference mask) per input,
    /// `[N, 1, H, W]`; `None` under [`MaskPolicy::None`].
    pub outer_masks: Option<Tensor<B, 4>>,
    /// The final dilated inner mask (`M2`) per input; `Some` only for MaskDiME.
    pub inner_masks: Option<Tensor<B, 4>>,
}

impl<B: Backend> Counterfactuals<B> {
    /// Share of inputs flipped.
    pub fn flip_rate(&self) -> f64 {
        self.outcomes.iter().filter(|o| o.flipped).count() as f64
            / self.outcomes.len().max(1) as f64
    }
}

/// The guided sampler: a configuration, its steps, and the models it runs.
pub struct Guide<'a, B: AutodiffBackend, D, C> {
    config: GuideConfig,
    steps: Steps,
    denoiser: &'a D,
    classifier: &'a C,
    perceptual: Option<&'a dyn FeatureExtractor<B>>,
    variance: VarianceType,
}

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

    /// Makes counterfactuals of `x` (`[N, C, H, W]` in `[-1, 1]`) towards `targets` (one class
    /// per input), trying the scale ladder on the inputs not yet flipped. Deterministic in `seed`.
    pub fn explain(
        &self,
        x: Tensor<Inner<B>, 4>,
        targets: &[usize],
        seed: u64,
    ) -> Result<Counterfactuals<Inner<B>>> {
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
        ensure_finite(&x, "inputs", "")?;

        let mut noise = Noise::new(seed);
        let mut outcomes = vec![
            Outcome {
                flipped: false,
                scale: None,
                denoiser_calls: 0,
                classifier_calls: 0
            };
            n
        ];
        let mut images: Vec<Option<Tensor<Inner<B>, 4>>> = vec![None; n];
        let mut outer: Vec<Option<Tensor<Inner<B>, 4>>> = vec![None; n];
        let mut inner: Vec<Option<Tensor<Inner<B>, 4>>> = vec![None; n];
        let mut active: Vec<usize> = (0..n).collect();
        for &scale in &self.config.scales {
            if active.is_empty() {
                break;
            }
            let idx = index_tensor::<Inner<B>>(&active, &x.device());
            let xs = x.clone().select(0, idx);
            let ts: Vec<usize> = active.iter().map(|&i| targets[i]).collect();
            let run = self.run(xs, &ts, scale, &mut noise.fork())?;
            let labels = predicted_labels(self.classifier, Tensor::from_inner(run.images.clone()))?;
            let per_input_d = run.denoiser_calls / active.len();
            let per_input_c = run.classifier_calls / active.len() + 1;
            let mut still = Vec::new();
            for (j, &i) in active.iter().enumerate() {
                let o = &mut outcomes[i];
                o.denoiser_calls += per_input_d;
                o.classifier_calls += per_input_c;
                images[i] = Some(run.images.clone().narrow(0, j, 1));
                outer[i] = run.outer.as_ref().map(|m| m.clone().narrow(0, j, 1));
                inner[i] = run.inner.as_ref().map(|m| m.clone().narrow(0, j, 1));
                if labels[j] == targets[i] {
                    o.flipped = true;
                    o.scale = Some(scale);
                } else {
                    still.push(i);
                }
            }
            active = still;
        }
        let stack = |v: Vec<Option<Tensor<Inner<B>, 4>>>| -> Option<Tensor<Inner<B>, 4>> {
            let v: Vec<_> = v.into_iter().collect::<Option<Vec<_>>>()?;
            Some(Tensor::cat(v, 0))
        };
        let images = stack(images)
            .ok_or_else(|| Error::format("guided sampler", "no scale produced an output"))?;
        Ok(Counterfactuals {
            images,
            outcomes,
            outer_masks: stack(outer),
            inner_masks: stack(inner),
        })
    }

    /// One pass of the sampler at one classifier scale.
    fn run(
        &self,
        x: Tensor<Inner<B>, 4>,
        targets: &[usize],
        scale: f64,
        noise: &mut Noise,
    ) -> Result<Run<Inner<B>>> {
        let cfg = &self.config;
        let [n, ..] = x.dims();
        let dev = x.device();
        let (mut d_calls, mut c_calls) = (0, 0);
        let mut z = self
            .steps
            .q_sample(x.clone(), &[cfg.tau], noise.normal_like(&x))?;
        let (mut outer, mut inner) = (None, None);
        for (done, i) in (0..cfg.tau).rev().enumerate() {
            let t = vec![self.steps.timesteps()[i]; n];
            let out = self.denoiser.forward(z.clone(), &t, None)?;
            d_calls += n;
            let mut x0 = self.steps.predict_x0(z.clone(), &[i], out.eps)?;
            if cfg.clip_x0 {
                x0 = x0.clamp(-1.0, 1.0);
            }
            let log_var = self
                .steps
                .log_variance(&[i], n, self.variance, out.variance, &dev)?;
            let mean = self.steps.posterior_mean(x0.clone(), z.clone(), &[i])?;

            let clean = match cfg.clean {
                CleanEstimate::Tweedie => x0.clone(),
                CleanEstimate::FullChain => {
                    let (clean, calls) = self.unguided_chain(z.clone(), i, noise)?;
                    d_calls += calls;
                    clean
                }
            };
            // Where the sample may change, and the image the gradient is taken at.
            let (x_est, keep) = match cfg.mask {
                MaskPolicy::None => (clean, None),
                MaskPolicy::Difference {
                    warmup,
                    pool,
                    threshold,
                } if done >= warmup => {
                    let m = difference_mask(clean.clone(), x.clone(), pool, threshold);
                    (blend(&m, clean, x.clone()), Some(m))
                }
                MaskPolicy::Difference { .. } => (clean, None),
                MaskPolicy::Dual { .. } => match &inner {
                    Some(m2) => (blend(m2, clean, x.clone()), None),
                    None => (x.clone(), None),
                },
            };
            let (g_class, g_dist) = self.gradients(x_est, x.clone(), targets, scale, i)?;
            c_calls += n;
            let keep = match cfg.mask {
                MaskPolicy::Dual { k, gamma, dilation } => {
                    let masks = dual_masks(g_class.clone(), k, gamma, dilation)?;
                    inner = Some(masks.inner);
                    Some(masks.outer)
                }
                _ => keep,
            };
            let inv_sqrt_abar = 1.0 / self.steps.abar(i).sqrt();
            let g_dist_scale = if cfg.divide_perceptual {
                inv_sqrt_abar
            } else {
                1.0
            };
            let g = (g_class * inv_sqrt_abar + g_dist * g_dist_scale) * cfg.grad_scale;
            let var = log_var.clone().exp();
            let mut z_new = mean - var * g;
            if i > 0 && (cfg.noise_inside_mask || keep.is_none()) {
                let std = (log_var * 0.5).exp();
                z_new = z_new + noise.normal_like(&x) * std;
            }
            z = match &keep {
                Some(m) => {
                    // Outside the mask: the original at the next noise level (clean after the last step).
                    let outside = if i > 0 {
                        self.steps
                            .q_sample(x.clone(), &[i - 1], noise.normal_like(&x))?
                    } else {
                        x.clone()
                    };
                    blend(m, z_new, outside)
                }
                None => z_new,
            };
            if keep.is_some() {
                outer = keep;
            }
        }
        ensure_finite(&z, "counterfactual", "after the last step")?;
        Ok(Run {
            images: z,
            outer,
            inner,
            denoiser_calls: d_calls,
            classifier_calls: c_calls,
        })
    }

    /// DiME's clean estimate: the unguided ancestral chain from `z` at step `i` down to 0.
    fn unguided_chain(
        &self,
        z: Tensor<Inner<B>, 4>,
        i: usize,
        noise: &mut Noise,
    ) -> Result<(Tensor<Inner<B>, 4>, usize)> {
        let [n, ..] = z.dims();
        let mut z = z;
        for k in (0..=i).rev() {
            let out =
                self.denoiser
                    .forward(z.clone(), &vec![self.steps.timesteps()[k]; n], None)?;
            let eps = noise.normal_like(&z);
            z = self
                .steps
                .ddpm_step(z, &[k], out, self.variance, self.config.clip_x0, eps)?
                .prev_sample;
        }
        Ok((z, n * (i + 1)))
    }

    /// Gradients at `x_est` of the classifier term (scaled by `scale`) and of the distance terms.
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
        let leaf = Tensor::<B, 4>::from_inner(x_est.clone()).require_grad();
        let logits = self.classifier.logits(leaf.clone())?;
        let loss = class_loss::<B>(logits, targets, cfg.class_loss, &dev)? * scale;
        let grads = loss.backward();
        let g_class = leaf.grad(&grads).unwrap_or_else(|| x_est.zeros_like());
        ensure_finite(&g_class, "classifier gradient", &format!("at step {step}"))?;

        // L1: d/dx lambda |x - x0|_1 = lambda sign(x - x0).
        let mut g_dist = (x_est.clone() - x.clone()).sign() * cfg.lambda_l1;
        if let (Some(extractor), true) = (self.perceptual, cfg.lambda_perc > 0.0) {
            let leaf = Tensor::<B, 4>::from_inner(x_est.clone()).require_grad();
            let reference = extractor.features(Tensor::from_inner(x))?;
            let feats = extractor.features(leaf.clone())?;
            let mut loss: Option<Tensor<B, 1>> = None;
            for (a, b) in feats.into_iter().zip(reference) {
                let n = a.dims()[0] as f64;
                // Per-image mean squared error, summed over the batch so images stay independent.
                let per = (a - b.detach()).powf_scalar(2.0).mean() * n;
                loss = Some(match loss {
                    Some(l) => l + per,
                    None => per,
                });
            }
            if let Some(loss) = loss {
                let grads = (loss * cfg.lambda_perc).backward();
                if let Some(g) = leaf.grad(&grads) {
                    ensure_finite(&g, "perceptual gradient", &format!("at step {step}"))?;
                    g_dist = g_dist + g;
                }
            }
        }
        Ok((g_class, g_dist))
    }
}

/// `m a + (1 - m) b`, with `m` broadcast over channels.
fn blend<B: Backend>(m: &Tensor<B, 4>, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    b.clone() + (a - b) * m.clone()
}

fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(
        TensorData::new(
            indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [indices.len()],
        ),
        device,
    )
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
