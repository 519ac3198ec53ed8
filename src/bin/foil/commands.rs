//! `foil train`, `foil stats`, `foil maskdime`, `foil diffusion` and `foil teach`: argument
//! parsing over [`foil::pipeline`].

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Subcommand, ValueEnum};
use foil::core::{Error, Result};
use foil::data::{Dataset, Source};
use foil::embed::ClassStats;
use foil::models::lora::LoraConfig;
use foil::models::vgg::{Vgg19Config, Vgg19Perceptual};
use foil::pipeline::{
    self, Arch, DdpmSpec, DecoderSpec, DiffusionConfig, EditMethod, ExplainConfig, Member,
    OracleSpec, Preset,
};
use foil::train::{Augment, LrSchedule, TrainConfig};

use crate::device::{DeviceArg, with_backend};

/// The data and class pair every command works on.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Dataset: `fashion-mnist[:DIR]`, `mnist-json:DIR`, `kiki-bouba[:PER_CLASS:SIZE]` or a
    /// folder with one sub-folder per class.
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// The two classes, by name: `A,B` (A is label 0).
    #[arg(long, value_parser = parse_pair)]
    pub classes: ClassPair,
    /// Share of each class held out for testing (datasets without an official test part).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the split (and of procedural data).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Use at most this many training images per class (the first ones).
    #[arg(long)]
    pub train_per_class: Option<usize>,
    /// Device: cpu (burn-flex when compiled in, else ndarray), ndarray, flex, wgpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Two class names.
#[derive(Debug, Clone)]
pub struct ClassPair(pub [String; 2]);

fn parse_pair(s: &str) -> std::result::Result<ClassPair, String> {
    match s.split(',').collect::<Vec<_>>().as_slice() {
        [a, b] if !a.is_empty() && !b.is_empty() => Ok(ClassPair([a.to_string(), b.to_string()])),
        _ => Err(format!("expected two class names as A,B, found {s:?}")),
    }
}

impl DataArgs {
    fn load(&self) -> Result<(Dataset, Dataset)> {
        let source: Source = self.data.parse()?;
        let (train, test) = source.load_pair(
            &self.classes.0[0],
            &self.classes.0[1],
            self.test_fraction,
            self.split_seed,
        )?;
        let train = match self.train_per_class {
            Some(n) => {
                let mut seen = [0usize; 2];
                let keep: Vec<usize> = (0..train.len())
                    .filter(|&i| {
                        let l = train.items()[i].label;
                        seen[l] += 1;
                        seen[l] <= n
                    })
                    .collect();
                train.subset(&keep)?
            }
            None => train,
        };
        Ok((train, test))
    }

    fn classes(&self) -> [String; 2] {
        self.classes.0.clone()
    }

    fn device(&self) -> Result<DeviceArg> {
        self.device.parse()
    }
}

/// Optimisation settings shared by the training commands.
#[derive(Debug, Clone, Args)]
pub struct OptimArgs {
    /// Training steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of shuffling and noise.
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
        Ok(TrainConfig::new(self.steps, self.batch_size, self.lr, out)
            .with_seed(self.seed)
            .with_checkpoint_every(self.checkpoint_every)
            .with_lr_schedule(schedule)
            .with_augment(Augment {
                flip: self.flip,
                shift: self.shift,
            }))
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
        #[arg(long, value_delimiter = ',', default_value = "resnet18")]
        arch: Vec<String>,
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

/// `foil train ...`.
pub fn train(cmd: TrainCommand) -> Result<()> {
    match cmd {
        TrainCommand::Oracle {
            data,
            optim,
            arch,
            width,
            out,
        } => {
            let members = arch
                .iter()
                .map(|a| Ok(Member::new(a.parse::<Arch>()?, width)))
                .collect::<Result<Vec<_>>>()?;
            let spec = OracleSpec::new(data.classes(), optim.image_size, members)?;
            let (train, test) = data.load()?;
            eprintln!(
                "oracle: {} training and {} test images of {:?}",
                train.len(),
                test.len(),
                data.classes.0
            );
            let config = optim.config(&out)?;
            let trained = with_backend!(data.device()?, |B, dev| {
                pipeline::train_oracle::<B>(&spec, &train, &test, &config, &out, &dev)
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
        TrainCommand::Ddpm {
            data,
            optim,
            width,
            out,
        } => {
            let mut spec = DdpmSpec::small(data.classes().to_vec(), optim.image_size);
            spec.model_channels = width;
            let (train, _) = data.load()?;
            eprintln!(
                "ddpm: {} training images of {:?}",
                train.len(),
                data.classes.0
            );
            let config = optim.config(&out)?;
            let loss = with_backend!(data.device()?, |B, dev| {
                pipeline::train_ddpm_on::<B>(&spec, &train, &config, &out, &dev)
            })?;
            println!("ddpm written to {} (last loss {loss:.4})", out.display());
            Ok(())
        }
        TrainCommand::Decoder {
            data,
            optim,
            embedding_dim,
            unet_channels,
            encoder_steps,
            out,
        } => {
            let mut spec = DecoderSpec::small(data.classes().to_vec(), optim.image_size);
            spec.embedding_dim = embedding_dim;
            spec.unet_channels = unet_channels;
            spec.encoder_pretraining_steps = encoder_steps;
            let (train, _) = data.load()?;
            let everything = if encoder_steps > 0 {
                let source: Source = data.data.parse()?;
                let (all, _) = source.load(data.test_fraction, data.split_seed)?;
                spec.encoder_classes = all.class_names().to_vec();
                eprintln!(
                    "encoder: pre-trained on {} images of {} classes",
                    all.len(),
                    all.class_names().len()
                );
                Some(all)
            } else {
                None
            };
            eprintln!(
                "decoder: {} training images of {:?}",
                train.len(),
                data.classes.0
            );
            let config = optim.config(&out)?;
            let loss = with_backend!(data.device()?, |B, dev| {
                pipeline::train_decoder_on::<B>(
                    &spec,
                    &train,
                    everything.as_ref(),
                    &config,
                    &out,
                    &dev,
                )
            })?;
            println!("decoder written to {} (last loss {loss:.4})", out.display());
            stats(StatsArgs {
                data,
                decoder: out,
                out: None,
            })
        }
        TrainCommand::Lora {
            data,
            optim,
            base,
            rank,
            alpha,
            targets,
            out,
        } => {
            let lora = LoraConfig::new(rank, alpha, targets)?;
            let (train, _) = data.load()?;
            eprintln!(
                "lora: {} training images of {:?} on the decoder {}",
                train.len(),
                data.classes.0,
                base.display()
            );
            let config = optim.config(&out)?;
            let loss = with_backend!(data.device()?, |B, dev| {
                pipeline::tune_decoder_lora::<B>(&base, &train, &lora, &config, &out, &dev)
            })?;
            println!(
                "LoRA decoder written to {} (last loss {loss:.4})",
                out.display()
            );
            stats(StatsArgs {
                data,
                decoder: out,
                out: None,
            })
        }
    }
}

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

/// `foil stats`: the class means of the encoder's embeddings over the training images.
pub fn stats(args: StatsArgs) -> Result<()> {
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| args.decoder.join(pipeline::STATS_FILE));
    let (train, _) = args.data.load()?;
    let stats = with_backend!(args.data.device()?, |B, dev| {
        let (spec, decoder) =
            pipeline::load_decoder::<<B as AutodiffBackend>::InnerBackend>(&args.decoder, &dev)?;
        pipeline::write_class_stats(&decoder, &train, spec.image_size, 64, &path, &dev)
    })?;
    let [a, b] = args.data.classes();
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

/// DIFFusion's edit settings, shared by `foil diffusion` and `foil teach`.
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// Inversion and regeneration steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Edit strength lambda; several (`2,3`) form a ladder: each next strength is tried on the
    /// inputs the previous ones left unflipped.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    lambda: Vec<f64>,
    /// Classifier-free guidance scale while regenerating (1: none).
    #[arg(long, default_value_t = 4.0)]
    guidance: f64,
}

impl EditArgs {
    fn apply(&self, config: &mut DiffusionConfig) -> Result<()> {
        if let Some(&bad) = self.lambda.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
            return Err(Error::out_of_range("--lambda", "finite and > 0", bad));
        }
        let (first, rest) = self.lambda.split_first().ok_or_else(|| Error::Empty {
            what: "--lambda".into(),
            hint: "give at least one edit strength".into(),
        })?;
        config.steps = self.steps;
        config.search.lambda = *first;
        config.extra_lambdas = rest.to_vec();
        config.inverter.target_guidance = self.guidance;
        Ok(())
    }
}

/// `foil diffusion` arguments.
#[derive(Debug, Args)]
pub struct DiffusionArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Oracle folder (`foil train oracle`).
    #[arg(long, default_value = "runs/oracle")]
    oracle: PathBuf,
    /// Decoder folder (`foil train decoder`), with its `stats.json`.
    #[arg(long, default_value = "runs/decoder")]
    decoder: PathBuf,
    /// Class statistics (default: <decoder>/stats.json).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Test images per direction (the first ones).
    #[arg(long, default_value_t = 16)]
    per_direction: usize,
    #[command(flatten)]
    edit: EditArgs,
    /// T_skip values tried in turn, gentle first (default 0.9,0.8,...,0).
    #[arg(long, value_delimiter = ',')]
    t_skips: Option<Vec<f64>>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Seed of the inversion noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the set once per seed, into <out>/seed-<s>/ (several seeds; one seed: into <out>
    /// itself, as --seed), e.g. for the diversity across seeds.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    seeds: Option<Vec<u64>>,
    /// DIFFusion's embedding arithmetic, or a baseline: the target class's mean embedding alone
    /// (same inversion and search), or the nearest target-class training image by embedding.
    #[arg(long, value_enum, default_value = "arithmetic")]
    method: MethodArg,
    /// Results folder (default: results/diffusion, or results/<method> for a baseline);
    /// finished inputs are skipped on rerun.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What `foil diffusion` conditions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// DIFFusion: the embedding moved along the class-mean difference.
    Arithmetic,
    /// Baseline: the target class's mean embedding alone.
    TargetMean,
    /// Baseline: the nearest target-class training image by embedding.
    Nearest,
}

/// `foil diffusion`.
pub fn diffusion(args: DiffusionArgs) -> Result<()> {
    let mut config = DiffusionConfig::new(32);
    args.edit.apply(&mut config)?;
    if let Some(t) = args.t_skips.clone() {
        config.search.t_skips = t;
    }
    config.batch_size = args.batch_size;
    config.seed = args.seed;
    config.per_direction = Some(args.per_direction);
    if args.method == MethodArg::TargetMean {
        config.method = EditMethod::TargetMean;
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(match args.method {
            MethodArg::Arithmetic => "diffusion",
            MethodArg::TargetMean => "target-mean",
            MethodArg::Nearest => "nearest",
        })
    });
    let stats_path = args
        .stats
        .clone()
        .unwrap_or_else(|| args.decoder.join(pipeline::STATS_FILE));
    let runs = pipeline::seed_runs(&out, args.seeds.as_deref().unwrap_or(&[args.seed]))?;
    if args.method == MethodArg::Nearest && runs.len() > 1 {
        return Err(Error::out_of_range(
            "--seeds",
            "one seed with --method nearest (the nearest image has no randomness)",
            runs.len(),
        ));
    }
    let stats = ClassStats::load(&stats_path)?;
    let (train, test) = args.data.load()?;
    let name = out
        .file_name()
        .map_or("diffusion".into(), |n| n.to_string_lossy().into_owned());
    with_backend!(args.data.device()?, |B, dev| {
        type I = <B as AutodiffBackend>::InnerBackend;
        let (spec, oracle) = pipeline::load_oracle::<I>(&args.oracle, &dev)?;
        let (dspec, decoder) = pipeline::load_decoder::<I>(&args.decoder, &dev)?;
        check_models(&spec, dspec.image_size, &test)?;
        for (seed, run_out) in &runs {
            let config = DiffusionConfig {
                image_size: spec.image_size,
                seed: *seed,
                ..config.clone()
            };
            let summary = if args.method == MethodArg::Nearest {
                pipeline::nearest_set(
                    &decoder,
                    &train,
                    &oracle,
                    &test,
                    run_out,
                    config.per_direction,
                    config.image_size,
                    &dev,
                )
            } else {
                pipeline::diffusion_set(
                    &decoder,
                    &dspec.schedule()?,
                    &stats,
                    &oracle,
                    &test,
                    run_out,
                    &config,
                    &dev,
                )
            }?;
            print_summary(&name, &summary, run_out);
        }
        Ok::<(), Error>(())
    })
}

/// One line per finished run.
fn print_summary(name: &str, summary: &pipeline::ExplainSummary, out: &Path) {
    println!(
        "{name}: {} explained ({} flipped), {} already done, {:.1} s -> {}",
        summary.done,
        summary.flipped,
        summary.skipped,
        summary.seconds,
        out.display()
    );
}

/// The oracle, the generator's image size and the data agree.
fn check_models(oracle: &OracleSpec, generator_size: u32, data: &Dataset) -> Result<()> {
    if oracle.image_size != generator_size {
        return Err(Error::shape(
            "oracle and generator image sizes",
            oracle.image_size,
            generator_size,
        ));
    }
    if oracle.classes.as_slice() != data.class_names() {
        return Err(Error::format(
            "oracle classes",
            format!(
                "the oracle was trained on {:?}, the data has {:?}",
                oracle.classes,
                data.class_names()
            ),
        ));
    }
    Ok(())
}

/// Which sampler preset.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// MaskDiME (dual top-k masks).
    Maskdime,
    /// FastDiME (pixel-difference mask).
    Fastdime,
    /// DiME (full-chain clean estimate).
    Dime,
}

/// `foil maskdime` arguments.
#[derive(Debug, Args)]
pub struct MaskdimeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Oracle folder (`foil train oracle`).
    #[arg(long, default_value = "runs/oracle")]
    oracle: PathBuf,
    /// DDPM folder (`foil train ddpm`).
    #[arg(long, default_value = "runs/ddpm")]
    ddpm: PathBuf,
    /// Sampler preset.
    #[arg(long, value_enum, default_value = "maskdime")]
    preset: PresetArg,
    /// Test images per direction (the first ones).
    #[arg(long, default_value_t = 16)]
    per_direction: usize,
    /// Start step tau (of the respaced steps).
    #[arg(long)]
    tau: Option<usize>,
    /// Respaced sampling steps.
    #[arg(long, default_value_t = 100)]
    respaced_steps: usize,
    /// Guidance scales tried in turn on inputs not yet flipped.
    #[arg(long, value_delimiter = ',')]
    scales: Option<Vec<f64>>,
    /// MaskDiME: share of pixels in the editable mask M1 (in (0, 1]; default 0.2).
    #[arg(long)]
    mask_fraction: Option<f64>,
    /// Perceptual network of the distance loss, `vgg19:FILE`: a torchvision `vgg19` state dict
    /// (`vgg19-dcbb9e9d.pth` or safetensors), as the authors' scripts use (`features[:18]`).
    #[arg(long, value_parser = parse_perceptual)]
    perceptual: Option<PerceptualArg>,
    /// VGG-19 modules kept for the perceptual loss (the scripts' `--l_perc_layer`).
    #[arg(long, default_value_t = 18)]
    perceptual_layers: usize,
    /// Weight of the perceptual loss (the scripts' `--l_perc`; default 30 with --perceptual).
    #[arg(long)]
    lambda_perc: Option<f64>,
    /// Images per sampler call.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the set once per seed, into <out>/seed-<s>/ (several seeds; one seed: into <out>
    /// itself, as --seed), e.g. for the diversity across seeds.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    seeds: Option<Vec<u64>>,
    /// Results folder (default: results/<preset>); finished inputs are skipped on rerun.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A perceptual network named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum PerceptualArg {
    /// torchvision's VGG-19 from a state-dict file.
    Vgg19(PathBuf),
}

fn parse_perceptual(s: &str) -> std::result::Result<PerceptualArg, String> {
    match s.split_once(':') {
        Some(("vgg19", file)) if !file.is_empty() => Ok(PerceptualArg::Vgg19(PathBuf::from(file))),
        _ => Err(format!(
            "expected vgg19:FILE (a torchvision vgg19 state dict), found {s:?}"
        )),
    }
}

/// `foil maskdime`.
pub fn maskdime(args: MaskdimeArgs) -> Result<()> {
    let preset = match args.preset {
        PresetArg::Maskdime => Preset::Maskdime,
        PresetArg::Fastdime => Preset::Fastdime,
        PresetArg::Dime => Preset::Dime,
    };
    let mut config = ExplainConfig::new(preset, 32);
    if let Some(tau) = args.tau {
        config.guide.tau = tau;
    }
    if let Some(scales) = args.scales.clone() {
        config.guide.scales = scales;
    }
    if let Some(fraction) = args.mask_fraction {
        match &mut config.guide.mask {
            foil::guide::MaskPolicy::Dual { k, .. } => *k = fraction,
            _ => {
                return Err(Error::out_of_range(
                    "--mask-fraction",
                    "only with --preset maskdime (its dual top-k masks)",
                    fraction,
                ));
            }
        }
    }
    config.guide.lambda_perc = match (&args.perceptual, args.lambda_perc) {
        (Some(_), weight) => weight.unwrap_or(30.0),
        (None, Some(w)) if w > 0.0 => {
            return Err(Error::out_of_range(
                "--lambda-perc",
                "0 without --perceptual vgg19:FILE (the perceptual network)",
                w,
            ));
        }
        (None, _) => 0.0,
    };
    config.respaced_steps = args.respaced_steps;
    config.batch_size = args.batch_size;
    config.per_direction = Some(args.per_direction);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(preset.name()));
    let runs = pipeline::seed_runs(&out, args.seeds.as_deref().unwrap_or(&[args.seed]))?;
    let (_, test) = args.data.load()?;
    with_backend!(args.data.device()?, |B, dev| {
        explain_with::<B>(&args, &test, &config, &runs, &dev)
    })
}

/// Loads the networks once and explains the set once per `(seed, folder)` run.
fn explain_with<B: AutodiffBackend>(
    args: &MaskdimeArgs,
    test: &Dataset,
    config: &ExplainConfig,
    runs: &[(u64, PathBuf)],
    device: &B::Device,
) -> Result<()> {
    let (spec, oracle) = pipeline::load_oracle::<B>(&args.oracle, device)?;
    let (ddpm_spec, ddpm) = pipeline::load_ddpm::<B::InnerBackend>(&args.ddpm, device)?;
    check_models(&spec, ddpm_spec.image_size, test)?;
    let perceptual = match &args.perceptual {
        Some(PerceptualArg::Vgg19(file)) => Some(Vgg19Perceptual::<B>::load_file(
            file,
            &Vgg19Config::default().with_layers(args.perceptual_layers),
            device,
        )?),
        None => None,
    };
    let schedule = ddpm_spec.schedule()?;
    let models = pipeline::GuideModels {
        ddpm: &ddpm,
        schedule: &schedule,
        oracle: &oracle,
        perceptual: perceptual
            .as_ref()
            .map(|p| p as &dyn foil::core::FeatureExtractor<B>),
    };
    for (seed, out) in runs {
        let config = ExplainConfig {
            image_size: spec.image_size,
            seed: *seed,
            ..config.clone()
        };
        let summary = pipeline::explain_set::<B, _, _>(&models, test, out, &config, device)?;
        print_summary(config.preset.name(), &summary, out);
    }
    Ok(())
}

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

/// `foil teach`.
pub fn teach(args: TeachArgs) -> Result<()> {
    use foil::teach::{StudySettings, Sweeper, TeachOptions, build_study};
    let classes = args.data.classes();
    let options = TeachOptions {
        frames: args.frames,
        max_items: args.max_items,
        quiz: args.quiz,
        delay_ms: 150,
        seed: args.seed,
        page: StudySettings {
            title: args
                .title
                .clone()
                .unwrap_or_else(|| format!("{} or {}?", classes[0], classes[1])),
            classes: classes.clone(),
            study_seconds: args.study_seconds,
            display_px: 160,
        },
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.results.join("study"));
    let (_, test) = args.data.load()?;
    let summary = with_backend!(args.data.device()?, |B, dev| {
        type I = <B as AutodiffBackend>::InnerBackend;
        match &args.decoder {
            Some(dir) => {
                let (spec, decoder) = pipeline::load_decoder::<I>(dir, &dev)?;
                let stats = ClassStats::load(dir.join(pipeline::STATS_FILE))?;
                let schedule = spec.schedule()?;
                let mut config = DiffusionConfig::new(spec.image_size);
                args.edit.apply(&mut config)?;
                config.seed = args.seed;
                let sweeper = Sweeper {
                    decoder: &decoder,
                    schedule: &schedule,
                    stats: &stats,
                    config: &config,
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
