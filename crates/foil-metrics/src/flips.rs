//! Success (flip) ratio over all inputs.

use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Flips for one direction `from -> to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionFlips {
    /// Source class.
    pub from: usize,
    /// Target class.
    pub to: usize,
    /// Inputs whose counterfactual the oracle labels as the target.
    pub flipped: usize,
    /// All inputs of this direction.
    pub total: usize,
    /// `flipped / total`.
    pub ratio: f64,
}

/// Flip ratios per direction and overall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlipReport {
    /// One entry per `(from, to)` pair seen, sorted.
    pub directions: Vec<DirectionFlips>,
    /// Flips over all inputs.
    pub overall: f64,
}

/// The success ratio: the share of **all** inputs whose counterfactual the oracle labels as its
/// target (`predicted[i] == targets[i]`), per direction (`sources[i] -> targets[i]`) and overall.
/// (DIFFusion's public evaluation divided by the inputs where a flip was found instead.)
pub fn flip_report(
    sources: &[usize],
    targets: &[usize],
    predicted: &[usize],
) -> Result<FlipReport> {
    if sources.len() != targets.len() || targets.len() != predicted.len() {
        return Err(Error::shape(
            "sources, targets and predictions",
            "three lists of equal length",
            format!(
                "{}, {} and {}",
                sources.len(),
                targets.len(),
                predicted.len()
            ),
        ));
    }
    if sources.is_empty() {
        return Err(Error::Empty {
            what: "inputs".into(),
            hint: "score at least one counterfactual".into(),
        });
    }
    let mut pairs: Vec<(usize, usize)> = sources
        .iter()
        .copied()
        .zip(targets.iter().copied())
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let directions = pairs
        .into_iter()
        .map(|(from, to)| {
            let (mut flipped, mut total) = (0, 0);
            for i in 0..sources.len() {
                if sources[i] == from && targets[i] == to {
                    total += 1;
                    flipped += usize::from(predicted[i] == to);
                }
            }
            DirectionFlips {
                from,
                to,
                flipped,
                total,
                ratio: flipped as f64 / total as f64,
            }
        })
        .collect();
    let flipped = predicted
        .iter()
        .zip(targets)
        .filter(|(p, t)| p == t)
        .count();
    Ok(FlipReport {
        directions,
        overall: flipped as f64 / sources.len() as f64,
    })
}
