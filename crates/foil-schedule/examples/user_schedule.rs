//! A schedule of your own tested with foil's invariant suite, and a broken one the suite
//! catches with a shrunk counter-example (docs/schedule.md quotes this file).
//!
//! `cargo run -p foil-schedule --example user_schedule` prints both results; `cargo test`
//! runs the two `#[test]`s below (`test = true` in Cargo.toml).

use foil_schedule::testing::proptest::prelude::*;
use foil_schedule::testing::{
    ScheduleUnderTest, assert_schedule_suite, run_schedule_suite, test_runner,
};

/// GeoDiff's sigmoid schedule: betas follow a sigmoid from 1e-4 to 0.02 over T steps.
#[derive(Debug)]
struct Sigmoid(usize);

impl ScheduleUnderTest for Sigmoid {
    fn num_train_timesteps(&self) -> usize {
        self.0
    }
    fn betas(&self) -> Vec<f64> {
        let last = self.0.saturating_sub(1).max(1) as f64;
        (0..self.0)
            .map(|i| 1e-4 + (0.02 - 1e-4) / (1.0 + (6.0 - 12.0 * i as f64 / last).exp()))
            .collect()
    }
}

/// The cosine schedule with `i / n` in integer arithmetic: every beta but the last is 0.
#[derive(Debug)]
struct IntegerCosine(u64);

impl ScheduleUnderTest for IntegerCosine {
    fn num_train_timesteps(&self) -> usize {
        self.0 as usize
    }
    fn betas(&self) -> Vec<f64> {
        let abar = |t: f64| {
            ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let n = self.0;
        (0..n)
            .map(|i| (1.0 - abar(((i + 1) / n) as f64) / abar((i / n) as f64)).min(0.999))
            .collect()
    }
}

#[cfg_attr(test, allow(dead_code))]
fn main() {
    assert_schedule_suite((1usize..=1000).prop_map(Sigmoid));
    println!("Sigmoid: every invariant holds");
    let err = run_schedule_suite(&mut test_runner(256), (1u64..=1000).prop_map(IntegerCosine))
        .expect_err("the integer-division cosine must fail");
    println!("IntegerCosine: {err}");
}

#[test]
fn sigmoid_schedule_holds_every_invariant() {
    assert_schedule_suite((1usize..=1000).prop_map(Sigmoid));
}

#[test]
fn integer_cosine_is_caught_and_shrunk_to_two_steps() {
    let err = run_schedule_suite(&mut test_runner(256), (1u64..=1000).prop_map(IntegerCosine))
        .expect_err("every T >= 2 has zero betas");
    assert_eq!(
        err.property(),
        Some(foil_schedule::testing::Property::BetasInOpenUnitInterval),
        "{err}"
    );
    assert!(err.to_string().ends_with("IntegerCosine(2)"), "{err}");
}
