//! `native-trainer train-vqvae`: the multi-scale residual VQ-VAE from an image folder.
//!
//! Loss: reconstruction (L1 or L2) + the quantizer's commitment/codebook loss (β from the
//! model config) + optionally the patch-GAN hinge loss after `gan_start`. Codebook usage is
//! tracked per scale (the official `ema_vocab_hit_SV`), and codes unused for
//! `dead_code_after` steps are restarted from encoder outputs of the current batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use clap::Args;
use nextscale::params::RandomInit;
use nextscale::rng::{CounterRng, stream_id};
use nextscale::state_dict::{Entry, OfficialPath, Values as Values_};
use nextscale::{Checkpoint, VqVae, VqVaeConfig};
use serde::{Deserialize, Serialize};

use crate::args::CommonTrainArgs;
use crate::data::{Cursor, Dataset, Loader};
use crate::gan::{Discriminator, d_hinge, g_hinge};
use crate::optim::AdamW;
use crate::plot::Panel;
use crate::run::{Metrics, RunDir};
use crate::train_loop::{Snapshot, StepLog, Task, Values};
use crate::trainconf::TrainConfig;

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
    let setup = a.common.resolve::<VqVaeConfig>("vqvae")?;
    let (cfg, tc, text) = (setup.model, setup.train, setup.text);
    let (plain, ad) = (setup.plain, setup.autodiff);
    cfg.validate()?;
    let l1 = match tc.recon.as_deref().unwrap_or("l1") {
        "l1" => true,
        "l2" => false,
        o => bail!("train.recon must be \"l1\" or \"l2\", not {o:?}"),
    };
    let size = cfg.image_size();

    let ds = Dataset::open(&a.data)?;
    let (train_idx, val_idx) = ds.split(tc.val_fraction);
    eprintln!(
        "data: {} (train {}, validation {}), {size}×{size} px",
        ds.description,
        train_idx.len(),
        val_idx.len()
    );
    if val_idx.is_empty() && !a.common.validate_only {
        eprintln!("nothing is held out (train.val_fraction): no validation figures will be logged");
    }
    let run = RunDir::for_command(&a.common, &text, None, "vqvae")?;
    run.check_validate_only(&a.common, a.init.is_some())?;
    let v = cfg.vocab_size;
    let mut task = VqTask {
        loader: Loader::new(&ds, train_idx, size, tc.flip, tc.seed),
        ds: &ds,
        val_idx,
        size,
        opt: AdamW::new(tc.adamw()),
        dopt: AdamW::new(tc.adamw()),
        usage: vec![0f32; cfg.patch_nums.num_scales() * v],
        last_hit: vec![0u64; v],
        restarts: 0,
        gan_on: tc.gan_weight > 0.0,
        l1,
        model: None,
        disc: None,
        init: a.init,
        cfg,
        tc: tc.clone(),
        plain,
        ad,
    };
    crate::train_loop::run(&mut task, &run, &tc, a.common.until())
}

/// The VQ-VAE (and, with `train.gan_weight`, its patch discriminator) as a task of the
/// shared training loop.
struct VqTask<'a> {
    cfg: VqVaeConfig,
    tc: TrainConfig,
    ds: &'a Dataset,
    loader: Loader<'a>,
    val_idx: Vec<usize>,
    size: usize,
    model: Option<VqVae>,
    disc: Option<Discriminator>,
    /// `--init`, used for a fresh start.
    init: Option<PathBuf>,
    opt: AdamW,
    dopt: AdamW,
    /// Codebook usage: an EMA of each code's share per scale (`[scales × V]`), and the step
    /// each code was last used at.
    usage: Vec<f32>,
    last_hit: Vec<u64>,
    restarts: u64,
    gan_on: bool,
    l1: bool,
    plain: Device,
    ad: Device,
}

/// What a forward pass leaves for the update.
struct VqPass {
    x: Tensor<4>,
    rec: Tensor<4>,
    /// The encoder output (detached), to restart dead codes from.
    f_host: Tensor<4>,
    idx: Vec<Tensor<2, Int>>,
    recon: Tensor<1>,
    vq: Tensor<1>,
    g_loss: f64,
}

impl Task for VqTask<'_> {
    type State = TrainerState;
    type Pass = VqPass;
    const KIND: &'static str = "vqvae";
    const THROUGHPUT: &'static str = "img_per_s";

    fn columns(&self) -> Vec<String> {
        [
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
        ]
        .map(String::from)
        .to_vec()
    }

    fn start(&mut self, resumed: Option<(TrainerState, Checkpoint)>) -> Result<u64> {
        let (cfg, tc, ad) = (&self.cfg, &self.tc, &self.ad);
        let new_disc = |src: &mut dyn nextscale::params::ParamSource| -> Result<_> {
            Ok(if self.gan_on {
                Some(Discriminator::new(src, 64, ad)?)
            } else {
                None
            })
        };
        let Some((st, mut ck)) = resumed else {
            let model = match &self.init {
                Some(p) => {
                    VqVae::from_checkpoint(crate::run::open_model(p, "vae")?, Some(cfg.clone()), ad)
                        .with_context(|| format!("loading {}", p.display()))?
                        .0
                }
                None => VqVae::load(&mut RandomInit::new(tc.seed), cfg, ad)?,
            };
            self.disc = new_disc(&mut RandomInit::new(tc.seed ^ 0xd15c))?;
            self.model = Some(model);
            return Ok(0);
        };
        let mut mck = ck.split_prefix("model.");
        self.usage = mck.read_f32("quantize.ema_vocab_hit_SV")?.data;
        let model = VqVae::load(&mut mck, cfg, ad)?;
        mck.finish()?;
        self.disc = new_disc(&mut ck.split_prefix("disc."))?;
        self.opt.load_state(&ck, "opt", ad)?;
        if self.gan_on {
            self.dopt.load_state(&ck, "dopt", ad)?;
        }
        self.last_hit = ck
            .read_i64("trainer.last_hit")?
            .1
            .iter()
            .map(|&x| x as u64)
            .collect();
        self.loader.cursor = st.cursor;
        self.loader.bad = st.bad.into_iter().collect();
        self.restarts = st.restarts;
        self.model = Some(model);
        Ok(st.step)
    }

    fn forward(&mut self, step: u64) -> Result<(Tensor<1>, VqPass)> {
        let (b, size) = (self.tc.batch_size, self.size);
        let batch = self.loader.next_batch(b)?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, [b, 3, size, size]), &self.ad);
        let model = self.model.as_ref().expect("started");
        let decoder_only = self.tc.decoder_only;
        let (q, f_host) = if decoder_only {
            // Decoder only: the encoder and the quantizer run without autodiff, so no gradient
            // reaches the encoder, the codebook or φ; the VQ loss is logged but not optimised.
            // (Detaching their autodiff output instead leaks: burn 0.22 keeps graphs that no
            // backward reaches, tracel-ai/burn#4970; 22 GB after 240 emoji steps here.)
            let frozen = model.valid();
            let f = frozen.encode(x.clone().inner());
            let mut q = frozen
                .quantize
                .forward_train(f.clone(), self.cfg.beta as f64);
            q.f_hat = Tensor::from_inner(q.f_hat);
            (q, f)
        } else {
            let f = model.encode(x.clone());
            let f_host = f.clone().detach();
            (
                model.quantize.forward_train(f, self.cfg.beta as f64),
                f_host,
            )
        };
        let rec = model.decode_unclamped(q.f_hat);
        let recon = if self.l1 {
            (rec.clone() - x.clone()).abs().mean()
        } else {
            (rec.clone() - x.clone()).powi_scalar(2).mean()
        };
        let mut loss = if decoder_only {
            recon.clone()
        } else {
            recon.clone() + q.loss.clone()
        };
        let mut g_loss = f64::NAN;
        if self.gan_on && step > self.tc.gan_start {
            let g =
                g_hinge(self.disc.as_ref().expect("gan").forward(rec.clone())) * self.tc.gan_weight;
            g_loss = g.clone().into_scalar::<f32>() as f64;
            loss = loss + g;
        }
        let pass = VqPass {
            x,
            rec,
            f_host,
            idx: q.idx,
            recon,
            vq: q.loss,
            g_loss,
        };
        Ok((loss, pass))
    }

    fn update(&mut self, step: u64, lr: f64, mut grads: Gradients, p: VqPass) -> Result<StepLog> {
        let model = self.model.take().expect("started");
        let (model, stats) = self.opt.step(model, &mut grads, lr);
        let mut d_loss = f64::NAN;
        if self.gan_on && step > self.tc.gan_start {
            let d = self.disc.take().expect("gan");
            let dl = d_hinge(d.forward(p.x.detach()), d.forward(p.rec.detach()));
            d_loss = dl.clone().into_scalar::<f32>() as f64;
            let mut dg = dl.backward();
            self.disc = Some(self.dopt.step(d, &mut dg, lr).0);
        }
        let model = self.track_codes(model, step, &p.idx, p.f_host);
        self.model = Some(model);
        let (v, scales) = (self.cfg.vocab_size, self.cfg.patch_nums.num_scales());
        let used = (0..v)
            .filter(|&k| (0..scales).any(|si| self.usage[si * v + k] > 1e-4))
            .count() as f64
            / v as f64;
        let recon = p.recon.into_scalar::<f32>() as f64;
        Ok(StepLog {
            progress: vec![("recon".into(), recon)],
            row: vec![
                ("recon".into(), recon),
                ("vq".into(), p.vq.into_scalar::<f32>() as f64),
                ("g_loss".into(), p.g_loss),
                ("d_loss".into(), d_loss),
                ("grad_norm".into(), stats.grad_norm),
                ("usage".into(), used),
                ("restarts".into(), self.restarts as f64),
            ],
            units: self.tc.batch_size,
        })
    }

    fn evaluate(
        &mut self,
        step: u64,
        validate: bool,
        sample: Option<&Path>,
    ) -> Result<Option<(Values, String)>> {
        let size = self.size;
        // With nothing held out there is no validation; a sample grid still shows training
        // images and their reconstructions.
        let held_out = !self.val_idx.is_empty();
        let validate = validate && held_out;
        if !validate && sample.is_none() {
            return Ok(None);
        }
        let plain_model = self.model.as_ref().expect("started").valid();
        let subset = if held_out {
            &self.val_idx
        } else {
            &self.loader.subset
        };
        let ev = evaluate(
            &plain_model,
            self.ds,
            subset,
            size,
            &self.cfg,
            &self.plain,
            self.l1,
            64,
        )?;
        if let Some(path) = sample {
            let n = ev.originals.len() / (3 * size * size);
            let cols = n.min(8);
            let mut tiles = Vec::new();
            tiles.extend_from_slice(&ev.originals[..cols * 3 * size * size]);
            tiles.extend_from_slice(&ev.recons[..cols * 3 * size * size]);
            crate::plot::grid(path, &tiles, size, cols)?;
        }
        Ok(validate.then(|| {
            (
                vec![
                    ("val_recon".into(), ev.recon),
                    ("val_psnr".into(), ev.psnr),
                    ("val_ssim".into(), ev.ssim),
                    ("val_usage".into(), ev.usage),
                ],
                format!(
                    "step {step}: validation recon {:.4}, PSNR {:.2} dB, SSIM {:.4}, codebook usage {:.1}%",
                    ev.recon,
                    ev.psnr,
                    ev.ssim,
                    100.0 * ev.usage
                ),
            )
        }))
    }

    fn snapshot(&self, step: u64) -> Result<Snapshot<TrainerState>> {
        let model = self.model.as_ref().expect("started");
        let sd = model.state_dict(Some(self.usage.clone()))?;
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), "nextscale-vqvae".into());
        meta.insert(
            "patch_nums".into(),
            serde_json::to_string(&model.quantize.patch_nums)?,
        );
        let mut extra = Vec::new();
        if let Some(d) = &self.disc {
            for mut e in nextscale::state_dict::parameters(d)? {
                e.name = format!("disc.{}", e.name);
                extra.push(e);
            }
            extra.extend(self.dopt.state_entries("dopt")?);
        }
        extra.extend(self.opt.state_entries("opt")?);
        extra.push(Entry {
            name: "trainer.last_hit".into(),
            shape: vec![self.last_hit.len()],
            values: Values_::I64(self.last_hit.iter().map(|&x| x as i64).collect()),
        });
        Ok(Snapshot {
            model: sd,
            extra,
            meta,
            state: TrainerState {
                step,
                cursor: self.loader.cursor,
                bad: self.loader.bad.iter().copied().collect(),
                restarts: self.restarts,
            },
        })
    }

    fn curves<'m>(&self, m: &'m Metrics) -> Vec<Panel<'m>> {
        vec![
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
        ]
    }

    fn finish(&self, _root: &Path) -> Result<()> {
        if !self.loader.bad.is_empty() {
            eprintln!(
                "skipped {} files that did not decode, e.g. {}",
                self.loader.bad.len(),
                self.loader
                    .bad_reasons
                    .first()
                    .map(String::as_str)
                    .unwrap_or("")
            );
        }
        Ok(())
    }
}

impl VqTask<'_> {
    /// Codebook usage (an EMA per scale, and each code's last use); codes unused for
    /// `dead_code_after` steps are replaced by random encoder outputs of this batch.
    fn track_codes(
        &mut self,
        model: VqVae,
        step: u64,
        idx: &[Tensor<2, Int>],
        f_host: Tensor<4>,
    ) -> VqVae {
        let v = self.cfg.vocab_size;
        for (si, idx) in idx.iter().enumerate() {
            let ids = idx
                .clone()
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .expect("ids");
            let mut hit = vec![0f32; v];
            for &k in &ids {
                hit[k as usize] += 1.0;
                self.last_hit[k as usize] = step;
            }
            let tot = ids.len().max(1) as f32;
            for (u, h) in self.usage[si * v..(si + 1) * v].iter_mut().zip(&hit) {
                *u = 0.99 * *u + 0.01 * h / tot;
            }
        }
        if self.tc.dead_code_after == 0 || self.tc.decoder_only {
            return model;
        }
        let dead: Vec<usize> = (0..v)
            .filter(|&k| step - self.last_hit[k].min(step) > self.tc.dead_code_after)
            .collect();
        if dead.is_empty() {
            return model;
        }
        // Replace each dead code by a random latent vector of this batch.
        let [bb, cv, h, w] = f_host.dims();
        let fv = f32s(f_host);
        let rng = CounterRng::new(self.tc.seed);
        let rows = dead
            .iter()
            .map(|&k| {
                let r = (rng.bits(stream_id("restart", step, k as u64), 0) % (bb * h * w) as u64)
                    as usize;
                let (bi, pos) = (r / (h * w), r % (h * w));
                let row: Vec<f32> = (0..cv).map(|c| fv[(bi * cv + c) * h * w + pos]).collect();
                (k, row)
            })
            .collect::<Vec<_>>();
        self.restarts += rows.len() as u64;
        for &k in &dead {
            self.last_hit[k] = step;
        }
        model.map(&mut RestartCodes {
            rows,
            path: OfficialPath::default(),
        })
    }
}

pub struct Eval {
    pub recon: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub usage: f64,
    pub originals: Vec<f32>,
    pub recons: Vec<f32>,
    /// The items of the dataset that decoded, in the order of `originals` and `recons`.
    pub items: Vec<usize>,
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
    let mut items = Vec::new();
    for &i in subset.iter().take(max) {
        if let Ok(img) = ds.load(i, size) {
            originals.extend(img);
            items.push(i);
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
        items,
    })
}
