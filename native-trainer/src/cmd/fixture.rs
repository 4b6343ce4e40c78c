//! `native-trainer fixture`: test models and data (the golden procedural VQ-VAE, a tiny
//! random VAR + VQ-VAE, generated shapes).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::fixtures::GoldenVqVaeSource;
use nextscale::{VqVae, VqVaeConfig};

#[derive(Args, Debug)]
pub struct FixtureArgs {
    /// Which fixture: `vqvae` (the golden vectors' procedural vae_ch160v4096z32), `tiny`
    /// (a small VAR + VQ-VAE in one file, 64×64 images; both random weights), `official` (an
    /// official-size pack: random `--depth` VAR + procedural VQ-VAE, `--quant`), `shapes`
    /// (a generated image data set with 4 classes, written under `--out`), or `clip` (a small
    /// random CLIP text encoder as a Hugging Face folder `--out`, for `--text-encoder`).
    what: String,
    /// `official`: the VAR depth (16, 20, 24 or 30: the released `var_d*` shapes; any of 1–40
    /// follows their rule).
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// `official`: how matrices are stored (q4, q8, f16, f32).
    #[arg(long, default_value = "q4")]
    quant: String,
    /// Seed of the `tiny`, `shapes` and `official` fixtures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `shapes`: images per class.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// `shapes`: image size in pixels.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// `tiny`: a text-conditioned VAR taking prompt embeddings of this width (64 for the
    /// `clip` fixture, 384 for MiniLM-L6) instead of classes.
    #[arg(long, default_value_t = 0)]
    text_dim: usize,
    /// `shapes`: one folder with a `metadata.jsonl` of captions ("a red circle") instead of
    /// class folders.
    #[arg(long)]
    captions: bool,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: FixtureArgs) -> Result<()> {
    let t0 = Instant::now();
    if a.text_dim > 0 && a.what != "tiny" {
        bail!("--text-dim is for the `tiny` fixture");
    }
    let rec = match a.what.as_str() {
        "vqvae" => {
            let mut src = GoldenVqVaeSource::recording();
            // Build on the CPU only to enumerate every tensor, buffers included.
            let device = nextscale::burn::tensor::Device::flex();
            VqVae::load(&mut src, &VqVaeConfig::vae_ch160v4096z32(), &device)?;
            src.record.take().unwrap_or_default()
        }
        "tiny" => {
            let (mut var, vae) = nextscale::fixtures::tiny_configs();
            var.text_dim = a.text_dim;
            nextscale::fixtures::model_tensors(&var, &vae, a.seed)?
        }
        "clip" => {
            let cfg = nextscale::fixtures::tiny_clip_folder(&a.out, a.seed)?;
            eprintln!(
                "wrote a random CLIP text encoder ({} layers, width {}, {} tokens) to {}",
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.vocab_size,
                a.out.display()
            );
            return Ok(());
        }
        "shapes" => {
            crate::shapes::write(&a.out, a.n, a.size, a.seed, a.captions)?;
            eprintln!(
                "wrote {} images ({} classes × {}, {}×{} px) under {}",
                a.n * crate::shapes::CLASSES.len(),
                crate::shapes::CLASSES.len(),
                a.n,
                a.size,
                a.size,
                a.out.display()
            );
            return Ok(());
        }
        "official" => {
            // The official family's rule (width 64·depth, depth heads); 16, 20, 24 and 30 are
            // the released models, small depths make quick dry runs.
            let cfg = match a.depth {
                d @ 1..=40 => nextscale::VarConfig::for_depth(d),
                d => bail!(
                    "no VAR of depth {d} in the official family (1 to 40; released: 16, 20, 24, 30)"
                ),
            };
            let storage = nextscale::pack::Storage::parse(&a.quant)?;
            let bytes = nextscale::fixtures::official_size_pack(&cfg, storage, a.seed)?;
            std::fs::write(&a.out, &bytes)
                .with_context(|| format!("writing {}", a.out.display()))?;
            eprintln!(
                "wrote a random d{} VAR + procedural VQ-VAE pack ({:?}, {} bytes) to {} in {:.1} s",
                a.depth,
                storage,
                bytes.len(),
                a.out.display(),
                t0.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        other => bail!("unknown fixture `{other}` (known: vqvae, tiny, shapes, official, clip)"),
    };
    let f =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = std::io::BufWriter::new(f);
    nextscale::state_dict::write_safetensors(&mut w, &rec, None)?;
    w.flush()?;
    let n: usize = rec
        .iter()
        .filter_map(|e| e.f32_values())
        .map(<[f32]>::len)
        .sum();
    eprintln!(
        "wrote {} tensors ({n} values; random weights, for tests and demos) to {} in {:.1} s",
        rec.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
