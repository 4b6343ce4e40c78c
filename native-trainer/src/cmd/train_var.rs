//! `native-trainer train-var`: the VAR transformer on token shards from `prepare`.
//!
//! Teacher forcing with the block-causal mask, cross-entropy (optional label smoothing) over
//! all tokens, condition dropout to the null class for CFG, AdamW (β 0.9/0.95, official
//! no-decay groups), warm-up then `lin0` decay, global gradient-norm clipping, per-scale loss
//! and accuracy; optional start from an official checkpoint (fine-tuning).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Tensor;
use clap::Args;
use nextscale::VarConfig;
use nextscale::params::{RandomInit, VarInit};
use nextscale::rng::{CounterRng, stream_id};
use nextscale::sampler::SampleOptions;
use nextscale::var::Var;
use serde::{Deserialize, Serialize};

use crate::args::CommonTrainArgs;
use crate::optim::{AdamW, lr_multiplier};
use crate::run::{Metrics, Progress, RunDir};
use crate::tokens::TokenSet;
use crate::trainconf::{self, TrainConfig};

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

#[derive(Serialize, Deserialize, Debug, Clone)]
struct VarFile {
    model: VarModelConfig,
    train: TrainConfig,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct TrainerState {
    step: u64,
    epoch: u64,
    offset: u64,
}

use crate::var_steps::{
    Conditioning, TokenLoader, caption_embeddings, forward, per_scale, sample_grid, validate,
};

pub fn run(a: TrainVarArgs) -> Result<()> {
    let table = a.common.table("var")?;
    let text = toml::to_string(&table)?;
    let file: VarFile = toml::from_str(&text).context("the VAR configuration")?;
    let (mc, tc) = (file.model, file.train);
    trainconf::validate(&tc)?;
    let kind: nextscale::device::BackendKind = a.common.device.parse()?;
    let plain = nextscale::device::init_device(kind)?;
    let ad = plain.clone().autodiff();

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
    let run = RunDir::open(&a.common.out, &text, "var")?;
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
    let mut opt = AdamW::new(tc.adamw());
    let (mut var, start, epoch, offset) = match run.resume::<TrainerState>()? {
        Some((st, mut ck)) => {
            let mut mck = ck.split_prefix("model.");
            let var = Var::load(&mut mck, &cfg, &ad)?;
            mck.finish()?;
            opt.load_state(&ck, "opt", &ad)?;
            (var, st.step, st.epoch, st.offset)
        }
        None => {
            let var = match init_ck {
                Some(mut ck) => {
                    let v = Var::load(&mut ck, &cfg, &ad)?;
                    ck.finish()?;
                    v
                }
                None => Var::load(
                    &mut VarInit {
                        inner: RandomInit::new(tc.seed),
                        depth: cfg.depth,
                        init_adaln: mc.init_adaln,
                        init_adaln_gamma: mc.init_adaln_gamma,
                        init_head: mc.init_head,
                    },
                    &cfg,
                    &ad,
                )?,
            };
            (var, 0, 0, 0)
        }
    };
    let s = cfg.patch_nums.num_scales();
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
    .map(|s| s.to_string())
    .collect();
    for si in 0..s {
        columns.push(format!("loss_s{si}"));
        columns.push(format!("acc_s{si}"));
    }
    let col_refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut metrics = Metrics::open(&run.root, &col_refs, start)?;
    let end = tc.steps.min(a.common.stop_after.unwrap_or(u64::MAX));
    if start >= end {
        eprintln!("nothing to do: the run is at step {start} of {}", tc.steps);
        return Ok(());
    }
    let mut loader = TokenLoader::new(train_idx, tc.seed, epoch, offset);
    let progress = Progress::new(start, tc.steps);
    let b = tc.batch_size;
    let rng = CounterRng::new(tc.seed);
    let null = cfg.num_classes;
    let mut t_log = Instant::now();
    let mut toks_since = 0usize;
    for step in start + 1..=end {
        let lr = tc.lr * lr_multiplier(step - 1, tc.warmup_steps, tc.steps, tc.lr_end);
        let items = loader.next(b, tc.flip);
        let dropped: Vec<bool> = (0..b)
            .map(|r| rng.uniform(stream_id("cond_drop", step, r as u64), 0) < tc.cond_drop)
            .collect();
        let ids: Vec<usize> = items.iter().map(|&(i, _)| i).collect();
        let cond = conditioning.rows(&var, &set, &ids, &dropped, &ad)?;
        let (loss, ce, correct) =
            forward(&var, &vae, &set, &items, cond, tc.label_smooth, &plain, &ad)?;
        let loss_val = loss.clone().into_scalar::<f32>() as f64;
        if !loss_val.is_finite() {
            bail!("the loss became {loss_val} at step {step}; lower train.lr");
        }
        let mut grads = loss.backward();
        let (v, stats) = opt.step(var, &mut grads, lr);
        var = v;
        if stats.updated == 0 {
            bail!("no parameter received a gradient");
        }
        let (_, acc, loss_s, acc_s) = per_scale(&set.patch_nums, &ce, &correct);
        toks_since += b * set.seq_len();
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
            for si in 0..s {
                row.push((format!("loss_s{si}"), loss_s[si]));
                row.push((format!("acc_s{si}"), acc_s[si]));
            }
            let r: Vec<(&str, f64)> = row.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            metrics.log(step, &r)?;
            t_log = Instant::now();
            toks_since = 0;
        }
        if (step % tc.eval_every == 0 || step == tc.steps) && !val_idx.is_empty() {
            let pv = var.valid();
            let (vl, va) = validate(&pv, &vae, &set, &val_idx, b, &plain, |chunk| {
                conditioning.rows(&pv, &set, chunk, &vec![false; chunk.len()], &plain)
            })?;
            metrics.log(step, &[("val_loss", vl), ("val_acc", va)])?;
            progress.note(&format!(
                "step {step}: validation loss {vl:.4}, accuracy {:.2}%",
                100.0 * va
            ));
        }
        if step % tc.sample_every == 0 || step == tc.steps {
            let pv = var.valid();
            let opts = SampleOptions {
                cfg: if conditional || matches!(conditioning, Conditioning::Text { .. }) {
                    1.5
                } else {
                    0.0
                },
                top_k: 0,
                top_p: 0.0,
                seed: tc.seed.wrapping_add(step),
                more_smooth: false,
            };
            let (cond, per) = match &conditioning {
                Conditioning::Text { .. } => {
                    // Four samples for each of the first four distinct captions.
                    let picks =
                        set.distinct_captions(val_idx.iter().chain(&loader.subset).copied(), 4);
                    let items: Vec<usize> = picks
                        .iter()
                        .flat_map(|&i| std::iter::repeat_n(i, 4))
                        .collect();
                    let rows =
                        conditioning.rows(&pv, &set, &items, &vec![false; items.len()], &plain)?;
                    let n = items.len();
                    (Tensor::cat(vec![rows, pv.null_condition(n)], 0), 4)
                }
                Conditioning::Classes => {
                    let classes: Vec<usize> = if conditional {
                        (0..num_classes.min(8)).collect()
                    } else {
                        vec![null]
                    };
                    let per = if classes.len() == 1 { 8 } else { 4 };
                    let labels: Vec<usize> = classes
                        .iter()
                        .flat_map(|&c| std::iter::repeat_n(c, per))
                        .collect();
                    (nextscale::sampler::class_condition(&pv, &labels)?, per)
                }
            };
            let path = run.root.join(format!("samples/step-{step:08}.png"));
            sample_grid(&pv, &vae, cond, &opts, &path, per)?;
        }
        if step % tc.ckpt_every == 0 || step == end {
            let sd = var.state_dict()?;
            let mut meta = BTreeMap::new();
            meta.insert("format".into(), "nextscale-var".into());
            meta.insert("patch_nums".into(), serde_json::to_string(&var.patch_nums)?);
            meta.insert("step".into(), step.to_string());
            if conditional {
                meta.insert(
                    "class_names".into(),
                    serde_json::to_string(&set.class_names)?,
                );
            }
            run.save_model("var.safetensors", &sd, &meta)?;
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
                    (
                        "LOSS PER SCALE",
                        (0..s.min(6))
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
    if conditional {
        std::fs::write(
            run.root.join("class_names.txt"),
            set.class_names.join("\n") + "\n",
        )?;
    }
    eprintln!("done: {}", run.root.join("var.safetensors").display());
    Ok(())
}
