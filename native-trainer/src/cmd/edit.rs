//! `native-trainer edit`: zero-shot editing of an image with a VAR model (the official
//! `demo_zero_shot_edit`): inpainting and outpainting with a mask, half completion, and
//! variations that keep the first scales.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::Condition;
use nextscale::edit::{Half, Region};
use nextscale::image::{RgbImage, RgbaView};
use nextscale::readback::block_on;

use crate::args::{GenerateArgs, ModelArgs, progress};

#[derive(Args, Debug)]
pub struct EditArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image to edit (PNG, JPEG or WebP; any size: composited on white, resized and
    /// centre-cropped like training images).
    #[arg(long)]
    image: PathBuf,
    /// Mask image: white = regenerate, black (or transparent) = keep; any size. A token is
    /// regenerated when at least half of its pixels are white.
    #[arg(long, conflicts_with_all = ["keep_scales", "keep_half"])]
    mask: Option<PathBuf>,
    /// Variations: keep every token of the first K scales of the image (the coarse layout)
    /// and sample the rest. Small K changes more.
    #[arg(long, conflicts_with = "keep_half")]
    keep_scales: Option<usize>,
    /// Half completion: keep this half (top, bottom, left or right) and complete the rest.
    #[arg(long)]
    keep_half: Option<String>,
    #[command(flatten)]
    generate: GenerateArgs,
}

/// Reads an image file as RGBA, with the data loader's limits (a regular file of at most
/// 64 MiB, decoder limits); the library checks the size again before any resize.
pub fn read_rgba(path: &std::path::Path) -> Result<(usize, usize, Vec<u8>)> {
    let bytes = crate::data::read_regular(path, crate::data::MAX_IMAGE_FILE)?;
    let rgba = crate::data::decode_image(&bytes, path)?.to_rgba8();
    Ok((
        rgba.width() as usize,
        rgba.height() as usize,
        rgba.into_raw(),
    ))
}

pub fn run(a: EditArgs) -> Result<()> {
    let t0 = Instant::now();
    let (pipe, _device) = a.model.load()?;
    a.generate.output.check(&pipe)?;
    let (w, h, rgba) = read_rgba(&a.image)?;
    let source = RgbaView::new(w, h, &rgba)?;
    let pn = pipe.var_config().patch_nums.latent();
    let region = match (&a.mask, a.keep_scales, &a.keep_half) {
        (Some(m), None, None) => {
            let (mw, mh, mrgba) = read_rgba(m)?;
            let keep = pipe
                .mask_from_rgba(&RgbaView::new(mw, mh, &mrgba)?)
                .with_context(|| format!("mask {}", m.display()))?;
            Region::Mask(keep)
        }
        (None, Some(k), None) => Region::KeepScales(k),
        (None, None, Some(half)) => Region::Mask(Half::parse(half)?.mask(pn)),
        (None, None, None) => bail!(
            "say what to keep: --mask M.png (white = regenerate), --keep-half top|bottom|left|right, or --keep-scales K"
        ),
        _ => bail!("give only one of --mask, --keep-scales and --keep-half"),
    };
    let conds = a.generate.cond.conditions(Some(Condition::Unconditional))?;
    if conds.iter().any(|c| matches!(c, Condition::Prompt(_))) && pipe.text_encoder().is_none() {
        bail!("--prompt needs a text encoder: this model file has none, give --text-encoder");
    }
    let plan = block_on(pipe.plan_edit(&source, &region, conds.len()))?;
    eprintln!(
        "keeping {:.0} % of the finest scale's tokens of {}",
        100.0 * plan.kept_fraction(),
        a.image.display()
    );
    let opts = a.generate.sampling.options(&pipe);
    let t1 = Instant::now();
    let source_tokens: Vec<Vec<u32>> = plan.source.iter().map(|s| s[0].clone()).collect();
    let g = block_on(pipe.edit(&conds, &opts, plan, &mut progress()))?;
    eprintln!(
        "edited {} image(s) in {:.2} s",
        conds.len(),
        t1.elapsed().as_secs_f64()
    );
    // The grid starts with the source as the VQ-VAE reconstructs it (the "before").
    let before: Vec<RgbImage> = if a.generate.output.out.is_some() && pipe.can_decode() {
        let idx = source_tokens
            .iter()
            .map(|t| {
                let v: Vec<i64> = t.iter().map(|&x| x as i64).collect();
                let n = v.len();
                nextscale::burn::tensor::Tensor::from_data(
                    nextscale::burn::tensor::TensorData::new(v, [1, n]),
                    &pipe.var().class_emb.val().device(),
                )
            })
            .collect::<Vec<_>>();
        block_on(pipe.decode_fhat(pipe.quantizer().idx_to_fhat(&idx)))?
    } else {
        Vec::new()
    };
    let n = a.generate.cond.n;
    a.generate
        .output
        .write(&pipe, &g, &before, |i| format!("{i:04}_edit{}.png", i / n))?;
    eprintln!("total {:.2} s", t0.elapsed().as_secs_f64());
    Ok(())
}
