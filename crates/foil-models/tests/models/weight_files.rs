//! Weight files read lazily: a safetensors header is checked against the file before anything
//! is read, each tensor is read when taken (and reads as the safetensors crate does), shards open
//! as one file, a folder's weight files are found under diffusers' and transformers' names, and
//! no corrupt file panics. The ignored `peak_rss_*` test measures the memory of loading a 1 GiB
//! checkpoint (issue 17: at most 1.3x its f32 bytes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use foil_core::ErrorKind;
use foil_models::weights::{TensorFile, find_weight_files, weight_file_names};
use proptest::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

type B = NdArray;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A fresh, empty folder `foil-weight-files-{tag}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-weight-files-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

fn raw(name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Raw {
    (name.to_string(), dtype, shape.to_vec(), bytes)
}

fn serialize(tensors: &[Raw]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

/// Deterministic pseudo-random values (an LCG), spread over several orders of magnitude.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (u - 0.5) * 10f32.powi(((s >> 20) % 7) as i32 - 3)
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Half-precision bits to `f32` by the definition (sign, exponent, fraction in f64
/// arithmetic), independent of the library's bit manipulation. NaN stays NaN.
fn f16_reference(h: u16) -> f32 {
    let sign = if h >> 15 == 1 { -1.0f64 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    let magnitude = match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1024.0 + frac) * 2f64.powi(e - 25),
    };
    (sign * magnitude) as f32
}

/// Every tensor of safetensors `bytes` as `f32`, converted here from the safetensors crate's
/// views (the eager reader `TensorFile` used before it read lazily).
fn reference(bytes: &[u8]) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let d = view.data();
            let v: Vec<f32> = match view.dtype() {
                Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::F64 => d
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::F16 => d
                    .chunks_exact(2)
                    .map(|b| f16_reference(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                Dtype::BF16 => d
                    .chunks_exact(2)
                    .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                    .collect(),
                Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::I32 => d
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                other => panic!("{name}: dtype {other:?} in a fixture"),
            };
            (name, (view.shape().to_vec(), v))
        })
        .collect()
}

/// Takes one tensor with the shape the file gives (1 to 4 dimensions), as `f32` values.
fn take_dyn(file: &mut TensorFile, name: &str) -> Option<Vec<f32>> {
    let dev = Default::default();
    let shape = file.shape(name)?.to_vec();
    let data = match shape.len() {
        1 => file.take::<B, 1>(name, [shape[0]], &dev).val().into_data(),
        2 => file
            .take::<B, 2>(name, [shape[0], shape[1]], &dev)
            .val()
            .into_data(),
        3 => file
            .take::<B, 3>(name, [shape[0], shape[1], shape[2]], &dev)
            .val()
            .into_data(),
        4 => file
            .take::<B, 4>(name, [shape[0], shape[1], shape[2], shape[3]], &dev)
            .val()
            .into_data(),
        _ => return None,
    };
    Some(data.to_vec::<f32>().unwrap())
}

/// Takes every tensor of 1 to 4 dimensions and ignores the rest (0-d buffers); the values by
/// name.
fn take_all(file: &mut TensorFile) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let names: Vec<String> = file.names().map(str::to_string).collect();
    let mut out = BTreeMap::new();
    for name in names {
        let shape = file.shape(&name).unwrap().to_vec();
        match take_dyn(file, &name) {
            Some(v) => {
                out.insert(name, (shape, v));
            }
            None => file.ignore([name]),
        }
    }
    out
}

/// Compares values bit for bit (any NaN matches any NaN), naming the tensor.
fn assert_same(
    got: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    want: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    context: &str,
) {
    let want: BTreeMap<_, _> = want.iter().filter(|(_, (s, _))| !s.is_empty()).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "{context}"
    );
    for (name, (shape, v)) in got {
        let (wshape, w) = want[name];
        assert_eq!(shape, wshape, "{context}: {name}");
        assert_eq!(v.len(), w.len(), "{context}: {name}");
        let same = |(x, y): (&f32, &f32)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        assert!(v.iter().zip(w).all(same), "{context}: {name} differs");
    }
}

/// Tensors of every dtype foil reads, two larger than the 1 MiB read chunk.
fn mixed() -> Vec<Raw> {
    let big = values(300_007, 1);
    let half: Vec<u8> = (0..700_001u32)
        .flat_map(|i| (i.wrapping_mul(7919) as u16).to_le_bytes())
        .collect();
    vec![
        raw(
            "a.weight",
            Dtype::F32,
            &[2, 3, 4, 5],
            f32_bytes(&values(120, 2)),
        ),
        raw("a.bias", Dtype::F32, &[300_007], f32_bytes(&big)),
        raw("b.half", Dtype::F16, &[700_001], half),
        raw(
            "c.bf16",
            Dtype::BF16,
            &[3, 7],
            (0..21u16)
                .flat_map(|i| (0x3f80 + i * 37).to_le_bytes())
                .collect(),
        ),
        raw(
            "d.f64",
            Dtype::F64,
            &[4],
            [1.5f64, -2.25, 1e-30, 3e38]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        raw(
            "e.i64",
            Dtype::I64,
            &[3],
            [7i64, -3, 1 << 40]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        raw(
            "f.i32",
            Dtype::I32,
            &[2, 2],
            [1i32, -1, 65_536, i32::MIN]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        raw("g.buffer", Dtype::I64, &[], 12i64.to_le_bytes().to_vec()),
        raw("h.empty", Dtype::F32, &[0, 3], Vec::new()),
    ]
}

/// `take` reads every tensor as the safetensors crate sees it, for every fixture of this crate
/// and for a file of every dtype foil reads; the in-memory reader agrees.
#[test]
fn every_tensor_reads_as_the_safetensors_crate_does() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(files.len() > 10, "{files:?}");
    let tmp = temp_dir("mixed");
    let dir = tmp.path();
    files.push(write(&dir.join("mixed.safetensors"), &serialize(&mixed())));

    let mut read = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        if let Some((_, view)) = st.tensors().into_iter().find(|(_, v)| {
            !matches!(
                v.dtype(),
                Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 | Dtype::I64 | Dtype::I32
            )
        }) {
            // Not a weight file (images as U8): both readers refuse it alike.
            let needle = format!("unsupported dtype {:?}", view.dtype());
            for err in [
                TensorFile::open(path).unwrap_err(),
                TensorFile::from_bytes(&bytes, "mem").unwrap_err(),
            ] {
                let msg = err.to_string();
                assert!(msg.contains(&needle), "{msg}");
            }
            continue;
        }
        read += 1;
        let want = reference(&bytes);
        let mut lazy = TensorFile::open(path).unwrap();
        assert_eq!(lazy.what(), path.display().to_string());
        let got = take_all(&mut lazy);
        assert_same(&got, &want, &path.display().to_string());
        lazy.finish().unwrap();
        let mut eager = TensorFile::from_bytes(&bytes, "mem").unwrap();
        assert_same(&take_all(&mut eager), &want, "from_bytes");
        eager.finish().unwrap();
    }
    assert!(read > 10, "{read} of {} files read", files.len());
}

/// Tensors given in memory read back as the safetensors crate reads the file holding them; a
/// value count that is not the shape's product (or a product past `usize`) and a name given
/// twice are errors naming the tensor.
#[test]
fn values_in_memory_read_as_their_file_does() {
    let want = reference(&serialize(&mixed()));
    let given = want
        .iter()
        .map(|(name, (shape, values))| (name.clone(), shape.clone(), values.clone()));
    let mut file = TensorFile::from_values(given, "memory").unwrap();
    assert_same(&take_all(&mut file), &want, "from_values");
    file.finish().unwrap();

    let short = TensorFile::from_values([("w".into(), vec![2, 3], vec![0.0; 5])], "memory");
    let msg = short.unwrap_err().to_string();
    assert!(
        msg.contains("memory") && msg.contains("w: shape [2, 3] holds 6, found 5 values"),
        "{msg}"
    );
    let huge = TensorFile::from_values([("h".into(), vec![usize::MAX, 2], vec![])], "memory");
    let msg = huge.unwrap_err().to_string();
    let want = format!(
        "h: shape [{}, 2] holds more values than memory, found 0",
        usize::MAX
    );
    assert!(msg.contains(&want), "{msg}");
    let twice = TensorFile::from_values(
        [
            ("w".into(), vec![1], vec![0.0]),
            ("w".into(), vec![1], vec![1.0]),
        ],
        "memory",
    );
    let msg = twice.unwrap_err().to_string();
    assert!(
        msg.contains("memory") && msg.contains("w: given twice"),
        "{msg}"
    );
}

/// Every one of the 65536 half-precision patterns converts exactly (NaN to NaN), read from an
/// `.fp16.safetensors` file found in its folder; so does every bfloat16 pattern.
#[test]
fn fp16_and_bf16_files_convert_exactly() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let tmp = temp_dir("fp16");
    let dir = tmp.path();
    write(
        &dir.join("diffusion_pytorch_model.fp16.safetensors"),
        &serialize(&[
            raw("half", Dtype::F16, &[65_536], all.clone()),
            raw("brain", Dtype::BF16, &[256, 256], all),
        ]),
    );
    let mut file = TensorFile::open_folder(dir, "diffusion_pytorch_model").unwrap();
    let half = take_dyn(&mut file, "half").unwrap();
    let brain = take_dyn(&mut file, "brain").unwrap();
    file.finish().unwrap();
    for h in 0..=u16::MAX {
        let (got, want) = (half[h as usize], f16_reference(h));
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#06x}: {got}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}: {got} vs {want}");
        }
        let b = brain[h as usize];
        assert_eq!(b.to_bits(), u32::from(h) << 16, "bf16 {h:#06x}");
    }
    // Spot checks against known values.
    assert_eq!(half[0x3c00], 1.0);
    assert_eq!(half[0xc000], -2.0);
    assert_eq!(half[0x7bff], 65504.0);
    assert_eq!(half[0x0001], 2f32.powi(-24));
    assert_eq!(half[0x7c00], f32::INFINITY);
    assert!(half[0x8000] == 0.0 && half[0x8000].is_sign_negative());
}

/// Shards (given as a list, or found through their index in a folder) read exactly as the one
/// file they were split from; a tensor in two shards is refused, naming both.
#[test]
fn shards_merge_into_what_one_file_holds() {
    let tensors = mixed();
    let tmp = temp_dir("shards");
    let dir = tmp.path();
    let whole = write(&dir.join("whole.safetensors"), &serialize(&tensors));
    let names = [
        "diffusion_pytorch_model-00001-of-00003.safetensors",
        "diffusion_pytorch_model-00002-of-00003.safetensors",
        "diffusion_pytorch_model-00003-of-00003.safetensors",
    ];
    let shards: Vec<PathBuf> = [&tensors[..2], &tensors[2..5], &tensors[5..]]
        .iter()
        .zip(names)
        .map(|(part, name)| write(&dir.join(name), &serialize(part)))
        .collect();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&tensors[..2], &tensors[2..5], &tensors[5..]]
        .iter()
        .enumerate()
    {
        for (name, ..) in part.iter() {
            weight_map.insert(name.clone(), names[i].into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 1}, "weight_map": weight_map});
    write(
        &dir.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string().as_bytes(),
    );

    let want = take_all(&mut TensorFile::open(&whole).unwrap());
    let mut many = TensorFile::open_many(&shards).unwrap();
    assert!(
        shards
            .iter()
            .all(|s| many.what().contains(&s.display().to_string())),
        "{}",
        many.what()
    );
    let got = take_all(&mut many);
    assert_same(&got, &want, "open_many");
    many.finish().unwrap();

    assert_eq!(
        find_weight_files(dir, "diffusion_pytorch_model").unwrap(),
        shards
    );
    let mut folder = TensorFile::open_folder(dir, "diffusion_pytorch_model").unwrap();
    assert_same(&take_all(&mut folder), &want, "open_folder");
    folder.finish().unwrap();

    // The same tensor in two shards.
    let dup = write(
        &dir.join("dup.safetensors"),
        &serialize(&[raw("d.f64", Dtype::F32, &[1], f32_bytes(&[1.0]))]),
    );
    let err = TensorFile::open_many([&shards[1], &dup]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Format);
    let msg = err.to_string();
    assert!(
        msg.contains("d.f64")
            && msg.contains(&dup.display().to_string())
            && msg.contains(&shards[1].display().to_string()),
        "{msg}"
    );
    let err = TensorFile::open_many(Vec::<PathBuf>::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Empty);
}

/// A folder's weights are found in the documented order: safetensors, its index, the fp16
/// variant and its index, then PyTorch's `.bin` and its index (and transformers'
/// `pytorch_model.bin` for `model`); nothing found names the folder and every name tried.
#[test]
fn discovery_follows_the_documented_order() {
    let stem = "diffusion_pytorch_model";
    let tmp = temp_dir("order");
    let dir = tmp.path();
    let candidates = weight_file_names(stem);
    assert_eq!(
        candidates[..6],
        [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.safetensors.index.json",
            "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.fp16.safetensors.index.json",
            "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.bin.index.json",
        ]
    );
    // Every candidate present; an index lists two shards (one tensor each, out of order).
    for name in &candidates {
        let path = dir.join(name);
        if let Some(base) = name.strip_suffix(".index.json") {
            let (s1, s2) = (
                format!("{base}-00001-of-00002"),
                format!("{base}-00002-of-00002"),
            );
            let map = serde_json::json!({"weight_map": {"x": &s2, "y": &s1, "z": &s2}});
            write(&path, map.to_string().as_bytes());
            write(&dir.join(&s1), b"shard");
            write(&dir.join(&s2), b"shard");
        } else {
            write(&path, b"weights");
        }
    }
    for name in &candidates {
        let found = find_weight_files(dir, stem).unwrap();
        let want: Vec<PathBuf> = match name.strip_suffix(".index.json") {
            Some(base) => vec![
                dir.join(format!("{base}-00001-of-00002")),
                dir.join(format!("{base}-00002-of-00002")),
            ],
            None => vec![dir.join(name)],
        };
        assert_eq!(found, want, "with {name} present");
        std::fs::remove_file(dir.join(name)).unwrap();
    }

    // Nothing left under those names: the error names the folder, each name tried and the
    // weight-like files it does hold.
    let err = find_weight_files(dir, stem).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(err.path(), Some(dir));
    let msg = err.to_string();
    assert!(msg.starts_with(&dir.display().to_string()), "{msg}");
    for name in &candidates {
        assert!(msg.contains(name.as_str()), "{name}: {msg}");
    }
    assert!(msg.contains("looked for"), "{msg}");
    write(&dir.join("unet.safetensors"), b"x");
    let msg = TensorFile::open_folder(dir, stem).unwrap_err().to_string();
    assert!(msg.contains("the folder holds unet.safetensors"), "{msg}");
    let missing = dir.join("no-such-folder");
    let err = find_weight_files(&missing, stem).unwrap_err();
    assert_eq!(
        (err.kind(), err.path()),
        (ErrorKind::Io, Some(missing.as_path()))
    );

    // Transformers: `model` falls back to `pytorch_model.bin`, after `model.bin`.
    write(&dir.join("pytorch_model.bin"), b"x");
    assert_eq!(
        find_weight_files(dir, "model").unwrap(),
        [dir.join("pytorch_model.bin")]
    );
    assert_eq!(
        find_weight_files(dir, "pytorch_model").unwrap(),
        [dir.join("pytorch_model.bin")]
    );
    write(&dir.join("model.safetensors"), b"x");
    assert_eq!(
        find_weight_files(dir, "model").unwrap(),
        [dir.join("model.safetensors")]
    );
}

/// An index whose shard is missing, that names a file outside its folder, or that is not JSON
/// is an error naming the index (and the shard).
#[test]
fn a_broken_index_is_an_error_naming_it() {
    let tmp = temp_dir("index");
    let dir = tmp.path();
    let index = dir.join("model.safetensors.index.json");
    let cases = [
        (
            serde_json::json!({"weight_map": {"a": "model-1.safetensors"}}).to_string(),
            "model-1.safetensors",
        ),
        (
            serde_json::json!({"weight_map": {"a": "../model-1.safetensors"}}).to_string(),
            "not a file name",
        ),
        (
            serde_json::json!({"weight_map": {}}).to_string(),
            "names no file",
        ),
        ("{\"weight_map\": [".to_string(), "not a weight index"),
    ];
    for (text, needle) in cases {
        write(&index, text.as_bytes());
        let err = find_weight_files(dir, "model").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&index.display().to_string()) && msg.contains(needle),
            "{text}: {msg}"
        );
    }
}

/// A small valid file: three tensors of three dtypes.
fn small() -> Vec<u8> {
    serialize(&[
        raw("w", Dtype::F32, &[2, 3], f32_bytes(&values(6, 9))),
        raw(
            "h",
            Dtype::F16,
            &[4],
            vec![0, 0x3c, 0, 0xc0, 0xff, 0x7b, 1, 0],
        ),
        raw(
            "b",
            Dtype::BF16,
            &[2, 2],
            vec![0x80, 0x3f, 0, 0, 0, 0xc0, 0x80, 0x7f],
        ),
    ])
}

/// Truncated and corrupt files are [`Error::Format`]s naming the file and what is wrong; a
/// missing file is an [`Error::Io`].
#[test]
fn truncated_and_corrupt_files_are_errors_naming_the_file() {
    let tmp = temp_dir("corrupt");
    let dir = tmp.path();
    let good = small();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&good[8..8 + header_len])
        .unwrap()
        .to_string();
    let with_header = |h: &str| {
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&good[8 + header_len..]);
        b
    };
    let mut huge_len = good.clone();
    huge_len[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut over_cap = good.clone();
    over_cap[..8].copy_from_slice(&200_000_000u64.to_le_bytes());
    let mut past_end = good.clone();
    past_end[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "shorter than the 8-byte header length"),
        ("five bytes", good[..5].to_vec(), "shorter than"),
        ("length u64::MAX", huge_len, "limit"),
        ("length over the cap", over_cap, "limit"),
        ("length past the end", past_end, "runs past the end"),
        (
            "header cut",
            good[..8 + header_len / 2].to_vec(),
            "runs past the end",
        ),
        ("data cut", good[..good.len() - 1].to_vec(), "truncated"),
        (
            "not json",
            with_header("{garbage"),
            "corrupt safetensors header",
        ),
        (
            "not an object",
            with_header("[1, 2, 3]"),
            "not a JSON object",
        ),
        (
            "unsupported dtype",
            with_header(&header.replacen("\"F32\"", "\"U8\"", 1)),
            "w: unsupported dtype U8",
        ),
        (
            "wrong byte count",
            with_header(&header.replacen("[2,3]", "[2,4]", 1)),
            "needs 32",
        ),
        (
            "overflowing shape",
            with_header(&header.replacen("[2,3]", "[4294967296,4294967296,4294967296]", 1)),
            "too large",
        ),
        (
            "negative shape",
            with_header(&header.replacen("[2,3]", "[-2,3]", 1)),
            "corrupt safetensors header: tensor w",
        ),
        (
            "duplicate tensor",
            with_header(&header.replacen(
                "{",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},",
                1,
            )),
            "w appears twice",
        ),
    ];
    assert!(
        header.contains("\"F32\"") && header.contains("[2,3]"),
        "{header}"
    );
    for (label, bytes, needle) in cases {
        let path = write(
            &dir.join(format!("{}.safetensors", label.replace(' ', "_"))),
            &bytes,
        );
        let err = TensorFile::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Format, "{label}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(needle),
            "{label}: {msg}"
        );
        // Through the other entry points too.
        assert!(TensorFile::open_any(&path).is_err(), "{label}");
        assert!(TensorFile::open_many([&path]).is_err(), "{label}");
    }
    let missing = dir.join("missing.safetensors");
    let err = TensorFile::open(&missing).unwrap_err();
    assert_eq!(
        (err.kind(), err.path()),
        (ErrorKind::Io, Some(missing.as_path()))
    );
}

/// A byte mutation of a valid file.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Splice(usize, usize, Vec<u8>),
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match m {
        Mutation::Truncate(at) => b.truncate(*at % (b.len() + 1)),
        Mutation::Flip(at, bit) => {
            if !b.is_empty() {
                // Offsets from usize::MAX down count from the end of the file.
                let i = if *at > usize::MAX - 64 {
                    b.len().saturating_sub(1 + (usize::MAX - at)) % b.len()
                } else {
                    at % b.len()
                };
                b[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::Splice(at, len, with) => {
            let start = at % (b.len() + 1);
            let end = (start + len).min(b.len());
            b.splice(start..end, with.iter().copied());
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        // Flips biased to the header (the first ~250 bytes), where they change the most.
        (0usize..300, any::<u8>()).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        // Flips in the tensor bytes (the last 40): the file stays valid, the values change.
        (0usize..40, any::<u8>()).prop_map(|(back, bit)| Mutation::Flip(usize::MAX - back, bit)),
        (
            0usize..300,
            0usize..24,
            proptest::collection::vec(any::<u8>(), 0..24)
        )
            .prop_map(|(at, len, with)| Mutation::Splice(at, len, with)),
        (0usize..300, 0usize..8, "[\\[\\]{}:,\"0-9a-zA-Z_ -]{0,12}")
            .prop_map(|(at, len, s)| Mutation::Splice(at, len, s.into_bytes())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Truncated, bit-flipped and spliced files never panic: opening fails with an error naming
    /// the file, or succeeds and every tensor can be taken (its values are what the file holds).
    #[test]
    fn mutated_files_never_panic(ms in proptest::collection::vec(mutation(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.safetensors");
        let bytes = ms.iter().fold(small(), |b, m| mutate(&b, m));
        write(&path, &bytes);
        match TensorFile::open(&path) {
            Err(e) => prop_assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
            Ok(mut file) => {
                let names: Vec<String> = file.names().map(str::to_string).collect();
                for name in names {
                    if take_dyn(&mut file, &name).is_none() {
                        file.ignore([name]);
                    }
                }
                file.check().unwrap();
                // What the lazy reader accepts, the safetensors crate reads alike (when it
                // accepts it: it is stricter about gaps between tensors).
                if safetensors::SafeTensors::deserialize(&bytes).is_ok() {
                    let mut a = TensorFile::open(&path).unwrap();
                    assert_same(&take_all(&mut a), &reference(&bytes), "mutated");
                }
            }
        }
        let _ = TensorFile::from_bytes(&bytes, "mem");
        let _ = std::fs::remove_file(&path);
    }
}

/// A PyTorch zip checkpoint (`torch.save` of a state dict), written here: a pickle of
/// `_rebuild_tensor_v2` calls and one stored zip entry per storage. `tensors` gives name,
/// storage class (`FloatStorage`, `HalfStorage`, …), shape; `data(i)` the bytes of tensor `i`.
fn write_torch_zip(
    path: &Path,
    tensors: &[(&str, &str, Vec<usize>)],
    data: impl Fn(usize) -> Vec<u8>,
) {
    fn text(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    }
    let mut pkl = vec![0x80, 2, b'}', b'('];
    for (i, (name, storage, shape)) in tensors.iter().enumerate() {
        let numel: usize = shape.iter().product();
        text(&mut pkl, name);
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        pkl.push(b'(');
        text(&mut pkl, "storage");
        pkl.extend(format!("ctorch\n{storage}\n").as_bytes());
        text(&mut pkl, &i.to_string());
        text(&mut pkl, "cpu");
        int(&mut pkl, numel);
        pkl.extend(b"tQ");
        int(&mut pkl, 0);
        pkl.push(b'(');
        for d in shape {
            int(&mut pkl, *d);
        }
        pkl.push(b't');
        pkl.push(b'(');
        for k in 0..shape.len() {
            int(&mut pkl, shape[k + 1..].iter().product());
        }
        pkl.push(b't');
        pkl.push(0x89);
        pkl.extend(b"ccollections\nOrderedDict\n)Rt");
        pkl.push(b'R');
    }
    pkl.extend(b"u.");

    let mut zip = ZipWriter::new(path);
    zip.entry("archive/data.pkl", &pkl);
    zip.entry("archive/byteorder", b"little");
    for i in 0..tensors.len() {
        zip.entry(&format!("archive/data/{i}"), &data(i));
    }
    zip.entry("archive/version", b"3\n");
    zip.finish();
}

/// A minimal zip writer: stored (uncompressed) entries, 32-bit offsets.
struct ZipWriter {
    out: std::io::BufWriter<std::fs::File>,
    offset: u32,
    central: Vec<u8>,
    count: u16,
}

impl ZipWriter {
    fn new(path: &Path) -> Self {
        let out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        Self {
            out,
            offset: 0,
            central: Vec::new(),
            count: 0,
        }
    }

    fn entry(&mut self, name: &str, data: &[u8]) {
        let crc = crc32(data);
        let size = u32::try_from(data.len()).unwrap();
        let mut local = Vec::new();
        local.extend(0x0403_4b50u32.to_le_bytes());
        let common = |v: &mut Vec<u8>| {
            v.extend(20u16.to_le_bytes()); // version needed
            v.extend(0u16.to_le_bytes()); // flags
            v.extend(0u16.to_le_bytes()); // stored
            v.extend(0u16.to_le_bytes()); // time
            v.extend(0x21u16.to_le_bytes()); // date 1980-01-01
            v.extend(crc.to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra
        };
        common(&mut local);
        local.extend(name.as_bytes());
        self.central.extend(0x0201_4b50u32.to_le_bytes());
        self.central.extend(20u16.to_le_bytes()); // version made by
        common(&mut self.central);
        self.central.extend([0u8; 8]); // comment, disk, internal and external attributes
        self.central.extend([0u8; 2]);
        self.central.extend(self.offset.to_le_bytes());
        self.central.extend(name.as_bytes());
        self.out.write_all(&local).unwrap();
        self.out.write_all(data).unwrap();
        self.offset += u32::try_from(local.len()).unwrap() + size;
        self.count += 1;
    }

    fn finish(mut self) {
        let central = std::mem::take(&mut self.central);
        self.out.write_all(&central).unwrap();
        let mut end = Vec::new();
        end.extend(0x0605_4b50u32.to_le_bytes());
        end.extend([0u8; 4]);
        end.extend(self.count.to_le_bytes());
        end.extend(self.count.to_le_bytes());
        end.extend((central.len() as u32).to_le_bytes());
        end.extend(self.offset.to_le_bytes());
        end.extend(0u16.to_le_bytes());
        self.out.write_all(&end).unwrap();
        self.out.flush().unwrap();
    }
}

fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// A PyTorch `.bin` reads (lazily, tensor by tensor) like the same tensors in safetensors;
/// `model` finds transformers' `pytorch_model.bin`, and a `.bin` shard merges with a
/// safetensors one.
#[test]
fn pytorch_bins_read_like_safetensors() {
    let tmp = temp_dir("torch");
    let dir = tmp.path();
    let (w, b, h) = (values(24, 5), values(3, 6), values(8, 7));
    let half: Vec<u8> = h
        .iter()
        .map(|x| {
            // Round-trip through a value exactly representable in f16.
            let q = (x * 64.0).round() / 64.0;
            let bits = q.to_bits();
            let sign = ((bits >> 16) & 0x8000) as u16;
            if q == 0.0 {
                return sign;
            }
            let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
            sign | ((exp as u16) << 10) | ((bits >> 13) & 0x3ff) as u16
        })
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let torch = [
        ("enc.weight", "FloatStorage", vec![2, 3, 4]),
        ("enc.bias", "FloatStorage", vec![3]),
        ("enc.half", "HalfStorage", vec![2, 4]),
    ];
    let bytes = [f32_bytes(&w), f32_bytes(&b), half.clone()];
    let bin = dir.join("pytorch_model.bin");
    write_torch_zip(&bin, &torch, |i| bytes[i].clone());
    let st = serialize(&[
        raw("enc.weight", Dtype::F32, &[2, 3, 4], bytes[0].clone()),
        raw("enc.bias", Dtype::F32, &[3], bytes[1].clone()),
        raw("enc.half", Dtype::F16, &[2, 4], half),
    ]);
    let want = reference(&st);

    let mut file = TensorFile::open_folder(dir, "model").unwrap();
    assert_eq!(file.what(), bin.display().to_string());
    assert_same(&take_all(&mut file), &want, "pytorch_model.bin");
    file.finish().unwrap();

    // Shards of two kinds; a second take is still reported as such.
    let extra = write(
        &dir.join("extra.safetensors"),
        &serialize(&[raw("head.weight", Dtype::F32, &[2], f32_bytes(&[1.0, 2.0]))]),
    );
    let mut both = TensorFile::open_many([&bin, &extra]).unwrap();
    let got = take_all(&mut both);
    assert_eq!(got["head.weight"].1, [1.0, 2.0]);
    assert_eq!(got.len(), 4);
    let _ = take_dyn(&mut both, "enc.bias");
    let err = both.finish().unwrap_err().to_string();
    assert!(err.contains("enc.bias: taken twice"), "{err}");

    // Dropping a checkpoint with tensors left stops its reader (no hang, no panic).
    let mut part = TensorFile::open_any(&bin).unwrap();
    let _ = take_dyn(&mut part, "enc.bias");
    drop(part);
}

/// TensorFile stays `Send` and `Sync` (PyTorch snapshots, which are not, live on a worker
/// thread).
#[test]
fn a_tensor_file_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TensorFile>();
    let path = format!("{FIXTURES}/torch_tiny.pt");
    let mut file = TensorFile::open_any(&path).unwrap();
    let handle = std::thread::spawn(move || {
        let v = take_dyn(&mut file, "conv.bias").unwrap();
        (v, file)
    });
    let (v, mut file) = handle.join().unwrap();
    assert_eq!(v.len(), 2);
    file.ignore(["conv.weight", "fc.weight", "bn.num_batches_tracked"]);
    file.finish().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Peak memory of loading a large file (issue 17).

/// Tensors of the memory check: 16 of 16 Mi elements, 1 GiB as f32.
const RSS_TENSORS: usize = 16;
const RSS_NUMEL: usize = 16 << 20;

/// The bytes of tensor `i` of the memory check as dtype `half` (f16) or f32.
fn rss_bytes(i: usize, half: bool) -> Vec<u8> {
    if half {
        (0..RSS_NUMEL)
            .flat_map(|j| (0x3c00u16 + ((i + j) % 512) as u16).to_le_bytes())
            .collect()
    } else {
        (0..RSS_NUMEL)
            .flat_map(|j| ((i * 1000 + j % 1000) as f32).to_le_bytes())
            .collect()
    }
}

/// Writes a safetensors file tensor by tensor (never holding it whole).
fn write_big_safetensors(path: &Path, half: bool) {
    let size = if half { 2 } else { 4 };
    let mut header = serde_json::Map::new();
    for i in 0..RSS_TENSORS {
        let begin = i * RSS_NUMEL * size;
        header.insert(
            format!("t{i:02}"),
            serde_json::json!({
                "dtype": if half { "F16" } else { "F32" },
                "shape": [RSS_NUMEL],
                "data_offsets": [begin, begin + RSS_NUMEL * size],
            }),
        );
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    out.write_all(&header).unwrap();
    for i in 0..RSS_TENSORS {
        out.write_all(&rss_bytes(i, half)).unwrap();
    }
    out.flush().unwrap();
}

/// `VmHWM` (peak resident memory) and `VmRSS` of this process, in KiB.
fn vm_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The child half of the memory check: with `FOIL_RSS_FILE` set, opens that file, takes every
/// tensor into NdArray tensors (kept alive) and prints the peak RSS. Does nothing otherwise.
#[test]
#[ignore = "run by peak_rss_of_loading_a_1gib_checkpoint"]
fn rss_child() {
    let Ok(path) = std::env::var("FOIL_RSS_FILE") else {
        return;
    };
    let dev = Default::default();
    let (base, _) = vm_kib();
    let mut file = if std::env::var_os("FOIL_RSS_EAGER").is_some() {
        // What `open` did before it read lazily: the whole file, then every tensor converted.
        TensorFile::from_bytes(&std::fs::read(&path).unwrap(), path.clone()).unwrap()
    } else {
        TensorFile::open_any(&path).unwrap()
    };
    let (after_open, _) = vm_kib();
    let mut kept = Vec::new();
    for i in 0..RSS_TENSORS {
        kept.push(file.take::<B, 1>(&format!("t{i:02}"), [RSS_NUMEL], &dev));
    }
    file.finish().unwrap();
    let (peak, rss) = vm_kib();
    // The values are real: spot-check tensor 3.
    let t3 = kept[3]
        .val()
        .narrow(0, 0, 4)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let half = path.contains("f16");
    let want: Vec<f32> = (0..4)
        .map(|j| {
            if half {
                f16_reference(0x3c00 + ((3 + j) % 512) as u16)
            } else {
                (3000 + j) as f32
            }
        })
        .collect();
    assert_eq!(t3, want);
    println!("RSS base_kib={base} after_open_kib={after_open} peak_kib={peak} rss_kib={rss}");
}

/// Peak resident memory of loading 1 GiB of f32 parameters from a safetensors f32 file, a
/// safetensors f16 file and a PyTorch `.bin` (zip), each in a child process (this test binary,
/// running `rss_child`) under `/usr/bin/time -v` when present; and, for comparison, the eager
/// way `open` read before (the whole file, then every tensor converted). Prints the figures;
/// fails when a lazy load peaks above 1.3x the f32 bytes. The files are cached in
/// `$TMPDIR/foil-rss` (2.5 GiB).
#[test]
#[ignore = "writes 2.5 GiB to the temp folder and loads 1 GiB four times"]
fn peak_rss_of_loading_a_1gib_checkpoint() {
    let dir = std::env::temp_dir().join("foil-rss");
    std::fs::create_dir_all(&dir).unwrap();
    let tensor_bytes = (RSS_TENSORS * RSS_NUMEL * 4) as f64;
    let files = [
        ("safetensors f32", dir.join("f32.safetensors"), false),
        ("safetensors f16", dir.join("f16.safetensors"), false),
        ("pytorch .bin f32", dir.join("f32.bin"), false),
        ("eager f32 (before)", dir.join("f32.safetensors"), true),
    ];
    for (label, path, _) in &files[..3] {
        if path.exists() {
            continue;
        }
        // Written under another name and renamed, so an interrupted run leaves no partial file.
        let partial = path.with_extension("partial");
        match *label {
            "safetensors f32" => write_big_safetensors(&partial, false),
            "safetensors f16" => write_big_safetensors(&partial, true),
            _ => {
                let names: Vec<String> = (0..RSS_TENSORS).map(|i| format!("t{i:02}")).collect();
                let tensors: Vec<(&str, &str, Vec<usize>)> = names
                    .iter()
                    .map(|n| (n.as_str(), "FloatStorage", vec![RSS_NUMEL]))
                    .collect();
                write_torch_zip(&partial, &tensors, |i| rss_bytes(i, false));
            }
        }
        std::fs::rename(&partial, path).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let time = Path::new("/usr/bin/time");
    let mut worst = 0.0f64;
    println!(
        "loading {RSS_TENSORS} x {RSS_NUMEL} parameters ({:.0} MiB as f32):",
        tensor_bytes / 1048576.0
    );
    for (label, path, eager) in &files {
        let mut cmd = if time.exists() {
            let mut c = std::process::Command::new(time);
            c.arg("-v").arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let out = cmd
            .args([
                "weight_files::rss_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FOIL_RSS_FILE", path)
            .env(
                if *eager {
                    "FOIL_RSS_EAGER"
                } else {
                    "FOIL_RSS_LAZY"
                },
                "1",
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{label}: {stdout}\n{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.contains("RSS base_kib="))
            .unwrap_or_else(|| panic!("{label}: no figures in {stdout}\n{stderr}"));
        let get = |key: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        let (base, open, peak) = (get("base_kib="), get("after_open_kib="), get("peak_kib="));
        let time_max = stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let ratio = peak * 1024.0 / tensor_bytes;
        if !eager {
            worst = worst.max(time_max.map_or(ratio, |t| t * 1024.0 / tensor_bytes));
        }
        println!(
            "  {label:18} VmHWM {:7.1} MiB = {ratio:.3}x (before open {:.1} MiB, after open \
             {:.1} MiB, loading alone {:.3}x){}",
            peak / 1024.0,
            base / 1024.0,
            open / 1024.0,
            (peak - base) * 1024.0 / tensor_bytes,
            time_max.map_or(String::new(), |t| format!(
                "; /usr/bin/time max RSS {:.1} MiB = {:.3}x",
                t / 1024.0,
                t * 1024.0 / tensor_bytes
            )),
        );
    }
    assert!(worst <= 1.3, "peak RSS {worst:.3}x the f32 bytes");
}
