//! `native-trainer train-var`: the VAR transformer on token shards from `prepare`.
//!
//! Teacher forcing with the block-causal mask, cross-entropy (optional label smoothing) over
//! all tokens, condition dropout to the null class for CFG, AdamW (β 0.9/0.95, official
//! no-decay groups), warm-up then `lin0` decay, global gradient-norm clipping, per-scale loss
//! and accuracy; optional start from an official checkpoint (fine-tuning).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Args;
use nextscale::params::{RandomInit, VarInit};
use nextscale::rng::{CounterRng, fnv1a64, stream_id};
use nextscale::sampler::{NoHooks, SampleOptions};
use nextscale::var::Var;
use nextscale::{Checkpoint, VarConfig, VqVae};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, lr_multiplier};
use crate::run::{Metrics, Progress, RunDir};
use crate::tokens::TokenSet;
use crate::train_vqvae::CommonTrainArgs;
use crate::trainconf::{self, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainVarArgs {
    /// Token shards written by `native-trainer prepare`.
    #[arg(long)]
    pub tokens: PathBuf,
    /// The VQ-VAE the tokens came from (builds the teacher-forcing inputs and decodes samples).
    #[arg(long)]
    pub vae: PathBuf,
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Start from this VAR checkpoint (e.g. an official `var_d16.pth`) instead of a fresh
    /// initialisation; its architecture replaces the preset's.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Train a text-conditioned model on the captions, embedded by this sentence encoder
    /// (a sentence-transformers folder such as all-MiniLM-L6-v2).
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VarModelConfig {
    pub depth: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub norm_eps: f64,
    pub init_adaln: f32,
    pub init_adaln_gamma: f32,
    pub init_head: f32,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct VarFile {
    model: VarModelConfig,
    train: TrainConfig,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct TrainerState {
    step: u64,
    epoch: u64,
    offset: u64,
}

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

#[allow(clippy::too_many_arguments)]
/// One teacher-forced forward: mean loss (for backward) and the per-token CE and
/// correctness read back for metrics.
pub(crate) fn forward(
    var: &Var,
    vae: &VqVae,
    set: &TokenSet,
    items: &[(usize, bool)],
    cond: Tensor<2>,
    label_smooth: f64,
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
    let logp = log_softmax(logits.clone(), 2);
    let nll = logp.clone().gather(2, gt.unsqueeze_dim::<3>(2)).neg(); // [B, L, 1]
    let ce = if label_smooth > 0.0 {
        nll * (1.0 - label_smooth) + logp.mean_dim(2).neg() * label_smooth
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
    Ok((ce.mean(), ce_host, correct))
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
    /// Condition rows `[B, C]` for `items`; rows with `dropped` get the null condition.
    pub fn rows(
        &self,
        var: &Var,
        set: &TokenSet,
        items: &[usize],
        dropped: &[bool],
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
                let cond = var.text_condition(caption_rows(emb, *dim, items, dev))?;
                Ok(null_where_dropped(var, cond, dropped, dev))
            }
        }
    }
}

/// The caption embeddings of `items`, `[B, dim]`.
pub(crate) fn caption_rows(emb: &[f32], dim: usize, items: &[usize], dev: &Device) -> Tensor<2> {
    let mut rows = Vec::with_capacity(items.len() * dim);
    for &i in items {
        rows.extend_from_slice(&emb[i * dim..(i + 1) * dim]);
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

/// Mean CE and accuracy on (up to 8 batches of) the validation items, with the model's
/// conditions for each batch from `cond`.
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
    for chunk in val_idx.chunks(b).take(8) {
        let items: Vec<(usize, bool)> = chunk.iter().map(|&i| (i, false)).collect();
        let (_, ce, cor) = forward(var, vae, set, &items, cond(chunk)?, 0.0, device, device)?;
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

pub fn run(a: TrainVarArgs) -> Result<()> {
    let table = a.common.table("var")?;
    let text = toml::to_string(&table)?;
    let file: VarFile = toml::from_str(&text).context("the VAR configuration")?;
    let (mc, tc) = (file.model, file.train);
    trainconf::validate(&tc)?;
    let kind: nextscale::device::BackendKind = a.common.device.parse()?;
    let plain = nextscale::device::init_device(kind)?;
    let ad = plain.clone().autodiff();

    let set = TokenSet::open(&a.tokens)?;
    let (vae, vcfg) = crate::tokens::load_vae(&a.vae, Some(set.patch_nums.clone()), &plain)?;
    if vcfg.vocab_size != set.vocab_size {
        bail!(
            "the tokens were made with a {}-code VQ-VAE but {} has {} codes",
            set.vocab_size,
            a.vae.display(),
            vcfg.vocab_size
        );
    }
    let text_emb = match &a.text_encoder {
        Some(dir) => {
            let (emb, dim) = caption_embeddings(&set, &a.tokens, dir, &plain)?;
            Some((emb, dim))
        }
        None => None,
    };
    let num_classes = if text_emb.is_some() {
        0
    } else {
        set.class_names.len().max(1)
    };
    let conditional = !set.class_names.is_empty() && text_emb.is_none();
    let mut cfg = VarConfig {
        depth: mc.depth,
        embed_dim: mc.embed_dim,
        num_heads: mc.num_heads,
        mlp_ratio: mc.mlp_ratio,
        vocab_size: vcfg.vocab_size,
        cvae: vcfg.z_channels,
        num_classes,
        norm_eps: mc.norm_eps,
        patch_nums: vcfg.patch_nums.clone(),
        text_dim: text_emb.as_ref().map(|t| t.1).unwrap_or(0),
    };
    let conditioning = match text_emb {
        Some((emb, dim)) => Conditioning::Text { emb, dim },
        None => Conditioning::Classes,
    };
    let init_ck = match &a.init {
        Some(p) => {
            let ck = crate::run::open_model(p, "var")?;
            let icfg = nextscale::var::infer_config(&ck, Some(vcfg.patch_nums.clone()))?;
            // The data's classes are used as the checkpoint's class ids 0..k (k may be fewer).
            let classes_fit = if cfg.text_dim > 0 {
                icfg.text_dim == cfg.text_dim
            } else {
                icfg.text_dim == 0 && cfg.num_classes <= icfg.num_classes
            };
            if icfg.vocab_size != cfg.vocab_size || icfg.cvae != cfg.cvae || !classes_fit {
                bail!(
                    "{} has vocabulary {}, latent {}, {} classes, text width {}; the data needs {}, {}, {} classes (at most), text width {}",
                    p.display(),
                    icfg.vocab_size,
                    icfg.cvae,
                    icfg.num_classes,
                    icfg.text_dim,
                    cfg.vocab_size,
                    cfg.cvae,
                    cfg.num_classes,
                    cfg.text_dim
                );
            }
            cfg = icfg;
            Some(ck)
        }
        None => None,
    };
    cfg.validate()?;
    let run = RunDir::open(&a.common.out, &text, "var")?;
    let (train_idx, val_idx) = set.split(tc.val_fraction);
    eprintln!(
        "tokens: {} sequences of {} ({} train, {} validation), {}, VAR depth {} width {} ({:.1} M parameters)",
        set.len(),
        set.seq_len(),
        train_idx.len(),
        val_idx.len(),
        match (&conditioning, conditional) {
            (Conditioning::Text { dim, .. }, _) =>
                format!("conditioned on {dim}-d caption embeddings"),
            (_, true) => format!("{num_classes} classes"),
            _ => "unconditional".to_string(),
        },
        cfg.depth,
        cfg.embed_dim,
        cfg.num_params() as f64 / 1e6
    );
    let mut opt = AdamW::new(tc.adamw());
    let (mut var, start, epoch, offset) = match run.resume::<TrainerState>()? {
        Some((st, mut ck)) => {
            let mut mck = ck.split_prefix("model.");
            let var = Var::load(&mut mck, &cfg, &ad)?;
            mck.finish()?;
            opt.load_state(&ck, "opt", &ad)?;
            (var, st.step, st.epoch, st.offset)
        }
        None => {
            let var = match init_ck {
                Some(mut ck) => {
                    let v = Var::load(&mut ck, &cfg, &ad)?;
                    ck.finish()?;
                    v
                }
                None => Var::load(
                    &mut VarInit {
                        inner: RandomInit::new(tc.seed),
                        depth: cfg.depth,
                        init_adaln: mc.init_adaln,
                        init_adaln_gamma: mc.init_adaln_gamma,
                        init_head: mc.init_head,
                    },
                    &cfg,
                    &ad,
                )?,
            };
            (var, 0, 0, 0)
        }
    };
    let s = cfg.patch_nums.num_scales();
    let mut columns: Vec<String> = [
        "loss",
        "acc",
        "grad_norm",
        "lr",
        "tok_per_s",
        "val_loss",
        "val_acc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for si in 0..s {
        columns.push(format!("loss_s{si}"));
        columns.push(format!("acc_s{si}"));
    }
    let col_refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut metrics = Metrics::open(&run.root, &col_refs, start)?;
    let end = tc.steps.min(a.common.stop_after.unwrap_or(u64::MAX));
    if start >= end {
        eprintln!("nothing to do: the run is at step {start} of {}", tc.steps);
        return Ok(());
    }
    let mut loader = TokenLoader::new(train_idx, tc.seed, epoch, offset);
    let progress = Progress::new(start, tc.steps);
    let b = tc.batch_size;
    let rng = CounterRng::new(tc.seed);
    let null = cfg.num_classes;
    let mut t_log = Instant::now();
    let mut toks_since = 0usize;
    for step in start + 1..=end {
        let lr = tc.lr * lr_multiplier(step - 1, tc.warmup_steps, tc.steps, tc.lr_end);
        let items = loader.next(b, tc.flip);
        let dropped: Vec<bool> = (0..b)
            .map(|r| rng.uniform(stream_id("cond_drop", step, r as u64), 0) < tc.cond_drop)
            .collect();
        let ids: Vec<usize> = items.iter().map(|&(i, _)| i).collect();
        let cond = conditioning.rows(&var, &set, &ids, &dropped, &ad)?;
        let (loss, ce, correct) =
            forward(&var, &vae, &set, &items, cond, tc.label_smooth, &plain, &ad)?;
        let loss_val = loss.clone().into_scalar::<f32>() as f64;
        if !loss_val.is_finite() {
            bail!("the loss became {loss_val} at step {step}; lower train.lr");
        }
        let mut grads = loss.backward();
        let (v, stats) = opt.step(var, &mut grads, lr);
        var = v;
        if stats.updated == 0 {
            bail!("no parameter received a gradient");
        }
        let (_, acc, loss_s, acc_s) = per_scale(&set.patch_nums, &ce, &correct);
        toks_since += b * set.seq_len();
        progress.update(step, &[("loss", loss_val), ("acc", acc), ("lr", lr)]);
        if step % tc.log_every == 0 || step == end {
            let tps = toks_since as f64 / t_log.elapsed().as_secs_f64().max(1e-9);
            let mut row: Vec<(String, f64)> = vec![
                ("loss".into(), loss_val),
                ("acc".into(), acc),
                ("grad_norm".into(), stats.grad_norm),
                ("lr".into(), lr),
                ("tok_per_s".into(), tps),
            ];
            for si in 0..s {
                row.push((format!("loss_s{si}"), loss_s[si]));
                row.push((format!("acc_s{si}"), acc_s[si]));
            }
            let r: Vec<(&str, f64)> = row.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            metrics.log(step, &r)?;
            t_log = Instant::now();
            toks_since = 0;
        }
        if (step % tc.eval_every == 0 || step == tc.steps) && !val_idx.is_empty() {
            let pv = var.valid();
            let (vl, va) = validate(&pv, &vae, &set, &val_idx, b, &plain, |chunk| {
                conditioning.rows(&pv, &set, chunk, &vec![false; chunk.len()], &plain)
            })?;
            metrics.log(step, &[("val_loss", vl), ("val_acc", va)])?;
            progress.note(&format!(
                "step {step}: validation loss {vl:.4}, accuracy {:.2}%",
                100.0 * va
            ));
        }
        if step % tc.sample_every == 0 || step == tc.steps {
            let pv = var.valid();
            let opts = SampleOptions {
                cfg: if conditional || matches!(conditioning, Conditioning::Text { .. }) {
                    1.5
                } else {
                    0.0
                },
                top_k: 0,
                top_p: 0.0,
                seed: tc.seed.wrapping_add(step),
                more_smooth: false,
            };
            let (cond, per) = match &conditioning {
                Conditioning::Text { .. } => {
                    // Four samples for each of the first four distinct captions.
                    let picks =
                        set.distinct_captions(val_idx.iter().chain(&loader.subset).copied(), 4);
                    let items: Vec<usize> = picks
                        .iter()
                        .flat_map(|&i| std::iter::repeat_n(i, 4))
                        .collect();
                    let rows =
                        conditioning.rows(&pv, &set, &items, &vec![false; items.len()], &plain)?;
                    let n = items.len();
                    (Tensor::cat(vec![rows, pv.null_condition(n)], 0), 4)
                }
                Conditioning::Classes => {
                    let classes: Vec<usize> = if conditional {
                        (0..num_classes.min(8)).collect()
                    } else {
                        vec![null]
                    };
                    let per = if classes.len() == 1 { 8 } else { 4 };
                    let labels: Vec<usize> = classes
                        .iter()
                        .flat_map(|&c| std::iter::repeat_n(c, per))
                        .collect();
                    (nextscale::sampler::class_condition(&pv, &labels)?, per)
                }
            };
            let path = run.root.join(format!("samples/step-{step:08}.png"));
            sample_grid(&pv, &vae, cond, &opts, &path, per)?;
        }
        if step % tc.ckpt_every == 0 || step == end {
            let sd = var.state_dict()?;
            let mut meta = BTreeMap::new();
            meta.insert("format".into(), "nextscale-var".into());
            meta.insert("patch_nums".into(), serde_json::to_string(&var.patch_nums)?);
            meta.insert("step".into(), step.to_string());
            if conditional {
                meta.insert(
                    "class_names".into(),
                    serde_json::to_string(&set.class_names)?,
                );
            }
            run.save_model("var.safetensors", &sd, &meta)?;
            let st = TrainerState {
                step,
                epoch: loader.epoch,
                offset: loader.offset,
            };
            run.save_state(step, sd, opt.state_entries("opt")?, meta, &st, tc.keep_last)?;
            crate::plot::curves(
                &run.root.join("curves.png"),
                &[
                    (
                        "LOSS",
                        vec![
                            ("TRAIN", metrics.series("loss")),
                            ("VAL", metrics.series("val_loss")),
                        ],
                    ),
                    (
                        "ACCURACY",
                        vec![
                            ("TRAIN", metrics.series("acc")),
                            ("VAL", metrics.series("val_acc")),
                        ],
                    ),
                    (
                        "LOSS PER SCALE",
                        (0..s.min(6))
                            .map(|si| {
                                (
                                    ["S0", "S1", "S2", "S3", "S4", "S5"][si],
                                    metrics.series(&format!("loss_s{si}")),
                                )
                            })
                            .collect(),
                    ),
                ],
            )?;
        }
    }
    if conditional {
        std::fs::write(
            run.root.join("class_names.txt"),
            set.class_names.join("\n") + "\n",
        )?;
    }
    eprintln!("done: {}", run.root.join("var.safetensors").display());
    Ok(())
}
