//! `native-trainer train-classifier`: a small convolutional classifier trained on real images
//! (digits, emoji groups). It is the project's own judge of generated images: its accuracy on
//! samples says whether they show the requested class, and its penultimate features are the
//! space in which `evaluate` measures a Fréchet distance (no Inception weights exist here).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use nextscale::params::RandomInit;

use crate::data::{Dataset, Loader};
use crate::optim::{AdamW, AdamWConfig, lr_multiplier};
use crate::run::{Progress, write_atomic};

use crate::classifier::{Classifier, Trained, argmax_rows, labelled_images};

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
