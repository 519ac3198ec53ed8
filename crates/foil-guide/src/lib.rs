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
//! | DiME | the full unguided chain to 0 after every step (quadratic in `tau`) | none | [`GuideConfig::dime`] |
//! | FastDiME | the previous step's one-step Tweedie estimate | pixel-difference mask after a warm-up | [`GuideConfig::fastdime`] |
//! | MaskDiME | this step's Tweedie estimate inside the previous `M2` | dual top-k gradient masks | [`GuideConfig::maskdime`] |
//!
//! The presets are the authors' published scripts (DiME's and MaskDiME's `test.sh`, FastDiME's
//! `run_fastdime.sh`); [`Guide::step`] is one iteration of their `core/sample_utils.py` loop,
//! and a parity test compares it with that loop body run on guided-diffusion.
//!
//! Gradients flow through burn's autodiff backend into the classifier (and the perceptual
//! feature extractor) only; the denoiser runs on the inner backend, never differentiated.

mod config;
mod masks;
mod sampler;

pub use config::{ClassLoss, CleanEstimate, GuideConfig, MaskPolicy};
pub use foil_core::predicted_labels;
pub use foil_core::{Explained, Method, Outcome, Setting};
pub use masks::{Dilation, DualMasks, difference_mask, dual_masks, selected_count};
pub use sampler::{Carry, Guide, StepNoise, StepResult};
