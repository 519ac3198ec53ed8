//! The shared vocabulary of foil.
//!
//! Every other crate of the workspace speaks in these terms:
//!
//! - the traits [`Denoiser`], [`Classifier`] and [`ImageEncoder`] that the methods are generic
//!   over, so the same sampler runs with a toy analytic model in a test and with a published
//!   network in production;
//! - image ↔ tensor conversion ([`image_io`]): `u8` RGB or gray images become NCHW `f32`
//!   tensors in `[-1, 1]`, and back, in one place;
//! - training or inference mode for layers that differ between them ([`mode`]);
//! - where a run's time goes, network call by network call ([`profile`]), and how far a long
//!   loop is ([`progress`]);
//! - explicit, seeded randomness ([`Noise`]): nothing in foil draws from a hidden global RNG;
//! - what a counterfactual method is ([`Method`]: a batch and its targets in, one
//!   counterfactual per input out, with its [`Cost`] and [`Setting`]) and the shared ladder
//!   of stronger settings ([`escalate()`]);
//! - the [`Error`] type, whose messages say what was expected and what was found.
//!
//! All of it is generic over a burn [`Backend`](burn::tensor::backend::Backend).

mod error;
pub mod escalate;
pub mod home;
pub mod image_io;
pub mod method;
pub mod mode;
mod noise;
pub mod profile;
pub mod progress;
pub mod tensor;
pub mod toy;
mod traits;

pub use error::{Error, ErrorKind, Result};
pub use escalate::{Attempt, Climb, escalate};
pub use method::{Cost, Explained, Method, Outcome, Request, Setting};
pub use noise::Noise;
pub use traits::{
    Classifier, Denoiser, DenoiserOutput, Detached, FeatureExtractor, ImageEncoder,
    labels_from_logits, predicted_labels,
};
