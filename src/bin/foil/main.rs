//! The `foil` command line: set-up, training, counterfactuals and evaluation.
//! `foil --help` lists the commands; `foil <command> --help` their options.

mod commands;
mod device;
mod evaluate;
mod weights;

use clap::{Parser, Subcommand};

/// Visual counterfactuals with diffusion models.
#[derive(Debug, Parser)]
#[command(name = "foil", version, about)]
struct Cli {
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
    Train(commands::TrainCommand),
    /// MaskDiME (or --preset fastdime / dime) counterfactuals for the test images of a class
    /// pair, both directions; finished images are skipped on rerun.
    Maskdime(commands::MaskdimeArgs),
    /// Class means of the decoder's encoder embeddings over the training images (DIFFusion's
    /// edit directions); `foil train decoder` runs it at the end.
    Stats(commands::StatsArgs),
    /// DIFFusion counterfactuals for the test images of a class pair, both directions;
    /// finished images are skipped on rerun.
    Diffusion(commands::DiffusionArgs),
    /// Teaching material from a results folder: per image a transition strip, GIF and heat map,
    /// and a self-contained HTML study page with a quiz.
    Teach(commands::TeachArgs),
    /// Score a results folder with every metric of both papers, per direction (table + JSON).
    Evaluate(evaluate::EvaluateArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Weights(cmd) => weights::run(cmd),
        Command::Train(cmd) => commands::train(cmd),
        Command::Maskdime(args) => commands::maskdime(args),
        Command::Stats(args) => commands::stats(args),
        Command::Diffusion(args) => commands::diffusion(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Teach(args) => commands::teach(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
