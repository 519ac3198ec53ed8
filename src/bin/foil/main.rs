//! The `foil` command line: set-up, training, counterfactuals and evaluation.
//! `foil --help` lists the commands; `foil <command> --help` their options.
//!
//! Layers: `main.rs` parses (clap turns every flag into a typed value: the data source, the
//! device, architectures, files), `commands/` resolves the values into the library's pipeline
//! objects ([`foil::pipeline`]) and prints what they return, `device.rs` picks the backend,
//! `progress.rs` draws the long loops' progress and `logging.rs` writes the log lines.
//!
//! Results and summaries go to stdout; progress and log lines to stderr.

mod commands;
mod device;
mod logging;
mod progress;

use clap::{ArgAction, Parser, Subcommand};

use commands::{evaluate, explain, stats, teach, train, weights};
use device::DeviceArg;

/// mimalloc reuses freed tensor buffers (feature `mimalloc`, on by default; docs/performance.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Visual counterfactuals with diffusion models.
#[derive(Debug, Parser)]
#[command(name = "foil", version, about, after_help = PROGRESS_AND_LOGS)]
struct Cli {
    /// Device: cpu (burn-flex when compiled in, else ndarray), flex, ndarray (in a build
    /// without flex), wgpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "cpu", value_parser = str::parse::<DeviceArg>)]
    device: DeviceArg,
    /// Threads of the CPU backends, this process's main thread among them (default:
    /// RAYON_NUM_THREADS, else one per core).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// More log lines on stderr: -v adds debug lines, -vv trace lines.
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// No progress and no information on stderr: only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch and convert published weights that foil can use offline.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Train the networks a method needs on a dataset (resumes from the last checkpoint).
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// MaskDiME (or --preset fastdime / dime) counterfactuals for the test images of a class
    /// pair, both directions; finished images are skipped on rerun.
    Maskdime(explain::MaskdimeArgs),
    /// Class means of the decoder's encoder embeddings over the training images (DIFFusion's
    /// edit directions); `foil train decoder` runs it at the end.
    Stats(stats::StatsArgs),
    /// DIFFusion counterfactuals for the test images of a class pair, both directions;
    /// finished images are skipped on rerun.
    Diffusion(explain::DiffusionArgs),
    /// Teaching material from a results folder: per image a transition strip, GIF and heat map,
    /// and a self-contained HTML study page with a quiz.
    Teach(teach::TeachArgs),
    /// Score a results folder with every metric of both papers, per direction (table + JSON).
    Evaluate(evaluate::EvaluateArgs),
}

/// The `--help` paragraph on progress and log lines.
const PROGRESS_AND_LOGS: &str = "\
Progress and logs: commands that take long (maskdime, diffusion, teach, evaluate, stats, train) \
show progress on stderr: bars with the count done / total, flips so far, elapsed time and ETA on \
a terminal; elsewhere plain lines, the first and last of each task and at most one every \
FOIL_PROGRESS_INTERVAL seconds (default 5; 0: every step). Log lines go to stderr too: warnings \
and information by default, debug lines with -v, trace lines with -vv, only warnings and errors \
with -q (which also hides progress). RUST_LOG, when set, replaces the levels of -v / -q \
(e.g. RUST_LOG=foil=debug,warn). Results and summaries go to stdout.";

fn main() -> std::process::ExitCode {
    let Cli {
        device,
        threads,
        verbose,
        quiet,
        command,
    } = Cli::parse();
    let verbosity = if quiet {
        -1
    } else {
        i8::try_from(verbose).unwrap_or(i8::MAX)
    };
    logging::init(verbosity);
    progress::install(progress::Style::pick(quiet));
    // Before any tensor work. Failing leaves rayon's own pool: slower, never wrong.
    match foil::backend::init_cpu_threads(threads.map(usize::from)) {
        Ok(n) => tracing::debug!("{n} CPU threads"),
        Err(err) => tracing::warn!("{err}"),
    }
    tracing::debug!(
        "foil {} on device {device:?}: {command:?}",
        env!("CARGO_PKG_VERSION")
    );
    let result = match command {
        Command::Weights(cmd) => weights::run(cmd),
        Command::Train(cmd) => train::run(cmd, device),
        Command::Maskdime(args) => explain::maskdime(args, device),
        Command::Stats(args) => stats::run(args, device),
        Command::Diffusion(args) => explain::diffusion(args, device),
        Command::Evaluate(args) => evaluate::run(args, device),
        Command::Teach(args) => teach::run(args, device),
    };
    // A task left unfinished (inputs claimed by another shard, an error) shows its last line.
    progress::finish_all();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
