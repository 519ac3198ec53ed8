//! Training-time noise schedules and guided-diffusion respacing.

use std::collections::BTreeSet;

use foil_core::{Error, Result};

use crate::steps::round_half_even;

/// The most training steps a schedule may have: published models use 1000 to 4000, and a
/// count read from a file is checked against this before anything is allocated for it.
pub const MAX_TRAIN_STEPS: usize = 1_000_000;

/// How the betas of a training schedule are made.
#[derive(Debug, Clone, PartialEq)]
pub enum BetaSchedule {
    /// Betas evenly spaced from `start` to `end` (DDPM: `1e-4 ..= 0.02`).
    Linear {
        /// First beta.
        start: f64,
        /// Last beta.
        end: f64,
    },
    /// Square roots evenly spaced, then squared (Stable Diffusion, Kandinsky's prior).
    ScaledLinear {
        /// First beta.
        start: f64,
        /// Last beta.
        end: f64,
    },
    /// Nichol and Dhariwal's cosine schedule `abar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)`,
    /// with each beta clipped at `max_beta` (the paper: `s = 0.008`, `max_beta = 0.999`).
    Cosine {
        /// Small offset that keeps the first betas away from zero.
        s: f64,
        /// Upper clip of every beta.
        max_beta: f64,
    },
    /// Betas given one by one.
    Custom(Vec<f64>),
}

impl BetaSchedule {
    /// The cosine schedule with the published `s = 0.008` and clip `0.999`.
    pub fn cosine() -> Self {
        BetaSchedule::Cosine {
            s: 0.008,
            max_beta: 0.999,
        }
    }

    /// The original DDPM schedule: linear `1e-4 ..= 0.02`.
    pub fn ddpm() -> Self {
        BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        }
    }

    /// The betas of this schedule over `num_steps` steps (1 to [`MAX_TRAIN_STEPS`]).
    pub fn betas(&self, num_steps: usize) -> Result<Vec<f64>> {
        if num_steps == 0 || num_steps > MAX_TRAIN_STEPS {
            return Err(Error::out_of_range(
                "number of training steps",
                format!("1 to {MAX_TRAIN_STEPS}"),
                num_steps,
            ));
        }
        let ramp = |a: f64, b: f64| -> Vec<f64> {
            if num_steps == 1 {
                return vec![a];
            }
            // Float division: `i / (n - 1)` in integers is 0 for every i < n - 1.
            let last = (num_steps - 1) as f64;
            (0..num_steps)
                .map(|i| a + (b - a) * (i as f64 / last))
                .collect()
        };
        match *self {
            BetaSchedule::Linear { start, end } => Ok(ramp(start, end)),
            BetaSchedule::ScaledLinear { start, end } => {
                if start < 0.0 || end < 0.0 {
                    return Err(Error::out_of_range(
                        "scaled-linear beta bounds",
                        "non-negative",
                        format!("{start} ..= {end}"),
                    ));
                }
                Ok(ramp(start.sqrt(), end.sqrt())
                    .into_iter()
                    .map(|b| b * b)
                    .collect())
            }
            BetaSchedule::Cosine { s, max_beta } => {
                if !(s >= 0.0 && s.is_finite()) {
                    return Err(Error::out_of_range("cosine offset s", "finite and >= 0", s));
                }
                let abar = |t: f64| {
                    let v = ((t + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos();
                    v * v
                };
                let n = num_steps as f64;
                Ok((0..num_steps)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n, (i + 1) as f64 / n);
                        (1.0 - abar(t2) / abar(t1)).min(max_beta)
                    })
                    .collect())
            }
            BetaSchedule::Custom(ref betas) => {
                if betas.len() != num_steps {
                    return Err(Error::shape(
                        "custom betas",
                        format!("{num_steps} values"),
                        format!("{} values", betas.len()),
                    ));
                }
                Ok(betas.clone())
            }
        }
    }
}

/// A training noise schedule: `betas` and `abar_t = prod_{s <= t} (1 - beta_s)`, in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    abar: Vec<f64>,
}

impl NoiseSchedule {
    /// guided-diffusion's linear schedule for `steps` diffusion steps: betas from `1e-4` to
    /// `0.02` scaled by `1000 / steps` (`get_named_beta_schedule("linear", steps)`).
    pub fn guided_linear(steps: usize) -> Result<Self> {
        let scale = 1000.0 / steps.max(1) as f64;
        Self::new(
            &BetaSchedule::Linear {
                start: scale * 1e-4,
                end: scale * 0.02,
            },
            steps,
        )
    }

    /// Builds `num_steps` steps of `kind`.
    pub fn new(kind: &BetaSchedule, num_steps: usize) -> Result<Self> {
        Self::from_betas(kind.betas(num_steps)?)
    }

    /// Linear `1e-4 ..= 0.02` over 1000 steps (DDPM).
    pub fn ddpm() -> Self {
        Self::new(&BetaSchedule::ddpm(), 1000).expect("valid constant schedule")
    }

    /// Builds a schedule from explicit betas, each of which must lie in `(0, 1)`.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        if betas.is_empty() {
            return Err(Error::Empty {
                what: "betas".into(),
                hint: "a schedule needs at least one step".into(),
            });
        }
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(**b > 0.0 && **b < 1.0))
        {
            return Err(Error::out_of_range(format!("beta[{i}]"), "in (0, 1)", b));
        }
        let mut abar = Vec::with_capacity(betas.len());
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            abar.push(acc);
        }
        Ok(Self { betas, abar })
    }

    /// Number of training steps `T`.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// The betas.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `abar_t` for every `t`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.abar
    }

    /// `abar_t`, with an error for `t >= T`.
    pub fn abar(&self, t: usize) -> Result<f64> {
        self.abar
            .get(t)
            .copied()
            .ok_or_else(|| Error::out_of_range("timestep", format!("below {}", self.len()), t))
    }

    /// The signal-to-noise ratio `abar_t / (1 - abar_t)`.
    pub fn snr(&self, t: usize) -> Result<f64> {
        let a = self.abar(t)?;
        Ok(a / (1.0 - a))
    }
}

/// guided-diffusion's `space_timesteps`: which of `num_timesteps` steps to keep.
///
/// `sections` is either `"ddimN"` (an even stride that yields exactly `N` steps starting at 0)
/// or a comma-separated list of counts, one per equal section of the original steps, each
/// section's count spread with a fractional stride (`"200"` keeps 200 of 500 steps,
/// `"10,15,20"` keeps 10 in the first third, 15 in the second, 20 in the last).
/// The result is sorted ascending.
pub fn space_timesteps(num_timesteps: usize, sections: &str) -> Result<Vec<usize>> {
    let bad = |detail: String| Error::format(format!("timestep respacing {sections:?}"), detail);
    if let Some(n) = sections.strip_prefix("ddim") {
        let want: usize = n
            .parse()
            .map_err(|_| bad("expected ddim<N> with an integer N".into()))?;
        for stride in 1..num_timesteps.max(1) {
            if num_timesteps.div_ceil(stride) == want {
                return Ok((0..num_timesteps).step_by(stride).collect());
            }
        }
        return Err(bad(format!(
            "no integer stride gives exactly {want} of {num_timesteps} steps"
        )));
    }
    let counts = sections
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad("expected comma-separated step counts or ddim<N>".into()))?;
    let n_sections = counts.len();
    let base = num_timesteps / n_sections;
    let extra = num_timesteps % n_sections;
    let mut start = 0;
    let mut kept = BTreeSet::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = base + usize::from(i < extra);
        if size < count {
            return Err(bad(format!(
                "section {i} has {size} steps, cannot keep {count}"
            )));
        }
        let stride = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        let mut cur = 0.0f64;
        for _ in 0..count {
            // Python's round() rounds halves to even.
            kept.insert(start + round_half_even(cur) as usize);
            cur += stride;
        }
        start += size;
    }
    Ok(kept.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_not_integer_divided() {
        let betas = BetaSchedule::cosine().betas(1000).unwrap();
        // The integer-division bug makes all but the last beta zero.
        assert!(betas[0] > 1e-6 && betas[0] < 1e-3, "{}", betas[0]);
        assert!(betas[500] > betas[0]);
        assert_eq!(betas[999], 0.999);
    }

    #[test]
    fn bad_betas_are_errors() {
        assert!(NoiseSchedule::from_betas(vec![0.1, 1.0]).is_err());
        assert!(NoiseSchedule::from_betas(vec![]).is_err());
        assert!(NoiseSchedule::from_betas(vec![f64::NAN]).is_err());
        assert!(
            NoiseSchedule::new(
                &BetaSchedule::Linear {
                    start: 0.0,
                    end: 0.02
                },
                10
            )
            .is_err()
        );
        assert!(space_timesteps(10, "ddim7").is_err());
        assert!(space_timesteps(10, "11").is_err());
        assert!(space_timesteps(10, "x").is_err());
    }

    #[test]
    fn round_half_even_matches_python() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }
}
