//! TensorFile: values move out on take; a second take of the same name is reported.

use burn::backend::NdArray;
use foil_models::weights::TensorFile;

fn file() -> TensorFile {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &data).unwrap();
    let bytes = safetensors::serialize([("w", view)], None).unwrap();
    TensorFile::from_bytes(&bytes, "mem").unwrap()
}

#[test]
fn take_moves_values_and_a_second_take_is_an_error() {
    let dev = Default::default();
    let mut f = file();
    let w = f.take::<NdArray, 1>("w", [3], &dev).val();
    assert_eq!(w.into_data().to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
    f.finish().unwrap();

    let mut f = file();
    let _ = f.take::<NdArray, 1>("w", [3], &dev);
    let _ = f.take::<NdArray, 1>("w", [3], &dev);
    let err = f.finish().unwrap_err().to_string();
    assert!(err.contains("w: taken twice"), "{err}");
}

/// A `torch.save` state dict reads like the same tensors in safetensors (tools/record_pickles.py):
/// float32, float16 and the int64 `num_batches_tracked`.
#[test]
fn pytorch_checkpoints_read_like_safetensors() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let dev = Default::default();
    let mut pt = TensorFile::open_any(format!("{dir}/torch_tiny.pt")).unwrap();
    let mut st = TensorFile::open_any(format!("{dir}/torch_tiny.safetensors")).unwrap();
    for (name, shape) in [
        ("conv.weight", vec![2, 3, 3, 3]),
        ("conv.bias", vec![2]),
        ("fc.weight", vec![4, 2]),
        ("bn.num_batches_tracked", vec![]),
    ] {
        let (a, b) = match shape.len() {
            4 => (
                pt.take::<NdArray, 4>(name, [2, 3, 3, 3], &dev)
                    .val()
                    .into_data(),
                st.take::<NdArray, 4>(name, [2, 3, 3, 3], &dev)
                    .val()
                    .into_data(),
            ),
            2 => (
                pt.take::<NdArray, 2>(name, [4, 2], &dev).val().into_data(),
                st.take::<NdArray, 2>(name, [4, 2], &dev).val().into_data(),
            ),
            _ => {
                // A 0-d buffer: check it through `contains` and ignore it, as loaders do.
                assert!(pt.contains(name) && st.contains(name));
                pt.ignore([name]);
                st.ignore([name]);
                continue;
            }
        };
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert_eq!(a, b, "{name}");
        assert!(a.iter().any(|v| *v != 0.0), "{name}");
        let _ = shape;
    }
    pt.finish().unwrap();
    st.finish().unwrap();
    let err = TensorFile::open_any(format!("{dir}/numpy_tree.pkl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("numpy_tree.pkl"), "{err}");
    let err = TensorFile::open_pytorch(format!("{dir}/missing.pt"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pt"), "{err}");
}
