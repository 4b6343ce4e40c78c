//! The VQ-VAE encoder (LDM "vq-f16" layout): image `[B, 3, H, W]` → latent `[B, Cz, H/16, W/16]`.

use burn::module::Module;
use burn::tensor::Tensor;

use super::blocks::{AttnBlock, Downsample, LevelBlocks, ResnetBlock, norm};
use crate::config::VqVaeConfig;
use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm};
use crate::params::Scope;

#[derive(Module, Debug)]
pub struct DownLevel {
    /// `block.{j}` and `attn.{j}` of this level.
    pub blocks: LevelBlocks,
    pub downsample: Option<Downsample>,
}

#[derive(Module, Debug)]
pub struct Mid {
    pub block_1: ResnetBlock,
    pub attn_1: Option<AttnBlock>,
    pub block_2: ResnetBlock,
}

impl Mid {
    pub fn load(s: &mut Scope, c: usize, attn: bool) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::load(&mut s.pp("block_1"), c, c)?,
            attn_1: if attn {
                Some(AttnBlock::load(&mut s.pp("attn_1"), c)?)
            } else {
                None
            },
            block_2: ResnetBlock::load(&mut s.pp("block_2"), c, c)?,
        })
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.block_1.forward(x);
        if let Some(a) = &self.attn_1 {
            h = a.forward(h);
        }
        self.block_2.forward(h)
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down: Vec<DownLevel>,
    pub mid: Mid,
    pub norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    pub fn load(s: &mut Scope, cfg: &VqVaeConfig) -> Result<Self> {
        let ch = cfg.ch;
        let levels = cfg.ch_mult.len();
        let conv_in = Conv2d::load(&mut s.pp("conv_in"), cfg.in_channels, ch, 3, 1, 1)?;
        let mut down = Vec::with_capacity(levels);
        let mut block_in = ch;
        for (i, &mult) in cfg.ch_mult.iter().enumerate() {
            let block_out = ch * mult;
            let mut level = s.pp(format!("down.{i}"));
            let attn = cfg.using_sa && i == levels - 1;
            let blocks =
                LevelBlocks::load(&mut level, cfg.num_res_blocks, block_in, block_out, attn)?;
            block_in = block_out;
            let downsample = if i != levels - 1 {
                Some(Downsample::load(&mut level.pp("downsample"), block_in)?)
            } else {
                None
            };
            down.push(DownLevel { blocks, downsample });
        }
        Ok(Self {
            conv_in,
            down,
            mid: Mid::load(&mut s.pp("mid"), block_in, cfg.using_mid_sa)?,
            norm_out: norm(&mut s.pp("norm_out"), block_in)?,
            conv_out: Conv2d::load(&mut s.pp("conv_out"), block_in, cfg.z_channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.conv_in.forward(x);
        for level in &self.down {
            h = level.blocks.forward(h);
            if let Some(d) = &level.downsample {
                h = d.forward(h);
            }
        }
        let h = self.mid.forward(h);
        self.conv_out.forward(self.norm_out.forward_silu(h))
    }
}
