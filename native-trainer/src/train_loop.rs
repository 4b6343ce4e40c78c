//! The training loop every trainer shares. A task (`train-vqvae`'s VQ-VAE, the VAR tasks of
//! `var_task.rs`) says how a batch becomes a loss, how its parameters are updated, how it is
//! evaluated and what its checkpoint holds; the loop owns the learning-rate schedule, the
//! finite-loss check, the backward pass, logging (`metrics.csv`, the progress line,
//! throughput), when to evaluate, sample and checkpoint, resuming, and the curves.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::{Gradients, Tensor};
use nextscale::Checkpoint;
use nextscale::state_dict::Entry;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::optim::lr_multiplier;
use crate::plot::Panel;
use crate::run::{Metrics, Progress, RunDir};
use crate::trainconf::TrainConfig;

/// Named values for `metrics.csv` or the progress line.
pub type Values = Vec<(String, f64)>;

/// What one step reports besides its loss.
pub struct StepLog {
    /// Shown on the progress line after the loss.
    pub progress: Values,
    /// Logged to `metrics.csv` every `log_every` steps (besides loss, lr and throughput).
    pub row: Values,
    /// Units processed (tokens, images), for the throughput column.
    pub units: usize,
}

/// What a checkpoint holds.
pub struct Snapshot<S> {
    /// The model's state dict: written as the run's result file and under `model.`.
    pub model: Vec<Entry>,
    /// Other tensors needed to resume (optimizer moments, counters).
    pub extra: Vec<Entry>,
    /// Metadata of the result file (the loop adds `step`).
    pub meta: BTreeMap<String, String>,
    /// The trainer state (`trainer` in the checkpoint's metadata).
    pub state: S,
}

/// A training task driven by [`run`].
pub trait Task {
    /// Trainer state saved in checkpoint metadata (data position, counters).
    type State: Serialize + DeserializeOwned;
    /// What a forward pass leaves for the update (activations a second loss needs, per-item
    /// statistics).
    type Pass;
    /// What it trains (`vqvae`, `var`, `adapter`, `lora`): the run's result file is
    /// `{KIND}.safetensors`.
    const KIND: &'static str;
    /// The throughput column of `metrics.csv` (`tok_per_s`, `img_per_s`).
    const THROUGHPUT: &'static str;

    /// Columns of `metrics.csv` (without `step`); must include `loss`, `lr` and
    /// [`Task::THROUGHPUT`].
    fn columns(&self) -> Vec<String>;
    /// Restores the model, optimizers and state from a checkpoint (`None`: a fresh start);
    /// returns the step it resumes after (0 for a fresh start).
    fn start(&mut self, resumed: Option<(Self::State, Checkpoint)>) -> Result<u64>;
    /// The loss of the next batch at `step` (on the autodiff device).
    fn forward(&mut self, step: u64) -> Result<(Tensor<1>, Self::Pass)>;
    /// Applies the gradients of the loss at learning rate `lr`.
    fn update(&mut self, step: u64, lr: f64, grads: Gradients, pass: Self::Pass)
    -> Result<StepLog>;
    /// Validation (`validate`) and/or a sample grid written to `sample`: the values to log
    /// and a line for the user, if it validated.
    fn evaluate(
        &mut self,
        step: u64,
        validate: bool,
        sample: Option<&Path>,
    ) -> Result<Option<(Values, String)>>;
    /// Everything a checkpoint at `step` holds.
    fn snapshot(&self, step: u64) -> Result<Snapshot<Self::State>>;
    /// The panels of `curves.png`.
    fn curves<'m>(&self, m: &'m Metrics) -> Vec<Panel<'m>>;
    /// Called once the last step is done.
    fn finish(&self, _root: &Path) -> Result<()> {
        Ok(())
    }
}

/// Where a run stops: at `train.steps`, earlier at `stop_after`, or before training at all
/// (`validate_only`: the starting model validated, the figures printed as JSON).
#[derive(Clone, Copy, Debug)]
pub struct Until {
    pub stop_after: Option<u64>,
    pub validate_only: bool,
}

/// Trains `task` until `train.steps` (or `until`), resuming from the run's newest readable
/// checkpoint.
pub fn run<T: Task>(task: &mut T, run: &RunDir, tc: &TrainConfig, until: Until) -> Result<()> {
    let start = task.start(run.resume::<T::State>()?)?;
    if until.validate_only {
        let Some((vals, note)) = task.evaluate(start, true, None)? else {
            bail!("nothing to validate on: no item is held out (raise train.val_fraction)");
        };
        eprintln!("{note}");
        let mut out = serde_json::Map::new();
        out.insert("step".into(), start.into());
        for (k, v) in vals {
            out.insert(k, v.into());
        }
        println!("{}", serde_json::Value::Object(out));
        return Ok(());
    }
    let file = format!("{}.safetensors", T::KIND);
    let end = tc.steps.min(until.stop_after.unwrap_or(u64::MAX));
    if start >= end {
        eprintln!("nothing to do: the run is at step {start} of {}", tc.steps);
        return Ok(());
    }
    let columns = task.columns();
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut metrics = Metrics::open(&run.root, &cols, start)?;
    let progress = Progress::new(start, tc.steps);
    let mut t_log = Instant::now();
    let mut units_since = 0usize;
    for step in start + 1..=end {
        let lr = tc.lr * lr_multiplier(step - 1, tc.warmup_steps, tc.steps, tc.lr_end);
        let (loss, pass) = task.forward(step)?;
        let loss_val = loss.clone().into_scalar::<f32>() as f64;
        if !loss_val.is_finite() {
            bail!("the loss became {loss_val} at step {step}; lower train.lr");
        }
        let log = task.update(step, lr, loss.backward(), pass)?;
        units_since += log.units;
        let mut shown: Vec<(&str, f64)> = vec![("loss", loss_val)];
        shown.extend(log.progress.iter().map(|(k, v)| (k.as_str(), *v)));
        shown.push(("lr", lr));
        progress.update(step, &shown);
        if step % tc.log_every == 0 || step == end {
            let rate = units_since as f64 / t_log.elapsed().as_secs_f64().max(1e-9);
            let mut row: Vec<(&str, f64)> = vec![("loss", loss_val)];
            row.extend(log.row.iter().map(|(k, v)| (k.as_str(), *v)));
            row.push(("lr", lr));
            row.push((T::THROUGHPUT, rate));
            metrics.log(step, &row)?;
            t_log = Instant::now();
            units_since = 0;
        }
        let validate = step % tc.eval_every == 0 || step == tc.steps;
        let sample = (step % tc.sample_every == 0 || step == tc.steps)
            .then(|| run.root.join(format!("samples/step-{step:08}.png")));
        if (validate || sample.is_some())
            && let Some((vals, note)) = task.evaluate(step, validate, sample.as_deref())?
        {
            let r: Vec<(&str, f64)> = vals.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            metrics.log(step, &r)?;
            progress.note(&note);
        }
        if step % tc.ckpt_every == 0 || step == end {
            let mut snap = task.snapshot(step)?;
            snap.meta.insert("step".into(), step.to_string());
            run.save_model(&file, &snap.model, &snap.meta)?;
            run.save_state(
                step,
                snap.model,
                snap.extra,
                snap.meta,
                &snap.state,
                tc.keep_last,
            )?;
            crate::plot::curves(&run.root.join("curves.png"), &task.curves(&metrics))?;
        }
    }
    task.finish(&run.root)?;
    eprintln!("done: {}", run.root.join(&file).display());
    Ok(())
}
