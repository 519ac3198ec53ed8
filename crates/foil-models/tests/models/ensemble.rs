//! The mean-of-sigmoids ensemble: its logit, its labels, saturation and member checks.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use foil_core::tensor::to_vec_f32;
use foil_core::{Classifier, Result, predicted_labels};
use foil_models::ensemble::Ensemble;
use foil_models::resnet::ResNetConfig;
use foil_models::weights::TensorFile;

type B = NdArray;

/// A classifier returning fixed logits per image (`rows[i]` for image `i`).
struct Fixed(Vec<f32>, usize);

impl Classifier<B> for Fixed {
    fn num_logits(&self) -> usize {
        self.1
    }
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let n = images.dims()[0];
        Ok(Tensor::from_data(
            TensorData::new(self.0.clone(), [n, self.1]),
            &images.device(),
        ))
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn images(n: usize) -> Tensor<B, 4> {
    Tensor::zeros([n, 3, 8, 8], &Default::default())
}

#[test]
fn logit_is_the_logit_of_the_mean_sigmoid_and_labels_follow_it() {
    // Image 0: one confident yes (4), two mild no (-1.5, -1.5): mean p = 0.449 < 0.5 -> class 0,
    // although the mean LOGIT (0.33) is positive. Image 1: (-4, 1.5, 1.5): p = 0.551 -> class 1,
    // although the mean logit is negative. Image 2: (3, 0.5, -0.2) -> class 1.
    let a = [4.0, -4.0, 3.0];
    let b = [-1.5, 1.5, 0.5];
    let c = [-1.5, 1.5, -0.2];
    let members: Vec<Box<dyn Classifier<B>>> = vec![
        Box::new(Fixed(a.to_vec(), 1)),
        Box::new(Fixed(b.to_vec(), 1)),
        Box::new(Fixed(c.to_vec(), 1)),
    ];
    let ens = Ensemble::new(members).unwrap();
    assert_eq!(ens.len(), 3);
    let logits = to_vec_f32(&ens.logits(images(3)).unwrap()).unwrap();
    let probs = to_vec_f32(&ens.probabilities(images(3)).unwrap()).unwrap();
    for i in 0..3 {
        let p = (sigmoid(a[i] as f64) + sigmoid(b[i] as f64) + sigmoid(c[i] as f64)) / 3.0;
        let logit = (p / (1.0 - p)).ln();
        assert!(
            (logits[i] as f64 - logit).abs() < 1e-5,
            "{i}: {} vs {logit}",
            logits[i]
        );
        assert!((probs[i] as f64 - p).abs() < 1e-6);
    }
    assert_eq!(predicted_labels(&ens, images(3)).unwrap(), vec![0, 1, 1]);
}

#[test]
fn saturated_members_give_finite_logits() {
    let members: Vec<Box<dyn Classifier<B>>> = vec![
        Box::new(Fixed(vec![200.0, -200.0], 1)),
        Box::new(Fixed(vec![150.0, -300.0], 1)),
    ];
    let ens = Ensemble::new(members).unwrap();
    let logits = to_vec_f32(&ens.logits(images(2)).unwrap()).unwrap();
    // log-space: p ~ 1 - (e^-200 + e^-150)/2 -> logit ~ 150 + ln 2; p ~ e^-200/2 -> ~ -200 - ln 2.
    assert!((logits[0] - (150.0 + 2f32.ln())).abs() < 1e-3, "{logits:?}");
    assert!(
        (logits[1] - (-200.0 - 2f32.ln())).abs() < 1e-3,
        "{logits:?}"
    );
}

#[test]
fn identical_members_give_the_member_logit() {
    let path = format!(
        "{}/tests/fixtures/classifiers_resnet_small.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let dev = Default::default();
    let cfg = ResNetConfig::tiny().with_outputs(1).with_small_input(true);
    let load = || {
        let mut f = TensorFile::open(&path).unwrap();
        let m = cfg.load::<B>(&mut f, &dev).unwrap();
        f.finish().unwrap();
        m
    };
    let single = load();
    let x = Tensor::<B, 4>::random(
        [2, 3, 32, 32],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &dev,
    );
    let expected = to_vec_f32(&single.logits(x.clone()).unwrap()).unwrap();
    let ens = Ensemble::<B>::new(vec![Box::new(single), Box::new(load())]).unwrap();
    let got = to_vec_f32(&ens.logits(x).unwrap()).unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-4, "{g} vs {e}");
    }
}

#[test]
fn members_must_have_one_logit() {
    let err = Ensemble::<B>::new(vec![
        Box::new(Fixed(vec![0.0], 1)),
        Box::new(Fixed(vec![0.0; 2], 2)),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("ensemble member 1"), "{err}");
    assert!(Ensemble::<B>::new(vec![]).is_err());
}
