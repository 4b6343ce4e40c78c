//! The multi-scale residual quantizer (`VectorQuantizer2`): the codebook, the shared Phi
//! convs, and the scale-by-scale maps between latents, token indices and VAR inputs.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use crate::config::VqVaeConfig;
use crate::error::Result;
use crate::nn::Conv2d;
use crate::params::{Init, Scope};
use crate::resample::{area, bicubic};

/// What [`VectorQuantizer::forward_train`] returns.
pub struct QuantTrain {
    /// Straight-through f̂, `[B, Cv, h, w]`.
    pub f_hat: Tensor<4>,
    /// Commitment + codebook loss, `[1]`.
    pub loss: Tensor<1>,
    /// Token indices of every scale, `[B, pn²]`.
    pub idx: Vec<Tensor<2, Int>>,
}

#[derive(Module, Debug)]
pub struct QuantResi {
    pub qresi_ls: Vec<Conv2d>,
}

#[derive(Module, Debug)]
pub struct VectorQuantizer {
    /// Codebook `[V, Cv]`.
    pub embedding: Param<Tensor<2>>,
    pub quant_resi: QuantResi,
    pub resi_ratio: f32,
    /// Phi conv used at each scale.
    pub phi_table: Vec<usize>,
    pub patch_nums: Vec<usize>,
}

impl VectorQuantizer {
    pub fn load(s: &mut Scope, cfg: &VqVaeConfig) -> Result<Self> {
        let (cz, v) = (cfg.z_channels, cfg.vocab_size);
        s.skip_buffer("ema_vocab_hit_SV", &[cfg.patch_nums.num_scales(), v])?;
        let qresi_ls = (0..cfg.share_quant_resi)
            .map(|k| {
                Conv2d::load(
                    &mut s.pp(format!("quant_resi.qresi_ls.{k}")),
                    cz,
                    cz,
                    3,
                    1,
                    1,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            embedding: s.param("embedding.weight", [v, cz], Init::Uniform(1.0 / v as f32))?,
            quant_resi: QuantResi { qresi_ls },
            resi_ratio: cfg.quant_resi,
            phi_table: cfg.phi_table(),
            patch_nums: cfg.patch_nums.as_slice().to_vec(),
        })
    }

    fn latent(&self) -> usize {
        *self.patch_nums.last().expect("non-empty")
    }
    fn last(&self) -> usize {
        self.patch_nums.len() - 1
    }

    /// `phi_k(h) = (1 − r)·h + r·conv_k(h)` for the conv of scale `si`.
    pub fn phi(&self, si: usize, h: Tensor<4>) -> Tensor<4> {
        let r = self.resi_ratio as f64;
        let conv = &self.quant_resi.qresi_ls[self.phi_table[si]];
        h.clone() * (1.0 - r) + conv.forward(h) * r
    }

    /// Upsamples a scale's embedding map to the latent size (none at the last scale) and applies Phi.
    pub fn scale_contribution(&self, si: usize, h: Tensor<4>) -> Tensor<4> {
        let h = if si == self.last() {
            h
        } else {
            bicubic(h, self.latent())
        };
        self.phi(si, h)
    }

    /// Index of the nearest code for each row of `z` (`[N, Cv]`), by squared L2 distance.
    pub fn nearest(&self, z: Tensor<2>) -> Tensor<1, Int> {
        let e = self.embedding.val();
        let zz = z.clone().powi_scalar(2).sum_dim(1); // [N, 1]
        let ee = e.clone().powi_scalar(2).sum_dim(1).reshape([1, -1]); // [1, V]
        let d = (zz + ee) + z.matmul(e.transpose()) * (-2.0);
        let n = d.dims()[0];
        d.argmin(1).reshape([n])
    }

    /// Codebook lookup: `idx` `[B, pn²]` → `[B, Cv, pn, pn]`.
    pub fn lookup(&self, idx: Tensor<2, Int>, pn: usize) -> Tensor<4> {
        let [b, _] = idx.dims();
        let h = burn::tensor::module::embedding(self.embedding.val(), idx); // [B, n, Cv]
        let cv = h.dims()[2];
        h.swap_dims(1, 2).reshape([b, cv, pn, pn])
    }

    /// The residual scale loop shared by inference and training: from `f` (used without
    /// gradient) it picks each scale's nearest codes on the area-downsampled residual, adds
    /// their (upsampled, Phi-mixed) maps to f̂ and subtracts them from the residual; `visit`
    /// sees every scale's indices and the cumulative f̂ (which carries the codebook's and the
    /// Phi convs' gradients).
    fn scale_loop(&self, f: Tensor<4>, mut visit: impl FnMut(Tensor<2, Int>, &Tensor<4>)) {
        let [b, cv, _, _] = f.dims();
        let mut f_rest = f.detach();
        let mut f_hat = f_rest.zeros_like();
        for (si, &pn) in self.patch_nums.iter().enumerate() {
            let z = if si == self.last() {
                f_rest.clone()
            } else {
                area(f_rest.clone(), pn)
            };
            let z = z
                .reshape([b, cv, pn * pn])
                .swap_dims(1, 2)
                .reshape([b * pn * pn, cv]);
            let idx = self.nearest(z).reshape([b, pn * pn]);
            let h = self.scale_contribution(si, self.lookup(idx.clone(), pn));
            f_hat = f_hat + h.clone();
            f_rest = f_rest - h.detach();
            visit(idx, &f_hat);
        }
    }

    /// `f` `[B, Cv, h, w]` → token indices per scale (`[B, pn²]`) and the cumulative f̂ after each scale.
    pub fn f_to_idx(&self, f: Tensor<4>) -> (Vec<Tensor<2, Int>>, Vec<Tensor<4>>) {
        let mut idxs = Vec::new();
        let mut fhats = Vec::new();
        self.scale_loop(f, |idx, f_hat| {
            idxs.push(idx);
            fhats.push(f_hat.clone());
        });
        (idxs, fhats)
    }

    /// The training forward of `VectorQuantizer2`: the same scale loop as [`Self::f_to_idx`],
    /// plus, per scale, `β·mse(f̂.detach(), f) + mse(f̂, f.detach())` averaged over the scales,
    /// and the straight-through output `f̂.detach() − f.detach() + f` (gradients reach the
    /// encoder through `f` and the codebook and Phi convs through the loss).
    pub fn forward_train(&self, f: Tensor<4>, beta: f64) -> QuantTrain {
        let f_ng = f.clone().detach();
        let mut loss: Option<Tensor<1>> = None;
        let mut idxs = Vec::new();
        let mut last = None;
        self.scale_loop(f.clone(), |idx, f_hat| {
            let commit = (f_hat.clone().detach() - f.clone()).powi_scalar(2).mean() * beta;
            let codebook = (f_hat.clone() - f_ng.clone()).powi_scalar(2).mean();
            let l = commit + codebook;
            loss = Some(match loss.take() {
                Some(acc) => acc + l,
                None => l,
            });
            idxs.push(idx);
            last = Some(f_hat.clone());
        });
        let n = self.patch_nums.len() as f64;
        QuantTrain {
            f_hat: last.expect("at least one scale").detach() - f_ng + f,
            loss: loss.expect("at least one scale") / n,
            idx: idxs,
        }
    }

    /// Adds scale `si`'s embedding map `h` (`[B, Cv, pn, pn]`) to `f_hat`.
    pub fn accumulate(&self, si: usize, f_hat: Tensor<4>, h: Tensor<4>) -> Tensor<4> {
        f_hat + self.scale_contribution(si, h)
    }

    /// The VAR input for scale `si + 1`: `area(f_hat → pn_{si+1})` as `[B, pn², Cv]`.
    pub fn next_input(&self, si: usize, f_hat: Tensor<4>) -> Tensor<3> {
        let pn = self.patch_nums[si + 1];
        let [b, cv, _, _] = f_hat.dims();
        area(f_hat, pn).reshape([b, cv, pn * pn]).swap_dims(1, 2)
    }

    /// Teacher-forcing input `[B, L − first, Cv]` from the token indices of every scale.
    pub fn idx_to_var_input(&self, idx: &[Tensor<2, Int>]) -> Tensor<3> {
        let [b, _] = idx[0].dims();
        let cv = self.embedding.val().dims()[1];
        let mut f_hat: Tensor<4> =
            Tensor::zeros([b, cv, self.latent(), self.latent()], &idx[0].device());
        let mut parts = Vec::new();
        for (si, scale_idx) in idx.iter().enumerate().take(self.last()) {
            f_hat = self.accumulate(
                si,
                f_hat,
                self.lookup(scale_idx.clone(), self.patch_nums[si]),
            );
            parts.push(self.next_input(si, f_hat.clone()));
        }
        Tensor::cat(parts, 1)
    }

    /// f̂ after all scales from the token indices.
    pub fn idx_to_fhat(&self, idx: &[Tensor<2, Int>]) -> Tensor<4> {
        let [b, _] = idx[0].dims();
        let cv = self.embedding.val().dims()[1];
        let mut f_hat: Tensor<4> =
            Tensor::zeros([b, cv, self.latent(), self.latent()], &idx[0].device());
        for (si, &pn) in self.patch_nums.iter().enumerate() {
            f_hat = self.accumulate(si, f_hat, self.lookup(idx[si].clone(), pn));
        }
        f_hat
    }
}
