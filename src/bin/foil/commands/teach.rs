//! `foil teach`: teaching material from a results folder ([`foil::teach::build_study`]), with
//! DIFFusion lambda sweeps through the run's decoder when it is given.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use foil::core::Result;
use foil::diffusion::Editor;
use foil::embed::ClassStats;
use foil::pipeline;
use foil::teach::{StudySettings, Sweeper, TeachOptions, build_study};

use super::{DataArgs, EditArgs};
use crate::device::{DeviceArg, with_backend};

/// Time each frame of a transition's GIF is shown, in milliseconds.
const GIF_FRAME_MS: u32 = 150;

/// Side, in CSS pixels, at which the study page shows the (small) images.
const DISPLAY_PX: u32 = 160;

/// `foil teach` arguments.
#[derive(Debug, Args)]
pub struct TeachArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Results folder (`foil diffusion` or `foil maskdime`).
    #[arg(long, default_value = "results/diffusion")]
    results: PathBuf,
    /// Decoder folder: DIFFusion results get true lambda sweeps (else cross-fades). Pass the
    /// run's --steps, --lambda, --guidance and --seed if they were not the defaults.
    #[arg(long)]
    decoder: Option<PathBuf>,
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
    /// The DIFFusion run's settings (for the lambda sweeps).
    #[command(flatten)]
    edit: EditArgs,
    /// Seed of the run's inversion noise and of the quiz.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (default: <results>/study).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TeachArgs {
    /// The gallery's, quiz's and page's settings.
    fn options(&self) -> TeachOptions {
        let classes = self.data.classes();
        TeachOptions {
            frames: self.frames,
            max_items: self.max_items,
            quiz: self.quiz,
            delay_ms: GIF_FRAME_MS,
            seed: self.seed,
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
    let options = args.options();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.results.join("study"));
    let (_, test) = args.data.load()?;
    let summary = with_backend!(device, |B, dev| {
        type I = <B as AutodiffBackend>::InnerBackend;
        match &args.decoder {
            Some(dir) => {
                let (spec, decoder) = pipeline::load_decoder::<I>(dir, &dev)?;
                let stats = ClassStats::load(dir.join(pipeline::STATS_FILE))?;
                let editor = Editor::new(
                    &decoder,
                    &spec.schedule()?,
                    &stats,
                    args.edit.config()?,
                    &dev,
                )?;
                let sweeper = Sweeper {
                    editor: &editor,
                    seed: args.seed,
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
