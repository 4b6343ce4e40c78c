//! `native-trainer eval-vqvae`: reconstruction PSNR / SSIM / codebook usage of a VQ-VAE on
//! held-out images (the full token path: encode → quantize at every scale → decode).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use nextscale::VqVae;
use serde_json::json;

use crate::data::{Dataset, Source};

#[derive(Args, Debug)]
pub struct EvalVqVaeArgs {
    /// The VQ-VAE checkpoint (`vqvae.safetensors` of a train-vqvae run, or `.pth`).
    #[arg(long)]
    vae: PathBuf,
    /// Held-out images (any layout train-vqvae reads).
    #[arg(long)]
    data: PathBuf,
    /// Use at most this many images.
    #[arg(long, default_value_t = 10_000)]
    max: usize,
    /// Write originals (odd rows) above their reconstructions (even rows) as a PNG.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Also write each reconstruction to this folder (new or empty) as `NNNNN-NAME.png`: the image's index in
    /// the data set and its file name without extension (`NNNNN.png` for IDX files), e.g. to
    /// ask another judge how recognisable the tokenizer leaves each image.
    #[arg(long)]
    images: Option<PathBuf>,
    /// cpu, vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: EvalVqVaeArgs) -> Result<()> {
    let kind: nextscale::device::BackendKind = a.device.parse()?;
    let device = nextscale::device::init_device(kind)?;
    if let Some(dir) = &a.images {
        crate::plot::image_folder(dir)?;
    }
    let ck = crate::run::open_model(&a.vae, "vae")?;
    let pn = ck.recorded_patch_nums()?;
    let cfg = nextscale::vqvae::infer_config(&ck, pn)?;
    let (model, cfg) = VqVae::from_checkpoint(ck, Some(cfg), &device)?;
    let size = cfg.image_size();
    let ds = Dataset::open(&a.data)?;
    let all: Vec<usize> = (0..ds.items.len()).collect();
    let t0 = Instant::now();
    let e = crate::cmd::train_vqvae::evaluate(&model, &ds, &all, size, &cfg, &device, true, a.max)?;
    let n = e.originals.len() / (3 * size * size);
    if let Some(p) = &a.grid {
        let per = 3 * size * size;
        let (k, cols) = (n.min(32), 16);
        let mut tiles = Vec::new();
        for row in 0..k.div_ceil(cols) {
            let r = row * cols..((row + 1) * cols).min(k);
            tiles.extend_from_slice(&e.originals[r.start * per..r.end * per]);
            tiles.extend_from_slice(&e.recons[r.start * per..r.end * per]);
        }
        crate::plot::grid(p, &tiles, size, cols.min(k))?;
    }
    if let Some(dir) = &a.images {
        let per = 3 * size * size;
        for (k, &i) in e.items.iter().enumerate() {
            let name = match &ds.items[i].source {
                Source::File(p) => format!(
                    "{i:05}-{}.png",
                    p.file_stem().unwrap_or_default().to_string_lossy()
                ),
                Source::Idx(j) => format!("{j:05}.png"),
            };
            let im = crate::plot::rgb_image(&e.recons[k * per..(k + 1) * per], size);
            crate::args::save_png(&im, &dir.join(name))?;
        }
    }
    println!(
        "{}",
        json!({
            "images": n,
            "size": size,
            "l1": e.recon,
            "psnr_db": e.psnr,
            "ssim": e.ssim,
            "codebook_usage": e.usage,
            "seconds": t0.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
