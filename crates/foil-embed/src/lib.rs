//! Embedding arithmetic for DIFFusion, independent of the encoder and decoder used.
//!
//! - [`ClassStats`]: per-class means of L2-normalised embeddings, saved with the class names,
//!   counts and the encoder's identity (compute once from a folder, reuse).
//! - [`Direction`]: the difference of two class means, optionally with a nuisance direction
//!   (two backgrounds, say) removed by Gram–Schmidt.
//! - [`apply`] / [`sweep`]: `c' = |c| (c / |c| + lambda d)` (the reference form) or its
//!   renormalised variant, for any lambda (negative too).
//!
//! The edit search that regenerates with these conditions lives in `foil-diffusion`; this
//! crate knows nothing of the decoder.

mod direction;
mod stats;

pub use direction::{Direction, EditForm, apply, sweep};
pub use stats::{ClassStats, ClassStatsBuilder};
