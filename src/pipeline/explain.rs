//! MaskDiME (FastDiME, DiME) over a test set, both directions, one result file per input, and
//! the batch loop that DIFFusion's runs share.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use foil_core::image_io::{tensor_to_images, write_atomic};
use foil_core::{Classifier, Denoiser, Error, FeatureExtractor, Result, predicted_labels};
use foil_data::Dataset;
use foil_guide::{Guide, GuideConfig, MaskPolicy};
use foil_schedule::{NoiseSchedule, Steps, space_timesteps};
use image::{DynamicImage, GenericImage, GrayImage, Luma, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::{image_mode, write_json};

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

/// One saved mask of an explanation (MaskDiME's `M1` or `M2`, FastDiME's difference mask).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskFile {
    /// The gray PNG beside the result (`<key>.m1.png`, `<key>.m2.png`): white where the
    /// sampler could change the image.
    pub file: String,
    /// Share of the image's pixels inside the mask.
    pub share: f64,
}

/// What one input's result file (`<key>.json`) records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Where the input came from (the dataset item's source).
    pub source: String,
    /// Its ground-truth class (label and name); the direction folder `<from>_to_<other>` is
    /// named by it.
    pub from: usize,
    /// The oracle's prediction on the original input.
    pub predicted: usize,
    /// The target class: the other class of [`predicted`](Self::predicted), as in every
    /// reference implementation (`target = 1 - prediction`). Equal to `from` when the oracle
    /// misclassified the input.
    pub to: usize,
    /// Class names, `[label 0, label 1]`.
    pub classes: [String; 2],
    /// Whether the oracle gives the target for the counterfactual (its prediction moved away
    /// from [`predicted`](Self::predicted)).
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
    /// Classifier passes spent (the oracle's prediction on the original included).
    pub classifier_calls: usize,
    /// The final outer mask (MaskDiME's `M1`, FastDiME's difference mask), saved as
    /// `<key>.m1.png`; `None` for methods without masks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m1: Option<MaskFile>,
    /// The final inner mask (MaskDiME's `M2`), saved as `<key>.m2.png`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m2: Option<MaskFile>,
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

/// The run folder of one seed of a multi-seed run (`foil maskdime|diffusion --seeds 0,1,2`):
/// `out/seed-<seed>/`, each laid out as a single run.
pub fn seed_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}

/// The runs of a seed list: `(seed, run folder)`. One seed runs into `out` itself (a single
/// run's layout); several run into [`seed_dir`]s. An empty list or a repeated seed is an error.
pub fn seed_runs(out: &Path, seeds: &[u64]) -> Result<Vec<(u64, PathBuf)>> {
    match seeds {
        [] => Err(Error::Empty {
            what: "seeds".into(),
            hint: "give at least one seed".into(),
        }),
        [seed] => Ok(vec![(*seed, out.to_path_buf())]),
        many => {
            for (i, s) in many.iter().enumerate() {
                if many[..i].contains(s) {
                    return Err(Error::out_of_range("seeds", "distinct seeds", s));
                }
            }
            Ok(many.iter().map(|&s| (s, seed_dir(out, s))).collect())
        }
    }
}

/// The folder of one direction's results under a run folder.
pub fn direction_dir(out: &Path, classes: &[String], from: usize, to: usize) -> PathBuf {
    out.join(format!(
        "{}_to_{}",
        result_key(&classes[from]),
        result_key(&classes[to])
    ))
}

/// The networks the guided sampler runs over a set: the unconditional DDPM and its training
/// schedule, the oracle under explanation, and the perceptual network of the distance loss
/// (the references' VGG-19 `features[:18]`; `None` needs `lambda_perc = 0`).
pub struct GuideModels<'a, B: AutodiffBackend, D, C> {
    /// The DDPM (on the inner backend: it is never differentiated).
    pub ddpm: &'a D,
    /// The DDPM's training schedule (respaced to `ExplainConfig::respaced_steps`).
    pub schedule: &'a NoiseSchedule,
    /// The classifier explained; its gradients guide, its prediction sets the targets.
    pub oracle: &'a C,
    /// The perceptual feature extractor, weighted by `lambda_perc`.
    pub perceptual: Option<&'a dyn FeatureExtractor<B>>,
}

impl<B: AutodiffBackend, D, C> Clone for GuideModels<'_, B, D, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: AutodiffBackend, D, C> Copy for GuideModels<'_, B, D, C> {}

/// Explains every image of `data` (two classes) with `ddpm` guided by `oracle`, towards the
/// other class of the oracle's prediction on the input (the references' `target = 1 - pred`;
/// a flip is the counterfactual's prediction reaching that target), writing per input under
/// `out/<from>_to_<to>/` (named by the label): `<key>.orig.png`, `<key>.cf.png`, the final
/// masks `<key>.m1.png` (and MaskDiME's `<key>.m2.png`), `<key>.grid.png` (original |
/// counterfactual | change heat map | masks) and last `<key>.json` ([`ItemResult`]). Inputs
/// whose `.json` exists are skipped, so a rerun finishes an interrupted run.
pub fn explain_set<B, D, C>(
    models: &GuideModels<'_, B, D, C>,
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
    let GuideModels {
        ddpm,
        schedule,
        oracle,
        perceptual,
    } = *models;
    let keep = space_timesteps(schedule.len(), &config.respaced_steps.to_string())?;
    let steps = Steps::respaced(schedule, &keep)?;
    let mut guide = Guide::<B, _, _>::new(config.guide.clone(), steps, ddpm, oracle)?;
    match perceptual {
        Some(extractor) => guide = guide.with_perceptual(extractor),
        None if config.guide.lambda_perc > 0.0 => {
            return Err(Error::out_of_range(
                "lambda_perc",
                "0 without a perceptual network (the references' VGG-19: `--perceptual vgg19:FILE`)",
                config.guide.lambda_perc,
            ));
        }
        None => {}
    }
    for_each_direction::<B::InnerBackend, _, _>(
        SetRun {
            data,
            out,
            per_direction: config.per_direction,
            batch_size: config.batch_size,
            image_size: config.image_size,
            device,
        },
        |x| predicted_labels(oracle, Tensor::<B, 4>::from_inner(x)),
        |x, _from, targets| {
            let result = guide.explain(x, targets, config.seed)?;
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
            Ok(Produced {
                images: result.images,
                made,
                outer_masks: result.outer_masks,
                inner_masks: result.inner_masks,
            })
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

/// A method's output for one batch: the counterfactuals `[N, C, H, W]`, one [`Made`] per
/// input, and the final masks `[N, 1, H, W]` (values 0 / 1) of methods that have them.
pub(crate) struct Produced<B: Backend> {
    pub images: Tensor<B, 4>,
    pub made: Vec<Made>,
    pub outer_masks: Option<Tensor<B, 4>>,
    pub inner_masks: Option<Tensor<B, 4>>,
}

impl<B: Backend> Produced<B> {
    /// A method without masks.
    pub(crate) fn unmasked(images: Tensor<B, 4>, made: Vec<Made>) -> Self {
        Self {
            images,
            made,
            outer_masks: None,
            inner_masks: None,
        }
    }
}

/// What a set run walks over and where it writes: the data (two classes), the run folder, at
/// most `per_direction` inputs per label, `batch_size` inputs per call, at `image_size`.
pub(crate) struct SetRun<'a, B: Backend> {
    pub data: &'a Dataset,
    pub out: &'a Path,
    pub per_direction: Option<usize>,
    pub batch_size: usize,
    pub image_size: u32,
    pub device: &'a B::Device,
}

/// The batch loop every method shares: for both directions (by label), the pending inputs of
/// the source class (no `<key>.json` yet) in batches; `predict(images)` for the oracle's
/// labels of the originals, whose other classes are the targets; `method(images, from,
/// targets)` for the counterfactuals; then each input's PNGs and last its JSON, written
/// atomically.
pub(crate) fn for_each_direction<B, P, F>(
    SetRun {
        data,
        out,
        per_direction,
        batch_size,
        image_size,
        device,
    }: SetRun<'_, B>,
    mut predict: P,
    mut method: F,
) -> Result<ExplainSummary>
where
    B: Backend,
    P: FnMut(Tensor<B, 4>) -> Result<Vec<usize>>,
    F: FnMut(Tensor<B, 4>, usize, &[usize]) -> Result<Produced<B>>,
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
    for (from, other) in [(0usize, 1usize), (1, 0)] {
        let dir = direction_dir(out, &classes, from, other);
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
            let predicted = predict(x.clone())?;
            if predicted.len() != batch.len() {
                return Err(Error::shape(
                    "oracle predictions of a batch",
                    batch.len(),
                    predicted.len(),
                ));
            }
            let targets = predicted
                .iter()
                .map(|&p| match p {
                    0 | 1 => Ok(1 - p),
                    _ => Err(Error::out_of_range(
                        "oracle prediction",
                        "0 or 1 (a two-class oracle)",
                        p,
                    )),
                })
                .collect::<Result<Vec<usize>>>()?;
            let produced = method(x.clone(), from, &targets)?;
            let (images, made) = (&produced.images, &produced.made);
            if made.len() != batch.len() || images.dims()[0] != batch.len() {
                return Err(Error::shape(
                    "counterfactuals of a batch",
                    batch.len(),
                    format!("{} images, {} outcomes", images.dims()[0], made.len()),
                ));
            }
            let originals = tensor_to_images(&x)?;
            let counterfactuals = tensor_to_images(images)?;
            let outer = mask_images(produced.outer_masks.as_ref(), batch.len())?;
            let inner = mask_images(produced.inner_masks.as_ref(), batch.len())?;
            for (j, &i) in batch.iter().enumerate() {
                let source = &data.items()[i].source;
                let key = result_key(source);
                let (orig, cf) = (originals[j].to_rgb8(), counterfactuals[j].to_rgb8());
                let (changed_fraction, mean_abs_change, heat) = change_map(&orig, &cf);
                save_png(&dir.join(format!("{key}.orig.png")), &orig)?;
                save_png(&dir.join(format!("{key}.cf.png")), &cf)?;
                let mut panels = vec![orig, cf, heat];
                let mut masks = [None, None];
                for (slot, (name, set)) in [("m1", &outer), ("m2", &inner)].into_iter().enumerate()
                {
                    if let Some(set) = set {
                        let file = format!("{key}.{name}.png");
                        save_gray_png(&dir.join(&file), &set[j])?;
                        masks[slot] = Some(MaskFile {
                            file,
                            share: mask_share(&set[j]),
                        });
                        panels.push(DynamicImage::ImageLuma8(set[j].clone()).to_rgb8());
                    }
                }
                let refs: Vec<&RgbImage> = panels.iter().collect();
                save_png(&dir.join(format!("{key}.grid.png")), &grid(&refs)?)?;
                let m = &made[j];
                let [m1, m2] = masks;
                let item = ItemResult {
                    source: source.clone(),
                    from,
                    predicted: predicted[j],
                    to: targets[j],
                    classes: classes.clone(),
                    flipped: m.flipped,
                    scale: m.scale,
                    t_skip: m.t_skip,
                    lambda: m.lambda,
                    changed_fraction,
                    mean_abs_change,
                    denoiser_calls: m.denoiser_calls,
                    // The prediction on the original: one oracle pass.
                    classifier_calls: m.classifier_calls + 1,
                    m1,
                    m2,
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

/// Masks `[N, 1, H, W]` (values 0 / 1) as gray images, white inside; `None` stays `None`.
fn mask_images<B: Backend>(
    masks: Option<&Tensor<B, 4>>,
    n: usize,
) -> Result<Option<Vec<GrayImage>>> {
    let Some(masks) = masks else {
        return Ok(None);
    };
    let [rows, c, h, w] = masks.dims();
    if rows != n || c != 1 {
        return Err(Error::shape(
            "masks of a batch",
            format!("[{n}, 1, H, W]"),
            foil_core::tensor::fmt_dims(&[rows, c, h, w]),
        ));
    }
    let values = foil_core::tensor::to_vec_f32(masks)?;
    Ok(Some(
        values
            .chunks_exact(h * w)
            .map(|m| {
                GrayImage::from_fn(w as u32, h as u32, |x, y| {
                    Luma([if m[y as usize * w + x as usize] > 0.5 {
                        255
                    } else {
                        0
                    }])
                })
            })
            .collect(),
    ))
}

/// Share of a mask's pixels that are inside (white).
pub fn mask_share(mask: &GrayImage) -> f64 {
    let n = mask.pixels().len().max(1) as f64;
    mask.pixels().filter(|p| p[0] > 127).count() as f64 / n
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
                let item = read_result(&path)?;
                found.push((path, item));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// One `<key>.json`; a result written before foil recorded the oracle's prediction (its
/// target came from the label) is refused with a message saying so.
fn read_result(path: &Path) -> Result<ItemResult> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let item: ItemResult = serde_json::from_slice(&bytes).map_err(|e| {
        let detail = if e.to_string().contains("missing field `predicted`") {
            "written by an older foil, whose target came from the label rather than the \
             oracle's prediction (no `predicted` field); run the method again into a new folder"
                .to_string()
        } else {
            e.to_string()
        };
        Error::format(format!("result {}", path.display()), detail)
    })?;
    for (what, v) in [
        ("from", item.from),
        ("predicted", item.predicted),
        ("to", item.to),
    ] {
        if v > 1 {
            return Err(Error::out_of_range(
                format!("`{what}` of result {}", path.display()),
                "0 or 1 (the two classes)",
                v,
            ));
        }
    }
    Ok(item)
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
    write_png(path, DynamicImage::ImageRgb8(img.clone()))
}

/// Writes a gray `img` as a PNG, atomically.
pub(crate) fn save_gray_png(path: &Path, img: &GrayImage) -> Result<()> {
    write_png(path, DynamicImage::ImageLuma8(img.clone()))
}

fn write_png(path: &Path, img: DynamicImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::format(path.display().to_string(), e))?;
    write_atomic(path, &bytes)
}
