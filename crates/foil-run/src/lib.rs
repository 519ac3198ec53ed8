//! Runs any counterfactual [`Method`] over a dataset, resumably, and defines the results
//! folder it writes.
//!
//! [`run_set`] walks both directions of a two-class dataset (by label), predicts each input's
//! class with the oracle (the target is the other class, as every reference implementation
//! sets it), asks the method for counterfactuals batch by batch, and writes per input under
//! `out/<from>_to_<to>/`: `<key>.orig.png`, `<key>.cf.png`, the final masks (`<key>.m1.png`,
//! `<key>.m2.png`) where the method has them, `<key>.grid.png` (original | counterfactual |
//! change heat map | masks) and last `<key>.json` ([`ItemResult`]), each written atomically.
//! Inputs whose `.json` exists are skipped, so an interrupted run loses nothing and a rerun
//! finishes it. [`read_results`] reads such a folder back (the metrics and the study page do).
//!
//! Several processes can share one results folder: [`SetRun::shard`] gives each a
//! deterministic part of the inputs ([`shard`]: `--shard I/N`, Slurm job arrays, Kubernetes
//! Indexed Jobs), and a claim file per input in flight ([`claim`]) makes sure no input is
//! explained twice, whoever runs what. The inputs are decoded batch by batch
//! ([`Dataset::tensors`]), so a folder dataset of any size costs memory for one batch.
//!
//! ```no_run
//! # use burn::backend::NdArray;
//! # fn demo(method: &dyn foil_core::Method<NdArray>, oracle: &dyn foil_core::Classifier<NdArray>, data: &foil_data::Dataset) -> foil_core::Result<()> {
//! use foil_run::{SetRun, run_set};
//! let device = Default::default();
//! let plan = SetRun::new(data, std::path::Path::new("runs/example"), 28, &device);
//! let summary = run_set(method, oracle, &SetRun { per_direction: Some(16), ..plan })?;
//! println!("{} explained, {} flipped", summary.done, summary.flipped);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
pub use foil_core::image_io::image_mode;
use foil_core::image_io::{tensor_to_images, write_atomic};
use foil_core::{Classifier, Error, Method, Request, Result, predicted_labels};
use foil_data::Dataset;
use image::{DynamicImage, GenericImage, GrayImage, Luma, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

pub mod claim;
pub mod manifest;
pub mod shard;
#[cfg(feature = "testing")]
pub mod testing;

pub use shard::Shard;

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
    /// Image-encoder passes spent (DIFFusion's embedding of the input, the nearest-neighbour
    /// baseline's); left out of the file when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub encoder_calls: usize,
    /// The final outer mask (MaskDiME's `M1`, FastDiME's difference mask), saved as
    /// `<key>.m1.png`; `None` for methods without masks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m1: Option<MaskFile>,
    /// The final inner mask (MaskDiME's `M2`), saved as `<key>.m2.png`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m2: Option<MaskFile>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a set run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Inputs explained by this call.
    pub done: usize,
    /// Inputs skipped because their result already existed.
    pub skipped: usize,
    /// Inputs left to another process that had claimed them ([`claim`]).
    pub busy: usize,
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

/// What a set run walks over and where it writes.
pub struct SetRun<'a, B: Backend> {
    /// The inputs: a dataset of exactly two classes.
    pub data: &'a Dataset,
    /// The run folder; one sub-folder per direction ([`direction_dir`]).
    pub out: &'a Path,
    /// At most this many inputs per label (the first ones of the set); `None`: all.
    pub per_direction: Option<usize>,
    /// Inputs per method call.
    pub batch_size: usize,
    /// Side of the square RGB images the method and the oracle take.
    pub image_size: u32,
    /// The seed handed to the method for every batch (the references seed each batch alike).
    pub seed: u64,
    /// Where the images go.
    pub device: &'a B::Device,
    /// Called after each input's result is written (`None`: silent).
    pub progress: Option<&'a dyn Fn(&Progress<'_>)>,
    /// The part of the inputs this process explains ([`shard`]; default: all).
    pub shard: Shard,
}

/// One finished input, as [`SetRun::progress`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The result just written.
    pub item: &'a ItemResult,
    /// Inputs written so far in this run (both directions).
    pub done: usize,
    /// Inputs this run writes in all (both directions, those already done skipped).
    pub total: usize,
    /// Flips among the `done` inputs.
    pub flipped: usize,
    /// Seconds since the run started.
    pub seconds: f64,
}

impl<B: Backend> Clone for SetRun<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for SetRun<'_, B> {}

impl<'a, B: Backend> SetRun<'a, B> {
    /// Every input of `data` into `out` at `image_size` on `device`, 16 per batch, seed 0.
    pub fn new(data: &'a Dataset, out: &'a Path, image_size: u32, device: &'a B::Device) -> Self {
        Self {
            data,
            out,
            per_direction: None,
            batch_size: 16,
            image_size,
            seed: 0,
            device,
            progress: None,
            shard: Shard::WHOLE,
        }
    }
}

/// The targets the references give: the other class of each prediction of a two-class
/// oracle (`target = 1 - prediction`).
pub fn other_classes(predicted: &[usize]) -> Result<Vec<usize>> {
    predicted
        .iter()
        .map(|&p| match p {
            0 | 1 => Ok(1 - p),
            _ => Err(Error::out_of_range(
                "oracle prediction",
                "0 or 1 (a two-class oracle)",
                p,
            )),
        })
        .collect()
}

/// Runs `method` over `plan.data`, both directions, writing one result per input (see the
/// crate docs) and skipping inputs already done. `oracle` predicts each original's class; the
/// target is the other class, and the method reports whether it reached it. Only the inputs
/// of `plan.shard` are run ([`Shard::select`]); each is claimed before it is explained and
/// left alone when another process holds it ([`claim`]).
pub fn run_set<B, M, C>(method: &M, oracle: &C, plan: &SetRun<'_, B>) -> Result<RunSummary>
where
    B: Backend,
    M: Method<B> + ?Sized,
    C: Classifier<B> + ?Sized,
{
    let SetRun {
        data,
        out,
        per_direction,
        batch_size,
        image_size,
        seed,
        device,
        progress,
        shard,
    } = *plan;
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
    // The run's network timings start with it (`foil_core::profile`; read by the CLI).
    foil_core::profile::reset();
    let start = Instant::now();
    let mut summary = RunSummary {
        done: 0,
        skipped: 0,
        busy: 0,
        flipped: 0,
        seconds: 0.0,
    };
    // Each direction's inputs in run order, this shard's part of them (whole batches of the
    // one-process run), then the pending ones, first, so progress knows the total.
    let chosen: Vec<Vec<usize>> = [0usize, 1]
        .into_iter()
        .map(|from| {
            let mut chosen: Vec<usize> = (0..data.len())
                .filter(|&i| data.items()[i].label == from)
                .collect();
            if let Some(n) = per_direction {
                chosen.truncate(n);
            }
            chosen
        })
        .collect();
    let result_file =
        |dir: &Path, i: usize| dir.join(format!("{}.json", result_key(&data.items()[i].source)));
    let mut directions = Vec::with_capacity(2);
    for ((from, other), mine) in [(0usize, 1usize), (1, 0)]
        .into_iter()
        .zip(shard.select(&chosen, batch_size))
    {
        let dir = direction_dir(out, &classes, from, other);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let considered = mine.len();
        let pending: Vec<usize> = mine
            .into_iter()
            .filter(|&i| !result_file(&dir, i).exists())
            .collect();
        summary.skipped += considered - pending.len();
        directions.push((from, dir, pending));
    }
    let total: usize = directions.iter().map(|(_, _, p)| p.len()).sum();
    for (from, dir, pending) in directions {
        for batch in pending.chunks(batch_size) {
            // Claim each input; one claimed elsewhere is left to its holder, one finished
            // since the listing (by another process) is skipped.
            let mut claims = Vec::with_capacity(batch.len());
            let mut claimed = Vec::with_capacity(batch.len());
            for &i in batch {
                let key = result_key(&data.items()[i].source);
                match claim::try_claim(&dir, &key)? {
                    None => summary.busy += 1,
                    Some(held) if result_file(&dir, i).exists() => {
                        held.release()?;
                        summary.skipped += 1;
                    }
                    Some(held) => {
                        claims.push(Some(held));
                        claimed.push(i);
                    }
                }
            }
            if claimed.is_empty() {
                continue;
            }
            let batch = claimed.as_slice();
            let (x, _) = data.tensors::<B>(batch, mode, resize, device)?;
            let predicted = predicted_labels(oracle, x.clone())?;
            if predicted.len() != batch.len() {
                return Err(Error::shape(
                    "oracle predictions of a batch",
                    batch.len(),
                    predicted.len(),
                ));
            }
            let targets = other_classes(&predicted)?;
            let labels = vec![from; batch.len()];
            let explained = method.explain(Request {
                images: x.clone(),
                labels: &labels,
                targets: &targets,
                seed,
            })?;
            explained.check(batch.len())?;
            let originals = tensor_to_images(&x)?;
            let counterfactuals = tensor_to_images(&explained.images)?;
            let outer = mask_images(explained.outer_masks.as_ref())?;
            let inner = mask_images(explained.inner_masks.as_ref())?;
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
                let o = &explained.outcomes[j];
                let setting = o.setting.filter(|_| o.flipped);
                let [m1, m2] = masks;
                let item = ItemResult {
                    source: source.clone(),
                    from,
                    predicted: predicted[j],
                    to: targets[j],
                    classes: classes.clone(),
                    flipped: o.flipped,
                    scale: setting.and_then(|s| s.scale()),
                    t_skip: setting.and_then(|s| s.t_skip()),
                    lambda: setting.and_then(|s| s.lambda()),
                    changed_fraction,
                    mean_abs_change,
                    denoiser_calls: o.cost.denoiser_calls,
                    // The prediction on the original: one oracle pass.
                    classifier_calls: o.cost.classifier_calls + 1,
                    encoder_calls: o.cost.encoder_calls,
                    m1,
                    m2,
                };
                write_json(&dir.join(format!("{key}.json")), &item)?;
                if let Some(held) = claims[j].take() {
                    held.release()?;
                }
                summary.done += 1;
                summary.flipped += usize::from(item.flipped);
                if let Some(report) = progress {
                    report(&Progress {
                        item: &item,
                        done: summary.done,
                        total,
                        flipped: summary.flipped,
                        seconds: start.elapsed().as_secs_f64(),
                    });
                }
            }
        }
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::format(path.display().to_string(), e))?;
    write_atomic(path, &text)
}

/// Masks `[N, 1, H, W]` (values 0 / 1, shapes checked by `Explained::check`) as gray images,
/// white inside; `None` stays `None`.
fn mask_images<B: Backend>(masks: Option<&Tensor<B, 4>>) -> Result<Option<Vec<GrayImage>>> {
    let Some(masks) = masks else {
        return Ok(None);
    };
    let [_, _, h, w] = masks.dims();
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
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    write_png(path, DynamicImage::ImageRgb8(img.clone()))
}

/// Writes a gray `img` as a PNG, atomically.
pub fn save_gray_png(path: &Path, img: &GrayImage) -> Result<()> {
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
