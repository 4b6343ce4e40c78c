//! `native-trainer train-var`: the VAR transformer on token shards from `prepare`.
//!
//! Teacher forcing with the block-causal mask, cross-entropy (optional label smoothing) over
//! all tokens, condition dropout to the null class for CFG, AdamW (β 0.9/0.95, official
//! no-decay groups), warm-up then `lin0` decay, global gradient-norm clipping, per-scale loss
//! and accuracy; optional start from an official checkpoint (fine-tuning).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor};
use clap::Args;
use nextscale::params::{RandomInit, VarInit};
use nextscale::state_dict::Entry;
use nextscale::var::Var;
use nextscale::{Checkpoint, VarConfig};
use serde::{Deserialize, Serialize};

use crate::args::CommonTrainArgs;
use crate::run::RunDir;
use crate::tokens::TokenSet;
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

use crate::var_steps::{Conditioning, TextNoise, caption_embeddings};
use crate::var_task::VarTask;

pub fn run(a: TrainVarArgs) -> Result<()> {
    let setup = a.common.resolve::<VarModelConfig>("var")?;
    let (mc, tc, text) = (setup.model, setup.train, setup.text);
    let (plain, ad) = (setup.plain, setup.autodiff);

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
    if tc.text_noise != 0.0 && matches!(conditioning, Conditioning::Classes) {
        bail!("train.text_noise perturbs caption embeddings: it needs --text-encoder");
    }
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
    // With --init the checkpoint's architecture replaced the preset's: config.toml records the
    // one trained. Folders from builds that recorded the preset's [model] still resume.
    let run = if a.init.is_some() {
        let mut table: toml::Table = toml::from_str(&text)?;
        let model = table
            .get_mut("model")
            .and_then(toml::Value::as_table_mut)
            .context("the configuration has no [model] table")?;
        let int = |v: usize| toml::Value::Integer(v as i64);
        for (key, value) in [
            ("depth", int(cfg.depth)),
            ("embed_dim", int(cfg.embed_dim)),
            ("num_heads", int(cfg.num_heads)),
            ("mlp_ratio", toml::Value::Float(cfg.mlp_ratio)),
            ("norm_eps", toml::Value::Float(cfg.norm_eps)),
        ] {
            model.insert(key.into(), value);
        }
        RunDir::open_or_update(&a.common.out, &toml::to_string(&table)?, Some(&text), "var")?
    } else {
        RunDir::open(&a.common.out, &text, "var")?
    };
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
    let task = VarTrain {
        cfg,
        init: std::cell::RefCell::new(init_ck),
        model: mc,
        seed: tc.seed,
        conditioning,
        conditional,
        set,
    };
    crate::var_task::run(&task, &run, &tc, &vae, (&plain, &ad), a.common.stop_after)
}

/// The whole VAR, trained from scratch or from `--init`.
struct VarTrain {
    cfg: VarConfig,
    /// The `--init` checkpoint, used once, for a fresh start.
    init: std::cell::RefCell<Option<Checkpoint>>,
    model: VarModelConfig,
    seed: u64,
    conditioning: Conditioning,
    conditional: bool,
    set: TokenSet,
}

impl VarTask for VarTrain {
    type Model = Var;
    const KIND: &'static str = "var";

    fn set(&self) -> &TokenSet {
        &self.set
    }

    fn load(&self, ck: Option<Checkpoint>, device: &Device) -> Result<Var> {
        let cfg = &self.cfg;
        let fresh = || {
            Var::load(
                &mut VarInit {
                    inner: RandomInit::new(self.seed),
                    depth: cfg.depth,
                    init_adaln: self.model.init_adaln,
                    init_adaln_gamma: self.model.init_adaln_gamma,
                    init_head: self.model.init_head,
                },
                cfg,
                device,
            )
        };
        Ok(match ck.or_else(|| self.init.borrow_mut().take()) {
            Some(mut ck) => {
                let v = Var::load(&mut ck, cfg, device)?;
                ck.finish()?;
                v
            }
            None => fresh()?,
        })
    }

    fn var<'a>(&'a self, model: &'a Var, _train: bool) -> &'a Var {
        model
    }

    fn rows(
        &self,
        var: &Var,
        items: &[usize],
        dropped: &[bool],
        noise: Option<&TextNoise>,
        _train: bool,
        device: &Device,
    ) -> Result<Tensor<2>> {
        self.conditioning
            .rows(var, &self.set, items, dropped, noise, device)
    }

    fn save(&self, var: &Var) -> Result<(Vec<Entry>, BTreeMap<String, String>)> {
        let sd = var.state_dict()?;
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), "nextscale-var".into());
        meta.insert("patch_nums".into(), serde_json::to_string(&var.patch_nums)?);
        if self.conditional {
            meta.insert(
                "class_names".into(),
                serde_json::to_string(&self.set.class_names)?,
            );
        }
        Ok((sd, meta))
    }

    /// Text models: four images for each of four captions; class models: four for each of the
    /// first eight classes; unconditional: eight.
    fn sample_rows(
        &self,
        var: &Var,
        set: &TokenSet,
        order: &[usize],
        device: &Device,
    ) -> Result<(Tensor<2>, usize, f32)> {
        if let Conditioning::Text { .. } = self.conditioning {
            return crate::var_task::picked_rows(self, var, set, order, device);
        }
        let classes: Vec<usize> = if self.conditional {
            (0..self.cfg.num_classes.min(8)).collect()
        } else {
            vec![self.cfg.num_classes]
        };
        let per = if classes.len() == 1 { 8 } else { 4 };
        let labels: Vec<usize> = classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, per))
            .collect();
        let cfg = if self.conditional { 1.5 } else { 0.0 };
        Ok((nextscale::sampler::class_condition(var, &labels)?, per, cfg))
    }

    fn finish(&self, root: &std::path::Path) -> Result<()> {
        if self.conditional {
            std::fs::write(
                root.join("class_names.txt"),
                self.set.class_names.join("\n") + "\n",
            )?;
        }
        Ok(())
    }
}
