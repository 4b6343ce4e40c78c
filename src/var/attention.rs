//! VAR self-attention: fused qkv with `[q_bias, 0, v_bias]`, per-head L2-normalised q and k,
//! a learned per-head scale `exp(min(scale_mul, ln 100))`, no `1/√d`, and a KV cache.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::error::Result;
use crate::kernels::{attention_merge, batched_matmul, l2_normalize_scaled, masked_softmax};
use crate::nn::Linear;
use crate::params::{Init, Scope};

/// Keys (already normalised) and values of all tokens seen so far, `[B, H, L, d]`.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub k: Option<Tensor<4>>,
    pub v: Option<Tensor<4>>,
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    /// `scale_mul_1H11`, log-space per-head scale, `[1, H, 1, 1]`.
    pub scale_mul: Param<Tensor<4>>,
    pub q_bias: Param<Tensor<1>>,
    pub v_bias: Param<Tensor<1>>,
    pub mat_qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
}

impl SelfAttention {
    pub fn load(s: &mut Scope, c: usize, heads: usize, init_std: f32) -> Result<Self> {
        let scale_mul = s.param("scale_mul_1H11", [1, heads, 1, 1], Init::Const(4f32.ln()))?;
        let q_bias = s.param("q_bias", [c], Init::Zeros)?;
        let v_bias = s.param("v_bias", [c], Init::Zeros)?;
        s.skip_buffer("zero_k_bias", &[c])?;
        let std = Init::TruncNormal(init_std);
        Ok(Self {
            scale_mul,
            q_bias,
            v_bias,
            mat_qkv: Linear::load(&mut s.pp("mat_qkv"), c, 3 * c, false, std)?,
            proj: Linear::load(&mut s.pp("proj"), c, c, true, std)?,
            num_heads: heads,
        })
    }

    /// `x` `[B, L, C]`; `bias` is added to the attention logits (block-causal mask);
    /// with `cache`, keys and values are appended to it and the queries see all of it.
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: Option<Tensor<4>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        self.proj.forward(self.mix(x, bias, cache))
    }

    /// [`Self::forward`] without the output projection: the heads' outputs, merged `[B, L, C]`
    /// (the input of `proj`).
    pub fn mix(
        &self,
        x: Tensor<3>,
        bias: Option<Tensor<4>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let h = self.num_heads;
        let d = c / h;
        let qkv_bias = Tensor::cat(
            vec![
                self.q_bias.val(),
                self.q_bias.val().zeros_like(),
                self.v_bias.val(),
            ],
            0,
        );
        let qkv = self.mat_qkv.forward_with_bias(x, Some(qkv_bias));
        // [B, L, 3H, d]: q, k and v are views of it (a reshape of a slice would copy).
        let qkv = qkv.reshape([b, l, 3 * h, d]);
        let part = |i: usize| -> Tensor<4> {
            qkv.clone()
                .slice([0..b, 0..l, i * h..(i + 1) * h, 0..d])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let scale = self.scale_mul.val().clamp_max(100f64.ln()).exp(); // [1, H, 1, 1]
        let q = l2_normalize_scaled(q, scale.clone());
        let mut k = l2_normalize_scaled(k, scale.ones_like());
        let mut v = v;
        if let Some(cache) = cache {
            if let (Some(ck), Some(cv)) = (cache.k.take(), cache.v.take()) {
                k = Tensor::cat(vec![ck, k], 2);
                v = Tensor::cat(vec![cv, v], 2);
            }
            cache.k = Some(k.clone());
            cache.v = Some(v.clone());
        }
        let logits = batched_matmul(q, k.swap_dims(2, 3)); // [B, H, Lq, Lk]
        attention_merge(masked_softmax(logits, bias), v) // [B, Lq, C]
    }
}
