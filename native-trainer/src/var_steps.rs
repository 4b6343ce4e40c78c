//! The steps of VAR training on token shards that every VAR task shares: batches, the
//! teacher-forced forward, condition rows, validation, sample grids, per-scale metrics.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use nextscale::rng::{CounterRng, fnv1a64, stream_id};
use nextscale::sampler::{NoHooks, SampleOptions};
use nextscale::var::Var;
use nextscale::{Checkpoint, VqVae};

use crate::tokens::TokenSet;

/// Deterministic shuffled batches of token sequences.
pub(crate) struct TokenLoader {
    pub(crate) subset: Vec<usize>,
    seed: u64,
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    perm: Vec<usize>,
}

impl TokenLoader {
    pub(crate) fn new(subset: Vec<usize>, seed: u64, epoch: u64, offset: u64) -> Self {
        let mut l = Self {
            subset,
            seed,
            epoch,
            offset,
            perm: Vec::new(),
        };
        l.perm = crate::data::permutation(seed, epoch, l.subset.len());
        l
    }
    /// `(items, flips)` of the next batch.
    pub(crate) fn next(&mut self, b: usize, flip: bool) -> Vec<(usize, bool)> {
        let rng = CounterRng::new(self.seed);
        (0..b)
            .map(|_| {
                let item = self.subset[self.perm[self.offset as usize]];
                let f = flip && rng.uniform(stream_id("flip", self.epoch, self.offset), 0) < 0.5;
                self.offset += 1;
                if self.offset as usize == self.subset.len() {
                    self.epoch += 1;
                    self.offset = 0;
                    self.perm = crate::data::permutation(self.seed, self.epoch, self.subset.len());
                }
                (item, f)
            })
            .collect()
    }
}

/// Per-scale token maps `[B, pn²]` and the flat targets `[B, L]` of a batch.
fn batch_tokens(
    set: &TokenSet,
    items: &[(usize, bool)],
    device: &Device,
) -> (Vec<Tensor<2, Int>>, Vec<i64>) {
    let b = items.len();
    let l = set.seq_len();
    let mut flat = Vec::with_capacity(b * l);
    for &(i, f) in items {
        flat.extend(set.item(i, f).iter().map(|&t| t as i64));
    }
    let mut per = Vec::new();
    let mut start = 0;
    for &pn in &set.patch_nums {
        let m = pn * pn;
        let mut v = Vec::with_capacity(b * m);
        for r in 0..b {
            v.extend_from_slice(&flat[r * l + start..r * l + start + m]);
        }
        per.push(Tensor::<2, Int>::from_data(
            TensorData::new(v, [b, m]),
            device,
        ));
        start += m;
    }
    (per, flat)
}

/// How the per-token cross-entropies become the training loss; built once per run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TokenLoss {
    /// Label smoothing (0 = off).
    pub label_smooth: f64,
    /// Per-token weights of the sequence ([`scale_weights`]); `None` is the official VAR's
    /// plain mean (`scale_balance = 0`).
    pub weights: Option<Vec<f32>>,
}

impl TokenLoss {
    pub(crate) fn new(label_smooth: f64, scale_balance: f64, patch_nums: &[usize]) -> Self {
        Self {
            label_smooth,
            weights: (scale_balance != 0.0).then(|| scale_weights(patch_nums, scale_balance)),
        }
    }
}

/// Per-token loss weights for a sequence of `patch_nums` scales: a token of a scale with `n`
/// tokens weighs `n^-balance`, scaled so that the weights average 1 over the sequence (so
/// `balance = 0` is the plain mean and the loss keeps its size). With `balance = 1` the single
/// token of the first scale weighs as much as the whole last scale, which is where a small
/// model spends too little when it must tell many similar images apart by their coarse layout.
pub(crate) fn scale_weights(patch_nums: &[usize], balance: f64) -> Vec<f32> {
    let sizes: Vec<f64> = patch_nums.iter().map(|&pn| (pn * pn) as f64).collect();
    let len: f64 = sizes.iter().sum();
    let total: f64 = sizes.iter().map(|n| n * n.powf(-balance)).sum();
    sizes
        .iter()
        .flat_map(|&n| std::iter::repeat_n((n.powf(-balance) * len / total) as f32, n as usize))
        .collect()
}

#[allow(clippy::too_many_arguments)]
/// One teacher-forced forward: the loss (for backward; weighted by [`TokenLoss`]) and the
/// per-token CE and correctness read back for metrics (unweighted, so that runs with different
/// [`TokenLoss`] compare).
pub(crate) fn forward(
    var: &Var,
    vae: &VqVae,
    set: &TokenSet,
    items: &[(usize, bool)],
    cond: Tensor<2>,
    shape: &TokenLoss,
    plain: &Device,
    dev: &Device,
) -> Result<(Tensor<1>, Vec<f32>, Vec<bool>)> {
    let b = items.len();
    let l = set.seq_len();
    let (per, flat) = batch_tokens(set, items, plain);
    let x = vae.quantize.idx_to_var_input(&per);
    // The frozen VQ-VAE runs without autodiff; its output joins the training graph as a leaf
    // without a host round trip.
    let x = if dev == plain { x } else { x.autodiff() };
    let logits = var.forward_teacher_cond(cond, x, None); // [B, L, V]
    let gt = Tensor::<2, Int>::from_data(TensorData::new(flat.clone(), [b, l]), dev);
    let logp = nextscale::kernels::log_softmax(logits.clone());
    let nll = logp.clone().gather(2, gt.unsqueeze_dim::<3>(2)).neg(); // [B, L, 1]
    let ce = if shape.label_smooth > 0.0 {
        nll * (1.0 - shape.label_smooth) + logp.mean_dim(2).neg() * shape.label_smooth
    } else {
        nll
    };
    let ce_host = ce
        .clone()
        .detach()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let pred = logits
        .detach()
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let correct = pred.iter().zip(&flat).map(|(a, b)| a == b).collect();
    let loss = match &shape.weights {
        None => ce.mean(),
        Some(w) => (ce * Tensor::<3>::from_data(TensorData::new(w.clone(), [1, l, 1]), dev)).mean(),
    };
    Ok((loss, ce_host, correct))
}

/// What conditions the model: class ids, or text embeddings of the captions.
pub enum Conditioning {
    Classes,
    /// Unit-length caption embeddings, `items × dim`, row-major.
    Text {
        emb: Vec<f32>,
        dim: usize,
    },
}

impl Conditioning {
    /// Condition rows `[B, C]` for `items`; rows with `dropped` get the null condition, and
    /// caption embeddings get `noise` (training only).
    pub fn rows(
        &self,
        var: &Var,
        set: &TokenSet,
        items: &[usize],
        dropped: &[bool],
        noise: Option<&TextNoise>,
        dev: &Device,
    ) -> Result<Tensor<2>> {
        match self {
            Conditioning::Classes => {
                let null = var.null_class();
                let labels: Vec<usize> = items
                    .iter()
                    .zip(dropped)
                    .map(|(&i, &d)| {
                        if d {
                            null
                        } else {
                            set.labels[i].unwrap_or(0).min(null.saturating_sub(1))
                        }
                    })
                    .collect();
                Ok(var.class_embedding(var.labels(&labels, dev)?))
            }
            Conditioning::Text { emb, dim } => {
                let cond = var.text_condition(caption_rows(emb, *dim, items, noise, dev))?;
                Ok(null_where_dropped(var, cond, dropped, dev))
            }
        }
    }
}

/// Gaussian noise on the caption embeddings of one training step (`train.text_noise`): row
/// `r`'s embedding `e` becomes `e + σ·n`, `n ~ N(0, I/dim)` (so `|n| ≈ 1`), scaled back to
/// `|e|`. Its cosine to `e` is about `1/√(1+σ²)`. It asks the model for the same image from
/// every caption near a training caption, not only from the caption itself.
pub(crate) struct TextNoise<'a> {
    pub sigma: f64,
    pub rng: &'a CounterRng,
    pub step: u64,
}

/// The caption embeddings of `items`, `[B, dim]`, with `noise` if given.
pub(crate) fn caption_rows(
    emb: &[f32],
    dim: usize,
    items: &[usize],
    noise: Option<&TextNoise>,
    dev: &Device,
) -> Tensor<2> {
    let mut rows = Vec::with_capacity(items.len() * dim);
    for (r, &i) in items.iter().enumerate() {
        let e = &emb[i * dim..(i + 1) * dim];
        match noise {
            Some(n) if n.sigma > 0.0 => {
                let stream = stream_id("text_noise", n.step, r as u64);
                let scale = n.sigma / (dim as f64).sqrt();
                let v: Vec<f64> = e
                    .iter()
                    .enumerate()
                    .map(|(j, &x)| x as f64 + scale * n.rng.normal(stream, j as u64))
                    .collect();
                let ne = e.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                let k = if nv > 0.0 { ne / nv } else { 1.0 };
                rows.extend(v.iter().map(|&x| (x * k) as f32));
            }
            _ => rows.extend_from_slice(e),
        }
    }
    Tensor::from_data(TensorData::new(rows, [items.len(), dim]), dev)
}

/// `cond` `[B, C]` with the rows where `dropped` replaced by the null condition (CFG dropout).
pub(crate) fn null_where_dropped(
    var: &Var,
    cond: Tensor<2>,
    dropped: &[bool],
    dev: &Device,
) -> Tensor<2> {
    if !dropped.iter().any(|&d| d) {
        return cond;
    }
    let b = dropped.len();
    let m: Vec<f32> = dropped.iter().map(|&d| if d { 1.0 } else { 0.0 }).collect();
    let m = Tensor::<2>::from_data(TensorData::new(m, [b, 1]), dev);
    cond * (m.clone().neg() + 1.0) + var.null_condition(b) * m
}

/// Caption embeddings of every item, computed once and cached next to the token shards.
pub(crate) fn caption_embeddings(
    set: &TokenSet,
    tokens_dir: &std::path::Path,
    encoder_dir: &std::path::Path,
    plain: &Device,
) -> Result<(Vec<f32>, usize)> {
    let captions: Vec<&str> = set
        .captions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.as_deref().with_context(|| {
                format!("item {i} has no caption; text training needs metadata.jsonl/csv captions")
            })
        })
        .collect::<Result<_>>()?;
    let mut fp = Vec::new();
    for f in ["config.json", "vocab.txt", "vocab.json", "merges.txt"] {
        if let Ok(b) = std::fs::read(encoder_dir.join(f)) {
            fp.extend(b);
        }
    }
    fp.extend(
        std::fs::metadata(encoder_dir.join("model.safetensors"))?
            .len()
            .to_le_bytes(),
    );
    for c in &captions {
        fp.extend(c.as_bytes());
        fp.push(0);
    }
    let cache = tokens_dir.join(format!("text-embeddings-{:016x}.safetensors", fnv1a64(&fp)));
    if let Ok(ck) = Checkpoint::open(&cache)
        && let Ok(t) = ck.read_f32("embeddings")
        && t.shape.len() == 2
        && t.shape[0] == captions.len()
    {
        return Ok((t.data, t.shape[1]));
    }
    let t0 = Instant::now();
    let enc = nextscale::text::TextEncoder::open(encoder_dir, plain)
        .with_context(|| format!("loading {}", encoder_dir.display()))?;
    let dim = enc.dim();
    let mut all = Vec::with_capacity(captions.len() * dim);
    for chunk in captions.chunks(64) {
        let e = enc.embed(chunk, plain)?;
        all.extend(
            e.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    let mut bytes = Vec::new();
    nextscale::state_dict::write_safetensors(
        &mut bytes,
        &[nextscale::state_dict::Entry::f32(
            "embeddings",
            vec![captions.len(), dim],
            all.clone(),
        )],
        None,
    )?;
    crate::run::write_atomic(&cache, &bytes)?;
    eprintln!(
        "embedded {} captions in {:.1} s (cached in {})",
        captions.len(),
        t0.elapsed().as_secs_f64(),
        cache.display()
    );
    Ok((all, dim))
}

/// How many validation items are scored: the first `VAL_ITEMS` held-out ones, whatever the
/// batch size, so that runs with different batch sizes report comparable validation figures.
pub(crate) const VAL_ITEMS: usize = 256;

/// Mean CE and accuracy on the first [`VAL_ITEMS`] validation items, in batches of `b`, with
/// the model's conditions for each batch from `cond`.
pub(crate) fn validate(
    var: &Var,
    vae: &VqVae,
    set: &TokenSet,
    val_idx: &[usize],
    b: usize,
    device: &Device,
    cond: impl Fn(&[usize]) -> Result<Tensor<2>>,
) -> Result<(f64, f64)> {
    let (mut ces, mut cors) = (Vec::new(), Vec::new());
    for chunk in val_idx[..val_idx.len().min(VAL_ITEMS)].chunks(b) {
        let items: Vec<(usize, bool)> = chunk.iter().map(|&i| (i, false)).collect();
        let (_, ce, cor) = forward(
            var,
            vae,
            set,
            &items,
            cond(chunk)?,
            &TokenLoss::default(),
            device,
            device,
        )?;
        ces.extend(ce);
        cors.extend(cor);
    }
    let (loss, acc, _, _) = per_scale(&set.patch_nums, &ces, &cors);
    Ok((loss, acc))
}

/// Samples images for CFG condition rows `cond` (`[2B, C]`) and writes them as a grid of
/// `cols` columns.
pub(crate) fn sample_grid(
    var: &Var,
    vae: &VqVae,
    cond: Tensor<2>,
    opts: &SampleOptions,
    path: &std::path::Path,
    cols: usize,
) -> Result<()> {
    let g = nextscale::readback::block_on(nextscale::sampler::generate_with_condition(
        var,
        &vae.quantize,
        cond,
        opts,
        &mut NoHooks,
    ))?;
    let img = vae.fhat_to_img(g.f_hat);
    let size = img.dims()[2];
    let px = img
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    crate::plot::grid(path, &px, size, cols)
}

/// Mean CE and accuracy overall and per scale from per-token values.
pub(crate) fn per_scale(
    patch_nums: &[usize],
    ce: &[f32],
    correct: &[bool],
) -> (f64, f64, Vec<f64>, Vec<f64>) {
    let l: usize = patch_nums.iter().map(|p| p * p).sum();
    let b = ce.len() / l;
    let mut loss_s = Vec::new();
    let mut acc_s = Vec::new();
    let mut start = 0;
    for &pn in patch_nums {
        let m = pn * pn;
        let (mut sl, mut sa) = (0.0f64, 0usize);
        for r in 0..b {
            for t in start..start + m {
                sl += ce[r * l + t] as f64;
                sa += correct[r * l + t] as usize;
            }
        }
        loss_s.push(sl / (b * m) as f64);
        acc_s.push(sa as f64 / (b * m) as f64);
        start += m;
    }
    let loss = ce.iter().map(|&x| x as f64).sum::<f64>() / ce.len() as f64;
    let acc = correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64;
    (loss, acc, loss_s, acc_s)
}

#[cfg(test)]
mod tests {
    use super::{TextNoise, caption_rows, scale_weights};
    use nextscale::rng::CounterRng;

    #[test]
    fn caption_noise_keeps_the_length_and_turns_by_the_expected_angle() {
        let dim = 384;
        let dev = Default::default();
        // Two unit captions, each used twice in the batch.
        let mut emb = vec![0f32; 2 * dim];
        emb[0] = 1.0;
        for x in &mut emb[dim..] {
            *x = 1.0 / (dim as f32).sqrt();
        }
        let items = [0, 1, 0, 1];
        let rows = |noise: Option<&TextNoise>| -> Vec<f32> {
            caption_rows(&emb, dim, &items, noise, &dev)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let clean = rows(None);
        assert_eq!(&clean[..dim], &emb[..dim]);
        let rng = CounterRng::new(7);
        let (sigma, step) = (0.5, 3);
        let noisy = rows(Some(&TextNoise {
            sigma,
            rng: &rng,
            step,
        }));
        assert_eq!(
            noisy,
            rows(Some(&TextNoise {
                sigma,
                rng: &rng,
                step
            }))
        );
        assert_ne!(
            noisy,
            rows(Some(&TextNoise {
                sigma,
                rng: &rng,
                step: 4
            }))
        );
        // Each row its own draw: the two copies of caption 0 differ.
        assert_ne!(&noisy[..dim], &noisy[2 * dim..3 * dim]);
        let expected = 1.0 / (1.0 + sigma * sigma).sqrt();
        for r in 0..items.len() {
            let (a, b) = (
                &clean[r * dim..(r + 1) * dim],
                &noisy[r * dim..(r + 1) * dim],
            );
            let norm = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            let cos = a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / norm;
            assert!((norm - 1.0).abs() < 1e-5, "row {r}: length {norm}");
            assert!(
                (cos as f64 - expected).abs() < 0.05,
                "row {r}: cosine {cos}, expected {expected:.3}"
            );
        }
        assert_eq!(
            rows(Some(&TextNoise {
                sigma: 0.0,
                rng: &rng,
                step
            })),
            clean
        );
    }

    #[test]
    fn scale_weights_average_one_and_balance_the_scales() {
        let pns = [1, 2, 3, 4, 6, 8, 11, 16];
        let len: usize = pns.iter().map(|p| p * p).sum();
        for balance in [0.0, 0.5, 1.0, 1.5, 2.0] {
            let w = scale_weights(&pns, balance);
            assert_eq!(w.len(), len);
            let mean = w.iter().map(|&x| x as f64).sum::<f64>() / len as f64;
            assert!((mean - 1.0).abs() < 1e-6, "balance {balance}: mean {mean}");
        }
        assert!(scale_weights(&pns, 0.0).iter().all(|&x| x == 1.0));
        // balance 1: each scale's weights sum to the same total.
        let w = scale_weights(&pns, 1.0);
        let mut start = 0;
        for pn in pns {
            let n = pn * pn;
            let total: f32 = w[start..start + n].iter().sum();
            assert!((total - len as f32 / pns.len() as f32).abs() < 1e-3);
            start += n;
        }
        // above 1: the single coarsest token outweighs the whole finest scale, several times.
        let w = scale_weights(&pns, 1.5);
        assert!(
            w[0] > 4.0 * 256.0 * w[len - 1],
            "{} vs {}",
            w[0],
            w[len - 1]
        );
    }
}
