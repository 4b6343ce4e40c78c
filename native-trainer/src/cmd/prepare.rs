//! `native-trainer prepare`: tokenizes a data set once with a trained VQ-VAE into shards for
//! the VAR trainers (format in `tokens.rs`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;

use crate::data::{Dataset, flip_chw};

use crate::tokens::{Header, MAGIC, SHARD, load_vae};

fn write_shard(path: &Path, h: &Header, toks: &[u32]) -> Result<()> {
    let mut out = Vec::with_capacity(16 + toks.len() * h.token_bytes);
    let hj = serde_json::to_vec(h)?;
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(hj.len() as u32).to_le_bytes());
    out.extend_from_slice(&hj);
    for &t in toks {
        if h.token_bytes == 2 {
            out.extend_from_slice(&(t as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    crate::run::write_atomic(path, &out)
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// Image folder or IDX file (as for train-vqvae).
    #[arg(long)]
    pub data: PathBuf,
    /// The trained VQ-VAE (its `vqvae.safetensors`, an official `.pth`, or a pack).
    #[arg(long)]
    pub vae: PathBuf,
    /// Output folder for the shards.
    #[arg(long)]
    pub out: PathBuf,
    /// Also tokenize the mirrored images (flip augmentation for VAR training).
    #[arg(long)]
    pub flip: bool,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokenize only the first N images of the data set.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The VQ-VAE's patch list when it is not the 10-scale 256 px one (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub patch_nums: Option<Vec<usize>>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: PrepareArgs) -> Result<()> {
    let t0 = Instant::now();
    let kind: nextscale::device::BackendKind = a.device.parse()?;
    let device = nextscale::device::init_device(kind)?;
    let (vae, cfg) = load_vae(&a.vae, a.patch_nums.clone(), &device)?;
    let size = cfg.image_size();
    let mut ds = Dataset::open(&a.data)?;
    if let Some(n) = a.limit {
        ds.items.truncate(n);
    }
    eprintln!(
        "data: {}; tokenizing at {size}×{size} px with {} scales",
        ds.description,
        cfg.patch_nums.num_scales()
    );
    std::fs::create_dir_all(&a.out)?;
    for e in std::fs::read_dir(&a.out)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "nxtok") {
            std::fs::remove_file(p)?;
        }
    }
    let token_bytes = if cfg.vocab_size <= 1 << 16 { 2 } else { 4 };
    let has_captions = ds.items.iter().any(|i| i.caption.is_some());
    let mut bad = Vec::new();
    let mut shard = 0usize;
    let mut written = 0usize;
    let mut pending: Vec<usize> = Vec::new();
    let header = |labels: Vec<Option<usize>>, captions: Vec<Option<String>>| Header {
        patch_nums: cfg.patch_nums.as_slice().to_vec(),
        vocab_size: cfg.vocab_size,
        token_bytes,
        count: labels.len(),
        flips: a.flip,
        class_names: ds.class_names.clone(),
        labels,
        captions: has_captions.then_some(captions),
    };
    let (mut labels, mut captions, mut toks) = (Vec::new(), Vec::new(), Vec::<u32>::new());
    let total = ds.items.len();
    for i in 0..=total {
        if i < total {
            pending.push(i);
        }
        let flush_batch = pending.len() == a.batch_size || (i == total && !pending.is_empty());
        if flush_batch {
            let mut imgs = Vec::new();
            let mut ok = Vec::new();
            for &k in &pending {
                match ds.load(k, size) {
                    Ok(img) => {
                        imgs.extend_from_slice(&img);
                        if a.flip {
                            let mut f = img;
                            flip_chw(&mut f, size);
                            imgs.extend(f);
                        }
                        ok.push(k);
                    }
                    Err(e) => bad.push(e),
                }
            }
            pending.clear();
            if !ok.is_empty() {
                let n = imgs.len() / (3 * size * size);
                let x = Tensor::<4>::from_data(TensorData::new(imgs, [n, 3, size, size]), &device);
                let idx = vae.img_to_idx(x);
                let per: Vec<Vec<i64>> = idx
                    .into_iter()
                    .map(|t| {
                        t.into_data()
                            .convert::<i64>()
                            .try_into_vec::<i64>()
                            .map_err(|e| anyhow::anyhow!("{e:?}"))
                    })
                    .collect::<Result<_>>()?;
                for r in 0..n {
                    for (si, &pn) in cfg.patch_nums.as_slice().iter().enumerate() {
                        let m = pn * pn;
                        toks.extend(per[si][r * m..(r + 1) * m].iter().map(|&t| t as u32));
                    }
                }
                for k in ok {
                    labels.push(ds.items[k].label);
                    captions.push(ds.items[k].caption.clone());
                }
            }
            eprint!("\rtokenized {}/{total}", (i + 1).min(total));
        }
        if labels.len() >= SHARD || (i == total && !labels.is_empty()) {
            let h = header(std::mem::take(&mut labels), std::mem::take(&mut captions));
            written += h.count;
            write_shard(&a.out.join(format!("tokens-{shard:05}.nxtok")), &h, &toks)?;
            toks.clear();
            shard += 1;
        }
    }
    eprintln!();
    if !bad.is_empty() {
        eprintln!(
            "skipped {} files that did not decode, e.g. {}",
            bad.len(),
            bad[0]
        );
    }
    if written == 0 {
        bail!("no image could be tokenized");
    }
    eprintln!(
        "wrote {written} items{} in {shard} shard(s) to {} in {:.1} s",
        if a.flip { " (+ mirrored)" } else { "" },
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
