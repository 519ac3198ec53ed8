//! LoRA: a merged adapter equals the adapted forward, a zero `B` changes nothing, and target
//! names match whole path segments.

use burn::backend::NdArray;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use foil_core::tensor::to_vec_f32;
use foil_models::lora::{Adapted, LoraConfig, LoraLinear};
use proptest::prelude::*;

type B = NdArray;

/// Values in [-1, 1) from a seed (a small LCG, so proptest shrinks over seeds and sizes).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor<const D: usize>(seed: u64, shape: [usize; D]) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(seed, n), shape), &Default::default())
}

fn base(seed: u64, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
    let mut l = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .init::<B>(&Default::default());
    l.weight = Param::from_tensor(tensor(seed, [d_in, d_out]));
    if bias {
        l.bias = Some(Param::from_tensor(tensor(seed ^ 7, [d_out])));
    }
    l
}

fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    let a = to_vec_f32(&a).unwrap();
    let b = to_vec_f32(&b).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Max of `|a - b| / max(1, |b|)`: absolute below 1, relative above (f32 round-off grows with
/// the magnitude of the outputs).
fn max_scaled_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    let a = to_vec_f32(&a).unwrap();
    let b = to_vec_f32(&b).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn merge_equals_the_adapted_forward(
        seed in any::<u64>(), d_in in 1usize..12, d_out in 1usize..12, rank in 1usize..5,
        batch in 1usize..4, tokens in 1usize..4, alpha in -8.0f64..8.0, bias in any::<bool>(),
    ) {
        let lora = LoraLinear::new(
            base(seed, d_in, d_out, bias),
            tensor(seed ^ 1, [d_in, rank]),
            tensor(seed ^ 2, [rank, d_out]),
            alpha,
        ).unwrap();
        // A non-trivial update, so equality is not vacuous.
        let x = tensor::<3>(seed ^ 3, [batch, tokens, d_in]);
        let adapted = lora.forward(x.clone());
        let merged = lora.merge().forward(x.clone());
        prop_assert!(max_scaled_diff(adapted, merged) <= 1e-5);
    }

    #[test]
    fn a_zero_b_leaves_the_output_unchanged(
        seed in any::<u64>(), d_in in 1usize..12, d_out in 1usize..12, rank in 1usize..5,
        batch in 1usize..5, alpha in 0.5f64..32.0,
    ) {
        B::seed(&Default::default(), seed);
        let plain = base(seed, d_in, d_out, true);
        let config = LoraConfig::new(rank, alpha, "to_q").unwrap();
        let lora = config.init(plain.clone()).unwrap();
        prop_assert_eq!(lora.rank(), rank);
        let x = tensor::<2>(seed ^ 3, [batch, d_in]);
        prop_assert!(max_diff(lora.forward(x.clone()), plain.forward(x.clone())) == 0.0);
        prop_assert!(max_diff(lora.merge().forward(x.clone()), plain.forward(x)) <= 1e-6);
    }
}

#[test]
fn a_nonzero_update_changes_the_output() {
    let plain = base(5, 6, 4, true);
    let lora = LoraLinear::new(plain.clone(), tensor(1, [6, 2]), tensor(2, [2, 4]), 4.0).unwrap();
    let x = tensor::<2>(3, [3, 6]);
    assert!(max_diff(lora.forward(x.clone()), plain.forward(x)) > 1e-3);
    // A [in, r] A and [r, out] B: scale alpha / r; wrong shapes are errors.
    assert_eq!(lora.update.scale, 2.0);
    assert!(LoraLinear::new(plain.clone(), tensor(1, [5, 2]), tensor(2, [2, 4]), 1.0).is_err());
    let err = LoraLinear::new(plain, tensor(1, [6, 2]), tensor(2, [3, 4]), 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LoRA B: expected shape [2, 4], found [3, 4]"),
        "{err}"
    );
}

#[test]
fn targets_match_whole_path_segments() {
    let c = LoraConfig::new(4, 4.0, "to_q|to_k|to_v|to_out").unwrap();
    for p in [
        "to_q",
        "down.0.attn1.to_k",
        "mid.attn.to_out.0",
        "up.2.to_v",
    ] {
        assert!(c.matches(p), "{p}");
    }
    for p in ["to_qk", "attn.to_outer", "proj_in", "my_to_q.x", ""] {
        assert!(!c.matches(p), "{p}");
    }
    assert!(LoraConfig::new(0, 1.0, "x").is_err());
    assert!(LoraConfig::new(1, f64::NAN, "x").is_err());

    let dev = Default::default();
    let l = || LinearConfig::new(3, 2).init::<B>(&dev);
    let a = c.adapt("blocks.1.to_v", l()).unwrap();
    let p = c.adapt("blocks.1.proj", l()).unwrap();
    assert!(matches!(a, Adapted::Lora(_)));
    assert!(matches!(p, Adapted::Plain(_)));
    // Adapter parameters: A [3, 4] + B [4, 2] on top of the 3 * 2 + 2 base.
    assert_eq!(a.num_params(), 8 + 12 + 8);
    assert_eq!(a.merge().num_params(), 8);
}
