//! `native-trainer train-vqvae`: the multi-scale residual VQ-VAE from an image folder.
//!
//! Loss: reconstruction (L1 or L2) + the quantizer's commitment/codebook loss (β from the
//! model config) + optionally the patch-GAN hinge loss after `gan_start`. Codebook usage is
//! tracked per scale (the official `ema_vocab_hit_SV`), and codes unused for
//! `dead_code_after` steps are restarted from encoder outputs of the current batch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use clap::Args;
use nextscale::params::RandomInit;
use nextscale::rng::{CounterRng, stream_id};
use nextscale::state_dict::OfficialPath;
use nextscale::{VqVae, VqVaeConfig};
use serde::{Deserialize, Serialize};

use crate::args::CommonTrainArgs;
use crate::data::{Cursor, Dataset, Loader};
use crate::gan::{Discriminator, d_hinge, g_hinge};
use crate::optim::{AdamW, lr_multiplier};
use crate::run::{Metrics, Progress, RunDir};
use crate::trainconf::{self, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainVqVaeArgs {
    /// Image folder (class subfolders, metadata.jsonl/csv, or plain) or an IDX images file.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Start from this VQ-VAE (a checkpoint, or the VQ-VAE inside a nextscale pack) instead
    /// of a random initialisation: fine-tuning.
    #[arg(long)]
    pub init: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct VqVaeFile {
    model: VqVaeConfig,
    train: TrainConfig,
}

/// Trainer state saved in checkpoint metadata.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct TrainerState {
    step: u64,
    cursor: Cursor,
    bad: Vec<usize>,
    restarts: u64,
}

/// Replaces rows of the codebook (`quantize.embedding.weight`).
struct RestartCodes {
    rows: Vec<(usize, Vec<f32>)>,
    path: OfficialPath,
}

impl ModuleMapper for RestartCodes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.path.key() != "quantize.embedding.weight" || self.rows.is_empty() {
            return param;
        }
        let (id, t, mapper) = param.consume();
        let dims = t.dims();
        let rg = t.is_require_grad();
        let device = t.device();
        let mut v = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32");
        let cv = dims[D - 1];
        for (r, row) in &self.rows {
            v[r * cv..(r + 1) * cv].copy_from_slice(row);
        }
        let mut nt = Tensor::<D>::from_data(TensorData::new(v, dims), &device);
        if rg {
            nt = nt.require_grad();
        }
        Param::from_mapped_value(id, nt, mapper)
    }
}

fn f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor")
}

pub fn run(a: TrainVqVaeArgs) -> Result<()> {
    let table = a.common.table("vqvae")?;
    let text = toml::to_string(&table)?;
    let file: VqVaeFile = toml::from_str(&text).context("the VQ-VAE configuration")?;
    let (cfg, tc) = (file.model, file.train);
    cfg.validate()?;
    trainconf::validate(&tc)?;
    let size = cfg.image_size();
    let dev_kind: nextscale::device::BackendKind = a.common.device.parse()?;
    let plain = nextscale::device::init_device(dev_kind)?;
    let ad = plain.clone().autodiff();

    let ds = Dataset::open(&a.data)?;
    let (train_idx, val_idx) = ds.split(tc.val_fraction);
    eprintln!(
        "data: {} (train {}, validation {}), {size}×{size} px",
        ds.description,
        train_idx.len(),
        val_idx.len()
    );
    let run = RunDir::open(&a.common.out, &text, "vqvae")?;
    let mut loader = Loader::new(&ds, train_idx, size, tc.flip, tc.seed);
    let mut opt = AdamW::new(tc.adamw());
    let mut dopt = AdamW::new(tc.adamw());
    let num_scales = cfg.patch_nums.num_scales();
    let v = cfg.vocab_size;
    let mut usage = vec![0f32; num_scales * v];
    let mut last_hit = vec![0u64; v];
    let mut restarts = 0u64;
    let gan_on = tc.gan_weight > 0.0;

    let (mut model, mut disc, start) = match run.resume::<TrainerState>()? {
        Some((st, mut ck)) => {
            let mut mck = ck.split_prefix("model.");
            usage = mck.read_f32("quantize.ema_vocab_hit_SV")?.data;
            let model = VqVae::load(&mut mck, &cfg, &ad)?;
            mck.finish()?;
            let mut dck = ck.split_prefix("disc.");
            let disc = if gan_on {
                Some(Discriminator::new(&mut dck, 64, &ad)?)
            } else {
                None
            };
            opt.load_state(&ck, "opt", &ad)?;
            if gan_on {
                dopt.load_state(&ck, "dopt", &ad)?;
            }
            last_hit = ck
                .read_i64("trainer.last_hit")?
                .1
                .iter()
                .map(|&x| x as u64)
                .collect();
            loader.cursor = st.cursor;
            loader.bad = st.bad.into_iter().collect();
            restarts = st.restarts;
            (model, disc, st.step)
        }
        None => {
            let model = match &a.init {
                Some(p) => {
                    VqVae::from_checkpoint(
                        crate::run::open_model(p, "vae")?,
                        Some(cfg.clone()),
                        &ad,
                    )
                    .with_context(|| format!("loading {}", p.display()))?
                    .0
                }
                None => VqVae::load(&mut RandomInit::new(tc.seed), &cfg, &ad)?,
            };
            let disc = if gan_on {
                Some(Discriminator::new(
                    &mut RandomInit::new(tc.seed ^ 0xd15c),
                    64,
                    &ad,
                )?)
            } else {
                None
            };
            (model, disc, 0)
        }
    };
    let columns = [
        "loss",
        "recon",
        "vq",
        "g_loss",
        "d_loss",
        "grad_norm",
        "lr",
        "usage",
        "restarts",
        "img_per_s",
        "val_recon",
        "val_psnr",
        "val_ssim",
        "val_usage",
    ];
    let mut metrics = Metrics::open(&run.root, &columns, start)?;
    let end = tc.steps.min(a.common.stop_after.unwrap_or(u64::MAX));
    if start >= end {
        eprintln!("nothing to do: the run is at step {start} of {}", tc.steps);
        return Ok(());
    }
    let progress = Progress::new(start, tc.steps);
    let b = tc.batch_size;
    let l1 = match tc.recon.as_deref().unwrap_or("l1") {
        "l1" => true,
        "l2" => false,
        o => bail!("train.recon must be \"l1\" or \"l2\", not {o:?}"),
    };
    let mut t_log = Instant::now();
    let mut imgs_since = 0usize;
    for step in start + 1..=end {
        let lr = tc.lr * lr_multiplier(step - 1, tc.warmup_steps, tc.steps, tc.lr_end);
        let batch = loader.next_batch(b)?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, [b, 3, size, size]), &ad);
        let f = model.encode(x.clone());
        let f_host = f.clone().detach();
        let q = model.quantize.forward_train(f, cfg.beta as f64);
        let rec = model.decode_unclamped(q.f_hat);
        let recon = if l1 {
            (rec.clone() - x.clone()).abs().mean()
        } else {
            (rec.clone() - x.clone()).powi_scalar(2).mean()
        };
        let gan_active = gan_on && step > tc.gan_start;
        let mut loss = recon.clone() + q.loss.clone();
        let mut g_val = f64::NAN;
        if gan_active {
            let g = g_hinge(disc.as_ref().expect("gan").forward(rec.clone())) * tc.gan_weight;
            g_val = g.clone().into_scalar::<f32>() as f64;
            loss = loss + g;
        }
        let loss_val = loss.clone().into_scalar::<f32>() as f64;
        if !loss_val.is_finite() {
            bail!("the loss became {loss_val} at step {step}; lower train.lr");
        }
        let recon_val = recon.into_scalar::<f32>() as f64;
        let vq_val = q.loss.clone().into_scalar::<f32>() as f64;
        let mut grads = loss.backward();
        let (m, stats) = opt.step(model, &mut grads, lr);
        model = m;
        let mut d_val = f64::NAN;
        if gan_active {
            let d = disc.take().expect("gan");
            let dl = d_hinge(d.forward(x.clone().detach()), d.forward(rec.detach()));
            d_val = dl.clone().into_scalar::<f32>() as f64;
            let mut dg = dl.backward();
            disc = Some(dopt.step(d, &mut dg, lr).0);
        }
        // Codebook usage: EMA per scale and last use per code.
        for (si, idx) in q.idx.iter().enumerate() {
            let ids = idx
                .clone()
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .expect("ids");
            let mut hit = vec![0f32; v];
            for &k in &ids {
                hit[k as usize] += 1.0;
                last_hit[k as usize] = step;
            }
            let tot = ids.len().max(1) as f32;
            for k in 0..v {
                usage[si * v + k] = 0.99 * usage[si * v + k] + 0.01 * hit[k] / tot;
            }
        }
        if tc.dead_code_after > 0 {
            let dead: Vec<usize> = (0..v)
                .filter(|&k| step - last_hit[k].min(step) > tc.dead_code_after)
                .collect();
            if !dead.is_empty() {
                // Replace each dead code by a random latent vector of this batch.
                let [bb, cv, h, w] = f_host.dims();
                let fv = f32s(f_host);
                let rng = CounterRng::new(tc.seed);
                let rows = dead
                    .iter()
                    .map(|&k| {
                        let r = (rng.bits(stream_id("restart", step, k as u64), 0)
                            % (bb * h * w) as u64) as usize;
                        let (bi, pos) = (r / (h * w), r % (h * w));
                        let row: Vec<f32> =
                            (0..cv).map(|c| fv[(bi * cv + c) * h * w + pos]).collect();
                        (k, row)
                    })
                    .collect::<Vec<_>>();
                restarts += rows.len() as u64;
                for &k in &dead {
                    last_hit[k] = step;
                }
                model = model.map(&mut RestartCodes {
                    rows,
                    path: OfficialPath::default(),
                });
            }
        }
        imgs_since += b;
        let used = (0..v)
            .filter(|&k| (0..num_scales).any(|si| usage[si * v + k] > 1e-4))
            .count() as f64
            / v as f64;
        progress.update(
            step,
            &[("loss", loss_val), ("recon", recon_val), ("lr", lr)],
        );
        if step % tc.log_every == 0 || step == end {
            let ips = imgs_since as f64 / t_log.elapsed().as_secs_f64().max(1e-9);
            metrics.log(
                step,
                &[
                    ("loss", loss_val),
                    ("recon", recon_val),
                    ("vq", vq_val),
                    ("g_loss", g_val),
                    ("d_loss", d_val),
                    ("grad_norm", stats.grad_norm),
                    ("lr", lr),
                    ("usage", used),
                    ("restarts", restarts as f64),
                    ("img_per_s", ips),
                ],
            )?;
            t_log = Instant::now();
            imgs_since = 0;
        }
        let eval_now = step % tc.eval_every == 0 || step == tc.steps;
        let sample_now = step % tc.sample_every == 0 || step == tc.steps;
        if eval_now || sample_now {
            let plain_model = model.valid();
            let subset = if val_idx.is_empty() {
                &loader.subset
            } else {
                &val_idx
            };
            let ev = evaluate(&plain_model, &ds, subset, size, &cfg, &plain, l1, 64)?;
            if eval_now {
                metrics.log(
                    step,
                    &[
                        ("val_recon", ev.recon),
                        ("val_psnr", ev.psnr),
                        ("val_ssim", ev.ssim),
                        ("val_usage", ev.usage),
                    ],
                )?;
                progress.note(&format!(
                    "step {step}: validation recon {:.4}, PSNR {:.2} dB, SSIM {:.4}, codebook usage {:.1}%",
                    ev.recon,
                    ev.psnr,
                    ev.ssim,
                    100.0 * ev.usage
                ));
            }
            if sample_now {
                let n = ev.originals.len() / (3 * size * size);
                let cols = n.min(8);
                let mut tiles = Vec::new();
                tiles.extend_from_slice(&ev.originals[..cols * 3 * size * size]);
                tiles.extend_from_slice(&ev.recons[..cols * 3 * size * size]);
                crate::plot::grid(
                    &run.root.join(format!("samples/step-{step:08}.png")),
                    &tiles,
                    size,
                    cols,
                )?;
            }
        }
        if step % tc.ckpt_every == 0 || step == end {
            save(
                &run,
                &model,
                disc.as_ref(),
                &opt,
                &dopt,
                &usage,
                &last_hit,
                &loader,
                restarts,
                step,
                &tc,
            )?;
            draw_curves(&run, &metrics)?;
        }
    }
    if !loader.bad.is_empty() {
        eprintln!(
            "skipped {} files that did not decode, e.g. {}",
            loader.bad.len(),
            loader.bad_reasons.first().map(String::as_str).unwrap_or("")
        );
    }
    eprintln!("done: {}", run.root.join("vqvae.safetensors").display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn save(
    run: &RunDir,
    model: &VqVae,
    disc: Option<&Discriminator>,
    opt: &AdamW,
    dopt: &AdamW,
    usage: &[f32],
    last_hit: &[u64],
    loader: &Loader,
    restarts: u64,
    step: u64,
    tc: &TrainConfig,
) -> Result<()> {
    let sd = model.state_dict(Some(usage.to_vec()))?;
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), "nextscale-vqvae".into());
    meta.insert(
        "patch_nums".into(),
        serde_json::to_string(&model.quantize.patch_nums)?,
    );
    meta.insert("step".into(), step.to_string());
    run.save_model("vqvae.safetensors", &sd, &meta)?;
    let mut entries = Vec::new();
    if let Some(d) = disc {
        for mut e in nextscale::state_dict::parameters(d)? {
            e.name = format!("disc.{}", e.name);
            entries.push(e);
        }
        entries.extend(dopt.state_entries("dopt")?);
    }
    entries.extend(opt.state_entries("opt")?);
    entries.push(nextscale::state_dict::Entry {
        name: "trainer.last_hit".into(),
        shape: vec![last_hit.len()],
        values: nextscale::state_dict::Values::I64(last_hit.iter().map(|&x| x as i64).collect()),
    });
    let st = TrainerState {
        step,
        cursor: loader.cursor,
        bad: loader.bad.iter().copied().collect(),
        restarts,
    };
    run.save_state(step, sd, entries, meta, &st, tc.keep_last)?;
    Ok(())
}

fn draw_curves(run: &RunDir, m: &Metrics) -> Result<()> {
    crate::plot::curves(
        &run.root.join("curves.png"),
        &[
            (
                "LOSS",
                vec![
                    ("TRAIN", m.series("loss")),
                    ("VAL RECON", m.series("val_recon")),
                    ("TRAIN RECON", m.series("recon")),
                ],
            ),
            ("VALIDATION PSNR (DB)", vec![("PSNR", m.series("val_psnr"))]),
            (
                "CODEBOOK USAGE",
                vec![("TRAIN", m.series("usage")), ("VAL", m.series("val_usage"))],
            ),
        ],
    )
}

pub struct Eval {
    pub recon: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub usage: f64,
    pub originals: Vec<f32>,
    pub recons: Vec<f32>,
}

/// Reconstructs up to `max` images of `subset` through the full token path
/// (encode → quantize → decode) and measures them.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &VqVae,
    ds: &Dataset,
    subset: &[usize],
    size: usize,
    cfg: &VqVaeConfig,
    device: &Device,
    l1: bool,
    max: usize,
) -> Result<Eval> {
    let mut originals = Vec::new();
    for &i in subset.iter().take(max) {
        if let Ok(img) = ds.load(i, size) {
            originals.extend(img);
        }
    }
    let n = originals.len() / (3 * size * size);
    if n == 0 {
        bail!("no validation image decodes");
    }
    let mut recons = Vec::with_capacity(originals.len());
    let mut used = vec![false; cfg.vocab_size];
    for chunk in originals.chunks(16 * 3 * size * size) {
        let bn = chunk.len() / (3 * size * size);
        let x =
            Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [bn, 3, size, size]), device);
        let (idx, fhats) = model.quantize.f_to_idx(model.encode(x));
        for t in idx {
            for k in t
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .expect("ids")
            {
                used[k as usize] = true;
            }
        }
        let rec = model.fhat_to_img(fhats.last().expect("scales").clone());
        recons.extend(f32s(rec));
    }
    let recon = originals
        .iter()
        .zip(&recons)
        .map(|(a, b)| {
            let d = (a - b) as f64;
            if l1 { d.abs() } else { d * d }
        })
        .sum::<f64>()
        / originals.len() as f64;
    Ok(Eval {
        recon,
        psnr: crate::quality::psnr(&originals, &recons),
        ssim: crate::quality::ssim(&originals, &recons, size),
        usage: used.iter().filter(|&&u| u).count() as f64 / cfg.vocab_size as f64,
        originals,
        recons,
    })
}
