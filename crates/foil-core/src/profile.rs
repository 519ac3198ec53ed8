//! Where a run's time goes: named spans, timed on the calling thread and summed per name.
//!
//! The methods open a [`span`] around each network call (the denoiser, the classifier's
//! forward and backward, the perceptual network's), so a caller can set what the networks
//! took against the time of the whole run and see the method's own overhead (masks, schedule
//! arithmetic, image handling) without a profiler:
//!
//! ```
//! use foil_core::profile;
//! profile::reset();
//! {
//!     let _span = profile::span(profile::DENOISER);
//!     // ... a denoiser call ...
//! }
//! let timings = profile::take();
//! assert_eq!(timings[0].name, profile::DENOISER);
//! assert_eq!(timings[0].calls, 1);
//! ```
//!
//! Spans nest: a span's time counts once, under the innermost span open on the thread (an
//! outer span's total is its own time without that of the spans inside it), so the totals of
//! all names add up to the time covered by any span.
//!
//! The figures are wall-clock time on the thread that runs the method. On the CPU backends
//! (ndarray, flex) a call has finished when it returns; GPU backends queue work and return
//! early, so there a span measures the queueing unless the device is synchronised:
//! [`sync_with`] gives this thread's spans a wait (a backend's `sync`) that each calls before
//! it starts its clock and before it stops it, so a span holds its own kernels' time and the
//! work queued before it is counted outside it:
//!
//! ```
//! use foil_core::profile;
//! let _sync = profile::sync_with(|| {
//!     // e.g. `let _ = B::sync(&device);` (burn's `Backend::sync`)
//! });
//! // ... spans opened here wait for the device twice each ...
//! ```
//!
//! The cost when nobody reads the figures is two clock reads per network call (and, while a
//! wait is set, two waits: on a GPU, the queue drained twice per network call).

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Span name of a denoiser forward (any batch, guided or not; with classifier-free guidance
/// the combination of its two halves).
pub const DENOISER: &str = "denoiser";
/// Span name of a classifier forward together with the backward of its loss to the input.
pub const CLASSIFIER_GRADIENT: &str = "classifier forward + backward";
/// Span name of the perceptual network's forwards together with the backward of its loss.
pub const PERCEPTUAL_GRADIENT: &str = "perceptual forward + backward";
/// Span name of a classifier forward that only predicts labels (`predicted_labels`).
pub const CLASSIFIER_PREDICTION: &str = "classifier forward (labels)";
/// Span name of an image encoder forward (DIFFusion's CLIP embeddings).
pub const IMAGE_ENCODER: &str = "image encoder";
/// Span name of a latent autoencoder call (DIFFusion's MoVQ encode or decode).
pub const CODEC: &str = "latent codec";

/// Total time and number of calls of one span name.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// The span's name.
    pub name: &'static str,
    /// How many spans of this name closed.
    pub calls: u64,
    /// Their summed wall-clock seconds.
    pub seconds: f64,
}

/// One thread's spans: the totals per name, and the open spans (innermost last) with the
/// time of the spans already closed inside each.
#[derive(Default)]
struct State {
    totals: Vec<(&'static str, u64, Duration)>,
    open: Vec<(u64, Duration)>,
    next_id: u64,
}

/// A wait for the device, shared by the guard that set it and the spans that call it.
type Wait = Rc<dyn Fn()>;

/// One thread's waits ([`sync_with`]), by guard, the one in force last.
#[derive(Default)]
struct Waits {
    set: Vec<(u64, Wait)>,
    next_id: u64,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    static WAITS: RefCell<Waits> = RefCell::new(Waits::default());
}

/// Calls this thread's wait, if one is set ([`sync_with`]), outside any borrow of the waits
/// (a wait that sets another wait is allowed; one that opens a span would recurse).
fn wait() {
    if let Some(wait) = WAITS.with(|w| w.borrow().set.last().map(|(_, wait)| Rc::clone(wait))) {
        wait();
    }
}

/// Until the returned guard is dropped, every span on this thread calls `wait` before starting
/// its clock and again before stopping it: give it the backend's `sync`
/// (`let _ = B::sync(&device)`) to time a GPU's kernels rather than their queueing. Guards
/// nest: the newest guard's wait is the one in force, and dropping a guard (in any order)
/// removes only its own wait.
pub fn sync_with(wait: impl Fn() + 'static) -> SyncGuard {
    let id = WAITS.with(|w| {
        let mut waits = w.borrow_mut();
        let id = waits.next_id;
        waits.next_id += 1;
        waits.set.push((id, Rc::new(wait)));
        id
    });
    SyncGuard {
        id,
        _thread: PhantomData,
    }
}

/// Keeps a [`sync_with`] wait set on its thread (not `Send`: the wait belongs to the thread).
#[must_use = "the wait is unset when the guard is dropped"]
#[derive(Debug)]
pub struct SyncGuard {
    id: u64,
    _thread: PhantomData<Rc<()>>,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        // Dropped outside the closure: a wait's own drop may touch the waits.
        let removed = WAITS.with(|w| {
            let mut waits = w.borrow_mut();
            let at = waits.set.iter().position(|(id, _)| *id == self.id)?;
            Some(waits.set.remove(at))
        });
        drop(removed);
    }
}

/// A running span: its time is added to its name's total when it is dropped.
#[must_use = "a span measures until it is dropped"]
#[derive(Debug)]
pub struct Span {
    name: &'static str,
    id: u64,
    start: Instant,
}

/// Opens a span named `name` on this thread (after this thread's wait, if one is set: the
/// work queued before the span is not its time).
pub fn span(name: &'static str) -> Span {
    wait();
    let id = STATE.with(|state| {
        let mut state = state.borrow_mut();
        let id = state.next_id;
        state.next_id += 1;
        state.open.push((id, Duration::ZERO));
        id
    });
    Span {
        name,
        id,
        start: Instant::now(),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        // Not while unwinding: a failing wait (a lost device) would turn the panic into an abort.
        if !std::thread::panicking() {
            wait();
        }
        let elapsed = self.start.elapsed();
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            // Normally the innermost; a span dropped out of order is still found.
            let inner = match state.open.iter().rposition(|(id, _)| *id == self.id) {
                Some(at) => state.open.remove(at).1,
                None => Duration::ZERO,
            };
            if let Some((_, enclosing)) = state.open.last_mut() {
                *enclosing += elapsed;
            }
            let own = elapsed.saturating_sub(inner);
            match state
                .totals
                .iter_mut()
                .find(|(name, ..)| *name == self.name)
            {
                Some((_, calls, time)) => {
                    *calls += 1;
                    *time += own;
                }
                None => state.totals.push((self.name, 1, own)),
            }
        });
    }
}

/// This thread's totals so far, in the order the names first closed, and clears them.
pub fn take() -> Vec<Timing> {
    STATE.with(|state| {
        state
            .borrow_mut()
            .totals
            .drain(..)
            .map(|(name, calls, time)| Timing {
                name,
                calls,
                seconds: time.as_secs_f64(),
            })
            .collect()
    })
}

/// Clears this thread's totals.
pub fn reset() {
    let _ = take();
}
