//! The judge: a small convolutional classifier trained on real images by `train-classifier`
//! (digits, emoji groups). It is the project's own judge of generated images: its accuracy on
//! samples says whether they show the requested class, and its penultimate features are the
//! space in which `evaluate` measures a Fréchet distance (no Inception weights exist here).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use nextscale::Checkpoint;
use nextscale::nn::{Conv2d, GroupNorm, Linear};
use nextscale::params::{Init, ParamSource, Scope};

use crate::data::Dataset;

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
        let mut s = Scope::new(src, device);
        let convs = Conv2d::load_stack(&mut s, "convs", &spec, 3)?;
        let norms = spec
            .iter()
            .enumerate()
            .map(|(i, &(_, co, _))| GroupNorm::load(&mut s.pp(format!("norms.{i}")), co, 8, 1e-5))
            .collect::<nextscale::Result<Vec<_>>>()?;
        let b1 = Init::Uniform(1.0 / ((4 * w) as f32).sqrt());
        let b2 = Init::Uniform(1.0 / (FEATURES as f32).sqrt());
        Ok(Self {
            convs,
            norms,
            feat: Linear::load(&mut s.pp("feat"), 4 * w, FEATURES, true, b1)?,
            head: Linear::load(&mut s.pp("head"), FEATURES, classes, true, b2)?,
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
