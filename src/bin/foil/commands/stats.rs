//! `foil stats`: the class means of an image encoder's embeddings over the training images
//! (DIFFusion's edit directions): a foil decoder's encoder (`foil train decoder|lora` run it at
//! the end) or the published CLIP image encoder (`--image-encoder DIR`). The file is the cache:
//! a rerun with the same encoder and the same number of images per class keeps it.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use foil::core::{ImageEncoder, Result};
use foil::embed::ClassStats;
use foil::models::hub;
use foil::pipeline;

use super::DataArgs;
use crate::device::{DeviceArg, with_backend};

/// Images the encoder embeds per call.
const STATS_BATCH_SIZE: usize = 64;

/// `foil stats` arguments.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Decoder folder (`foil train decoder`) whose encoder embeds the images.
    #[arg(long, default_value = "runs/decoder")]
    decoder: PathBuf,
    /// The published CLIP image encoder instead: the Kandinsky 2.2 prior folder (with
    /// image_encoder/ and image_processor/) or a transformers CLIP vision folder. Needs --out.
    #[arg(long, value_name = "DIR", conflicts_with = "decoder", requires = "out")]
    image_encoder: Option<PathBuf>,
    /// With --image-encoder: side the images are loaded at before the encoder's own
    /// preprocessing (as `foil diffusion --image-size`).
    #[arg(long, default_value_t = 512, requires = "image_encoder")]
    image_size: u32,
    /// Recompute even if the output holds statistics of the same encoder and image counts.
    #[arg(long)]
    force: bool,
    /// Output file (default: <decoder>/stats.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `foil stats` on `device`.
pub fn run(args: StatsArgs, device: DeviceArg) -> Result<()> {
    match &args.image_encoder {
        Some(encoder) => {
            let path = args.out.clone().unwrap_or_default();
            let (train, _) = args.data.load()?;
            let stats = with_backend!(device, |B, dev| {
                type I = <B as AutodiffBackend>::InnerBackend;
                let clip = hub::load_clip_vision::<I>(pipeline::image_encoder_dir(encoder), &dev)?;
                match cached(&path, &clip.identity(), &train).filter(|_| !args.force) {
                    Some(stats) => {
                        println!("class statistics in {} are up to date", path.display());
                        Ok(stats)
                    }
                    None => pipeline::write_class_stats(
                        &clip,
                        &train,
                        args.image_size,
                        STATS_BATCH_SIZE,
                        &path,
                        &dev,
                    ),
                }
            })?;
            report(&args.data, &stats, train.len(), &path)
        }
        None => class_stats(&args.data, &args.decoder, args.out.as_deref(), device),
    }
}

/// The statistics at `path` if they are of `encoder` over as many images per class as `data`.
fn cached(path: &Path, encoder: &str, data: &foil::data::Dataset) -> Option<ClassStats> {
    let stats = ClassStats::load(path).ok()?;
    (stats.encoder() == encoder
        && stats.names() == data.class_names()
        && stats.counts() == data.counts().as_slice())
    .then_some(stats)
}

/// Writes the class statistics of the decoder folder `decoder`'s encoder over the training
/// images of `data` to `out` (default: `<decoder>/stats.json`) and prints a line.
pub fn class_stats(
    data: &DataArgs,
    decoder: &Path,
    out: Option<&Path>,
    device: DeviceArg,
) -> Result<()> {
    let path = out.map_or_else(|| decoder.join(pipeline::STATS_FILE), Path::to_path_buf);
    let (train, _) = data.load()?;
    let stats = with_backend!(device, |B, dev| {
        let (spec, net) =
            pipeline::load_decoder::<<B as AutodiffBackend>::InnerBackend>(decoder, &dev)?;
        pipeline::write_class_stats(&net, &train, spec.image_size, STATS_BATCH_SIZE, &path, &dev)
    })?;
    report(data, &stats, train.len(), &path)
}

/// The line printed once statistics are written.
fn report(data: &DataArgs, stats: &ClassStats, images: usize, path: &Path) -> Result<()> {
    let [a, b] = data.classes();
    let direction = stats.direction(&a, &b)?;
    println!(
        "class statistics of {} images in {} ({} -> {}: |d| = {:.4})",
        images,
        path.display(),
        a,
        b,
        direction.norm()
    );
    Ok(())
}
