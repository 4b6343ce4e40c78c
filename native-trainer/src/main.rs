//! `native-trainer`: samples, edits, trains, evaluates and exports nextscale models.
//!
//! Each command lives in `cmd/<command>.rs` (its arguments and `run`); what commands share
//! sits beside it: option groups (`args.rs`), data (`data.rs`, `tokens.rs`), run folders
//! (`run.rs`), the training loop every trainer shares (`train_loop.rs`: a new training task
//! implements its `Task`), the VAR tasks and their steps (`var_task.rs`, `var_steps.rs`),
//! the optimizer (`optim.rs`), the judge (`classifier.rs`). A new command is a new file in
//! `cmd/` and a line below.

mod args;
mod classifier;
mod cmd;
mod data;
mod gan;
mod gptq;
mod optim;
mod plot;
mod quality;
mod run;
mod shapes;
mod tokens;
mod train_loop;
mod trainconf;
mod var_steps;
mod var_task;

use anyhow::Result;

// Training frees and reallocates the same large activation buffers every step. glibc's malloc
// hands blocks above 32 MiB back to the kernel each time, so every step paid for page faults
// and zeroing pages: a third of a VAR step's time. mimalloc, told never to give memory back
// (see `main`), reuses them: the emoji VAR trains 1.8x faster (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    Sample(cmd::sample::SampleArgs),
    /// Edit an image: inpaint or outpaint with a mask, complete a half, or make variations.
    Edit(cmd::edit::EditArgs),
    /// Write a model (VAR + VQ-VAE) as one nextscale pack, quantized, with a quality report.
    Export(cmd::export::ExportArgs),
    /// Train the multi-scale VQ-VAE on a folder of images.
    TrainVqvae(cmd::train_vqvae::TrainVqVaeArgs),
    /// Tokenize an image data set with a trained VQ-VAE into shards for train-var.
    Prepare(cmd::prepare::PrepareArgs),
    /// Train the VAR transformer on prepared token shards.
    TrainVar(cmd::train_var::TrainVarArgs),
    /// Train a text adapter for a frozen class-conditional VAR on captioned token shards.
    TrainAdapter(cmd::train_adapter::TrainAdapterArgs),
    /// Teach a frozen class-conditional VAR new classes (or refine its own) with LoRA updates.
    TrainLora(cmd::train_lora::TrainLoraArgs),
    /// Print sentence embeddings (or token ids) of prompts as JSON, one array per prompt.
    EmbedText(cmd::embed_text::EmbedArgs),
    /// Train a small image classifier on labelled real images (the judge of `evaluate`).
    TrainClassifier(cmd::train_classifier::TrainClassifierArgs),
    /// Reconstruction PSNR / SSIM / codebook usage of a VQ-VAE on held-out images.
    EvalVqvae(cmd::eval_vqvae::EvalVqVaeArgs),
    /// Generate from a model and score the samples with a classifier: accuracy and Fréchet distance.
    Evaluate(cmd::evaluate::EvaluateArgs),
    /// Average the weights of several runs of one model (a model soup) into one state dict.
    Average(cmd::average::AverageArgs),
    /// Write test fixtures, e.g. the procedural VQ-VAE of the golden vectors.
    Fixture(cmd::fixture::FixtureArgs),
}

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the -sys crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // -1: never purge freed memory back to the OS (the default returns it after 10 ms, so the
    // next step faults every page in again). The process's footprint stays at its peak.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let r: Result<()> = match cli.command {
        Command::Sample(a) => cmd::sample::run(a),
        Command::Edit(a) => cmd::edit::run(a),
        Command::Fixture(a) => cmd::fixture::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::TrainVqvae(a) => cmd::train_vqvae::run(a),
        Command::Prepare(a) => cmd::prepare::run(a),
        Command::TrainVar(a) => cmd::train_var::run(a),
        Command::EmbedText(a) => cmd::embed_text::run(a),
        Command::TrainAdapter(a) => cmd::train_adapter::run(a),
        Command::TrainLora(a) => cmd::train_lora::run(a),
        Command::TrainClassifier(a) => cmd::train_classifier::run(a),
        Command::EvalVqvae(a) => cmd::eval_vqvae::run(a),
        Command::Evaluate(a) => cmd::evaluate::run(a),
        Command::Average(a) => cmd::average::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
