//! A VAR transformer with its VQ-VAE, ready to generate images.

use burn::tensor::Device;

use crate::checkpoint::Checkpoint;
use crate::config::{VarConfig, VqVaeConfig};
use crate::error::{Error, Result};
use crate::image::{RgbImage, to_rgb8};
use crate::sampler::{Generated, SampleHooks, SampleOptions, Sampling, class_condition, generate};
use crate::var::{self, Var};
use crate::vqvae::{self, VectorQuantizer, VqVae};

/// The VQ-VAE side of a pipeline: the whole model, or only the quantizer (tokens, no pixels).
pub enum VaeParts {
    Full(Box<VqVae>),
    QuantizerOnly(VectorQuantizer),
}

pub struct Pipeline {
    pub var: Var,
    pub var_config: VarConfig,
    pub vae: VaeParts,
    pub vae_config: VqVaeConfig,
    /// The prompt encoder, when the model takes prompts and the file carries one.
    pub text: Option<crate::text::TextEncoder>,
    /// The text adapter of a class-conditional model.
    pub adapter: Option<crate::var::adapter::TextAdapter>,
}

impl Pipeline {
    /// Builds a pipeline from a VAR checkpoint and a VQ-VAE checkpoint. The VQ-VAE file may be
    /// a full model or hold only `quantize.*` (plus the 1×1 latent convs): then images cannot
    /// be decoded, but tokens can be sampled. Without a VQ-VAE file, the VAR file must carry
    /// the VQ-VAE under the prefix `vae.`.
    pub fn from_checkpoints(
        mut var_ck: Checkpoint,
        vae_ck: Option<Checkpoint>,
        device: &Device,
    ) -> Result<Self> {
        let embedded = var_ck.split_prefix("vae.");
        let vae_ck = match vae_ck {
            Some(v) if embedded.is_empty() => v,
            Some(_) => {
                return Err(Error::invalid(
                    "the VAR checkpoint already contains a VQ-VAE (`vae.*`); do not pass another",
                ));
            }
            None if !embedded.is_empty() => embedded,
            None => {
                return Err(Error::invalid(
                    "sampling needs the VQ-VAE codebook: pass a VQ-VAE checkpoint (a full one to decode images, \
                     or one with only `quantize.*` to sample tokens)",
                ));
            }
        };
        let var_config = var::infer_config(&var_ck, None)?;
        let (var, var_config) = Var::from_checkpoint(var_ck, Some(var_config), device)?;
        let (vae, vae_config) = Self::load_vae(vae_ck, &var_config, device)?;
        if vae_config.vocab_size != var_config.vocab_size
            || vae_config.z_channels != var_config.cvae
        {
            return Err(Error::config(format!(
                "VAR (vocabulary {}, latent width {}) and VQ-VAE (vocabulary {}, latent width {}) do not match",
                var_config.vocab_size,
                var_config.cvae,
                vae_config.vocab_size,
                vae_config.z_channels
            )));
        }
        Ok(Self {
            var,
            var_config,
            vae,
            vae_config,
            text: None,
            adapter: None,
        })
    }

    /// Builds a pipeline from a nextscale pack (configs from its header, every tensor used).
    pub fn from_pack(mut pack: crate::pack::Pack, device: &Device) -> Result<Self> {
        let var_config = pack.header.var.clone();
        let vae_config = pack.header.vae.clone();
        if vae_config.patch_nums != var_config.patch_nums {
            return Err(Error::config(
                "the pack's VAR and VQ-VAE patch lists differ",
            ));
        }
        let var = Var::load(&mut pack.source(""), &var_config, device)?;
        let vae = VqVae::load(&mut pack.source("vae."), &vae_config, device)?;
        let text = match pack.header.text.clone() {
            Some(t) => Some(crate::text::TextEncoder::MiniLm(crate::text::MiniLm::load(
                &mut pack.source("text."),
                t.config,
                &t.vocab.join("\n"),
                t.max_tokens,
                device,
            )?)),
            None => None,
        };
        let adapter = match pack.header.adapter.clone() {
            Some(a) => Some(crate::var::adapter::TextAdapter::load(
                &mut pack.source("adapter."),
                &a,
                device,
            )?),
            None => None,
        };
        pack.finish()?;
        Ok(Self {
            var,
            var_config,
            vae: VaeParts::Full(Box::new(vae)),
            vae_config,
            text,
            adapter,
        })
    }

    /// Builds a pipeline from one file's bytes: a nextscale pack, or a safetensors file
    /// holding the VAR with its VQ-VAE under `vae.`.
    pub fn from_bytes(bytes: Vec<u8>, device: &Device) -> Result<Self> {
        if crate::pack::Pack::is_pack(&bytes) {
            Self::from_pack(crate::pack::Pack::from_bytes(bytes)?, device)
        } else {
            Self::from_checkpoints(Checkpoint::from_bytes(bytes)?, None, device)
        }
    }

    fn load_vae(
        mut ck: Checkpoint,
        var_cfg: &VarConfig,
        device: &Device,
    ) -> Result<(VaeParts, VqVaeConfig)> {
        if ck.contains("encoder.conv_in.weight") || ck.contains("decoder.conv_in.weight") {
            let cfg = vqvae::infer_config(&ck, Some(var_cfg.patch_nums.clone()))?;
            let (m, cfg) = VqVae::from_checkpoint(ck, Some(cfg), device)?;
            return Ok((VaeParts::Full(Box::new(m)), cfg));
        }
        let emb = ck
            .shape("quantize.embedding.weight")
            .ok_or_else(|| Error::Format {
                format: "VQ-VAE checkpoint",
                reason: "no `quantize.embedding.weight` (is this a VQ-VAE file?)".into(),
            })?;
        let mut share = 0;
        while ck.contains(&format!("quantize.quant_resi.qresi_ls.{share}.weight")) {
            share += 1;
        }
        let cfg = VqVaeConfig {
            vocab_size: emb[0],
            z_channels: emb[1],
            share_quant_resi: share,
            patch_nums: var_cfg.patch_nums.clone(),
            ..VqVaeConfig::vae_ch160v4096z32()
        };
        let q = VectorQuantizer::load(&mut ck, "quantize", &cfg, device)?;
        // The latent 1×1 convs are of no use without the encoder/decoder; accept them.
        let cz = cfg.z_channels;
        for k in ["quant_conv", "post_quant_conv"] {
            ck.skip_buffer(&format!("{k}.weight"), &[cz, cz, 3, 3])?;
            ck.skip_buffer(&format!("{k}.bias"), &[cz])?;
        }
        ck.finish()?;
        Ok((VaeParts::QuantizerOnly(q), cfg))
    }

    pub fn quantizer(&self) -> &VectorQuantizer {
        match &self.vae {
            VaeParts::Full(m) => &m.quantize,
            VaeParts::QuantizerOnly(q) => q,
        }
    }

    pub fn can_decode(&self) -> bool {
        matches!(self.vae, VaeParts::Full(_))
    }

    /// Samples tokens for `labels`.
    pub async fn generate(
        &self,
        labels: &[usize],
        opts: &SampleOptions,
        hooks: &mut dyn SampleHooks,
    ) -> Result<Generated> {
        generate(&self.var, self.quantizer(), labels, opts, hooks).await
    }

    /// Samples tokens for text embeddings `[B, text_dim]` (one image per row), with the null
    /// condition as the CFG reference.
    pub async fn generate_text(
        &self,
        embeddings: burn::tensor::Tensor<2>,
        opts: &SampleOptions,
        hooks: &mut dyn SampleHooks,
    ) -> Result<Generated> {
        let cond = crate::sampler::text_condition(&self.var, embeddings)?;
        crate::sampler::generate_with_condition(&self.var, self.quantizer(), cond, opts, hooks)
            .await
    }

    /// Whether [`Pipeline::start_prompts`] can run: a text encoder, and a text-conditioned
    /// model or a text adapter.
    pub fn takes_prompts(&self) -> bool {
        self.text.is_some() && (self.var_config.text_dim > 0 || self.adapter.is_some())
    }

    /// CFG condition rows `[2B, C]` for prompts.
    pub fn prompt_condition(&self, prompts: &[&str]) -> Result<burn::tensor::Tensor<2>> {
        let Some(text) = &self.text else {
            return Err(Error::invalid(
                "this model has no text encoder: use class labels, not prompts",
            ));
        };
        if prompts.is_empty() {
            return Err(Error::invalid("no prompts given: nothing to generate"));
        }
        let device = self.var.class_emb.val().device();
        let emb = text.embed(prompts, &device)?;
        if self.var_config.text_dim > 0 {
            crate::sampler::text_condition(&self.var, emb)
        } else if let Some(a) = &self.adapter {
            a.cfg_condition(&self.var, &vec![self.var.null_class(); prompts.len()], emb)
        } else {
            Err(Error::invalid(
                "this model is class-conditional and has no text adapter: use class labels",
            ))
        }
    }

    /// Samples tokens for prompts (one image each).
    pub async fn generate_prompts(
        &self,
        prompts: &[&str],
        opts: &SampleOptions,
        hooks: &mut dyn SampleHooks,
    ) -> Result<Generated> {
        let cond = self.prompt_condition(prompts)?;
        crate::sampler::generate_with_condition(&self.var, self.quantizer(), cond, opts, hooks)
            .await
    }

    /// Starts a step-by-step generation for prompts.
    pub fn start_prompts(&self, prompts: &[&str], opts: &SampleOptions) -> Result<Sampling<'_>> {
        Sampling::new(
            &self.var,
            self.quantizer(),
            self.prompt_condition(prompts)?,
            opts,
        )
    }

    /// Starts a step-by-step generation for `labels`.
    pub fn start(&self, labels: &[usize], opts: &SampleOptions) -> Result<Sampling<'_>> {
        Sampling::new(
            &self.var,
            self.quantizer(),
            class_condition(&self.var, labels)?,
            opts,
        )
    }

    /// Side length of the generated images (pixels).
    pub fn image_size(&self) -> usize {
        self.vae_config.image_size()
    }

    /// Decodes a final latent into 8-bit images.
    pub async fn decode(&self, g: &Generated) -> Result<Vec<RgbImage>> {
        self.decode_fhat(g.f_hat.clone()).await
    }

    /// Decodes any latent `[B, Cv, h, w]` (e.g. a partial one, as a preview) into 8-bit images.
    pub async fn decode_fhat(&self, f_hat: burn::tensor::Tensor<4>) -> Result<Vec<RgbImage>> {
        match &self.vae {
            VaeParts::Full(m) => to_rgb8(m.fhat_to_img(f_hat)).await,
            VaeParts::QuantizerOnly(_) => Err(Error::invalid(
                "this VQ-VAE file holds only the quantizer: images cannot be decoded",
            )),
        }
    }
}
