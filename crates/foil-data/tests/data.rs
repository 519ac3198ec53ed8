//! foil-data: loaders on real and corrupted files, pairs, splits, the procedural set.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use foil_core::image_io::{ColorMode, Resize};
use foil_data::idx::{self, Part};
use foil_data::{Dataset, Pixels, Split, folder, mnist_json, procedural};
use proptest::prelude::*;

/// A fresh, empty folder `foil-data-{tag}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-data-{tag}-"))
        .tempdir()
        .unwrap()
}

fn gz(path: &Path, bytes: &[u8]) {
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

/// Isoperimetric ratio of a gray shape: boundary pixels squared over area (> 0.5 ink).
fn spikiness(img: &image::GrayImage) -> f64 {
    let (w, h) = img.dimensions();
    let on = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < w as i64
            && y < h as i64
            && img.get_pixel(x as u32, y as u32).0[0] > 100
    };
    let (mut area, mut edge) = (0.0, 0.0);
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            if on(x, y) {
                area += 1.0;
                if !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1)) {
                    edge += 1.0;
                }
            }
        }
    }
    edge * edge / area
}

#[test]
fn kiki_bouba_is_seeded_balanced_and_separable_by_shape() {
    let a = procedural::kiki_bouba(30, 32, 5).unwrap();
    let b = procedural::kiki_bouba(30, 32, 5).unwrap();
    let c = procedural::kiki_bouba(30, 32, 6).unwrap();
    assert_eq!(a.counts(), [30, 30]);
    assert!(
        a.items()
            .iter()
            .zip(b.items())
            .all(|(x, y)| x.image == y.image && x.label == y.label)
    );
    assert!(
        a.items()
            .iter()
            .zip(c.items())
            .any(|(x, y)| x.image != y.image)
    );
    // Every kiki is spikier than every bouba: the classes differ by the shape, as documented.
    let (mut max_bouba, mut min_kiki) = (0.0f64, f64::INFINITY);
    for it in a.items() {
        let s = spikiness(it.decode().unwrap().as_luma8().unwrap());
        if it.label == 0 {
            max_bouba = max_bouba.max(s)
        } else {
            min_kiki = min_kiki.min(s)
        }
    }
    assert!(
        min_kiki > max_bouba,
        "kiki min {min_kiki} vs bouba max {max_bouba}"
    );
    assert!(procedural::kiki_bouba(0, 32, 1).is_err());
    assert!(procedural::kiki_bouba(3, 4, 1).is_err());
}

#[test]
fn pair_picks_classes_by_name_and_relabels() {
    let data = procedural::kiki_bouba(4, 16, 1).unwrap();
    let pair = data.pair("kiki", "bouba").unwrap();
    assert_eq!(pair.class_names(), ["kiki", "bouba"]);
    for (p, o) in pair.items().iter().zip(data.items()) {
        assert_eq!(p.label, 1 - o.label, "{}", p.source);
    }
    let err = data.pair("kiki", "blob").unwrap_err().to_string();
    assert!(err.contains("\"blob\"") && err.contains("bouba"), "{err}");
    assert!(data.pair("kiki", "kiki").is_err());
}

#[test]
fn tensors_are_in_range_with_labels() {
    let data = procedural::kiki_bouba(3, 16, 2).unwrap();
    let (x, labels) = data
        .tensors::<NdArray>(
            &[0, 1, 5],
            ColorMode::Gray,
            Resize::Keep,
            &Default::default(),
        )
        .unwrap();
    assert_eq!(x.dims(), [3, 1, 16, 16]);
    assert_eq!(labels, [0, 1, 1]);
    let v = x.into_data().to_vec::<f32>().unwrap();
    assert!(v.iter().all(|v| (-1.0..=1.0).contains(v)) && v.iter().any(|&v| v > 0.0));
    assert!(
        data.tensors::<NdArray>(&[6], ColorMode::Gray, Resize::Keep, &Default::default())
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn split_is_a_stratified_seeded_partition(per_class in 1usize..12, fraction in 0.0f64..0.9, seed in 0u64..100) {
        let data = procedural::kiki_bouba(per_class, 8, 3).unwrap();
        let s = data.split(fraction, seed).unwrap();
        let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..data.len()).collect::<Vec<_>>());
        for class in 0..2 {
            let k = s.test.iter().filter(|&&i| data.items()[i].label == class).count();
            let mut want = (fraction * per_class as f64).round() as usize;
            if per_class >= 2 && fraction > 0.0 { want = want.clamp(1, per_class - 1); }
            prop_assert_eq!(k, want);
        }
        prop_assert_eq!(&data.split(fraction, seed).unwrap(), &s);
    }
}

#[test]
fn a_recorded_split_reloads_and_refuses_other_data() {
    let tmp = temp_dir("split");
    let dir = tmp.path();
    let data = procedural::kiki_bouba(5, 8, 3).unwrap();
    let s = data.split(0.4, 9).unwrap();
    s.save(dir.join("split.json")).unwrap();
    assert_eq!(Split::load(dir.join("split.json"), &data).unwrap(), s);
    let other = procedural::kiki_bouba(5, 8, 4).unwrap();
    let err = Split::load(dir.join("split.json"), &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the data changed"), "{err}");
    assert!(data.split(1.0, 0).is_err());
}

#[test]
fn class_folders_round_trip_and_report_bad_files() {
    let tmp = temp_dir("folder");
    let dir = tmp.path();
    let data = procedural::kiki_bouba(3, 12, 8).unwrap();
    folder::save(&data, dir).unwrap();
    let back = folder::load(dir).unwrap();
    assert_eq!(back.class_names(), data.class_names());
    assert_eq!(back.counts(), [3, 3]);
    let mut orig: Vec<_> = data
        .items()
        .iter()
        .map(|i| (i.label, i.decode().unwrap().to_luma8().into_raw()))
        .collect();
    let mut read: Vec<_> = back
        .items()
        .iter()
        .map(|i| (i.label, i.decode().unwrap().to_luma8().into_raw()))
        .collect();
    orig.sort();
    read.sort();
    assert_eq!(orig, read);

    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let err = folder::load(dir).unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("is empty"), "{err}");
    std::fs::remove_dir(dir.join("empty")).unwrap();

    let bad = dir.join("kiki/zz-broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let err = folder::load(dir).unwrap_err().to_string();
    assert!(err.contains("zz-broken.png"), "{err}");
    assert!(folder::load(dir.join("missing")).is_err());
}

#[test]
fn idx_files_load_and_corrupt_ones_are_refused() {
    let tmp = temp_dir("idx");
    let dir = tmp.path();
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|v| v as u8 * 4).collect();
    gz(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &idx_bytes(&[3, 4, 5], &pixels),
    );
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[3], &[9, 0, 6]),
    )
    .unwrap();
    let data = idx::fashion_mnist(Some(dir), Part::Test).unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data.items()[2].label, 6);
    assert_eq!(data.class_names()[data.items()[0].label], "Ankle boot");
    let img = data.items()[1].decode().unwrap().to_luma8();
    assert_eq!(img.dimensions(), (5, 4));
    assert_eq!(img.get_pixel(2, 1).0[0], (20 + 5 + 2) as u8 * 4);
    assert_eq!(data.items()[1].source, "fashion-mnist/test/1");

    // Truncated data, a cut gzip stream, a wrong label count, a wrong magic, a missing part.
    let cut = idx_bytes(&[3, 4, 5], &pixels[..50]);
    let err = idx::parse_idx_u8(&cut, "cut").unwrap_err().to_string();
    assert!(err.contains("need 60 data bytes, found 50"), "{err}");
    let mut raw = Vec::new();
    {
        let mut e = flate2::write::GzEncoder::new(&mut raw, flate2::Compression::fast());
        e.write_all(&idx_bytes(&[3, 4, 5], &pixels)).unwrap();
        e.finish().unwrap();
    }
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), &raw[..raw.len() / 2]).unwrap();
    let err = idx::fashion_mnist(Some(dir), Part::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte.gz") && err.contains("gzip"),
        "{err}"
    );
    gz(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &idx_bytes(&[3, 4, 5], &pixels),
    );
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_bytes(&[2], &[9, 0])).unwrap();
    let err = idx::fashion_mnist(Some(dir), Part::Test)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one label per image"), "{err}");
    assert!(
        idx::parse_idx_u8(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "f32")
            .unwrap_err()
            .to_string()
            .contains("0x0d")
    );
    let err = idx::fashion_mnist(Some(dir), Part::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("dataset-fashion-mnist"),
        "{err}"
    );
}

/// The real Fashion-MNIST from Debian's package (CI installs it and sets
/// FOIL_REQUIRE_FASHION_MNIST=1; elsewhere the test says it skipped).
#[test]
fn debian_fashion_mnist_has_the_published_layout() {
    if !Path::new(idx::DEBIAN_FASHION_MNIST).is_dir() {
        assert!(
            std::env::var_os("FOIL_REQUIRE_FASHION_MNIST").is_none(),
            "{} missing",
            idx::DEBIAN_FASHION_MNIST
        );
        eprintln!(
            "skipped: {} not found (apt install dataset-fashion-mnist)",
            idx::DEBIAN_FASHION_MNIST
        );
        return;
    }
    let test = idx::fashion_mnist(None, Part::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.counts(), [1000; 10]);
    let first: Vec<usize> = test.items()[..10].iter().map(|i| i.label).collect();
    assert_eq!(first, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    let img = test.items()[0].decode().unwrap().to_luma8();
    assert_eq!(img.dimensions(), (28, 28));
    assert_eq!(img.pixels().map(|p| p.0[0] as u64).sum::<u64>(), 33_456);
    let pair: Dataset = test.pair("Shirt", "T-shirt/top").unwrap();
    assert_eq!(pair.counts(), [1000, 1000]);
}

#[test]
fn mnist_json_digits_load_and_bad_files_are_refused() {
    let tmp = temp_dir("mnist");
    let dir = tmp.path();
    for d in 0..10 {
        let values: Vec<String> = (0..2 * 784)
            .map(|i| format!("{}", ((i + d) % 5) as f32 / 4.0))
            .collect();
        std::fs::write(
            dir.join(format!("{d}.json")),
            format!("{{\"data\": [{}]}}", values.join(",")),
        )
        .unwrap();
    }
    let data = mnist_json::load(dir).unwrap();
    assert_eq!(data.counts(), [2; 10]);
    let img = data.items()[3].decode().unwrap().to_luma8(); // digit 1, image 1
    // Pixel (3, 0) of digit 1's second image is value 784 + 3 of 1.json: ((787 + 1) % 5) / 4 = 0.75.
    assert_eq!(img.get_pixel(3, 0).0[0], 191);
    assert_eq!(data.items()[3].label, 1);
    std::fs::write(dir.join("7.json"), "{\"data\": [0.5, 0.5]}").unwrap();
    let err = mnist_json::load(dir).unwrap_err().to_string();
    assert!(
        err.contains("7.json") && err.contains("multiple of 784"),
        "{err}"
    );
    std::fs::write(dir.join("7.json"), "{\"data\": [0.5, ").unwrap();
    assert!(
        mnist_json::load(dir)
            .unwrap_err()
            .to_string()
            .contains("7.json")
    );
}

proptest::proptest! {
    /// `first_per_class(n)` keeps, per class, the first `min(n, count)` items, in order.
    #[test]
    fn first_per_class_keeps_the_first_of_each_class(n in 0usize..5, seed in 0u64..50) {
        let source: foil_data::Source = "kiki-bouba:4:8".parse().unwrap();
        let (all, _) = source.load(0.0, seed).unwrap();
        let kept = all.first_per_class(n).unwrap();
        for (label, &count) in all.counts().iter().enumerate() {
            let sources = |d: &Dataset, k: usize| -> Vec<String> {
                d.items().iter().filter(|i| i.label == label).take(k).map(|i| i.source.clone()).collect()
            };
            let (expected, found) = (sources(&all, n), sources(&kept, usize::MAX));
            proptest::prop_assert_eq!(found, expected);
            proptest::prop_assert_eq!(kept.counts()[label], count.min(n));
        }
    }
}

#[test]
fn a_flat_folder_is_one_class_explained_towards_another() {
    let tmp = temp_dir("flat");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    for (name, shade) in [("b.png", 200u8), ("a.png", 20)] {
        image::GrayImage::from_pixel(4, 4, image::Luma([shade]))
            .save(dir.join(name))
            .unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    image::GrayImage::new(4, 4)
        .save(dir.join("nested/c.png"))
        .unwrap();
    let data = folder::load_flat(dir, "cat", "dog").unwrap();
    assert_eq!(data.class_names(), ["cat", "dog"]);
    assert_eq!(data.counts(), [2, 0]);
    // Sorted by name, top level only.
    let sources: Vec<&str> = data.items().iter().map(|i| i.source.as_str()).collect();
    assert!(sources[0].ends_with("a.png") && sources[1].ends_with("b.png"));
    assert!(folder::load_flat(dir, "cat", "cat").is_err());
    let empty = dir.join("nested/empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = folder::load_flat(&empty, "cat", "dog")
        .unwrap_err()
        .to_string();
    assert!(err.contains("image folder"), "{err}");
    std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
    let err = folder::load_flat(dir, "cat", "dog")
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.png"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn class_folders_are_decoded_lazily_and_a_bad_file_is_named_when_its_batch_is_read() {
    let tmp = temp_dir("lazy");
    let dir = tmp.path();
    let data = procedural::kiki_bouba(3, 12, 8).unwrap();
    folder::save(&data, dir).unwrap();
    let listed = folder::load(dir).unwrap();
    // Listed, not decoded: every item is its file, and its source is the file's path.
    let files: Vec<PathBuf> = listed
        .items()
        .iter()
        .map(|i| match &i.image {
            Pixels::File(path) => {
                assert_eq!(path.display().to_string(), i.source);
                path.clone()
            }
            Pixels::Decoded(_) => panic!("{} was decoded when listed", i.source),
        })
        .collect();
    assert_eq!(files.len(), 6);
    let device = Default::default();
    let gray = |d: &Dataset, ix: &[usize]| {
        d.tensors::<NdArray>(ix, ColorMode::Gray, Resize::Keep, &device)
    };
    let (whole, labels) = gray(&listed, &[0, 1, 2, 3, 4, 5]).unwrap();
    assert_eq!(whole.dims(), [6, 1, 12, 12]);
    assert_eq!(
        labels,
        listed.items().iter().map(|i| i.label).collect::<Vec<_>>()
    );

    // A file cut inside its pixel data passes the listing (its header is whole) and fails
    // only when a batch holding it is decoded, naming it; the other items still decode.
    let victim = &files[4];
    let bytes = std::fs::read(victim).unwrap();
    let idat = bytes.windows(4).position(|w| w == b"IDAT").unwrap();
    std::fs::write(victim, &bytes[..idat + 8]).unwrap();
    let relisted = folder::load(dir).unwrap();
    let err = gray(&relisted, &[3, 4]).unwrap_err().to_string();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "{err}");
    let (rest, _) = gray(&relisted, &[0, 1, 2, 3, 5]).unwrap();
    assert_eq!(rest.dims(), [5, 1, 12, 12]);
    // A file removed after the listing: an error naming it, no panic.
    std::fs::remove_file(victim).unwrap();
    let err = relisted.items()[4].decode().unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");
    // A pair and a subset keep the items lazy (paths, not pixels).
    let pair = listed.pair("kiki", "bouba").unwrap();
    assert!(
        pair.items()
            .iter()
            .all(|i| matches!(i.image, Pixels::File(_)))
    );
    std::fs::remove_dir_all(dir).unwrap();
}
