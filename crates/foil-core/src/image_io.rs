//! Image ↔ tensor conversion, the one place where pixel ranges change.
//!
//! Inside foil, images are NCHW `f32` tensors in `[-1, 1]`: `x = 2 * (u8 / 255) - 1`.
//! Going back, values are clamped to `[-1, 1]` and rounded to the nearest `u8`.

use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use image::{DynamicImage, GrayImage, RgbImage, imageops::FilterType};

use crate::tensor::{fmt_dims, to_vec_f32};
use crate::{Error, Result};

/// Channel layout of the tensors made from images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// Three channels, R, G, B.
    #[default]
    Rgb,
    /// One luminance channel.
    Gray,
}

impl ColorMode {
    /// Number of tensor channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }
}

/// What to do with an image whose size differs from the one wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// Keep the size; a batch of differently sized images is an error.
    #[default]
    Keep,
    /// Stretch to exactly `width` x `height` (Catmull-Rom).
    Exact {
        /// Target width in pixels.
        width: u32,
        /// Target height in pixels.
        height: u32,
    },
    /// Scale the shorter side to `size`, then crop the centre square `size` x `size`
    /// (the CLIP and ImageNet convention).
    CenterCrop {
        /// Side of the square output.
        size: u32,
    },
}

impl Resize {
    /// Applies the policy to one image.
    pub fn apply(self, img: &DynamicImage) -> Result<DynamicImage> {
        match self {
            Resize::Keep => Ok(img.clone()),
            Resize::Exact { width, height } => {
                check_nonzero(width, height)?;
                if img.width() == width && img.height() == height {
                    Ok(img.clone())
                } else {
                    Ok(img.resize_exact(width, height, FilterType::CatmullRom))
                }
            }
            Resize::CenterCrop { size } => {
                check_nonzero(size, size)?;
                let (w, h) = (img.width(), img.height());
                let scale = size as f64 / w.min(h) as f64;
                let nw = ((w as f64 * scale).round() as u32).max(size);
                let nh = ((h as f64 * scale).round() as u32).max(size);
                let scaled = if (nw, nh) == (w, h) {
                    img.clone()
                } else {
                    img.resize_exact(nw, nh, FilterType::CatmullRom)
                };
                Ok(scaled.crop_imm((nw - size) / 2, (nh - size) / 2, size, size))
            }
        }
    }
}

fn check_nonzero(w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::out_of_range(
            "resize target",
            "at least 1 x 1 pixels",
            format!("{w} x {h}"),
        ));
    }
    Ok(())
}

/// How every network of a pipeline sees images: RGB (gray data is replicated), `size` x `size`.
pub fn image_mode(size: u32) -> (ColorMode, Resize) {
    (
        ColorMode::Rgb,
        Resize::Exact {
            width: size,
            height: size,
        },
    )
}

/// Reads an image file (any format the enabled `image` features decode).
pub fn load(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    image::open(path).map_err(|source| match source {
        image::ImageError::IoError(e) => Error::io(path, e),
        source => Error::Image {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Writes an image atomically: to a temporary file beside `path`, then renamed over it, so an
/// interrupted run never leaves a truncated file where a finished one is expected.
pub fn save(img: &DynamicImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let format = image::ImageFormat::from_path(path).map_err(|source| Error::Image {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .map_err(|source| Error::Image {
            path: path.to_path_buf(),
            source,
        })?;
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` atomically and durably: to a temporary file of a unique name in the
/// same folder ([`temp_sibling`]; created exclusively, so concurrent writers, even on other
/// hosts of a shared file system, never share one), flushed to disk, renamed over `path`, and
/// the folder flushed too ([`sync_dir`]), so a crash or power loss leaves either the old file
/// or the whole new one. Of concurrent writers of one `path` the last rename wins, whole. On an
/// error the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (tmp, mut file) = loop {
        let tmp = temp_sibling(path);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| {
            drop(file);
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// The folder `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A fresh hidden name beside `path` for a temporary file or folder that is renamed over it:
/// `.<name>.tmp-<pid>-<nanoseconds>-<counter>`, unique within the process (the counter) and,
/// with the clock, across processes that share a pid on different hosts. Create it exclusively
/// (`create_new`, `create_dir`) and draw another name if it exists.
pub fn temp_sibling(path: &Path) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.tmp-{}-{nanos}-{n}", std::process::id()))
}

/// Flushes a folder's entries to disk (after a rename into it), so the rename survives a crash.
/// On Unix the folder is opened and synced; elsewhere (Windows cannot open folders as files)
/// this does nothing.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Converts one image to a `[C, H, W]` vector of values in `[-1, 1]`, after `resize`.
fn image_values(
    img: &DynamicImage,
    mode: ColorMode,
    resize: Resize,
) -> Result<(Vec<f32>, u32, u32)> {
    let img = resize.apply(img)?;
    let (w, h) = (img.width(), img.height());
    let plane = (w * h) as usize;
    let to_unit = |v: u8| v as f32 / 127.5 - 1.0;
    let values = match mode {
        ColorMode::Gray => img.to_luma8().into_raw().into_iter().map(to_unit).collect(),
        ColorMode::Rgb => {
            let raw = img.to_rgb8().into_raw();
            let mut out = vec![0.0f32; 3 * plane];
            for (i, px) in raw.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = to_unit(px[c]);
                }
            }
            out
        }
    };
    Ok((values, w, h))
}

/// Converts images to one NCHW tensor in `[-1, 1]`.
///
/// All images must have the same size after `resize`, otherwise [`Error::Shape`] names the
/// first one that differs.
pub fn images_to_tensor<B: Backend>(
    images: &[DynamicImage],
    mode: ColorMode,
    resize: Resize,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let first = images.first().ok_or_else(|| Error::Empty {
        what: "image batch".into(),
        hint: "pass at least one image".into(),
    })?;
    let (mut all, w, h) = image_values(first, mode, resize)?;
    for (i, img) in images.iter().enumerate().skip(1) {
        let (values, wi, hi) = image_values(img, mode, resize)?;
        if (wi, hi) != (w, h) {
            return Err(Error::shape(
                format!("image {i} of the batch (after resize policy {resize:?})"),
                format!("{w} x {h} like image 0"),
                format!("{wi} x {hi}"),
            ));
        }
        all.extend(values);
    }
    let shape = [images.len(), mode.channels(), h as usize, w as usize];
    Ok(Tensor::from_data(TensorData::new(all, shape), device))
}

/// Reads image files into one NCHW tensor in `[-1, 1]`.
pub fn load_batch<B: Backend, P: AsRef<Path>>(
    paths: &[P],
    mode: ColorMode,
    resize: Resize,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let images = paths.iter().map(load).collect::<Result<Vec<_>>>()?;
    images_to_tensor(&images, mode, resize, device)
}

/// Converts an NCHW tensor in `[-1, 1]` (clamped) to images: 1 channel gives gray, 3 give RGB.
pub fn tensor_to_images<B: Backend>(t: &Tensor<B, 4>) -> Result<Vec<DynamicImage>> {
    let [n, c, h, w] = t.dims();
    if c != 1 && c != 3 {
        return Err(Error::shape(
            "image tensor",
            "[N, 1 or 3, H, W]",
            fmt_dims(&[n, c, h, w]),
        ));
    }
    let values = to_vec_f32(t)?;
    let to_u8 = |v: f32| {
        let v = if v.is_nan() { 0.0 } else { v };
        ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
    };
    let plane = h * w;
    let mut out = Vec::with_capacity(n);
    for img in values.chunks_exact(c * plane) {
        let dynamic = if c == 1 {
            let px = img.iter().copied().map(to_u8).collect();
            GrayImage::from_raw(w as u32, h as u32, px).map(DynamicImage::ImageLuma8)
        } else {
            let mut px = Vec::with_capacity(3 * plane);
            for i in 0..plane {
                for ch in 0..3 {
                    px.push(to_u8(img[ch * plane + i]));
                }
            }
            RgbImage::from_raw(w as u32, h as u32, px).map(DynamicImage::ImageRgb8)
        };
        out.push(dynamic.ok_or_else(|| Error::format("image tensor", "buffer size mismatch"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use proptest::prelude::*;

    type B = NdArray<f32>;

    proptest! {
        #[test]
        fn rgb_round_trip_is_exact(w in 1u32..9, h in 1u32..9, seed in any::<u64>()) {
            let mut state = seed;
            let img = RgbImage::from_fn(w, h, |_, _| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let b = (state >> 33).to_le_bytes();
                image::Rgb([b[0], b[1], b[2]])
            });
            let dynamic = DynamicImage::ImageRgb8(img.clone());
            let t = images_to_tensor::<B>(&[dynamic.clone(), dynamic], ColorMode::Rgb, Resize::Keep, &Default::default()).unwrap();
            prop_assert_eq!(t.dims(), [2, 3, h as usize, w as usize]);
            let back = tensor_to_images(&t).unwrap();
            prop_assert_eq!(back[1].to_rgb8(), img);
        }
    }

    #[test]
    fn range_and_layout() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgb([0, 255, 0])
            } else {
                image::Rgb([255, 0, 255])
            }
        });
        let t = images_to_tensor::<B>(
            &[DynamicImage::ImageRgb8(img)],
            ColorMode::Rgb,
            Resize::Keep,
            &Default::default(),
        )
        .unwrap();
        // Channel-major: R plane, G plane, B plane.
        assert_eq!(
            to_vec_f32(&t).unwrap(),
            vec![-1.0, 1.0, 1.0, -1.0, -1.0, 1.0]
        );
    }

    #[test]
    fn mismatched_sizes_are_an_error() {
        let a = DynamicImage::ImageRgb8(RgbImage::new(4, 4));
        let b = DynamicImage::ImageRgb8(RgbImage::new(5, 4));
        let err = images_to_tensor::<B>(
            &[a.clone(), b.clone()],
            ColorMode::Gray,
            Resize::Keep,
            &Default::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        let ok = images_to_tensor::<B>(
            &[a, b],
            ColorMode::Gray,
            Resize::CenterCrop { size: 3 },
            &Default::default(),
        )
        .unwrap();
        assert_eq!(ok.dims(), [2, 1, 3, 3]);
    }

    #[test]
    fn out_of_range_values_clamp() {
        let t = Tensor::<B, 4>::from_data(
            TensorData::new(vec![-3.0f32, 0.0, 7.0, f32::NAN], [1, 1, 2, 2]),
            &Default::default(),
        );
        let img = tensor_to_images(&t)
            .unwrap()
            .remove(0)
            .to_luma8()
            .into_raw();
        assert_eq!(img, vec![0, 128, 255, 128]);
    }

    #[test]
    fn unreadable_files_say_which() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let bad = dir.join("truncated.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n\0\0").unwrap();
        let err = load(&bad).unwrap_err();
        assert!(err.to_string().contains("truncated.png"), "{err}");
        let missing = load(dir.join("missing.png")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
        let round = dir.join("ok.png");
        save(&DynamicImage::ImageLuma8(GrayImage::new(3, 2)), &round).unwrap();
        assert_eq!(load(&round).unwrap().width(), 3);
    }
}
