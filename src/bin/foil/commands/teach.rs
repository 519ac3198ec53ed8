//! `foil teach`: teaching material from a results folder ([`foil::teach::build_study`]), with
//! DIFFusion lambda sweeps through the run's decoder. The run's settings (data, classes, seed,
//! decoder, DIFFusion's steps, lambda and guidance) come from the folder's run manifest
//! (`foil-run.json`); flags given override them, and are needed only for folders written
//! before foil recorded manifests.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use foil::core::{Error, Result};
use foil::data::Source;
use foil::diffusion::Editor;
use foil::embed::ClassStats;
use foil::pipeline;
use foil::run::manifest::MANIFEST_FILE;
use foil::teach::{StudySettings, Sweeper, TeachOptions, build_study};

use super::manifest::RecordedRun;
use super::{ClassPair, DataArgs, EditArgs, parse_pair};
use crate::device::{DeviceArg, with_backend};

/// Time each frame of a transition's GIF is shown, in milliseconds.
const GIF_FRAME_MS: u32 = 150;

/// Side, in CSS pixels, at which the study page shows the (small) images.
const DISPLAY_PX: u32 = 160;

/// Default edit strength without a manifest (`foil diffusion`'s `--lambda` default).
const DEFAULT_LAMBDA: f64 = 2.0;
/// Default regeneration guidance without a manifest (`foil diffusion`'s `--guidance` default).
const DEFAULT_GUIDANCE: f64 = 4.0;

/// `foil teach` arguments.
#[derive(Debug, Args)]
pub struct TeachArgs {
    /// Results folder (`foil diffusion` or `foil maskdime`); the run's settings are read from
    /// its run manifest (foil-run.json).
    #[arg(long, default_value = "results/diffusion")]
    results: PathBuf,
    /// Dataset (default: the run's, from the manifest; without one, fashion-mnist):
    /// `fashion-mnist[:DIR]`, `mnist-json:DIR`, `kiki-bouba[:PER_CLASS:SIZE]` or a folder.
    #[arg(long, value_parser = str::parse::<Source>)]
    data: Option<Source>,
    /// The two classes, `A,B` (default: the run's; needed for folders without a manifest).
    #[arg(long, value_parser = parse_pair)]
    classes: Option<ClassPair>,
    /// The run's `--images` folder (default: the run's).
    #[arg(long, value_name = "DIR", requires_all = ["from", "to"], conflicts_with = "classes")]
    images: Option<PathBuf>,
    /// With `--images`: the class of the images.
    #[arg(long, requires = "images")]
    from: Option<String>,
    /// With `--images`: the class they were explained towards.
    #[arg(long, requires = "images")]
    to: Option<String>,
    /// Share of each class held out for testing (default: the run's, else 0.2).
    #[arg(long)]
    test_fraction: Option<f64>,
    /// Seed of the split (default: the run's, else 0).
    #[arg(long)]
    split_seed: Option<u64>,
    /// Decoder folder: DIFFusion results get true lambda sweeps (else cross-fades). Default:
    /// the run's foil decoder folder, from the manifest, when it is there.
    #[arg(long, conflicts_with = "cross_fade")]
    decoder: Option<PathBuf>,
    /// Cross-fades even where the run's decoder is known (no lambda sweeps; faster).
    #[arg(long)]
    cross_fade: bool,
    /// Frames per transition (original included).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// At most this many transitions in the gallery.
    #[arg(long, default_value_t = 24)]
    max_items: usize,
    /// Quiz images, half per class, unseen test images.
    #[arg(long, default_value_t = 20)]
    quiz: usize,
    /// Study time before the quiz, in seconds.
    #[arg(long, default_value_t = 180)]
    study_seconds: u32,
    /// Page title (default: "<A> or <B>?").
    #[arg(long)]
    title: Option<String>,
    /// The DIFFusion run's inversion and regeneration steps (default: the run's, else 50).
    #[arg(long = "steps", value_name = "STEPS")]
    sampling_steps: Option<usize>,
    /// The DIFFusion run's edit strengths (default: the run's, else 2).
    #[arg(long, value_delimiter = ',')]
    lambda: Option<Vec<f64>>,
    /// The DIFFusion run's regeneration guidance (default: the run's, else 4).
    #[arg(long)]
    guidance: Option<f64>,
    /// Seed of the run's inversion noise and of the quiz (default: the run's, else 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder (default: <results>/study).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The run's settings: the flags given, else the manifest's, else the defaults.
struct Resolved {
    data: DataArgs,
    edit: EditArgs,
    seed: u64,
    decoder: Option<PathBuf>,
}

impl TeachArgs {
    /// The run's settings, the manifest's (if any) under the flags given.
    fn resolve(&self) -> Result<Resolved> {
        let recorded = RecordedRun::read(&self.results)?;
        let run = recorded.clone().unwrap_or_default();
        if let Some(run) = &recorded {
            tracing::info!(
                "run settings from {}: data {}, classes {}, seed {}{}",
                self.results.join(MANIFEST_FILE).display(),
                run.source.as_deref().unwrap_or("?"),
                run.classes.as_ref().map_or("?".into(), |c| c.join(",")),
                run.seed,
                match (&run.steps, &run.lambdas, &run.guidance) {
                    (Some(steps), Some(lambdas), Some(guidance)) => format!(
                        ", steps {steps}, lambda {lambdas:?}, guidance {guidance}{}",
                        run.decoder
                            .as_ref()
                            .map_or(String::new(), |d| format!(", decoder {d}"))
                    ),
                    _ => String::new(),
                }
            );
        }
        let source = match (&self.data, &run.source) {
            (Some(source), _) => source.clone(),
            (None, Some(spec)) => spec.parse()?,
            (None, None) => Source::FashionMnist(None),
        };
        let recorded_images = run.images.as_ref().map(PathBuf::from);
        let images = self
            .images
            .clone()
            .or(recorded_images.filter(|_| self.classes.is_none()));
        let (classes, from, to) = match (&self.classes, &images, &self.from, &self.to) {
            (Some(pair), ..) => (Some(pair.clone()), None, None),
            (None, Some(_), Some(from), Some(to)) => (None, Some(from.clone()), Some(to.clone())),
            (None, Some(_), ..) => match &run.classes {
                Some([from, to]) => (None, Some(from.clone()), Some(to.clone())),
                None => (None, None, None),
            },
            (None, None, ..) => (run.classes.clone().map(ClassPair), None, None),
        };
        if classes.is_none() && (from.is_none() || to.is_none()) {
            return Err(Error::Empty {
                what: format!(
                    "the class pair of {} (no --classes, and no run manifest {MANIFEST_FILE}                      recording it)",
                    self.results.display()
                )
                .into(),
                hint: "pass the run's --data and --classes A,B (folders written before foil                        recorded run manifests)"
                    .into(),
            });
        }
        let data = DataArgs {
            data: source,
            classes,
            images,
            from,
            to,
            test_fraction: self.test_fraction.or(run.test_fraction).unwrap_or(0.2),
            split_seed: self.split_seed.or(run.split_seed).unwrap_or(0),
            train_per_class: run.train_per_class,
        };
        let edit = EditArgs {
            sampling_steps: self.sampling_steps.or(run.steps),
            lambda: self
                .lambda
                .clone()
                .or(run.lambdas.clone())
                .unwrap_or_else(|| vec![DEFAULT_LAMBDA]),
            guidance: self.guidance.or(run.guidance).unwrap_or(DEFAULT_GUIDANCE),
        };
        let decoder = match (&self.decoder, self.cross_fade) {
            (Some(dir), _) => Some(dir.clone()),
            (None, true) => None,
            (None, false) => run.decoder.as_ref().map(PathBuf::from).filter(|d| {
                let there = d.is_dir();
                if !there {
                    tracing::warn!(
                        "the run's decoder {} is not there: cross-fades instead of lambda sweeps",
                        d.display()
                    );
                }
                there
            }),
        };
        Ok(Resolved {
            data,
            edit,
            seed: self.seed.unwrap_or(run.seed),
            decoder,
        })
    }

    /// The gallery's, quiz's and page's settings.
    fn options(&self, run: &Resolved) -> TeachOptions {
        let classes = run.data.classes();
        TeachOptions {
            frames: self.frames,
            max_items: self.max_items,
            quiz: self.quiz,
            delay_ms: GIF_FRAME_MS,
            seed: run.seed,
            page: StudySettings {
                title: self
                    .title
                    .clone()
                    .unwrap_or_else(|| format!("{} or {}?", classes[0], classes[1])),
                classes,
                study_seconds: self.study_seconds,
                display_px: DISPLAY_PX,
            },
        }
    }
}

/// `foil teach` on `device`.
pub fn run(args: TeachArgs, device: DeviceArg) -> Result<()> {
    let run = args.resolve()?;
    let options = args.options(&run);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.results.join("study"));
    let (_, test) = run.data.load()?;
    let summary = with_backend!(device, |B, dev| {
        type I = <B as AutodiffBackend>::InnerBackend;
        match &run.decoder {
            Some(dir) => {
                let (spec, decoder) = pipeline::load_decoder::<I>(dir, &dev)?;
                let stats = ClassStats::load(dir.join(pipeline::STATS_FILE))?;
                let editor = Editor::new(
                    &decoder,
                    &spec.schedule()?,
                    &stats,
                    run.edit.config()?,
                    &dev,
                )?;
                let sweeper = Sweeper {
                    editor: &editor,
                    seed: run.seed,
                };
                build_study::<I>(&args.results, &test, &options, Some(sweeper), &out, &dev)
            }
            None => build_study::<I>(&args.results, &test, &options, None, &out, &dev),
        }
    })?;
    println!(
        "study page: {} ({} transitions, {} lambda sweeps, {} quiz images)",
        summary.page.display(),
        summary.items,
        summary.swept,
        summary.quiz
    );
    Ok(())
}
