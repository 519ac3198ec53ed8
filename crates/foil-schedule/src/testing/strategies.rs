//! proptest strategies for schedules, respacings, inference steps and small tensors.
//!
//! Every strategy yields only valid inputs (building from them never fails), over ranges wide
//! enough to cover the published schedules and their neighbours, and small enough that `abar`
//! stays well inside `f64` (no underflow to 0 over the longest schedule).

use burn::tensor::{Tensor, TensorData, backend::Backend};
use foil_core::Noise;
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::steps::round_half_even;
use crate::{BetaSchedule, NoiseSchedule, Spacing, Steps, space_timesteps};

/// The longest training schedule the strategies make (`T`): DDPM's and Kandinsky's 1000.
pub const MAX_TRAIN_TIMESTEPS: usize = 1000;

/// [`BetaSchedule::Linear`], `start` in `[1e-5, 1e-3)`, `end` in `[1e-3, 0.05)` (DDPM's
/// `1e-4 ..= 0.02`, DiME's `2e-4 ..= 0.04`, Kandinsky's `0.00085 ..= 0.012` lie inside).
pub fn linear() -> impl Strategy<Value = BetaSchedule> {
    (1e-5f64..1e-3, 1e-3f64..0.05).prop_map(|(start, end)| BetaSchedule::Linear { start, end })
}

/// [`BetaSchedule::ScaledLinear`] over the same ranges as [`linear`].
pub fn scaled_linear() -> impl Strategy<Value = BetaSchedule> {
    (1e-5f64..1e-3, 1e-3f64..0.05)
        .prop_map(|(start, end)| BetaSchedule::ScaledLinear { start, end })
}

/// [`BetaSchedule::Cosine`], offset `s` in `[0, 0.02)` (the paper: 0.008), clip `max_beta` in
/// `[0.5, 0.999]` (the paper: 0.999).
pub fn cosine() -> impl Strategy<Value = BetaSchedule> {
    (0.0f64..0.02, 0.5f64..=0.999).prop_map(|(s, max_beta)| BetaSchedule::Cosine { s, max_beta })
}

/// [`BetaSchedule::Custom`] with `num_steps` betas, each in `[1e-5, 0.05)`.
pub fn custom(num_steps: usize) -> impl Strategy<Value = BetaSchedule> {
    vec(1e-5f64..0.05, num_steps).prop_map(BetaSchedule::Custom)
}

/// Any kind but [`BetaSchedule::Custom`] (whose length must match the step count: see
/// [`beta_schedule_for`]), valid for every number of steps.
pub fn beta_schedule() -> impl Strategy<Value = BetaSchedule> {
    prop_oneof![linear(), scaled_linear(), cosine()]
}

/// Any kind, [`BetaSchedule::Custom`] included, for `num_steps` steps.
pub fn beta_schedule_for(num_steps: usize) -> impl Strategy<Value = BetaSchedule> {
    prop_oneof![linear(), scaled_linear(), cosine(), custom(num_steps)]
}

/// A number of training steps `T` in `1..=`[`MAX_TRAIN_TIMESTEPS`] (shrinks towards 1).
pub fn num_train_timesteps() -> impl Strategy<Value = usize> {
    1..=MAX_TRAIN_TIMESTEPS
}

/// A training schedule of any kind and length.
pub fn noise_schedule() -> impl Strategy<Value = NoiseSchedule> {
    num_train_timesteps()
        .prop_flat_map(|n| (beta_schedule_for(n), Just(n)))
        .prop_filter_map("a valid schedule of that kind and length", |(kind, n)| {
            NoiseSchedule::new(&kind, n).ok()
        })
}

/// A guided-diffusion respacing string valid for `num_timesteps` steps, as
/// [`space_timesteps`] reads it: one to four comma-separated section counts (each between 1
/// and its section's size), or `ddimN` for an `N` some integer stride gives exactly.
pub fn respacing(num_timesteps: usize) -> BoxedStrategy<String> {
    let t = num_timesteps.max(1);
    let sections = (1..=t.min(4))
        .prop_flat_map(move |m| {
            let (base, extra) = (t / m, t % m);
            (0..m)
                .map(|i| 1..=base + usize::from(i < extra))
                .collect::<Vec<_>>()
        })
        .prop_map(|counts| {
            counts
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
    if t < 2 {
        return sections.boxed();
    }
    let ddim = (1..t).prop_map(move |stride| format!("ddim{}", t.div_ceil(stride)));
    prop_oneof![sections, ddim].boxed()
}

/// Steps to keep out of `0..num_timesteps`, strictly increasing and non-empty: either an
/// arbitrary subset (at most 64 steps) or the steps a [`respacing`] string keeps.
pub fn kept_steps(num_timesteps: usize) -> BoxedStrategy<Vec<usize>> {
    let n = num_timesteps.max(1);
    let subset = btree_set(0..n, 1..=n.min(64)).prop_map(|s| s.into_iter().collect::<Vec<_>>());
    let respaced = respacing(n).prop_filter_map("a valid respacing string", move |r| {
        space_timesteps(n, &r).ok()
    });
    prop_oneof![subset, respaced].boxed()
}

/// Any diffusers spacing.
pub fn spacing() -> impl Strategy<Value = Spacing> {
    prop_oneof![
        Just(Spacing::Leading),
        Just(Spacing::Trailing),
        Just(Spacing::Linspace)
    ]
}

/// A number of inference steps for a `num_train_timesteps`-step schedule: `1..=T`.
pub fn inference_steps(num_train_timesteps: usize) -> impl Strategy<Value = usize> {
    1..=num_train_timesteps.max(1)
}

/// The arguments of [`Steps::inference`], as one value a strategy can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceSetup {
    /// Number of inference steps `N`.
    pub num_inference_steps: usize,
    /// How the `N` steps are spread.
    pub spacing: Spacing,
    /// Offset added to [`Spacing::Leading`] timesteps.
    pub steps_offset: usize,
    /// Whether the step past the first training step lands on `abar = 1`.
    pub set_alpha_to_one: bool,
}

impl InferenceSetup {
    /// [`Steps::inference`] over `schedule` with these arguments.
    pub fn build(&self, schedule: &NoiseSchedule) -> foil_core::Result<Steps> {
        Steps::inference(
            schedule,
            self.num_inference_steps,
            self.spacing,
            self.steps_offset,
            self.set_alpha_to_one,
        )
    }
}

/// Valid [`InferenceSetup`]s for a `num_train_timesteps`-step schedule: any step count and
/// spacing, `steps_offset` 0 or 1 where it keeps every timestep inside the training range
/// (diffusers' two values), either final `abar`, except one combination: when the smallest
/// timestep is 0, `set_alpha_to_one = false` makes step 0 go from `abar_0` to `abar_0`, an
/// identity step with beta 0 (diffusers does the same) that the suite rejects, as foil-invert's
/// inverter does; those setups get `set_alpha_to_one = true`.
pub fn inference_setup(num_train_timesteps: usize) -> impl Strategy<Value = InferenceSetup> {
    let t = num_train_timesteps.max(1);
    (inference_steps(t), spacing(), any::<bool>()).prop_flat_map(move |(n, spacing, one)| {
        // Leading's last timestep is (n - 1) (T / n) + offset, which must stay below T.
        let room = t - 1 - (n - 1) * (t / n);
        let max_offset = if spacing == Spacing::Leading {
            room.min(1)
        } else {
            0
        };
        (0..=max_offset).prop_map(move |steps_offset| {
            let smallest = match spacing {
                Spacing::Leading => steps_offset,
                Spacing::Trailing => {
                    round_half_even(t as f64 - (n - 1) as f64 * (t as f64 / n as f64)) as usize - 1
                }
                Spacing::Linspace => 0,
            };
            InferenceSetup {
                num_inference_steps: n,
                spacing,
                steps_offset,
                set_alpha_to_one: one || smallest == 0,
            }
        })
    })
}

/// [`Steps`] of every kind over a [`noise_schedule`]: the full chain, a guided-diffusion
/// respacing (subset or [`respacing`] string) or diffusers' inference spacing.
pub fn steps() -> impl Strategy<Value = Steps> {
    noise_schedule().prop_flat_map(|s| {
        let n = s.len();
        let (s1, s2) = (s.clone(), s.clone());
        prop_oneof![
            Just(Steps::full(&s)),
            kept_steps(n).prop_filter_map("valid kept steps", move |keep| {
                Steps::respaced(&s1, &keep).ok()
            }),
            inference_setup(n)
                .prop_filter_map("a valid inference setup", move |c| { c.build(&s2).ok() }),
        ]
    })
}

/// A small NCHW shape: batch 1..=2, channels 1..=3, height and width 1..=4 (shrinks to
/// `[1, 1, 1, 1]`).
pub fn small_shape() -> impl Strategy<Value = [usize; 4]> {
    (1usize..=2, 1usize..=3, 1usize..=4, 1usize..=4).prop_map(|(n, c, h, w)| [n, c, h, w])
}

/// Images of `shape` on `device`, each value in `[-1, 1]` (foil's image range), drawn and shrunk
/// value by value.
pub fn images<B: Backend>(
    shape: [usize; 4],
    device: B::Device,
) -> impl Strategy<Value = Tensor<B, 4>> {
    vec(-1.0f32..=1.0, shape.iter().product::<usize>())
        .prop_map(move |v| Tensor::from_data(TensorData::new(v, shape), &device))
}

/// Standard-normal noise of `shape` on `device`, from a seeded [`Noise`] (so the same seed gives
/// the same noise on every backend; shrinking moves the seed).
pub fn noise<B: Backend>(
    shape: [usize; 4],
    device: B::Device,
) -> impl Strategy<Value = Tensor<B, 4>> {
    any::<u64>().prop_map(move |seed| Noise::new(seed).normal(shape, &device))
}

/// Images and noise of the same [`small_shape`], on `device`.
pub fn images_and_noise<B: Backend>(
    device: B::Device,
) -> impl Strategy<Value = (Tensor<B, 4>, Tensor<B, 4>)> {
    small_shape()
        .prop_flat_map(move |shape| (images(shape, device.clone()), noise(shape, device.clone())))
}

/// The inputs of one run of the tensor invariants ([`check_step`](super::check_step)).
#[derive(Clone)]
pub struct StepCase<B: Backend> {
    /// Picks the step `k` the properties look at: `pick.index(number of steps)`.
    pub pick: Index,
    /// How many consecutive steps (from `k` down) the EF-DDPM trajectory covers, at least 1.
    pub chain: usize,
    /// Clean images `x0` in `[-1, 1]`.
    pub x0: Tensor<B, 4>,
    /// Independent standard-normal noises shaped like `x0`, at least `chain + 1` of them: the
    /// `q_sample` noise of each point of the trajectory (`noise[0]` is also the DDIM `eps`).
    pub noise: Vec<Tensor<B, 4>>,
}

impl<B: Backend> std::fmt::Debug for StepCase<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = |t: &Tensor<B, 4>| {
            foil_core::tensor::to_vec_f32(t)
                .map(|v| {
                    v.iter()
                        .map(|x| format!("{x:.4}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|e| e.to_string())
        };
        f.debug_struct("StepCase")
            .field("pick", &self.pick)
            .field("chain", &self.chain)
            .field("shape", &self.x0.dims())
            .field("x0", &format_args!("[{}]", values(&self.x0)))
            .field(
                "noise",
                &self
                    .noise
                    .iter()
                    .map(|t| format!("[{}]", values(t)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The longest EF-DDPM trajectory a [`StepCase`] asks for.
pub const MAX_CHAIN: usize = 3;

/// [`StepCase`]s on `device`: any step pick, a trajectory of 1..=[`MAX_CHAIN`] steps, images and
/// noises of one [`small_shape`].
pub fn step_case<B: Backend>(device: B::Device) -> impl Strategy<Value = StepCase<B>> {
    (small_shape(), any::<Index>(), 1..=MAX_CHAIN).prop_flat_map(move |(shape, pick, chain)| {
        let noises: Vec<_> = (0..=MAX_CHAIN)
            .map(|_| noise::<B>(shape, device.clone()))
            .collect();
        (images::<B>(shape, device.clone()), noises).prop_map(move |(x0, noise)| StepCase {
            pick,
            chain,
            x0,
            noise,
        })
    })
}
