//! Scores a run folder written by [`super::explain_set`]: success ratio per direction, LPIPS,
//! the changed-pixel share and the sampler's cost, as a [`foil_metrics::Evaluation`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use foil_core::image_io::{ColorMode, Resize, images_to_tensor, load};
use foil_core::{Error, Result};
use foil_metrics::Evaluation;
use foil_metrics::diversity::ImageDistance;
use foil_metrics::flips::flip_report;
use foil_metrics::lpips::{Lpips, LpipsNet};

use super::explain::read_results;

/// What to score besides the result files themselves.
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    /// The method's name in the report.
    pub method: String,
    /// LPIPS (AlexNet) weights; `None`: no LPIPS.
    pub lpips_weights: Option<PathBuf>,
}

/// Reads every result under `out` and scores it. LPIPS is computed on the saved 8-bit original
/// and counterfactual PNGs, so it scores exactly what a user sees; images smaller than
/// [`LPIPS_MIN_SIDE`] are upscaled to it first (AlexNet's layers need 31 pixels or more).
pub fn score_results<B: Backend>(
    out: &Path,
    options: &ScoreOptions,
    device: &B::Device,
) -> Result<Evaluation> {
    let results = read_results(out)?;
    if results.is_empty() {
        return Err(Error::Empty {
            what: format!("results under {}", out.display()),
            hint: "run `foil maskdime` or `foil diffusion` first".into(),
        });
    }
    // A direction runs from the oracle's prediction on the original to the other class (the
    // references' `target = 1 - prediction`); an unflipped counterfactual keeps the prediction.
    let sources: Vec<usize> = results.iter().map(|(_, r)| r.predicted).collect();
    let targets: Vec<usize> = results.iter().map(|(_, r)| r.to).collect();
    let predicted: Vec<usize> = results
        .iter()
        .map(|(_, r)| if r.flipped { r.to } else { r.predicted })
        .collect();
    let flips = flip_report(&sources, &targets, &predicted)?;
    let classes = results[0].1.classes.clone();
    let mut extra = BTreeMap::new();
    let mean = |f: &dyn Fn(&super::ItemResult) -> f64, from: Option<usize>| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(_, r)| from.is_none_or(|a| r.from == a))
            .map(|(_, r)| f(r))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let direction = |a: usize| format!("{} -> {}", classes[a], classes[1 - a]);
    for from in [0, 1] {
        if sources.contains(&from) {
            extra.insert(
                format!("changed fraction {}", direction(from)),
                mean(&|r| r.changed_fraction, Some(from)),
            );
        }
    }
    extra.insert(
        "changed fraction".into(),
        mean(&|r| r.changed_fraction, None),
    );
    extra.insert("mean abs change".into(), mean(&|r| r.mean_abs_change, None));
    extra.insert(
        "denoiser calls per image".into(),
        mean(&|r| r.denoiser_calls as f64, None),
    );

    let mut lpips_mean = None;
    if let Some(weights) = &options.lpips_weights {
        let net = Lpips::<B>::load(weights, LpipsNet::alex(), device)?;
        let mut per_item = Vec::with_capacity(results.len());
        for chunk in results.chunks(32) {
            let paths = |suffix: &str| -> Result<Vec<_>> {
                chunk
                    .iter()
                    .map(|(p, _)| {
                        let stem = p.with_extension("");
                        load(PathBuf::from(format!("{}.{suffix}.png", stem.display())))
                    })
                    .collect()
            };
            let (orig, cf) = (paths("orig")?, paths("cf")?);
            let resize = lpips_resize(&orig);
            let a = images_to_tensor::<B>(&orig, ColorMode::Rgb, resize, device)?;
            let b = images_to_tensor::<B>(&cf, ColorMode::Rgb, resize, device)?;
            per_item.extend(net.distance(a, b)?);
        }
        for from in [0, 1] {
            let v: Vec<f64> = per_item
                .iter()
                .zip(&sources)
                .filter(|&(_, &s)| s == from)
                .map(|(&d, _)| d)
                .collect();
            if !v.is_empty() {
                extra.insert(
                    format!("lpips {}", direction(from)),
                    v.iter().sum::<f64>() / v.len() as f64,
                );
            }
        }
        lpips_mean = Some(per_item.iter().sum::<f64>() / per_item.len() as f64);
    }
    Ok(Evaluation {
        method: options.method.clone(),
        inputs: results.len(),
        flips: Some(flips),
        lpips: lpips_mean,
        extra,
        ..Evaluation::default()
    })
}

/// Stacks each direction's per-input grids (original | counterfactual | change heat map) into
/// one PNG per direction, `out/<from>_to_<to>.png`, at most `max_rows` rows (sorted by key),
/// written atomically. Returns the files written.
pub fn contact_sheets(out: &Path, max_rows: usize) -> Result<Vec<PathBuf>> {
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for (path, _) in read_results(out)? {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        by_dir
            .entry(dir)
            .or_default()
            .push(path.with_extension("grid.png"));
    }
    let mut written = Vec::new();
    for (dir, grids) in by_dir {
        let rows = grids
            .iter()
            .take(max_rows)
            .map(|p| {
                image::open(p)
                    .map(|i| i.to_rgb8())
                    .map_err(|e| Error::format(p.display().to_string(), e))
            })
            .collect::<Result<Vec<_>>>()?;
        let width = rows.iter().map(|r| r.width()).max().unwrap_or(0);
        let height = rows
            .iter()
            .map(|r| r.height() + 2)
            .sum::<u32>()
            .saturating_sub(2);
        let mut sheet = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        let mut y = 0;
        for row in &rows {
            image::GenericImage::copy_from(&mut sheet, row, 0, y)
                .map_err(|e| Error::format("contact sheet", e))?;
            y += row.height() + 2;
        }
        let path = dir.with_extension("png");
        super::save_png(&path, &sheet)?;
        written.push(path);
    }
    Ok(written)
}

/// Smallest side LPIPS is computed at: AlexNet needs at least 31 pixels, and small images
/// (Fashion-MNIST's 28) are upscaled to this side first.
pub const LPIPS_MIN_SIDE: u32 = 64;

pub(crate) fn lpips_resize(images: &[image::DynamicImage]) -> Resize {
    let (w, h) = images
        .first()
        .map_or((LPIPS_MIN_SIDE, LPIPS_MIN_SIDE), |i| {
            (i.width(), i.height())
        });
    if w.min(h) >= LPIPS_MIN_SIDE {
        Resize::Keep
    } else {
        let scale = LPIPS_MIN_SIDE as f64 / w.min(h) as f64;
        Resize::Exact {
            width: (w as f64 * scale).round() as u32,
            height: (h as f64 * scale).round() as u32,
        }
    }
}
