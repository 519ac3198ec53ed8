//! `foil train oracle|ddpm|decoder|lora`: the networks the methods need, trained on the class
//! pair of [`DataArgs`] by the library's trainers (resuming from the last checkpoint).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use foil::core::{Error, Result};
use foil::models::lora::LoraConfig;
use foil::pipeline::{self, Arch, DdpmSpec, DecoderSpec, Member, OracleSpec};
use foil::train::{Augment, LrSchedule, TrainConfig};

use super::DataArgs;
use super::stats;
use crate::device::{DeviceArg, with_backend};

/// Optimisation settings shared by the training commands.
#[derive(Debug, Clone, Args)]
pub struct OptimArgs {
    /// Training steps.
    #[arg(long = "steps", value_name = "STEPS", default_value_t = 300)]
    pub train_steps: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the initial weights, the shuffling and the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint every this many steps (a rerun resumes from the last one).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    /// Side of the square images the networks see.
    #[arg(long, default_value_t = 32)]
    pub image_size: u32,
    /// Learning-rate schedule: the --lr throughout, or a cosine decay to zero after a linear
    /// warm-up of --warmup steps.
    #[arg(long, value_enum, default_value_t = LrScheduleArg::Constant)]
    pub lr_schedule: LrScheduleArg,
    /// Warm-up steps of --lr-schedule cosine.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Augmentation: mirror each training image left-right with probability 1/2.
    #[arg(long)]
    pub flip: bool,
    /// Augmentation: translate each training image by up to this many pixels.
    #[arg(long, default_value_t = 0)]
    pub shift: usize,
}

/// `--lr-schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LrScheduleArg {
    /// The same rate at every step.
    Constant,
    /// Linear warm-up, then a half cosine down to zero.
    Cosine,
}

impl OptimArgs {
    /// The trainer's settings, checkpointing into `out`.
    fn config(&self, out: &Path) -> Result<TrainConfig> {
        let schedule = match self.lr_schedule {
            LrScheduleArg::Constant if self.warmup > 0 => {
                return Err(Error::out_of_range(
                    "--warmup",
                    "0 with --lr-schedule constant (warm-up belongs to the cosine schedule)",
                    self.warmup,
                ));
            }
            LrScheduleArg::Constant => LrSchedule::Constant,
            LrScheduleArg::Cosine => LrSchedule::Cosine {
                warmup: self.warmup,
            },
        };
        Ok(
            TrainConfig::new(self.train_steps, self.batch_size, self.lr, out)
                .with_seed(self.seed)
                .with_checkpoint_every(self.checkpoint_every)
                .with_lr_schedule(schedule)
                .with_augment(Augment {
                    flip: self.flip,
                    shift: self.shift,
                }),
        )
    }
}

/// What to train.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// The oracle: one-logit classifiers joined as a mean-of-sigmoids ensemble.
    Oracle {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        optim: OptimArgs,
        /// Architectures (repeat or comma-separate for an ensemble).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "resnet18",
            value_parser = str::parse::<Arch>
        )]
        arch: Vec<Arch>,
        /// Width multiplier against the published networks.
        #[arg(long, default_value_t = 0.25)]
        width: f64,
        /// Output folder.
        #[arg(long, default_value = "runs/oracle")]
        out: PathBuf,
    },
    /// The unconditional DDPM (guided-diffusion's UNet) on both classes.
    Ddpm {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        optim: OptimArgs,
        /// Base width (a multiple of 32).
        #[arg(long, default_value_t = 32)]
        width: usize,
        /// Output folder.
        #[arg(long, default_value = "runs/ddpm")]
        out: PathBuf,
    },
    /// DIFFusion's networks: a small ViT image encoder and the UNet decoder conditioned on its
    /// embeddings, trained together; then the class statistics (`stats.json`).
    Decoder {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        optim: OptimArgs,
        /// Width of the embeddings.
        #[arg(long, default_value_t = 32)]
        embedding_dim: usize,
        /// Widths of the UNet's levels (multiples of 16), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "32,64")]
        unet_channels: Vec<usize>,
        /// Pre-train the encoder this many steps as a classifier of every class of --data
        /// (then frozen while the decoder trains); 0 trains encoder and decoder together.
        #[arg(long, default_value_t = 0)]
        encoder_steps: usize,
        /// Output folder.
        #[arg(long, default_value = "runs/decoder")]
        out: PathBuf,
    },
    /// LoRA domain tuning: low-rank adapters on the attention projections of a trained
    /// decoder's UNet, trained on --classes with everything else frozen (DIFFusion's recipe:
    /// rank 4, alpha 8); then the class statistics. The folder names its base and holds only
    /// the adapters. The image size is the base's (--image-size is ignored).
    Lora {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        optim: OptimArgs,
        /// The trained decoder folder to adapt (`foil train decoder`).
        #[arg(long)]
        base: PathBuf,
        /// Rank of the updates.
        #[arg(long, default_value_t = 4)]
        rank: usize,
        /// Scale numerator of the updates (multiplied by alpha / rank).
        #[arg(long, default_value_t = 8.0)]
        alpha: f64,
        /// Adapted projections, `|`-separated diffusers names.
        #[arg(long, default_value = "to_q|to_k|to_v|to_out|add_k_proj|add_v_proj")]
        targets: String,
        /// Output folder.
        #[arg(long, default_value = "runs/lora")]
        out: PathBuf,
    },
}

/// `foil train ...` on `device`.
pub fn run(cmd: TrainCommand, device: DeviceArg) -> Result<()> {
    match cmd {
        TrainCommand::Oracle {
            data,
            optim,
            arch,
            width,
            out,
        } => oracle(&data, &optim, &arch, width, &out, device),
        TrainCommand::Ddpm {
            data,
            optim,
            width,
            out,
        } => ddpm(&data, &optim, width, &out, device),
        TrainCommand::Decoder {
            data,
            optim,
            embedding_dim,
            unet_channels,
            encoder_steps,
            out,
        } => {
            let spec = DecoderSpec {
                embedding_dim,
                unet_channels,
                encoder_pretraining_steps: encoder_steps,
                ..DecoderSpec::small(data.classes().to_vec(), optim.image_size)
            };
            decoder(&data, &optim, spec, &out, device)
        }
        TrainCommand::Lora {
            data,
            optim,
            base,
            rank,
            alpha,
            targets,
            out,
        } => lora(
            &data,
            &optim,
            &base,
            &LoraConfig::new(rank, alpha, targets)?,
            &out,
            device,
        ),
    }
}

/// `foil train oracle`: one member per architecture, all of `width`.
fn oracle(
    data: &DataArgs,
    optim: &OptimArgs,
    arch: &[Arch],
    width: f64,
    out: &Path,
    device: DeviceArg,
) -> Result<()> {
    let members = arch.iter().map(|&a| Member::new(a, width)).collect();
    let spec = OracleSpec::new(data.classes(), optim.image_size, members)?;
    let (train, test) = data.load()?;
    tracing::info!(
        "oracle: {} training and {} test images of {:?}",
        train.len(),
        test.len(),
        data.classes()
    );
    let config = optim.config(out)?;
    let trained = with_backend!(device, |B, dev| {
        pipeline::train_oracle::<B>(&spec, &train, &test, &config, out, &dev)
    })?;
    for m in &trained.members {
        println!(
            "{} width {}: test accuracy {:.4}",
            m.arch.name(),
            m.width,
            m.test_accuracy.unwrap_or(f64::NAN)
        );
    }
    if let Some(accuracy) = trained.test_accuracy {
        println!(
            "oracle ({} member{}): test accuracy {accuracy:.4}",
            trained.members.len(),
            if trained.members.len() == 1 { "" } else { "s" }
        );
    }
    println!("oracle written to {}", out.display());
    Ok(())
}

/// `foil train ddpm`: the small UNet of base width `width`.
fn ddpm(
    data: &DataArgs,
    optim: &OptimArgs,
    width: usize,
    out: &Path,
    device: DeviceArg,
) -> Result<()> {
    let spec = DdpmSpec {
        model_channels: width,
        ..DdpmSpec::small(data.classes().to_vec(), optim.image_size)
    };
    let (train, _) = data.load()?;
    tracing::info!(
        "ddpm: {} training images of {:?}",
        train.len(),
        data.classes()
    );
    let config = optim.config(out)?;
    let loss = with_backend!(device, |B, dev| {
        pipeline::train_ddpm_on::<B>(&spec, &train, &config, out, &dev)
    })?;
    println!("ddpm written to {} (last loss {loss:.4})", out.display());
    Ok(())
}

/// `foil train decoder`, then the class statistics of the trained encoder.
fn decoder(
    data: &DataArgs,
    optim: &OptimArgs,
    mut spec: DecoderSpec,
    out: &Path,
    device: DeviceArg,
) -> Result<()> {
    let (train, _) = data.load()?;
    let everything = if spec.encoder_pretraining_steps > 0 {
        let all = data.load_all_classes()?;
        spec.encoder_classes = all.class_names().to_vec();
        tracing::info!(
            "encoder: pre-trained on {} images of {} classes",
            all.len(),
            all.class_names().len()
        );
        Some(all)
    } else {
        None
    };
    tracing::info!(
        "decoder: {} training images of {:?}",
        train.len(),
        data.classes()
    );
    let config = optim.config(out)?;
    let loss = with_backend!(device, |B, dev| {
        pipeline::train_decoder_on::<B>(&spec, &train, everything.as_ref(), &config, out, &dev)
    })?;
    println!("decoder written to {} (last loss {loss:.4})", out.display());
    stats::class_stats(data, out, None, device)
}

/// `foil train lora` on the decoder `base`, then the class statistics of the tuned decoder.
fn lora(
    data: &DataArgs,
    optim: &OptimArgs,
    base: &Path,
    lora: &LoraConfig,
    out: &Path,
    device: DeviceArg,
) -> Result<()> {
    let (train, _) = data.load()?;
    tracing::info!(
        "lora: {} training images of {:?} on the decoder {}",
        train.len(),
        data.classes(),
        base.display()
    );
    let config = optim.config(out)?;
    let loss = with_backend!(device, |B, dev| {
        pipeline::tune_decoder_lora::<B>(base, &train, lora, &config, out, &dev)
    })?;
    println!(
        "LoRA decoder written to {} (last loss {loss:.4})",
        out.display()
    );
    stats::class_stats(data, out, None, device)
}
