//! The `foil` command line: set-up and (as the project grows) training, counterfactuals and
//! evaluation. `foil --help` lists the commands.

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Weights(cmd) => weights::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
