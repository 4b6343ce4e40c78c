//! `native-trainer embed-text`: sentence embeddings of prompts, as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::text::TextEncoder;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A sentence-transformers folder (config.json, vocab.txt, model.safetensors; e.g. the one
    /// `scripts/fetch-minilm.sh` writes) or a Hugging Face CLIP folder (config.json,
    /// vocab.json, merges.txt, model.safetensors).
    #[arg(long)]
    pub text_encoder: PathBuf,
    /// Print the token ids instead of the embeddings.
    #[arg(long)]
    pub tokens: bool,
    /// The prompts.
    pub prompts: Vec<String>,
}

pub fn run(a: EmbedArgs) -> Result<()> {
    if a.prompts.is_empty() {
        bail!("give at least one prompt");
    }
    let device = nextscale::burn::tensor::Device::flex();
    let m = TextEncoder::open(&a.text_encoder, &device)
        .with_context(|| format!("loading {}", a.text_encoder.display()))?;
    let out: Vec<serde_json::Value> = if a.tokens {
        a.prompts
            .iter()
            .map(|p| serde_json::json!(m.tokenize(p)))
            .collect()
    } else {
        let refs: Vec<&str> = a.prompts.iter().map(String::as_str).collect();
        let e = m.embed(&refs, &device)?;
        let v = e
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        v.chunks(m.dim()).map(|r| serde_json::json!(r)).collect()
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
