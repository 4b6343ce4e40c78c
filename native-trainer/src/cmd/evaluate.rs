//! `native-trainer evaluate`: generates images from a model (pack or checkpoints) and judges them
//! with a classifier from `train-classifier`: the accuracy with which samples show the requested
//! class (class-conditional models) or the group of the prompt's subject (text models), the
//! classifier's accuracy on the matching real images for comparison, and the Fréchet
//! distance between generated and real images in the classifier's feature space.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::Condition;
use nextscale::edit::{EditPlan, Half, Region};
use nextscale::readback::block_on;
use nextscale::sampler::{NoHooks, SampleOptions};
use serde_json::json;

use crate::args::{ModelArgs, SamplingArgs};
use crate::classifier::{FEATURES, Trained, argmax_rows, labelled_images};
use crate::data::Dataset;

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The model: a pack, or a run's checkpoints (`--var`, `--vae`, `--text-encoder`) to judge
    /// a run while it trains without exporting it.
    #[command(flatten)]
    model: ModelArgs,
    /// A classifier from `train-classifier`, trained on real images of the model's size.
    #[arg(long)]
    classifier: PathBuf,
    /// Real held-out images. Class-conditional models: labelled images (class folders or
    /// IDX). Text models: a captioned folder whose `metadata.jsonl` rows also carry the
    /// classifier's class in `--label-field`; each caption becomes one prompt.
    #[arg(long)]
    real: PathBuf,
    /// Field of `metadata.jsonl` holding the class name (text models).
    #[arg(long, default_value = "group")]
    label_field: String,
    /// Class models: the model's class id of the classifier's first class (the classifier's
    /// class c is the model's FIRST_CLASS + c), e.g. 10 to judge classes a LoRA added after
    /// the model's own ten.
    #[arg(long)]
    first_class: Option<usize>,
    /// Samples per class (class-conditional models).
    #[arg(long, default_value_t = 100)]
    per_class: usize,
    /// Use at most this many captions, evenly spaced (text models).
    #[arg(long)]
    limit: Option<usize>,
    /// Other real images (e.g. the training split): their Fréchet distance to `--real` is
    /// reported as the floor that generated images are compared with.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Use at most this many real (and reference) images for the Fréchet distance.
    #[arg(long, default_value_t = 10_000)]
    max_real: usize,
    /// Sampling settings; unset ones take the pack's recommended settings, as in `sample`.
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Images generated per batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Write the first generated images as a grid PNG.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Text models: rank each generated image against every real image of `--real` (does it
    /// resemble its own emoji rather than the others?), in pixels (16×16 means) and in the
    /// classifier's features: top-1, top-5 and the median rank of the right image.
    #[arg(long)]
    rank: bool,
    /// Also write one JSON line per generated image to this file: the class it should show
    /// and the one the classifier sees; for text models its prompt and the file of the real
    /// image the prompt describes (with `--rank`, that image's rank among all the real ones by
    /// pixels and by features, 1 = the nearest, and the file of the image nearest by pixels);
    /// for class models the class asked for (with `--keep-half`, also the index of the real
    /// image completed among the readable images of `--real`, and whether it was completed
    /// without its class).
    #[arg(long)]
    items: Option<PathBuf>,
    /// Also write each generated image to this folder (new or empty) as `NNNNN.png`, numbered like the lines
    /// of `--items` (e.g. to judge the images with another tool, as
    /// `scripts/emoji-pretrained-judge.py` does).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Class models: instead of generating from nothing, complete the real images of
    /// `--real` (at most `--limit`) from this half (top, bottom, left or right), with their own
    /// class, and judge the completions.
    #[arg(long)]
    keep_half: Option<String>,
    /// With --keep-half: complete without the class (the null condition): does the kept half
    /// alone carry the digit?
    #[arg(long, requires = "keep_half")]
    unconditional: bool,
}

/// 16×16 box means of `[3, s, s]` images (`s` a multiple of 16): a pixel-space descriptor
/// that tolerates small shifts.
fn pooled(imgs: &[f32], s: usize) -> Vec<f32> {
    let f = (s / 16).max(1);
    let p = s / f;
    let per = 3 * s * s;
    imgs.chunks_exact(per)
        .flat_map(|im| {
            (0..3 * p * p).map(move |o| {
                let (c, y, x) = (o / (p * p), (o / p) % p, o % p);
                let mut acc = 0.0;
                for dy in 0..f {
                    for dx in 0..f {
                        acc += im[c * s * s + (y * f + dy) * s + x * f + dx];
                    }
                }
                acc / (f * f) as f32
            })
        })
        .collect()
}

/// For each query row, the rank (1 = best) of `want[i]` among the candidate rows by L2
/// distance, and the index of the nearest candidate: one pass over the distances.
fn ranks(query: &[f32], cands: &[f32], want: &[usize], d: usize) -> (Vec<usize>, Vec<usize>) {
    query
        .chunks_exact(d)
        .zip(want)
        .map(|(q, &w)| {
            let dist: Vec<f32> = cands
                .chunks_exact(d)
                .map(|c| q.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum())
                .collect();
            let target = dist[w];
            let rank = 1 + dist.iter().filter(|&&x| x < target).count();
            let nearest = (0..dist.len())
                .min_by(|&i, &j| dist[i].total_cmp(&dist[j]))
                .unwrap_or(w);
            (rank, nearest)
        })
        .unzip()
}

/// Top-1, top-5 and the median of ranks from [`ranks`].
fn summary(ranks: &[usize]) -> (f64, f64, f64) {
    let n = ranks.len().max(1) as f64;
    let top = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n;
    let (t1, t5) = (top(1), top(5));
    let mut ranks = ranks.to_vec();
    ranks.sort_unstable();
    let median = ranks.get(ranks.len() / 2).copied().unwrap_or(0) as f64;
    (t1, t5, median)
}

/// `[3, s, s]` in [−1, 1] from a decoded image.
fn chw(im: &nextscale::image::RgbImage) -> Vec<f32> {
    let (w, h) = (im.width, im.height);
    let mut out = vec![0f32; 3 * w * h];
    for (p, px) in im.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * w * h + p] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// Evenly spaced `k` of `0..n`.
fn spaced(n: usize, k: Option<usize>) -> Vec<usize> {
    match k {
        Some(k) if k < n => (0..k).map(|i| i * n / k).collect(),
        _ => (0..n).collect(),
    }
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be ≥ 1");
    }
    let (pipe, device) = a.model.load()?;
    if !pipe.can_decode() {
        bail!(
            "the model has no VQ-VAE decoder (with --var, give a full VQ-VAE to --vae): nothing to look at"
        );
    }
    if pipe.var_config().text_dim > 0 && pipe.text_encoder().is_none() {
        bail!("the VAR is text-conditioned: give its sentence encoder with --text-encoder");
    }
    let clf = Trained::open(&a.classifier, &device)?;
    let size = pipe.image_size();
    if clf.size != size {
        bail!(
            "the classifier sees {0}×{0} images, the model makes {size}×{size}",
            clf.size
        );
    }
    let k = clf.class_names.len();
    let opts = a.sampling.options(&pipe);
    opts.validate()?;

    // What to generate (one condition per image) with the class each image should show, and
    // the real images to compare against.
    let text_mode = pipe.takes_prompts();
    let first = a.first_class.unwrap_or(0);
    // With --rank: the candidate images, each prompt's own among them, and their files.
    let mut rank_data: Option<(Vec<f32>, Vec<usize>, Vec<String>)> = None;
    // Text models: the real image each prompt names (for `--items`).
    let mut item_files: Vec<String> = Vec::new();
    let (prompts, targets, real_imgs, real_labels): (
        Vec<String>,
        Vec<usize>,
        Vec<f32>,
        Vec<usize>,
    ) = if text_mode {
        let meta = a.real.join("metadata.jsonl");
        let text = std::fs::read_to_string(&meta)
            .with_context(|| format!("reading {} (text models need captions)", meta.display()))?;
        let rows: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", meta.display()))?;
        let (mut prompts, mut targets, mut imgs, mut labels) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in spaced(rows.len(), a.limit) {
            let r = &rows[i];
            let field = |f: &str| {
                r[f].as_str()
                    .with_context(|| format!("{}: row {} has no \"{f}\"", meta.display(), i + 1))
            };
            let caption = field("text").or_else(|_| field("caption"))?;
            let class = field(&a.label_field)?;
            let label = clf
                .class_names
                .iter()
                .position(|c| c == class)
                .with_context(|| format!("class {class:?} is not one of the classifier's"))?;
            let path = a.real.join(field("file_name")?);
            let img = image::open(&path).with_context(|| format!("reading {}", path.display()))?;
            prompts.push(caption.to_string());
            item_files.push(field("file_name")?.to_string());
            targets.push(label);
            imgs.extend(crate::data::to_chw(&img, size).map_err(anyhow::Error::msg)?);
            labels.push(label);
        }
        if a.rank {
            // Every distinct image of the folder is a candidate; each prompt's own is the answer.
            let mut files: Vec<String> = Vec::new();
            let mut cands = Vec::new();
            for r in &rows {
                let f = r["file_name"].as_str().unwrap_or_default().to_string();
                if !files.contains(&f) {
                    let path = a.real.join(&f);
                    let img = image::open(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    cands.extend(crate::data::to_chw(&img, size).map_err(anyhow::Error::msg)?);
                    files.push(f);
                }
            }
            let want = spaced(rows.len(), a.limit)
                .into_iter()
                .map(|i| {
                    let f = rows[i]["file_name"].as_str().unwrap_or_default();
                    files.iter().position(|x| x == f).expect("listed")
                })
                .collect();
            rank_data = Some((cands, want, files));
        }
        (prompts, targets, imgs, labels)
    } else {
        let nc = pipe.var_config().num_classes;
        if a.first_class.is_none() && nc != k {
            bail!(
                "the model has {nc} classes, the classifier {k} (use --first-class to judge a range)"
            );
        }
        if first.checked_add(k).is_none_or(|end| end > nc) {
            bail!("the classifier's {k} classes from model class {first} go past the model's {nc}");
        }
        let ds = Dataset::open(&a.real)?;
        if ds.class_names != clf.class_names {
            bail!(
                "{}: classes {:?} differ from the classifier's {:?}",
                a.real.display(),
                ds.class_names,
                clf.class_names
            );
        }
        let (imgs, labels) = labelled_images(&ds, size)?;
        let targets = if a.keep_half.is_some() {
            // The real images themselves are completed: one per image of --limit.
            spaced(labels.len(), a.limit)
                .iter()
                .map(|&i| labels[i])
                .collect()
        } else {
            (0..k)
                .flat_map(|c| std::iter::repeat_n(c, a.per_class))
                .collect()
        };
        (Vec::new(), targets, imgs, labels)
    };
    let n = targets.len();
    if n == 0 {
        bail!("nothing to generate");
    }

    if let Some(dir) = &a.images {
        crate::plot::image_folder(dir)?;
    }
    let t0 = Instant::now();
    let mut gen_imgs = Vec::with_capacity(n * 3 * size * size);
    for (bi, start) in (0..n).step_by(a.batch).enumerate() {
        let end = (start + a.batch).min(n);
        let o = SampleOptions {
            seed: opts.seed.wrapping_add(bi as u64),
            ..opts.clone()
        };
        let g = if let Some(half) = &a.keep_half {
            let region =
                Region::Mask(Half::parse(half)?.mask(pipe.var_config().patch_nums.latent()));
            let per = 3 * size * size;
            let picks = spaced(real_labels.len(), a.limit);
            let mut plan: Option<EditPlan> = None;
            for &i in &picks[start..end] {
                let rgba =
                    crate::plot::rgb_image(&real_imgs[i * per..(i + 1) * per], size).to_rgba();
                let view = nextscale::image::RgbaView::new(size, size, &rgba)?;
                let one = block_on(pipe.plan_edit(&view, &region, 1))?;
                match &mut plan {
                    None => plan = Some(one),
                    Some(p) => {
                        for (all, s) in p.source.iter_mut().zip(one.source) {
                            all.extend(s);
                        }
                    }
                }
            }
            let conds: Vec<Condition> = targets[start..end]
                .iter()
                .map(|&c| {
                    if a.unconditional {
                        Condition::Unconditional
                    } else {
                        Condition::Class(first + c)
                    }
                })
                .collect();
            block_on(pipe.edit(&conds, &o, plan.expect("a batch"), &mut NoHooks))?
        } else if text_mode {
            let p: Vec<&str> = prompts[start..end].iter().map(String::as_str).collect();
            block_on(pipe.generate_prompts(&p, &o, &mut NoHooks))?
        } else {
            let ids: Vec<usize> = targets[start..end].iter().map(|&c| first + c).collect();
            block_on(pipe.generate(&ids, &o, &mut NoHooks))?
        };
        for (j, im) in block_on(pipe.decode(&g))?.iter().enumerate() {
            if let Some(dir) = &a.images {
                crate::args::save_png(im, &dir.join(format!("{:05}.png", start + j)))?;
            }
            gen_imgs.extend(chw(im));
        }
        eprintln!("generated {end}/{n} ({:.1} s)", t0.elapsed().as_secs_f64());
    }
    let gen_secs = t0.elapsed().as_secs_f64();
    if let Some(p) = &a.grid {
        // Class models: a row of (up to) ten samples per class; text models: the first 100.
        let per = 3 * size * size;
        let pick: Vec<usize> = if text_mode || a.keep_half.is_some() {
            (0..n.min(100)).collect()
        } else {
            (0..k)
                .flat_map(|c| (0..a.per_class.min(10)).map(move |j| c * a.per_class + j))
                .collect()
        };
        let tiles: Vec<f32> = pick
            .iter()
            .flat_map(|&i| gen_imgs[i * per..(i + 1) * per].iter().copied())
            .collect();
        let cols = if text_mode || a.keep_half.is_some() {
            10
        } else {
            a.per_class.min(10)
        };
        crate::plot::grid(p, &tiles, size, cols)?;
    }

    let (gl, gf) = clf.run(&gen_imgs, &device)?;
    let gen_pred = argmax_rows(&gl, k);
    let per = 3 * size * size;
    let n_real = real_labels.len().min(a.max_real);
    let (rl, rf) = clf.run(&real_imgs[..n_real * per], &device)?;
    let real_pred = argmax_rows(&rl, k);
    let acc = |pred: &[usize], want: &[usize]| {
        pred.iter().zip(want).filter(|(p, w)| p == w).count() as f64 / pred.len().max(1) as f64
    };
    let per_class: Vec<serde_json::Value> = (0..k)
        .map(|c| {
            let idx: Vec<usize> = (0..n).filter(|&i| targets[i] == c).collect();
            let ok = idx.iter().filter(|&&i| gen_pred[i] == c).count();
            // The judge on the real images of the class: where it is blind, so is `accuracy`.
            let real: Vec<usize> = (0..n_real).filter(|&i| real_labels[i] == c).collect();
            let real_ok = real.iter().filter(|&&i| real_pred[i] == c).count();
            // A share of nothing is no figure: null, not 0.
            let share = |k: usize, of: usize| (of > 0).then(|| k as f64 / of as f64);
            json!({"class": clf.class_names[c], "generated": idx.len(),
                   "accuracy": share(ok, idx.len()),
                   "real": real.len(),
                   "accuracy_real": share(real_ok, real.len())})
        })
        .collect();
    let fd = frechet_distance(&gf, &rf, FEATURES);
    let fd_reference = match &a.reference {
        Some(p) => {
            let ds = Dataset::open(p)?;
            let all: Vec<usize> = (0..ds.items.len()).collect();
            let mut imgs = Vec::new();
            let mut bad = 0;
            for i in spaced(all.len(), Some(a.max_real)) {
                match ds.load(i, size) {
                    Ok(v) => imgs.extend(v),
                    Err(e) => {
                        bad += 1;
                        eprintln!("skipping {e}");
                    }
                }
            }
            if imgs.is_empty() {
                bail!(
                    "{}: no reference image could be read ({bad} failed)",
                    p.display()
                );
            }
            let (_, f) = clf.run(&imgs, &device)?;
            Some(frechet_distance(&f, &rf, FEATURES))
        }
        None => None,
    };
    let mut item_ranks: Option<(Vec<usize>, Vec<usize>, Vec<usize>)> = None;
    let ranking = match &rank_data {
        Some((cands, want, _)) => {
            let d = 3 * 16 * 16;
            let (pixel, closest) = ranks(&pooled(&gen_imgs, size), &pooled(cands, size), want, d);
            let (_, cf) = clf.run(cands, &device)?;
            let (feature, _) = ranks(&gf, &cf, want, FEATURES);
            let (p1, p5, pm) = summary(&pixel);
            let (f1, f5, fm) = summary(&feature);
            item_ranks = Some((pixel, feature, closest));
            json!({
                "candidates": cands.len() / per,
                "chance_top1": per as f64 / cands.len() as f64,
                "pixels_16x16": {"top1": p1, "top5": p5, "median_rank": pm},
                "classifier_features": {"top1": f1, "top5": f5, "median_rank": fm},
            })
        }
        None => serde_json::Value::Null,
    };
    if let Some(path) = &a.items {
        // With --keep-half, the real images completed (as generated above).
        let completed = a
            .keep_half
            .as_ref()
            .map(|_| spaced(real_labels.len(), a.limit));
        let mut out = String::new();
        for i in 0..n {
            let mut row = json!({
                "index": i,
                "want": clf.class_names[targets[i]],
                "seen": clf.class_names[gen_pred[i]],
            });
            if text_mode {
                row["prompt"] = json!(prompts[i]);
                row["file_name"] = json!(item_files[i]);
            } else {
                row["class"] = json!(first + targets[i]);
                if let Some(picks) = &completed {
                    row["real_index"] = json!(picks[i]);
                    row["unconditional"] = json!(a.unconditional);
                }
            }
            if let (Some((pixel, feature, closest)), Some((_, _, files))) =
                (&item_ranks, &rank_data)
            {
                row["rank_pixels"] = json!(pixel[i]);
                row["rank_features"] = json!(feature[i]);
                row["nearest_pixels"] = json!(files[closest[i]]);
            }
            out.push_str(&serde_json::to_string(&row)?);
            out.push('\n');
        }
        crate::run::write_atomic(path, out.as_bytes())?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "ranking": ranking,
            "mode": if text_mode { "prompts" } else if a.keep_half.is_some() { "completion" } else { "classes" },
            "keep_half": a.keep_half, "unconditional": a.unconditional,
            "generated": n,
            "real": n_real,
            "accuracy_generated": acc(&gen_pred, &targets),
            "accuracy_real": (n_real > 0).then(|| acc(&real_pred, &real_labels[..n_real])),
            "frechet_distance": fd,
            "frechet_distance_reference_vs_real": fd_reference,
            "per_class": per_class,
            "cfg": opts.cfg, "top_k": opts.top_k, "top_p": opts.top_p, "seed": opts.seed,
            "more_smooth": opts.more_smooth,
            "generate_seconds": gen_secs,
        }))?
    );
    Ok(())
}

/// Mean and covariance (unbiased) of `n` rows of length `d`, in f64.
fn moments(x: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / d;
    let mut mu = vec![0f64; d];
    for r in x.chunks_exact(d) {
        for (m, &v) in mu.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mu.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0f64; d * d];
    for r in x.chunks_exact(d) {
        let c: Vec<f64> = r.iter().zip(&mu).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..d {
            for j in i..d {
                cov[i * d + j] += c[i] * c[j];
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] / denom;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    (mu, cov)
}

/// Eigen-decomposition of a symmetric `d×d` matrix by cyclic Jacobi rotations:
/// `(eigenvalues, eigenvectors as columns)`.
fn sym_eigen(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum();
        let diag: f64 = (0..d).map(|i| a[i * d + i] * a[i * d + i]).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0f64; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                out[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    out
}

/// Fréchet distance between Gaussians fitted to two feature sets (rows of length `d`):
/// `|μ₁−μ₂|² + tr(Σ₁) + tr(Σ₂) − 2·tr((Σ₁^½ Σ₂ Σ₁^½)^½)`.
pub fn frechet_distance(x: &[f32], y: &[f32], d: usize) -> f64 {
    let (m1, s1) = moments(x, d);
    let (m2, s2) = moments(y, d);
    let dm: f64 = m1.iter().zip(&m2).map(|(a, b)| (a - b) * (a - b)).sum();
    let (l, v) = sym_eigen(s1.clone(), d);
    // Σ₁^½ = V diag(√λ) Vᵀ
    let mut root = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            root[i * d + j] = (0..d)
                .map(|k| v[i * d + k] * l[k].max(0.0).sqrt() * v[j * d + k])
                .sum();
        }
    }
    let mut m = matmul(&matmul(&root, &s2, d), &root, d);
    for i in 0..d {
        for j in i + 1..d {
            let s = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = s;
            m[j * d + i] = s;
        }
    }
    let tr_cross: f64 = sym_eigen(m, d).0.iter().map(|e| e.max(0.0).sqrt()).sum();
    let tr = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    (dm + tr(&s1) + tr(&s2) - 2.0 * tr_cross).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, d: usize, mean: &[f64], std: &[f64], seed: u64) -> Vec<f32> {
        let rng = nextscale::rng::CounterRng::new(seed);
        (0..n * d)
            .map(|i| (mean[i % d] + std[i % d] * rng.normal(0, i as u64)) as f32)
            .collect()
    }

    #[test]
    fn eigen_decomposition_reconstructs_the_matrix() {
        let d = 4;
        let a = vec![
            4.0, 1.0, 0.5, 0.0, 1.0, 3.0, 0.2, 0.1, 0.5, 0.2, 2.0, 0.3, 0.0, 0.1, 0.3, 1.0,
        ];
        let (l, v) = sym_eigen(a.clone(), d);
        for i in 0..d {
            for j in 0..d {
                let r: f64 = (0..d).map(|k| v[i * d + k] * l[k] * v[j * d + k]).sum();
                assert!((r - a[i * d + j]).abs() < 1e-10, "{i},{j}: {r}");
            }
        }
    }

    #[test]
    fn frechet_distance_matches_the_closed_form_for_independent_gaussians() {
        // Independent coordinates: FD = Σ (μ₁−μ₂)² + (σ₁−σ₂)².
        let d = 3;
        let x = gaussian(40_000, d, &[0.0, 1.0, -1.0], &[1.0, 2.0, 0.5], 1);
        let y = gaussian(40_000, d, &[0.5, 1.0, -1.0], &[1.0, 1.0, 0.5], 2);
        let want = 0.25 + 1.0;
        let got = frechet_distance(&x, &y, d);
        assert!((got - want).abs() < 0.05, "FD {got}, closed form {want}");
        let same = frechet_distance(&x, &x, d);
        assert!(same < 1e-9, "FD of a set with itself: {same}");
    }
}
