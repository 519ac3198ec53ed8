//! The sampler's switches and the published presets.

use foil_core::{Error, Result};
use foil_schedule::VarianceType;

use crate::masks::{Dilation, check_share};

/// Which clean image the classifier (and perceptual) gradient is taken at. At the first step
/// every reference takes it at the input itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanEstimate {
    /// DiME: the unguided ancestral chain run from the previous step's sample down to 0 (`i`
    /// extra denoiser calls after step `i`); the input itself at the first step.
    FullChain,
    /// MaskDiME: this step's Tweedie estimate `(z_t - sqrt(1 - abar) eps) / sqrt(abar)`, blended
    /// with the input by the previous step's `M2` under [`MaskPolicy::Dual`] (the input itself
    /// at the first step, before any `M2` exists).
    Tweedie,
    /// FastDiME: the previous step's Tweedie estimate, reset to the input outside its difference
    /// mask once the mask is on; the input itself at the first step.
    PreviousTweedie,
}

/// Where the sampler may change the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaskPolicy {
    /// Everywhere (DiME).
    None,
    /// FastDiME: after `warmup` steps, a mask `maxpool_pool(normalised sum_c |x0_hat - x|) >= threshold`;
    /// outside it the clean estimate is reset to `x` and the sample to `q_sample(x)`.
    Difference {
        /// Steps before the mask starts.
        warmup: usize,
        /// Max-pool window (odd).
        pool: usize,
        /// Threshold on the normalised difference.
        threshold: f64,
    },
    /// MaskDiME: `M1` = top `k` share of pixels by classifier-gradient magnitude, `M2` = top
    /// `gamma` share of `M1`, both dilated. The gradient is taken at `M2 x0_hat + (1 - M2) x`;
    /// the sample outside `M1` is `q_sample(x)`.
    Dual {
        /// Share of pixels in `M1`, in `(0, 1]`.
        k: f64,
        /// Share of `M1`'s pixels in `M2`, in `(0, 1]`.
        gamma: f64,
        /// Growth of both masks.
        dilation: Dilation,
    },
}

/// The classifier term of the loss, on the target class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassLoss {
    /// `-logit_target` (for one logit: `-logit` towards class 1, `+logit` towards class 0).
    Logit,
    /// Binary cross-entropy with logits (one logit) or softmax cross-entropy (several).
    CrossEntropy,
}

/// Settings of the guided sampler.
#[derive(Debug, Clone, PartialEq)]
pub struct GuideConfig {
    /// Clean estimate for the gradient.
    pub clean: CleanEstimate,
    /// Mask policy.
    pub mask: MaskPolicy,
    /// Classifier loss.
    pub class_loss: ClassLoss,
    /// Start step: the input is noised to step `tau` and denoised through steps `tau - 1 ..= 0`.
    pub tau: usize,
    /// Classifier scales tried in turn, each only on the inputs not yet flipped.
    pub scales: Vec<f64>,
    /// Overall multiplier of the gradient.
    pub grad_scale: f64,
    /// Weight of the L1 distance to the input.
    pub lambda_l1: f64,
    /// Weight of the perceptual distance (needs a feature extractor; ignored without one).
    pub lambda_perc: f64,
    /// Divide the classifier and perceptual gradients by `sqrt(abar_t)` (DiME's
    /// reparameterisation, kept by MaskDiME; FastDiME's scripts keep `scale_grads=False`). The
    /// L1 gradient, taken at the noisy sample, is never divided (the references' `dist_cond_fn`).
    pub scale_grads: bool,
    /// Reverse-step variance; `None` picks learned-range for denoisers with learned variance
    /// and fixed-small otherwise.
    pub variance: Option<VarianceType>,
    /// Clamp the clean estimate to `[-1, 1]` before the posterior mean.
    pub clip_x0: bool,
    /// Add the step noise inside the mask too (the MaskDiME code adds none inside `M1`).
    pub noise_inside_mask: bool,
    /// After the last step, put the input itself outside the last mask (FastDiME's code). Without
    /// it the background stays `q_sample(x, 0)`, as MaskDiME's code leaves it.
    pub clean_background: bool,
}

impl GuideConfig {
    /// DiME (Jeanneret et al. 2022), as its `test.sh` runs it: full-chain clean estimate, no
    /// mask, class loss `-logit` (`USE_LOGITS=True`), scales 8, 10, 15, L1 0.05, perceptual 30,
    /// classifier and perceptual gradients divided by `sqrt(abar)`.
    pub fn dime() -> Self {
        Self {
            clean: CleanEstimate::FullChain,
            mask: MaskPolicy::None,
            class_loss: ClassLoss::Logit,
            tau: 60,
            scales: vec![8.0, 10.0, 15.0],
            grad_scale: 1.0,
            lambda_l1: 0.05,
            lambda_perc: 30.0,
            scale_grads: true,
            variance: None,
            clip_x0: true,
            noise_inside_mask: true,
            clean_background: false,
        }
    }

    /// FastDiME (Weng et al. 2023), as its `run_fastdime.sh` runs it: the previous step's Tweedie
    /// estimate, difference mask after 30 steps (pool 5, threshold 0.15), no division by
    /// `sqrt(abar)` (`scale_grads=False`), the input restored outside the mask at the end.
    pub fn fastdime() -> Self {
        Self {
            clean: CleanEstimate::PreviousTweedie,
            mask: MaskPolicy::Difference {
                warmup: 30,
                pool: 5,
                threshold: 0.15,
            },
            scale_grads: false,
            clean_background: true,
            ..Self::dime()
        }
    }

    /// MaskDiME, as its `test.sh` runs it on CelebA: this step's Tweedie estimate inside `M2`,
    /// dual masks `k = 0.05`, `gamma = 0.5`, dilation 5, grad scale 8, no noise inside `M1`.
    pub fn maskdime() -> Self {
        Self {
            clean: CleanEstimate::Tweedie,
            mask: MaskPolicy::Dual {
                k: 0.05,
                gamma: 0.5,
                dilation: Dilation::Square { kernel: 5 },
            },
            grad_scale: 8.0,
            noise_inside_mask: false,
            ..Self::dime()
        }
    }

    /// These settings with MaskDiME's `M1` share set to `share` (the scripts' `k`); an error
    /// for a mask policy without dual top-k masks.
    pub fn with_mask_share(mut self, share: f64) -> Result<Self> {
        match &mut self.mask {
            MaskPolicy::Dual { k, .. } => {
                *k = share;
                Ok(self)
            }
            _ => Err(Error::out_of_range(
                "mask share",
                "only with dual top-k masks (MaskDiME)",
                share,
            )),
        }
    }

    /// The method these switches make: `maskdime` (dual masks), `fastdime` (difference mask),
    /// `dime` (the full chain, no mask), or `guided` for another combination.
    pub fn name(&self) -> &'static str {
        match (self.clean, self.mask) {
            (_, MaskPolicy::Dual { .. }) => "maskdime",
            (_, MaskPolicy::Difference { .. }) => "fastdime",
            (CleanEstimate::FullChain, MaskPolicy::None) => "dime",
            _ => "guided",
        }
    }

    /// Checks every setting against the number of sampling steps.
    pub fn validate(&self, num_steps: usize) -> Result<()> {
        if self.tau == 0 || self.tau >= num_steps {
            return Err(Error::out_of_range(
                "tau",
                format!("in 1..{num_steps} (the schedule has {num_steps} steps)"),
                self.tau,
            ));
        }
        if self.scales.is_empty() {
            return Err(Error::Empty {
                what: "guidance scale ladder".into(),
                hint: "give at least one scale (the reference: 8, 10, 15)".into(),
            });
        }
        for (what, v) in [
            ("grad_scale", self.grad_scale),
            ("lambda_l1", self.lambda_l1),
            ("lambda_perc", self.lambda_perc),
        ]
        .into_iter()
        .chain(self.scales.iter().map(|&s| ("guidance scale", s)))
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::out_of_range(what, "finite and >= 0", v));
            }
        }
        match self.mask {
            MaskPolicy::Dual { k, gamma, dilation } => {
                check_share("k", k)?;
                check_share("gamma", gamma)?;
                dilation.validate()
            }
            MaskPolicy::Difference {
                pool, threshold, ..
            } => {
                if pool % 2 == 0 {
                    return Err(Error::out_of_range("difference-mask pool", "odd", pool));
                }
                if !(0.0..=1.0).contains(&threshold) {
                    return Err(Error::out_of_range(
                        "difference-mask threshold",
                        "in [0, 1]",
                        threshold,
                    ));
                }
                Ok(())
            }
            MaskPolicy::None => Ok(()),
        }
    }
}
