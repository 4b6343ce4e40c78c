//! Next-scale sampling with classifier-free guidance, exactly as the official
//! `autoregressive_infer_cfg`: the guidance weight ramps linearly from 0 at the first scale
//! to `cfg` at the last; top-k keeps ties at the threshold; top-p removes the ascending-sorted
//! entries whose cumulative probability is ≤ 1 − p (always keeping the largest); one token is
//! drawn per position; `more_smooth` replaces the lookup with a Gumbel-softmax mixture.
//!
//! Filtering and drawing run on the host in float64 with `libm`, from the counter-based RNG,
//! so a seed gives the same tokens natively and in the browser.

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::readback::read_f32;
use crate::rng::{CounterRng, stream_id};
use crate::var::{InferState, Var};
use crate::vqvae::VectorQuantizer;

/// Sampling settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SampleOptions {
    /// Guidance strength reached at the last scale (0 = no guidance).
    pub cfg: f32,
    /// Keep the `top_k` largest logits (0 = all; 1 = greedy).
    pub top_k: usize,
    /// Nucleus mass (0 = off).
    pub top_p: f32,
    pub seed: u64,
    /// Gumbel-softmax mixing of code vectors instead of a hard lookup.
    pub more_smooth: bool,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            cfg: 4.0,
            top_k: 900,
            top_p: 0.96,
            seed: 0,
            more_smooth: false,
        }
    }
}

impl SampleOptions {
    pub fn validate(&self) -> Result<()> {
        if !self.cfg.is_finite() || self.cfg < 0.0 {
            return Err(Error::invalid(format!(
                "cfg must be a finite number ≥ 0, got {}",
                self.cfg
            )));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(Error::invalid(format!(
                "topP must be in [0, 1], got {}",
                self.top_p
            )));
        }
        // top_k ≥ vocabulary keeps every token (the filter is then a no-op).
        Ok(())
    }
}

/// The sampling settings a model was tuned for, carried in its pack: the defaults of
/// `sample`, `generate()` and the demo page for that model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommended {
    pub cfg: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// A prompt that shows the model at its best (text models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A class that shows the model at its best (class models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
}

impl Recommended {
    pub fn validate(&self) -> Result<()> {
        self.options(0).validate()?;
        if let Some(p) = &self.prompt
            && (p.trim().is_empty() || p.len() > 1000)
        {
            return Err(Error::invalid(
                "the recommended prompt must be 1 to 1000 bytes of text",
            ));
        }
        Ok(())
    }

    /// These settings with a seed.
    pub fn options(&self, seed: u64) -> SampleOptions {
        SampleOptions {
            cfg: self.cfg,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
            more_smooth: false,
        }
    }
}

/// What a caller sees after each scale.
pub struct ScaleEvent<'a> {
    pub scale: usize,
    pub num_scales: usize,
    /// Side of this scale's token map.
    pub patch: usize,
    /// This scale's tokens, per image (row-major).
    pub tokens: &'a [Vec<u32>],
    /// The accumulated latent `[B, Cv, h, w]` (decode it for a preview).
    pub f_hat: &'a Tensor<4>,
}

/// Optional observers and overrides of a generation.
pub trait SampleHooks {
    /// The guided logits of a scale, `[B, n, V]` row-major, before filtering.
    fn logits(&mut self, _scale: usize, _logits: &[f32], _shape: [usize; 3]) {}
    /// Tokens to use at a scale instead of sampling (replaying a recorded run).
    fn forced_tokens(&mut self, _scale: usize) -> Option<Vec<Vec<u32>>> {
        None
    }
    /// Called after each scale; an error (e.g. [`Error::Cancelled`]) stops the generation.
    fn scale_done(&mut self, _event: &ScaleEvent<'_>) -> Result<()> {
        Ok(())
    }
}

/// No hooks.
pub struct NoHooks;
impl SampleHooks for NoHooks {}

/// Hooks from a per-scale closure (progress, previews, cancellation).
pub struct OnScale<F>(pub F);
impl<F: FnMut(&ScaleEvent<'_>) -> Result<()>> SampleHooks for OnScale<F> {
    fn scale_done(&mut self, e: &ScaleEvent<'_>) -> Result<()> {
        (self.0)(e)
    }
}

/// The result of a generation.
pub struct Generated {
    /// All tokens of each image, scales in order, row-major within a scale.
    pub tokens: Vec<Vec<u32>>,
    /// Final latent `[B, Cv, h, w]`, ready for the VQ-VAE decoder.
    pub f_hat: Tensor<4>,
}

impl Generated {
    /// The tokens as per-scale maps `[B, pn²]` (as `VqVae::img_to_idx` gives them), e.g. for
    /// `VectorQuantizer::idx_to_var_input` and a teacher-forced pass over the samples.
    pub fn scale_maps(
        &self,
        patch_nums: &crate::PatchNums,
        device: &burn::tensor::Device,
    ) -> Vec<Tensor<2, Int>> {
        let b = self.tokens.len();
        patch_nums
            .begin_ends()
            .into_iter()
            .map(|(begin, end)| {
                let flat: Vec<i64> = self
                    .tokens
                    .iter()
                    .flat_map(|t| t[begin..end].iter().map(|&x| x as i64))
                    .collect();
                Tensor::from_data(TensorData::new(flat, [b, end - begin]), device)
            })
            .collect()
    }
}

/// Generates token maps for `labels` (one image each; use the null class for unconditional).
pub async fn generate(
    var: &Var,
    quant: &VectorQuantizer,
    labels: &[usize],
    opts: &SampleOptions,
    hooks: &mut dyn SampleHooks,
) -> Result<Generated> {
    let cond = class_condition(var, labels)?;
    generate_with_condition(var, quant, cond, opts, hooks).await
}

/// The CFG condition rows for class ids: `class_emb[labels]` then `class_emb[null]` × B.
pub fn class_condition(var: &Var, labels: &[usize]) -> Result<Tensor<2>> {
    if labels.is_empty() {
        return Err(Error::invalid("no class labels given: nothing to generate"));
    }
    let device = var.class_emb.val().device();
    let cond = var.class_embedding(var.labels(labels, &device)?);
    let null = var.labels(&vec![var.null_class(); labels.len()], &device)?;
    Ok(Tensor::cat(vec![cond, var.class_embedding(null)], 0))
}

/// The CFG condition rows for text embeddings `[B, text_dim]`: `text_proj(emb)` then the
/// null condition × B.
pub fn text_condition(var: &Var, emb: Tensor<2>) -> Result<Tensor<2>> {
    let [b, _] = emb.dims();
    if b == 0 {
        return Err(Error::invalid("no prompts given: nothing to generate"));
    }
    let cond = var.text_condition(emb)?;
    Ok(Tensor::cat(vec![cond, var.null_condition(b)], 0))
}

/// Generation from explicit condition rows `[2B, C]`: the B conditional rows, then the B
/// unconditional ones (text conditioning and adapters build these).
pub async fn generate_with_condition(
    var: &Var,
    quant: &VectorQuantizer,
    cond: Tensor<2>,
    opts: &SampleOptions,
    hooks: &mut dyn SampleHooks,
) -> Result<Generated> {
    let mut s = Sampling::new(var, quant, cond, opts)?;
    while s.step(hooks).await?.is_some() {}
    Ok(s.finish())
}

/// A generation in progress, advanced one scale at a time with [`Sampling::step`], so a caller
/// can do its own (async) work between scales: previews, yielding, cancellation.
pub struct Sampling<'a> {
    var: &'a Var,
    quant: &'a VectorQuantizer,
    opts: SampleOptions,
    b: usize,
    vocab: usize,
    state: InferState,
    x: Tensor<3>,
    f_hat: Tensor<4>,
    tokens: Vec<Vec<u32>>,
    next_scale: usize,
    rng: CounterRng,
    edit: Option<crate::edit::EditPlan>,
}

impl<'a> Sampling<'a> {
    pub fn new(
        var: &'a Var,
        quant: &'a VectorQuantizer,
        cond: Tensor<2>,
        opts: &SampleOptions,
    ) -> Result<Self> {
        let vocab = var.vocab_size();
        opts.validate()?;
        let [rows, _] = cond.dims();
        if rows == 0 || rows % 2 != 0 {
            return Err(Error::invalid(
                "the condition needs B conditional and B unconditional rows",
            ));
        }
        let b = rows / 2;
        let device = cond.device();
        if var.patch_nums.as_slice() != quant.patch_nums.as_slice() {
            return Err(Error::config(format!(
                "the VAR patch list {:?} differs from the VQ-VAE's {:?}",
                var.patch_nums.0, quant.patch_nums
            )));
        }
        let latent = var.patch_nums.latent();
        let [v_codes, cv] = quant.embedding.val().dims();
        if v_codes != vocab {
            return Err(Error::config(format!(
                "the VAR vocabulary ({vocab}) differs from the VQ-VAE codebook ({v_codes})"
            )));
        }
        let (state, x) = var.begin(cond);
        Ok(Self {
            var,
            quant,
            opts: opts.clone(),
            b,
            vocab,
            state,
            x,
            f_hat: Tensor::zeros([b, cv, latent, latent], &device),
            tokens: vec![Vec::with_capacity(var.sequence_len()); b],
            next_scale: 0,
            rng: CounterRng::new(opts.seed),
            edit: None,
        })
    }

    /// Turns this generation into an edit: at every scale the plan's source tokens replace the
    /// sampled ones where its mask keeps them, before f̂ and the next scale see them (the
    /// official zero-shot editing; see [`crate::edit`]).
    pub fn with_edit(mut self, plan: crate::edit::EditPlan) -> Result<Self> {
        if self.next_scale != 0 {
            return Err(Error::invalid("an edit must be set before the first scale"));
        }
        plan.validate(self.var.patch_nums.as_slice(), self.vocab, self.b)?;
        self.edit = Some(plan);
        Ok(self)
    }

    pub fn num_scales(&self) -> usize {
        self.var.patch_nums.num_scales()
    }
    /// Index of the scale the next [`Sampling::step`] computes.
    pub fn next_scale(&self) -> usize {
        self.next_scale
    }
    /// The latent accumulated so far `[B, Cv, h, w]`.
    pub fn f_hat(&self) -> &Tensor<4> {
        &self.f_hat
    }

    /// Computes the next scale. Returns its index, or `None` when all scales are done.
    pub async fn step(&mut self, hooks: &mut dyn SampleHooks) -> Result<Option<usize>> {
        let si = self.next_scale;
        let num_scales = self.num_scales();
        if si >= num_scales {
            return Ok(None);
        }
        let (b, vocab) = (self.b, self.vocab);
        let pn = self.var.patch_nums.as_slice()[si];
        let n = pn * pn;
        let device = self.f_hat.device();
        let ratio = if num_scales > 1 {
            si as f64 / (num_scales - 1) as f64
        } else {
            0.0
        };
        let t = self.opts.cfg as f64 * ratio;
        let (var, state, x) = (self.var, &mut self.state, self.x.clone());
        let guided = crate::kernels::on_pool(move || {
            let logits = var.step(state, x); // [2B, n, V]
            logits.clone().slice([0..b, 0..n, 0..vocab]) * (1.0 + t)
                - logits.slice([b..2 * b, 0..n, 0..vocab]) * t
        });
        let mut host = read_f32(guided).await?;
        hooks.logits(si, &host, [b, n, vocab]);

        let scale_tokens = match hooks.forced_tokens(si) {
            Some(forced) => {
                if forced.len() != b
                    || forced
                        .iter()
                        .any(|r| r.len() != n || r.iter().any(|&t| t as usize >= vocab))
                {
                    return Err(Error::invalid(format!(
                        "forced tokens for scale {si} have the wrong shape or range"
                    )));
                }
                forced
            }
            None => {
                // Row r = bi·n + ti draws with the r-th number of this scale's stream, so the
                // rows are independent and split over threads (filtered in place: the smooth
                // mixture below reads them).
                let stream = stream_id("token", si as u64, 0);
                let (top_k, top_p, rng) = (self.opts.top_k, self.opts.top_p, &self.rng);
                let rows = &mut host;
                let drawn: Vec<u32> = crate::kernels::on_pool(move || {
                    use rayon::prelude::*;
                    rows.par_chunks_mut(vocab)
                        .with_min_len(8)
                        .enumerate()
                        .map(|(r, row)| {
                            filter_top_k_top_p(row, top_k, top_p);
                            draw(row, rng.uniform(stream, r as u64)) as u32
                        })
                        .collect()
                });
                drawn.chunks(n).map(<[u32]>::to_vec).collect()
            }
        };

        let codebook = self.quant.embedding.val();
        let cv = codebook.dims()[1];
        let h = if self.opts.more_smooth {
            // Soft code mixture from the filtered (in place) logits.
            let tau = (0.27 * (1.0 - 0.95 * ratio)).max(0.005);
            let gstream = stream_id("gumbel", si as u64, 0);
            let mut w = vec![0f32; b * n * vocab];
            for r in 0..b * n {
                let row = &host[r * vocab..(r + 1) * vocab];
                let mut z: Vec<f64> = row
                    .iter()
                    .enumerate()
                    .map(|(v, &l)| {
                        (l as f64 * (1.0 + ratio)
                            + self.rng.gumbel(gstream, (r * vocab + v) as u64))
                            / tau
                    })
                    .collect();
                softmax_in_place(&mut z);
                for (dst, p) in w[r * vocab..(r + 1) * vocab].iter_mut().zip(z) {
                    *dst = p as f32;
                }
            }
            let w: Tensor<2> = Tensor::from_data(TensorData::new(w, [b * n, vocab]), &device);
            w.matmul(codebook)
                .reshape([b, n, cv])
                .swap_dims(1, 2)
                .reshape([b, cv, pn, pn])
        } else {
            let flat: Vec<i64> = scale_tokens.iter().flatten().map(|&t| t as i64).collect();
            let idx: Tensor<2, Int> = Tensor::from_data(TensorData::new(flat, [b, n]), &device);
            self.quant.lookup(idx, pn)
        };
        let (h, scale_tokens) = match &self.edit {
            Some(e) if e.keep[si].iter().any(|&k| k) => {
                let keep = &e.keep[si];
                let src = &e.source[si];
                let mixed: Vec<Vec<u32>> = scale_tokens
                    .iter()
                    .zip(src)
                    .map(|(s, g)| {
                        s.iter()
                            .zip(g)
                            .zip(keep)
                            .map(|((&t, &g), &k)| if k { g } else { t })
                            .collect()
                    })
                    .collect();
                let flat: Vec<i64> = src.iter().flatten().map(|&t| t as i64).collect();
                let idx: Tensor<2, Int> = Tensor::from_data(TensorData::new(flat, [b, n]), &device);
                let gt = self.quant.lookup(idx, pn);
                let m: Vec<f32> = (0..b * cv)
                    .flat_map(|_| keep.iter().map(|&k| if k { 1.0 } else { 0.0 }))
                    .collect();
                let m: Tensor<4> = Tensor::from_data(TensorData::new(m, [b, cv, pn, pn]), &device);
                (gt * m.clone() + h * (m.neg() + 1.0), mixed)
            }
            _ => (h, scale_tokens),
        };
        let (quant, f_hat) = (self.quant, self.f_hat.clone());
        self.f_hat = crate::kernels::on_pool(move || quant.accumulate(si, f_hat, h));
        for (all, s) in self.tokens.iter_mut().zip(&scale_tokens) {
            all.extend_from_slice(s);
        }
        hooks.scale_done(&ScaleEvent {
            scale: si,
            num_scales,
            patch: pn,
            tokens: &scale_tokens,
            f_hat: &self.f_hat,
        })?;
        if si + 1 < num_scales {
            let (var, quant, state, f_hat) =
                (self.var, self.quant, &self.state, self.f_hat.clone());
            self.x = crate::kernels::on_pool(move || {
                var.embed_scale(state, si + 1, quant.next_input(si, f_hat), 2)
            });
        }
        self.next_scale += 1;
        Ok(Some(si))
    }

    /// The tokens and final latent (call after the last step).
    pub fn finish(self) -> Generated {
        Generated {
            tokens: self.tokens,
            f_hat: self.f_hat,
        }
    }
}

/// Top-k then top-p filtering of one row of logits, in place (removed entries become −∞).
pub fn filter_top_k_top_p(row: &mut [f32], top_k: usize, top_p: f32) {
    let v = row.len();
    if top_k > 0 && top_k < v {
        let mut tmp: Vec<f32> = row.to_vec();
        let (_, kth, _) = tmp.select_nth_unstable_by(top_k - 1, |a, b| b.total_cmp(a));
        let kth = *kth;
        for x in row.iter_mut() {
            if *x < kth {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    if top_p > 0.0 {
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
        let max = row[order[v - 1]] as f64;
        let exps: Vec<f64> = order
            .iter()
            .map(|&i| libm::exp(row[i] as f64 - max))
            .collect();
        let total: f64 = exps.iter().sum();
        let cut = 1.0 - top_p as f64;
        let mut cum = 0.0;
        for (rank, &i) in order.iter().enumerate().take(v - 1) {
            cum += exps[rank] / total;
            if cum <= cut {
                row[i] = f32::NEG_INFINITY;
            } else {
                break;
            }
        }
    }
}

/// Draws an index from `softmax(row)` with the uniform number `u` in `[0, 1)`.
pub fn draw(row: &[f32], u: f64) -> usize {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = row
        .iter()
        .map(|&x| {
            if x == f32::NEG_INFINITY {
                0.0
            } else {
                libm::exp(x as f64 - max)
            }
        })
        .collect();
    let total: f64 = exps.iter().sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last = 0;
    for (i, &e) in exps.iter().enumerate() {
        if e > 0.0 {
            cum += e;
            last = i;
            if target < cum {
                return i;
            }
        }
    }
    last
}

fn softmax_in_place(z: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for x in z.iter_mut() {
        *x = if *x == f64::NEG_INFINITY {
            0.0
        } else {
            libm::exp(*x - max)
        };
        total += *x;
    }
    for x in z.iter_mut() {
        *x /= total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_ties_at_threshold() {
        let mut r = vec![1.0, 3.0, 2.0, 2.0, 0.5];
        filter_top_k_top_p(&mut r, 2, 0.0);
        // 2nd largest is 2.0: both 2.0 survive.
        assert_eq!(r.iter().filter(|x| x.is_finite()).count(), 3);
        assert!(r[0].is_infinite() && r[4].is_infinite());
    }

    #[test]
    fn top_p_always_keeps_the_max() {
        let mut r = vec![10.0, 0.0, 0.0];
        filter_top_k_top_p(&mut r, 0, 0.01);
        assert!(r[0].is_finite());
        assert!(r[1].is_infinite() && r[2].is_infinite());
        let mut r = vec![1.0, 1.0, 1.0, 1.0];
        // cumsum 0.25, 0.5, 0.75 ≤ 1 − 0.5 removes the first two in ascending order.
        filter_top_k_top_p(&mut r, 0, 0.5);
        assert_eq!(r.iter().filter(|x| x.is_finite()).count(), 2);
    }

    #[test]
    fn greedy_draw_ignores_u() {
        let mut r = vec![0.1, 5.0, 0.3];
        filter_top_k_top_p(&mut r, 1, 0.96);
        for u in [0.0, 0.5, 0.999_999] {
            assert_eq!(draw(&r, u), 1);
        }
    }

    #[test]
    fn draw_follows_probabilities() {
        let r = vec![0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        assert_eq!(draw(&r, 0.2), 0);
        assert_eq!(draw(&r, 0.3), 1);
    }
}
