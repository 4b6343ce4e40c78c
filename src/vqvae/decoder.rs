//! The VQ-VAE decoder: latent `[B, Cz, h, w]` → image `[B, 3, 16h, 16w]` (unclamped).
//! `decoder.up.<i>` is stored by level but executed from the lowest resolution up.

use burn::module::Module;
use burn::tensor::Tensor;

use super::blocks::{LevelBlocks, Upsample, norm};
use super::encoder::Mid;
use crate::config::VqVaeConfig;
use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm};
use crate::params::Scope;

#[derive(Module, Debug)]
pub struct UpLevel {
    /// `block.{j}` and `attn.{j}` of this level.
    pub blocks: LevelBlocks,
    pub upsample: Option<Upsample>,
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid: Mid,
    /// Indexed by level (0 = full resolution); run in reverse.
    pub up: Vec<UpLevel>,
    pub norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    pub fn load(s: &mut Scope, cfg: &VqVaeConfig) -> Result<Self> {
        let ch = cfg.ch;
        let levels = cfg.ch_mult.len();
        let mut block_in = ch * cfg.ch_mult[levels - 1];
        let conv_in = Conv2d::load(&mut s.pp("conv_in"), cfg.z_channels, block_in, 3, 1, 1)?;
        let mid = Mid::load(&mut s.pp("mid"), block_in, cfg.using_mid_sa)?;
        // Load in execution order so a checkpoint's missing key is reported where it is used.
        let mut up_rev = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let block_out = ch * cfg.ch_mult[i];
            let mut level = s.pp(format!("up.{i}"));
            let (n, attn) = (cfg.num_res_blocks + 1, cfg.using_sa && i == levels - 1);
            let blocks = LevelBlocks::load(&mut level, n, block_in, block_out, attn)?;
            block_in = block_out;
            let upsample = if i != 0 {
                Some(Upsample::load(&mut level.pp("upsample"), block_in)?)
            } else {
                None
            };
            up_rev.push(UpLevel { blocks, upsample });
        }
        up_rev.reverse();
        Ok(Self {
            conv_in,
            mid,
            up: up_rev,
            norm_out: norm(&mut s.pp("norm_out"), block_in)?,
            conv_out: Conv2d::load(&mut s.pp("conv_out"), block_in, cfg.in_channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut h = self.mid.forward(self.conv_in.forward(z));
        for level in self.up.iter().rev() {
            h = level.blocks.forward(h);
            if let Some(u) = &level.upsample {
                h = u.forward(h);
            }
        }
        self.conv_out.forward(self.norm_out.forward_silu(h))
    }
}
