//! Fixtures for tests of code that reads results folders (the metrics, the facade's
//! `foil evaluate` and its contact sheets): a fresh temporary folder, small synthetic pictures,
//! and one result written as the methods write it ([`FixtureItem`]). Behind the `testing` feature; normal builds leave
//! it out.
//!
//! ```
//! use foil_run::testing::{FixtureItem, picture, temp_dir};
//! let tmp = temp_dir("doc-example");
//! let run = tmp.path();
//! let item = FixtureItem {
//!     flipped: false,
//!     ..FixtureItem::new("img0", 0, picture(0, 40), picture(0, 200))
//! };
//! let json = item.write(run).unwrap();
//! assert!(json.ends_with("bouba_to_kiki/img0.json"));
//! assert_eq!(foil_run::read_results(run).unwrap()[0].1, item.record());
//! ```

use std::path::{Path, PathBuf};

use foil_core::{Error, Result};
use image::{Rgb, RgbImage};

use crate::{ItemResult, change_map, direction_dir, grid, save_png, write_json};

/// The class names of the fixtures, `[label 0, label 1]`.
pub const CLASSES: [&str; 2] = ["bouba", "kiki"];

/// A fresh, empty folder `foil-fixture-<tag>-<random>` under the system temp folder, removed
/// when the returned guard drops (after the test, pass or fail).
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-fixture-{tag}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary folder: {e}"))
}

/// A 16 x 16 picture: a gradient shifted by `level`, with a square of `patch` brightness.
pub fn picture(level: u8, patch: u8) -> RgbImage {
    RgbImage::from_fn(16, 16, |x, y| {
        if (4..10).contains(&x) && (5..11).contains(&y) {
            Rgb([patch, patch / 2, 255 - patch])
        } else {
            let v = level.wrapping_add((x * 9 + y * 5) as u8);
            Rgb([v, v / 3, 200 - v / 2])
        }
    })
}

/// One input's result, written by [`write`](Self::write) as [`run_set`](crate::run_set) writes
/// it: `<run>/<from>_to_<other>/<key>.orig.png`, `<key>.cf.png`, `<key>.grid.png` (original |
/// counterfactual | change heat map) and `<key>.json` (an [`ItemResult`]), in the folder of its
/// ground-truth class ([`direction_dir`]). The target is the other class of
/// [`predicted`](Self::predicted).
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureItem {
    /// The result key (file stem), also recorded as the source.
    pub key: String,
    /// Class names, `[label 0, label 1]`.
    pub classes: [String; 2],
    /// The ground-truth class.
    pub from: usize,
    /// The oracle's prediction on the original (0 or 1).
    pub predicted: usize,
    /// Whether the counterfactual flipped the oracle.
    pub flipped: bool,
    /// The recorded changed share; the recorded mean absolute change is half of it.
    pub changed_fraction: f64,
    /// The original image.
    pub orig: RgbImage,
    /// The counterfactual image.
    pub cf: RgbImage,
}

impl FixtureItem {
    /// A flipped result of a correctly classified input (`from == predicted`) between
    /// [`CLASSES`], with a changed share of 0.25.
    pub fn new(key: impl Into<String>, predicted: usize, orig: RgbImage, cf: RgbImage) -> Self {
        Self {
            key: key.into(),
            classes: CLASSES.map(String::from),
            from: predicted,
            predicted,
            flipped: true,
            changed_fraction: 0.25,
            orig,
            cf,
        }
    }

    /// The target class: the other class of the prediction.
    pub fn to(&self) -> usize {
        1 - self.predicted
    }

    /// The record written as `<key>.json`: scale 8, 10 denoiser calls, 11 classifier calls, no
    /// encoder calls and no masks.
    pub fn record(&self) -> ItemResult {
        ItemResult {
            source: self.key.clone(),
            from: self.from,
            predicted: self.predicted,
            to: self.to(),
            classes: self.classes.clone(),
            flipped: self.flipped,
            scale: Some(8.0),
            t_skip: None,
            lambda: None,
            changed_fraction: self.changed_fraction,
            mean_abs_change: self.changed_fraction / 2.0,
            denoiser_calls: 10,
            classifier_calls: 11,
            encoder_calls: 0,
            m1: None,
            m2: None,
        }
    }

    /// Writes the images, the grid and last the record under the run folder `run` (creating the
    /// direction folder); returns the path of `<key>.json`.
    pub fn write(&self, run: &Path) -> Result<PathBuf> {
        let dir = direction_dir(run, &self.classes, self.from, 1 - self.from);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        save_png(&dir.join(format!("{}.orig.png", self.key)), &self.orig)?;
        save_png(&dir.join(format!("{}.cf.png", self.key)), &self.cf)?;
        let (_, _, heat) = change_map(&self.orig, &self.cf);
        let panels = grid(&[&self.orig, &self.cf, &heat])?;
        save_png(&dir.join(format!("{}.grid.png", self.key)), &panels)?;
        let json = dir.join(format!("{}.json", self.key));
        write_json(&json, &self.record())?;
        Ok(json)
    }
}
