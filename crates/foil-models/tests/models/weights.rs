//! TensorFile: values move out on take; a second take of the same name is reported. Weights: the
//! builder scopes names and reports every mismatch at once.

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

/// The weight builder: `pp` scopes names, a borrowed file keeps the record of what did not fit,
/// and one error lists every missing, misshaped and unexpected tensor in today's format.
#[test]
fn the_builder_scopes_names_and_reports_every_mismatch_at_once() {
    use burn::nn::conv::Conv2dConfig;
    use foil_models::weights::{Init, Weights};

    let dev = Default::default();
    let rec = Weights::<NdArray>::recorder(&dev);
    let block = rec.pp("layer1").pp(0);
    assert_eq!(block.prefix(), "layer1.0");
    let _ = block.conv2d("conv", &Conv2dConfig::new([2, 4], [3, 3]).with_bias(false));
    let _ = block.linear("fc", 4, 3, true);
    let _ = rec.tensor("scale", [5], Init::Ones);
    assert_eq!(
        rec.recorded(),
        [
            ("layer1.0.conv.weight".to_string(), vec![4, 2, 3, 3]),
            ("layer1.0.fc.weight".to_string(), vec![3, 4]),
            ("layer1.0.fc.bias".to_string(), vec![3]),
            ("scale".to_string(), vec![5]),
        ]
    );

    // The file holds `w` [3]: ask for it under a prefix, with another shape, and for a tensor
    // it lacks.
    let mut f = file();
    {
        let w = Weights::<NdArray>::from_file_mut(&mut f, &dev);
        assert!(w.contains("w") && !w.pp("x").contains("w"));
        assert_eq!(w.names(), ["w"]);
        let _ = w.pp("block").tensor("w", [3], Init::Zeros);
        let _ = w.tensor("w", [4], Init::Zeros);
        let m = w.mismatches();
        assert_eq!(m.missing, [("block.w".to_string(), vec![3])]);
        assert_eq!(m.wrong_shape.len(), 1);
        assert!(m.unexpected.is_empty());
    }
    let err = f.finish().unwrap_err().to_string();
    assert!(err.contains("missing: block.w [3]"), "{err}");
    assert!(
        err.contains("wrong shape: w: expected [4], found [3]"),
        "{err}"
    );

    // Nothing taken: the tensor is unexpected; ignored, it is not.
    let w = Weights::<NdArray>::from_file(file(), &dev);
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("unexpected: w"), "{err}");
    w.ignore(["w"]);
    w.finish().unwrap();
    let taken = Weights::<NdArray>::from_file(file(), &dev)
        .pp("")
        .tensor::<1>("w", [3], Init::Zeros);
    assert_eq!(
        taken.val().into_data().to_vec::<f32>().unwrap(),
        [1.0, 2.0, 3.0]
    );
}

/// A network built under a prefix takes its tensors from a file that holds it inside a larger
/// model (here a ResNet stored under `backbone.`).
#[test]
fn a_network_builds_under_a_prefix() {
    use burn::module::Module;
    use foil_models::resnet::ResNetConfig;
    use foil_models::weights::Weights;

    let dev = Default::default();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let plain = TensorFile::open(format!("{dir}/classifiers_resnet.safetensors")).unwrap();
    let names: Vec<String> = plain.names().map(str::to_string).collect();
    let bytes = std::fs::read(format!("{dir}/classifiers_resnet.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = names
        .iter()
        .map(|n| (format!("backbone.{n}"), st.tensor(n).unwrap()))
        .collect();
    let prefixed = safetensors::serialize(views, None).unwrap();
    let w =
        Weights::<NdArray>::from_file(TensorFile::from_bytes(&prefixed, "prefixed").unwrap(), &dev);
    let net = ResNetConfig::tiny().build(&w.pp("backbone")).unwrap();
    w.finish().unwrap();
    let reference = ResNetConfig::tiny()
        .load_file::<NdArray>(format!("{dir}/classifiers_resnet.safetensors"), &dev)
        .unwrap();
    assert_eq!(net.num_params(), reference.num_params());
    let x = burn::tensor::Tensor::<NdArray, 4>::ones([1, 3, 32, 32], &dev);
    assert_eq!(
        net.forward(x.clone()).into_data().to_vec::<f32>().unwrap(),
        reference.forward(x).into_data().to_vec::<f32>().unwrap()
    );
}
