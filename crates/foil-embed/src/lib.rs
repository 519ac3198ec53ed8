//! Embedding arithmetic for DIFFusion, independent of the encoder and decoder used.
//!
//! - [`ClassStats`]: per-class means of L2-normalised embeddings, saved with the class names,
//!   counts and the encoder's identity (compute once from a folder, reuse).
//! - [`Direction`]: the difference of two class means, optionally with a nuisance direction
//!   (two backgrounds, say) removed by Gram–Schmidt.
//! - [`apply`] / [`sweep`]: `c' = |c| (c / |c| + lambda d)` (the reference form) or its
//!   renormalised variant, for any lambda (negative too).
//! - [`search`]: the edit search: per input, try `T_skip` values from gentle to strong and keep
//!   the first output an oracle labels as the target; the success ratio counts every input.

mod direction;
mod search;
mod stats;

pub use direction::{Direction, EditForm, apply, sweep};
pub use search::{
    EditOutcome, EfRegenerator, Regenerator, SearchConfig, SearchReport, oracle_labels, search,
    skip_steps,
};
pub use stats::{ClassStats, ClassStatsBuilder};
