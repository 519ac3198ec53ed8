//! `foil stats`: the class means of a decoder's encoder embeddings over the training images
//! (DIFFusion's edit directions); `foil train decoder|lora` run it at the end.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use foil::core::Result;
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
    /// Output file (default: <decoder>/stats.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `foil stats` on `device`.
pub fn run(args: StatsArgs, device: DeviceArg) -> Result<()> {
    class_stats(&args.data, &args.decoder, args.out.as_deref(), device)
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
    let [a, b] = data.classes();
    let direction = stats.direction(&a, &b)?;
    println!(
        "class statistics of {} images written to {} ({} -> {}: |d| = {:.4})",
        train.len(),
        path.display(),
        a,
        b,
        direction.norm()
    );
    Ok(())
}
