//! Embedding arithmetic properties and the edit-search driver with toy parts.

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{from_vec, to_vec_f32};
use foil_core::{Classifier, ImageEncoder, Noise, Result};
use foil_embed::{
    ClassStats, ClassStatsBuilder, Direction, EditForm, Regenerator, SearchConfig, apply, search,
    sweep,
};
use proptest::prelude::*;

type B = NdArray;

fn rows(n: usize, d: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    proptest::collection::vec(
        proptest::collection::vec(-3.0f32..3.0, d)
            .prop_filter("non-zero", |r| r.iter().map(|v| v * v).sum::<f32>() > 1e-2),
        1..=n,
    )
}

fn tensor<Bk: Backend>(rows: &[Vec<f32>]) -> Tensor<Bk, 2> {
    let d = rows[0].len();
    from_vec(rows.concat(), [rows.len(), d], &Default::default()).unwrap()
}

fn stats(classes: &[(&str, &[Vec<f32>])]) -> ClassStats {
    let d = classes[0].1[0].len();
    let mut b = ClassStatsBuilder::new("toy", d);
    for (name, r) in classes {
        b.add(name, tensor::<B>(r)).unwrap();
    }
    b.build().unwrap()
}

fn norms<Bk: Backend>(t: &Tensor<Bk, 2>) -> Vec<f32> {
    let d = t.dims()[1];
    to_vec_f32(t)
        .unwrap()
        .chunks(d)
        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect()
}

fn max_abs<Bk: Backend>(a: &Tensor<Bk, 2>, b: &Tensor<Bk, 2>) -> f32 {
    to_vec_f32(&(a.clone() - b.clone()).abs())
        .unwrap()
        .into_iter()
        .fold(0.0, f32::max)
}

const D: usize = 5;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn lambda_zero_is_the_identity(a in rows(6, D), b in rows(6, D), c in rows(4, D)) {
        let s = stats(&[("a", &a), ("b", &b)]);
        let d = s.direction("a", "b").unwrap();
        for form in [EditForm::Reference, EditForm::Normalized] {
            let x = tensor::<B>(&c);
            let y = apply(x.clone(), &d, 0.0, form).unwrap();
            prop_assert!(max_abs(&x, &y) <= 1e-5 * 3.0 * (D as f32).sqrt());
            let xf = tensor::<Flex>(&c);
            prop_assert!(max_abs(&xf, &apply(xf.clone(), &d, 0.0, form).unwrap()) <= 1e-5 * 3.0 * (D as f32).sqrt());
        }
    }

    #[test]
    fn swapping_classes_negates_the_direction(a in rows(6, D), b in rows(6, D)) {
        let s = stats(&[("a", &a), ("b", &b)]);
        let ab = s.direction("a", "b").unwrap();
        let ba = s.direction("b", "a").unwrap();
        for (x, y) in ab.vector().iter().zip(ba.vector()) {
            prop_assert_eq!(*x, -*y);
        }
        prop_assert_eq!(ab.reversed(), ba);
    }

    #[test]
    fn identical_class_sets_give_a_zero_direction(a in rows(6, D)) {
        let s = stats(&[("a", &a), ("b", &a)]);
        prop_assert_eq!(s.direction("a", "b").unwrap().norm(), 0.0);
    }

    #[test]
    fn class_means_are_means_of_unit_vectors(a in rows(8, D)) {
        let s = stats(&[("a", &a)]);
        // The mean of unit vectors lies in the unit ball.
        let m = s.mean("a").unwrap();
        prop_assert!(m.iter().map(|v| v * v).sum::<f64>().sqrt() <= 1.0 + 1e-9);
        prop_assert_eq!(s.counts()[0], a.len());
        // Scaling any embedding does not change the statistics.
        let scaled: Vec<Vec<f32>> = a.iter().map(|r| r.iter().map(|v| v * 7.5).collect()).collect();
        let t = stats(&[("a", &scaled)]);
        for (x, y) in m.iter().zip(t.mean("a").unwrap()) {
            prop_assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn norms_behave_as_documented(a in rows(6, D), b in rows(6, D), c in rows(4, D), lambda in -4.0f64..4.0) {
        let s = stats(&[("a", &a), ("b", &b)]);
        let d = s.direction("a", "b").unwrap();
        let x = tensor::<B>(&c);
        let n0 = norms(&x);
        // Normalised form keeps |c|.
        for (n, m) in norms(&apply(x.clone(), &d, lambda, EditForm::Normalized).unwrap()).iter().zip(&n0) {
            prop_assert!((n - m).abs() <= 1e-4 * m.max(1.0), "{n} vs {m}");
        }
        // Reference form: |c'| = |c| |c/|c| + lambda d|.
        let y = apply(x, &d, lambda, EditForm::Reference).unwrap();
        for ((row, n), m) in c.iter().zip(norms(&y)).zip(&n0) {
            let unit: Vec<f64> = row.iter().map(|&v| v as f64 / *m as f64).collect();
            let moved: f64 = unit.iter().zip(d.vector()).map(|(u, v)| (u + lambda * v).powi(2)).sum::<f64>().sqrt();
            prop_assert!((n as f64 - *m as f64 * moved).abs() <= 1e-4 * (*m as f64).max(1.0) * (1.0 + lambda.abs()));
        }
    }

    #[test]
    fn bias_removal_leaves_an_orthogonal_direction(a in rows(6, D), b in rows(6, D), p in rows(6, D), q in rows(6, D)) {
        let s = stats(&[("a", &a), ("b", &b), ("p", &p), ("q", &q)]);
        let d = s.direction("a", "b").unwrap();
        let nuisance = s.direction("p", "q").unwrap();
        prop_assume!(nuisance.norm() > 1e-6);
        let (clean, cos) = d.without(&nuisance).unwrap();
        prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&cos));
        let dot: f64 = clean.vector().iter().zip(nuisance.vector()).map(|(x, y)| x * y).sum();
        prop_assert!(dot.abs() <= 1e-12 * (1.0 + d.norm() * nuisance.norm()), "dot {dot}");
        prop_assert!(clean.norm() <= d.norm() + 1e-12);
    }
}

#[test]
fn sweeps_interpolate_and_extrapolate() {
    let a = vec![vec![1.0, 0.0, 0.0, 0.0, 0.0]];
    let b = vec![vec![0.0, 1.0, 0.0, 0.0, 0.0]];
    let s = stats(&[("a", &a), ("b", &b)]);
    let d = s.direction("a", "b").unwrap();
    let x = tensor::<B>(&[vec![2.0, 0.0, 0.0, 0.0, 0.0]]);
    let outs = sweep(x, &d, &[-1.0, 0.0, 0.5, 1.0], EditForm::Reference).unwrap();
    let v: Vec<Vec<f32>> = outs.iter().map(|t| to_vec_f32(t).unwrap()).collect();
    // c' = |c| (c/|c| + lambda (b - a)) = 2 ((1, 0) + lambda (-1, 1))
    assert_eq!(&v[0][..2], &[4.0, -2.0]);
    assert_eq!(&v[1][..2], &[2.0, 0.0]);
    assert_eq!(&v[2][..2], &[1.0, 1.0]);
    assert_eq!(&v[3][..2], &[0.0, 2.0]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut b = ClassStatsBuilder::new("toy", 3);
    assert!(b.build().is_err(), "no class");
    assert!(b.add("a", tensor::<B>(&[vec![1.0, 2.0]])).is_err(), "width");
    assert!(
        b.add("a", tensor::<B>(&[vec![0.0, 0.0, 0.0]])).is_err(),
        "zero norm"
    );
    assert!(
        b.add("a", tensor::<B>(&[vec![f32::NAN, 0.0, 1.0]]))
            .is_err(),
        "NaN"
    );
    b.add("a", tensor::<B>(&[vec![1.0, 0.0, 0.0]])).unwrap();
    let s = b.build().unwrap();
    assert!(s.direction("a", "missing").is_err());
    assert!(s.check_encoder("other").is_err());
    let d = Direction::new("a", "b", vec![1.0, 0.0, 0.0]);
    assert!(
        apply(tensor::<B>(&[vec![1.0, 0.0]]), &d, 1.0, EditForm::Reference).is_err(),
        "width"
    );
    assert!(
        apply(
            tensor::<B>(&[vec![0.0, 0.0, 0.0]]),
            &d,
            1.0,
            EditForm::Reference
        )
        .is_err(),
        "zero norm"
    );
    assert!(
        apply(
            tensor::<B>(&[vec![1.0, 0.0, 0.0]]),
            &d,
            f64::NAN,
            EditForm::Reference
        )
        .is_err()
    );
    assert!(
        d.without(&Direction::new("p", "q", vec![0.0; 3])).is_err(),
        "zero nuisance"
    );
}

#[test]
fn stats_round_trip_through_safetensors() {
    let s = stats(&[
        (
            "shirt",
            &[vec![1.0, 2.0, 0.5, 0.0, 1.0], vec![0.0, 1.0, 0.0, 2.0, 1.0]],
        ),
        ("t-shirt", &[vec![3.0, 0.0, 1.0, 1.0, 0.0]]),
    ]);
    let dir = std::env::temp_dir().join(format!("foil-embed-{}", std::process::id()));
    let path = dir.join("stats.safetensors");
    s.save(&path).unwrap();
    let back = ClassStats::load(&path).unwrap();
    assert_eq!(back, s);
    back.check_encoder("toy").unwrap();
    std::fs::write(&path, b"not safetensors").unwrap();
    assert!(
        ClassStats::load(&path)
            .unwrap_err()
            .to_string()
            .contains("stats.safetensors")
    );
}

// ---- The search driver with toy parts whose answers are known ----

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
    use foil_embed::EfRegenerator;
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
