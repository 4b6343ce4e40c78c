//! `native-trainer sample` and `native-trainer fixture`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::device::{BackendKind, init_device};
use nextscale::fixtures::GoldenVqVaeSource;
use nextscale::image::{RgbImage, grid};
use nextscale::readback::block_on;
use nextscale::sampler::{OnScale, SampleOptions};
use nextscale::{Checkpoint, Pipeline, VqVae, VqVaeConfig};

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// VAR checkpoint (official `.pth` or `.safetensors`).
    #[arg(long, required_unless_present = "pack", conflicts_with = "pack")]
    var: Option<PathBuf>,
    /// A nextscale pack (`native-trainer export`), instead of --var/--vae.
    #[arg(long)]
    pack: Option<PathBuf>,
    /// VQ-VAE checkpoint (`.pth` or `.safetensors`). A file with only `quantize.*` samples tokens without images.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Class id(s), comma-separated; the null class (e.g. 1000) samples unconditionally.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    class: Vec<usize>,
    /// A prompt, for text-conditioned models or models with a text adapter (repeat for
    /// several). The text encoder comes from the pack or --text-encoder.
    #[arg(long)]
    prompt: Vec<String>,
    /// The sentence encoder the model was trained with (a sentence-transformers folder).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// A text adapter (`train-adapter`) for a class-conditional model: prompts then steer the
    /// frozen model through it.
    #[arg(long, requires = "prompt")]
    adapter: Option<PathBuf>,
    /// Guidance strength at the last scale.
    #[arg(long, default_value_t = 4.0)]
    cfg: f32,
    /// Top-k filter (0 = off, 1 = greedy).
    #[arg(long, default_value_t = 900)]
    top_k: usize,
    /// Top-p (nucleus) filter (0 = off).
    #[arg(long, default_value_t = 0.96)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Gumbel-softmax smoothing of the code lookup.
    #[arg(long)]
    more_smooth: bool,
    /// Images per class.
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Write all images as one grid PNG.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write one PNG per image into this folder.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Write the tokens as JSON: one array of token ids per image (scales in order, row-major).
    #[arg(long)]
    tokens_out: Option<PathBuf>,
    /// cpu (default), vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: SampleArgs) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let kind: BackendKind = a.device.parse()?;
    let device = init_device(kind)?;
    let t0 = Instant::now();
    let mut pipe = if let Some(p) = &a.pack {
        if a.vae.is_some() {
            bail!("--pack already holds the VQ-VAE; do not pass --vae");
        }
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        Pipeline::from_bytes(bytes, &device).with_context(|| format!("loading {}", p.display()))?
    } else {
        let var = a.var.as_ref().expect("clap requires --var or --pack");
        let var_ck = Checkpoint::open(var).with_context(|| format!("reading {}", var.display()))?;
        let vae_ck = match &a.vae {
            Some(p) => {
                Some(Checkpoint::open(p).with_context(|| format!("reading {}", p.display()))?)
            }
            None => None,
        };
        Pipeline::from_checkpoints(var_ck, vae_ck, &device)?
    };
    let c = &pipe.var_config;
    eprintln!(
        "loaded VAR d{} (width {}, {} heads, {} classes, {} scales) and {} in {:.2} s on {kind}",
        c.depth,
        c.embed_dim,
        c.num_heads,
        c.num_classes,
        c.patch_nums.num_scales(),
        if pipe.can_decode() {
            "the VQ-VAE"
        } else {
            "the VQ-VAE quantizer (tokens only)"
        },
        t0.elapsed().as_secs_f64()
    );
    if (a.out.is_some() || a.out_dir.is_some()) && !pipe.can_decode() {
        bail!("--out/--out-dir need a full VQ-VAE (--vae); this one holds only the quantizer");
    }
    if a.out.is_none() && a.out_dir.is_none() && a.tokens_out.is_none() {
        bail!("nothing to write: give --out, --out-dir or --tokens-out");
    }
    let labels: Vec<usize> = a
        .class
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, a.n))
        .collect();
    let prompts: Vec<&str> = a
        .prompt
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.as_str(), a.n))
        .collect();
    let opts = SampleOptions {
        cfg: a.cfg,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        more_smooth: a.more_smooth,
    };
    let t1 = Instant::now();
    let mut last = Instant::now();
    let mut hooks = OnScale(|e: &nextscale::sampler::ScaleEvent<'_>| {
        eprintln!(
            "  scale {:>2}/{} ({:>2}×{:<2}) {:>7.3} s",
            e.scale + 1,
            e.num_scales,
            e.patch,
            e.patch,
            last.elapsed().as_secs_f64()
        );
        last = Instant::now();
        Ok(())
    });
    let g = if prompts.is_empty() {
        block_on(pipe.generate(&labels, &opts, &mut hooks))?
    } else {
        if let Some(dir) = &a.text_encoder {
            pipe.text = Some(
                nextscale::text::TextEncoder::open(dir, &device)
                    .with_context(|| format!("loading the text encoder {}", dir.display()))?,
            );
        }
        if let Some(p) = &a.adapter {
            let mut ck = Checkpoint::open(p).with_context(|| format!("reading {}", p.display()))?;
            let acfg = crate::train_adapter::adapter_config(&ck)?;
            pipe.adapter = Some(nextscale::var::adapter::TextAdapter::load(
                &mut ck, &acfg, &device,
            )?);
            ck.finish()?;
        }
        if pipe.text.is_none() {
            bail!("--prompt needs a text encoder: this model file has none, give --text-encoder");
        }
        block_on(pipe.generate_prompts(&prompts, &opts, &mut hooks))?
    };
    let t_tokens = t1.elapsed().as_secs_f64();
    let count = labels.len().max(prompts.len());
    eprintln!("sampled {count} image(s) in {t_tokens:.2} s");

    if let Some(p) = &a.tokens_out {
        let json = serde_json::to_string(&g.tokens)?;
        std::fs::write(p, json + "\n").with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote tokens to {}", p.display());
    }
    if a.out.is_some() || a.out_dir.is_some() {
        let t2 = Instant::now();
        let images = block_on(pipe.decode(&g))?;
        eprintln!("decoded in {:.2} s", t2.elapsed().as_secs_f64());
        if let Some(p) = &a.out {
            let cols = (images.len() as f64).sqrt().ceil() as usize;
            save_png(&grid(&images, cols), p)?;
            eprintln!("wrote {}", p.display());
        }
        if let Some(dir) = &a.out_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (i, im) in images.iter().enumerate() {
                let name = match labels.get(i) {
                    Some(l) => format!("{i:04}_class{l}.png"),
                    None => format!("{i:04}_prompt{}.png", i / a.n),
                };
                save_png(im, &dir.join(name))?;
            }
            eprintln!("wrote {} PNGs to {}", images.len(), dir.display());
        }
    }
    eprintln!("total {:.2} s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn save_png(im: &RgbImage, path: &std::path::Path) -> Result<()> {
    image::save_buffer(
        path,
        &im.data,
        im.width as u32,
        im.height as u32,
        image::ColorType::Rgb8,
    )
    .with_context(|| format!("writing {}", path.display()))
}

#[derive(Args, Debug)]
pub struct FixtureArgs {
    /// Which fixture: `vqvae` (the golden vectors' procedural vae_ch160v4096z32), `tiny`
    /// (a small VAR + VQ-VAE in one file, 64×64 images; both random weights), or `shapes`
    /// (a generated image data set with 4 classes, written under `--out`).
    what: String,
    /// Seed of the `tiny` and `shapes` fixtures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `shapes`: images per class.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// `shapes`: image size in pixels.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// `shapes`: one folder with a `metadata.jsonl` of captions ("a red circle") instead of
    /// class folders.
    #[arg(long)]
    captions: bool,
    #[arg(long)]
    out: PathBuf,
}

pub fn fixture(a: FixtureArgs) -> Result<()> {
    let t0 = Instant::now();
    let rec = match a.what.as_str() {
        "vqvae" => {
            let mut src = GoldenVqVaeSource::recording();
            // Build on the CPU only to enumerate every tensor, buffers included.
            let device = nextscale::burn::tensor::Device::flex();
            VqVae::load(&mut src, &VqVaeConfig::vae_ch160v4096z32(), &device)?;
            src.record.take().unwrap_or_default()
        }
        "tiny" => nextscale::fixtures::tiny_model_tensors(a.seed)?,
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
        other => bail!("unknown fixture `{other}` (known: vqvae, tiny, shapes)"),
    };
    let tensors: Vec<(String, Vec<usize>, &[f32])> = rec
        .iter()
        .map(|(k, s, v)| (k.clone(), s.clone(), v.as_slice()))
        .collect();
    let f =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = std::io::BufWriter::new(f);
    nextscale::checkpoint::write_safetensors(&mut w, &tensors)?;
    w.flush()?;
    let n: usize = rec.iter().map(|(_, _, v)| v.len()).sum();
    eprintln!(
        "wrote {} tensors ({n} values; random weights, for tests and demos) to {} in {:.1} s",
        rec.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
