//! Whether the network being run is being trained (PyTorch's `model.train()` / `model.eval()`).
//!
//! Layers whose behaviour differs between training and inference (BatchNorm: batch statistics
//! and running-average updates while training, running statistics otherwise) read
//! [`is_training`]. It is off by default and a training loop turns it on for the forward passes
//! of its steps with [`TrainingMode::enter`]; it is per thread and restored when the guard drops.
//!
//! It is deliberately not tied to the autodiff backend: a guided sampler differentiates through a
//! classifier that must stay in inference mode.
//!
//! ```
//! use foil_core::mode::{TrainingMode, is_training};
//! assert!(!is_training());
//! {
//!     let _train = TrainingMode::enter();
//!     assert!(is_training());
//! }
//! assert!(!is_training());
//! ```

use std::cell::Cell;

thread_local! {
    static TRAINING: Cell<bool> = const { Cell::new(false) };
}

/// True while a [`TrainingMode`] guard is alive on this thread.
pub fn is_training() -> bool {
    TRAINING.with(Cell::get)
}

/// Turns training mode on for this thread until dropped, then restores the previous mode.
#[must_use = "training mode ends when the guard is dropped"]
#[derive(Debug)]
pub struct TrainingMode {
    previous: bool,
}

impl TrainingMode {
    /// Enters training mode.
    pub fn enter() -> Self {
        let previous = TRAINING.with(|t| t.replace(true));
        Self { previous }
    }
}

impl Drop for TrainingMode {
    fn drop(&mut self) {
        TRAINING.with(|t| t.set(self.previous));
    }
}
