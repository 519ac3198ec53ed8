//! The idx format of (Fashion-)MNIST, plain or gzipped, and the Fashion-MNIST files that Debian's
//! `dataset-fashion-mnist` package installs in `/usr/share/datasets/fashion-mnist/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use foil_core::{Error, Result};
use image::{DynamicImage, GrayImage};

use crate::dataset::{Dataset, Item};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which half of an (Fashion-)MNIST release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The 60 000 training images.
    Train,
    /// The 10 000 test images.
    Test,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Test => "t10k",
        }
    }
}

/// Reads a whole file, un-gzipping it when it starts with the gzip magic bytes (one gzip
/// member: its output is bounded by deflate's 1032:1 ratio to the file's size).
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::format(
                    path.display().to_string(),
                    format!("corrupt or truncated gzip: {e}"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an idx file of unsigned bytes: its dimensions and data, checking the magic number and
/// that the data length matches the dimensions exactly.
pub fn parse_idx_u8(bytes: &[u8], what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(
            what.to_owned(),
            "not an idx file (expected two zero bytes, a type byte and a rank byte)",
        ));
    }
    if bytes[2] != 0x08 {
        return Err(Error::format(
            what.to_owned(),
            format!(
                "idx element type 0x{:02x}, expected 0x08 (unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(Error::format(
            what.to_owned(),
            format!("truncated header: {} bytes, expected {header}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let data = &bytes[header..];
    if count != Some(data.len()) {
        let need = count.map_or_else(|| "more".to_string(), |c| c.to_string());
        return Err(Error::format(
            what.to_owned(),
            format!(
                "dimensions {dims:?} need {need} data bytes, found {} (truncated or corrupt)",
                data.len()
            ),
        ));
    }
    Ok((dims, data.to_vec()))
}

/// The image and label files of one part in `dir` (`.gz` or not).
pub fn files(dir: &Path, part: Part) -> Result<(PathBuf, PathBuf)> {
    let find = |stem: String| {
        [format!("{stem}.gz"), stem.clone()]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::io(
                    dir.join(format!("{stem}.gz")),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not found (install Debian's dataset-fashion-mnist, or point to a folder with the idx files)",
                    ),
                )
            })
    };
    Ok((
        find(format!("{}-images-idx3-ubyte", part.prefix()))?,
        find(format!("{}-labels-idx1-ubyte", part.prefix()))?,
    ))
}

/// Loads an idx image file and its label file as a gray dataset with the given class names.
pub fn load_pair(images: &Path, labels: &Path, names: &[&str], tag: &str) -> Result<Dataset> {
    let (idims, pixels) = parse_idx_u8(&read_maybe_gz(images)?, &images.display().to_string())?;
    let (ldims, labs) = parse_idx_u8(&read_maybe_gz(labels)?, &labels.display().to_string())?;
    let [n, h, w] = idims[..] else {
        return Err(Error::shape(
            images.display().to_string(),
            "[N, H, W]",
            format!("{idims:?}"),
        ));
    };
    if ldims != [n] {
        return Err(Error::shape(
            labels.display().to_string(),
            format!("[{n}] (one label per image)"),
            format!("{ldims:?}"),
        ));
    }
    if h == 0 || w == 0 {
        return Err(Error::shape(
            images.display().to_string(),
            "images of at least 1 x 1 pixels",
            format!("{h} x {w}"),
        ));
    }
    // n images of h * w bytes each were read: n is bounded by the file.
    let mut items = Vec::with_capacity(n);
    for (i, (chunk, &label)) in pixels.chunks_exact(h * w).zip(&labs).enumerate() {
        let image = GrayImage::from_raw(w as u32, h as u32, chunk.to_vec()).ok_or_else(|| {
            Error::shape(
                images.display().to_string(),
                format!("{h} x {w}"),
                "too large",
            )
        })?;
        items.push(Item {
            image: DynamicImage::ImageLuma8(image).into(),
            label: label as usize,
            source: format!("{tag}/{i}"),
        });
    }
    Dataset::new(names.iter().map(|s| s.to_string()).collect(), items)
}

/// Fashion-MNIST's `part` from `dir` (default: Debian's folder), labelled with
/// [`FASHION_MNIST_CLASSES`]; sources read `fashion-mnist/{train|test}/{index}`.
pub fn fashion_mnist(dir: Option<&Path>, part: Part) -> Result<Dataset> {
    let dir = dir.unwrap_or(Path::new(DEBIAN_FASHION_MNIST));
    let (images, labels) = files(dir, part)?;
    let tag = match part {
        Part::Train => "fashion-mnist/train",
        Part::Test => "fashion-mnist/test",
    };
    load_pair(&images, &labels, &FASHION_MNIST_CLASSES, tag)
}
