//! A schedule of your own, tested with foil's invariant suite (docs/schedule.md), and a broken
//! one the suite catches. Run: `cargo run -p foil-schedule --example user_schedule --features testing`.

use foil_schedule::testing::{ScheduleUnderTest, assert_schedule_suite, run_schedule_suite};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// GeoDiff's sigmoid schedule: betas follow a sigmoid from `1e-4` to `0.02` over `T` steps.
#[derive(Debug)]
struct Sigmoid {
    steps: usize,
}

impl ScheduleUnderTest for Sigmoid {
    fn num_train_timesteps(&self) -> usize {
        self.steps
    }
    fn betas(&self) -> Vec<f64> {
        let last = self.steps.saturating_sub(1).max(1) as f64;
        (0..self.steps)
            .map(|i| {
                let x = -6.0 + 12.0 * i as f64 / last;
                1e-4 + (0.02 - 1e-4) / (1.0 + (-x).exp())
            })
            .collect()
    }
}

/// The cosine schedule with the integer-division bug: `i / n` in `u64` is 0 for every `i < n`.
#[derive(Debug)]
struct IntegerCosine {
    steps: u64,
}

impl ScheduleUnderTest for IntegerCosine {
    fn num_train_timesteps(&self) -> usize {
        self.steps as usize
    }
    fn betas(&self) -> Vec<f64> {
        let abar = |t: f64| {
            ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let n = self.steps;
        (0..n)
            .map(|i| (1.0 - abar(((i + 1) / n) as f64) / abar((i / n) as f64)).min(0.999))
            .collect()
    }
}

fn main() {
    // Passes: every T from 1 to 1000.
    assert_schedule_suite((1usize..=1000).prop_map(|steps| Sigmoid { steps }));
    println!("Sigmoid: every invariant holds");

    // Fails, and proptest shrinks the counter-example to the smallest T that shows the bug.
    let err = run_schedule_suite(
        &mut TestRunner::default(),
        (1u64..=1000).prop_map(|steps| IntegerCosine { steps }),
    )
    .expect_err("the integer-division cosine must fail");
    println!("IntegerCosine: {err}");
    assert_eq!(
        err.property(),
        Some(foil_schedule::testing::Property::BetasInOpenUnitInterval)
    );
}
