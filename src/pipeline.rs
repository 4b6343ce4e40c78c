//! A VAR transformer with its VQ-VAE, ready to generate images.

use std::sync::PoisonError;

use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::Checkpoint;
use crate::condition::Condition;
use crate::config::{VarConfig, VqVaeConfig};
use crate::error::{Error, Result};
use crate::image::{RgbImage, RgbaView, to_rgb8};
use crate::params::Scope;
use crate::sampler::{Generated, SampleHooks, SampleOptions, Sampling, class_condition, generate};
use crate::var::{self, Var};
use crate::vqvae::{self, VectorQuantizer, VqVae};

/// The VQ-VAE side of a pipeline: the whole model, or only the quantizer (tokens, no pixels).
pub enum VaeParts {
    Full(Box<VqVae>),
    QuantizerOnly(VectorQuantizer),
}

pub struct Pipeline {
    var: Var,
    var_config: VarConfig,
    vae: VaeParts,
    vae_config: VqVaeConfig,
    /// The prompt encoder, when the model takes prompts and the file carries one.
    text: Option<crate::text::TextEncoder>,
    /// The text adapter of a class-conditional model.
    adapter: Option<crate::var::adapter::TextAdapter>,
    /// Human-readable class names (from a pack or a checkpoint's metadata), one per class.
    class_names: Option<Vec<String>>,
    /// The sampling settings the model was tuned for (a pack's `sampling`).
    recommended: Option<crate::sampler::Recommended>,
    /// The last prompt encoded and its embedding `[1, text_dim]`: the page's `numImages` and a
    /// user's repeated clicks ask for the same prompt image after image.
    last_prompt: std::sync::Mutex<Option<(String, Tensor<2>)>>,
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
        Self::from_parts(var, var_config, vae, vae_config)
    }

    /// Builds a pipeline from a nextscale pack (configs from its header, every tensor used).
    /// q8/q4 matrices stay packed in memory, on the CPU and on a GPU (see
    /// [`crate::pack::Pack::keep_packed`]).
    pub fn from_pack(mut pack: crate::pack::Pack, device: &Device) -> Result<Self> {
        pack.keep_packed_by_default();
        let var_config = pack.header.var.clone();
        let vae_config = pack.header.vae.clone();
        crate::config::check_pair(&var_config, &vae_config)?;
        let mut var = Var::load(&mut pack.source(""), &var_config, device)?;
        if let Some(l) = pack.header.lora.clone() {
            // Fold the updates in once (a packed base layer becomes dense).
            var = var
                .attach_lora(&l, &mut pack.source("lora."), device)?
                .merge_lora();
        }
        let vae = VqVae::load(&mut pack.source("vae."), &vae_config, device)?;
        let text = match (pack.header.text.clone(), pack.header.clip.clone()) {
            (Some(t), _) => Some(crate::text::TextEncoder::MiniLm(Box::new(
                crate::text::MiniLm::load(
                    &mut pack.source("text."),
                    t.config,
                    &t.vocab.join("\n"),
                    t.max_tokens,
                    device,
                )?,
            ))),
            (None, Some(c)) => Some(crate::text::TextEncoder::Clip(Box::new(
                crate::text::ClipText::load(
                    &mut pack.source("text."),
                    c.config,
                    crate::text::ClipBpe::from_lists(&c.vocab, &c.merges)?,
                    device,
                )?,
            ))),
            (None, None) => None,
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
            class_names: pack.header.class_names.take(),
            recommended: pack.header.sampling.take(),
            last_prompt: Default::default(),
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
            .dims("quantize.embedding.weight", 2)?
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
        cfg.validate()?;
        let q = VectorQuantizer::load(&mut Scope::new(&mut ck, device).pp("quantize"), &cfg)?;
        // The latent 1×1 convs are of no use without the encoder/decoder; accept them.
        let cz = cfg.z_channels;
        for k in ["quant_conv", "post_quant_conv"] {
            ck.skip_buffer(&format!("{k}.weight"), &[cz, cz, 3, 3])?;
            ck.skip_buffer(&format!("{k}.bias"), &[cz])?;
        }
        ck.finish()?;
        Ok((VaeParts::QuantizerOnly(q), cfg))
    }

    /// The sampling options to use when the caller sets none: the model's recommended
    /// settings, else the official defaults.
    pub fn default_options(&self) -> SampleOptions {
        match &self.recommended {
            Some(r) => r.options(0),
            None => SampleOptions::default(),
        }
    }

    /// A pipeline from models already built (no text encoder, adapter or class names).
    pub fn new(
        var: Var,
        var_config: VarConfig,
        vae: VqVae,
        vae_config: VqVaeConfig,
    ) -> Result<Self> {
        Self::from_parts(var, var_config, VaeParts::Full(Box::new(vae)), vae_config)
    }

    /// The checked pair, with no text encoder, adapter, class names or recommended settings.
    fn from_parts(
        var: Var,
        var_config: VarConfig,
        vae: VaeParts,
        vae_config: VqVaeConfig,
    ) -> Result<Self> {
        crate::config::check_pair(&var_config, &vae_config)?;
        Ok(Self {
            var,
            var_config,
            vae,
            vae_config,
            text: None,
            adapter: None,
            class_names: None,
            recommended: None,
            last_prompt: Default::default(),
        })
    }

    /// Adds a prompt encoder (for a text-conditioned model, or with a text adapter); its
    /// embedding width must be what the model (or adapter) takes.
    pub fn with_text_encoder(mut self, text: crate::text::TextEncoder) -> Result<Self> {
        let want = match &self.adapter {
            Some(a) => a.text_dim(),
            None => self.var_config.text_dim,
        };
        if want > 0 && text.dim() != want {
            return Err(Error::config(format!(
                "the text encoder gives {}-d embeddings, the model takes {want}",
                text.dim()
            )));
        }
        self.text = Some(text);
        self.last_prompt = Default::default();
        Ok(self)
    }

    /// Adds a text adapter (prompts for a class-conditional model); it must be made for this
    /// VAR's width.
    pub fn with_adapter(mut self, adapter: crate::var::adapter::TextAdapter) -> Result<Self> {
        if adapter.embed_dim() != self.var_config.embed_dim {
            return Err(Error::config(format!(
                "the text adapter was made for a VAR of width {}, this one is {}",
                adapter.embed_dim(),
                self.var_config.embed_dim
            )));
        }
        if let Some(t) = &self.text
            && t.dim() != adapter.text_dim()
        {
            return Err(Error::config(format!(
                "the text adapter takes {}-d embeddings, the text encoder gives {}",
                adapter.text_dim(),
                t.dim()
            )));
        }
        self.adapter = Some(adapter);
        Ok(self)
    }

    /// Replaces the VAR by another of the same configuration (e.g. the same weights stored
    /// differently, for comparisons).
    pub fn set_var(&mut self, var: Var) {
        self.var = var;
        // The cached embedding lives on the old VAR's device, which the new one may not share.
        self.last_prompt = Default::default();
    }

    pub fn var(&self) -> &Var {
        &self.var
    }
    pub fn var_config(&self) -> &VarConfig {
        &self.var_config
    }
    pub fn vae_config(&self) -> &VqVaeConfig {
        &self.vae_config
    }
    /// The prompt encoder, when the model takes prompts and the file carries one.
    pub fn text_encoder(&self) -> Option<&crate::text::TextEncoder> {
        self.text.as_ref()
    }
    /// Human-readable class names, one per class, when the file carries them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }
    /// The sampling settings the model was tuned for (a pack's `sampling`).
    pub fn recommended(&self) -> Option<&crate::sampler::Recommended> {
        self.recommended.as_ref()
    }

    /// The name of class `c` (or "unconditional" for the null class), when the model has names.
    pub fn class_name(&self, c: usize) -> Option<&str> {
        if c == self.var_config.num_classes {
            return Some("unconditional");
        }
        self.class_names.as_ref()?.get(c).map(String::as_str)
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

    /// Whether prompts work: a text encoder, and a text-conditioned
    /// model or a text adapter.
    pub fn takes_prompts(&self) -> bool {
        self.text.is_some() && (self.var_config.text_dim > 0 || self.adapter.is_some())
    }

    /// CFG condition rows `[2B, C]` for prompts.
    pub fn prompt_condition(&self, prompts: &[&str]) -> Result<burn::tensor::Tensor<2>> {
        let text = self.prompt_encoder()?;
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

    /// The text encoder, or the error every prompt gets from a model without one.
    fn prompt_encoder(&self) -> Result<&crate::text::TextEncoder> {
        self.text.as_ref().ok_or_else(|| {
            Error::invalid("this model has no text encoder: use class labels, not prompts")
        })
    }

    /// The embedding `[1, text_dim]` of one prompt, from the one-entry cache when it is the
    /// prompt encoded last (the same values: the encoder is deterministic).
    fn embed_prompt(&self, prompt: &str, device: &Device) -> Result<Tensor<2>> {
        let text = self.prompt_encoder()?;
        // The lock is held only to read or replace the pair (encoding runs outside it), so a
        // poisoned lock still holds a consistent pair.
        let cache = || {
            self.last_prompt
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some((p, emb)) = cache().as_ref()
            && p == prompt
        {
            return Ok(emb.clone());
        }
        let emb = text.embed(&[prompt], device)?;
        *cache() = Some((prompt.to_string(), emb.clone()));
        Ok(emb)
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

    /// Starts a step-by-step generation for `labels`.
    pub fn start(&self, labels: &[usize], opts: &SampleOptions) -> Result<Sampling<'_>> {
        Sampling::new(
            &self.var,
            self.quantizer(),
            class_condition(&self.var, labels)?,
            opts,
        )
    }

    /// The CFG condition rows `[2B, C]` for one condition per image: B conditional rows, then
    /// the null condition B times.
    pub fn condition_rows(&self, conds: &[Condition]) -> Result<Tensor<2>> {
        if conds.is_empty() {
            return Err(Error::invalid("no condition given: nothing to generate"));
        }
        let device = self.var.class_emb.val().device();
        let mut rows = Vec::with_capacity(conds.len());
        for c in conds {
            let emb = match c {
                Condition::Class(l) => {
                    rows.push(self.var.class_embedding(self.var.labels(&[*l], &device)?));
                    continue;
                }
                Condition::Unconditional => {
                    rows.push(self.var.null_condition(1));
                    continue;
                }
                Condition::Prompt(p) => {
                    if p.trim().is_empty() {
                        return Err(Error::invalid("the prompt is empty"));
                    }
                    self.embed_prompt(p, &device)?
                }
                Condition::Embedding(v) => {
                    let d = v.len();
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(Error::invalid("the text embedding has non-finite values"));
                    }
                    Tensor::from_data(TensorData::new(v.clone(), [1, d]), &device)
                }
            };
            let row = if self.var_config.text_dim > 0 {
                self.var.text_condition(emb)?
            } else if let Some(a) = &self.adapter {
                a.condition(&self.var, &[self.var.null_class()], emb)?
            } else {
                return Err(Error::invalid(
                    "this model is class-conditional and has no text adapter: use class labels",
                ));
            };
            rows.push(row);
        }
        let b = rows.len();
        rows.push(self.var.null_condition(b));
        Ok(Tensor::cat(rows, 0))
    }

    /// Samples tokens, one image per condition.
    pub async fn generate_with(
        &self,
        conds: &[Condition],
        opts: &SampleOptions,
        hooks: &mut dyn SampleHooks,
    ) -> Result<Generated> {
        let mut s = self.start_with(conds, opts)?;
        while s.step(hooks).await?.is_some() {}
        Ok(s.finish())
    }

    /// Starts a step-by-step generation, one image per condition.
    pub fn start_with(&self, conds: &[Condition], opts: &SampleOptions) -> Result<Sampling<'_>> {
        Sampling::new(
            &self.var,
            self.quantizer(),
            self.condition_rows(conds)?,
            opts,
        )
    }

    /// The multi-scale tokens (`[scale][pn²]`) of an RGBA image, pre-processed as training
    /// images are (composited on white, resized, centre-cropped): the official `img_to_idxBl`.
    pub async fn encode_rgba(&self, image: &RgbaView<'_>) -> Result<Vec<Vec<u32>>> {
        let VaeParts::Full(vae) = &self.vae else {
            return Err(Error::invalid(
                "this VQ-VAE file holds only the quantizer: images cannot be encoded",
            ));
        };
        let size = self.image_size();
        let chw = image.to_chw(size, 255)?;
        let device = self.var.class_emb.val().device();
        let x: Tensor<4> = Tensor::from_data(TensorData::new(chw, [1, 3, size, size]), &device);
        let mut out = Vec::new();
        for t in vae.img_to_idx(x) {
            let v = crate::readback::read_i64(t).await?;
            out.push(v.into_iter().map(|x| x as u32).collect());
        }
        Ok(out)
    }

    /// The edit plan for one source image and a region, for `n` images.
    pub async fn plan_edit(
        &self,
        image: &RgbaView<'_>,
        region: &crate::edit::Region,
        n: usize,
    ) -> Result<crate::edit::EditPlan> {
        if n == 0 {
            return Err(Error::invalid("an edit needs at least one image"));
        }
        let keep = crate::edit::scale_masks(region, &self.var_config.patch_nums)?;
        let tokens = self.encode_rgba(image).await?;
        let plan = crate::edit::EditPlan {
            source: tokens.into_iter().map(|t| vec![t]).collect(),
            keep,
        };
        Ok(plan.repeat(n))
    }

    /// The keep mask of the finest token grid from a mask image (white = regenerate,
    /// black or transparent = keep; any size, resized like the source).
    pub fn mask_from_rgba(&self, mask: &RgbaView<'_>) -> Result<Vec<bool>> {
        let size = self.image_size();
        let pn = self.var_config.patch_nums.latent();
        crate::edit::token_mask(&mask.to_keep_mask(size)?, size, pn)
    }

    /// Starts a step-by-step edit: one image per condition, each from `plan`'s source.
    pub fn start_edit(
        &self,
        conds: &[Condition],
        opts: &SampleOptions,
        plan: crate::edit::EditPlan,
    ) -> Result<Sampling<'_>> {
        self.start_with(conds, opts)?.with_edit(plan)
    }

    /// Runs an edit to the end.
    pub async fn edit(
        &self,
        conds: &[Condition],
        opts: &SampleOptions,
        plan: crate::edit::EditPlan,
        hooks: &mut dyn SampleHooks,
    ) -> Result<Generated> {
        let mut s = self.start_edit(conds, opts, plan)?;
        while s.step(hooks).await?.is_some() {}
        Ok(s.finish())
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
            VaeParts::Full(m) => {
                to_rgb8(crate::kernels::on_pool(move || m.fhat_to_img(f_hat))).await
            }
            VaeParts::QuantizerOnly(_) => Err(Error::invalid(
                "this VQ-VAE file holds only the quantizer: images cannot be decoded",
            )),
        }
    }
}
