//! The training loop shared by the tasks that adapt a frozen VAR (`train-adapter`,
//! `train-lora`): a task says what is trained and how condition rows are made; the loop owns
//! the data order, the schedule, the finite-loss check, logging, validation, sample grids,
//! checkpoints and resuming.

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

/// What a task adapting a frozen VAR trains.
pub trait FrozenTask {
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
pub fn run<T: FrozenTask>(task: &T, s: Setup<'_>) -> Result<()> {
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
    let mut metrics = Metrics::open(
        &s.run.root,
        &["loss", "acc", "grad_norm", "lr", "val_loss", "val_acc"],
        start,
    )?;
    let end = tc.steps.min(s.stop_after.unwrap_or(u64::MAX));
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
        let (_, acc, _, _) = per_scale(&s.set.patch_nums, &ce, &correct);
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
            let picks = sample_picks(s.set, val_idx.iter().chain(&loader.subset).copied());
            let items: Vec<usize> = picks
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i, 4))
                .collect();
            let n = items.len();
            let var = task.var(&pm, false);
            let cond = task.rows(&pm, &items, &vec![false; n], false, s.plain)?;
            let cond = Tensor::cat(vec![cond, var.null_condition(n)], 0);
            let opts = SampleOptions {
                cfg: 1.5,
                top_k: 0,
                top_p: 0.0,
                seed: tc.seed.wrapping_add(step),
                more_smooth: false,
            };
            let path = s.run.root.join(format!("samples/step-{step:08}.png"));
            sample_grid(var, s.vae, cond, &opts, &path, 4)?;
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
                ],
            )?;
        }
    }
    eprintln!("done: {}", s.run.root.join(T::FILE).display());
    Ok(())
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
