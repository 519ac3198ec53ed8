//! Byte mutations of valid files, shared by the fuzz suites of foil's loaders (issue 19, "Bad
//! input"): truncation, bit and byte flips, deleted, duplicated and spliced ranges, length fields
//! overwritten with huge values and JSON-ish tokens inserted.
//!
//! Each suite has a test running [`ci_cases`] cases (a few hundred; `FOIL_FUZZ_CASES` overrides)
//! and an ignored `fuzz_*_10k` test running [`OPT_IN_CASES`], selected by
//! `cargo test --release -- --ignored fuzz`.

#![allow(dead_code)]

use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per loader of the opt-in run (`FOIL_FUZZ_CASES` overrides).
pub const OPT_IN_CASES: u32 = 10_000;

/// Cases per loader in CI (`FOIL_FUZZ_CASES` overrides).
pub fn ci_cases(default: u32) -> u32 {
    std::env::var("FOIL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Cases of an opt-in run.
pub fn opt_in_cases() -> u32 {
    ci_cases(OPT_IN_CASES)
}

/// A position in the file: in its first 512 bytes (where headers and length fields are) or
/// anywhere.
#[derive(Debug, Clone, Copy)]
pub struct Pos {
    head: bool,
    index: Index,
}

impl Pos {
    /// The byte index in a file of `len` bytes (`len` > 0).
    fn at(self, len: usize) -> usize {
        if self.head {
            self.index.index(len.min(512))
        } else {
            self.index.index(len)
        }
    }
}

/// Huge values written over a (length) field.
const HUGE: [u64; 8] = [
    u64::MAX,
    1 << 40,
    (1 << 32) - 1,
    1 << 31,
    i64::MAX as u64,
    1 << 62,
    0x7fff_ffff,
    1 << 20,
];

/// Tokens inserted or written over text (JSON numbers, brackets, quotes).
const TOKENS: [&str; 14] = [
    "99999999999999999999999",
    "1099511627776",
    "4294967296",
    "1e308",
    "-1",
    "0",
    "null",
    "[",
    "]",
    "{",
    "}",
    "\"",
    ",",
    "NaN",
];

/// One change to a file's bytes.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Cut the file at a position.
    Truncate(Pos),
    /// Flip one bit.
    FlipBit(Pos, u8),
    /// Set one byte.
    SetByte(Pos, u8),
    /// Remove up to `n` bytes.
    Delete(Pos, usize),
    /// Insert a copy of up to `n` bytes from the first position at the second.
    Duplicate(Pos, usize, Pos),
    /// Copy up to `n` bytes from the first position over the second.
    Splice(Pos, usize, Pos),
    /// Write a huge value (`HUGE[k]`) as 8 or 4 bytes, little- or big-endian.
    Huge(Pos, usize, bool, bool),
    /// Insert token `TOKENS[k]`.
    Token(Pos, usize),
    /// Replace the first number (a run of digits) at or after a position with `TOKENS[k]`
    /// (`k` < 7: the numeric tokens), leaving the syntax of a text file intact.
    Number(Pos, usize),
}

fn pos() -> impl Strategy<Value = Pos> {
    (any::<bool>(), any::<Index>()).prop_map(|(head, index)| Pos { head, index })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => pos().prop_map(Mutation::Truncate),
        3 => (pos(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        2 => (pos(), any::<u8>()).prop_map(|(p, v)| Mutation::SetByte(p, v)),
        1 => (pos(), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        1 => (pos(), 1usize..256, pos()).prop_map(|(a, n, b)| Mutation::Duplicate(a, n, b)),
        1 => (pos(), 1usize..256, pos()).prop_map(|(a, n, b)| Mutation::Splice(a, n, b)),
        2 => (pos(), 0..HUGE.len(), any::<bool>(), any::<bool>())
            .prop_map(|(p, k, wide, le)| Mutation::Huge(p, k, wide, le)),
        1 => (pos(), 0..TOKENS.len()).prop_map(|(p, k)| Mutation::Token(p, k)),
        2 => (pos(), 0..7usize).prop_map(|(p, k)| Mutation::Number(p, k)),
    ]
}

/// One to four mutations.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..=4)
}

/// For text files: half the cases change only numbers (keeping the syntax intact, so the values
/// reach the reader's checks), half are [`mutations`].
pub fn text_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let number = (pos(), 0..7usize).prop_map(|(p, k)| Mutation::Number(p, k));
    prop_oneof![prop::collection::vec(number, 1..=3), mutations()]
}

/// `seed` with `mutations` applied in turn.
pub fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        if b.is_empty() {
            break;
        }
        let len = b.len();
        match *m {
            Mutation::Truncate(p) => b.truncate(p.at(len)),
            Mutation::FlipBit(p, bit) => b[p.at(len)] ^= 1 << bit,
            Mutation::SetByte(p, v) => b[p.at(len)] = v,
            Mutation::Delete(p, n) => {
                let at = p.at(len);
                b.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(from, n, to) => {
                let at = from.at(len);
                let piece = b[at..(at + n).min(len)].to_vec();
                let to = to.at(len);
                b.splice(to..to, piece);
            }
            Mutation::Splice(from, n, to) => {
                let at = from.at(len);
                let piece = b[at..(at + n).min(len)].to_vec();
                let to = to.at(len);
                let end = (to + piece.len()).min(len);
                b[to..end].copy_from_slice(&piece[..end - to]);
            }
            Mutation::Huge(p, k, wide, le) => {
                let v = HUGE[k];
                let bytes: Vec<u8> = match (wide, le) {
                    (true, true) => v.to_le_bytes().to_vec(),
                    (true, false) => v.to_be_bytes().to_vec(),
                    (false, true) => (v as u32).to_le_bytes().to_vec(),
                    (false, false) => (v as u32).to_be_bytes().to_vec(),
                };
                let at = p.at(len);
                let end = (at + bytes.len()).min(len);
                b[at..end].copy_from_slice(&bytes[..end - at]);
            }
            Mutation::Token(p, k) => {
                let at = p.at(len);
                b.splice(at..at, TOKENS[k].bytes());
            }
            Mutation::Number(p, k) => {
                let from = p.at(len);
                let start = (from..len).chain(0..from).find(|&i| b[i].is_ascii_digit());
                if let Some(start) = start {
                    let end = (start..len)
                        .find(|&i| !(b[i].is_ascii_digit() || b[i] == b'.'))
                        .unwrap_or(len);
                    b.splice(start..end, TOKENS[k].bytes());
                }
            }
        }
    }
    b
}

/// How the cases of one run ended.
#[derive(Debug, Default)]
pub struct Tally {
    /// Inputs the loader accepted.
    pub accepted: u64,
    /// Inputs refused with a typed error.
    pub refused: u64,
}

/// Runs `cases` mutated inputs through `check`: each case picks a seed of `seeds` (name and
/// bytes), mutates it and calls `check(seed index, bytes)`, which returns `Ok(true)` when the
/// loader accepted the input, `Ok(false)` when it refused it with a typed error, and a test
/// failure otherwise. A panic fails the test (proptest shrinks it to a small input). Prints the
/// counts and the time taken.
pub fn run(
    name: &str,
    cases: u32,
    seeds: &[(String, Vec<u8>)],
    check: impl Fn(usize, &[u8]) -> Result<bool, TestCaseError>,
) -> Tally {
    run_with(name, cases, seeds, mutations(), check)
}

/// [`run`] with the mutations of `strategy` (for example [`text_mutations`]).
pub fn run_with(
    name: &str,
    cases: u32,
    seeds: &[(String, Vec<u8>)],
    strategy: impl Strategy<Value = Vec<Mutation>>,
    check: impl Fn(usize, &[u8]) -> Result<bool, TestCaseError>,
) -> Tally {
    assert!(!seeds.is_empty(), "{name}: no seed files");
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let tally = std::cell::RefCell::new(Tally::default());
    let start = Instant::now();
    let result = runner.run(&(0..seeds.len(), strategy), |(i, muts)| {
        let bytes = apply(&seeds[i].1, &muts);
        let accepted = check(i, &bytes)?;
        let mut t = tally.borrow_mut();
        if accepted {
            t.accepted += 1;
        } else {
            t.refused += 1;
        }
        Ok(())
    });
    let tally = tally.into_inner();
    eprintln!(
        "fuzz {name}: {cases} cases over {} seed(s) in {:.2} s ({} accepted, {} refused with \
         a typed error; counts include shrinking)",
        seeds.len(),
        start.elapsed().as_secs_f64(),
        tally.accepted,
        tally.refused
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    tally
}

/// How long a refusal of a huge claimed size may take before [`HangGuard`] ends the process.
pub const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A watchdog over one test, not a speed check: the refusals it watches take milliseconds, and
/// a loader that walked a claimed 2^32 or 2^40 elements one by one would take minutes to hours.
/// If the guard is still alive [`HANG_LIMIT`] after [`HangGuard::start`], the process prints
/// `what` and exits with a failure, so that such a loop fails the run instead of stalling it
/// (a panic could not: the test thread is the one that is stuck). Dropping the guard ends the
/// watch.
pub struct HangGuard {
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl HangGuard {
    /// Starts watching `what`.
    pub fn start(what: &'static str) -> Self {
        let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let watched = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let (lock, signal) = &*watched;
            let finished = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (finished, _) = signal
                .wait_timeout_while(finished, HANG_LIMIT, |finished| !*finished)
                .unwrap_or_else(|e| e.into_inner());
            if !*finished {
                eprintln!(
                    "{what}: still running after {HANG_LIMIT:?}: a loop over a claimed size?"
                );
                std::process::exit(101);
            }
        });
        Self { done }
    }
}

impl Drop for HangGuard {
    fn drop(&mut self) {
        let (lock, signal) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        signal.notify_all();
    }
}
