//! Splitting one set run across processes: `--shard I/N`, a Slurm job array or a Kubernetes
//! Indexed Job, all writing into one results folder.
//!
//! **The split.** [`run_set`](crate::run_set) orders its inputs as a one-process run does
//! (direction `0 -> 1` first, then `1 -> 0`, each in dataset order, `per_direction` applied)
//! and cuts each direction into batches of `batch_size`, as that run would. Batch `k`, counted
//! over both directions from 0, belongs to shard `k mod N` ([`Shard::select`]). So the shards
//! of `N` partition the inputs (disjoint, their union is the unsharded set), the split depends
//! on nothing but the inputs, `per_direction` and `batch_size` (not on threads, hosts or
//! timing), and every input is explained in the same batch, at the same place and with the
//! same seed as in a one-process run: a fresh sharded run writes byte-identical results. All
//! shards must therefore run with the same settings (`--per-direction`, `--batch-size`).
//!
//! **Where the shard comes from** ([`Shard::resolve`]): an explicit `--shard I/N` (0-based:
//! `0/2` and `1/2` are the two halves; `0/1` is the whole set, whatever the environment says);
//! else a Slurm array task, `SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_COUNT` (index
//! `(ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`, so `--array=0-3`, `--array=1-4` and
//! `--array=0-6:2` all give shards 0 to 3 of 4); else a Kubernetes Indexed Job's
//! `JOB_COMPLETION_INDEX` with the count in `FOIL_SHARD_COUNT` (Kubernetes gives only the
//! index: set `FOIL_SHARD_COUNT` to the Job's `completions`); else the whole set. A value
//! that is not a number, an index at or past the count, a count of 0, or an index without its
//! count is an error naming the variable and its value.

use std::fmt;
use std::str::FromStr;

use foil_core::{Error, Result};

/// Slurm's array task id of this process.
pub const SLURM_ARRAY_TASK_ID: &str = "SLURM_ARRAY_TASK_ID";
/// Slurm's number of tasks in the array.
pub const SLURM_ARRAY_TASK_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
/// Slurm's lowest task id of the array (`--array=1-4`: 1); absent means 0.
pub const SLURM_ARRAY_TASK_MIN: &str = "SLURM_ARRAY_TASK_MIN";
/// Slurm's step between task ids (`--array=0-6:2`: 2); absent means 1.
pub const SLURM_ARRAY_TASK_STEP: &str = "SLURM_ARRAY_TASK_STEP";
/// A Kubernetes Indexed Job's completion index of this pod (0-based).
pub const JOB_COMPLETION_INDEX: &str = "JOB_COMPLETION_INDEX";
/// The number of shards beside [`JOB_COMPLETION_INDEX`] (the Job's `completions`), which
/// Kubernetes does not pass to the pod itself.
pub const FOIL_SHARD_COUNT: &str = "FOIL_SHARD_COUNT";

/// Shard `index` of `count` (0-based): the part of a set run one process does. See the
/// [module docs](self) for the split and where a shard comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Default for Shard {
    /// The whole set ([`Shard::WHOLE`]).
    fn default() -> Self {
        Self::WHOLE
    }
}

impl Shard {
    /// The whole set: shard 0 of 1.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; `count` must be at least 1 and `index` below it.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::out_of_range("shard count", ">= 1", count));
        }
        if index >= count {
            return Err(Error::out_of_range(
                "shard index",
                format!("below the shard count {count} (shards are numbered from 0)"),
                index,
            ));
        }
        Ok(Self { index, count })
    }

    /// This shard's index, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether this is the whole set (one shard).
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether batch `k` (counted over the whole run from 0) is this shard's: `k mod N == I`.
    pub fn owns_batch(&self, k: usize) -> bool {
        k % self.count == self.index
    }

    /// This shard's inputs: `directions` (each direction's inputs in run order) cut into
    /// batches of `batch_size` (0 counts as 1), batch `k` over all directions kept when this
    /// shard owns it; per direction, in order.
    pub fn select<T: Clone>(&self, directions: &[Vec<T>], batch_size: usize) -> Vec<Vec<T>> {
        let mut k = 0;
        directions
            .iter()
            .map(|inputs| {
                let mut mine = Vec::new();
                for batch in inputs.chunks(batch_size.max(1)) {
                    if self.owns_batch(k) {
                        mine.extend_from_slice(batch);
                    }
                    k += 1;
                }
                mine
            })
            .collect()
    }

    /// The shard of this process: `explicit` (`--shard`) when given, else the one the
    /// environment names ([`Shard::from_env`]), else the whole set.
    pub fn resolve(
        explicit: Option<Shard>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        match explicit {
            Some(shard) => Ok(shard),
            None => Ok(Self::from_env(lookup)?.unwrap_or(Self::WHOLE)),
        }
    }

    /// The shard a job scheduler names through environment variables, read with `lookup`
    /// (`|k| std::env::var(k).ok()` for the process's own): a Slurm array task, else a
    /// Kubernetes Indexed Job's pod, else `None`. Bad values are errors naming the variable.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let number = |name: &'static str| -> Result<Option<usize>> {
            match lookup(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    Error::out_of_range(name, "a whole number >= 0", format!("{v:?}"))
                }),
            }
        };
        let in_range = |index: usize, count: usize, what: String| {
            Shard::new(index, count).map_err(|_| {
                Error::out_of_range(
                    what,
                    format!("a shard index below the count {count} (shards from 0)"),
                    index,
                )
            })
        };
        if let Some(id) = number(SLURM_ARRAY_TASK_ID)? {
            let count = number(SLURM_ARRAY_TASK_COUNT)?.ok_or_else(|| {
                Error::out_of_range(
                    SLURM_ARRAY_TASK_COUNT,
                    format!(
                        "set beside {SLURM_ARRAY_TASK_ID}={id} (Slurm sets both in an array \
                         job; else pass --shard I/N)"
                    ),
                    "nothing",
                )
            })?;
            if count == 0 {
                return Err(Error::out_of_range(SLURM_ARRAY_TASK_COUNT, ">= 1", count));
            }
            let min = number(SLURM_ARRAY_TASK_MIN)?.unwrap_or(0);
            let step = number(SLURM_ARRAY_TASK_STEP)?.unwrap_or(1);
            if step == 0 {
                return Err(Error::out_of_range(SLURM_ARRAY_TASK_STEP, ">= 1", step));
            }
            if id < min || (id - min) % step != 0 {
                return Err(Error::out_of_range(
                    SLURM_ARRAY_TASK_ID,
                    format!(
                        "{SLURM_ARRAY_TASK_MIN} ({min}) plus a multiple of \
                         {SLURM_ARRAY_TASK_STEP} ({step}): arrays must be ranges (--array=0-N)"
                    ),
                    id,
                ));
            }
            let what = format!(
                "{SLURM_ARRAY_TASK_ID}={id} ({SLURM_ARRAY_TASK_MIN}={min}, \
                 {SLURM_ARRAY_TASK_STEP}={step}, {SLURM_ARRAY_TASK_COUNT}={count})"
            );
            return in_range((id - min) / step, count, what).map(Some);
        }
        let count = number(FOIL_SHARD_COUNT)?;
        match (number(JOB_COMPLETION_INDEX)?, count) {
            (Some(index), Some(count)) => {
                if count == 0 {
                    return Err(Error::out_of_range(FOIL_SHARD_COUNT, ">= 1", count));
                }
                let what = format!("{JOB_COMPLETION_INDEX}={index} ({FOIL_SHARD_COUNT}={count})");
                in_range(index, count, what).map(Some)
            }
            (Some(index), None) => Err(Error::out_of_range(
                FOIL_SHARD_COUNT,
                format!(
                    "set beside {JOB_COMPLETION_INDEX}={index}: the number of shards (the \
                     Indexed Job's completions)"
                ),
                "nothing",
            )),
            (None, Some(count)) => Err(Error::out_of_range(
                JOB_COMPLETION_INDEX,
                format!(
                    "set beside {FOIL_SHARD_COUNT}={count} (a Kubernetes Indexed Job sets it; \
                     else pass --shard I/N)"
                ),
                "nothing",
            )),
            (None, None) => Ok(None),
        }
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// `I/N`: shard `I` of `N`, from 0 (`0/4` to `3/4`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::out_of_range(
                "--shard",
                "I/N with whole numbers 0 <= I < N (shards are numbered from 0)",
                format!("{s:?}"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        Shard::new(i, n).map_err(|_| bad())
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn message(r: Result<Option<Shard>>) -> String {
        match r {
            Ok(s) => format!("no error: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_flag_parses_i_of_n_from_zero() {
        assert_eq!("1/4".parse::<Shard>().ok(), Shard::new(1, 4).ok());
        assert_eq!("0/1".parse::<Shard>().ok(), Some(Shard::WHOLE));
        for bad in ["4/4", "0/0", "1", "a/2", "1/b", "-1/2", "", "1/2/3"] {
            let err = bad.parse::<Shard>().err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("--shard") && e.contains(&format!("{bad:?}"))),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(
            Shard::new(2, 5).map(|s| s.to_string()).ok(),
            Some("2/5".into())
        );
    }

    #[test]
    fn slurm_array_variables_name_the_shard() -> Result<()> {
        let shard = |pairs: &[(&str, &str)]| Shard::from_env(env(pairs));
        let id_count = [(SLURM_ARRAY_TASK_ID, "2"), (SLURM_ARRAY_TASK_COUNT, "4")];
        assert_eq!(shard(&id_count)?, Some(Shard::new(2, 4)?));
        // --array=1-4: ids 1..=4 are shards 0..=3.
        let from_one = [
            (SLURM_ARRAY_TASK_ID, "4"),
            (SLURM_ARRAY_TASK_COUNT, "4"),
            (SLURM_ARRAY_TASK_MIN, "1"),
        ];
        assert_eq!(shard(&from_one)?, Some(Shard::new(3, 4)?));
        // --array=0-6:2: ids 0, 2, 4, 6 are shards 0..=3.
        let stepped = [
            (SLURM_ARRAY_TASK_ID, "6"),
            (SLURM_ARRAY_TASK_COUNT, "4"),
            (SLURM_ARRAY_TASK_STEP, "2"),
        ];
        assert_eq!(shard(&stepped)?, Some(Shard::new(3, 4)?));
        // Slurm wins over Kubernetes; an explicit shard over both.
        let both = [
            (SLURM_ARRAY_TASK_ID, "0"),
            (SLURM_ARRAY_TASK_COUNT, "2"),
            (JOB_COMPLETION_INDEX, "1"),
            (FOIL_SHARD_COUNT, "2"),
        ];
        assert_eq!(shard(&both)?, Some(Shard::new(0, 2)?));
        assert_eq!(
            Shard::resolve(Some(Shard::WHOLE), env(&both))?,
            Shard::WHOLE
        );
        assert_eq!(Shard::resolve(None, env(&both))?, Shard::new(0, 2)?);
        assert_eq!(Shard::resolve(None, env(&[]))?, Shard::WHOLE);
        assert_eq!(shard(&[])?, None);
        Ok(())
    }

    #[test]
    fn kubernetes_index_needs_the_count() -> Result<()> {
        let shard = |pairs: &[(&str, &str)]| Shard::from_env(env(pairs));
        let ok = [(JOB_COMPLETION_INDEX, "1"), (FOIL_SHARD_COUNT, "3")];
        assert_eq!(shard(&ok)?, Some(Shard::new(1, 3)?));
        let err = message(shard(&[(JOB_COMPLETION_INDEX, "1")]));
        assert!(
            err.contains(FOIL_SHARD_COUNT) && err.contains("=1"),
            "{err}"
        );
        let err = message(shard(&[(FOIL_SHARD_COUNT, "3")]));
        assert!(err.contains(JOB_COMPLETION_INDEX), "{err}");
        Ok(())
    }

    #[test]
    fn bad_variables_are_errors_naming_them_and_their_values() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: [Case<'_>; 9] = [
            (
                &[(SLURM_ARRAY_TASK_ID, "x1"), (SLURM_ARRAY_TASK_COUNT, "2")],
                &[SLURM_ARRAY_TASK_ID, "\"x1\""],
            ),
            (
                &[(SLURM_ARRAY_TASK_ID, "1"), (SLURM_ARRAY_TASK_COUNT, "two")],
                &[SLURM_ARRAY_TASK_COUNT, "\"two\""],
            ),
            (
                &[(SLURM_ARRAY_TASK_ID, "1")],
                &[SLURM_ARRAY_TASK_COUNT, "=1"],
            ),
            (
                &[(SLURM_ARRAY_TASK_ID, "2"), (SLURM_ARRAY_TASK_COUNT, "2")],
                &[SLURM_ARRAY_TASK_ID, "=2", "below the count 2"],
            ),
            (
                &[(SLURM_ARRAY_TASK_ID, "0"), (SLURM_ARRAY_TASK_COUNT, "0")],
                &[SLURM_ARRAY_TASK_COUNT, ">= 1"],
            ),
            (
                &[
                    (SLURM_ARRAY_TASK_ID, "0"),
                    (SLURM_ARRAY_TASK_COUNT, "2"),
                    (SLURM_ARRAY_TASK_MIN, "1"),
                ],
                &[SLURM_ARRAY_TASK_ID, "ranges"],
            ),
            (
                &[(JOB_COMPLETION_INDEX, "3"), (FOIL_SHARD_COUNT, "3")],
                &[JOB_COMPLETION_INDEX, "=3", "below the count 3"],
            ),
            (
                &[(JOB_COMPLETION_INDEX, "0"), (FOIL_SHARD_COUNT, "0")],
                &[FOIL_SHARD_COUNT, ">= 1"],
            ),
            (
                &[(JOB_COMPLETION_INDEX, "-1"), (FOIL_SHARD_COUNT, "2")],
                &[JOB_COMPLETION_INDEX, "\"-1\""],
            ),
        ];
        for (pairs, wanted) in cases {
            let err = message(Shard::from_env(env(pairs)));
            assert!(wanted.iter().all(|w| err.contains(w)), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn batches_go_round_robin_over_both_directions() -> Result<()> {
        let dirs = vec![vec![0, 1, 2, 3, 4], vec![10, 11, 12]];
        // Batches of 2: [0 1] [2 3] [4] | [10 11] [12] -> k = 0 1 2 | 3 4.
        assert_eq!(
            Shard::new(0, 2)?.select(&dirs, 2),
            [vec![0, 1, 4], vec![12]]
        );
        assert_eq!(
            Shard::new(1, 2)?.select(&dirs, 2),
            [vec![2, 3], vec![10, 11]]
        );
        assert_eq!(Shard::WHOLE.select(&dirs, 2), dirs);
        Ok(())
    }
}
