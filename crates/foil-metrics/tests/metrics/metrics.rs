//! Metric properties and parity of FID with pytorch-fid.

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::toy::RegionClassifier;
use foil_core::{Classifier, ImageEncoder, Noise, Result};
use foil_metrics::cout::cout;
use foil_metrics::diversity::{RmsDistance, diversity};
use foil_metrics::fid::{Features, fid, split_fid};
use foil_metrics::flips::flip_report;
use foil_metrics::mnac::{mnac, mnac_excluding};
use foil_metrics::similarity::{cosine_similarities, summarize};
use proptest::prelude::*;

fn features(seed: u64, n: usize, d: usize, shift: f32) -> Features {
    let v: Vec<f32> = Noise::new(seed)
        .normal_vec(n * d)
        .into_iter()
        .map(|x| x + shift)
        .collect();
    Features::new(&v, n, d).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn fid_of_a_set_with_itself_is_zero(seed in any::<u64>(), d in 1usize..10, extra in 0usize..30) {
        let x = features(seed, d + 2 + extra, d, 0.0);
        prop_assert!(fid(&x, &x).unwrap().abs() < 1e-8);
    }

    #[test]
    fn fid_is_symmetric_and_non_negative(s1 in any::<u64>(), s2 in any::<u64>(), d in 1usize..10, shift in -2.0f32..2.0) {
        let a = features(s1, d + 12, d, 0.0);
        let b = features(s2, d + 20, d, shift);
        let ab = fid(&a, &b).unwrap();
        let ba = fid(&b, &a).unwrap();
        prop_assert!(ab >= 0.0);
        prop_assert!((ab - ba).abs() <= 1e-9 * (1.0 + ab), "{ab} vs {ba}");
    }

    #[test]
    fn success_ratio_lies_in_unit_interval(p in proptest::collection::vec((0usize..3, 0usize..3, 0usize..3), 1..50)) {
        let (s, t, pr): (Vec<_>, Vec<_>, Vec<_>) = p.into_iter().fold((vec![], vec![], vec![]), |mut acc, (a, b, c)| { acc.0.push(a); acc.1.push(b); acc.2.push(c); acc });
        let r = flip_report(&s, &t, &pr).unwrap();
        prop_assert!((0.0..=1.0).contains(&r.overall));
        let total: usize = r.directions.iter().map(|d| d.total).sum();
        prop_assert_eq!(total, s.len());
        for d in r.directions { prop_assert!((0.0..=1.0).contains(&d.ratio)); }
    }

    #[test]
    fn cout_is_antisymmetric_and_bounded(seed in any::<u64>(), steps in 1usize..60) {
        type B = NdArray;
        let dev = Default::default();
        let clf = RegionClassifier::new(6, 6, 1..4, 2..5, 1.0);
        let mut noise = Noise::new(seed);
        let x: Tensor<B, 4> = noise.normal([3, 2, 6, 6], &dev);
        let cf: Tensor<B, 4> = noise.normal([3, 2, 6, 6], &dev);
        let fwd = cout(&clf, x.clone(), cf.clone(), &[0, 0, 1], &[1, 1, 0], steps).unwrap();
        let back = cout(&clf, x, cf, &[1, 1, 0], &[0, 0, 1], steps).unwrap();
        for (f, b) in fwd.iter().zip(&back) {
            prop_assert!((f + b).abs() < 1e-12);
            prop_assert!((-1.0..=1.0).contains(f));
        }
    }
}

#[test]
fn fid_matches_pytorch_fid() {
    let path = format!("{}/tests/fixtures/fid.json", env!("CARGO_MANIFEST_DIR"));
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        let rows = |k: &str| {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect::<Vec<_>>()
        };
        let a = Features::new(&rows("a"), get("n1"), get("d")).unwrap();
        let b = Features::new(&rows("b"), get("n2"), get("d")).unwrap();
        let expected = case["fid"].as_f64().unwrap();
        let ours = fid(&a, &b).unwrap();
        approx::assert_relative_eq!(ours, expected, max_relative = 1e-4);
    }
}

#[test]
fn fid_needs_enough_samples_and_finite_features() {
    let err = fid(&features(1, 5, 8, 0.0), &features(2, 20, 8, 0.0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at least 8") && err.contains("found 5"),
        "{err}"
    );
    assert!(Features::new(&[1.0, f32::NAN], 1, 2).is_err());
    assert!(Features::new(&[1.0, 2.0, 3.0], 2, 2).is_err());
    assert!(
        split_fid(&features(1, 20, 4, 0.0), &features(2, 19, 4, 0.0), 10, 0).is_err(),
        "row counts"
    );
    assert!(
        split_fid(&features(1, 12, 8, 0.0), &features(2, 12, 8, 0.0), 10, 0).is_err(),
        "halves too small"
    );
}

#[test]
fn split_fid_is_seeded_and_near_zero_for_identical_distributions() {
    let real = features(1, 200, 3, 0.0);
    let same = features(2, 200, 3, 0.0);
    let shifted = features(3, 200, 3, 1.5);
    let a = split_fid(&real, &same, 10, 7).unwrap();
    assert_eq!(a, split_fid(&real, &same, 10, 7).unwrap());
    let far = split_fid(&real, &shifted, 10, 7).unwrap();
    // A 1.5 shift in 3 dimensions is a squared mean distance of 6.75.
    assert!(a < 0.5 && (far - 6.75).abs() < 1.5, "{a} {far}");
}

#[test]
fn flip_report_counts_every_input() {
    let r = flip_report(&[0, 0, 0, 1, 1], &[1, 1, 1, 0, 0], &[1, 0, 1, 0, 1]).unwrap();
    assert_eq!(r.overall, 3.0 / 5.0);
    assert_eq!(
        (
            r.directions[0].from,
            r.directions[0].flipped,
            r.directions[0].total
        ),
        (0, 2, 3)
    );
    assert_eq!(
        (
            r.directions[1].from,
            r.directions[1].flipped,
            r.directions[1].total
        ),
        (1, 1, 2)
    );
    assert!(flip_report(&[0], &[1, 0], &[1]).is_err());
    assert!(flip_report(&[], &[], &[]).is_err());
}

/// Two attributes: mean of the left half > 0, mean of the right half > 0.
struct Halves;
impl<B: Backend> Classifier<B> for Halves {
    fn num_logits(&self) -> usize {
        2
    }
    fn logits(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [n, c, h, w] = x.dims();
        let left = x
            .clone()
            .narrow(3, 0, w / 2)
            .reshape([n, c * h * (w / 2)])
            .mean_dim(1);
        let right = x
            .narrow(3, w / 2, w - w / 2)
            .reshape([n, c * h * (w - w / 2)])
            .mean_dim(1);
        Ok(Tensor::cat(vec![left, right], 1))
    }
}

#[test]
fn mnac_counts_changed_attributes() {
    type B = Flex;
    let dev = Default::default();
    let x = Tensor::<B, 4>::ones([2, 1, 2, 4], &dev).neg();
    let mut cf = x.clone().to_data().to_vec::<f32>().unwrap();
    // Image 0: flip the left half only; image 1: flip both halves.
    for (i, v) in cf.iter_mut().enumerate() {
        let (img, col) = (i / 8, i % 4);
        if col < 2 || img == 1 {
            *v = 1.0;
        }
    }
    let cf = Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(cf, [2, 1, 2, 4]), &dev);
    assert_eq!(mnac(&Halves, x.clone(), cf.clone()).unwrap(), vec![1, 2]);
    assert_eq!(
        mnac_excluding(&Halves, x.clone(), cf.clone(), 0).unwrap(),
        vec![0, 1]
    );
    // The exclusion is checked like `mnac`: shapes and the attribute index.
    assert!(mnac_excluding(&Halves, x.clone(), cf.narrow(0, 0, 1), 0).is_err());
    assert!(mnac_excluding(&Halves, x, Tensor::zeros([2, 1, 2, 4], &dev), 2).is_err());
}

#[test]
fn lpips_encoder_pools_the_last_layer() {
    use foil_metrics::lpips::{Lpips, LpipsEncoder, LpipsNet};
    use foil_models::alexnet::AlexNetConfig;
    type B = Flex;
    let dev = Default::default();
    let lpips = Lpips::<B>::random(
        LpipsNet::Alex(AlexNetConfig {
            widths: [4, 6, 6, 5, 7],
        }),
        &dev,
    );
    let encoder = LpipsEncoder::new(lpips, "tiny-alex");
    assert_eq!(encoder.embedding_dim(), 7);
    assert_eq!(encoder.identity(), "tiny-alex");
    let images = Tensor::<B, 4>::random(
        [3, 3, 40, 40],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &dev,
    );
    let z = encoder.encode(images).unwrap();
    assert_eq!(z.dims(), [3, 7]);
    let v = z.to_data().to_vec::<f32>().unwrap();
    // Unit-normalised features averaged over space: every entry in [-1, 1].
    assert!(v.iter().all(|x| x.is_finite() && x.abs() <= 1.0 + 1e-5));
}

struct Flatten;
impl<B: Backend> ImageEncoder<B> for Flatten {
    fn embedding_dim(&self) -> usize {
        4
    }
    fn identity(&self) -> String {
        "flatten".into()
    }
    fn encode(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let n = x.dims()[0];
        Ok(x.reshape([n, 4]))
    }
}

#[test]
fn cosine_metrics_and_diversity() {
    type B = NdArray;
    let dev = Default::default();
    let x = Tensor::<B, 4>::from_floats(
        [[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]],
        &dev,
    );
    let cf = Tensor::<B, 4>::from_floats(
        [[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, -1.0], [0.0, 0.0]]]],
        &dev,
    );
    let sims = cosine_similarities(&Flatten, x.clone(), cf.clone()).unwrap();
    assert!((sims[0] - 1.0).abs() < 1e-12 && sims[1].abs() < 1e-12);
    let s = summarize(&sims, 0.5).unwrap();
    assert_eq!((s.mean, s.share_above), (0.5, 0.5));
    // Diversity of three seeds: pairs (0,1), (0,2), (1,2).
    let d = diversity(&RmsDistance, &[x.clone(), x.clone(), cf.clone()]).unwrap();
    assert_eq!(d[0], 0.0);
    // Image 1 differs by 2 in one of 4 pixels: RMS 1, in two of the three pairs.
    assert!((d[1] - 2.0 / 3.0).abs() < 1e-6, "{}", d[1]);
    assert!(diversity(&RmsDistance, &[x]).is_err());
}
