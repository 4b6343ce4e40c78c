//! The AdaLN before the head (`head_nm`) and the output projection.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::kernels::ada_layer_norm;
use crate::nn::{Linear, silu};
use crate::params::{Init, Scope};

/// `LN(x)·(1 + scale) + shift` with `(scale, shift) = ada_lin(SiLU(cond))`.
#[derive(Module, Debug)]
pub struct AdaLnBeforeHead {
    pub ada_lin: Linear,
    pub norm_eps: f64,
}

impl AdaLnBeforeHead {
    pub fn load(s: &mut Scope, c: usize, norm_eps: f64, init_std: f32) -> Result<Self> {
        Ok(Self {
            ada_lin: Linear::load(
                &mut s.pp("ada_lin.1"),
                c,
                2 * c,
                true,
                Init::TruncNormal(init_std),
            )?,
            norm_eps,
        })
    }

    /// `(scale, shift)`, each `[B, 1, C]`.
    pub fn modulation(&self, cond: Tensor<2>) -> (Tensor<3>, Tensor<3>) {
        let [b, c] = cond.dims();
        let ada = self.ada_lin.forward(silu(cond)).reshape([b, 2, c]);
        (
            ada.clone().slice([0..b, 0..1, 0..c]),
            ada.slice([0..b, 1..2, 0..c]),
        )
    }

    pub fn forward(&self, x: Tensor<3>, scale: Tensor<3>, shift: Tensor<3>) -> Tensor<3> {
        ada_layer_norm(x, scale, shift, self.norm_eps)
    }
}
