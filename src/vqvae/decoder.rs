//! The VQ-VAE decoder: latent `[B, Cz, h, w]` → image `[B, 3, 16h, 16w]` (unclamped).
//! `decoder.up.<i>` is stored by level but executed from the lowest resolution up.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::blocks::{AttnBlock, ResnetBlock, Upsample, norm};
use super::encoder::Mid;
use crate::config::VqVaeConfig;
use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, silu};
use crate::params::ParamSource;

#[derive(Module, Debug)]
pub struct UpLevel {
    pub block: Vec<ResnetBlock>,
    pub attn: Vec<AttnBlock>,
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
    pub fn load(
        src: &mut dyn ParamSource,
        p: &str,
        cfg: &VqVaeConfig,
        device: &Device,
    ) -> Result<Self> {
        let ch = cfg.ch;
        let levels = cfg.ch_mult.len();
        let mut block_in = ch * cfg.ch_mult[levels - 1];
        let conv_in = Conv2d::load(
            src,
            &format!("{p}.conv_in"),
            cfg.z_channels,
            block_in,
            3,
            1,
            1,
            device,
        )?;
        let mid = Mid::load(src, &format!("{p}.mid"), block_in, cfg.using_mid_sa, device)?;
        // Load in execution order so a checkpoint's missing key is reported where it is used.
        let mut up_rev = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let block_out = ch * cfg.ch_mult[i];
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                block.push(ResnetBlock::load(
                    src,
                    &format!("{p}.up.{i}.block.{j}"),
                    block_in,
                    block_out,
                    device,
                )?);
                block_in = block_out;
                if cfg.using_sa && i == levels - 1 {
                    attn.push(AttnBlock::load(
                        src,
                        &format!("{p}.up.{i}.attn.{j}"),
                        block_in,
                        device,
                    )?);
                }
            }
            let upsample = if i != 0 {
                Some(Upsample::load(
                    src,
                    &format!("{p}.up.{i}.upsample"),
                    block_in,
                    device,
                )?)
            } else {
                None
            };
            up_rev.push(UpLevel {
                block,
                attn,
                upsample,
            });
        }
        up_rev.reverse();
        Ok(Self {
            conv_in,
            mid,
            up: up_rev,
            norm_out: norm(src, &format!("{p}.norm_out"), block_in, device)?,
            conv_out: Conv2d::load(
                src,
                &format!("{p}.conv_out"),
                block_in,
                cfg.in_channels,
                3,
                1,
                1,
                device,
            )?,
        })
    }

    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut h = self.mid.forward(self.conv_in.forward(z));
        for level in self.up.iter().rev() {
            for (j, block) in level.block.iter().enumerate() {
                h = block.forward(h);
                if let Some(a) = level.attn.get(j) {
                    h = a.forward(h);
                }
            }
            if let Some(u) = &level.upsample {
                h = u.forward(h);
            }
        }
        self.conv_out.forward(silu(self.norm_out.forward(h)))
    }
}
