//! MaskDiME (FastDiME, DiME) over a test set, both directions, one result file per input, and
//! the batch loop that DIFFusion's runs share.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use foil_core::image_io::{tensor_to_images, write_atomic};
use foil_core::{Classifier, Denoiser, Error, Result};
use foil_data::Dataset;
use foil_guide::{Guide, GuideConfig, MaskPolicy};
use foil_schedule::{NoiseSchedule, Steps, space_timesteps};
use image::{DynamicImage, GenericImage, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::{image_mode, read_json, write_json};

/// Which of the three methods of the guided sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// MaskDiME: Tweedie estimate, dual top-k masks.
    Maskdime,
    /// FastDiME: Tweedie estimate, pixel-difference mask.
    Fastdime,
    /// DiME: full-chain clean estimate, no mask.
    Dime,
}

impl Preset {
    /// The lower-case name (also the results sub-folder).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Maskdime => "maskdime",
            Preset::Fastdime => "fastdime",
            Preset::Dime => "dime",
        }
    }
}

/// Settings of a batch run.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainConfig {
    /// The method.
    pub preset: Preset,
    /// The sampler's settings (start from [`ExplainConfig::new`]'s).
    pub guide: GuideConfig,
    /// Sampling steps: the DDPM's `T` respaced to this many (DiME: 200 of 500).
    pub respaced_steps: usize,
    /// Inputs per sampler call.
    pub batch_size: usize,
    /// Sampler seed.
    pub seed: u64,
    /// At most this many inputs per direction (the first ones of the set).
    pub per_direction: Option<usize>,
    /// Side of the square RGB images the DDPM and the oracle take.
    pub image_size: u32,
}

impl ExplainConfig {
    /// The preset's published settings adapted to small images: no perceptual network
    /// (`lambda_perc = 0`), start step `tau` = 30 of 100 respaced steps, MaskDiME's top-k share
    /// 0.2 with a 3x3 dilation (a 5x5 dilation of 5% covers most of a 32 px image; on
    /// Fashion-MNIST Shirt vs T-shirt/top a share of 0.1 flipped 33 of 50 inputs and 0.2 flipped
    /// 49, at LPIPS 0.018 and 0.056: docs/pipeline.md).
    pub fn new(preset: Preset, image_size: u32) -> Self {
        let guide = match preset {
            Preset::Maskdime => GuideConfig {
                mask: MaskPolicy::Dual {
                    k: 0.2,
                    gamma: 0.5,
                    dilation: foil_guide::Dilation::Square { kernel: 3 },
                },
                ..GuideConfig::maskdime()
            },
            Preset::Fastdime => GuideConfig {
                mask: MaskPolicy::Difference {
                    warmup: 10,
                    pool: 3,
                    threshold: 0.15,
                },
                ..GuideConfig::fastdime()
            },
            Preset::Dime => GuideConfig::dime(),
        };
        Self {
            preset,
            guide: GuideConfig {
                tau: 30,
                lambda_perc: 0.0,
                ..guide
            },
            respaced_steps: 100,
            batch_size: 16,
            seed: 0,
            per_direction: None,
            image_size,
        }
    }
}

/// What one input's result file (`<key>.json`) records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Where the input came from (the dataset item's source).
    pub source: String,
    /// Its class (label and name).
    pub from: usize,
    /// The target class.
    pub to: usize,
    /// Class names, `[label 0, label 1]`.
    pub classes: [String; 2],
    /// Whether the oracle gives the target for the counterfactual.
    pub flipped: bool,
    /// The guidance scale that flipped it (MaskDiME, FastDiME, DiME).
    pub scale: Option<f64>,
    /// The `T_skip` that flipped it (DIFFusion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_skip: Option<f64>,
    /// The edit strength lambda that flipped it (DIFFusion's arithmetic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// Share of pixels whose value changed by more than 2% of the range (any channel), on the
    /// saved 8-bit images.
    pub changed_fraction: f64,
    /// Mean absolute change in `[0, 1]` units.
    pub mean_abs_change: f64,
    /// Denoiser evaluations spent.
    pub denoiser_calls: usize,
    /// Classifier passes spent.
    pub classifier_calls: usize,
}

/// What a batch run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainSummary {
    /// Inputs explained by this call.
    pub done: usize,
    /// Inputs skipped because their result already existed.
    pub skipped: usize,
    /// Of `done`, those flipped.
    pub flipped: usize,
    /// Wall time of this call.
    pub seconds: f64,
}

/// A file-name-safe key for a dataset source.
pub fn result_key(source: &str) -> String {
    source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The folder of one direction's results under a run folder.
pub fn direction_dir(out: &Path, classes: &[String], from: usize, to: usize) -> PathBuf {
    out.join(format!(
        "{}_to_{}",
        result_key(&classes[from]),
        result_key(&classes[to])
    ))
}

/// Explains every image of `data` (two classes) towards the other class with `ddpm` guided by
/// `oracle`, writing per input under `out/<from>_to_<to>/`: `<key>.orig.png`, `<key>.cf.png`,
/// `<key>.grid.png` (original | counterfactual | change heat map) and last `<key>.json`
/// ([`ItemResult`]). Inputs whose `.json` exists are skipped, so a rerun finishes an
/// interrupted run.
pub fn explain_set<B, D, C>(
    ddpm: &D,
    schedule: &NoiseSchedule,
    oracle: &C,
    data: &Dataset,
    out: &Path,
    config: &ExplainConfig,
    device: &B::Device,
) -> Result<ExplainSummary>
where
    B: AutodiffBackend,
    D: Denoiser<B::InnerBackend>,
    C: Classifier<B>,
{
    let keep = space_timesteps(schedule.len(), &config.respaced_steps.to_string())?;
    let steps = Steps::respaced(schedule, &keep)?;
    let guide = Guide::<B, _, _>::new(config.guide.clone(), steps, ddpm, oracle)?;
    for_each_direction::<B::InnerBackend, _>(
        data,
        out,
        config.per_direction,
        config.batch_size,
        config.image_size,
        device,
        |x, _from, to| {
            let targets = vec![to; x.dims()[0]];
            let result = guide.explain(x, &targets, config.seed)?;
            let made = result
                .outcomes
                .iter()
                .map(|o| Made {
                    flipped: o.flipped,
                    scale: o.scale,
                    t_skip: None,
                    lambda: None,
                    denoiser_calls: o.denoiser_calls,
                    classifier_calls: o.classifier_calls,
                })
                .collect();
            Ok((result.images, made))
        },
    )
}

/// What a method reports for one counterfactual (the rest of [`ItemResult`] is measured).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Made {
    pub flipped: bool,
    pub scale: Option<f64>,
    pub t_skip: Option<f64>,
    pub lambda: Option<f64>,
    pub denoiser_calls: usize,
    pub classifier_calls: usize,
}

/// The batch loop every method shares: for both directions, the pending inputs of the source
/// class (no `<key>.json` yet) in batches, `method(images, from, to)` for their
/// counterfactuals, then each input's PNGs and last its JSON, written atomically.
pub(crate) fn for_each_direction<B, F>(
    data: &Dataset,
    out: &Path,
    per_direction: Option<usize>,
    batch_size: usize,
    image_size: u32,
    device: &B::Device,
    mut method: F,
) -> Result<ExplainSummary>
where
    B: Backend,
    F: FnMut(Tensor<B, 4>, usize, usize) -> Result<(Tensor<B, 4>, Vec<Made>)>,
{
    let classes: [String; 2] = match data.class_names() {
        [a, b] => [a.clone(), b.clone()],
        other => {
            return Err(Error::shape("dataset classes", 2, other.len()));
        }
    };
    if batch_size == 0 {
        return Err(Error::out_of_range("batch size", ">= 1", 0));
    }
    let (mode, resize) = image_mode(image_size);
    let start = Instant::now();
    let mut summary = ExplainSummary {
        done: 0,
        skipped: 0,
        flipped: 0,
        seconds: 0.0,
    };
    for (from, to) in [(0usize, 1usize), (1, 0)] {
        let dir = direction_dir(out, &classes, from, to);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut chosen: Vec<usize> = (0..data.len())
            .filter(|&i| data.items()[i].label == from)
            .collect();
        if let Some(n) = per_direction {
            chosen.truncate(n);
        }
        let considered = chosen.len();
        let pending: Vec<usize> = chosen
            .into_iter()
            .filter(|&i| {
                !dir.join(format!("{}.json", result_key(&data.items()[i].source)))
                    .exists()
            })
            .collect();
        summary.skipped += considered - pending.len();
        for batch in pending.chunks(batch_size) {
            let (x, _) = data.tensors::<B>(batch, mode, resize, device)?;
            let (images, made) = method(x.clone(), from, to)?;
            if made.len() != batch.len() || images.dims()[0] != batch.len() {
                return Err(Error::shape(
                    "counterfactuals of a batch",
                    batch.len(),
                    format!("{} images, {} outcomes", images.dims()[0], made.len()),
                ));
            }
            let originals = tensor_to_images(&x)?;
            let counterfactuals = tensor_to_images(&images)?;
            for (j, &i) in batch.iter().enumerate() {
                let source = &data.items()[i].source;
                let key = result_key(source);
                let (orig, cf) = (originals[j].to_rgb8(), counterfactuals[j].to_rgb8());
                let (changed_fraction, mean_abs_change, heat) = change_map(&orig, &cf);
                save_png(&dir.join(format!("{key}.orig.png")), &orig)?;
                save_png(&dir.join(format!("{key}.cf.png")), &cf)?;
                save_png(
                    &dir.join(format!("{key}.grid.png")),
                    &grid(&[&orig, &cf, &heat])?,
                )?;
                let m = &made[j];
                let item = ItemResult {
                    source: source.clone(),
                    from,
                    to,
                    classes: classes.clone(),
                    flipped: m.flipped,
                    scale: m.scale,
                    t_skip: m.t_skip,
                    lambda: m.lambda,
                    changed_fraction,
                    mean_abs_change,
                    denoiser_calls: m.denoiser_calls,
                    classifier_calls: m.classifier_calls,
                };
                write_json(&dir.join(format!("{key}.json")), &item)?;
                summary.done += 1;
                summary.flipped += usize::from(item.flipped);
            }
        }
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Reads every `<key>.json` result in the direction folders (`<from>_to_<to>`) of a run
/// folder, sorted by direction and key.
pub fn read_results(out: &Path) -> Result<Vec<(PathBuf, ItemResult)>> {
    let mut found = Vec::new();
    let dirs = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for dir in dirs {
        let dir = dir.map_err(|e| Error::io(out, e))?.path();
        // Direction folders only (`<from>_to_<to>`, see `direction_dir`): a study folder or
        // anything else a user keeps beside them is not a result.
        let is_direction = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("_to_"));
        if !dir.is_dir() || !is_direction {
            continue;
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let item: ItemResult = read_json(&path, "result")?;
                found.push((path, item));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Changed share (> 2% of the range in any channel), mean absolute change in `[0, 1]`, and a
/// heat map (black: unchanged, to red then yellow: the largest change of the image).
pub fn change_map(orig: &RgbImage, cf: &RgbImage) -> (f64, f64, RgbImage) {
    let (w, h) = orig.dimensions();
    let mut deltas = Vec::with_capacity((w * h) as usize);
    let mut sum = 0.0;
    for (a, b) in orig.pixels().zip(cf.pixels()) {
        let d = (0..3)
            .map(|c| (a[c] as f64 - b[c] as f64).abs() / 255.0)
            .fold(0.0, f64::max);
        sum += (0..3)
            .map(|c| (a[c] as f64 - b[c] as f64).abs() / 255.0)
            .sum::<f64>()
            / 3.0;
        deltas.push(d);
    }
    let n = deltas.len().max(1) as f64;
    let changed = deltas.iter().filter(|&&d| d > 0.02).count() as f64 / n;
    let max = deltas.iter().copied().fold(0.0, f64::max);
    let heat = RgbImage::from_fn(w, h, |x, y| {
        let v = if max > 0.0 {
            deltas[(y * w + x) as usize] / max
        } else {
            0.0
        };
        let r = (v * 2.0).min(1.0);
        let g = (v * 2.0 - 1.0).clamp(0.0, 1.0);
        Rgb([(r * 255.0) as u8, (g * 255.0) as u8, 0])
    });
    (changed, sum / n, heat)
}

/// Images side by side with a 2-pixel white gap.
pub fn grid(images: &[&RgbImage]) -> Result<RgbImage> {
    let h = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let w = images
        .iter()
        .map(|i| i.width() + 2)
        .sum::<u32>()
        .saturating_sub(2);
    let mut out = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let mut x = 0;
    for img in images {
        out.copy_from(*img, x, 0)
            .map_err(|e| Error::format("image grid", e))?;
        x += img.width() + 2;
    }
    Ok(out)
}

/// Writes `img` as a PNG, atomically.
pub(crate) fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(img.clone())
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::format(path.display().to_string(), e))?;
    write_atomic(path, &bytes)
}
