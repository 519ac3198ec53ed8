//! The scoring loop: per-input scores computed once, in batches, then aggregated per
//! direction and over all inputs.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, backend::Backend};
use foil_core::image_io::{ColorMode, Resize, image_mode, images_to_tensor, load};
use foil_core::progress::{self, Tick};
use foil_core::tensor::to_vec_f32;
use foil_core::{Classifier, Error, ImageEncoder, Result};
use foil_run::{ItemResult, read_results};
use image::DynamicImage;

use super::{
    Averaged, DirectionEvaluation, Diversity, Metric, Metrics, Note, RunEvaluation,
    SIMILARITY_THRESHOLD, Scorers, Similarity,
};
use crate::cout::cout;
use crate::diversity::{ImageDistance, diversity};
use crate::fid::{Features, fid, split_fid};
use crate::lpips::Lpips;
use crate::mnac::{mnac, mnac_excluding};
use crate::similarity::{cosine_similarities, summarize};

/// Smallest side LPIPS is computed at: AlexNet needs at least 31 pixels, and small images
/// (Fashion-MNIST's 28) are upscaled to this side first.
pub const LPIPS_MIN_SIDE: u32 = 64;

/// How images like `images` (all of the first one's size) are resized for LPIPS and the
/// encoders: kept when their shorter side is at least [`LPIPS_MIN_SIDE`], else scaled up,
/// keeping the aspect ratio, until it is.
pub fn lpips_resize(images: &[DynamicImage]) -> Resize {
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

/// Settings of an evaluation besides the networks.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateOptions {
    /// The method's name in the report.
    pub method: String,
    /// COUT insertion steps (the protocol: 50).
    pub cout_steps: usize,
    /// sFID repetitions (the protocol: 10).
    pub sfid_repeats: usize,
    /// Seed of the sFID splits.
    pub seed: u64,
    /// Images per network call.
    pub batch_size: usize,
    /// MNAC: leave out this attribute (an index into the MNAC oracle's attributes); `None`
    /// counts every attribute, as the papers' `compute_MNAC.py` does.
    pub mnac_exclude: Option<usize>,
}

impl Default for EvaluateOptions {
    /// The protocol's settings: 50 COUT steps, 10 sFID repeats, seed 0, 32 images per call,
    /// every MNAC attribute counted.
    fn default() -> Self {
        Self {
            method: String::new(),
            cout_steps: 50,
            sfid_repeats: 10,
            seed: 0,
            batch_size: 32,
            mnac_exclude: None,
        }
    }
}

/// The seed folders `seed-<s>/` under `out`, sorted by seed.
pub fn seed_folders(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let path = entry.map_err(|e| Error::io(out, e))?.path();
        let seed = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("seed-"))
            .and_then(|s| s.parse::<u64>().ok());
        if let (Some(seed), true) = (seed, path.is_dir()) {
            seeds.push((seed, path));
        }
    }
    seeds.sort();
    Ok(seeds)
}

fn png(json: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}.{suffix}.png",
        json.with_extension("").display()
    ))
}

fn chunks(n: usize, batch: usize) -> impl Iterator<Item = Range<usize>> {
    let batch = batch.max(1);
    (0..n).step_by(batch).map(move |s| s..(s + batch).min(n))
}

/// Reports `done` of `total` images scored by `task` ([`foil_core::progress`]).
fn report_scored(task: &str, done: usize, total: usize) {
    progress::report(&Tick::new(task, "images", done, total));
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The flipped-only and all-inputs means of `values` over the inputs `idx`.
fn averaged(values: &[f64], idx: &[usize], flipped: &[bool]) -> Option<Averaged> {
    Some(Averaged {
        all: mean(idx.iter().map(|&i| values[i]))?,
        flipped: mean(idx.iter().filter(|&&i| flipped[i]).map(|&i| values[i])),
    })
}

/// Per-item scores computed once, aggregated per scope.
#[derive(Default)]
struct PerItem {
    lpips: Option<Vec<f64>>,
    cout: Option<Vec<f64>>,
    mnac: Option<Vec<f64>>,
    similarity: Option<Vec<f64>>,
    /// Original and counterfactual features (row per item) and the width.
    features: Option<(Vec<f32>, Vec<f32>, usize)>,
    /// Diversity per item of the scored folder (`None` where absent from a seed).
    diversity: Option<(Vec<Option<f64>>, usize)>,
}

/// Scores the results under `results` with `scorers`. When `results` holds `seed-<s>/`
/// folders, the lowest seed's folder is scored and the diversity compares every seed; else
/// `results` itself is scored and the diversity is `None`. Nothing is written. Each metric's
/// batches are reported to [`foil_core::progress`].
pub fn evaluate_run<B: Backend>(
    results: &Path,
    scorers: &Scorers<B>,
    options: &EvaluateOptions,
    device: &B::Device,
) -> Result<RunEvaluation> {
    let seeds = seed_folders(results)?;
    let scored = seeds
        .first()
        .map_or_else(|| results.to_path_buf(), |(_, p)| p.clone());
    let items = read_results(&scored)?;
    if items.is_empty() {
        return Err(Error::Empty {
            what: format!("results under {}", scored.display()).into(),
            hint: "run `foil maskdime` or `foil diffusion` first".into(),
        });
    }
    let classes = items[0].1.classes.clone();
    if let Some((path, r)) = items.iter().find(|(_, r)| r.classes != classes) {
        return Err(Error::format(
            path.display().to_string(),
            format!(
                "classes {:?}, the other results have {classes:?}",
                r.classes
            ),
        ));
    }
    if let Some(o) = &scorers.oracle
        && o.names.as_slice() != classes.as_slice()
    {
        return Err(Error::format(
            "oracle classes",
            format!(
                "the oracle was trained on {:?}, the results are of {classes:?}",
                o.names
            ),
        ));
    }
    if let (Some(o), Some(j)) = (&scorers.mnac_oracle, options.mnac_exclude)
        && j >= o.names.len()
    {
        return Err(Error::out_of_range(
            "excluded MNAC attribute",
            format!("below {} (the MNAC oracle's attributes)", o.names.len()),
            j,
        ));
    }
    let n = items.len();
    let flipped: Vec<bool> = items.iter().map(|(_, r)| r.flipped).collect();
    let origs = items
        .iter()
        .map(|(p, _)| load(png(p, "orig")))
        .collect::<Result<Vec<_>>>()?;
    let cfs = items
        .iter()
        .map(|(p, _)| load(png(p, "cf")))
        .collect::<Result<Vec<_>>>()?;
    let lpips_size = lpips_resize(&origs);
    let tensors = |r: &Range<usize>, resize: Resize| -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        Ok((
            images_to_tensor::<B>(&origs[r.clone()], ColorMode::Rgb, resize, device)?,
            images_to_tensor::<B>(&cfs[r.clone()], ColorMode::Rgb, resize, device)?,
        ))
    };
    let batch = options.batch_size;
    let mut per = PerItem::default();

    if let Some(net) = &scorers.lpips {
        let mut v = Vec::with_capacity(n);
        report_scored("score LPIPS", 0, n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, lpips_size)?;
            v.extend(net.distance(a, b)?);
            report_scored("score LPIPS", r.end, n);
        }
        per.lpips = Some(v);
    }
    if let Some(o) = &scorers.oracle {
        let (_, resize) = image_mode(o.image_size);
        let c: &dyn Classifier<B> = &*o.classifier;
        let mut v = Vec::with_capacity(n);
        report_scored("score COUT", 0, n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, resize)?;
            let src: Vec<usize> = items[r.clone()].iter().map(|(_, i)| i.predicted).collect();
            let tgt: Vec<usize> = items[r.clone()].iter().map(|(_, i)| i.to).collect();
            v.extend(cout(&c, a, b, &src, &tgt, options.cout_steps)?);
            report_scored("score COUT", r.end, n);
        }
        per.cout = Some(v);
    }
    if let Some(o) = &scorers.mnac_oracle {
        let (_, resize) = image_mode(o.image_size);
        let c: &dyn Classifier<B> = &*o.classifier;
        let mut v = Vec::with_capacity(n);
        report_scored("score MNAC", 0, n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, resize)?;
            let counts = match options.mnac_exclude {
                Some(j) => mnac_excluding(&c, a, b, j)?,
                None => mnac(&c, a, b)?,
            };
            v.extend(counts.into_iter().map(|k| k as f64));
            report_scored("score MNAC", r.end, n);
        }
        per.mnac = Some(v);
    }
    if let Some(e) = &scorers.similarity_encoder {
        let net: &dyn ImageEncoder<B> = &*e.net;
        let mut v = Vec::with_capacity(n);
        report_scored("score similarity", 0, n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, lpips_size)?;
            v.extend(cosine_similarities(&net, a, b)?);
            report_scored("score similarity", r.end, n);
        }
        per.similarity = Some(v);
    }
    if let Some(e) = &scorers.fid_encoder {
        let (mut fa, mut fb) = (Vec::new(), Vec::new());
        report_scored("score FID features", 0, n);
        for r in chunks(n, batch) {
            let (a, b) = tensors(&r, lpips_size)?;
            fa.extend(to_vec_f32(&e.net.encode(a)?)?);
            fb.extend(to_vec_f32(&e.net.encode(b)?)?);
            report_scored("score FID features", r.end, n);
        }
        let d = fa.len() / n;
        per.features = Some((fa, fb, d));
    }
    if let (Some(net), true) = (&scorers.diversity_lpips, seeds.len() >= 2) {
        per.diversity = Some((
            diversity_per_item(&scored, &items, &seeds, net, batch, device)?,
            seeds.len(),
        ));
    }

    // Scopes: each direction, then everything.
    let mut by_direction: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, (_, r)) in items.iter().enumerate() {
        by_direction.entry((r.predicted, r.to)).or_default().push(i);
    }
    let mut notes = Vec::new();
    let name = |k: usize| {
        classes
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    };
    let mut directions = Vec::new();
    for ((from, to), idx) in &by_direction {
        let label = format!("{} -> {}", name(*from), name(*to));
        let metrics = scope_metrics(
            &items,
            idx,
            &flipped,
            &per,
            options,
            Some(&label),
            &mut notes,
        );
        directions.push(DirectionEvaluation {
            from: *from,
            to: *to,
            from_name: name(*from),
            to_name: name(*to),
            metrics,
        });
    }
    let all: Vec<usize> = (0..n).collect();
    let overall = scope_metrics(&items, &all, &flipped, &per, options, None, &mut notes);

    let missing = |metric: Metric, reason: &str, notes: &mut Vec<Note>| {
        notes.push(Note {
            metric,
            direction: None,
            reason: reason.into(),
        })
    };
    if scorers.lpips.is_none() {
        missing(
            Metric::Lpips,
            "no LPIPS AlexNet weights (--lpips)",
            &mut notes,
        );
    }
    if scorers.fid_encoder.is_none() {
        for m in [Metric::Fid, Metric::Sfid] {
            missing(m, "no encoder chosen (--fid-encoder)", &mut notes);
        }
    }
    if scorers.oracle.is_none() {
        missing(Metric::Cout, "no oracle given (--oracle DIR)", &mut notes);
    }
    if scorers.mnac_oracle.is_none() {
        missing(
            Metric::Mnac,
            "no multi-attribute oracle given (--mnac-oracle DIR,DIR,..)",
            &mut notes,
        );
    }
    if scorers.similarity_encoder.is_none() {
        missing(
            Metric::Similarity,
            "no encoder chosen (--similarity-encoder)",
            &mut notes,
        );
    }
    if seeds.len() < 2 {
        missing(
            Metric::Diversity,
            &format!(
                "needs two or more seed-<s>/ folders (`--seeds 0,1,2`), found {}",
                seeds.len()
            ),
            &mut notes,
        );
    } else if scorers.diversity_lpips.is_none() {
        missing(
            Metric::Diversity,
            "no LPIPS VGG16 weights (--lpips-vgg)",
            &mut notes,
        );
    }
    Ok(RunEvaluation {
        method: options.method.clone(),
        scored_folder: scored,
        seeds: seeds.iter().map(|(s, _)| *s).collect(),
        fid_encoder: scorers.fid_encoder.as_ref().map(|e| e.label.clone()),
        similarity_encoder: scorers.similarity_encoder.as_ref().map(|e| e.label.clone()),
        mnac_attributes: scorers
            .mnac_oracle
            .as_ref()
            .map(|o| o.names.clone())
            .unwrap_or_default(),
        mnac_excluded: scorers.mnac_oracle.as_ref().and(options.mnac_exclude),
        directions,
        overall,
        notes,
    })
}

/// Per input of the scored (first) seed, the mean pairwise LPIPS between its counterfactuals
/// across all seeds; `None` for an input missing from some seed.
fn diversity_per_item<B: Backend>(
    scored: &Path,
    items: &[(PathBuf, ItemResult)],
    seeds: &[(u64, PathBuf)],
    net: &Lpips<B>,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Option<f64>>> {
    // An input is known by its path under the seed folder: `<from>_to_<to>/<key>`.
    let relative: Vec<PathBuf> = items
        .iter()
        .map(|(p, _)| p.strip_prefix(scored).unwrap_or(p).to_path_buf())
        .collect();
    let present: Vec<usize> = (0..items.len())
        .filter(|&i| {
            seeds
                .iter()
                .all(|(_, dir)| dir.join(&relative[i]).is_file())
        })
        .collect();
    let mut out = vec![None; items.len()];
    report_scored("score diversity", 0, present.len());
    for r in chunks(present.len(), batch) {
        let end = r.end;
        let idx = &present[r];
        let mut samples = Vec::with_capacity(seeds.len());
        for (_, dir) in seeds {
            let images = idx
                .iter()
                .map(|&i| load(png(&dir.join(&relative[i]), "cf")))
                .collect::<Result<Vec<DynamicImage>>>()?;
            let resize = lpips_resize(&images);
            samples.push(images_to_tensor::<B>(
                &images,
                ColorMode::Rgb,
                resize,
                device,
            )?);
        }
        for (&i, d) in idx.iter().zip(diversity(net, &samples)?) {
            out[i] = Some(d);
        }
        report_scored("score diversity", end, present.len());
    }
    Ok(out)
}

fn scope_metrics(
    items: &[(PathBuf, ItemResult)],
    idx: &[usize],
    flipped: &[bool],
    per: &PerItem,
    options: &EvaluateOptions,
    direction: Option<&str>,
    notes: &mut Vec<Note>,
) -> Metrics {
    let inputs = idx.len();
    let n_flipped = idx.iter().filter(|&&i| flipped[i]).count();
    let of = |f: fn(&ItemResult) -> f64| mean(idx.iter().map(|&i| f(&items[i].1))).unwrap_or(0.0);
    let mut note = |metric: Metric, reason: String| {
        notes.push(Note {
            metric,
            direction: direction.map(str::to_string),
            reason,
        })
    };
    let av = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| averaged(v, idx, flipped));
    let similarity = per.similarity.as_ref().and_then(|v| {
        let values = |keep: &dyn Fn(usize) -> bool| -> Vec<f64> {
            idx.iter().filter(|&&i| keep(i)).map(|&i| v[i]).collect()
        };
        Some(Similarity {
            all: summarize(&values(&|_| true), SIMILARITY_THRESHOLD).ok()?,
            flipped: summarize(&values(&|i| flipped[i]), SIMILARITY_THRESHOLD).ok(),
        })
    });
    let (mut fid_value, mut sfid_value) = (None, None);
    if let Some((fa, fb, d)) = &per.features {
        let rows = |f: &[f32], keep: &dyn Fn(usize) -> bool| -> Result<Features> {
            let chosen: Vec<usize> = idx.iter().copied().filter(|&i| keep(i)).collect();
            let values: Vec<f32> = chosen
                .iter()
                .flat_map(|&i| f[i * d..(i + 1) * d].iter().copied())
                .collect();
            Features::new(&values, chosen.len(), *d)
        };
        let real = rows(fa, &|_| true);
        let real_flipped = rows(fa, &|i| flipped[i]);
        let cf_flipped = rows(fb, &|i| flipped[i]);
        match (&real, &cf_flipped) {
            (Ok(real), Ok(cf)) => match fid(real, cf) {
                Ok(v) => fid_value = Some(v),
                Err(e) => note(Metric::Fid, e.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => note(Metric::Fid, e.to_string()),
        }
        match (&real_flipped, &cf_flipped) {
            (Ok(real), Ok(cf)) => match split_fid(real, cf, options.sfid_repeats, options.seed) {
                Ok(v) => sfid_value = Some(v),
                Err(e) => note(Metric::Sfid, e.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => note(Metric::Sfid, e.to_string()),
        }
    }
    let diversity = per.diversity.as_ref().and_then(|(v, seeds)| {
        let present: Vec<f64> = idx.iter().filter_map(|&i| v[i]).collect();
        Some(Diversity {
            mean: mean(present.iter().copied())?,
            inputs: present.len(),
            seeds: *seeds,
        })
    });
    if per.diversity.is_some() && diversity.is_none() {
        note(
            Metric::Diversity,
            "no input is present in every seed folder".into(),
        );
    }
    Metrics {
        inputs,
        flipped: n_flipped,
        success_ratio: n_flipped as f64 / inputs.max(1) as f64,
        lpips: av(&per.lpips),
        fid: fid_value,
        sfid: sfid_value,
        cout: av(&per.cout),
        mnac: av(&per.mnac),
        similarity,
        diversity,
        changed_fraction: of(|r| r.changed_fraction),
        mean_abs_change: of(|r| r.mean_abs_change),
        denoiser_calls: of(|r| r.denoiser_calls as f64),
        classifier_calls: of(|r| r.classifier_calls as f64),
    }
}
