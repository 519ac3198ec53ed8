//! The learning-rate schedules' shape and the batch augmentations' invariants (a mirror or the
//! image itself; a translation that moves content without changing it), as property tests.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use foil_train::{Augment, LrSchedule};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

type B = Flex;

fn images(values: Vec<f32>, n: usize, c: usize, h: usize, w: usize) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values, [n, c, h, w]), &Default::default())
}

fn to_vec(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

proptest! {
    #[test]
    fn cosine_warms_up_then_decays(steps in 2usize..400, warm_share in 0.0f64..0.5) {
        let warmup = ((steps as f64) * warm_share) as usize;
        let s = LrSchedule::Cosine { warmup };
        let f: Vec<f64> = (0..steps).map(|i| s.factor(i, steps)).collect();
        for (i, &x) in f.iter().enumerate() {
            prop_assert!((0.0..=1.0).contains(&x), "factor {x} at {i}");
        }
        for i in 1..steps {
            if i < warmup {
                prop_assert!(f[i] > f[i - 1], "warm-up not rising at {i}");
            } else if i > warmup {
                prop_assert!(f[i] <= f[i - 1], "decay rising at {i}");
            }
        }
        // The peak is reached where the warm-up ends; the last step is near zero.
        prop_assert!((f[warmup.min(steps - 1)] - 1.0).abs() < 1e-12);
        let last = f[steps - 1];
        let span = (steps - warmup) as f64;
        prop_assert!(last <= 0.5 * (1.0 - (std::f64::consts::PI / span).cos()) + 1e-12);
        prop_assert_eq!(LrSchedule::Constant.factor(steps / 2, steps), 1.0);
    }

    #[test]
    fn flips_mirror_or_keep_each_image(seed in any::<u64>(), n in 1usize..6) {
        let (c, h, w) = (2, 3, 5);
        let values: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let aug = Augment { flip: true, shift: 0 };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let out = to_vec(aug.apply(images(values.clone(), n, c, h, w), &mut rng).unwrap());
        let per = c * h * w;
        for i in 0..n {
            let orig = &values[i * per..(i + 1) * per];
            let got = &out[i * per..(i + 1) * per];
            let mirrored: Vec<f32> = (0..per)
                .map(|k| orig[k - k % w + (w - 1 - k % w)])
                .collect();
            prop_assert!(got == orig || got == mirrored.as_slice(), "image {i}: {got:?}");
        }
    }

    #[test]
    fn shifts_translate_content(seed in any::<u64>(), shift in 1usize..4, y in 4usize..8, x in 4usize..8) {
        // A dark 12x12 image with one bright pixel away from the border: after a shift of at
        // most `shift`, exactly one bright pixel remains, within `shift` of the original.
        let (n, h, w) = (4, 12, 12);
        let mut values = vec![-1.0f32; n * h * w];
        for i in 0..n {
            values[i * h * w + y * w + x] = 1.0;
        }
        let aug = Augment { flip: false, shift };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let out = to_vec(aug.apply(images(values, n, 1, h, w), &mut rng).unwrap());
        for i in 0..n {
            let img = &out[i * h * w..(i + 1) * h * w];
            let bright: Vec<usize> = (0..h * w).filter(|&k| img[k] > 0.0).collect();
            prop_assert_eq!(bright.len(), 1, "image {}", i);
            let (by, bx) = (bright[0] / w, bright[0] % w);
            prop_assert!(by.abs_diff(y) <= shift && bx.abs_diff(x) <= shift);
            prop_assert!(img.iter().all(|&v| v == 1.0 || v == -1.0));
        }
    }
}

#[test]
fn shifts_vary_and_oversized_shifts_are_refused() {
    let (h, w) = (8, 8);
    let mut values = vec![0.0f32; 16 * h * w];
    for i in 0..16 {
        values[i * h * w + 4 * w + 4] = 1.0;
    }
    let aug = Augment {
        flip: false,
        shift: 2,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let out = to_vec(aug.apply(images(values, 16, 1, h, w), &mut rng).unwrap());
    let positions: std::collections::BTreeSet<usize> = (0..16)
        .map(|i| (0..h * w).find(|&k| out[i * h * w + k] == 1.0).unwrap())
        .collect();
    assert!(positions.len() > 3, "16 draws gave only {positions:?}");

    let too_far = Augment {
        flip: false,
        shift: 4,
    };
    let err = too_far
        .apply(images(vec![0.0; h * w], 1, 1, h, w), &mut rng)
        .unwrap_err();
    assert!(err.to_string().contains("half the image side"), "{err}");
}
