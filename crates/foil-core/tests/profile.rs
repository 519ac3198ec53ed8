//! `foil_core::profile`: spans sum per name, count their calls, and stay on their thread.

use std::time::Duration;

use foil_core::profile;

#[test]
fn spans_sum_per_name_count_nested_time_once_and_take_clears_them() {
    profile::reset();
    for _ in 0..3 {
        let _span = profile::span(profile::DENOISER);
        std::thread::sleep(Duration::from_millis(2));
    }
    {
        let _outer = profile::span(profile::CLASSIFIER_GRADIENT);
        let _inner = profile::span(profile::PERCEPTUAL_GRADIENT);
        std::thread::sleep(Duration::from_millis(5));
    }
    let timings = profile::take();
    let names: Vec<_> = timings.iter().map(|t| (t.name, t.calls)).collect();
    // The inner span closes first (locals drop in reverse order).
    assert_eq!(
        names,
        [
            (profile::DENOISER, 3),
            (profile::PERCEPTUAL_GRADIENT, 1),
            (profile::CLASSIFIER_GRADIENT, 1)
        ]
    );
    assert!(timings[0].seconds >= 0.006, "{timings:?}");
    // The outer span's own time excludes the inner span's 5 ms.
    assert!(timings[1].seconds >= 0.005, "{timings:?}");
    assert!(timings[2].seconds < timings[1].seconds, "{timings:?}");
    assert_eq!(profile::take(), []);
}

#[test]
fn other_threads_keep_their_own_totals() {
    profile::reset();
    let elsewhere = std::thread::spawn(|| {
        drop(profile::span("elsewhere"));
        profile::take()
    })
    .join()
    .map_err(|_| "thread panicked");
    assert_eq!(elsewhere.map(|t| t.len()), Ok(1));
    assert_eq!(profile::take(), []);
}

#[test]
fn a_wait_runs_at_each_spans_start_and_end_and_is_unset_with_its_guard() {
    use std::cell::Cell;
    use std::rc::Rc;
    profile::reset();
    let waits = Rc::new(Cell::new(0));
    {
        let counted = Rc::clone(&waits);
        let _sync = profile::sync_with(move || counted.set(counted.get() + 1));
        drop(profile::span(profile::DENOISER));
        assert_eq!(waits.get(), 2);
        {
            // A nested guard replaces the wait, and dropping it restores the outer one.
            let _inner = profile::sync_with(|| {});
            drop(profile::span(profile::DENOISER));
            assert_eq!(waits.get(), 2);
        }
        drop(profile::span(profile::DENOISER));
        assert_eq!(waits.get(), 4);
    }
    drop(profile::span(profile::DENOISER));
    assert_eq!(waits.get(), 4);
    assert_eq!(profile::take()[0].calls, 4);
}

#[test]
fn guards_dropped_out_of_order_remove_only_their_own_wait() {
    use std::cell::Cell;
    use std::rc::Rc;
    let (first, second) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let (f, s) = (Rc::clone(&first), Rc::clone(&second));
    let a = profile::sync_with(move || f.set(f.get() + 1));
    let b = profile::sync_with(move || s.set(s.get() + 1));
    drop(a);
    // The newer wait stays in force; the older one is gone for good.
    drop(profile::span(profile::DENOISER));
    assert_eq!((first.get(), second.get()), (0, 2));
    drop(b);
    drop(profile::span(profile::DENOISER));
    assert_eq!((first.get(), second.get()), (0, 2));
    profile::reset();
}

#[test]
fn a_spans_closing_wait_is_its_time_and_its_opening_wait_the_enclosing_spans() {
    use std::cell::Cell;
    use std::rc::Rc;
    // The wait stands for a device draining its queue: 30 ms at the inner span's end (its own
    // kernels), 40 ms at its start (work queued before it, which belongs to the outer span).
    profile::reset();
    let calls = Rc::new(Cell::new(0u32));
    let seen = Rc::clone(&calls);
    let _sync = profile::sync_with(move || {
        seen.set(seen.get() + 1);
        // Waits in order: outer start (1), inner start (2), inner end (3), outer end (4).
        match seen.get() {
            2 => std::thread::sleep(Duration::from_millis(40)),
            3 => std::thread::sleep(Duration::from_millis(30)),
            _ => {}
        }
    });
    {
        let _outer = profile::span(profile::CLASSIFIER_GRADIENT);
        drop(profile::span(profile::DENOISER));
    }
    assert_eq!(calls.get(), 4);
    let timings = profile::take();
    let seconds = |name| {
        timings
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.seconds)
            .unwrap_or(0.0)
    };
    assert!(seconds(profile::DENOISER) >= 0.030, "{timings:?}");
    assert!(
        seconds(profile::CLASSIFIER_GRADIENT) >= 0.040,
        "{timings:?}"
    );
}
