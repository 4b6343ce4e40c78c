//! The VAR tasks of the shared training loop: `train-var` (the whole VAR), `train-adapter` (a
//! text adapter on a frozen VAR) and `train-lora` (LoRA updates and new class rows). A
//! [`VarTask`] says what is trained, how condition rows are made and what its result file
//! holds; [`run`] wraps it for `train_loop::run`, which adds the data order, condition
//! dropout, validation, sample grids and per-scale metrics of token-sequence training.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Gradients, Tensor};
use nextscale::rng::{CounterRng, stream_id};
use nextscale::sampler::SampleOptions;
use nextscale::state_dict::Entry;
use nextscale::var::Var;
use nextscale::{Checkpoint, VqVae};
use serde::{Deserialize, Serialize};

use crate::optim::AdamW;
use crate::plot::Panel;
use crate::run::{Metrics, RunDir};
use crate::tokens::TokenSet;
use crate::train_loop::{Snapshot, StepLog, Task, Values};
use crate::trainconf::TrainConfig;
use crate::var_steps::{
    TextNoise, TokenLoader, TokenLoss, forward, per_scale, sample_grid, validate,
};

/// What a VAR training task trains.
pub trait VarTask {
    /// The trained parameters (and whatever model they change).
    type Model: Module;
    /// Run kind (`var`, `adapter`, `lora`); the result is saved to `{KIND}.safetensors`.
    const KIND: &'static str;

    /// The token sequences it trains on.
    fn set(&self) -> &TokenSet;

    /// A fresh model (`ck` = None) or the one saved in a checkpoint's `model.` tensors.
    fn load(&self, ck: Option<Checkpoint>, device: &Device) -> Result<Self::Model>;
    /// The VAR that runs the forward pass: the frozen base, or the base with the updates;
    /// `train` = on the autodiff device (else `model` is its `valid()` copy).
    fn var<'a>(&'a self, model: &'a Self::Model, train: bool) -> &'a Var;
    /// Condition rows `[B, C]` for `items`; `dropped` rows get the null condition; caption
    /// embeddings get `noise` (given on training steps when `train.text_noise` is set).
    fn rows(
        &self,
        model: &Self::Model,
        items: &[usize],
        dropped: &[bool],
        noise: Option<&TextNoise>,
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

/// The data position, saved in each checkpoint.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LoopState {
    step: u64,
    epoch: u64,
    offset: u64,
}

/// Everything a VAR task trains on.
struct Setup<'a> {
    pub run: &'a RunDir,
    pub train: &'a TrainConfig,
    pub set: &'a TokenSet,
    pub vae: &'a VqVae,
    /// Without autodiff (validation, sampling).
    pub plain: &'a Device,
    /// With autodiff (training).
    pub autodiff: &'a Device,
    pub until: crate::train_loop::Until,
}

/// Trains `task` on its token set until `train.steps` (or `until`), resuming from the
/// run's checkpoint; `devices` are the plain one (validation, samples) and the autodiff one.
pub fn run<T: VarTask>(
    task: &T,
    run: &RunDir,
    train: &TrainConfig,
    vae: &VqVae,
    (plain, autodiff): (&Device, &Device),
    until: crate::train_loop::Until,
) -> Result<()> {
    let s = Setup {
        run,
        train,
        set: task.set(),
        vae,
        plain,
        autodiff,
        until,
    };
    let (train_idx, val_idx) = s.set.split(s.train.val_fraction);
    eprintln!(
        "{}: {} sequences ({} train, {} validation)",
        T::KIND,
        s.set.len(),
        train_idx.len(),
        val_idx.len()
    );
    let (run, tc, until) = (s.run, s.train, s.until);
    let mut l = VarLoop {
        task,
        model: None,
        opt: AdamW::new(s.train.adamw()),
        loader: TokenLoader::new(train_idx, s.train.seed, 0, 0),
        val_idx,
        rng: CounterRng::new(s.train.seed),
        loss: TokenLoss::new(
            s.train.label_smooth,
            s.train.scale_balance,
            &s.set.patch_nums,
        ),
        s,
    };
    crate::train_loop::run(&mut l, run, tc, until)
}

/// A [`VarTask`] as a task of the shared loop.
struct VarLoop<'a, T: VarTask> {
    task: &'a T,
    s: Setup<'a>,
    model: Option<T::Model>,
    opt: AdamW,
    loader: TokenLoader,
    val_idx: Vec<usize>,
    /// Condition dropout and caption noise draws.
    rng: CounterRng,
    loss: TokenLoss,
}

impl<T: VarTask> VarLoop<'_, T> {
    fn model(&self) -> &T::Model {
        self.model.as_ref().expect("started")
    }
}

impl<T: VarTask> Task for VarLoop<'_, T> {
    type State = LoopState;
    /// Per-token cross-entropy and correctness.
    type Pass = (Vec<f32>, Vec<bool>);
    const KIND: &'static str = T::KIND;
    const THROUGHPUT: &'static str = "tok_per_s";

    fn columns(&self) -> Vec<String> {
        let mut c: Vec<String> = [
            "loss",
            "acc",
            "grad_norm",
            "lr",
            "tok_per_s",
            "val_loss",
            "val_acc",
        ]
        .map(String::from)
        .to_vec();
        for si in 0..self.s.set.patch_nums.len() {
            c.push(format!("loss_s{si}"));
            c.push(format!("acc_s{si}"));
        }
        c
    }

    fn start(&mut self, resumed: Option<(LoopState, Checkpoint)>) -> Result<u64> {
        let ad = self.s.autodiff;
        Ok(match resumed {
            Some((st, mut ck)) => {
                self.model = Some(self.task.load(Some(ck.split_prefix("model.")), ad)?);
                self.opt.load_state(&ck, "opt", ad)?;
                self.loader = TokenLoader::new(
                    std::mem::take(&mut self.loader.subset),
                    self.s.train.seed,
                    st.epoch,
                    st.offset,
                );
                st.step
            }
            None => {
                self.model = Some(self.task.load(None, ad)?);
                0
            }
        })
    }

    fn forward(&mut self, step: u64) -> Result<(Tensor<1>, Self::Pass)> {
        let tc = self.s.train;
        let b = tc.batch_size;
        let items = self.loader.next(b, tc.flip);
        let ids: Vec<usize> = items.iter().map(|&(i, _)| i).collect();
        let dropped: Vec<bool> = (0..b)
            .map(|r| self.rng.uniform(stream_id("cond_drop", step, r as u64), 0) < tc.cond_drop)
            .collect();
        let model = self.model();
        let noise = TextNoise {
            sigma: tc.text_noise,
            rng: &self.rng,
            step,
        };
        let cond = self
            .task
            .rows(model, &ids, &dropped, Some(&noise), true, self.s.autodiff)?;
        let (loss, ce, correct) = forward(
            self.task.var(model, true),
            self.s.vae,
            self.s.set,
            &items,
            cond,
            &self.loss,
            self.s.plain,
            self.s.autodiff,
        )?;
        Ok((loss, (ce, correct)))
    }

    fn update(
        &mut self,
        _step: u64,
        lr: f64,
        mut grads: Gradients,
        (ce, correct): Self::Pass,
    ) -> Result<StepLog> {
        let model = self.model.take().expect("started");
        let (m, stats) = self.opt.step(model, &mut grads, lr);
        self.model = Some(m);
        if stats.updated == 0 {
            bail!("no parameter received a gradient");
        }
        let (_, acc, loss_s, acc_s) = per_scale(&self.s.set.patch_nums, &ce, &correct);
        let mut row: Values = vec![("acc".into(), acc), ("grad_norm".into(), stats.grad_norm)];
        for (si, (l, a)) in loss_s.iter().zip(&acc_s).enumerate() {
            row.push((format!("loss_s{si}"), *l));
            row.push((format!("acc_s{si}"), *a));
        }
        Ok(StepLog {
            progress: vec![("acc".into(), acc)],
            row,
            units: self.s.train.batch_size * self.s.set.seq_len(),
        })
    }

    fn evaluate(
        &mut self,
        step: u64,
        validate_now: bool,
        sample: Option<&Path>,
    ) -> Result<Option<(Values, String)>> {
        let s = &self.s;
        let pm = self.model().valid();
        let var = self.task.var(&pm, false);
        let mut out = None;
        if validate_now && !self.val_idx.is_empty() {
            let b = s.train.batch_size;
            let no_drop = vec![false; b];
            let (vl, va) = validate(var, s.vae, s.set, &self.val_idx, b, s.plain, |c| {
                self.task
                    .rows(&pm, c, &no_drop[..c.len()], None, false, s.plain)
            })?;
            out = Some((
                vec![("val_loss".into(), vl), ("val_acc".into(), va)],
                format!(
                    "step {step}: validation loss {vl:.4}, accuracy {:.2}%",
                    100.0 * va
                ),
            ));
        }
        if let Some(path) = sample {
            let order: Vec<usize> = self
                .val_idx
                .iter()
                .chain(&self.loader.subset)
                .copied()
                .collect();
            let (cond, per, cfg) = self.task.sample_rows(&pm, s.set, &order, s.plain)?;
            let opts = SampleOptions {
                cfg,
                top_k: 0,
                top_p: 0.0,
                seed: s.train.seed.wrapping_add(step),
                more_smooth: false,
            };
            sample_grid(var, s.vae, cond, &opts, path, per)?;
        }
        Ok(out)
    }

    fn snapshot(&self, step: u64) -> Result<Snapshot<LoopState>> {
        let (model, meta) = self.task.save(self.model())?;
        Ok(Snapshot {
            model,
            extra: self.opt.state_entries("opt")?,
            meta,
            state: LoopState {
                step,
                epoch: self.loader.epoch,
                offset: self.loader.offset,
            },
        })
    }

    fn curves<'m>(&self, m: &'m Metrics) -> Vec<Panel<'m>> {
        let scales = self.s.set.patch_nums.len().min(6);
        vec![
            (
                "LOSS",
                vec![("TRAIN", m.series("loss")), ("VAL", m.series("val_loss"))],
            ),
            (
                "ACCURACY",
                vec![("TRAIN", m.series("acc")), ("VAL", m.series("val_acc"))],
            ),
            (
                "LOSS PER SCALE",
                (0..scales)
                    .map(|si| {
                        (
                            ["S0", "S1", "S2", "S3", "S4", "S5"][si],
                            m.series(&format!("loss_s{si}")),
                        )
                    })
                    .collect(),
            ),
        ]
    }

    fn finish(&self, root: &Path) -> Result<()> {
        self.task.finish(root)
    }
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
    let cond = task.rows(model, &items, &vec![false; n], None, false, device)?;
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
