//! The VAR training loop, shared by `train-var` (the whole VAR), `train-adapter` (a text
//! adapter on a frozen VAR) and `train-lora` (LoRA updates and new class rows): a task says
//! what is trained, how condition rows are made and what its result file holds; the loop owns
//! the data order, the schedule, condition dropout, the finite-loss check, logging (per scale
//! and tokens per second), validation, sample grids, checkpoints and resuming.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use nextscale::rng::{CounterRng, stream_id};
use nextscale::sampler::SampleOptions;
use nextscale::state_dict::Entry;
use nextscale::var::Var;
use nextscale::{Checkpoint, VqVae};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, lr_multiplier};
use crate::run::{Metrics, Progress, RunDir};
use crate::tokens::TokenSet;
use crate::trainconf::TrainConfig;
use crate::var_steps::{TokenLoader, forward, per_scale, sample_grid, validate};

/// What a VAR training task trains.
pub trait VarTask {
    /// The trained parameters (and whatever model they change).
    type Model: Module;
    /// Run kind (`adapter`, `lora`) and the file its result is saved to.
    const KIND: &'static str;
    const FILE: &'static str;

    /// A fresh model (`ck` = None) or the one saved in a checkpoint's `model.` tensors.
    fn load(&self, ck: Option<Checkpoint>, device: &Device) -> Result<Self::Model>;
    /// The VAR that runs the forward pass: the frozen base, or the base with the updates;
    /// `train` = on the autodiff device (else `model` is its `valid()` copy).
    fn var<'a>(&'a self, model: &'a Self::Model, train: bool) -> &'a Var;
    /// Condition rows `[B, C]` for `items`; `dropped` rows get the null condition.
    fn rows(
        &self,
        model: &Self::Model,
        items: &[usize],
        dropped: &[bool],
        train: bool,
        device: &Device,
    ) -> Result<Tensor<2>>;
    /// The tensors and metadata of the result file.
    fn save(&self, model: &Self::Model) -> Result<(Vec<Entry>, BTreeMap<String, String>)>;

    /// CFG condition rows (`[2N, C]`) for a sample grid, images per row and the guidance:
    /// by default four images for each of up to four distinct captions (else labels) of
    /// `order`, at cfg 1.5.
    fn sample_rows(
        &self,
        model: &Self::Model,
        set: &TokenSet,
        order: &[usize],
        device: &Device,
    ) -> Result<(Tensor<2>, usize, f32)> {
        picked_rows(self, model, set, order, device)
    }

    /// Called once the last step is done (e.g. to write the class names beside the result).
    fn finish(&self, _root: &std::path::Path) -> Result<()> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct LoopState {
    step: u64,
    epoch: u64,
    offset: u64,
}

/// Everything a frozen-VAR task trains on.
pub struct Setup<'a> {
    pub run: &'a RunDir,
    pub train: &'a TrainConfig,
    pub set: &'a TokenSet,
    pub vae: &'a VqVae,
    /// Without autodiff (validation, sampling).
    pub plain: &'a Device,
    /// With autodiff (training).
    pub autodiff: &'a Device,
    pub stop_after: Option<u64>,
}

/// Trains `task` until `train.steps` (or `stop_after`), resuming from the run's checkpoint.
pub fn run<T: VarTask>(task: &T, s: Setup<'_>) -> Result<()> {
    let tc = s.train;
    let (train_idx, val_idx) = s.set.split(tc.val_fraction);
    let mut opt = AdamW::new(tc.adamw());
    let (mut model, start, epoch, offset) = match s.run.resume::<LoopState>()? {
        Some((st, mut ck)) => {
            let m = task.load(Some(ck.split_prefix("model.")), s.autodiff)?;
            opt.load_state(&ck, "opt", s.autodiff)?;
            (m, st.step, st.epoch, st.offset)
        }
        None => (task.load(None, s.autodiff)?, 0, 0, 0),
    };
    eprintln!(
        "{}: {} sequences ({} train, {} validation)",
        T::KIND,
        s.set.len(),
        train_idx.len(),
        val_idx.len()
    );
    let end = tc.steps.min(s.stop_after.unwrap_or(u64::MAX));
    if start >= end {
        eprintln!("nothing to do: the run is at step {start} of {}", tc.steps);
        return Ok(());
    }
    let scales = s.set.patch_nums.len();
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
    .map(|c| c.to_string())
    .collect();
    for si in 0..scales {
        columns.push(format!("loss_s{si}"));
        columns.push(format!("acc_s{si}"));
    }
    let col_refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut metrics = Metrics::open(&s.run.root, &col_refs, start)?;
    let mut t_log = std::time::Instant::now();
    let mut toks_since = 0usize;
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
        let cond = task.rows(&model, &ids, &dropped, true, s.autodiff)?;
        let var = task.var(&model, true);
        let (loss, ce, correct) = forward(
            var,
            s.vae,
            s.set,
            &items,
            cond,
            tc.label_smooth,
            s.plain,
            s.autodiff,
        )?;
        let loss_val = loss.clone().into_scalar::<f32>() as f64;
        if !loss_val.is_finite() {
            bail!("the loss became {loss_val} at step {step}; lower train.lr");
        }
        let mut grads = loss.backward();
        let (m, stats) = opt.step(model, &mut grads, lr);
        model = m;
        if stats.updated == 0 {
            bail!("no parameter received a gradient");
        }
        let (_, acc, loss_s, acc_s) = per_scale(&s.set.patch_nums, &ce, &correct);
        toks_since += b * s.set.seq_len();
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
            for si in 0..scales {
                row.push((format!("loss_s{si}"), loss_s[si]));
                row.push((format!("acc_s{si}"), acc_s[si]));
            }
            let r: Vec<(&str, f64)> = row.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            metrics.log(step, &r)?;
            t_log = std::time::Instant::now();
            toks_since = 0;
        }
        if (step % tc.eval_every == 0 || step == tc.steps) && !val_idx.is_empty() {
            let pm = model.valid();
            let no_drop = vec![false; b];
            let var = task.var(&pm, false);
            let (vl, va) = validate(var, s.vae, s.set, &val_idx, b, s.plain, |c| {
                task.rows(&pm, c, &no_drop[..c.len()], false, s.plain)
            })?;
            metrics.log(step, &[("val_loss", vl), ("val_acc", va)])?;
            progress.note(&format!(
                "step {step}: validation loss {vl:.4}, accuracy {:.2}%",
                100.0 * va
            ));
        }
        if step % tc.sample_every == 0 || step == tc.steps {
            let pm = model.valid();
            let order: Vec<usize> = val_idx.iter().chain(&loader.subset).copied().collect();
            let (cond, per, cfg) = task.sample_rows(&pm, s.set, &order, s.plain)?;
            let opts = SampleOptions {
                cfg,
                top_k: 0,
                top_p: 0.0,
                seed: tc.seed.wrapping_add(step),
                more_smooth: false,
            };
            let path = s.run.root.join(format!("samples/step-{step:08}.png"));
            sample_grid(task.var(&pm, false), s.vae, cond, &opts, &path, per)?;
        }
        if step % tc.ckpt_every == 0 || step == end {
            let (sd, mut meta) = task.save(&model)?;
            meta.insert("step".into(), step.to_string());
            s.run.save_model(T::FILE, &sd, &meta)?;
            let st = LoopState {
                step,
                epoch: loader.epoch,
                offset: loader.offset,
            };
            s.run
                .save_state(step, sd, opt.state_entries("opt")?, meta, &st, tc.keep_last)?;
            crate::plot::curves(
                &s.run.root.join("curves.png"),
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
                        (0..scales.min(6))
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
    task.finish(&s.run.root)?;
    eprintln!("done: {}", s.run.root.join(T::FILE).display());
    Ok(())
}

/// Four images for each of up to four distinct captions (else labels) of `order`, at cfg 1.5:
/// CFG rows `[2N, C]`, images per row, guidance.
pub fn picked_rows<T: VarTask + ?Sized>(
    task: &T,
    model: &T::Model,
    set: &TokenSet,
    order: &[usize],
    device: &Device,
) -> Result<(Tensor<2>, usize, f32)> {
    let picks = sample_picks(set, order.iter().copied());
    let items: Vec<usize> = picks
        .iter()
        .flat_map(|&i| std::iter::repeat_n(i, 4))
        .collect();
    let n = items.len();
    let var = task.var(model, false);
    let cond = task.rows(model, &items, &vec![false; n], false, device)?;
    Ok((Tensor::cat(vec![cond, var.null_condition(n)], 0), 4, 1.5))
}

/// Up to 4 items for a sample grid: distinct captions, else distinct labels, else the first.
fn sample_picks(set: &TokenSet, order: impl Iterator<Item = usize> + Clone) -> Vec<usize> {
    if set.captions.iter().any(Option::is_some) {
        return set.distinct_captions(order, 4);
    }
    let mut seen = std::collections::BTreeSet::new();
    order
        .filter(|&i| seen.insert(set.labels[i]))
        .take(4)
        .collect()
}
