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
    /// With --init: add this many blocks on top of the checkpoint's. Each new block starts as
    /// the identity (its AdaLN gammas are zero, so both residual branches add nothing), so
    /// training resumes from exactly the checkpoint's predictions with more capacity.
    #[arg(long, requires = "init", default_value_t = 0)]
    pub deepen: usize,
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
            cfg.depth = cfg
                .depth
                .checked_add(a.deepen)
                .context("--deepen is too large")?;
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
        RunDir::for_command(&a.common, &toml::to_string(&table)?, Some(&text), "var")?
    } else {
        RunDir::for_command(&a.common, &text, None, "var")?
    };
    let (train_idx, val_idx) = set.split(tc.val_fraction);
    run.check_validate_only(&a.common, a.init.is_some())?;
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
        deepen: a.deepen,
        model: mc,
        seed: tc.seed,
        conditioning,
        conditional,
        set,
    };
    crate::var_task::run(&task, &run, &tc, &vae, (&plain, &ad), a.common.until())
}

/// The whole VAR, trained from scratch or from `--init`.
struct VarTrain {
    cfg: VarConfig,
    /// The `--init` checkpoint, used once, for a fresh start.
    init: std::cell::RefCell<Option<Checkpoint>>,
    /// Blocks added on top of the `--init` checkpoint's (`--deepen`).
    deepen: usize,
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
        let fresh = || VarInit {
            inner: RandomInit::new(self.seed),
            depth: cfg.depth,
            init_adaln: self.model.init_adaln,
            init_adaln_gamma: self.model.init_adaln_gamma,
            init_head: self.model.init_head,
        };
        // The run's own checkpoint (a resume) has the full depth; the --init one may have fewer
        // blocks (--deepen), and is used once, for a fresh start.
        let (mut ck, deepen) = match ck {
            Some(ck) => (ck, 0),
            None => match self.init.borrow_mut().take() {
                Some(ck) => (ck, self.deepen),
                None => return Ok(Var::load(&mut fresh(), cfg, device)?),
            },
        };
        let var = if deepen == 0 {
            Var::load(&mut ck, cfg, device)?
        } else {
            let mut src = Deepened {
                ck,
                fresh: fresh(),
                first_new: cfg.depth - deepen,
            };
            let var = Var::load(&mut src, cfg, device)?;
            ck = src.ck;
            var
        };
        ck.finish()?;
        Ok(var)
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

/// A checkpoint with blocks added on top (`--deepen`): blocks `first_new..` come from a fresh
/// initialisation with their AdaLN gamma rows (weights and biases `[:2C]` of `ada_lin.1`) set to
/// zero, so each new block passes its input through unchanged (`x + branch·0`) until training
/// moves the gammas. Everything else is read from the checkpoint.
struct Deepened {
    ck: Checkpoint,
    fresh: VarInit<RandomInit>,
    first_new: usize,
}

impl Deepened {
    fn is_new(&self, key: &str) -> bool {
        key.strip_prefix("blocks.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= self.first_new)
    }
}

impl nextscale::params::ParamSource for Deepened {
    fn get(
        &mut self,
        key: &str,
        shape: &[usize],
        init: nextscale::params::Init,
    ) -> nextscale::Result<Vec<f32>> {
        if !self.is_new(key) {
            return self.ck.get(key, shape, init);
        }
        let mut v = self.fresh.get(key, shape, init)?;
        // ada_lin.1 is Linear(C → 6C): weight [6C, C], bias [6C]; gamma1, gamma2 come first.
        let gammas = if key.ends_with(".ada_lin.1.weight") {
            2 * shape[0] / 6 * shape[1]
        } else if key.ends_with(".ada_lin.1.bias") {
            2 * shape[0] / 6
        } else {
            0
        };
        v[..gammas].iter_mut().for_each(|x| *x = 0.0);
        Ok(v)
    }
    fn skip_buffer(&mut self, key: &str, shape: &[usize]) -> nextscale::Result<()> {
        if self.is_new(key) {
            self.fresh.skip_buffer(key, shape)
        } else {
            self.ck.skip_buffer(key, shape)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Int};

    /// `--deepen`: the deeper VAR predicts exactly what the checkpoint did, and has its own,
    /// trainable blocks on top.
    #[test]
    fn deepened_blocks_start_as_the_identity() {
        let dev = Device::flex();
        let (cfg, _) = nextscale::fixtures::tiny_configs();
        let base = Var::load(&mut RandomInit::new(1), &cfg, &dev).unwrap();
        let mut bytes = Vec::new();
        nextscale::state_dict::write_safetensors(&mut bytes, &base.state_dict().unwrap(), None)
            .unwrap();
        let deep_cfg = VarConfig {
            depth: cfg.depth + 2,
            ..cfg.clone()
        };
        let mut src = Deepened {
            ck: Checkpoint::from_bytes(bytes).unwrap(),
            fresh: VarInit {
                inner: RandomInit::new(0),
                depth: deep_cfg.depth,
                init_adaln: 0.5,
                init_adaln_gamma: 1e-3,
                init_head: 0.02,
            },
            first_new: cfg.depth,
        };
        let deep = Var::load(&mut src, &deep_cfg, &dev).unwrap();
        src.ck.finish().unwrap();
        assert_eq!(deep.blocks.len(), cfg.depth + 2);

        let labels = Tensor::<1, Int>::from_ints([3, 7], &dev);
        let x = Tensor::<3>::random(
            [2, base.sequence_len() - 1, cfg.cvae],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let logits = |v: &Var| {
            v.forward_teacher(labels.clone(), x.clone(), None)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        assert_eq!(logits(&base), logits(&deep));

        // The new blocks: zero gammas, but random attention and MLP weights to train.
        let (sd, base_sd) = (deep.state_dict().unwrap(), base.state_dict().unwrap());
        let c = cfg.embed_dim;
        for i in cfg.depth..deep_cfg.depth {
            let w = f32s(&sd, &format!("blocks.{i}.ada_lin.1.weight"));
            assert!(w[..2 * c * c].iter().all(|&v| v == 0.0));
            assert!(w[2 * c * c..].iter().any(|&v| v != 0.0));
            let b = f32s(&sd, &format!("blocks.{i}.ada_lin.1.bias"));
            assert!(b[..2 * c].iter().all(|&v| v == 0.0));
            let fc1 = f32s(&sd, &format!("blocks.{i}.ffn.fc1.weight"));
            assert!(fc1.iter().any(|&v| v != 0.0));
        }
        // The checkpoint's blocks are its own, gammas included.
        for name in ["blocks.1.ada_lin.1.weight", "blocks.1.attn.proj.weight"] {
            assert_eq!(f32s(&sd, name), f32s(&base_sd, name), "{name}");
        }
    }

    fn f32s<'a>(sd: &'a [Entry], name: &str) -> &'a [f32] {
        match &sd.iter().find(|e| e.name == name).unwrap().values {
            nextscale::state_dict::Values::F32(v) => v,
            _ => panic!("{name} is not f32"),
        }
    }
}
