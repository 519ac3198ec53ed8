//! The target-mean baseline against DIFFusion's arithmetic where the two must agree: when every
//! input's unit embedding is its class mean, `c/|c| + 1 (mean_away - mean_from)` is the other
//! class's mean, so the arithmetic at lambda 1 regenerates with the target-mean condition.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use foil_core::tensor::{from_vec, to_vec_f32};
use foil_core::toy::TanhDenoiser;
use foil_core::{Classifier, Denoiser, DenoiserOutput, ImageEncoder, Method, Request, Result};
use foil_diffusion::{DiffusionConfig, DiffusionMethod, Editor, SearchConfig, TargetMean};
use foil_embed::ClassStatsBuilder;
use foil_schedule::NoiseSchedule;

type B = NdArray;

/// A toy decoder: a random tanh denoiser conditioned on 2-d embeddings `(mean pixel, 1)`.
struct ToyDecoder(TanhDenoiser<B>);

impl Denoiser<B> for ToyDecoder {
    fn channels(&self) -> usize {
        1
    }
    fn learned_variance(&self) -> bool {
        false
    }
    fn condition_dim(&self) -> Option<usize> {
        Some(2)
    }
    fn forward(
        &self,
        x: Tensor<B, 4>,
        t: &[usize],
        c: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        self.0.forward(x, t, c)
    }
}

impl foil_diffusion::Decoder<B> for ToyDecoder {}

impl ImageEncoder<B> for ToyDecoder {
    fn embedding_dim(&self) -> usize {
        2
    }
    fn identity(&self) -> String {
        "toy mean encoder".into()
    }
    fn encode(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let m = x.clone().reshape([x.dims()[0] as i32, -1]).mean_dim(1);
        Ok(Tensor::cat(vec![m.clone(), m.ones_like()], 1))
    }
}

/// One logit: the mean pixel.
struct Bright;
impl Classifier<B> for Bright {
    fn num_logits(&self) -> usize {
        1
    }
    fn logits(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(x.clone().reshape([x.dims()[0] as i32, -1]).mean_dim(1))
    }
}

#[test]
fn target_mean_equals_the_arithmetic_where_the_unit_embedding_is_the_class_mean() {
    let device = Default::default();
    let decoder = ToyDecoder(TanhDenoiser::new([1, 4, 4], 2, 7, &device));
    let classes = ["dark".to_string(), "bright".to_string()];
    // Inputs of mean -0.3 (dark) or +0.3 (bright) with different patterns: one embedding per
    // class, different inversions.
    let signs = [1.0f32, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0];
    let pattern = |k: usize| -> Vec<f32> { (0..16).map(|p| 0.2 * signs[(p + k) % 8]).collect() };
    let (labels, targets) = ([0, 0, 0, 1, 1, 0], [1, 1, 0, 0, 0, 1]);
    let mut values = Vec::new();
    for (k, &l) in labels.iter().enumerate() {
        let base = if l == 0 { -0.3 } else { 0.3 };
        values.extend(pattern(k).into_iter().map(|v| v + base));
    }
    let x = from_vec::<B, 4>(values, [6, 1, 4, 4], &device).unwrap();
    let emb = decoder.encode(x.clone()).unwrap();
    let rows = to_vec_f32(&emb).unwrap();
    let stats = ClassStatsBuilder::new("toy mean encoder", 2)
        .add(
            "dark",
            from_vec::<B, 2>(rows[..2].to_vec(), [1, 2], &device).unwrap(),
        )
        .unwrap()
        .add(
            "bright",
            from_vec::<B, 2>(rows[6..8].to_vec(), [1, 2], &device).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
    let config = DiffusionConfig {
        steps: 8,
        search: SearchConfig {
            lambda: 1.0,
            ..SearchConfig::default()
        },
        ..DiffusionConfig::default()
    };
    let schedule = NoiseSchedule::guided_linear(100).unwrap();
    let editor = || Editor::new(&decoder, &schedule, &stats, config.clone(), &device).unwrap();
    let target_mean = TargetMean {
        editor: editor(),
        oracle: &Bright,
        classes: classes.clone(),
    };
    let arithmetic = DiffusionMethod::new(editor(), &Bright, &classes).unwrap();
    let ask = || Request {
        images: x.clone(),
        labels: &labels,
        targets: &targets,
        seed: 11,
    };
    let ours = target_mean.explain(ask()).unwrap();
    let theirs = arithmetic.explain(ask()).unwrap();
    ours.check(6).unwrap();
    for (a, b) in ours.outcomes.iter().zip(&theirs.outcomes) {
        assert_eq!((a.flipped, a.cost), (b.flipped, b.cost), "{a:?} vs {b:?}");
        assert_eq!(
            a.setting.and_then(|s| s.t_skip()),
            b.setting.and_then(|s| s.t_skip())
        );
        // The baseline has no edit strength; the arithmetic records its lambda.
        assert_eq!(a.setting.and_then(|s| s.lambda()), None);
    }
    let (a, b) = (
        to_vec_f32(&ours.images).unwrap(),
        to_vec_f32(&theirs.images).unwrap(),
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-4, "largest difference {worst}");
    // The set holds flipped and unflipped inputs, and the outputs are edits, not copies.
    assert!(ours.outcomes.iter().any(|o| o.flipped));
    assert!(
        ours.outcomes.iter().any(|o| !o.flipped),
        "{:?}",
        ours.outcomes
    );
    let input = to_vec_f32(&x).unwrap();
    assert!(a.iter().zip(&input).any(|(a, x)| (a - x).abs() > 1e-2));
    // A label outside the two classes is refused.
    let bad = target_mean.explain(Request {
        labels: &[0, 0, 0, 1, 1, 2],
        ..ask()
    });
    assert!(bad.is_err());
}
