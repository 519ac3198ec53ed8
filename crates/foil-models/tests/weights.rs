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
