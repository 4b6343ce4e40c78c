//! The multi-scale VQ-VAE (`vae_ch160v4096z32` and smaller variants).

pub mod blocks;
pub mod decoder;
pub mod encoder;
pub mod quantizer;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::{PatchNums, VqVaeConfig};
use crate::error::{Error, Result};
use crate::nn::Conv2d;
use crate::params::{ParamSource, Scope};

pub use decoder::Decoder;
pub use encoder::Encoder;
pub use quantizer::VectorQuantizer;

#[derive(Module, Debug)]
pub struct VqVae {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quantize: VectorQuantizer,
    pub quant_conv: Conv2d,
    pub post_quant_conv: Conv2d,
}

impl VqVae {
    /// Builds the model from a parameter source (checkpoint or initialiser).
    pub fn load(src: &mut dyn ParamSource, cfg: &VqVaeConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let cz = cfg.z_channels;
        let mut s = Scope::new(src, device);
        Ok(Self {
            encoder: Encoder::load(&mut s.pp("encoder"), cfg)?,
            decoder: Decoder::load(&mut s.pp("decoder"), cfg)?,
            quantize: VectorQuantizer::load(&mut s.pp("quantize"), cfg)?,
            quant_conv: Conv2d::load(&mut s.pp("quant_conv"), cz, cz, 3, 1, 1)?,
            post_quant_conv: Conv2d::load(&mut s.pp("post_quant_conv"), cz, cz, 3, 1, 1)?,
        })
    }

    /// Loads a full VQ-VAE state dict strictly: every key must be used.
    /// The configuration is read from the tensor shapes unless given.
    pub fn from_checkpoint(
        ck: Checkpoint,
        cfg: Option<VqVaeConfig>,
        device: &Device,
    ) -> Result<(Self, VqVaeConfig)> {
        ck.load_strict(
            cfg,
            |ck| infer_config(ck, None),
            |ck, c| Self::load(ck, c, device),
        )
    }

    /// The official state dict: every parameter plus `quantize.ema_vocab_hit_SV`
    /// (`[scales, V]`; `usage` when given, zeros otherwise).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_dict(&self, usage: Option<Vec<f32>>) -> Result<Vec<crate::state_dict::Entry>> {
        let mut out = crate::state_dict::parameters(self)?;
        let s = self.quantize.patch_nums.len();
        let v = self.quantize.embedding.val().dims()[0];
        let usage = usage.unwrap_or_else(|| vec![0.0; s * v]);
        if usage.len() != s * v {
            return Err(Error::invalid(format!(
                "codebook usage has {} values, expected {s}×{v}",
                usage.len()
            )));
        }
        out.push(crate::state_dict::Entry::f32(
            "quantize.ema_vocab_hit_SV",
            vec![s, v],
            usage,
        ));
        Ok(out)
    }

    /// `quant_conv(encoder(img))`: image in [−1, 1] `[B, 3, H, W]` → `f` `[B, Cv, h, w]`.
    pub fn encode(&self, img: Tensor<4>) -> Tensor<4> {
        self.quant_conv.forward(self.encoder.forward(img))
    }

    /// Image → token indices of every scale.
    pub fn img_to_idx(&self, img: Tensor<4>) -> Vec<Tensor<2, Int>> {
        self.quantize.f_to_idx(self.encode(img)).0
    }

    /// `decoder(post_quant_conv(f_hat))`, not clamped.
    pub fn decode_unclamped(&self, f_hat: Tensor<4>) -> Tensor<4> {
        self.decoder.forward(self.post_quant_conv.forward(f_hat))
    }

    /// f̂ → image in [−1, 1].
    pub fn fhat_to_img(&self, f_hat: Tensor<4>) -> Tensor<4> {
        self.decode_unclamped(f_hat).clamp(-1.0, 1.0)
    }

    /// Token indices of every scale → image in [−1, 1].
    pub fn idx_to_img(&self, idx: &[Tensor<2, Int>]) -> Tensor<4> {
        self.fhat_to_img(self.quantize.idx_to_fhat(idx))
    }
}

fn count_indexed(ck: &Checkpoint, prefix: &str) -> usize {
    let mut n = 0;
    while ck.keys().any(|k| k.starts_with(&format!("{prefix}.{n}."))) {
        n += 1;
    }
    n
}

fn shape_of<'a>(ck: &'a Checkpoint, key: &str, rank: usize) -> Result<&'a [usize]> {
    ck.dims(key, rank)?.ok_or_else(|| Error::Format {
        format: "VQ-VAE checkpoint",
        reason: format!("cannot infer the configuration: no tensor `{key}`"),
    })
}

/// Reads the VQ-VAE configuration off the shapes of a state dict.
pub fn infer_config(ck: &Checkpoint, patch_nums: Option<PatchNums>) -> Result<VqVaeConfig> {
    let conv_in = shape_of(ck, "encoder.conv_in.weight", 4)?;
    let (ch, in_channels) = (conv_in[0], conv_in[1]);
    let emb = shape_of(ck, "quantize.embedding.weight", 2)?;
    let (vocab_size, z_channels) = (emb[0], emb[1]);
    let levels = count_indexed(ck, "encoder.down");
    if levels == 0 {
        return Err(Error::Format {
            format: "VQ-VAE checkpoint",
            reason: "no `encoder.down.*` tensors".into(),
        });
    }
    let ch_mult = (0..levels)
        .map(|i| Ok(shape_of(ck, &format!("encoder.down.{i}.block.0.conv1.weight"), 4)?[0] / ch))
        .collect::<Result<Vec<_>>>()?;
    let num_res_blocks = count_indexed(ck, "encoder.down.0.block");
    let share_quant_resi = count_indexed(ck, "quantize.quant_resi.qresi_ls");
    let mut cfg = VqVaeConfig {
        vocab_size,
        z_channels,
        ch,
        ch_mult,
        num_res_blocks,
        in_channels,
        using_sa: ck.contains(&format!("encoder.down.{}.attn.0.norm.weight", levels - 1)),
        using_mid_sa: ck.contains("encoder.mid.attn_1.norm.weight"),
        share_quant_resi,
        ..VqVaeConfig::vae_ch160v4096z32()
    };
    if let Some(p) = patch_nums.or(ck.recorded_patch_nums()?) {
        cfg.patch_nums = p;
    } else if let Some(s) = ck.dims("quantize.ema_vocab_hit_SV", 2)?
        && s[0] != cfg.patch_nums.num_scales()
    {
        return Err(Error::config(format!(
            "the checkpoint was trained with {} scales; give its patch list explicitly",
            s[0]
        )));
    }
    cfg.validate()?;
    Ok(cfg)
}
