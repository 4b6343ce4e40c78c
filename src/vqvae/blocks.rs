//! VQ-VAE building blocks: ResnetBlock, single-head AttnBlock, Downsample, Upsample.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::ops::PadMode;

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm};
use crate::params::Scope;

const GN_GROUPS: usize = 32;
const GN_EPS: f64 = 1e-6;

pub(crate) fn norm(s: &mut Scope, c: usize) -> Result<GroupNorm> {
    GroupNorm::load(s, c, GN_GROUPS, GN_EPS)
}

/// `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`.
#[derive(Module, Debug)]
pub struct ResnetBlock {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn load(s: &mut Scope, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(Self {
            norm1: norm(&mut s.pp("norm1"), c_in)?,
            conv1: Conv2d::load(&mut s.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            norm2: norm(&mut s.pp("norm2"), c_out)?,
            conv2: Conv2d::load(&mut s.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            nin_shortcut: if c_in != c_out {
                Some(Conv2d::load(
                    &mut s.pp("nin_shortcut"),
                    c_in,
                    c_out,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        let x = match &self.nin_shortcut {
            Some(s) => s.forward(x),
            None => x,
        };
        x + h
    }
}

/// Single-head spatial self-attention with a fused `qkv` 1×1 conv and scale `C^-½`.
#[derive(Module, Debug)]
pub struct AttnBlock {
    pub norm: GroupNorm,
    pub qkv: Conv2d,
    pub proj_out: Conv2d,
}

impl AttnBlock {
    pub fn load(s: &mut Scope, c: usize) -> Result<Self> {
        Ok(Self {
            norm: norm(&mut s.pp("norm"), c)?,
            qkv: Conv2d::load(&mut s.pp("qkv"), c, 3 * c, 1, 1, 0)?,
            proj_out: Conv2d::load(&mut s.pp("proj_out"), c, c, 1, 1, 0)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let qkv = self
            .qkv
            .forward(self.norm.forward(x.clone()))
            .reshape([b, 3, c, n]);
        let q = qkv
            .clone()
            .slice([0..b, 0..1, 0..c, 0..n])
            .reshape([b, c, n]);
        let k = qkv
            .clone()
            .slice([0..b, 1..2, 0..c, 0..n])
            .reshape([b, c, n]);
        let v = qkv.slice([0..b, 2..3, 0..c, 0..n]).reshape([b, c, n]);
        // w[i, j] = softmax_j(Σ_c q[c,i] k[c,j] / √C)
        let attn = q.swap_dims(1, 2).matmul(k) * (1.0 / (c as f64).sqrt());
        let attn = softmax(attn, 2);
        // h[c, i] = Σ_j v[c, j] w[i, j]
        let out = v.matmul(attn.swap_dims(1, 2)).reshape([b, c, h, w]);
        x + self.proj_out.forward(out)
    }
}

/// Zero-pad right and bottom by one, then a stride-2 3×3 conv.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
}

impl Downsample {
    pub fn load(s: &mut Scope, c: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&mut s.pp("conv"), c, c, 3, 2, 0)?,
        })
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv
            .forward(x.pad((0, 1, 0, 1), PadMode::Constant(0.0)))
    }
}

/// Nearest-neighbour ×2, then a 3×3 conv.
#[derive(Module, Debug)]
pub struct Upsample {
    pub conv: Conv2d,
}

impl Upsample {
    pub fn load(s: &mut Scope, c: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&mut s.pp("conv"), c, c, 3, 1, 1)?,
        })
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(crate::kernels::upsample_nearest2x(x))
    }
}

/// The resnet blocks of one resolution level, each optionally followed by attention
/// (`{prefix}.block.{j}`, `{prefix}.attn.{j}`), shared by the encoder and the decoder.
#[derive(Module, Debug)]
pub struct LevelBlocks {
    pub block: Vec<ResnetBlock>,
    pub attn: Vec<AttnBlock>,
}

impl LevelBlocks {
    /// Loads `n` blocks from `c_in` to `c_out` channels (the first changes the width).
    pub fn load(s: &mut Scope, n: usize, c_in: usize, c_out: usize, attn: bool) -> Result<Self> {
        let mut block = Vec::with_capacity(n);
        let mut attns = Vec::new();
        let mut c = c_in;
        for j in 0..n {
            block.push(ResnetBlock::load(
                &mut s.pp(format!("block.{j}")),
                c,
                c_out,
            )?);
            c = c_out;
            if attn {
                attns.push(AttnBlock::load(&mut s.pp(format!("attn.{j}")), c)?);
            }
        }
        Ok(Self { block, attn: attns })
    }

    pub fn forward(&self, mut h: Tensor<4>) -> Tensor<4> {
        for (j, block) in self.block.iter().enumerate() {
            h = block.forward(h);
            if let Some(a) = self.attn.get(j) {
                h = a.forward(h);
            }
        }
        h
    }
}
