//! `native-trainer train-lora`: teach a frozen class-conditional VAR new concepts (or refine
//! its own classes) with low-rank updates of its block layers (`nextscale::var::lora`) and,
//! for new concepts, new rows of the class table. The base weights and the VQ-VAE do not
//! change; the result (`lora.safetensors`) holds only the updates and the new rows, and
//! `export --lora` puts them in a pack.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Args;
use nextscale::Checkpoint;
use nextscale::params::RandomInit;
use nextscale::state_dict::Entry;
use nextscale::var::Var;
use nextscale::var::lora::{LoraConfig, LoraTarget};
use serde::{Deserialize, Serialize};

use crate::args::{CommonTrainArgs, FrozenVar, FrozenVarArgs};
use crate::run::RunDir;
use crate::tokens::TokenSet;
use crate::var_steps::TextNoise;
use crate::var_task::VarTask;

#[derive(Args, Debug)]
pub struct TrainLoraArgs {
    #[command(flatten)]
    pub frozen: FrozenVarArgs,
    /// Token shards of images of the model's own classes (labels = its class ids), mixed
    /// into every epoch so that the updates keep what the model already draws.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonTrainArgs,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct LoraModelConfig {
    rank: usize,
    alpha: f32,
    targets: Vec<LoraTarget>,
    /// The data's classes are new concepts (ids after the model's own, with new class rows);
    /// otherwise they are the model's own class ids.
    new_classes: bool,
}

/// The trained parameters: the base VAR with LoRA updates attached (only they require
/// gradients) and the new class rows `[k, C]`.
#[derive(Module, Debug)]
pub struct LoraModel {
    pub var: Var,
    pub new_class_emb: Option<Param<Tensor<2>>>,
}

struct LoraTask {
    /// The frozen base on the autodiff device (no parameter requires gradients).
    base: Var,
    base_cfg: nextscale::VarConfig,
    cfg: LoraConfig,
    /// Number of new classes (0 = the data uses the model's own classes).
    new: usize,
    new_names: Option<Vec<String>>,
    set: TokenSet,
    seed: u64,
}

/// What a LoRA file says about itself (read back by `export --lora`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoraMeta {
    pub lora: LoraConfig,
    /// Classes of the base model.
    pub base_classes: usize,
    /// New classes added after them (rows in `new_class_emb`).
    pub new_classes: usize,
    /// Names of the new classes (from the data's class folders), when it has them.
    #[serde(default)]
    pub new_class_names: Option<Vec<String>>,
}

/// Reads a `train-lora` result: its description and tensors.
pub fn read_lora_file(path: &std::path::Path) -> Result<(LoraMeta, Checkpoint)> {
    let ck = Checkpoint::open(path).with_context(|| format!("reading {}", path.display()))?;
    let j = ck
        .metadata()
        .get("lora")
        .with_context(|| format!("{}: not a LoRA file (no `lora` metadata)", path.display()))?;
    let meta: LoraMeta =
        serde_json::from_str(j).with_context(|| format!("{}: `lora` metadata", path.display()))?;
    meta.lora.validate()?;
    Ok((meta, ck))
}

impl VarTask for LoraTask {
    type Model = LoraModel;
    const KIND: &'static str = "lora";

    fn set(&self) -> &TokenSet {
        &self.set
    }

    fn load(&self, ck: Option<Checkpoint>, device: &Device) -> Result<LoraModel> {
        let var = self.base.clone();
        let c = self.base_cfg.embed_dim;
        let base = self.base_cfg.num_classes;
        match ck {
            Some(mut ck) => {
                let var = var.attach_lora(&self.cfg, &mut ck, device)?;
                let new_class_emb = match self.new {
                    0 => None,
                    k => Some(Param::from_tensor(Tensor::from_data(
                        TensorData::new(ck.take_f32("new_class_emb", &[k, c])?, [k, c]),
                        device,
                    ))),
                };
                ck.finish()?;
                Ok(LoraModel { var, new_class_emb })
            }
            None => {
                // New rows start as copies of the model's own class rows (the right scale,
                // and distinct from each other); LoRA B starts at zero.
                let new_class_emb = (self.new > 0).then(|| {
                    let table = var.class_emb.val();
                    let rows: Vec<Tensor<2>> = (0..self.new)
                        .map(|j| table.clone().slice([j % base..j % base + 1, 0..c]))
                        .collect();
                    Param::from_tensor(Tensor::cat(rows, 0).detach().set_require_grad(true))
                });
                let var = var.attach_lora(&self.cfg, &mut RandomInit::new(self.seed), device)?;
                Ok(LoraModel { var, new_class_emb })
            }
        }
    }

    fn var<'a>(&'a self, model: &'a LoraModel, _train: bool) -> &'a Var {
        &model.var
    }

    fn rows(
        &self,
        m: &LoraModel,
        items: &[usize],
        dropped: &[bool],
        _noise: Option<&TextNoise>,
        _train: bool,
        dev: &Device,
    ) -> Result<Tensor<2>> {
        let base = self.base_cfg.num_classes;
        let c = self.base_cfg.embed_dim;
        let table = m.var.class_emb.val();
        let full = match &m.new_class_emb {
            Some(new) => Tensor::cat(
                vec![
                    table.clone().slice([0..base, 0..c]),
                    new.val(),
                    table.slice([base..base + 1, 0..c]),
                ],
                0,
            ),
            None => table,
        };
        let total = base + self.new;
        let mut ids = Vec::with_capacity(items.len());
        for (&i, &d) in items.iter().zip(dropped) {
            // Labels are model class ids (new classes were shifted past the model's own).
            let id = match self.set.labels[i] {
                _ if d => total,
                Some(l) => l,
                None => bail!("item {i} has no class label: train-lora needs labelled data"),
            };
            ids.push(id as i64);
        }
        let n = ids.len();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), dev);
        Ok(full.select(0, ids))
    }

    fn save(&self, m: &LoraModel) -> Result<(Vec<Entry>, BTreeMap<String, String>)> {
        let sd: Vec<Entry> = nextscale::state_dict::parameters(m)?
            .into_iter()
            .filter(|e| e.name.contains(".lora_") || e.name == "new_class_emb")
            .map(|mut e| {
                // Names as in the VAR's own state dict (`blocks.0.attn.mat_qkv.lora_A.weight`).
                if let Some(n) = e.name.strip_prefix("var.") {
                    e.name = n.to_string();
                }
                e
            })
            .collect();
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), "nextscale-lora".into());
        let lm = LoraMeta {
            lora: self.cfg.clone(),
            base_classes: self.base_cfg.num_classes,
            new_classes: self.new,
            new_class_names: self.new_names.clone(),
        };
        meta.insert("lora".into(), serde_json::to_string(&lm)?);
        Ok((sd, meta))
    }
}

pub fn run(a: TrainLoraArgs) -> Result<()> {
    let setup = a.common.resolve::<LoraModelConfig>("lora")?;
    let (mc, tc, text) = (setup.model, setup.train, setup.text);
    let (plain, ad) = (setup.plain, setup.autodiff);
    let cfg = LoraConfig {
        rank: mc.rank,
        alpha: mc.alpha,
        targets: mc.targets.clone(),
    };
    cfg.validate()?;

    let FrozenVar {
        tokens: mut set,
        vae,
        var: base_ck,
        var_config: base_cfg,
    } = a.frozen.open(&plain)?;
    let data_classes = set.labels.iter().flatten().max().map_or(0, |m| m + 1);
    if data_classes == 0 {
        bail!(
            "{} has no class labels: train-lora learns labelled images",
            a.frozen.tokens.display()
        );
    }
    let new = if mc.new_classes {
        data_classes
    } else {
        if data_classes > base_cfg.num_classes {
            bail!(
                "the data has {data_classes} classes, the model {}: set model.new_classes = true to add them",
                base_cfg.num_classes
            );
        }
        0
    };
    let new_names = (new > 0 && set.class_names.len() == new).then(|| set.class_names.clone());
    if new > 0 {
        for l in set.labels.iter_mut().flatten() {
            *l += base_cfg.num_classes;
        }
    }
    let mut replayed = 0;
    if let Some(r) = &a.replay {
        let rs = TokenSet::open(r)?;
        if let Some(&bad) = rs
            .labels
            .iter()
            .flatten()
            .find(|&&l| l >= base_cfg.num_classes)
        {
            bail!(
                "{}: label {bad} is not one of the model's {} classes",
                r.display(),
                base_cfg.num_classes
            );
        }
        replayed = rs.len();
        set.append(rs, 0)
            .with_context(|| format!("adding {}", r.display()))?;
    }
    let run = RunDir::for_command(&a.common, &text, None, "lora")?;
    eprintln!(
        "LoRA rank {} (alpha {}) on {:?} of a frozen VAR d{} ({} classes{})",
        cfg.rank,
        cfg.alpha,
        cfg.targets,
        base_cfg.depth,
        base_cfg.num_classes,
        if new > 0 {
            format!(", {new} new ones")
        } else {
            String::new()
        }
    );
    if replayed > 0 {
        eprintln!("replaying {replayed} sequences of the model's own classes");
    }
    let (base, _) = Var::from_checkpoint(base_ck, Some(base_cfg.clone()), &ad)?;
    let task = LoraTask {
        base: base.no_grad(),
        base_cfg,
        cfg,
        new,
        new_names,
        set,
        seed: tc.seed,
    };
    crate::var_task::run(&task, &run, &tc, &vae, (&plain, &ad), a.common.until())
}
