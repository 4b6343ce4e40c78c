//! Token shards: a data set tokenized once by a trained VQ-VAE (`prepare`), so VAR training
//! never re-encodes images. Shards `tokens-NNNNN.nxtok` in one folder:
//!
//! ```text
//! "NXSTOKS\0" | u32 version = 1 | u32 header length | JSON header | tokens
//! header: patch_nums, vocab_size, token_bytes (2 or 4), count, flips, class_names,
//!         labels (count entries, null = none), captions (count entries or absent)
//! tokens: for each item, all scales' indices (L values); with flips, then the
//!         left–right mirrored image's L values.
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nextscale::VqVae;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"NXSTOKS\0";
pub const SHARD: usize = 50_000;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Header {
    pub patch_nums: Vec<usize>,
    pub vocab_size: usize,
    pub token_bytes: usize,
    pub count: usize,
    pub flips: bool,
    pub class_names: Vec<String>,
    pub labels: Vec<Option<usize>>,
    #[serde(default)]
    pub captions: Option<Vec<Option<String>>>,
}

/// All shards of a folder, in memory.
pub struct TokenSet {
    pub patch_nums: Vec<usize>,
    pub vocab_size: usize,
    pub flips: bool,
    pub class_names: Vec<String>,
    pub labels: Vec<Option<usize>>,
    pub captions: Vec<Option<String>>,
    /// `count × (1 + flips) × L` indices.
    pub tokens: Vec<u32>,
}

impl TokenSet {
    /// `(train, validation)` item indices: an item is held out when a hash of its index falls
    /// below `fraction` (stable across runs). With nothing left to train on, all items train.
    pub fn split(&self, fraction: f64) -> (Vec<usize>, Vec<usize>) {
        crate::data::split_by_hash(self.len(), fraction, |i| {
            nextscale::rng::fnv1a64(&(i as u64).to_le_bytes())
        })
    }

    /// Adds the items of `other` (same patches, vocabulary and flips), their class labels
    /// shifted by `label_offset`.
    pub fn append(&mut self, other: TokenSet, label_offset: usize) -> Result<()> {
        if other.patch_nums != self.patch_nums
            || other.vocab_size != self.vocab_size
            || other.flips != self.flips
        {
            bail!(
                "the token sets differ in patches, vocabulary or flips: tokenize both with the same VQ-VAE"
            );
        }
        self.labels.extend(
            other
                .labels
                .into_iter()
                .map(|l| l.map(|l| l + label_offset)),
        );
        self.captions.extend(other.captions);
        self.tokens.extend(other.tokens);
        Ok(())
    }

    /// Up to `k` items with distinct captions, in the order given (for sample grids).
    pub fn distinct_captions(&self, order: impl Iterator<Item = usize>, k: usize) -> Vec<usize> {
        let mut seen = std::collections::BTreeSet::new();
        order
            .filter(|&i| seen.insert(self.captions[i].clone()))
            .take(k)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn seq_len(&self) -> usize {
        self.patch_nums.iter().map(|p| p * p).sum()
    }
    /// Tokens of item `i`, mirrored when `flip` (and the set has flips).
    pub fn item(&self, i: usize, flip: bool) -> &[u32] {
        let l = self.seq_len();
        let per = if self.flips { 2 } else { 1 };
        let k = i * per + usize::from(flip && self.flips);
        &self.tokens[k * l..(k + 1) * l]
    }

    pub fn open(dir: &Path) -> Result<Self> {
        let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "nxtok"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            bail!(
                "{}: no .nxtok shards (run `native-trainer prepare` first)",
                dir.display()
            );
        }
        let mut set: Option<TokenSet> = None;
        for p in &shards {
            let bytes = std::fs::read(p)?;
            let (h, body) = parse(&bytes).with_context(|| format!("reading {}", p.display()))?;
            let toks: Vec<u32> = match h.token_bytes {
                2 => body
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                    .collect(),
                _ => body
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            };
            if let Some(&bad) = toks.iter().find(|&&t| t as usize >= h.vocab_size) {
                bail!("{}: token {bad} ≥ vocabulary {}", p.display(), h.vocab_size);
            }
            let captions = h.captions.clone().unwrap_or_else(|| vec![None; h.count]);
            match &mut set {
                None => {
                    set = Some(TokenSet {
                        patch_nums: h.patch_nums,
                        vocab_size: h.vocab_size,
                        flips: h.flips,
                        class_names: h.class_names,
                        labels: h.labels,
                        captions,
                        tokens: toks,
                    })
                }
                Some(s) => {
                    if s.patch_nums != h.patch_nums
                        || s.vocab_size != h.vocab_size
                        || s.flips != h.flips
                        || s.class_names != h.class_names
                    {
                        bail!(
                            "{}: shard does not match the others (patches, vocabulary, flips or classes)",
                            p.display()
                        );
                    }
                    s.labels.extend(h.labels);
                    s.captions.extend(captions);
                    s.tokens.extend(toks);
                }
            }
        }
        Ok(set.expect("at least one shard"))
    }
}

fn parse(bytes: &[u8]) -> Result<(Header, &[u8])> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        bail!("not a nextscale token shard");
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != 1 {
        bail!("token shard version {version} is not supported (this build reads 1)");
    }
    let hl = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let body_start = 16usize
        .checked_add(hl)
        .filter(|&e| e <= bytes.len())
        .context("truncated header")?;
    let h: Header = serde_json::from_slice(&bytes[16..body_start])?;
    let l: usize = h.patch_nums.iter().map(|p| p * p).sum();
    let per = if h.flips { 2 } else { 1 };
    let want = h.count * per * l * h.token_bytes;
    let body = &bytes[body_start..];
    if !(h.token_bytes == 2 || h.token_bytes == 4)
        || body.len() != want
        || h.labels.len() != h.count
    {
        bail!(
            "token shard body is {} bytes, header implies {want}",
            body.len()
        );
    }
    Ok((h, body))
}

/// Loads a VQ-VAE from a file; the patch list comes from `--patch-nums`, else the run's
/// `config.toml` next to it, else the checkpoint's own scale count.
pub fn load_vae(
    path: &Path,
    patch_nums: Option<Vec<usize>>,
    device: &burn::tensor::Device,
) -> Result<(VqVae, nextscale::VqVaeConfig)> {
    let ck = crate::run::open_model(path, "vae")?;
    let recorded = ck.recorded_patch_nums()?;
    let pn = match patch_nums {
        Some(p) => Some(nextscale::PatchNums::new(p)?),
        None if recorded.is_some() => recorded,
        None => {
            let cfg = path.with_file_name("config.toml");
            if cfg.is_file() {
                let t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg)?)?;
                t.get("model")
                    .and_then(|m| m.get("patch_nums"))
                    .and_then(|p| p.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_integer().map(|x| x as usize))
                            .collect::<Vec<_>>()
                    })
                    .map(nextscale::PatchNums::new)
                    .transpose()?
            } else {
                None
            }
        }
    };
    let cfg = nextscale::vqvae::infer_config(&ck, pn)?;
    let (vae, cfg) = VqVae::from_checkpoint(ck, Some(cfg), device)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok((vae, cfg))
}
