//! `native-trainer train-adapter`: teach a frozen class-conditional VAR to follow prompts by
//! training only a small adapter from the caption embedding to a condition delta
//! (`cond = α·class_emb[class] + β·adapter(text)`; see `nextscale::var::adapter`). The VAR
//! and the VQ-VAE are not updated: only the adapter's parameters reach the optimizer, and
//! the VAR's parameters do not even track gradients.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use clap::Args;
use nextscale::Checkpoint;
use nextscale::params::RandomInit;
use nextscale::rng::{CounterRng, stream_id};
use nextscale::sampler::SampleOptions;
use nextscale::var::Var;
use nextscale::var::adapter::{AdapterConfig, TextAdapter};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, lr_multiplier};
use crate::run::{Metrics, Progress, RunDir};
use crate::tokens::TokenSet;
use crate::train_var::{
    TokenLoader, caption_embeddings, caption_rows, forward, null_where_dropped, per_scale,
    sample_grid, validate,
};
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
    let null = var.null_class();
    let labels: Vec<usize> = items
        .iter()
        .map(|&i| set.labels[i].filter(|&l| l < null).unwrap_or(null))
        .collect();
    let cond = adapter.condition(var, &labels, caption_rows(emb, dim, items, dev))?;
    Ok(null_where_dropped(var, cond, dropped, dev))
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
    let (train_idx, val_idx) = set.split(tc.val_fraction);
    let mut opt = AdamW::new(tc.adamw());
    let (mut adapter, start, epoch, offset) = match run.resume::<TrainerState>()? {
        Some((st, mut ck)) => {
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
            let no_drop = vec![false; b];
            let (vl, va) = validate(&pv, &vae, &set, &val_idx, b, &plain, |chunk| {
                rows(
                    &pa,
                    &pv,
                    &set,
                    &emb,
                    dim,
                    chunk,
                    &no_drop[..chunk.len()],
                    &plain,
                )
            })?;
            metrics.log(step, &[("val_loss", vl), ("val_acc", va)])?;
            progress.note(&format!(
                "step {step}: validation loss {vl:.4}, accuracy {:.2}%",
                100.0 * va
            ));
        }
        if step % tc.sample_every == 0 || step == tc.steps {
            let (pv, pa) = (var.valid(), adapter.valid());
            let picks = set.distinct_captions(val_idx.iter().chain(&loader.subset).copied(), 4);
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
            let path = run.root.join(format!("samples/step-{step:08}.png"));
            sample_grid(&pv, &vae, cond, &opts, &path, 4)?;
        }
        if step % tc.ckpt_every == 0 || step == end {
            let sd = nextscale::state_dict::parameters(&adapter)?;
            let mut meta = BTreeMap::new();
            meta.insert("format".into(), "nextscale-adapter".into());
            meta.insert("adapter".into(), serde_json::to_string(&acfg)?);
            meta.insert("step".into(), step.to_string());
            run.save_model("adapter.safetensors", &sd, &meta)?;
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
                ],
            )?;
        }
    }
    eprintln!("done: {}", run.root.join("adapter.safetensors").display());
    Ok(())
}
