//! Procedural VQ-VAE weights, bit-identical to the VAR golden vectors' generator.
//!
//! Each tensor `K` is filled from splitmix64 seeded with FNV-1a-64 of its name: element `i`
//! uses output `i + 1`, `m = z >> 40`, `s = (m − 2²³) / 2²³` in float64, then
//! * `quantize.embedding.weight`: `s · 2^−(row mod 8)`;
//! * GroupNorm weight / bias: `1 + s/4` / `s/4`;
//! * every conv weight and bias: `s / √fan_in` of that conv;
//! * `quantize.ema_vocab_hit_SV`: zeros;
//!
//! rounded to float32. These weights are random: they make a model with the exact official
//! architecture for tests and demos, not a model that draws anything meaningful.

use std::collections::HashMap;

use crate::error::Result;
use crate::params::{Init, ParamSource};
use crate::rng::{fnv1a64, splitmix64_nth};
use crate::state_dict::Entry;

/// Value of element `i` of tensor `key` under the generator rule; `fan_in` applies to convs.
pub fn golden_value(key: &str, row_width: usize, fan_in: usize, i: u64) -> f32 {
    let z = splitmix64_nth(fnv1a64(key.as_bytes()), i);
    let m = z >> 40;
    let s = (m as f64 - 8_388_608.0) / 8_388_608.0;
    let parts: Vec<&str> = key.split('.').collect();
    let is_norm = parts.len() >= 2 && parts[parts.len() - 2].contains("norm");
    let v = if key == "quantize.ema_vocab_hit_SV" {
        0.0
    } else if key == "quantize.embedding.weight" {
        let row = i / row_width as u64;
        s * libm::exp2(-((row % 8) as f64))
    } else if is_norm {
        if key.ends_with(".weight") {
            1.0 + 0.25 * s
        } else {
            0.25 * s
        }
    } else {
        s * (1.0 / libm::sqrt(fan_in as f64))
    };
    v as f32
}

/// A [`ParamSource`] producing the golden VQ-VAE weights. Conv biases use the fan-in of the
/// weight requested just before them (every loader asks for a conv's weight first).
#[derive(Default)]
pub struct GoldenVqVaeSource {
    fan_in: HashMap<String, usize>,
    /// Every tensor handed out, in order (for writing the fixture file).
    pub record: Option<Vec<Entry>>,
}

impl GoldenVqVaeSource {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn recording() -> Self {
        Self {
            record: Some(Vec::new()),
            ..Self::default()
        }
    }

    /// All values of one tensor.
    pub fn generate(&mut self, key: &str, shape: &[usize]) -> Vec<f32> {
        let prefix = key
            .rsplit_once('.')
            .map(|(p, _)| p)
            .unwrap_or(key)
            .to_string();
        if shape.len() == 4 {
            self.fan_in
                .insert(prefix.clone(), shape[1] * shape[2] * shape[3]);
        }
        let fan_in = self.fan_in.get(&prefix).copied().unwrap_or(1);
        let width = *shape.last().unwrap_or(&1);
        let n: usize = shape.iter().product();
        (0..n as u64)
            .map(|i| golden_value(key, width, fan_in, i))
            .collect()
    }
}

impl ParamSource for GoldenVqVaeSource {
    fn get(&mut self, key: &str, shape: &[usize], _init: Init) -> Result<Vec<f32>> {
        let v = self.generate(key, shape);
        if let Some(r) = &mut self.record {
            r.push(Entry::f32(key, shape.to_vec(), v.clone()));
        }
        Ok(v)
    }
    fn skip_buffer(&mut self, key: &str, shape: &[usize]) -> Result<()> {
        if self.record.is_some() {
            let v = self.generate(key, shape);
            if let Some(r) = &mut self.record {
                r.push(Entry::f32(key, shape.to_vec(), v));
            }
        }
        Ok(())
    }
}

/// A small model for browser tests and demos: VAR d2 (width 128, 10 classes, vocabulary 512)
/// over a 7-scale VQ-VAE (latent 8×8, 64×64 pixels). Its weights are random.
pub fn tiny_configs() -> (crate::VarConfig, crate::VqVaeConfig) {
    let patch_nums = crate::PatchNums(vec![1, 2, 3, 4, 5, 6, 8]);
    let var = crate::VarConfig {
        depth: 2,
        embed_dim: 128,
        num_heads: 2,
        mlp_ratio: 4.0,
        vocab_size: 512,
        cvae: 16,
        num_classes: 10,
        norm_eps: 1e-6,
        patch_nums: patch_nums.clone(),
        text_dim: 0,
    };
    let vae = crate::VqVaeConfig {
        vocab_size: 512,
        z_channels: 16,
        ch: 32,
        ch_mult: vec![1, 1, 2, 2],
        num_res_blocks: 1,
        patch_nums,
        ..crate::VqVaeConfig::vae_ch160v4096z32()
    };
    (var, vae)
}

/// The tensors of the tiny model (VAR keys, then the VQ-VAE under `vae.`), from `seed`.
pub fn tiny_model_tensors(seed: u64) -> Result<Vec<Entry>> {
    let (var_cfg, vae_cfg) = tiny_configs();
    model_tensors(&var_cfg, &vae_cfg, seed)
}

/// The tensors of a randomly initialised VAR + VQ-VAE of these configurations (VAR keys, then
/// the VQ-VAE under `vae.`), from `seed`.
pub fn model_tensors(
    var_cfg: &crate::VarConfig,
    vae_cfg: &crate::VqVaeConfig,
    seed: u64,
) -> Result<Vec<Entry>> {
    let device = burn::tensor::Device::flex();
    let mut init = crate::params::RandomInit::new(seed);
    let mut rec = crate::params::Recorder::new(&mut init, "");
    crate::Var::load(&mut rec, var_cfg, &device)?;
    let mut out = std::mem::take(&mut rec.tensors);
    let mut rec = crate::params::Recorder::new(&mut init, "vae.");
    crate::VqVae::load(&mut rec, vae_cfg, &device)?;
    out.append(&mut rec.tensors);
    Ok(out)
}

/// Writes a small random CLIP text encoder as a Hugging Face folder (`config.json`,
/// `vocab.json`, `merges.txt`, `model.safetensors`), for trying and testing the CLIP path
/// without downloading one: 2 layers of width 64, a byte-level BPE vocabulary with the merges
/// that spell a few words left to right (`red`, `blue`, `circle`, `square`, …; where an earlier
/// word's merge wins, as `r e` in `green`, a word stays in pieces, and other words are bytes),
/// weights from `seed`. It draws nothing meaningful.
#[cfg(not(target_arch = "wasm32"))]
pub fn tiny_clip_folder(dir: &std::path::Path, seed: u64) -> Result<crate::text::ClipTextConfig> {
    use crate::error::Error;
    let words = [
        "a", "the", "red", "green", "blue", "yellow", "circle", "square", "triangle", "cross",
        "photo", "of", "cat", "dog",
    ];
    // Each word's merges left to right: ("r","e"), ("re","d</w>"), ….
    let mut merges: Vec<(String, String)> = Vec::new();
    for w in words {
        let chars: Vec<String> = w.chars().map(String::from).collect();
        let mut left = chars[0].clone();
        for (i, c) in chars.iter().enumerate().skip(1) {
            let right = if i + 1 == chars.len() {
                format!("{c}</w>")
            } else {
                c.clone()
            };
            let pair = (left.clone(), right.clone());
            if !merges.contains(&pair) {
                merges.push(pair);
            }
            left = format!("{left}{right}");
        }
    }
    let tokenizer = crate::text::ClipBpe::open_clip_layout(merges)?;
    let (vocab, merge_lines) = tokenizer.to_lists()?;
    let config = crate::text::ClipTextConfig {
        vocab_size: vocab.len(),
        hidden_size: 64,
        intermediate_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        max_position_embeddings: 77,
        hidden_act: "quick_gelu".into(),
        layer_norm_eps: 1e-5,
        eos_token_id: tokenizer.eot,
        projection_dim: None,
    };
    let device = burn::tensor::Device::flex();
    let mut init = crate::params::RandomInit::new(seed);
    let mut rec = crate::params::Recorder::new(&mut init, "");
    crate::text::ClipTextModel::load(&mut rec, &config, &device)?;
    let mut weights = Vec::new();
    crate::state_dict::write_safetensors(&mut weights, &rec.tensors, None).map_err(|err| {
        Error::Io {
            path: dir.join("model.safetensors").display().to_string(),
            err,
        }
    })?;
    let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    let files = [
        (
            "config.json",
            serde_json::to_vec_pretty(&config).map_err(|e| Error::invalid(e.to_string()))?,
        ),
        (
            "vocab.json",
            serde_json::to_vec(&vocab_json).map_err(|e| Error::invalid(e.to_string()))?,
        ),
        (
            "merges.txt",
            format!("#version: 0.2\n{}\n", merge_lines.join("\n")).into_bytes(),
        ),
        ("model.safetensors", weights),
    ];
    std::fs::create_dir_all(dir).map_err(|err| Error::Io {
        path: dir.display().to_string(),
        err,
    })?;
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|err| Error::Io {
            path: p.display().to_string(),
            err,
        })?;
    }
    Ok(config)
}

/// An official-size test pack: a VAR of `var_cfg` with random weights (the project's seeded
/// initialisation) and the official-architecture VQ-VAE with the golden procedural weights,
/// matrices in `storage`, written tensor by tensor without an f32 copy of the model (each
/// tensor is f32 only while it is encoded). For the d16…d30 memory and loading tests.
pub fn official_size_pack(
    var_cfg: &crate::VarConfig,
    storage: crate::pack::Storage,
    seed: u64,
) -> Result<Vec<u8>> {
    use crate::params::PackingSink;
    let device = burn::tensor::Device::flex();
    let vae_cfg = crate::VqVaeConfig::vae_ch160v4096z32();
    let mut init = crate::params::RandomInit::new(seed);
    let mut sink = PackingSink::new(&mut init, "", storage);
    drop(crate::Var::load(&mut sink, var_cfg, &device)?);
    let mut tensors = std::mem::take(&mut sink.tensors);
    let mut golden = GoldenVqVaeSource::new();
    let mut sink = PackingSink::new(&mut golden, "vae.", storage);
    drop(crate::VqVae::load(&mut sink, &vae_cfg, &device)?);
    tensors.append(&mut sink.tensors);
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(
        "fixture".to_string(),
        format!(
            "random d{} VAR (seed {seed}) + procedural vae_ch160v4096z32, {storage:?}",
            var_cfg.depth
        ),
    );
    crate::pack::write_pack_encoded(
        var_cfg,
        &vae_cfg,
        None,
        meta,
        crate::pack::PackExtras::default(),
        &tensors,
    )
}
