//! A BERT encoder (Hugging Face `BertModel` state-dict names): word + position + token-type
//! embeddings and LayerNorm, then post-LN blocks of multi-head attention (scaled by 1/√d,
//! padding keys masked) and a GELU (erf) MLP. MiniLM-L6-H384 is this architecture.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear};
use crate::params::{Init, ParamSource, Scope};

/// The fields of a Hugging Face `config.json` this encoder needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    pub fn validate(&self) -> Result<()> {
        if self.hidden_act != "gelu" {
            return Err(Error::config(format!(
                "BERT activation `{}` is not supported (only `gelu`)",
                self.hidden_act
            )));
        }
        let limit = crate::config::MAX_WIDTH;
        if self.vocab_size == 0
            || self.type_vocab_size == 0
            || self.max_position_embeddings == 0
            || self.num_hidden_layers == 0
            || self.intermediate_size == 0
            || self.vocab_size > crate::config::MAX_VOCAB
            || self.type_vocab_size > 64
            || self.max_position_embeddings > 1 << 16
            || self.num_hidden_layers > 128
            || self.hidden_size > limit
            || self.intermediate_size > 4 * limit
        {
            return Err(Error::config(format!(
                "BERT configuration out of range (vocabulary 1 to {}, token types 1 to 64, positions 1 to 65536, \
                 layers 1 to 128, hidden ≤ {limit}, intermediate 1 to {})",
                crate::config::MAX_VOCAB,
                4 * limit
            )));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::config("layer_norm_eps must be a positive number"));
        }
        super::check_heads(self.hidden_size, self.num_attention_heads)
    }
}

/// A callback shown each linear layer's input `[B, L, in]` (padding rows included) and the
/// names of the layers it feeds, relative to their block (e.g. `intermediate.dense`).
type Trace<'a> = dyn FnMut(&[&str], &Tensor<3>) + 'a;

#[derive(Module, Debug)]
pub struct BertLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub out_norm: LayerNorm,
    pub heads: usize,
}

impl BertLayer {
    fn load(s: &mut Scope, cfg: &BertConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let w = Init::TruncNormal(0.02);
        let lin = |s: &mut Scope, k: &str, a, b| Linear::load(&mut s.pp(k), a, b, true, w);
        Ok(Self {
            query: lin(s, "attention.self.query", h, h)?,
            key: lin(s, "attention.self.key", h, h)?,
            value: lin(s, "attention.self.value", h, h)?,
            attn_out: lin(s, "attention.output.dense", h, h)?,
            attn_norm: LayerNorm::load(&mut s.pp("attention.output.LayerNorm"), h, eps)?,
            intermediate: lin(s, "intermediate.dense", h, i)?,
            output: lin(s, "output.dense", i, h)?,
            out_norm: LayerNorm::load(&mut s.pp("output.LayerNorm"), h, eps)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// The linear layer under `name` (relative to the block, e.g. `intermediate.dense`).
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear> {
        Some(match name {
            "attention.self.query" => &mut self.query,
            "attention.self.key" => &mut self.key,
            "attention.self.value" => &mut self.value,
            "attention.output.dense" => &mut self.attn_out,
            "intermediate.dense" => &mut self.intermediate,
            "output.dense" => &mut self.output,
            _ => return None,
        })
    }

    /// `x` `[B, L, H]`, `mask_bias` `[B, 1, 1, L]` (0 or a large negative number); `trace`
    /// sees each linear layer's input with the names of the layers it feeds.
    fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>, trace: &mut Trace) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let (h, d) = (self.heads, c / self.heads);
        let split = |t: Tensor<3>| t.reshape([b, l, h, d]).swap_dims(1, 2);
        trace(
            &[
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
            ],
            &x,
        );
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt()) + mask_bias;
        let ctx = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, l, c]);
        trace(&["attention.output.dense"], &ctx);
        let x = self.attn_norm.forward(self.attn_out.forward(ctx) + x);
        trace(&["intermediate.dense"], &x);
        let mid = gelu(self.intermediate.forward(x.clone()));
        trace(&["output.dense"], &mid);
        self.out_norm.forward(self.output.forward(mid) + x)
    }
}

#[derive(Module, Debug)]
pub struct Bert {
    pub word_embeddings: Param<Tensor<2>>,
    pub position_embeddings: Param<Tensor<2>>,
    pub token_type_embeddings: Param<Tensor<2>>,
    pub embed_norm: LayerNorm,
    pub layers: Vec<BertLayer>,
}

impl Bert {
    /// Loads `embeddings.*` and `encoder.layer.*`; the unused pooler and the `position_ids`
    /// buffer are accepted (an optional `bert.` prefix must be stripped by the caller).
    pub fn load(src: &mut dyn ParamSource, cfg: &BertConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let (h, max_len) = (cfg.hidden_size, cfg.max_position_embeddings);
        let w = Init::TruncNormal(0.02);
        let mut s = Scope::new(src, device);
        s.skip_buffer("embeddings.position_ids", &[1, max_len])?;
        s.skip_buffer("pooler.dense.weight", &[h, h])?;
        s.skip_buffer("pooler.dense.bias", &[h])?;
        let mut e = s.pp("embeddings");
        Ok(Self {
            word_embeddings: e.param("word_embeddings.weight", [cfg.vocab_size, h], w)?,
            position_embeddings: e.param("position_embeddings.weight", [max_len, h], w)?,
            token_type_embeddings: e.param(
                "token_type_embeddings.weight",
                [cfg.type_vocab_size, h],
                w,
            )?,
            embed_norm: LayerNorm::load(&mut e.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| BertLayer::load(&mut s.pp(format!("encoder.layer.{i}")), cfg))
                .collect::<Result<_>>()?,
        })
    }

    pub fn max_len(&self) -> usize {
        self.position_embeddings.val().dims()[0]
    }

    /// Token states `[B, L, H]` and the mask of real tokens `[B, L]` for ids of any lengths
    /// (right-padded here).
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<(Tensor<3>, Tensor<2>)> {
        self.forward_traced(ids, device, &mut |_, _, _| {})
    }

    /// [`Self::forward`], showing `trace` every linear layer's input with the layer's index
    /// (what calibrating a quantizer needs).
    pub fn forward_traced(
        &self,
        ids: &[Vec<u32>],
        device: &Device,
        trace: &mut dyn FnMut(usize, &[&str], &Tensor<3>),
    ) -> Result<(Tensor<3>, Tensor<2>)> {
        let b = ids.len();
        let l = ids.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || l == 0 {
            return Err(Error::invalid("no text to encode"));
        }
        if l > self.max_len() {
            return Err(Error::invalid(format!(
                "{l} tokens exceed the encoder's {} positions",
                self.max_len()
            )));
        }
        let mut flat = vec![0i64; b * l];
        let mut mask = vec![0f32; b * l];
        for (r, row) in ids.iter().enumerate() {
            for (t, &id) in row.iter().enumerate() {
                flat[r * l + t] = id as i64;
                mask[r * l + t] = 1.0;
            }
        }
        let vocab = self.word_embeddings.val().dims()[0];
        if let Some(&bad) = ids.iter().flatten().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let idx: Tensor<2, Int> = Tensor::from_data(TensorData::new(flat, [b, l]), device);
        let c = self.word_embeddings.val().dims()[1];
        let words = burn::tensor::module::embedding(self.word_embeddings.val(), idx);
        let pos = self
            .position_embeddings
            .val()
            .slice([0..l, 0..c])
            .unsqueeze_dim::<3>(0);
        let typ = self
            .token_type_embeddings
            .val()
            .slice([0..1, 0..c])
            .unsqueeze_dim::<3>(0);
        let mut x = self.embed_norm.forward(words + pos + typ);
        let mask_t: Tensor<2> = Tensor::from_data(TensorData::new(mask, [b, l]), device);
        // Hugging Face adds the dtype's minimum to masked logits.
        let bias = (mask_t.clone().neg() + 1.0) * (f32::MIN as f64);
        let bias: Tensor<4> = bias.reshape([b, 1, 1, l]);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, bias.clone(), &mut |names, t| trace(i, names, t));
        }
        Ok((x, mask_t))
    }
}
