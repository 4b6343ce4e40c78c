//! Adapter fine-tuning of a frozen class-conditional VAR for text: a small MLP maps a text
//! embedding to a change of the condition, `cond = α·class_emb[class] + β·adapter(text)`,
//! where `class` is a real class or the null class. Only the adapter is trained; its last
//! layer starts at zero, so training starts from the frozen model's behaviour.

use burn::module::Module;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Var;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::params::{Init, ParamSource, Scope};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub text_dim: usize,
    pub hidden: usize,
    /// Width of the VAR condition it adds to.
    pub embed_dim: usize,
    pub alpha: f32,
    pub beta: f32,
}

#[derive(Module, Debug)]
pub struct TextAdapter {
    pub fc1: Linear,
    pub fc2: Linear,
    pub alpha: f32,
    pub beta: f32,
}

impl TextAdapter {
    /// Loads `fc1.*`, `fc2.*` (PyTorch layout); a fresh adapter's `fc2` is zero.
    pub fn load(src: &mut dyn ParamSource, cfg: &AdapterConfig, device: &Device) -> Result<Self> {
        if cfg.text_dim == 0 || cfg.hidden == 0 || cfg.embed_dim == 0 {
            return Err(Error::config("adapter sizes must be positive"));
        }
        let mut s = Scope::new(src, device);
        let std = Init::TruncNormal(0.02);
        Ok(Self {
            fc1: Linear::load(&mut s.pp("fc1"), cfg.text_dim, cfg.hidden, true, std)?,
            fc2: Linear::load(
                &mut s.pp("fc2"),
                cfg.hidden,
                cfg.embed_dim,
                true,
                Init::Zeros,
            )?,
            alpha: cfg.alpha,
            beta: cfg.beta,
        })
    }

    /// Width of the condition it makes (the VAR's width).
    pub fn embed_dim(&self) -> usize {
        self.fc2.d_out()
    }

    pub fn text_dim(&self) -> usize {
        self.fc1.d_in()
    }

    /// `β·fc2(GELU(fc1(emb)))`, `[B, C]`.
    pub fn delta(&self, emb: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(gelu(self.fc1.forward(emb))) * self.beta as f64
    }

    /// Condition rows `[B, C]`: `α·class_emb[labels] + β·adapter(emb)`.
    pub fn condition(&self, var: &Var, labels: &[usize], emb: Tensor<2>) -> Result<Tensor<2>> {
        let [b, d] = emb.dims();
        if b != labels.len() {
            return Err(Error::invalid(format!(
                "{b} text embeddings for {} classes",
                labels.len()
            )));
        }
        if d != self.text_dim() {
            return Err(Error::invalid(format!(
                "text embeddings of width {d} given; the adapter takes {}",
                self.text_dim()
            )));
        }
        let device = emb.device();
        let base = var.class_embedding(var.labels(labels, &device)?) * self.alpha as f64;
        Ok(base + self.delta(emb))
    }

    /// CFG rows `[2B, C]`: the adapted conditions, then the null class × B.
    pub fn cfg_condition(&self, var: &Var, labels: &[usize], emb: Tensor<2>) -> Result<Tensor<2>> {
        let cond = self.condition(var, labels, emb)?;
        Ok(Tensor::cat(vec![cond, var.null_condition(labels.len())], 0))
    }
}
