//! The numpy pickle reader on fixtures from `tools/record_pickles.py`.

use foil_models::numpy_pickle::{NumpyArray, read_numpy_pickle};
use proptest::prelude::*;

const TREE: &[u8] = include_bytes!("../fixtures/numpy_tree.pkl");
const TREE_F64: &[u8] = include_bytes!("../fixtures/numpy_tree_f64.pkl");

/// The recorder's values: `arange(n) * 0.5 - 1`.
fn arange(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()
}

#[test]
fn reads_every_float32_array_by_path() {
    let arrays = read_numpy_pickle(TREE, "numpy_tree.pkl").unwrap();
    let names: Vec<_> = arrays.keys().map(String::as_str).collect();
    // Non-array entries ("count", "name") are skipped.
    assert_eq!(names, ["block/bias", "block/kernel", "c", "scalar"]);
    assert_eq!(
        arrays["block/kernel"],
        NumpyArray {
            shape: vec![2, 3, 4],
            data: arange(24)
        }
    );
    assert_eq!(
        arrays["block/bias"],
        NumpyArray {
            shape: vec![3],
            data: arange(3)
        }
    );
    assert_eq!(
        arrays["c"],
        NumpyArray {
            shape: vec![5, 1],
            data: arange(5)
        }
    );
    assert_eq!(
        arrays["scalar"],
        NumpyArray {
            shape: vec![],
            data: arange(1)
        }
    );
}

#[test]
fn refuses_float64_and_names_the_array() {
    let err = read_numpy_pickle(TREE_F64, "numpy_tree_f64.pkl")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("numpy_tree_f64.pkl") && err.contains("array `c`"),
        "{err}"
    );
    assert!(err.contains("f8") || err.contains("float32"), "{err}");
}

#[test]
fn refuses_truncated_and_foreign_files() {
    let err = read_numpy_pickle(&TREE[..TREE.len() / 2], "cut.pkl")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cut.pkl") && err.contains("pickle"), "{err}");
    let err = read_numpy_pickle(b"PK\x03\x04 not a pickle", "zip.pkl")
        .unwrap_err()
        .to_string();
    assert!(err.contains("zip.pkl"), "{err}");
}

#[test]
fn transpose_matches_hand_computed_hwio_to_oihw() {
    // HWIO [1, 2, 2, 3] -> OIHW [3, 2, 1, 2]: out[o][i][h][w] = in[h][w][i][o].
    let a = NumpyArray {
        shape: vec![1, 2, 2, 3],
        data: (0..12).map(|v| v as f32).collect(),
    };
    let t = a.transpose(&[3, 2, 0, 1]).unwrap();
    assert_eq!(t.shape, vec![3, 2, 1, 2]);
    // H = 1, so the OIHW offset is (o * I + i) * W + w.
    let at = |o: usize, i: usize, w: usize| t.data[(o * 2 + i) * 2 + w];
    for o in 0..3 {
        for i in 0..2 {
            for w in 0..2 {
                assert_eq!(at(o, i, w), a.data[(w * 2 + i) * 3 + o]);
            }
        }
    }
    assert!(a.transpose(&[0, 1, 1, 2]).is_err());
    assert!(a.transpose(&[0, 1]).is_err());
}

proptest! {
    #[test]
    fn transpose_then_inverse_is_identity(dims in prop::collection::vec(1usize..4, 1..5), seed in 0u64..1000) {
        let n: usize = dims.iter().product();
        let a = NumpyArray { shape: dims.clone(), data: (0..n).map(|i| (i as u64 * 31 + seed) as f32).collect() };
        // A rotation of the axes and its inverse.
        let rank = dims.len();
        let axes: Vec<usize> = (0..rank).map(|i| (i + 1) % rank).collect();
        let mut inverse = vec![0; rank];
        for (i, &a) in axes.iter().enumerate() { inverse[a] = i; }
        let back = a.transpose(&axes).unwrap().transpose(&inverse).unwrap();
        prop_assert_eq!(back, a);
    }
}
