//! `native-trainer train-adapter`: teach a frozen class-conditional VAR to follow prompts by
//! training only a small adapter from the caption embedding to a condition delta
//! (`cond = α·class_emb[class] + β·adapter(text)`; see `nextscale::var::adapter`). The VAR
//! and the VQ-VAE are not updated: only the adapter's parameters reach the optimizer, and
//! the VAR's parameters do not even track gradients.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use clap::Args;
use nextscale::Checkpoint;
use nextscale::params::RandomInit;
use nextscale::rng::{CounterRng, fnv1a64, stream_id};
use nextscale::sampler::{NoHooks, SampleOptions};
use nextscale::var::Var;
use nextscale::var::adapter::{AdapterConfig, TextAdapter};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig, lr_multiplier};
use crate::run::{Metrics, Progress, RunDir, read_metadata};
use crate::tokens::TokenSet;
use crate::train_var::{TokenLoader, caption_embeddings, forward, per_scale};
use crate::train_vqvae::CommonTrainArgs;
use crate::trainconf::{self, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainAdapterArgs {
    /// The frozen class-conditional VAR (a train-var `var.safetensors` or an official `.pth`).
    #[arg(long)]
    pub var: PathBuf,
    /// Token shards of a captioned data set (`prepare`).
    #[arg(long)]
    pub tokens: PathBuf,
    /// The VQ-VAE the tokens came from.
    #[arg(long)]
    pub vae: PathBuf,
    /// The sentence encoder for the captions.
    #[arg(long)]
    pub text_encoder: PathBuf,
    #[command(flatten)]
    pub common: CommonTrainArgs,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct AdapterModel {
    hidden: usize,
    alpha: f32,
    beta: f32,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct AdapterFile {
    model: AdapterModel,
    train: TrainConfig,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct TrainerState {
    step: u64,
    epoch: u64,
    offset: u64,
}

/// The adapter's metadata in its file (read back by `sample --adapter`).
pub fn adapter_config(ck: &Checkpoint) -> Result<AdapterConfig> {
    let j = ck
        .metadata()
        .get("adapter")
        .context("not an adapter file (no `adapter` metadata)")?;
    Ok(serde_json::from_str(j)?)
}

#[allow(clippy::too_many_arguments)]
/// Condition rows for `items`: α·class_emb[class] + β·adapter(caption); dropped rows get the
/// null condition.
fn rows(
    adapter: &TextAdapter,
    var: &Var,
    set: &TokenSet,
    emb: &[f32],
    dim: usize,
    items: &[usize],
    dropped: &[bool],
    dev: &Device,
) -> Result<Tensor<2>> {
    let b = items.len();
    let null = var.null_class();
    let labels: Vec<usize> = items
        .iter()
        .map(|&i| set.labels[i].filter(|&l| l < null).unwrap_or(null))
        .collect();
    let mut e = Vec::with_capacity(b * dim);
    for &i in items {
        e.extend_from_slice(&emb[i * dim..(i + 1) * dim]);
    }
    let e = Tensor::<2>::from_data(TensorData::new(e, [b, dim]), dev);
    let cond = adapter.condition(var, &labels, e)?;
    if !dropped.iter().any(|&d| d) {
        return Ok(cond);
    }
    let m: Vec<f32> = dropped.iter().map(|&d| if d { 1.0 } else { 0.0 }).collect();
    let m = Tensor::<2>::from_data(TensorData::new(m, [b, 1]), dev);
    Ok(cond * (m.clone().neg() + 1.0) + var.null_condition(b) * m)
}

pub fn run(a: TrainAdapterArgs) -> Result<()> {
    let table = a.common.table("adapter")?;
    let text = toml::to_string(&table)?;
    let file: AdapterFile = toml::from_str(&text).context("the adapter configuration")?;
    let (mc, tc) = (file.model, file.train);
    trainconf::validate(&tc)?;
    let kind: nextscale::device::BackendKind = a.common.device.parse()?;
    let plain = nextscale::device::init_device(kind)?;
    let ad = plain.clone().autodiff();

    let set = TokenSet::open(&a.tokens)?;
    let (vae, vcfg) = crate::tokens::load_vae(&a.vae, Some(set.patch_nums.clone()), &plain)?;
    let var_ck =
        Checkpoint::open(&a.var).with_context(|| format!("opening {}", a.var.display()))?;
    let vcfg_var = nextscale::var::infer_config(&var_ck, Some(vcfg.patch_nums.clone()))?;
    if vcfg_var.vocab_size != vcfg.vocab_size || vcfg_var.cvae != vcfg.z_channels {
        bail!(
            "{} does not fit this VQ-VAE (vocabulary or latent width differ)",
            a.var.display()
        );
    }
    if vcfg_var.num_classes == 0 {
        bail!(
            "{} has no class table to adapt; train-adapter needs a class-conditional VAR",
            a.var.display()
        );
    }
    // Frozen: the VAR's parameters do not require gradients.
    let (var, _) = Var::from_checkpoint(var_ck, Some(vcfg_var.clone()), &ad)?;
    let var = var.no_grad();
    let (emb, dim) = caption_embeddings(&set, &a.tokens, &a.text_encoder, &plain)?;
    let acfg = AdapterConfig {
        text_dim: dim,
        hidden: mc.hidden,
        embed_dim: vcfg_var.embed_dim,
        alpha: mc.alpha,
        beta: mc.beta,
    };
    let run = RunDir::open(&a.common.out, &text, "adapter")?;
    let (mut train_idx, mut val_idx) = (Vec::new(), Vec::new());
    for i in 0..set.len() {
        if ((fnv1a64(&(i as u64).to_le_bytes()) % 10_000) as f64) < tc.val_fraction * 10_000.0 {
            val_idx.push(i);
        } else {
            train_idx.push(i);
        }
    }
    if train_idx.is_empty() {
        train_idx = val_idx.clone();
    }
    let mut opt = AdamW::new(AdamWConfig {
        beta1: tc.beta1,
        beta2: tc.beta2,
        eps: 1e-8,
        weight_decay: tc.weight_decay,
        grad_clip: (tc.grad_clip > 0.0).then_some(tc.grad_clip),
    });
    let (mut adapter, start, epoch, offset) = match run.latest()? {
        Some((step, path)) => {
            eprintln!("resuming from {} (step {step})", path.display());
            let meta = read_metadata(&path)?;
            let st: TrainerState = serde_json::from_str(
                meta.get("trainer")
                    .context("checkpoint has no trainer state")?,
            )?;
            let mut ck = Checkpoint::open(&path)?;
            let mut mck = ck.split_prefix("model.");
            let ad_model = TextAdapter::load(&mut mck, &acfg, &ad)?;
            mck.finish()?;
            opt.load_state(&ck, "opt", &ad)?;
            (ad_model, st.step, st.epoch, st.offset)
        }
        None => (
            TextAdapter::load(&mut RandomInit::new(tc.seed), &acfg, &ad)?,
            0,
            0,
            0,
        ),
    };
    eprintln!(
        "adapter {dim} → {} → {} on a frozen VAR d{} ({} classes); {} captioned sequences ({} train, {} validation)",
        mc.hidden,
        acfg.embed_dim,
        vcfg_var.depth,
        vcfg_var.num_classes,
        set.len(),
        train_idx.len(),
        val_idx.len()
    );
    let mut metrics = Metrics::open(
        &run.root,
        &["loss", "acc", "grad_norm", "lr", "val_loss", "val_acc"],
        start,
    )?;
    let end = tc.steps.min(a.common.stop_after.unwrap_or(u64::MAX));
    if start >= end {
        eprintln!("nothing to do: the run is at step {start} of {}", tc.steps);
        return Ok(());
    }
    let mut loader = TokenLoader::new(train_idx, tc.seed, epoch, offset);
    let progress = Progress::new(start, tc.steps);
    let b = tc.batch_size;
    let rng = CounterRng::new(tc.seed);
    for step in start + 1..=end {
        let lr = tc.lr * lr_multiplier(step - 1, tc.warmup_steps, tc.steps, tc.lr_end);
        let items = loader.next(b, tc.flip);
        let ids: Vec<usize> = items.iter().map(|&(i, _)| i).collect();
        let dropped: Vec<bool> = (0..b)
            .map(|r| rng.uniform(stream_id("cond_drop", step, r as u64), 0) < tc.cond_drop)
            .collect();
        let cond = rows(&adapter, &var, &set, &emb, dim, &ids, &dropped, &ad)?;
        let (loss, ce, correct) = forward(&var, &vae, &set, &items, cond, 0.0, &plain, &ad)?;
        let loss_val = loss.clone().into_scalar::<f32>() as f64;
        if !loss_val.is_finite() {
            bail!("the loss became {loss_val} at step {step}; lower train.lr");
        }
        let mut grads = loss.backward();
        let (m, stats) = opt.step(adapter, &mut grads, lr);
        adapter = m;
        let (_, acc, _, _) = per_scale(&set.patch_nums, &ce, &correct);
        progress.update(step, &[("loss", loss_val), ("acc", acc), ("lr", lr)]);
        if step % tc.log_every == 0 || step == end {
            metrics.log(
                step,
                &[
                    ("loss", loss_val),
                    ("acc", acc),
                    ("grad_norm", stats.grad_norm),
                    ("lr", lr),
                ],
            )?;
        }
        if (step % tc.eval_every == 0 || step == tc.steps) && !val_idx.is_empty() {
            let (pv, pa) = (var.valid(), adapter.valid());
            let (mut ces, mut cors) = (Vec::new(), Vec::new());
            for chunk in val_idx.chunks(b).take(8) {
                let items: Vec<(usize, bool)> = chunk.iter().map(|&i| (i, false)).collect();
                let cond = rows(
                    &pa,
                    &pv,
                    &set,
                    &emb,
                    dim,
                    chunk,
                    &vec![false; chunk.len()],
                    &plain,
                )?;
                let (_, ce, cor) = forward(&pv, &vae, &set, &items, cond, 0.0, &plain, &plain)?;
                ces.extend(ce);
                cors.extend(cor);
            }
            let (vl, va, _, _) = per_scale(&set.patch_nums, &ces, &cors);
            metrics.log(step, &[("val_loss", vl), ("val_acc", va)])?;
            progress.note(&format!(
                "step {step}: validation loss {vl:.4}, accuracy {:.2}%",
                100.0 * va
            ));
        }
        if step % tc.sample_every == 0 || step == tc.steps {
            let (pv, pa) = (var.valid(), adapter.valid());
            let mut picks: Vec<usize> = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for &i in val_idx.iter().chain(loader.subset.iter()) {
                if picks.len() == 4 {
                    break;
                }
                if seen.insert(set.captions[i].clone()) {
                    picks.push(i);
                }
            }
            let items: Vec<usize> = picks
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i, 4))
                .collect();
            let n = items.len();
            let cond = rows(&pa, &pv, &set, &emb, dim, &items, &vec![false; n], &plain)?;
            let cond = Tensor::cat(vec![cond, pv.null_condition(n)], 0);
            let opts = SampleOptions {
                cfg: 1.5,
                top_k: 0,
                top_p: 0.0,
                seed: tc.seed.wrapping_add(step),
                more_smooth: false,
            };
            let g = nextscale::readback::block_on(nextscale::sampler::generate_with_condition(
                &pv,
                &vae.quantize,
                cond,
                &opts,
                &mut NoHooks,
            ))?;
            let px = vae
                .fhat_to_img(g.f_hat)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            crate::plot::grid(
                &run.root.join(format!("samples/step-{step:08}.png")),
                &px,
                vcfg.image_size(),
                4,
            )?;
        }
        if step % tc.ckpt_every == 0 || step == end {
            let sd = nextscale::state_dict::parameters(&adapter)?;
            let mut meta = BTreeMap::new();
            meta.insert("format".into(), "nextscale-adapter".into());
            meta.insert("adapter".into(), serde_json::to_string(&acfg)?);
            meta.insert("step".into(), step.to_string());
            run.save_model("adapter.safetensors", &sd, &meta)?;
            let mut entries: Vec<_> = sd
                .into_iter()
                .map(|mut e| {
                    e.name = format!("model.{}", e.name);
                    e
                })
                .collect();
            entries.extend(opt.state_entries("opt")?);
            let st = TrainerState {
                step,
                epoch: loader.epoch,
                offset: loader.offset,
            };
            meta.insert("trainer".into(), serde_json::to_string(&st)?);
            run.save_checkpoint(step, &entries, &meta, tc.keep_last)?;
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
                ],
            )?;
        }
    }
    eprintln!("done: {}", run.root.join("adapter.safetensors").display());
    Ok(())
}
