//! The `foil` command line: set-up, training, counterfactuals and evaluation.
//! `foil --help` lists the commands; `foil <command> --help` their options.
//!
//! Layers: `main.rs` parses (clap turns every flag into a typed value: the data source, the
//! device, architectures, files), `commands/` resolves the values into the library's pipeline
//! objects ([`foil::pipeline`]) and prints what they return, `device.rs` picks the backend.

mod commands;
mod device;

use clap::{Parser, Subcommand};

use commands::{evaluate, explain, stats, teach, train, weights};
use device::DeviceArg;

/// Visual counterfactuals with diffusion models.
#[derive(Debug, Parser)]
#[command(name = "foil", version, about)]
struct Cli {
    /// Device: cpu (burn-flex when compiled in, else ndarray), ndarray, flex, wgpu, cuda or
    /// cuda:N.
    #[arg(long, global = true, default_value = "cpu", value_parser = str::parse::<DeviceArg>)]
    device: DeviceArg,
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

fn main() -> std::process::ExitCode {
    let Cli { device, command } = Cli::parse();
    let result = match command {
        Command::Weights(cmd) => weights::run(cmd),
        Command::Train(cmd) => train::run(cmd, device),
        Command::Maskdime(args) => explain::maskdime(args, device),
        Command::Stats(args) => stats::run(args, device),
        Command::Diffusion(args) => explain::diffusion(args, device),
        Command::Evaluate(args) => evaluate::run(args, device),
        Command::Teach(args) => teach::run(args, device),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
