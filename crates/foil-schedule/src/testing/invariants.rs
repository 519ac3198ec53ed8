//! The invariants, one function each: what must hold, why, and how close is close enough.
//!
//! Scalar properties compare `f64` values exactly or to `1e-9` relative (the respacing chain
//! also allows `1 - beta` its ulp of 1). Tensor properties run in the backend's float type
//! (`f32` for foil's CPU backends), so they allow a rounding tolerance of [`TOLERANCE`] times
//! the magnitude of the values involved (and, where a
//! division by `sqrt(abar)` amplifies rounding, of that factor). The "bit for bit" halves of the
//! DDIM and EF-DDPM properties allow nothing.

use std::ops::RangeInclusive;

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};

use super::{InvariantFailure, Property, ScheduleUnderTest, StepUnderTest};

/// Relative rounding tolerance of the tensor properties: about 170 `f32` ulps, far below any
/// wrong coefficient (a step off by one, a missing square root) and far above the rounding of
/// a handful of multiply-adds.
pub const TOLERANCE: f32 = 1e-5;

/// Relative tolerance of `abar` rebuilt as a product of up to a thousand `1 - beta` in `f64`.
pub const CHAIN_TOLERANCE: f64 = 1e-9;

type Check = Result<(), InvariantFailure>;

/// The failure for a step function that returned an error where the property needed a value.
pub(super) fn step_error(property: Property, k: usize, e: foil_core::Error) -> InvariantFailure {
    InvariantFailure::new(
        property,
        format!("step k = {k}"),
        format!("the step returned an error: {e}"),
    )
}

fn host<B: Backend>(
    t: &Tensor<B, 4>,
    property: Property,
    k: usize,
) -> Result<Vec<f32>, InvariantFailure> {
    to_vec_f32(t).map_err(|e| step_error(property, k, e))
}

/// `max |x|`, infinite if any value is NaN.
fn max_abs(v: &[f32]) -> f32 {
    v.iter()
        .map(|x| if x.is_nan() { f32::INFINITY } else { x.abs() })
        .fold(0.0, f32::max)
}

/// `max |a - b|`, infinite on NaN or on a length mismatch.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0, f32::max)
}

fn describe<B: Backend>(k: usize, timesteps: &[usize], x: &Tensor<B, 4>) -> String {
    // `timesteps` is in sampling order: step k is at position len - 1 - k.
    let t = timesteps
        .len()
        .checked_sub(k + 1)
        .and_then(|i| timesteps.get(i))
        .map_or_else(|| "?".to_string(), |t| t.to_string());
    format!(
        "step k = {k} (timestep {t}), images {}",
        fmt_dims(&x.dims())
    )
}

/// betas, `abar`, `abar_prev` and timesteps have one entry per step, and there is at least one
/// step.
///
/// Why: every per-step quantity describes the same steps; a length mismatch shifts every
/// coefficient by a step (or indexes past the end).
pub fn step_counts_agree<S: ScheduleUnderTest + ?Sized>(schedule: &S) -> Check {
    let n = [
        schedule.betas().len(),
        schedule.alphas_cumprod().len(),
        schedule.alphas_cumprod_prev().len(),
        schedule.timesteps().len(),
    ];
    if n[0] == 0 || n.iter().any(|&m| m != n[0]) {
        return Err(InvariantFailure::new(
            Property::StepCounts,
            format!("a schedule of T = {}", schedule.num_train_timesteps()),
            format!(
                "{} betas, {} abar, {} abar_prev, {} timesteps",
                n[0], n[1], n[2], n[3]
            ),
        ));
    }
    Ok(())
}

/// The timesteps, in sampling order, strictly decrease and lie in `0..T`.
///
/// Why: a sampler walks from noise to data through distinct timesteps (a repeated or reversed
/// one re-applies or undoes a step), and the network only knows the timesteps `0..T` it was
/// trained on.
pub fn timesteps_decreasing_in_range<S: ScheduleUnderTest + ?Sized>(schedule: &S) -> Check {
    let ts = schedule.timesteps();
    let t_train = schedule.num_train_timesteps();
    let fail = |input: String, values: String| {
        Err(InvariantFailure::new(
            Property::TimestepsDecreasingInRange,
            input,
            values,
        ))
    };
    if let Some((i, w)) = ts.windows(2).enumerate().find(|(_, w)| w[0] <= w[1]) {
        return fail(
            format!("sampling positions {i} and {}", i + 1),
            format!("timestep {} then {}", w[0], w[1]),
        );
    }
    if let Some((i, &t)) = ts.iter().enumerate().find(|&(_, &t)| t >= t_train) {
        return fail(
            format!("sampling position {i}"),
            format!("timestep {t} outside the training range 0..{t_train}"),
        );
    }
    Ok(())
}

/// Every beta lies in `(0, 1)`.
///
/// Why: beta is the variance of the noise one forward step adds. `beta = 0` makes the step the
/// identity (a zero posterior variance and an infinite EF-DDPM noise map); `beta >= 1` destroys
/// the signal; `sqrt(1 - beta)` must be real. The integer-division cosine bug (`i / n` in
/// integers) makes every beta 0 but the last, and fails here.
pub fn betas_in_open_unit_interval<S: ScheduleUnderTest + ?Sized>(schedule: &S) -> Check {
    let betas = schedule.betas();
    match betas
        .iter()
        .enumerate()
        .find(|(_, b)| !(**b > 0.0 && **b < 1.0))
    {
        Some((k, b)) => Err(InvariantFailure::new(
            Property::BetasInOpenUnitInterval,
            format!("step k = {k} of {}", betas.len()),
            format!("beta = {b}"),
        )),
        None => Ok(()),
    }
}

/// `abar` strictly decreases over the steps (least noisy first) and lies in `(0, 1]`; so does
/// `abar_prev`, and each step moves to a larger `abar` (`abar_prev > abar`).
///
/// Why: `abar` is the signal variance left at a step, a product of factors `1 - beta` in
/// `(0, 1)`: it must fall at every step and never reach 0, since the Tweedie estimate divides
/// by `sqrt(abar)` (a schedule whose `abar` underflows to 0 cannot be inverted).
pub fn abar_strictly_decreasing<S: ScheduleUnderTest + ?Sized>(schedule: &S) -> Check {
    let abar = schedule.alphas_cumprod();
    let prev = schedule.alphas_cumprod_prev();
    let fail = |input: String, values: String| {
        Err(InvariantFailure::new(
            Property::AbarStrictlyDecreasing,
            input,
            values,
        ))
    };
    let inside = |a: f64| a > 0.0 && a <= 1.0;
    for (k, (&a, &p)) in abar.iter().zip(&prev).enumerate() {
        if !inside(a) || !inside(p) {
            return fail(
                format!("step k = {k}"),
                format!("abar = {a}, abar_prev = {p}"),
            );
        }
        if p <= a {
            return fail(
                format!("step k = {k}"),
                format!("abar_prev = {p} <= abar = {a}"),
            );
        }
    }
    if let Some((k, w)) = abar.windows(2).enumerate().find(|(_, w)| w[1] >= w[0]) {
        return fail(
            format!("steps k = {k} and {}", k + 1),
            format!("abar = {} then {}", w[0], w[1]),
        );
    }
    Ok(())
}

/// A respacing of `original` that keeps the steps `keep` (ascending indices into `original`):
/// its `abar` are exactly (bit for bit) the kept ones, its betas chain back to them
/// (`prod_{j <= i} (1 - beta_j) = abar_{keep[i]}` to [`CHAIN_TOLERANCE`]), its `abar_prev`
/// follow the chain, and its timesteps are the kept ones.
///
/// Why: a respaced sampler must visit exactly the noise levels the network was trained at; the
/// respaced betas `1 - abar_s / abar_prev_kept` are chosen so that their product is the kept
/// `abar`.
pub fn respacing_reproduces_abar<S, R>(original: &S, keep: &[usize], respaced: &R) -> Check
where
    S: ScheduleUnderTest + ?Sized,
    R: ScheduleUnderTest + ?Sized,
{
    let fail = |input: String, values: String| {
        Err(InvariantFailure::new(
            Property::RespacingReproducesAbar,
            input,
            values,
        ))
    };
    let full = original.alphas_cumprod();
    let (abar, prev, betas) = (
        respaced.alphas_cumprod(),
        respaced.alphas_cumprod_prev(),
        respaced.betas(),
    );
    if abar.len() != keep.len() || betas.len() != keep.len() || prev.len() != keep.len() {
        return fail(
            format!("{} kept steps", keep.len()),
            format!(
                "the respacing has {} abar, {} abar_prev, {} betas",
                abar.len(),
                prev.len(),
                betas.len()
            ),
        );
    }
    let mut chained = 1.0f64;
    for (i, &t) in keep.iter().enumerate() {
        let Some(&want) = full.get(t) else {
            return fail(
                format!("kept step {t}"),
                format!("outside the original {} steps", full.len()),
            );
        };
        if abar[i] != want {
            return fail(
                format!("respaced step {i} (original step {t})"),
                format!("abar = {} but the original abar = {want}", abar[i]),
            );
        }
        if prev[i] != chained && (prev[i] - chained).abs() > CHAIN_TOLERANCE * chained {
            return fail(
                format!("respaced step {i} (original step {t})"),
                format!(
                    "abar_prev = {} but the chain so far is at {chained}",
                    prev[i]
                ),
            );
        }
        // `1 - beta` carries an absolute rounding error of about one ulp of 1 (beta is
        // `1 - ratio`), which is large relative to a tiny ratio: allow it beside the relative
        // tolerance.
        let before = chained;
        chained *= 1.0 - betas[i];
        if (chained - want).abs() > CHAIN_TOLERANCE * want + 4.0 * f64::EPSILON * before {
            return fail(
                format!("respaced step {i} (original step {t})"),
                format!(
                    "prod (1 - beta) = {chained} but the kept abar = {want} (tolerance {CHAIN_TOLERANCE} relative)"
                ),
            );
        }
        // Continue from the exact value, as the respaced schedule itself does.
        chained = want;
    }
    let want_ts: Vec<usize> = keep.iter().rev().copied().collect();
    if respaced.timesteps() != want_ts {
        return fail(
            format!("kept steps {keep:?}"),
            format!("timesteps {:?}", respaced.timesteps()),
        );
    }
    Ok(())
}

/// The posterior variance of every step lies in `[0, beta_k]` (with `1e-12` relative slack).
///
/// Why: `beta_tilde = (1 - abar_prev) / (1 - abar) beta`, and `1 - abar_prev <= 1 - abar`:
/// knowing `x0` can only shrink the variance a step adds, never make it negative.
pub fn posterior_variance_bounded<B: Backend, S: StepUnderTest<B> + ?Sized>(step: &S) -> Check {
    for (k, beta) in step.betas().into_iter().enumerate() {
        let v = step.posterior_variance(k);
        if !(v >= 0.0 && v <= beta * (1.0 + 1e-12)) {
            return Err(InvariantFailure::new(
                Property::PosteriorVarianceBounded,
                format!("step k = {k}"),
                format!("posterior variance = {v}, beta = {beta}"),
            ));
        }
    }
    Ok(())
}

/// `predict_x0(q_sample(x0, k, eps), k, eps)` returns `x0`, to [`TOLERANCE`] times
/// `1 + max|x0| + max|eps| sqrt((1 - abar) / abar)` (the rounding of `x_t`, amplified by the
/// division by `sqrt(abar)`).
///
/// Why: `x_t = sqrt(abar) x0 + sqrt(1 - abar) eps` solves for `x0` once the noise is known;
/// every guided sampler and the DDIM step read the clean estimate this way, so with the true
/// noise it must be the true image.
pub fn tweedie_inverts_q_sample<B: Backend, S: StepUnderTest<B> + ?Sized>(
    step: &S,
    k: usize,
    x0: Tensor<B, 4>,
    eps: Tensor<B, 4>,
) -> Check {
    let p = Property::TweedieInvertsQSample;
    let input = describe(k, &step.timesteps(), &x0);
    let x_t = step
        .q_sample(x0.clone(), k, eps.clone())
        .map_err(|e| step_error(p, k, e))?;
    let back = step
        .predict_x0(x_t, k, eps.clone())
        .map_err(|e| step_error(p, k, e))?;
    let (x0v, epsv, backv) = (host(&x0, p, k)?, host(&eps, p, k)?, host(&back, p, k)?);
    let a = step.alphas_cumprod().get(k).copied().unwrap_or(f64::NAN);
    let amp = ((1.0 - a) / a).sqrt() as f32;
    let tol = TOLERANCE * (1.0 + max_abs(&x0v) + max_abs(&epsv) * amp);
    let err = max_abs_diff(&backv, &x0v);
    if err <= tol {
        Ok(())
    } else {
        Err(InvariantFailure::new(
            p,
            input,
            format!("max |x0_hat - x0| = {err:e} > tolerance {tol:e} (abar = {a})"),
        ))
    }
}

/// The posterior mean of `(x0, x_t = q_sample(x0, k, eps))`, rescaled by `1 / sqrt(abar_prev)`,
/// lies value by value between `x0` and `x_t / sqrt(abar)` (to [`TOLERANCE`] times their
/// magnitude).
///
/// Why: `mu = sqrt(abar_prev) beta / (1 - abar) x0 + sqrt(alpha) (1 - abar_prev) / (1 - abar)
/// x_t`, which is `sqrt(abar_prev) (w x0 + (1 - w) x_t / sqrt(abar))` with
/// `w = beta / (1 - abar)` in `[0, 1]`: in the data scale the posterior mean only moves a
/// sample towards its clean estimate (at the last step, where `abar_prev = 1`, all the way).
/// A coefficient off by a step or a missing square root breaks the interpolation.
pub fn posterior_mean_interpolates<B: Backend, S: StepUnderTest<B> + ?Sized>(
    step: &S,
    k: usize,
    x0: Tensor<B, 4>,
    eps: Tensor<B, 4>,
) -> Check {
    let p = Property::PosteriorMeanInterpolates;
    let input = describe(k, &step.timesteps(), &x0);
    let x_t = step
        .q_sample(x0.clone(), k, eps)
        .map_err(|e| step_error(p, k, e))?;
    let mu = step
        .posterior_mean(x0.clone(), x_t.clone(), k)
        .map_err(|e| step_error(p, k, e))?;
    let a = step.alphas_cumprod().get(k).copied().unwrap_or(f64::NAN);
    let ap = step
        .alphas_cumprod_prev()
        .get(k)
        .copied()
        .unwrap_or(f64::NAN);
    let (x0v, xtv, muv) = (host(&x0, p, k)?, host(&x_t, p, k)?, host(&mu, p, k)?);
    if muv.len() != x0v.len() {
        return Err(InvariantFailure::new(
            p,
            input,
            format!(
                "the mean has {} values, the images {}",
                muv.len(),
                x0v.len()
            ),
        ));
    }
    let (sa, sap) = (a.sqrt(), ap.sqrt());
    let y: Vec<f32> = xtv.iter().map(|&x| (x as f64 / sa) as f32).collect();
    let tol = TOLERANCE * (1.0 + max_abs(&x0v) + max_abs(&y));
    for (i, ((&m, &lo_hi0), &lo_hi1)) in muv.iter().zip(&x0v).zip(&y).enumerate() {
        let m = (m as f64 / sap) as f32;
        let (lo, hi) = (lo_hi0.min(lo_hi1), lo_hi0.max(lo_hi1));
        // Written so that NaN fails.
        if !(m >= lo - tol && m <= hi + tol) {
            return Err(InvariantFailure::new(
                p,
                input,
                format!(
                    "value {i}: mu / sqrt(abar_prev) = {m} outside [x0, x_t / sqrt(abar)] = \
                     [{lo_hi0}, {lo_hi1}] by more than {tol:e} (abar = {a}, abar_prev = {ap})"
                ),
            ));
        }
    }
    Ok(())
}

/// Two DDIM steps with `eta = 0` from the same `x_t` and `eps` return the same values, bit for
/// bit.
///
/// Why: with `eta = 0` the DDIM step adds no noise, so it is a function of its inputs; DDIM
/// inversion, reconstruction and every deterministic editing method rely on it.
pub fn ddim_eta0_deterministic<B: Backend, S: StepUnderTest<B> + ?Sized>(
    step: &S,
    k: usize,
    x_t: Tensor<B, 4>,
    eps: Tensor<B, 4>,
) -> Check {
    let p = Property::DdimDeterministic;
    let input = describe(k, &step.timesteps(), &x_t);
    let one = step
        .ddim_step(x_t.clone(), k, eps.clone())
        .map_err(|e| step_error(p, k, e))?;
    let two = step
        .ddim_step(x_t, k, eps)
        .map_err(|e| step_error(p, k, e))?;
    let (one, two) = (host(&one, p, k)?, host(&two, p, k)?);
    if one.len() != two.len() {
        return Err(InvariantFailure::new(
            p,
            input,
            format!("{} values then {}", one.len(), two.len()),
        ));
    }
    match one
        .iter()
        .zip(&two)
        .position(|(a, b)| a.to_bits() != b.to_bits())
    {
        None => Ok(()),
        Some(i) => Err(InvariantFailure::new(
            p,
            input,
            format!("value {i}: {} then {}", one[i], two[i]),
        )),
    }
}

/// `ddim_inverse_step(ddim_step(x_t, k, eps), k, eps)` returns `x_t`, to [`TOLERANCE`] times
/// `1 + max|x_t| + max|eps| + max|x_prev|`.
///
/// Why: with the same `eps`, both directions of DDIM (`eta = 0`) are one affine map between the
/// noise levels `abar_prev` and `abar`, read forwards and backwards; DDIM inversion of real
/// images rests on it.
pub fn ddim_inversion_round_trips<B: Backend, S: StepUnderTest<B> + ?Sized>(
    step: &S,
    k: usize,
    x_t: Tensor<B, 4>,
    eps: Tensor<B, 4>,
) -> Check {
    let p = Property::DdimInversionRoundTrips;
    let input = describe(k, &step.timesteps(), &x_t);
    let x_prev = step
        .ddim_step(x_t.clone(), k, eps.clone())
        .map_err(|e| step_error(p, k, e))?;
    let back = step
        .ddim_inverse_step(x_prev.clone(), k, eps.clone())
        .map_err(|e| step_error(p, k, e))?;
    let (xt, ev, xp, bv) = (
        host(&x_t, p, k)?,
        host(&eps, p, k)?,
        host(&x_prev, p, k)?,
        host(&back, p, k)?,
    );
    let tol = TOLERANCE * (1.0 + max_abs(&xt) + max_abs(&ev) + max_abs(&xp));
    let err = max_abs_diff(&bv, &xt);
    if err <= tol {
        Ok(())
    } else {
        Err(InvariantFailure::new(
            p,
            input,
            format!("max |inverted - x_t| = {err:e} > tolerance {tol:e}"),
        ))
    }
}

/// Edit-friendly DDPM inversion over the steps `ks` (consecutive, walked from the top down),
/// then regeneration, reproduces the trajectory.
///
/// The trajectory is `x_{k+1} = q_sample(x0, k, noise[k + 1 - lo])` for every step `k` in `ks`
/// (`lo = ks.start()`), with `x_lo = x0` when `lo = 0`, each point with its own, independent
/// noise (as the inverter draws them). Inverting, from the top: `(mean, std)` of the DDPM step
/// at `x_{k+1}` (with `eps` the noise of that point), the noise map `z_k = (x_k - mean) / std`,
/// and `x_k` re-derived as the step's own `prev_sample` with noise `z_k`, which must be within
/// [`TOLERANCE`] of the drawn `x_k`. Regenerating from the top point with the maps must then
/// return every re-derived `x_k` bit for bit. Steps with `std = 0` have no noise map (the
/// inverter refuses them): the trajectory ends above them.
///
/// This is the EF-DDPM inverter's loop (foil-invert's `EfInverter::invert` and `generate`)
/// stated at the level of one step: foil-schedule cannot depend on foil-invert, which depends
/// on it. `noise` needs `ks.len() + 1` tensors shaped like `x0`.
///
/// Why: edit-friendly inversion stores `z = (x_prev - mu) / sigma` per step and regeneration
/// computes `mu + sigma z` from the same `x_t`; `mu + sigma z` returns `x_prev` up to rounding,
/// and once the inverter continues from that re-derived sample, regeneration repeats exactly
/// the same operations on exactly the same inputs, so the reconstruction is exact.
pub fn ef_ddpm_noise_maps_reproduce_trajectory<B: Backend, S: StepUnderTest<B> + ?Sized>(
    step: &S,
    ks: RangeInclusive<usize>,
    x0: Tensor<B, 4>,
    noise: &[Tensor<B, 4>],
) -> Check {
    let p = Property::EfDdpmReproducesTrajectory;
    let (lo, top) = (*ks.start(), *ks.end());
    let timesteps = step.timesteps();
    if ks.is_empty() || noise.len() < top - lo + 2 {
        return Err(InvariantFailure::new(
            p,
            format!("steps {lo}..={top}"),
            format!("{} noises given, {} needed", noise.len(), top + 2 - lo),
        ));
    }
    // The drawn trajectory: xs[i] is the point at sample index lo + i.
    let mut xs = Vec::with_capacity(top - lo + 2);
    for i in lo..=top + 1 {
        xs.push(if i == 0 {
            x0.clone()
        } else {
            step.q_sample(x0.clone(), i - 1, noise[i - lo].clone())
                .map_err(|e| step_error(p, i - 1, e))?
        });
    }
    // Invert, from the top down.
    let mut x = xs[top + 1 - lo].clone();
    let mut maps = Vec::new();
    let mut rederived = Vec::new();
    for k in (lo..=top).rev() {
        let input = describe(k, &timesteps, &x);
        let eps = noise[k + 1 - lo].clone();
        let out = step
            .ddpm_step(x.clone(), k, eps.clone(), x.zeros_like())
            .map_err(|e| step_error(p, k, e))?;
        let std = host(&out.std, p, k)?;
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(InvariantFailure::new(
                p,
                input,
                format!("the step's std is {s}"),
            ));
        }
        if std.contains(&0.0) {
            break;
        }
        let target = xs[k - lo].clone();
        let z = (target.clone() - out.mean.clone()) / out.std.clone();
        let next = step
            .ddpm_step(x, k, eps, z.clone())
            .map_err(|e| step_error(p, k, e))?
            .prev_sample;
        let (tv, mv, nv) = (
            host(&target, p, k)?,
            host(&out.mean, p, k)?,
            host(&next, p, k)?,
        );
        let tol = TOLERANCE * (1.0 + max_abs(&tv) + max_abs(&mv));
        let err = max_abs_diff(&nv, &tv);
        if err > tol {
            return Err(InvariantFailure::new(
                p,
                input,
                format!(
                    "inverting: the step with its noise map lands {err:e} from x_prev (tolerance {tol:e})"
                ),
            ));
        }
        maps.push(z);
        rederived.push(next.clone());
        x = next;
    }
    // Regenerate from the top point with the maps.
    let mut x = xs[top + 1 - lo].clone();
    for (j, (z, want)) in maps.into_iter().zip(&rederived).enumerate() {
        let k = top - j;
        let eps = noise[k + 1 - lo].clone();
        let input = describe(k, &timesteps, &x);
        x = step
            .ddpm_step(x, k, eps, z)
            .map_err(|e| step_error(p, k, e))?
            .prev_sample;
        let (got, want) = (host(&x, p, k)?, host(want, p, k)?);
        if let Some(i) = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a.to_bits() != b.to_bits())
            .or((got.len() != want.len()).then_some(0))
        {
            return Err(InvariantFailure::new(
                p,
                input,
                format!(
                    "regenerating: value {i} is {} but inversion re-derived {}",
                    got.get(i).copied().unwrap_or(f32::NAN),
                    want.get(i).copied().unwrap_or(f32::NAN)
                ),
            ));
        }
    }
    Ok(())
}
