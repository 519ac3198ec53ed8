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
