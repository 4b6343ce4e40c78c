//! `native-trainer train-adapter`: teach a frozen class-conditional VAR to follow prompts by
//! training only a small adapter from the caption embedding to a condition delta
//! (`cond = α·class_emb[class] + β·adapter(text)`; see `nextscale::var::adapter`). The VAR
//! and the VQ-VAE are not updated: only the adapter's parameters reach the optimizer, and
//! the VAR's parameters do not even track gradients.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use clap::Args;
use nextscale::Checkpoint;
use nextscale::params::RandomInit;
use nextscale::state_dict::Entry;
use nextscale::var::Var;
use nextscale::var::adapter::{AdapterConfig, TextAdapter};
use serde::{Deserialize, Serialize};

use crate::args::{CommonTrainArgs, FrozenVar, FrozenVarArgs};
use crate::run::RunDir;
use crate::tokens::TokenSet;
use crate::var_steps::{TextNoise, caption_embeddings, caption_rows, null_where_dropped};
use crate::var_task::VarTask;

#[derive(Args, Debug)]
pub struct TrainAdapterArgs {
    #[command(flatten)]
    pub frozen: FrozenVarArgs,
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

/// The adapter's metadata in its file (read back by `sample --adapter`).
pub fn adapter_config(ck: &Checkpoint) -> Result<AdapterConfig> {
    let j = ck
        .metadata()
        .get("adapter")
        .context("not an adapter file (no `adapter` metadata)")?;
    Ok(serde_json::from_str(j)?)
}

/// The adapter task: a frozen VAR, caption embeddings, and the adapter that is trained.
struct AdapterTask {
    var: Var,
    /// The same VAR without autodiff (validation and samples).
    var_plain: Var,
    set: TokenSet,
    emb: Vec<f32>,
    dim: usize,
    cfg: AdapterConfig,
    seed: u64,
}

impl VarTask for AdapterTask {
    type Model = TextAdapter;
    const KIND: &'static str = "adapter";

    fn set(&self) -> &TokenSet {
        &self.set
    }

    fn load(&self, ck: Option<Checkpoint>, device: &Device) -> Result<TextAdapter> {
        Ok(match ck {
            Some(mut ck) => {
                let m = TextAdapter::load(&mut ck, &self.cfg, device)?;
                ck.finish()?;
                m
            }
            None => TextAdapter::load(&mut RandomInit::new(self.seed), &self.cfg, device)?,
        })
    }

    fn var<'a>(&'a self, _: &'a TextAdapter, train: bool) -> &'a Var {
        if train { &self.var } else { &self.var_plain }
    }

    /// α·class_emb[class] + β·adapter(caption), class = the item's label or the null class.
    fn rows(
        &self,
        adapter: &TextAdapter,
        items: &[usize],
        dropped: &[bool],
        noise: Option<&TextNoise>,
        train: bool,
        dev: &Device,
    ) -> Result<Tensor<2>> {
        let var = self.var(adapter, train);
        let null = var.null_class();
        let labels: Vec<usize> = items
            .iter()
            .map(|&i| self.set.labels[i].filter(|&l| l < null).unwrap_or(null))
            .collect();
        let cond = adapter.condition(
            var,
            &labels,
            caption_rows(&self.emb, self.dim, items, noise, dev),
        )?;
        Ok(null_where_dropped(var, cond, dropped, dev))
    }

    fn save(&self, adapter: &TextAdapter) -> Result<(Vec<Entry>, BTreeMap<String, String>)> {
        let sd = nextscale::state_dict::parameters(adapter)?;
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), "nextscale-adapter".into());
        meta.insert("adapter".into(), serde_json::to_string(&self.cfg)?);
        Ok((sd, meta))
    }
}

pub fn run(a: TrainAdapterArgs) -> Result<()> {
    let setup = a.common.resolve::<AdapterModel>("adapter")?;
    let (mc, tc, text) = (setup.model, setup.train, setup.text);
    let (plain, ad) = (setup.plain, setup.autodiff);

    let FrozenVar {
        tokens: set,
        vae,
        var: var_ck,
        var_config: vcfg_var,
    } = a.frozen.open(&plain)?;
    // Frozen: the VAR's parameters do not require gradients.
    let (var, _) = Var::from_checkpoint(var_ck, Some(vcfg_var.clone()), &ad)?;
    let var = var.no_grad();
    let (emb, dim) = caption_embeddings(&set, &a.frozen.tokens, &a.text_encoder, &plain)?;
    let cfg = AdapterConfig {
        text_dim: dim,
        hidden: mc.hidden,
        embed_dim: vcfg_var.embed_dim,
        alpha: mc.alpha,
        beta: mc.beta,
    };
    let run = RunDir::for_command(&a.common, &text, None, "adapter")?;
    eprintln!(
        "adapter {dim} → {} → {} on a frozen VAR d{} ({} classes)",
        mc.hidden, cfg.embed_dim, vcfg_var.depth, vcfg_var.num_classes,
    );
    let task = AdapterTask {
        var_plain: var.valid(),
        var,
        set,
        emb,
        dim,
        cfg,
        seed: tc.seed,
    };
    crate::var_task::run(&task, &run, &tc, &vae, (&plain, &ad), a.common.until())
}
