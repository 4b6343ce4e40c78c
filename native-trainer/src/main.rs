//! `native-trainer`: sample, import and (in later commands) train and export nextscale models.

mod export;
mod sample;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "native-trainer",
    version,
    about = "nextscale's native tool: sample VAR models on CPU, Vulkan or CUDA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images (or only tokens) from a VAR checkpoint and its VQ-VAE.
    Sample(sample::SampleArgs),
    /// Write a model (VAR + VQ-VAE) as one nextscale pack, quantized, with a quality report.
    Export(export::ExportArgs),
    /// Write test fixtures, e.g. the procedural VQ-VAE of the golden vectors.
    Fixture(sample::FixtureArgs),
}

fn main() {
    let cli = Cli::parse();
    let r: Result<()> = match cli.command {
        Command::Sample(a) => sample::run(a),
        Command::Fixture(a) => sample::fixture(a),
        Command::Export(a) => export::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
