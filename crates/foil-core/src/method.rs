//! What every counterfactual method is: a batch of inputs with their targets in, one
//! counterfactual per input out, with what it cost and the setting that produced it.
//!
//! MaskDiME (FastDiME, DiME), DIFFusion and its baselines all implement [`Method`]; the set
//! runner of `foil-run` drives any of them over a dataset (seeding, skipping finished inputs,
//! atomic writes, the summary), and [`escalate()`](crate::escalate()) is the shared "try a stronger
//! setting on the inputs not yet flipped" ladder.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use foil_core::method::{Cost, Explained, Method, Outcome, Request};
//!
//! /// The identity "method": returns each input unchanged, never flips anything.
//! struct Identity;
//!
//! impl Method<NdArray> for Identity {
//!     fn name(&self) -> &str {
//!         "identity"
//!     }
//!     fn explain(&self, request: Request<'_, NdArray>) -> foil_core::Result<Explained<NdArray>> {
//!         let n = request.targets.len();
//!         Ok(Explained::unmasked(request.images, vec![Outcome::unflipped(Cost::default()); n]))
//!     }
//! }
//!
//! let x = Tensor::<NdArray, 4>::zeros([2, 3, 8, 8], &Default::default());
//! let out = Identity.explain(Request { images: x, labels: &[0, 0], targets: &[1, 1], seed: 0 })?;
//! assert_eq!(out.outcomes.len(), 2);
//! out.check(2)?;
//! # Ok::<(), foil_core::Error>(())
//! ```

use std::ops::{Add, AddAssign};

use burn::tensor::{Tensor, backend::Backend};

use crate::tensor::fmt_dims;
use crate::{Error, Result};

/// What a method is asked: explain `images` (`[N, C, H, W]` in `[-1, 1]`), whose labels are
/// `labels`, towards `targets` (one class per input).
#[derive(Debug, Clone)]
pub struct Request<'a, B: Backend> {
    /// The inputs, `[N, C, H, W]` in `[-1, 1]`.
    pub images: Tensor<B, 4>,
    /// The ground-truth label of each input (DIFFusion edits away from it).
    pub labels: &'a [usize],
    /// The class each counterfactual should reach (the references: the other class of the
    /// oracle's prediction on the input).
    pub targets: &'a [usize],
    /// The seed of every random draw the method makes for this batch.
    pub seed: u64,
}

/// Model evaluations one counterfactual cost, per image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Denoiser (diffusion network) evaluations; classifier-free guidance counts two.
    pub denoiser_calls: usize,
    /// Classifier passes (guidance gradients and flip checks).
    pub classifier_calls: usize,
    /// Image-encoder passes (DIFFusion's CLIP embedding, the nearest-neighbour baseline).
    pub encoder_calls: usize,
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost {
            denoiser_calls: self.denoiser_calls + other.denoiser_calls,
            classifier_calls: self.classifier_calls + other.classifier_calls,
            encoder_calls: self.encoder_calls + other.encoder_calls,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        *self = *self + other;
    }
}

/// The method setting that produced a flip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    /// A guidance scale of the gradient-guided sampler (MaskDiME, FastDiME, DiME).
    Guidance {
        /// The classifier-gradient scale.
        scale: f64,
    },
    /// A regeneration of DIFFusion's edit search.
    Edit {
        /// The share of the sampling steps skipped.
        t_skip: f64,
        /// The edit strength along the class-mean direction; `None` for edits without one
        /// (the target-mean baseline).
        lambda: Option<f64>,
    },
}

impl Setting {
    /// The guidance scale, for [`Setting::Guidance`].
    pub fn scale(&self) -> Option<f64> {
        match *self {
            Setting::Guidance { scale } => Some(scale),
            Setting::Edit { .. } => None,
        }
    }

    /// `T_skip`, for [`Setting::Edit`].
    pub fn t_skip(&self) -> Option<f64> {
        match *self {
            Setting::Edit { t_skip, .. } => Some(t_skip),
            Setting::Guidance { .. } => None,
        }
    }

    /// The edit strength lambda, for an arithmetic [`Setting::Edit`].
    pub fn lambda(&self) -> Option<f64> {
        match *self {
            Setting::Edit { lambda, .. } => lambda,
            Setting::Guidance { .. } => None,
        }
    }
}

/// What happened to one input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Whether the classifier gives the target for the counterfactual.
    pub flipped: bool,
    /// The setting that flipped it; `None` when nothing did (or the method has no setting).
    pub setting: Option<Setting>,
    /// What this input cost.
    pub cost: Cost,
}

impl Outcome {
    /// An input no setting flipped.
    pub fn unflipped(cost: Cost) -> Self {
        Self {
            flipped: false,
            setting: None,
            cost,
        }
    }
}

/// A method's answer for a batch.
#[derive(Debug, Clone)]
pub struct Explained<B: Backend> {
    /// The counterfactuals `[N, C, H, W]`: each input's flip, or its strongest attempt.
    pub images: Tensor<B, 4>,
    /// One outcome per input, in input order.
    pub outcomes: Vec<Outcome>,
    /// The final outer mask per input (`[N, 1, H, W]`, 0 / 1: MaskDiME's `M1`, FastDiME's
    /// difference mask); `None` for methods without masks.
    pub outer_masks: Option<Tensor<B, 4>>,
    /// The final inner mask per input (MaskDiME's `M2`).
    pub inner_masks: Option<Tensor<B, 4>>,
}

impl<B: Backend> Explained<B> {
    /// An answer without masks.
    pub fn unmasked(images: Tensor<B, 4>, outcomes: Vec<Outcome>) -> Self {
        Self {
            images,
            outcomes,
            outer_masks: None,
            inner_masks: None,
        }
    }

    /// Share of inputs flipped.
    pub fn flip_rate(&self) -> f64 {
        self.outcomes.iter().filter(|o| o.flipped).count() as f64
            / self.outcomes.len().max(1) as f64
    }

    /// Checks that the answer covers `n` inputs: `n` images, `n` outcomes, masks `[n, 1, H, W]`.
    pub fn check(&self, n: usize) -> Result<()> {
        let rows = self.images.dims()[0];
        if rows != n || self.outcomes.len() != n {
            return Err(Error::shape(
                "counterfactuals of a batch",
                n,
                format!("{rows} images, {} outcomes", self.outcomes.len()),
            ));
        }
        for masks in [&self.outer_masks, &self.inner_masks].into_iter().flatten() {
            let dims = masks.dims();
            if dims[0] != n || dims[1] != 1 {
                return Err(Error::shape(
                    "masks of a batch",
                    format!("[{n}, 1, H, W]"),
                    fmt_dims(&dims),
                ));
            }
        }
        Ok(())
    }
}

/// A counterfactual method: given a batch of inputs and their targets, one counterfactual per
/// input. Implemented by MaskDiME / FastDiME / DiME (`foil_guide::Guide`), DIFFusion and its
/// baselines (`foil-diffusion`); `foil_run::run_set` drives any of them over a dataset.
pub trait Method<B: Backend> {
    /// A short lower-case name (`maskdime`, `diffusion`, ...), used in summaries.
    fn name(&self) -> &str;

    /// The counterfactuals of `request.images`, deterministic in `request.seed`.
    fn explain(&self, request: Request<'_, B>) -> Result<Explained<B>>;
}

impl<B: Backend, M: Method<B> + ?Sized> Method<B> for &M {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn explain(&self, request: Request<'_, B>) -> Result<Explained<B>> {
        (**self).explain(request)
    }
}
