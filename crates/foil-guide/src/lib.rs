//! Counterfactual explanations of a classifier by gradient-guided diffusion: MaskDiME, FastDiME
//! and DiME as switches of one sampler.
//!
//! An unconditional DDPM starts from the noised input (`q_sample` at step `tau`) and denoises
//! back to a clean image while the classifier's gradient (plus L1 and perceptual closeness to
//! the input) steers each step's mean towards the target class: `z <- mu - Sigma g + sigma n`.
//! The switches:
//!
//! | method | clean estimate for the gradient | mask | preset |
//! |---|---|---|---|
//! | DiME | the full unguided chain to 0 at every step (quadratic in `tau`) | none | [`GuideConfig::dime`] |
//! | FastDiME | one-step Tweedie estimate | pixel-difference mask after a warm-up | [`GuideConfig::fastdime`] |
//! | MaskDiME | one-step Tweedie estimate | dual top-k gradient masks | [`GuideConfig::maskdime`] |
//!
//! Gradients flow through burn's autodiff backend into the classifier (and the perceptual
//! feature extractor) only; the denoiser runs on the inner backend, never differentiated.

mod config;
mod masks;
mod sampler;

pub use config::{ClassLoss, CleanEstimate, GuideConfig, MaskPolicy};
pub use foil_core::predicted_labels;
pub use masks::{Dilation, DualMasks, difference_mask, dual_masks, selected_count};
pub use sampler::{Counterfactuals, Guide, Outcome};
