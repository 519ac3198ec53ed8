//! Embedding arithmetic properties.

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{from_vec, to_vec_f32};
use foil_embed::{ClassStats, ClassStatsBuilder, Direction, EditForm, apply, sweep};
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.safetensors");
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
