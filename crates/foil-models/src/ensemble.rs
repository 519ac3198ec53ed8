//! An ensemble of one-logit classifiers whose verdict is the mean of their sigmoids, the oracle
//! DIFFusion scores its edits with.
//!
//! [`Classifier`] speaks in logits, so the ensemble returns ONE logit per image,
//! `logit(p) = ln(p / (1 - p))` of the mean probability `p = mean_i sigmoid(z_i)`. Then
//! `sigmoid(logit) = p` exactly, and [`foil_core::predicted_labels`] (class 1 when the logit is
//! above 0) gives class 1 exactly when `p > 0.5`, the mean-of-sigmoids decision. The logit is
//! computed in log space, `logsumexp_i log_sigmoid(z_i) - logsumexp_i log_sigmoid(-z_i)`, so it
//! stays finite and differentiable when members saturate (the `ln M` terms cancel).

use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Classifier, Error, Result};

/// Mean-of-sigmoids ensemble of one-logit classifiers (see the module docs for its logit).
pub struct Ensemble<B: Backend> {
    members: Vec<Box<dyn Classifier<B>>>,
}

impl<B: Backend> std::fmt::Debug for Ensemble<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("members", &self.members.len())
            .finish()
    }
}

impl<B: Backend> Ensemble<B> {
    /// An ensemble of at least one member, each with exactly one logit.
    pub fn new(members: Vec<Box<dyn Classifier<B>>>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::Empty {
                what: "classifier ensemble".into(),
                hint: "give at least one one-logit classifier".into(),
            });
        }
        for (i, m) in members.iter().enumerate() {
            if m.num_logits() != 1 {
                return Err(Error::shape(
                    format!("ensemble member {i} logits per image"),
                    1,
                    m.num_logits(),
                ));
            }
        }
        Ok(Self { members })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: an ensemble has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members' logits side by side, `[N, M]`.
    pub fn member_logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [n, ..] = images.dims();
        let mut columns = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let z = m.logits(images.clone())?;
            if z.dims() != [n, 1] {
                return Err(Error::shape(
                    format!("ensemble member {i} logits"),
                    fmt_dims(&[n, 1]),
                    fmt_dims(&z.dims()),
                ));
            }
            columns.push(z);
        }
        Ok(Tensor::cat(columns, 1))
    }

    /// The mean probability of class 1, `mean_i sigmoid(z_i)`, shaped `[N]`.
    pub fn probabilities(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 1>> {
        let [n, ..] = images.dims();
        let z = self.member_logits(images)?;
        Ok(burn::tensor::activation::sigmoid(z)
            .mean_dim(1)
            .reshape([n]))
    }
}

/// `log(sum(exp(x), dim 1))` for `[N, M]`, shifted by the (detached) row maximum.
fn logsumexp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let m = x.clone().max_dim(1).detach();
    (x - m.clone()).exp().sum_dim(1).log() + m
}

impl<B: Backend> Classifier<B> for Ensemble<B> {
    fn num_logits(&self) -> usize {
        1
    }

    /// `logit(mean_i sigmoid(z_i))`, `[N, 1]`.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let z = self.member_logits(images)?;
        Ok(logsumexp(log_sigmoid(z.clone())) - logsumexp(log_sigmoid(z.neg())))
    }
}
