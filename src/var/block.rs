//! One VAR transformer block (`AdaLNSelfAttn`, shared_aln = False) and its FFN.

use burn::module::Module;
use burn::tensor::Tensor;

use super::attention::{KvCache, SelfAttention};
use crate::config::VarConfig;
use crate::error::Result;
use crate::kernels::ada_layer_norm;
use crate::nn::{Linear, gelu_tanh, silu};
use crate::params::{Init, Scope};

/// `fc2(GELU_tanh(fc1(x)))`.
#[derive(Module, Debug)]
pub struct Ffn {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Ffn {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_traced(x, &mut |_, _| {})
    }

    /// [`Self::forward`], showing `trace` the inputs of `ffn.fc1` and `ffn.fc2`.
    pub fn forward_traced(
        &self,
        x: Tensor<3>,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        trace("ffn.fc1", &x);
        let g = gelu_tanh(self.fc1.forward(x));
        trace("ffn.fc2", &g);
        self.fc2.forward(g)
    }
}

/// The six AdaLN modulations of a block for one condition: each `[B, 1, C]`.
#[derive(Clone, Debug)]
pub struct Modulation {
    pub gamma1: Tensor<3>,
    pub gamma2: Tensor<3>,
    pub scale1: Tensor<3>,
    pub scale2: Tensor<3>,
    pub shift1: Tensor<3>,
    pub shift2: Tensor<3>,
}

#[derive(Module, Debug)]
pub struct AdaLnSelfAttn {
    pub attn: SelfAttention,
    pub ffn: Ffn,
    /// `ada_lin.1`: the Linear of `Sequential(SiLU, Linear(C → 6C))`.
    pub ada_lin: Linear,
    pub norm_eps: f64,
}

impl AdaLnSelfAttn {
    /// Block `s` of a VAR of config `cfg`.
    pub fn load(s: &mut Scope, cfg: &VarConfig) -> Result<Self> {
        let (c, hidden) = (cfg.embed_dim, cfg.mlp_hidden());
        let init_std = cfg.init_std();
        let std = Init::TruncNormal(init_std);
        Ok(Self {
            attn: SelfAttention::load(&mut s.pp("attn"), c, cfg.num_heads, init_std)?,
            ffn: Ffn {
                fc1: Linear::load(&mut s.pp("ffn.fc1"), c, hidden, true, std)?,
                fc2: Linear::load(&mut s.pp("ffn.fc2"), hidden, c, true, std)?,
            },
            ada_lin: Linear::load(&mut s.pp("ada_lin.1"), c, 6 * c, true, std)?,
            norm_eps: cfg.norm_eps,
        })
    }

    /// The block's modulations for `cond` `[B, C]` (constant over scales, so cacheable).
    pub fn modulation(&self, cond: Tensor<2>) -> Modulation {
        let [b, c] = cond.dims();
        let ada = self.ada_lin.forward(silu(cond)).reshape([b, 6, c]);
        let chunk = |i: usize| ada.clone().slice([0..b, i..i + 1, 0..c]);
        Modulation {
            gamma1: chunk(0),
            gamma2: chunk(1),
            scale1: chunk(2),
            scale2: chunk(3),
            shift1: chunk(4),
            shift2: chunk(5),
        }
    }

    pub fn forward(
        &self,
        x: Tensor<3>,
        m: &Modulation,
        attn_bias: Option<Tensor<4>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        self.forward_traced(x, m, attn_bias, cache, &mut |_, _| {})
    }

    /// [`Self::forward`], showing `trace` the input of each of the block's linear layers under
    /// its name in the block (`attn.mat_qkv`, `attn.proj`, `ffn.fc1`, `ffn.fc2`), e.g. to fit
    /// quantized weights to what the layers see.
    pub fn forward_traced(
        &self,
        x: Tensor<3>,
        m: &Modulation,
        attn_bias: Option<Tensor<4>>,
        cache: Option<&mut KvCache>,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let h = ada_layer_norm(x.clone(), m.scale1.clone(), m.shift1.clone(), self.norm_eps);
        trace("attn.mat_qkv", &h);
        let a = self.attn.mix(h, attn_bias, cache);
        trace("attn.proj", &a);
        let x = x + self.attn.proj.forward(a) * m.gamma1.clone();
        let h = ada_layer_norm(x.clone(), m.scale2.clone(), m.shift2.clone(), self.norm_eps);
        x.clone() + self.ffn.forward_traced(h, trace) * m.gamma2.clone()
    }
}
