//! The ladder every method climbs: try settings in order, each on the inputs the previous
//! ones left unflipped (MaskDiME's guidance scales, DIFFusion's `T_skip` values and its edit
//! strengths).

use crate::{Error, Result};

/// One input's answer to one setting: whether it flipped, and what the attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt<T> {
    /// Whether the attempt reached the target.
    pub flipped: bool,
    /// What it produced (an image row, its masks, ...).
    pub value: T,
}

/// Where one input ended up on the ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Climb<T> {
    /// The value of the setting that flipped it, or of the last (strongest) one tried.
    pub value: T,
    /// Index of the setting that flipped it; `None` when none did.
    pub flipped_at: Option<usize>,
    /// Settings tried on this input.
    pub attempts: usize,
}

impl<T> Climb<T> {
    /// Whether some setting flipped the input.
    pub fn flipped(&self) -> bool {
        self.flipped_at.is_some()
    }
}

/// Tries `settings` in order on `n` inputs: `attempt(setting, active)` answers for the inputs
/// `active` (indices into `0..n`, ascending) that no earlier setting flipped, one
/// [`Attempt`] per active input in the same order. Stops early once every input has flipped.
///
/// Every input is tried at least once, so each [`Climb`] has a value; an empty ladder (or
/// `n = 0`, which returns nothing) is an error only when there are inputs.
///
/// ```
/// use foil_core::escalate::{Attempt, escalate};
/// // Input i flips at strength >= i.
/// let climbs = escalate(3, &[0, 1, 2, 3], |&s, active| {
///     Ok(active.iter().map(|&i| Attempt { flipped: s >= i, value: s }).collect())
/// })?;
/// assert_eq!(climbs.iter().map(|c| c.flipped_at).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)]);
/// assert_eq!(climbs[2].attempts, 3);
/// # Ok::<(), foil_core::Error>(())
/// ```
pub fn escalate<S, T>(
    n: usize,
    settings: &[S],
    mut attempt: impl FnMut(&S, &[usize]) -> Result<Vec<Attempt<T>>>,
) -> Result<Vec<Climb<T>>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let (first, stronger) = settings.split_first().ok_or_else(|| Error::Empty {
        what: "ladder of settings".into(),
        hint: "give at least one setting to try".into(),
    })?;
    let all: Vec<usize> = (0..n).collect();
    // Every input tries the first setting, so every climb has a value from the start.
    let mut climbs: Vec<Climb<T>> = answers_for(&all, attempt(first, &all)?)?
        .map(|answer| Climb {
            flipped_at: answer.flipped.then_some(0),
            attempts: 1,
            value: answer.value,
        })
        .collect();
    for (k, setting) in stronger.iter().enumerate() {
        let active: Vec<usize> = (0..n).filter(|&i| !climbs[i].flipped()).collect();
        if active.is_empty() {
            break;
        }
        for (&i, answer) in active
            .iter()
            .zip(answers_for(&active, attempt(setting, &active)?)?)
        {
            let climb = &mut climbs[i];
            climb.attempts += 1;
            climb.value = answer.value;
            if answer.flipped {
                climb.flipped_at = Some(k + 1);
            }
        }
    }
    Ok(climbs)
}

/// The answers of one rung, checked to be one per active input.
fn answers_for<T>(
    active: &[usize],
    answers: Vec<Attempt<T>>,
) -> Result<impl Iterator<Item = Attempt<T>>> {
    if answers.len() != active.len() {
        return Err(Error::shape(
            "answers of a ladder rung",
            active.len(),
            answers.len(),
        ));
    }
    Ok(answers.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Each input flips at the first setting at or above its threshold, after exactly
        /// that many attempts, and keeps the last value tried otherwise.
        #[test]
        fn first_sufficient_setting(thresholds in prop::collection::vec(0usize..8, 1..12), rungs in 1usize..8) {
            let settings: Vec<usize> = (0..rungs).collect();
            let mut tried = 0;
            let climbs = escalate(thresholds.len(), &settings, |&s, active| {
                tried += active.len();
                Ok(active.iter().map(|&i| Attempt { flipped: s >= thresholds[i], value: s }).collect())
            }).unwrap();
            let mut expected_tries = 0;
            for (c, &t) in climbs.iter().zip(&thresholds) {
                if t < rungs {
                    prop_assert_eq!(c.flipped_at, Some(t));
                    prop_assert_eq!(c.attempts, t + 1);
                    prop_assert_eq!(c.value, t);
                } else {
                    prop_assert_eq!(c.flipped_at, None);
                    prop_assert_eq!(c.attempts, rungs);
                    prop_assert_eq!(c.value, rungs - 1);
                }
                expected_tries += c.attempts;
            }
            prop_assert_eq!(tried, expected_tries);
        }
    }

    #[test]
    fn a_wrong_answer_count_is_an_error() {
        let err = escalate(2, &[0], |_, _| {
            Ok(vec![Attempt {
                flipped: true,
                value: (),
            }])
        });
        assert!(matches!(err, Err(Error::Shape { .. })));
        assert!(escalate::<usize, ()>(2, &[], |_, _| Ok(vec![])).is_err());
        assert!(
            escalate::<usize, ()>(0, &[], |_, _| Ok(vec![]))
                .unwrap()
                .is_empty()
        );
    }
}
