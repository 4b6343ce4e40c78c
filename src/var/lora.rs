//! LoRA for a frozen VAR: low-rank updates `W += (alpha / r) · A B` on chosen Linear layers of
//! every block, plus optional new class rows, so a shipped model learns new concepts from a
//! few minutes of CPU while its own weights stay as they are. The updates are stored apart
//! from the base (PEFT names, PyTorch layout: `blocks.{i}.attn.mat_qkv.lora_A.weight`
//! `[r, in]`, `…lora_B.weight` `[out, r]`), applied unmerged while training and merged when a
//! pack is loaded into f32 memory.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Var;
use crate::error::{Error, Result};
use crate::params::{ParamSource, Scope};

/// The Linear layers of a VAR block that LoRA can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// `attn.mat_qkv`
    Qkv,
    /// `attn.proj`
    Proj,
    /// `ffn.fc1`
    Fc1,
    /// `ffn.fc2`
    Fc2,
    /// `ada_lin.1` (the AdaLN modulation from the condition)
    AdaLin,
}

impl LoraTarget {
    /// The layer's name inside a block (official state-dict name).
    pub fn key(self) -> &'static str {
        match self {
            Self::Qkv => "attn.mat_qkv",
            Self::Proj => "attn.proj",
            Self::Fc1 => "ffn.fc1",
            Self::Fc2 => "ffn.fc2",
            Self::AdaLin => "ada_lin.1",
        }
    }
}

/// Rank, scale and the layers a LoRA changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<LoraTarget>,
}

/// Largest rank accepted (a LoRA is meant to be small).
pub const MAX_RANK: usize = 256;

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(Error::config(format!(
                "LoRA rank {} is outside 1..={MAX_RANK}",
                self.rank
            )));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::config(format!(
                "LoRA alpha {} must be positive",
                self.alpha
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::config("a LoRA needs at least one target layer"));
        }
        Ok(())
    }

    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

impl Var {
    /// Attaches LoRA updates to every block's target layers, read from `src` (fresh ones from
    /// a `RandomInit` start at zero change). The base keeps its weights; call
    /// [`Var::merge_lora`] to fold the updates in.
    pub fn attach_lora(
        mut self,
        cfg: &LoraConfig,
        src: &mut dyn ParamSource,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let (r, s) = (cfg.rank, cfg.scale());
        let mut root = Scope::new(src, device);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for &t in &cfg.targets {
                let layer = match t {
                    LoraTarget::Qkv => &mut b.attn.mat_qkv,
                    LoraTarget::Proj => &mut b.attn.proj,
                    LoraTarget::Fc1 => &mut b.ffn.fc1,
                    LoraTarget::Fc2 => &mut b.ffn.fc2,
                    LoraTarget::AdaLin => &mut b.ada_lin,
                };
                layer.attach_lora(&mut root.pp(format!("blocks.{i}.{}", t.key())), r, s)?;
            }
        }
        Ok(self)
    }

    /// Folds every attached LoRA update into its weight.
    pub fn merge_lora(mut self) -> Self {
        self.blocks = self
            .blocks
            .into_iter()
            .map(|mut b| {
                b.attn.mat_qkv = b.attn.mat_qkv.merge_lora();
                b.attn.proj = b.attn.proj.merge_lora();
                b.ffn.fc1 = b.ffn.fc1.merge_lora();
                b.ffn.fc2 = b.ffn.fc2.merge_lora();
                b.ada_lin = b.ada_lin.merge_lora();
                b
            })
            .collect();
        self
    }

    /// Adds class rows `[k, C]` before the null class: the new classes get ids
    /// `num_classes .. num_classes + k`.
    pub fn with_new_classes(mut self, rows: Tensor<2>) -> Result<Self> {
        let table = self.class_emb.val();
        let [n1, c] = table.dims();
        let [k, rc] = rows.dims();
        if rc != c {
            return Err(Error::invalid(format!(
                "new class rows are {rc} wide, the model's condition is {c}"
            )));
        }
        let old = table.clone().slice([0..n1 - 1, 0..c]);
        let null = table.slice([n1 - 1..n1, 0..c]);
        self.class_emb = burn::module::Param::from_tensor(Tensor::cat(vec![old, rows, null], 0));
        self.num_classes += k;
        Ok(self)
    }

    /// Whether any layer carries an unmerged LoRA update.
    pub fn has_lora(&self) -> bool {
        self.blocks.iter().any(|b| {
            [
                &b.attn.mat_qkv,
                &b.attn.proj,
                &b.ffn.fc1,
                &b.ffn.fc2,
                &b.ada_lin,
            ]
            .iter()
            .any(|l| l.lora.is_some())
        })
    }
}

/// The tensor names a LoRA of `cfg` on a `depth`-block VAR consists of (PyTorch layout).
pub fn tensor_names(cfg: &LoraConfig, depth: usize) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..depth {
        for t in &cfg.targets {
            for ab in ["lora_A", "lora_B"] {
                v.push(format!("blocks.{i}.{}.{ab}.weight", t.key()));
            }
        }
    }
    v
}
