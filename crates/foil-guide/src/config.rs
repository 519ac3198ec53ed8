//! The sampler's switches and the published presets.

use foil_core::{Error, Result};
use foil_schedule::VarianceType;

use crate::masks::{Dilation, check_share};

/// Which clean image the gradient is taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanEstimate {
    /// DiME: run the unguided chain from `z_t` to 0 at every step (`t` extra denoiser calls).
    FullChain,
    /// FastDiME, MaskDiME: the one-step Tweedie estimate `(z_t - sqrt(1 - abar) eps) / sqrt(abar)`.
    Tweedie,
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
    /// Divide the perceptual gradient by `sqrt(abar)` like the classifier's (DiME, FastDiME).
    pub divide_perceptual: bool,
    /// Reverse-step variance; `None` picks learned-range for denoisers with learned variance
    /// and fixed-small otherwise.
    pub variance: Option<VarianceType>,
    /// Clamp the clean estimate to `[-1, 1]` before the posterior mean.
    pub clip_x0: bool,
    /// Add the step noise inside the mask too (the MaskDiME code adds none inside `M1`).
    pub noise_inside_mask: bool,
}

impl GuideConfig {
    /// DiME (Jeanneret et al. 2022): full-chain clean estimate, no mask, scales 8, 10, 15.
    pub fn dime() -> Self {
        Self {
            clean: CleanEstimate::FullChain,
            mask: MaskPolicy::None,
            class_loss: ClassLoss::CrossEntropy,
            tau: 60,
            scales: vec![8.0, 10.0, 15.0],
            grad_scale: 1.0,
            lambda_l1: 0.05,
            lambda_perc: 30.0,
            divide_perceptual: true,
            variance: None,
            clip_x0: true,
            noise_inside_mask: true,
        }
    }

    /// FastDiME (Weng et al. 2023): Tweedie estimate, difference mask after 30 steps, threshold 0.15.
    pub fn fastdime() -> Self {
        Self {
            clean: CleanEstimate::Tweedie,
            mask: MaskPolicy::Difference {
                warmup: 30,
                pool: 5,
                threshold: 0.15,
            },
            ..Self::dime()
        }
    }

    /// MaskDiME: Tweedie estimate, dual masks `k = 0.05`, `gamma = 0.5`, dilation 5, grad scale 8
    /// (the public test script's CelebA values).
    pub fn maskdime() -> Self {
        Self {
            clean: CleanEstimate::Tweedie,
            mask: MaskPolicy::Dual {
                k: 0.05,
                gamma: 0.5,
                dilation: Dilation::Square { kernel: 5 },
            },
            class_loss: ClassLoss::Logit,
            grad_scale: 8.0,
            divide_perceptual: false,
            noise_inside_mask: false,
            ..Self::dime()
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
