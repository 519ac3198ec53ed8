//! How far a long loop is: the crates report [`Tick`]s, whoever runs them decides how to show
//! them.
//!
//! Training, scoring and statistics loops call [`report`] after each step or batch. Nothing
//! happens until a program installs a sink with [`set_sink`] (the `foil` command line draws
//! progress bars on a terminal and writes plain lines elsewhere), so library users and tests
//! see no output and pay one uncontended lock per step:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use foil_core::progress::{self, Tick};
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = Arc::clone(&seen);
//! progress::set_sink(move |t: &Tick<'_>| {
//!     if let Ok(mut seen) = sink.lock() {
//!         seen.push((t.done, t.total));
//!     }
//! });
//! progress::report(&Tick::new("scoring", "images", 3, 10));
//! progress::clear_sink();
//! progress::report(&Tick::new("scoring", "images", 4, 10)); // nobody listens
//! assert_eq!(seen.lock().map(|s| s.clone()).ok(), Some(vec![(3, 10)]));
//! ```
//!
//! The sink is one per process (like a logger): a loop does not need to be handed a callback
//! through every layer above it.

use std::sync::{Arc, PoisonError, RwLock};

/// One step of a long loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick<'a> {
    /// What the loop does, e.g. `train classifier` or `LPIPS`; a new name (or a count that
    /// goes back) starts a new task.
    pub task: &'a str,
    /// What it counts, e.g. `steps`, `images`, `inputs`.
    pub unit: &'a str,
    /// Units done so far (a resumed loop starts above 0).
    pub done: usize,
    /// Units the loop does in all.
    pub total: usize,
    /// Counterfactuals that reached their target so far (runs that explain inputs).
    pub flipped: Option<usize>,
    /// The loss of the latest step (training).
    pub loss: Option<f64>,
    /// What the latest step was about (e.g. the input just explained and whether it flipped).
    pub note: Option<&'a str>,
    /// Seconds since the loop started, where the loop keeps time (else the sink does).
    pub seconds: Option<f64>,
}

impl<'a> Tick<'a> {
    /// `done` of `total` `unit`s of `task`, nothing else known.
    pub fn new(task: &'a str, unit: &'a str, done: usize, total: usize) -> Self {
        Self {
            task,
            unit,
            done,
            total,
            flipped: None,
            loss: None,
            note: None,
            seconds: None,
        }
    }
}

/// What receives the ticks.
type Sink = Arc<dyn Fn(&Tick<'_>) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Sends every later [`report`] of the process to `sink` (replacing any sink before it).
pub fn set_sink(sink: impl Fn(&Tick<'_>) + Send + Sync + 'static) {
    *SINK.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(sink));
}

/// Stops sending reports anywhere.
pub fn clear_sink() {
    *SINK.write().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Whether a sink is installed (a loop may skip building a note nobody reads).
pub fn has_sink() -> bool {
    SINK.read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
}

/// Hands `tick` to the sink, if one is installed. The sink runs on the calling thread,
/// outside the lock (so it may report or log itself).
pub fn report(tick: &Tick<'_>) {
    let sink = SINK
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(Arc::clone);
    if let Some(sink) = sink {
        sink(tick);
    }
}
