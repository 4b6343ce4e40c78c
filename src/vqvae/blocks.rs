//! VQ-VAE building blocks: ResnetBlock, single-head AttnBlock, Downsample, Upsample.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, silu};
use crate::params::ParamSource;

const GN_GROUPS: usize = 32;
const GN_EPS: f64 = 1e-6;

pub(crate) fn norm(
    src: &mut dyn ParamSource,
    prefix: &str,
    c: usize,
    device: &Device,
) -> Result<GroupNorm> {
    GroupNorm::load(src, prefix, c, GN_GROUPS, GN_EPS, device)
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
    pub fn load(
        src: &mut dyn ParamSource,
        p: &str,
        c_in: usize,
        c_out: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            norm1: norm(src, &format!("{p}.norm1"), c_in, device)?,
            conv1: Conv2d::load(src, &format!("{p}.conv1"), c_in, c_out, 3, 1, 1, device)?,
            norm2: norm(src, &format!("{p}.norm2"), c_out, device)?,
            conv2: Conv2d::load(src, &format!("{p}.conv2"), c_out, c_out, 3, 1, 1, device)?,
            nin_shortcut: if c_in != c_out {
                Some(Conv2d::load(
                    src,
                    &format!("{p}.nin_shortcut"),
                    c_in,
                    c_out,
                    1,
                    1,
                    0,
                    device,
                )?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
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
    pub fn load(src: &mut dyn ParamSource, p: &str, c: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            norm: norm(src, &format!("{p}.norm"), c, device)?,
            qkv: Conv2d::load(src, &format!("{p}.qkv"), c, 3 * c, 1, 1, 0, device)?,
            proj_out: Conv2d::load(src, &format!("{p}.proj_out"), c, c, 1, 1, 0, device)?,
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
    pub fn load(src: &mut dyn ParamSource, p: &str, c: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(src, &format!("{p}.conv"), c, c, 3, 2, 0, device)?,
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
    pub fn load(src: &mut dyn ParamSource, p: &str, c: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(src, &format!("{p}.conv"), c, c, 3, 1, 1, device)?,
        })
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let up: Tensor<6> = x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]);
        self.conv.forward(up.reshape([b, c, 2 * h, 2 * w]))
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
    pub fn load(
        src: &mut dyn ParamSource,
        prefix: &str,
        n: usize,
        c_in: usize,
        c_out: usize,
        attn: bool,
        device: &Device,
    ) -> Result<Self> {
        let mut block = Vec::with_capacity(n);
        let mut attns = Vec::new();
        let mut c = c_in;
        for j in 0..n {
            block.push(ResnetBlock::load(
                src,
                &format!("{prefix}.block.{j}"),
                c,
                c_out,
                device,
            )?);
            c = c_out;
            if attn {
                attns.push(AttnBlock::load(
                    src,
                    &format!("{prefix}.attn.{j}"),
                    c,
                    device,
                )?);
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
