//! DIFFusion's edit search driven with toy parts whose answers are known.

use burn::backend::NdArray;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, ImageEncoder, Noise, Result};
use foil_diffusion::{Regenerator, SearchConfig, search};
use foil_embed::Direction;

type B = NdArray;

/// Embedding: (mean of the image, 1).
struct MeanEncoder;
impl<Bk: Backend> ImageEncoder<Bk> for MeanEncoder {
    fn embedding_dim(&self) -> usize {
        2
    }
    fn identity(&self) -> String {
        "mean".into()
    }
    fn encode(&self, x: Tensor<Bk, 4>) -> Result<Tensor<Bk, 2>> {
        let n = x.dims()[0];
        let m = x.reshape([n as i32, -1]).mean_dim(1);
        Ok(Tensor::cat(vec![m.clone(), m.ones_like()], 1))
    }
}

/// Output: the input shifted by `(N - skip) / N * cond[0]`: stronger edits with fewer skipped steps.
struct ShiftRegenerator {
    n: usize,
    calls: std::cell::Cell<usize>,
}
impl<Bk: Backend> Regenerator<Bk> for ShiftRegenerator {
    type State = Tensor<Bk, 4>;
    fn num_steps(&self) -> usize {
        self.n
    }
    fn invert(&self, images: Tensor<Bk, 4>) -> Result<Tensor<Bk, 4>> {
        Ok(images)
    }
    fn generate(
        &self,
        state: &Tensor<Bk, 4>,
        indices: &[usize],
        cond: Tensor<Bk, 2>,
        skip: usize,
    ) -> Result<Tensor<Bk, 4>> {
        self.calls.set(self.calls.get() + 1);
        let idx = Tensor::<Bk, 1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(
                indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [indices.len()],
            ),
            &state.device(),
        );
        let picked = state.clone().select(0, idx);
        let strength = cond.narrow(1, 0, 1).reshape([indices.len(), 1, 1, 1])
            * ((self.n - skip) as f64 / self.n as f64);
        Ok(picked + strength)
    }
}

/// One logit: mean - 0.5.
struct Threshold;
impl<Bk: Backend> Classifier<Bk> for Threshold {
    fn num_logits(&self) -> usize {
        1
    }
    fn logits(&self, x: Tensor<Bk, 4>) -> Result<Tensor<Bk, 2>> {
        let n = x.dims()[0];
        Ok(x.reshape([n as i32, -1]).mean_dim(1) - 0.5)
    }
}

#[test]
fn search_stops_at_the_first_flip_and_counts_every_input() {
    let dev = Default::default();
    // Means from -1 to 0.45: some flip gently, some need strong edits, the first never flips.
    let means = [-1.0f32, -0.5, 0.0, 0.2, 0.45];
    let images: Tensor<B, 4> = Tensor::cat(
        means
            .iter()
            .map(|&m| Tensor::<B, 4>::ones([1, 1, 2, 2], &dev) * m)
            .collect(),
        0,
    );
    let d = Direction::new("dark", "bright", vec![0.5, 0.0]);
    let regen = ShiftRegenerator {
        n: 100,
        calls: 0.into(),
    };
    let config = SearchConfig::default();
    let report = search(&MeanEncoder, &regen, &Threshold, images, &d, 1, &config).unwrap();

    // Expected by hand: c' = |c| (c/|c| + lambda d) with c = (m, 1), lambda 2, so
    // c'[0] = m + 2 * 0.5 * |c| and the output mean is m + (1 - t_skip) * c'[0] > 0.5.
    let mut expected_trials = 0;
    for (i, &m) in means.iter().enumerate() {
        let norm = ((m * m + 1.0) as f64).sqrt();
        let shift = m as f64 + norm;
        let first = config.t_skips.iter().position(|&t| {
            let skip = (100.0 * t + 1e-9).floor();
            m as f64 + (100.0 - skip) / 100.0 * shift > 0.5
        });
        let o = &report.outcomes[i];
        assert_eq!(o.flipped, first.is_some(), "input {i}");
        assert_eq!(o.t_skip, first.map(|j| config.t_skips[j]), "input {i}");
        assert_eq!(
            o.trials,
            first.map_or(config.t_skips.len(), |j| j + 1),
            "input {i}"
        );
        expected_trials += o.trials;
    }
    assert!(
        report.outcomes.iter().any(|o| !o.flipped),
        "the toy set keeps a hard case"
    );
    assert!(report.outcomes.iter().filter(|o| o.flipped).count() >= 3);
    assert_eq!(report.generated, expected_trials);
    assert_eq!(report.oracle_calls, expected_trials);
    // Batched: one generate call per T_skip that still had inputs left.
    assert_eq!(
        regen.calls.get(),
        report.outcomes.iter().map(|o| o.trials).max().unwrap()
    );
    let flips = report.outcomes.iter().filter(|o| o.flipped).count();
    assert_eq!(report.success_ratio(), flips as f64 / means.len() as f64);
    assert_eq!(report.images.dims(), [5, 1, 2, 2]);
}

#[test]
fn search_drives_the_ef_regenerator_through_every_t_skip() {
    use foil_core::toy::TanhDenoiser;
    use foil_diffusion::EfRegenerator;
    use foil_invert::EfInverterConfig;
    use foil_schedule::{NoiseSchedule, Spacing, Steps};
    let dev = Default::default();
    let images: Tensor<B, 4> = Noise::new(1).normal([3, 1, 2, 2], &dev).tanh();
    let model = TanhDenoiser::<B>::new([1, 2, 2], 2, 5, &dev);
    let steps = Steps::inference(&NoiseSchedule::ddpm(), 10, Spacing::Leading, 1, false).unwrap();
    let inverter = EfInverterConfig::default()
        .init(steps, Some(Tensor::zeros([1, 2], &dev)))
        .unwrap();
    let regen = EfRegenerator {
        inverter: &inverter,
        denoiser: &model,
        codec: &foil_diffusion::Pixels,
        seed: 3,
    };
    // An oracle that never agrees: every T_skip is tried, the last (T_skip 0) output is kept.
    struct Never;
    impl Classifier<B> for Never {
        fn num_logits(&self) -> usize {
            1
        }
        fn logits(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
            Ok(Tensor::zeros([x.dims()[0], 1], &x.device()) - 1.0)
        }
    }
    let d = Direction::new("a", "b", vec![0.3, -0.2]);
    let config = SearchConfig {
        lambda: 0.0,
        ..SearchConfig::default()
    };
    let report = search(&MeanEncoder, &regen, &Never, images.clone(), &d, 1, &config).unwrap();
    assert_eq!(report.success_ratio(), 0.0);
    assert!(report.outcomes.iter().all(|o| o.trials == 10));
    // Inverted without a condition, regenerated with the encoder's embedding: not the same
    // condition, so not a reconstruction; but the output stays finite and shaped like the input.
    assert_eq!(report.images.dims(), images.dims());
    foil_core::tensor::ensure_finite(&report.images, "search output", "").unwrap();
}
