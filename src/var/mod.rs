//! The VAR transformer: embeddings, AdaLN blocks, head; teacher-forced forward with the
//! block-causal mask and KV-cached next-scale inference steps.

pub mod adapter;
pub mod attention;
pub mod block;
pub mod head;
pub mod lora;

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::checkpoint::Checkpoint;
use crate::config::{PatchNums, VarConfig};
use crate::error::{Error, Result};
use crate::nn::{Linear, tensor};
use crate::params::{Init, ParamSource, Scope};

/// What [`Var::forward_teacher_traced`] calls the residual stream between blocks.
pub const RESIDUAL: &str = "residual";

pub use attention::KvCache;
pub use block::{AdaLnSelfAttn, Modulation};
pub use head::AdaLnBeforeHead;

#[derive(Module, Debug)]
pub struct Var {
    pub word_embed: Linear,
    /// `[num_classes + 1, C]`; the last row is the null class.
    pub class_emb: Param<Tensor<2>>,
    pub pos_start: Param<Tensor<3>>,
    /// `pos_1LC`, `[1, L, C]`.
    pub pos_1lc: Param<Tensor<3>>,
    /// `[num_scales, C]`.
    pub lvl_embed: Param<Tensor<2>>,
    pub blocks: Vec<AdaLnSelfAttn>,
    pub head_nm: AdaLnBeforeHead,
    pub head: Linear,
    /// Text-conditioned models: text embedding → condition (`text_proj`).
    pub text_proj: Option<Linear>,
    pub num_classes: usize,
    #[module(skip)]
    pub patch_nums: PatchNums,
}

/// Per-generation state of KV-cached inference: the caches and the cached modulations.
pub struct InferState {
    pub caches: Vec<KvCache>,
    mods: Vec<Modulation>,
    head_mod: (Tensor<3>, Tensor<3>),
    /// `lvl_embed[scale] + pos_1LC`, `[1, L, C]`.
    lvl_pos: Tensor<3>,
}

impl Var {
    pub fn load(src: &mut dyn ParamSource, cfg: &VarConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let c = cfg.embed_dim;
        let l = cfg.patch_nums.total_tokens();
        let n_scales = cfg.patch_nums.num_scales();
        let init_std = cfg.init_std();
        let tn = Init::TruncNormal(init_std);
        let mut s = Scope::new(src, device);
        let pos_start = s.param("pos_start", [1, 1, c], tn)?;
        let pos_1lc = s.param("pos_1LC", [1, l, c], tn)?;
        s.skip_buffer("lvl_1L", &[1, l])?;
        s.skip_buffer("attn_bias_for_masking", &[1, 1, l, l])?;
        let word_embed = Linear::load(&mut s.pp("word_embed"), cfg.cvae, c, true, tn)?;
        let class_emb = s.param("class_emb.weight", [cfg.num_classes + 1, c], tn)?;
        let lvl_embed = s.param("lvl_embed.weight", [n_scales, c], tn)?;
        let blocks = (0..cfg.depth)
            .map(|i| AdaLnSelfAttn::load(&mut s.pp(format!("blocks.{i}")), cfg))
            .collect::<Result<_>>()?;
        let head_nm = AdaLnBeforeHead::load(&mut s.pp("head_nm"), c, cfg.norm_eps, init_std)?;
        let head = Linear::load(&mut s.pp("head"), c, cfg.vocab_size, true, tn)?;
        let text_proj = if cfg.text_dim > 0 {
            Some(Linear::load(
                &mut s.pp("text_proj"),
                cfg.text_dim,
                c,
                true,
                tn,
            )?)
        } else {
            None
        };
        Ok(Self {
            word_embed,
            class_emb,
            pos_start,
            pos_1lc,
            lvl_embed,
            blocks,
            head_nm,
            head,
            text_proj,
            num_classes: cfg.num_classes,
            patch_nums: cfg.patch_nums.clone(),
        })
    }

    /// Loads a VAR state dict strictly; the configuration is read from the shapes unless given.
    pub fn from_checkpoint(
        ck: Checkpoint,
        cfg: Option<VarConfig>,
        device: &Device,
    ) -> Result<(Self, VarConfig)> {
        ck.load_strict(
            cfg,
            |ck| infer_config(ck, None),
            |ck, c| Self::load(ck, c, device),
        )
    }

    /// The official state dict: every parameter plus the buffers (see [`buffers`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_dict(&self) -> Result<Vec<crate::state_dict::Entry>> {
        let mut out = crate::state_dict::parameters(self)?;
        out.extend(buffers(
            &self.patch_nums,
            self.blocks.len(),
            self.embed_dim(),
        ));
        Ok(out)
    }

    pub fn embed_dim(&self) -> usize {
        self.pos_start.val().dims()[2]
    }
    pub fn vocab_size(&self) -> usize {
        self.head.d_out()
    }
    pub fn null_class(&self) -> usize {
        self.num_classes
    }
    /// Scale index of every token of the sequence.
    fn token_levels(&self) -> Vec<usize> {
        self.patch_nums.token_levels()
    }

    /// Checks class ids (the null class included) and uploads them.
    pub fn labels(&self, labels: &[usize], device: &Device) -> Result<Tensor<1, Int>> {
        if let Some(&bad) = labels.iter().find(|&&l| l > self.num_classes) {
            if self.num_classes == 0 {
                return Err(Error::invalid(format!(
                    "class {bad} given, but this model is text-conditioned: give a prompt"
                )));
            }
            return Err(Error::invalid(format!(
                "class {bad} is out of range: this model has classes 0..{} ({} = unconditional)",
                self.num_classes - 1,
                self.num_classes
            )));
        }
        let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        Ok(Tensor::from_data(
            TensorData::new(v, [labels.len()]),
            device,
        ))
    }

    /// Width of the text embeddings this model takes (0: class-conditional only).
    pub fn text_dim(&self) -> usize {
        self.text_proj.as_ref().map(|p| p.d_in()).unwrap_or(0)
    }

    /// The condition for text embeddings `[B, text_dim]`: `text_proj(emb)`, `[B, C]`.
    pub fn text_condition(&self, emb: Tensor<2>) -> Result<Tensor<2>> {
        let Some(p) = &self.text_proj else {
            return Err(Error::invalid(
                "this model is class-conditional: it takes class ids, not prompts",
            ));
        };
        let [_, d] = emb.dims();
        if d != self.text_dim() {
            return Err(Error::invalid(format!(
                "text embeddings of width {d} given; this model takes {}",
                self.text_dim()
            )));
        }
        Ok(p.forward(emb))
    }

    /// The null (unconditional) condition repeated `b` times, `[b, C]`.
    pub fn null_condition(&self, b: usize) -> Tensor<2> {
        let c = self.embed_dim();
        self.class_emb
            .val()
            .slice([self.num_classes..self.num_classes + 1, 0..c])
            .repeat_dim(0, b)
    }

    /// `class_emb[labels]`, `[B, C]`.
    pub fn class_embedding(&self, labels: Tensor<1, Int>) -> Tensor<2> {
        self.class_emb.val().select(0, labels)
    }

    fn lvl_pos(&self, device: &Device) -> Tensor<3> {
        let lv: Vec<i64> = self.token_levels().into_iter().map(|l| l as i64).collect();
        let l = lv.len();
        let idx: Tensor<1, Int> = Tensor::from_data(TensorData::new(lv, [l]), device);
        self.lvl_embed.val().select(0, idx).unsqueeze_dim::<3>(0) + self.pos_1lc.val()
    }

    /// The additive block-causal mask `[1, 1, L, L]`: 0 where `lvl(key) ≤ lvl(query)`, −∞ elsewhere.
    pub fn block_causal_bias(&self, device: &Device) -> Tensor<4> {
        let l = self.sequence_len();
        tensor(self.patch_nums.block_causal_mask(), [1, 1, l, l], device)
    }

    /// Teacher-forced forward: `labels` `[B]`, `x_wo_first` `[B, L−1, Cv]` → logits `[B, L, V]`.
    /// With `hidden`, the residual stream before block 0 and after every block is pushed to it.
    pub fn forward_teacher(
        &self,
        labels: Tensor<1, Int>,
        x_wo_first: Tensor<3>,
        hidden: Option<&mut Vec<Tensor<3>>>,
    ) -> Tensor<3> {
        self.forward_teacher_cond(self.class_embedding(labels), x_wo_first, hidden)
    }

    /// Teacher-forced forward from explicit condition rows `cond` `[B, C]` (text, adapters).
    pub fn forward_teacher_cond(
        &self,
        cond: Tensor<2>,
        x_wo_first: Tensor<3>,
        mut hidden: Option<&mut Vec<Tensor<3>>>,
    ) -> Tensor<3> {
        self.forward_teacher_traced(cond, x_wo_first, &mut |name, x| {
            if let (RESIDUAL, Some(h)) = (name, hidden.as_deref_mut()) {
                h.push(x.clone());
            }
        })
    }

    /// [`Self::forward_teacher_cond`], showing `trace` the residual stream before block 0 and
    /// after every block (named [`RESIDUAL`]), and the input of every linear layer after the
    /// embedding under the layer's state-dict name: `blocks.{i}.attn.mat_qkv`, `….attn.proj`,
    /// `….ffn.fc1`, `….ffn.fc2`, `head`, and `[B, 1, C]` for the modulations
    /// `blocks.{i}.ada_lin.1` and `head_nm.ada_lin.1`, which see only the condition.
    pub fn forward_teacher_traced(
        &self,
        cond: Tensor<2>,
        x_wo_first: Tensor<3>,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let device = x_wo_first.device();
        let sos = cond.clone().unsqueeze_dim::<3>(1) + self.pos_start.val();
        let x = Tensor::cat(vec![sos, self.word_embed.forward(x_wo_first)], 1);
        let mut x = x + self.lvl_pos(&device);
        trace(RESIDUAL, &x);
        let bias = self.block_causal_bias(&device);
        let ada_in = crate::nn::silu(cond.clone()).unsqueeze_dim::<3>(1);
        for (i, block) in self.blocks.iter().enumerate() {
            trace(&format!("blocks.{i}.ada_lin.1"), &ada_in);
            let m = block.modulation(cond.clone());
            x = block.forward_traced(x, &m, Some(bias.clone()), None, &mut |n, t| {
                trace(&format!("blocks.{i}.{n}"), t)
            });
            trace(RESIDUAL, &x);
        }
        trace("head_nm.ada_lin.1", &ada_in);
        self.logits(x, &self.head_nm.modulation(cond), trace)
    }

    /// The head on the last block's output, showing `trace` its input (`head`).
    fn logits(
        &self,
        x: Tensor<3>,
        m: &(Tensor<3>, Tensor<3>),
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let h = self.head_nm.forward(x, m.0.clone(), m.1.clone());
        trace("head", &h);
        self.head.forward(h)
    }

    /// Starts KV-cached inference for the condition rows `cond` `[N, C]` (for CFG: the
    /// conditional rows then the unconditional ones). Returns the state and the first
    /// token map `[N, 1, C]`.
    pub fn begin(&self, cond: Tensor<2>) -> (InferState, Tensor<3>) {
        let device = cond.device();
        let lvl_pos = self.lvl_pos(&device);
        let c = self.embed_dim();
        let first = cond.clone().unsqueeze_dim::<3>(1)
            + self.pos_start.val()
            + lvl_pos.clone().slice([0..1, 0..1, 0..c]);
        let state = InferState {
            caches: vec![KvCache::default(); self.blocks.len()],
            mods: self
                .blocks
                .iter()
                .map(|b| b.modulation(cond.clone()))
                .collect(),
            head_mod: self.head_nm.modulation(cond),
            lvl_pos,
        };
        (state, first)
    }

    /// Runs one scale through all blocks with the cache: `x` `[N, n, C]` → logits `[N, n, V]`.
    pub fn step(&self, state: &mut InferState, x: Tensor<3>) -> Tensor<3> {
        let mut x = x;
        for ((block, m), cache) in self
            .blocks
            .iter()
            .zip(&state.mods)
            .zip(state.caches.iter_mut())
        {
            x = block.forward(x, m, None, Some(cache));
        }
        self.logits(x, &state.head_mod, &mut |_, _| {})
    }

    /// Embeds the next scale's input `next` `[B, n, Cv]` (scale `si`) and duplicates it
    /// `copies` times along the batch (2 for CFG).
    pub fn embed_scale(
        &self,
        state: &InferState,
        si: usize,
        next: Tensor<3>,
        copies: usize,
    ) -> Tensor<3> {
        let (begin, end) = self.patch_nums.begin_ends()[si];
        let n = end - begin;
        let c = self.embed_dim();
        let x = self.word_embed.forward(next)
            + state.lvl_pos.clone().slice([0..1, begin..begin + n, 0..c]);
        if copies == 1 {
            x
        } else {
            Tensor::cat(vec![x; copies], 0)
        }
    }

    /// Number of tokens over all scales.
    pub fn sequence_len(&self) -> usize {
        self.patch_nums.total_tokens()
    }
}

/// Reads the VAR configuration off the shapes of a state dict (any depth).
pub fn infer_config(ck: &Checkpoint, patch_nums: Option<PatchNums>) -> Result<VarConfig> {
    let need = |k: &str, rank: usize| -> Result<Vec<usize>> {
        ck.dims(k, rank)?
            .map(<[usize]>::to_vec)
            .ok_or_else(|| Error::Format {
                format: "VAR checkpoint",
                reason: format!("cannot infer the configuration: no tensor `{k}`"),
            })
    };
    let we = need("word_embed.weight", 2)?;
    let (c, cvae) = (we[0], we[1]);
    let classes = need("class_emb.weight", 2)?[0];
    let text_dim = ck.dims("text_proj.weight", 2)?.map(|s| s[1]).unwrap_or(0);
    if classes < 2 && text_dim == 0 {
        return Err(Error::config("class_emb has fewer than 2 rows"));
    }
    let vocab = need("head.weight", 2)?[0];
    let mut depth = 0;
    while ck.contains(&format!("blocks.{depth}.attn.mat_qkv.weight")) {
        depth += 1;
    }
    if depth == 0 {
        return Err(Error::Format {
            format: "VAR checkpoint",
            reason: "no transformer blocks (`blocks.0.attn.mat_qkv.weight`)".into(),
        });
    }
    let heads = need("blocks.0.attn.scale_mul_1H11", 4)?[1];
    let hidden = need("blocks.0.ffn.fc1.weight", 2)?[0];
    let total = need("pos_1LC", 3)?[1];
    let scales = need("lvl_embed.weight", 2)?[0];
    let patch_nums = match patch_nums.or(ck.recorded_patch_nums()?) {
        Some(p) => p,
        None => PatchNums::infer_from_total(total).ok_or_else(|| {
            Error::config(format!(
                "cannot infer the patch list from {total} tokens; give it explicitly"
            ))
        })?,
    };
    if patch_nums.num_scales() != scales || patch_nums.total_tokens() != total {
        return Err(Error::config(format!(
            "patch list {:?} ({} scales, {} tokens) does not fit the checkpoint ({scales} scales, {total} tokens)",
            patch_nums.0,
            patch_nums.num_scales(),
            patch_nums.total_tokens()
        )));
    }
    let cfg = VarConfig {
        depth,
        embed_dim: c,
        num_heads: heads,
        mlp_ratio: hidden as f64 / c as f64,
        vocab_size: vocab,
        cvae,
        num_classes: classes - 1,
        norm_eps: 1e-6,
        patch_nums,
        text_dim,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The official VAR's buffers, which the model recomputes and its state dicts carry:
/// `lvl_1L` (int64, the scale of every token), `attn_bias_for_masking` (the block-causal mask)
/// and `blocks.*.attn.zero_k_bias` (zeros).
pub fn buffers(
    patch_nums: &PatchNums,
    depth: usize,
    embed_dim: usize,
) -> Vec<crate::state_dict::Entry> {
    use crate::state_dict::{Entry, Values};
    let lv = patch_nums.token_levels();
    let l = lv.len();
    let mut out = vec![
        Entry {
            name: "lvl_1L".into(),
            shape: vec![1, l],
            values: Values::I64(lv.iter().map(|&v| v as i64).collect()),
        },
        Entry::f32(
            "attn_bias_for_masking",
            vec![1, 1, l, l],
            patch_nums.block_causal_mask(),
        ),
    ];
    out.extend((0..depth).map(|i| {
        Entry::f32(
            format!("blocks.{i}.attn.zero_k_bias"),
            vec![embed_dim],
            vec![0.0; embed_dim],
        )
    }));
    out
}
