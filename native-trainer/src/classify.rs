//! `native-trainer train-classifier`: a small convolutional classifier trained on real images
//! (digits, emoji groups). It is the project's own judge of generated images: its accuracy on
//! samples says whether they show the requested class, and its penultimate features are the
//! space in which `evaluate` measures a Fréchet distance (no Inception weights exist here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};
use clap::Args;
use nextscale::Checkpoint;
use nextscale::nn::{Conv2d, GroupNorm, Linear};
use nextscale::params::{Init, ParamSource, RandomInit};

use crate::data::{Dataset, Loader};
use crate::optim::{AdamW, AdamWConfig, lr_multiplier};
use crate::run::{Progress, write_atomic};

/// Base channel count; the widths are `[w, 2w, 4w, 4w]`.
const WIDTH: usize = 32;
/// Size of the feature vector (`features`).
pub const FEATURES: usize = 128;

#[derive(Module, Debug)]
pub struct Classifier {
    pub convs: Vec<Conv2d>,
    pub norms: Vec<GroupNorm>,
    pub feat: Linear,
    pub head: Linear,
}

impl Classifier {
    pub fn new(src: &mut dyn ParamSource, classes: usize, device: &Device) -> Result<Self> {
        let w = WIDTH;
        let spec = [
            (3, w, 1),
            (w, 2 * w, 2),
            (2 * w, 4 * w, 2),
            (4 * w, 4 * w, 2),
        ];
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for (i, &(ci, co, s)) in spec.iter().enumerate() {
            convs.push(Conv2d::load(
                src,
                &format!("convs.{i}"),
                ci,
                co,
                3,
                s,
                1,
                device,
            )?);
            norms.push(GroupNorm::load(
                src,
                &format!("norms.{i}"),
                co,
                8,
                1e-5,
                device,
            )?);
        }
        let b1 = 1.0 / ((4 * w) as f32).sqrt();
        let b2 = 1.0 / (FEATURES as f32).sqrt();
        Ok(Self {
            convs,
            norms,
            feat: Linear::load(
                src,
                "feat",
                4 * w,
                FEATURES,
                true,
                Init::Uniform(b1),
                device,
            )?,
            head: Linear::load(
                src,
                "head",
                FEATURES,
                classes,
                true,
                Init::Uniform(b2),
                device,
            )?,
        })
    }

    /// Penultimate features `[B, FEATURES]` of images `[B, 3, s, s]` in [−1, 1].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for (c, n) in self.convs.iter().zip(&self.norms) {
            h = relu(n.forward(c.forward(h)));
        }
        let [b, c, _, _] = h.dims();
        let pooled: Tensor<2> = h.mean_dim(3).mean_dim(2).reshape([b, c]);
        relu(self.feat.forward(pooled))
    }

    /// Class logits `[B, K]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.features(x))
    }
}

/// A trained classifier with what it was trained on.
pub struct Trained {
    pub model: Classifier,
    pub class_names: Vec<String>,
    pub size: usize,
}

impl Trained {
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let mut ck =
            Checkpoint::open(path).with_context(|| format!("reading {}", path.display()))?;
        let meta = ck.metadata().clone();
        if meta.get("format").map(String::as_str) != Some("nextscale-classifier") {
            bail!(
                "{} is not a classifier (train-classifier writes one)",
                path.display()
            );
        }
        let class_names: Vec<String> = serde_json::from_str(
            meta.get("class_names")
                .context("the classifier has no class_names")?,
        )?;
        let size: usize = meta
            .get("size")
            .context("the classifier has no size")?
            .parse()?;
        let model = Classifier::new(&mut ck, class_names.len(), device)?;
        ck.finish()?;
        Ok(Self {
            model,
            class_names,
            size,
        })
    }

    /// Logits and features of `images` (`[n, 3, size, size]` flattened), in chunks.
    pub fn run(&self, images: &[f32], device: &Device) -> Result<(Vec<f32>, Vec<f32>)> {
        let per = 3 * self.size * self.size;
        if !images.len().is_multiple_of(per) {
            bail!("images are not {}×{} RGB", self.size, self.size);
        }
        let (mut logits, mut feats) = (Vec::new(), Vec::new());
        for chunk in images.chunks(64 * per) {
            let b = chunk.len() / per;
            let x = Tensor::<4>::from_data(
                TensorData::new(chunk.to_vec(), [b, 3, self.size, self.size]),
                device,
            );
            let f = self.model.features(x);
            let l = self.model.head.forward(f.clone());
            feats.extend(
                f.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32"),
            );
            logits.extend(
                l.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32"),
            );
        }
        Ok((logits, feats))
    }
}

/// Index of the largest value of each row of length `k`.
pub fn argmax_rows(v: &[f32], k: usize) -> Vec<usize> {
    v.chunks(k)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0
        })
        .collect()
}

#[derive(Args, Debug)]
pub struct TrainClassifierArgs {
    /// Labelled images: class subfolders or an IDX images file with its labels.
    #[arg(long)]
    data: PathBuf,
    /// Held-out labelled images to report the accuracy on (same classes).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Output file (`.safetensors`).
    #[arg(long)]
    out: PathBuf,
    /// Image size the classifier sees (the generator's size).
    #[arg(long)]
    size: usize,
    #[arg(long, default_value_t = 600)]
    steps: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Random left–right flips (off for digits).
    #[arg(long)]
    flip: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Loads every image of `ds` with its label (corrupt files are reported and skipped).
pub fn labelled_images(ds: &Dataset, size: usize) -> Result<(Vec<f32>, Vec<usize>)> {
    let (mut imgs, mut labels) = (Vec::new(), Vec::new());
    let mut bad = 0;
    for (i, it) in ds.items.iter().enumerate() {
        let Some(l) = it.label else {
            bail!("{}: item {i} has no label", ds.description);
        };
        match ds.load(i, size) {
            Ok(v) => {
                imgs.extend(v);
                labels.push(l);
            }
            Err(e) => {
                bad += 1;
                eprintln!("skipping {e}");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} file(s) could not be read");
    }
    Ok((imgs, labels))
}

pub fn run(a: TrainClassifierArgs) -> Result<()> {
    if a.size < 8 || a.batch_size == 0 || a.steps == 0 {
        bail!("--size must be ≥ 8, --batch-size and --steps ≥ 1");
    }
    let kind: nextscale::device::BackendKind = a.device.parse()?;
    let plain = nextscale::device::init_device(kind)?;
    let ad = plain.clone().autodiff();
    let ds = Dataset::open(&a.data)?;
    let k = ds.class_names.len();
    if k < 2 {
        bail!(
            "{}: a classifier needs labelled images of at least two classes",
            ds.description
        );
    }
    eprintln!("data: {} ({k} classes), {1}×{1} px", ds.description, a.size);
    let all: Vec<usize> = (0..ds.items.len()).collect();
    let mut loader = Loader::new(&ds, all, a.size, a.flip, a.seed);
    let mut model = Classifier::new(&mut RandomInit::new(a.seed), k, &ad)?;
    let mut opt = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-4,
        grad_clip: Some(5.0),
    });
    let progress = Progress::new(0, a.steps);
    let t0 = Instant::now();
    let b = a.batch_size;
    for step in 1..=a.steps {
        let lr = a.lr * lr_multiplier(step - 1, a.steps / 20, a.steps, 0.01);
        let batch = loader.next_batch(b)?;
        let mut onehot = vec![0f32; b * k];
        for (i, l) in batch.labels.iter().enumerate() {
            onehot[i * k + l.context("an unlabelled image")?] = 1.0;
        }
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, [b, 3, a.size, a.size]), &ad);
        let y = Tensor::<2>::from_data(TensorData::new(onehot, [b, k]), &ad);
        let loss = (log_softmax(model.forward(x), 1) * y).sum().neg() / b as f64;
        let lv = loss.clone().into_scalar::<f32>() as f64;
        if !lv.is_finite() {
            bail!("the loss became {lv} at step {step}; lower --lr");
        }
        let mut grads = loss.backward();
        model = opt.step(model, &mut grads, lr).0;
        if step % 10 == 0 || step == a.steps {
            progress.update(step, &[("loss", lv), ("lr", lr)]);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), "nextscale-classifier".into());
    meta.insert(
        "class_names".into(),
        serde_json::to_string(&ds.class_names)?,
    );
    meta.insert("size".into(), a.size.to_string());
    meta.insert("steps".into(), a.steps.to_string());
    let entries = nextscale::state_dict::parameters(&model)?;
    let mut bytes = Vec::new();
    nextscale::state_dict::write_safetensors(&mut bytes, &entries, Some(&meta))?;
    write_atomic(&a.out, &bytes)?;
    eprintln!("trained in {secs:.1} s; wrote {}", a.out.display());
    if let Some(t) = &a.test {
        let clf = Trained::open(&a.out, &plain)?;
        let test = Dataset::open(t)?;
        if test.class_names != clf.class_names {
            bail!(
                "{}: classes {:?} differ from the training classes {:?}",
                t.display(),
                test.class_names,
                clf.class_names
            );
        }
        let (imgs, labels) = labelled_images(&test, a.size)?;
        let (logits, _) = clf.run(&imgs, &plain)?;
        let pred = argmax_rows(&logits, k);
        let correct = pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
        println!(
            "{{\"test_images\": {}, \"test_accuracy\": {:.4}, \"train_seconds\": {secs:.1}}}",
            labels.len(),
            correct as f64 / labels.len() as f64
        );
    }
    Ok(())
}
