//! Teaching material from counterfactual runs: per image a transition strip, an animated GIF
//! and a difference heat map, and a self-contained HTML study page (one folder, no server, no
//! network) with a gallery of transitions scrubbed by a slider and a quiz that follows
//! DIFFusion's user-study protocol (study for a set time, then label unseen images evenly split
//! between the classes; the score is shown and the answers export as JSON).

use std::path::{Path, PathBuf};

use foil_core::image_io::write_atomic;
use foil_core::{Error, Result};
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, DynamicImage, Frame, GrayImage, Rgb, RgbImage, RgbaImage};
use serde::{Deserialize, Serialize};

use foil_run::{change_map, grid, mask_share, save_gray_png, save_png};

/// How a transition's frames were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrameSource {
    /// DIFFusion regenerations along the edit direction, lambda from 0 to its final value.
    LambdaSweep,
    /// A pixel cross-fade from the original to the counterfactual (any method).
    CrossFade,
}

/// One input's transition: the original, intermediate frames and the counterfactual.
#[derive(Debug, Clone)]
pub struct Transition {
    /// A file-name-safe key (unique in a study).
    pub key: String,
    /// Class name of the input.
    pub from: String,
    /// Class name of the counterfactual's target.
    pub to: String,
    /// Whether the oracle gives the target for the counterfactual.
    pub flipped: bool,
    /// The frames, original first and counterfactual last (at least two, same size).
    pub frames: Vec<RgbImage>,
    /// How the frames were made.
    pub source: FrameSource,
    /// The method's masks shown beside it (MaskDiME's `M1` and `M2`, FastDiME's `M1`); empty
    /// for methods without masks.
    pub masks: Vec<Mask>,
}

/// A mask of an explanation: where the method let the image change (white).
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Its short name (`M1`, `M2`), also the file name's stem in lower case.
    pub name: String,
    /// The mask, the frames' size.
    pub image: GrayImage,
}

impl Transition {
    /// The same transition with `masks` shown beside it.
    pub fn with_masks(mut self, masks: Vec<Mask>) -> Self {
        self.masks = masks;
        self
    }

    /// `count` frames cross-fading `orig` into `cf` (`count >= 2`).
    pub fn cross_fade(
        key: impl Into<String>,
        (from, to): (&str, &str),
        flipped: bool,
        orig: &RgbImage,
        cf: &RgbImage,
        count: usize,
    ) -> Result<Self> {
        if count < 2 {
            return Err(Error::out_of_range("transition frames", ">= 2", count));
        }
        if orig.dimensions() != cf.dimensions() {
            return Err(Error::shape(
                "counterfactual",
                format!("{:?} (the original's size)", orig.dimensions()),
                format!("{:?}", cf.dimensions()),
            ));
        }
        let frames = (0..count)
            .map(|i| {
                let w = i as f32 / (count - 1) as f32;
                RgbImage::from_fn(orig.width(), orig.height(), |x, y| {
                    let (a, b) = (orig.get_pixel(x, y), cf.get_pixel(x, y));
                    Rgb(std::array::from_fn(|c| {
                        (a[c] as f32 * (1.0 - w) + b[c] as f32 * w).round() as u8
                    }))
                })
            })
            .collect();
        Ok(Self {
            key: key.into(),
            from: from.into(),
            to: to.into(),
            flipped,
            frames,
            source: FrameSource::CrossFade,
            masks: Vec::new(),
        })
    }

    fn check(&self) -> Result<()> {
        if self.frames.len() < 2 {
            return Err(Error::out_of_range(
                format!(
                    "frames of transition {:?} (the original, ..., the counterfactual)",
                    self.key
                ),
                ">= 2",
                self.frames.len(),
            ));
        }
        let first = &self.frames[0];
        if let Some(f) = self
            .frames
            .iter()
            .find(|f| f.dimensions() != first.dimensions())
        {
            return Err(Error::shape(
                format!("frames of transition {:?}", self.key),
                format!("{:?} each", first.dimensions()),
                format!("{:?}", f.dimensions()),
            ));
        }
        if let Some(m) = self
            .masks
            .iter()
            .find(|m| m.image.dimensions() != first.dimensions())
        {
            return Err(Error::shape(
                format!("mask {} of transition {:?}", m.name, self.key),
                format!("{:?} (the frames' size)", first.dimensions()),
                format!("{:?}", m.image.dimensions()),
            ));
        }
        if let Some(m) = self.masks.iter().find(|m| {
            m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return Err(Error::format(
                format!("mask name of transition {:?}", self.key),
                format!("expected letters, digits, '-' or '_', found {:?}", m.name),
            ));
        }
        Ok(())
    }
}

/// Where [`render_transition`] wrote one transition, relative to the study folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedItem {
    /// The transition's key.
    pub key: String,
    /// Class of the input.
    pub from: String,
    /// Target class.
    pub to: String,
    /// Whether the oracle gives the target for the counterfactual.
    pub flipped: bool,
    /// How the frames were made.
    pub source: FrameSource,
    /// The frames, original first.
    pub frames: Vec<String>,
    /// The animated GIF (forth and back, looping).
    pub gif: String,
    /// Every frame side by side, then the heat map.
    pub strip: String,
    /// The change heat map between the original and the counterfactual.
    pub heat: String,
    /// The method's masks (MaskDiME's `M1`, `M2`), if it has any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<RenderedMask>,
}

/// Where [`render_transition`] wrote one mask, relative to the study folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedMask {
    /// Its short name (`M1`, `M2`).
    pub name: String,
    /// The gray PNG (white: where the image could change).
    pub image: String,
    /// Share of the pixels inside it.
    pub share: f64,
}

/// Renders `t` under `root/items/<key>/`: `fNN.png` frames, `transition.gif` (each frame
/// `delay_ms`, the last held three times as long, then back), `strip.png` (the frames, the
/// heat map, then the masks), `heat.png` and a gray `<name>.png` per mask (`m1.png`), each
/// written atomically.
pub fn render_transition(root: &Path, t: &Transition, delay_ms: u32) -> Result<RenderedItem> {
    t.check()?;
    let rel = PathBuf::from("items").join(&t.key);
    let dir = root.join(&rel);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut frames = Vec::new();
    for (i, f) in t.frames.iter().enumerate() {
        let name = format!("f{i:02}.png");
        save_png(&dir.join(&name), f)?;
        frames.push(rel.join(name));
    }
    let (orig, cf) = (&t.frames[0], &t.frames[t.frames.len() - 1]);
    let (_, _, heat) = change_map(orig, cf);
    save_png(&dir.join("heat.png"), &heat)?;
    let mut masks = Vec::new();
    let mut mask_panels = Vec::new();
    for m in &t.masks {
        let name = format!("{}.png", m.name.to_lowercase());
        save_gray_png(&dir.join(&name), &m.image)?;
        masks.push((m, rel.join(name)));
        mask_panels.push(DynamicImage::ImageLuma8(m.image.clone()).to_rgb8());
    }
    let mut strip_parts: Vec<&RgbImage> = t.frames.iter().collect();
    strip_parts.push(&heat);
    strip_parts.extend(mask_panels.iter());
    save_png(&dir.join("strip.png"), &grid(&strip_parts)?)?;
    write_gif(&dir.join("transition.gif"), &t.frames, delay_ms)?;
    let s = |p: PathBuf| p.to_string_lossy().replace('\\', "/");
    let masks = masks
        .into_iter()
        .map(|(m, path)| RenderedMask {
            name: m.name.clone(),
            image: s(path),
            share: mask_share(&m.image),
        })
        .collect();
    Ok(RenderedItem {
        key: t.key.clone(),
        from: t.from.clone(),
        to: t.to.clone(),
        flipped: t.flipped,
        source: t.source,
        frames: frames.into_iter().map(s).collect(),
        gif: s(rel.join("transition.gif")),
        strip: s(rel.join("strip.png")),
        heat: s(rel.join("heat.png")),
        masks,
    })
}

/// One image of the quiz with its true class.
#[derive(Debug, Clone)]
pub struct QuizImage {
    /// The image.
    pub image: RgbImage,
    /// Its true class name.
    pub class: String,
}

/// Settings of the study page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySettings {
    /// Page title.
    pub title: String,
    /// The two class names, in button order.
    pub classes: [String; 2],
    /// Study time before the quiz, in seconds (the paper's study: a few minutes).
    pub study_seconds: u32,
    /// Side, in CSS pixels, at which the (small) images are shown (pixelated).
    pub display_px: u32,
}

/// What the page embeds (also written as `study.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyData {
    /// Format tag.
    pub format: String,
    /// The settings.
    pub settings: StudySettings,
    /// The gallery.
    pub items: Vec<RenderedItem>,
    /// The quiz: image paths and true classes, in the order asked.
    pub quiz: Vec<QuizEntry>,
}

/// One quiz question as the page sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuizEntry {
    /// Image path relative to the study folder.
    pub image: String,
    /// The true class.
    pub class: String,
}

const PAGE: &str = include_str!("page.html");
const FORMAT: &str = "foil study 1";

/// Writes the study page `root/index.html` (data inline, so it opens from the file system with
/// no server) and `root/study.json`, with the quiz images under `root/quiz/`. The quiz must be
/// evenly split between the two classes and every item's classes must be the settings' ones.
pub fn write_study_page(
    root: &Path,
    settings: &StudySettings,
    items: Vec<RenderedItem>,
    quiz: &[QuizImage],
) -> Result<PathBuf> {
    for it in &items {
        for class in [&it.from, &it.to] {
            if !settings.classes.contains(class) {
                return Err(Error::format(
                    format!("study item {:?}", it.key),
                    format!(
                        "class {class:?} is not one of the study's {:?}",
                        settings.classes
                    ),
                ));
            }
        }
    }
    let counts = settings
        .classes
        .clone()
        .map(|c| quiz.iter().filter(|q| q.class == c).count());
    if counts[0] != counts[1] || counts[0] + counts[1] != quiz.len() {
        return Err(Error::format(
            "quiz images",
            format!(
                "evenly split between {:?}; found {} and {} (and {} of other classes)",
                settings.classes,
                counts[0],
                counts[1],
                quiz.len() - counts[0] - counts[1]
            ),
        ));
    }
    let qdir = root.join("quiz");
    std::fs::create_dir_all(&qdir).map_err(|e| Error::io(&qdir, e))?;
    let mut entries = Vec::new();
    for (i, q) in quiz.iter().enumerate() {
        let name = format!("q{i:03}.png");
        save_png(&qdir.join(&name), &q.image)?;
        entries.push(QuizEntry {
            image: format!("quiz/{name}"),
            class: q.class.clone(),
        });
    }
    let data = StudyData {
        format: FORMAT.into(),
        settings: settings.clone(),
        items,
        quiz: entries,
    };
    let json = serde_json::to_string(&data).map_err(|e| Error::format("study data", e))?;
    write_atomic(&root.join("study.json"), json.as_bytes())?;
    // Inline JSON: "</" must not close the script element.
    let inline = json.replace("</", "<\\/");
    let page = PAGE
        .replace("{{TITLE}}", &html_escape(&settings.title))
        .replace("{{DATA}}", &inline);
    let path = root.join("index.html");
    write_atomic(&path, page.as_bytes())?;
    Ok(path)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A looping GIF: the frames forth (the last held three times as long) and back.
fn write_gif(path: &Path, frames: &[RgbImage], delay_ms: u32) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| Error::format(path.display().to_string(), e))?;
        let last = frames.len() - 1;
        let order = (0..=last).chain((1..last).rev());
        for i in order {
            let hold = if i == last || i == 0 { 3 } else { 1 };
            let rgba: RgbaImage = DynamicImage::ImageRgb8(frames[i].clone()).to_rgba8();
            let frame =
                Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(delay_ms * hold, 1));
            encoder
                .encode_frame(frame)
                .map_err(|e| Error::format(path.display().to_string(), e))?;
        }
    }
    write_atomic(path, &bytes)
}

/// Settings of [`build_study`].
#[derive(Debug, Clone, PartialEq)]
pub struct TeachOptions {
    /// Frames per transition (original included), at least 2.
    pub frames: usize,
    /// At most this many transitions in the gallery (the directions in turn, by key).
    pub max_items: usize,
    /// Quiz images (even: half per class), unseen ones from the data.
    pub quiz: usize,
    /// GIF frame time.
    pub delay_ms: u32,
    /// Seed of the quiz's choice and order.
    pub seed: u64,
    /// The page's settings (title, classes, study time, display size).
    pub page: StudySettings,
}

/// What [`build_study`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySummary {
    /// The page.
    pub page: PathBuf,
    /// Transitions rendered.
    pub items: usize,
    /// Of these, made by a DIFFusion lambda sweep (the rest cross-fade).
    pub swept: usize,
    /// Quiz images.
    pub quiz: usize,
}

/// DIFFusion's editing engine and the run's seed, to render true lambda sweeps instead of
/// cross-fades.
pub struct Sweeper<'a, B: burn::tensor::backend::Backend> {
    /// The engine the run used (decoder, statistics, steps, lambda, guidance).
    pub editor: &'a foil_diffusion::Editor<'a, B, crate::pipeline::EmbeddingDecoder<B>>,
    /// The run's seed (of the inversion noise).
    pub seed: u64,
}

/// Builds a study folder `out` from a results folder (`foil maskdime` or `foil diffusion`):
/// one transition per result (a DIFFusion lambda sweep at the `T_skip` that flipped it when
/// `sweeper` is given and the result has one, else a cross-fade), and a quiz of `quiz` images
/// of `data` that are not in the results, half per class, in a seeded order. Each rendered
/// transition is reported to [`foil_core::progress`].
pub fn build_study<B: burn::tensor::backend::Backend>(
    results: &Path,
    data: &foil_data::Dataset,
    options: &TeachOptions,
    sweeper: Option<Sweeper<'_, B>>,
    out: &Path,
    device: &B::Device,
) -> Result<StudySummary> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    if !options.quiz.is_multiple_of(2) {
        return Err(Error::out_of_range(
            "quiz images",
            "an even number (half per class)",
            options.quiz,
        ));
    }
    let found = foil_run::read_results(results)?;
    if found.is_empty() {
        return Err(Error::Empty {
            what: format!("results under {}", results.display()).into(),
            hint: "run `foil diffusion` or `foil maskdime` first".into(),
        });
    }
    // Both directions in turn, so a short gallery shows each. Inputs the oracle misclassified
    // are left out: their target is their own label, so they teach no difference.
    let mut by_dir: std::collections::BTreeMap<PathBuf, Vec<usize>> = Default::default();
    for (i, (path, r)) in found.iter().enumerate() {
        if r.predicted != r.from {
            continue;
        }
        by_dir
            .entry(path.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(i);
    }
    let mut order = Vec::new();
    for round in 0.. {
        let before = order.len();
        order.extend(by_dir.values().filter_map(|v| v.get(round).copied()));
        if order.len() == before {
            break;
        }
    }
    let mut items = Vec::new();
    let mut swept = 0;
    let mut used = std::collections::HashSet::new();
    let mut size = None;
    let total = order.len().min(options.max_items);
    let tick = |done| foil_core::progress::Tick::new("teach", "transitions", done, total);
    foil_core::progress::report(&tick(0));
    for (path, r) in order.iter().map(|&i| &found[i]).take(options.max_items) {
        used.insert(r.source.clone());
        let open = |ext: &str| -> Result<RgbImage> {
            let p = path.with_extension(ext);
            Ok(image::open(&p)
                .map_err(|e| Error::format(p.display().to_string(), e))?
                .to_rgb8())
        };
        let (orig, cf) = (open("orig.png")?, open("cf.png")?);
        size.get_or_insert(orig.width());
        let dir_name = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = format!("{dir_name}__{stem}");
        let (from, to) = (r.classes[r.from].as_str(), r.classes[r.to].as_str());
        // DIFFusion edits away from the label, whatever the oracle predicted (its target).
        let away = r.classes[1 - r.from].as_str();
        let mut masks = Vec::new();
        for (name, file) in [("M1", &r.m1), ("M2", &r.m2)] {
            if let Some(file) = file {
                let p = path.with_file_name(&file.file);
                let image = image::open(&p)
                    .map_err(|e| Error::format(p.display().to_string(), e))?
                    .to_luma8();
                masks.push(Mask {
                    name: name.into(),
                    image,
                });
            }
        }
        let transition = match (&sweeper, r.t_skip) {
            (Some(sw), Some(t_skip)) => {
                let x = foil_core::image_io::images_to_tensor::<B>(
                    &[DynamicImage::ImageRgb8(orig.clone())],
                    foil_core::image_io::ColorMode::Rgb,
                    foil_core::image_io::Resize::Keep,
                    device,
                )?;
                let config = sw.editor.config();
                let skip = foil_diffusion::skip_steps(config.steps, t_skip);
                // Up to the strength that flipped it (a ladder's later rung, maybe).
                let top = r.lambda.unwrap_or(config.search.lambda);
                let lambdas: Vec<f64> = (1..options.frames)
                    .map(|k| top * k as f64 / (options.frames - 1) as f64)
                    .collect();
                let outs = sw.editor.sweep(x, (from, away), skip, &lambdas, sw.seed)?;
                let mut frames = vec![orig.clone()];
                for o in outs {
                    frames.push(foil_core::image_io::tensor_to_images(&o)?[0].to_rgb8());
                }
                swept += 1;
                Transition {
                    key,
                    from: from.into(),
                    to: to.into(),
                    flipped: r.flipped,
                    frames,
                    source: FrameSource::LambdaSweep,
                    masks: Vec::new(),
                }
            }
            _ => Transition::cross_fade(key, (from, to), r.flipped, &orig, &cf, options.frames)?,
        };
        let transition = transition.with_masks(masks);
        items.push(render_transition(out, &transition, options.delay_ms)?);
        foil_core::progress::report(&tick(items.len()));
    }
    // Unseen quiz images, half per class, in a seeded order, at the studied images' size.
    let size = size.unwrap_or(32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
    let mut chosen = Vec::new();
    for class in &options.page.classes {
        let label = data.class_index(class)?;
        let mut pool: Vec<usize> = (0..data.len())
            .filter(|&i| data.items()[i].label == label && !used.contains(&data.items()[i].source))
            .collect();
        pool.shuffle(&mut rng);
        if pool.len() < options.quiz / 2 {
            return Err(Error::out_of_range(
                format!("quiz images of {class:?}"),
                format!("at most the {} unseen ones", pool.len()),
                options.quiz / 2,
            ));
        }
        chosen.extend(pool.into_iter().take(options.quiz / 2));
    }
    chosen.shuffle(&mut rng);
    let (mode, resize) = foil_core::image_io::image_mode(size);
    let mut quiz = Vec::with_capacity(chosen.len());
    for chunk in chosen.chunks(64) {
        let (x, labels) = data.tensors::<B>(chunk, mode, resize, device)?;
        for (img, l) in foil_core::image_io::tensor_to_images(&x)?
            .into_iter()
            .zip(labels)
        {
            quiz.push(QuizImage {
                image: img.to_rgb8(),
                class: data.class_names()[l].clone(),
            });
        }
    }
    let n_items = items.len();
    let page = write_study_page(out, &options.page, items, &quiz)?;
    Ok(StudySummary {
        page,
        items: n_items,
        swept,
        quiz: quiz.len(),
    })
}
