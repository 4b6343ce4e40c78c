//! The CLIP text encoder (Hugging Face `CLIPTextModel` names under `text_model.`): token and
//! position embeddings, pre-LN causal transformer layers (QuickGELU or GELU MLP), a final
//! LayerNorm, and the pooled output at the end-of-text token; with
//! `CLIPTextModelWithProjection` weights, `text_projection` is applied to the pooled output.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear};
use crate::params::{Init, ParamSource, Scope};

/// The fields of a `CLIPTextConfig` (`config.json`, flat or under `text_config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "eos")]
    pub eos_token_id: u32,
    /// Width of `text_projection` (CLIPTextModelWithProjection), if any.
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn ln_eps() -> f64 {
    1e-5
}
fn eos() -> u32 {
    49407
}

impl ClipTextConfig {
    /// Reads `config.json` of a CLIPTextModel or of a full CLIPModel (`text_config`).
    pub fn from_json(s: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| Error::Format {
            format: "CLIP config.json",
            reason: e.to_string(),
        })?;
        let v = v.get("text_config").cloned().unwrap_or(v);
        serde_json::from_value(v).map_err(|e| Error::Format {
            format: "CLIP config.json",
            reason: e.to_string(),
        })
    }

    pub fn validate(&self) -> Result<()> {
        if !matches!(self.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(Error::config(format!(
                "CLIP activation `{}` is not supported (quick_gelu or gelu)",
                self.hidden_act
            )));
        }
        super::check_heads(self.hidden_size, self.num_attention_heads)
    }
}

#[derive(Module, Debug)]
pub struct ClipLayer {
    pub layer_norm1: LayerNorm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub layer_norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub heads: usize,
    pub quick: bool,
}

impl ClipLayer {
    fn load(s: &mut Scope, cfg: &ClipTextConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let w = Init::TruncNormal(0.02);
        let lin = |s: &mut Scope, k: &str, a, b| Linear::load(&mut s.pp(k), a, b, true, w);
        Ok(Self {
            layer_norm1: LayerNorm::load(&mut s.pp("layer_norm1"), h, eps)?,
            q_proj: lin(s, "self_attn.q_proj", h, h)?,
            k_proj: lin(s, "self_attn.k_proj", h, h)?,
            v_proj: lin(s, "self_attn.v_proj", h, h)?,
            out_proj: lin(s, "self_attn.out_proj", h, h)?,
            layer_norm2: LayerNorm::load(&mut s.pp("layer_norm2"), h, eps)?,
            fc1: lin(s, "mlp.fc1", h, i)?,
            fc2: lin(s, "mlp.fc2", i, h)?,
            heads: cfg.num_attention_heads,
            quick: cfg.hidden_act == "quick_gelu",
        })
    }

    fn forward(&self, x: Tensor<3>, mask: Tensor<4>) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let (h, d) = (self.heads, c / self.heads);
        let y = self.layer_norm1.forward(x.clone());
        let split = |t: Tensor<3>| t.reshape([b, l, h, d]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(y.clone()) * (1.0 / (d as f64).sqrt()));
        let k = split(self.k_proj.forward(y.clone()));
        let v = split(self.v_proj.forward(y));
        let a = softmax(q.matmul(k.swap_dims(2, 3)) + mask, 3).matmul(v);
        let x = x + self.out_proj.forward(a.swap_dims(1, 2).reshape([b, l, c]));
        let y = self.fc1.forward(self.layer_norm2.forward(x.clone()));
        let y = if self.quick {
            y.clone() * sigmoid(y * 1.702)
        } else {
            gelu(y)
        };
        x + self.fc2.forward(y)
    }
}

#[derive(Module, Debug)]
pub struct ClipTextModel {
    pub token_embedding: Param<Tensor<2>>,
    pub position_embedding: Param<Tensor<2>>,
    pub layers: Vec<ClipLayer>,
    pub final_layer_norm: LayerNorm,
    pub text_projection: Option<Linear>,
    pub eos: u32,
}

impl ClipTextModel {
    /// Loads `text_model.*` (and `text_projection.weight` when the config has a projection).
    pub fn load(src: &mut dyn ParamSource, cfg: &ClipTextConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let (h, max_len) = (cfg.hidden_size, cfg.max_position_embeddings);
        let w = Init::TruncNormal(0.02);
        let mut root = Scope::new(src, device);
        let mut s = root.pp("text_model");
        s.skip_buffer("embeddings.position_ids", &[1, max_len])?;
        let token_embedding =
            s.param("embeddings.token_embedding.weight", [cfg.vocab_size, h], w)?;
        let position_embedding =
            s.param("embeddings.position_embedding.weight", [max_len, h], w)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipLayer::load(&mut s.pp(format!("encoder.layers.{i}")), cfg))
            .collect::<Result<_>>()?;
        let final_layer_norm =
            LayerNorm::load(&mut s.pp("final_layer_norm"), h, cfg.layer_norm_eps)?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection: match cfg.projection_dim {
                Some(p) => Some(Linear::load(
                    &mut root.pp("text_projection"),
                    h,
                    p,
                    false,
                    w,
                )?),
                None => None,
            },
            eos: cfg.eos_token_id,
        })
    }

    /// Hidden states `[B, L, C]` and pooled outputs `[B, C or proj]` for token rows (each
    /// must contain the end token; shorter rows are right-padded internally, and the causal
    /// mask keeps padding from reaching real tokens).
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<(Tensor<3>, Tensor<2>)> {
        let b = ids.len();
        let l = ids.iter().map(Vec::len).max().unwrap_or(0);
        let [vocab, c] = self.token_embedding.val().dims();
        let max_pos = self.position_embedding.val().dims()[0];
        if b == 0 || l == 0 {
            return Err(Error::invalid("no text to encode"));
        }
        if l > max_pos {
            return Err(Error::invalid(format!(
                "{l} tokens exceed the encoder's {max_pos} positions"
            )));
        }
        let mut flat = vec![0i64; b * l];
        let mut eos_at = Vec::with_capacity(b);
        for (r, row) in ids.iter().enumerate() {
            if let Some(&t) = row.iter().find(|&&t| t as usize >= vocab) {
                return Err(Error::invalid(format!(
                    "token id {t} is outside the vocabulary of {vocab}"
                )));
            }
            for (t, &id) in row.iter().enumerate() {
                flat[r * l + t] = id as i64;
            }
            let pos = row
                .iter()
                .position(|&t| t == self.eos)
                .ok_or_else(|| Error::invalid("a token row has no end-of-text token"))?;
            eos_at.push((r * l + pos) as i64);
        }
        let idx: Tensor<2, Int> = Tensor::from_data(TensorData::new(flat, [b, l]), device);
        let tok = burn::tensor::module::embedding(self.token_embedding.val(), idx);
        let pos = self
            .position_embedding
            .val()
            .slice([0..l, 0..c])
            .unsqueeze_dim::<3>(0);
        let mut x = tok + pos;
        let mut m = vec![0f32; l * l];
        for i in 0..l {
            for j in i + 1..l {
                m[i * l + j] = f32::NEG_INFINITY;
            }
        }
        let mask: Tensor<4> = Tensor::from_data(TensorData::new(m, [1, 1, l, l]), device);
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        let x = self.final_layer_norm.forward(x);
        let rows: Tensor<1, Int> = Tensor::from_data(TensorData::new(eos_at, [b]), device);
        let pooled = x.clone().reshape([b * l, c]).select(0, rows);
        let pooled = match &self.text_projection {
            Some(p) => p.forward(pooled),
            None => pooled,
        };
        Ok((x, pooled))
    }
}
