//! `native-trainer`: sample, import and (in later commands) train and export nextscale models.

mod classify;
mod data;
mod edit;
mod embed;
mod evaluate;
mod export;
mod gan;
mod optim;
mod plot;
mod quality;
mod run;
mod sample;
mod shapes;
mod tokens;
mod train_adapter;
mod train_loop;
mod train_lora;
mod train_var;
mod train_vqvae;
mod trainconf;

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
    /// Edit an image: inpaint or outpaint with a mask, complete a half, or make variations.
    Edit(edit::EditArgs),
    /// Write a model (VAR + VQ-VAE) as one nextscale pack, quantized, with a quality report.
    Export(export::ExportArgs),
    /// Train the multi-scale VQ-VAE on a folder of images.
    TrainVqvae(train_vqvae::TrainVqVaeArgs),
    /// Tokenize an image data set with a trained VQ-VAE into shards for train-var.
    Prepare(tokens::PrepareArgs),
    /// Train the VAR transformer on prepared token shards.
    TrainVar(train_var::TrainVarArgs),
    /// Train a text adapter for a frozen class-conditional VAR on captioned token shards.
    TrainAdapter(train_adapter::TrainAdapterArgs),
    /// Teach a frozen class-conditional VAR new classes (or refine its own) with LoRA updates.
    TrainLora(train_lora::TrainLoraArgs),
    /// Print sentence embeddings (or token ids) of prompts as JSON, one array per prompt.
    EmbedText(embed::EmbedArgs),
    /// Train a small image classifier on labelled real images (the judge of `evaluate`).
    TrainClassifier(classify::TrainClassifierArgs),
    /// Reconstruction PSNR / SSIM / codebook usage of a VQ-VAE on held-out images.
    EvalVqvae(evaluate::EvalVqVaeArgs),
    /// Generate from a model and score the samples with a classifier: accuracy and Fréchet distance.
    Evaluate(evaluate::EvaluateArgs),
    /// Write test fixtures, e.g. the procedural VQ-VAE of the golden vectors.
    Fixture(sample::FixtureArgs),
}

fn main() {
    let cli = Cli::parse();
    let r: Result<()> = match cli.command {
        Command::Sample(a) => sample::run(a),
        Command::Edit(a) => edit::run(a),
        Command::Fixture(a) => sample::fixture(a),
        Command::Export(a) => export::run(a),
        Command::TrainVqvae(a) => train_vqvae::run(a),
        Command::Prepare(a) => tokens::run(a),
        Command::TrainVar(a) => train_var::run(a),
        Command::EmbedText(a) => embed::run(a),
        Command::TrainAdapter(a) => train_adapter::run(a),
        Command::TrainLora(a) => train_lora::run(a),
        Command::TrainClassifier(a) => classify::run(a),
        Command::EvalVqvae(a) => evaluate::eval_vqvae(a),
        Command::Evaluate(a) => evaluate::evaluate(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
