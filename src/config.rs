//! Model configurations: plain structs with named presets.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The side lengths of the token maps, coarse to fine. The last one is the latent size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchNums(pub Vec<usize>);

impl PatchNums {
    /// The 256 px list of the official models: 10 scales, 680 tokens, latent 16×16.
    pub fn p256() -> Self {
        Self(vec![1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    }
    /// The official 512 px list.
    pub fn p512() -> Self {
        Self(vec![1, 2, 3, 4, 6, 9, 13, 18, 24, 32])
    }
    /// The official 1024 px list.
    pub fn p1024() -> Self {
        Self(vec![1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64])
    }

    pub fn new(list: Vec<usize>) -> Result<Self> {
        let p = Self(list);
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<()> {
        if self.0.is_empty() {
            return Err(Error::config("patch_nums is empty"));
        }
        if self.0.contains(&0) {
            return Err(Error::config("patch_nums contains 0"));
        }
        if self.0.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::config(format!(
                "patch_nums must not decrease: {:?}",
                self.0
            )));
        }
        if self.0[0] != 1 {
            return Err(Error::config(format!(
                "the first scale must be 1×1 (the start token), got {}",
                self.0[0]
            )));
        }
        if self.0.len() > MAX_SCALES || self.0.iter().any(|&p| p > MAX_PATCH) {
            return Err(Error::config(format!(
                "patch_nums {:?}: at most {MAX_SCALES} scales of at most {MAX_PATCH}×{MAX_PATCH} tokens are supported",
                self.0
            )));
        }
        let total: usize = self.0.iter().map(|p| p * p).sum();
        if total > MAX_TOKENS {
            return Err(Error::config(format!(
                "patch_nums {:?} make {total} tokens per image, more than the limit of {MAX_TOKENS}",
                self.0
            )));
        }
        Ok(())
    }

    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }
    pub fn num_scales(&self) -> usize {
        self.0.len()
    }
    /// Side length of the finest map (the VQ-VAE latent).
    pub fn latent(&self) -> usize {
        *self.0.last().expect("validated non-empty")
    }
    /// Total number of tokens over all scales.
    pub fn total_tokens(&self) -> usize {
        self.0.iter().map(|p| p * p).sum()
    }
    /// `[begin, end)` of each scale in the flattened token sequence.
    pub fn begin_ends(&self) -> Vec<(usize, usize)> {
        let mut cur = 0;
        self.0
            .iter()
            .map(|p| {
                let b = cur;
                cur += p * p;
                (b, cur)
            })
            .collect()
    }
    /// Scale index of every token.
    pub fn token_levels(&self) -> Vec<usize> {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(si, p)| std::iter::repeat_n(si, p * p))
            .collect()
    }
    /// The additive block-causal mask `[L × L]`, row-major: 0 where `lvl(key) ≤ lvl(query)`,
    /// −∞ elsewhere (the official `attn_bias_for_masking`).
    pub fn block_causal_mask(&self) -> Vec<f32> {
        let lv = self.token_levels();
        let l = lv.len();
        let mut m = vec![0f32; l * l];
        for i in 0..l {
            for j in 0..l {
                if lv[j] > lv[i] {
                    m[i * l + j] = f32::NEG_INFINITY;
                }
            }
        }
        m
    }

    /// Finds the list whose token count is `total`: the 256/512/1024 lists, or a prefix
    /// of the 256 px list (small models). Used when a checkpoint carries no config.
    pub fn infer_from_total(total: usize) -> Option<Self> {
        for p in [Self::p256(), Self::p512(), Self::p1024()] {
            if p.total_tokens() == total {
                return Some(p);
            }
        }
        let full = Self::p256();
        (1..full.0.len())
            .map(|n| Self(full.0[..n].to_vec()))
            .find(|p| p.total_tokens() == total)
    }
}

/// Configuration of the multi-scale VQ-VAE (`vae_ch160v4096z32` by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqVaeConfig {
    pub vocab_size: usize,
    pub z_channels: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub in_channels: usize,
    /// Self-attention at the lowest resolution level (encoder and decoder).
    pub using_sa: bool,
    /// Self-attention in the mid blocks.
    pub using_mid_sa: bool,
    /// Number of shared Phi convs (`share_quant_resi`).
    pub share_quant_resi: usize,
    /// Mixing ratio of the Phi convs: `phi(h) = (1 - r) h + r conv(h)`.
    pub quant_resi: f32,
    pub beta: f32,
    pub patch_nums: PatchNums,
}

/// Most scales a model may have.
pub const MAX_SCALES: usize = 32;
/// Largest side of a scale's token map (the official 512-px model uses 32).
pub const MAX_PATCH: usize = 128;
/// Most tokens per image over all scales (the official 512-px model has 2,240). The
/// block-causal mask of training is `L²` values, 256 MiB at this limit.
pub const MAX_TOKENS: usize = 8192;
/// Upper bounds on the other configuration fields, far above any real model, so that a
/// corrupt or hostile file is refused before it asks for absurd allocations.
pub const MAX_WIDTH: usize = 16_384;
pub const MAX_DEPTH: usize = 256;
pub const MAX_VOCAB: usize = 1 << 20;
pub const MAX_CLASSES: usize = 1 << 20;

/// Fails unless a VAR and a VQ-VAE can run together (same codebook size, latent width and
/// scales): the check every loader shares.
pub fn check_pair(var: &VarConfig, vae: &VqVaeConfig) -> Result<()> {
    if vae.vocab_size != var.vocab_size || vae.z_channels != var.cvae {
        return Err(Error::config(format!(
            "VAR (vocabulary {}, latent width {}) and VQ-VAE (vocabulary {}, latent width {}) do not match",
            var.vocab_size, var.cvae, vae.vocab_size, vae.z_channels
        )));
    }
    if vae.patch_nums != var.patch_nums {
        return Err(Error::config(format!(
            "the VAR's scales {:?} differ from the VQ-VAE's {:?}",
            var.patch_nums.0, vae.patch_nums.0
        )));
    }
    Ok(())
}

impl VqVaeConfig {
    /// The official 256 px VQ-VAE used by VAR d16–d30.
    pub fn vae_ch160v4096z32() -> Self {
        Self {
            vocab_size: 4096,
            z_channels: 32,
            ch: 160,
            ch_mult: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            in_channels: 3,
            using_sa: true,
            using_mid_sa: true,
            share_quant_resi: 4,
            quant_resi: 0.5,
            beta: 0.25,
            patch_nums: PatchNums::p256(),
        }
    }

    /// Downsampling factor from image to latent.
    pub fn downsample(&self) -> usize {
        1 << (self.ch_mult.len() - 1)
    }
    /// Image side length implied by the patch list.
    pub fn image_size(&self) -> usize {
        self.patch_nums.latent() * self.downsample()
    }

    pub fn validate(&self) -> Result<()> {
        self.patch_nums.validate()?;
        if self.ch_mult.is_empty() {
            return Err(Error::config("ch_mult is empty"));
        }
        if !self.ch.is_multiple_of(32) || self.ch_mult.contains(&0) {
            return Err(Error::config(
                "VQ-VAE channels must be multiples of 32 (GroupNorm with 32 groups)",
            ));
        }
        if self.vocab_size == 0 || self.z_channels == 0 || self.share_quant_resi == 0 {
            return Err(Error::config(
                "vocab_size, z_channels and share_quant_resi must be positive (share_quant_resi = 0 is not supported)",
            ));
        }
        if self.ch > MAX_WIDTH
            || self.ch_mult.len() > 8
            || self.ch_mult.iter().any(|&m| m > 16)
            || self.num_res_blocks > 16
            || self.z_channels > MAX_WIDTH
            || self.vocab_size > MAX_VOCAB
            || self.share_quant_resi > 64
            || self.in_channels != 3
        {
            return Err(Error::config(format!(
                "VQ-VAE configuration out of range (ch {} ≤ {MAX_WIDTH}, at most 8 levels of multipliers ≤ 16, \
                 num_res_blocks ≤ 16, z_channels ≤ {MAX_WIDTH}, vocabulary ≤ {MAX_VOCAB}, share_quant_resi ≤ 64, 3 input channels)",
                self.ch
            )));
        }
        if self.image_size() > 4096 {
            return Err(Error::config(format!(
                "a {}-px VQ-VAE is larger than the supported 4096 px",
                self.image_size()
            )));
        }
        if !self.quant_resi.is_finite() || !self.beta.is_finite() {
            return Err(Error::config("quant_resi and beta must be finite"));
        }
        Ok(())
    }

    /// Which Phi conv each scale uses, following the official float64 rule
    /// (`argmin |linspace(1/3K, 1-1/3K, K) - si/(S-1)|`, first minimum wins).
    pub fn phi_table(&self) -> Vec<usize> {
        phi_table(self.share_quant_resi, self.patch_nums.num_scales())
    }
}

/// Phi index per scale for `k` shared convs and `s` scales, with numpy's float64 arithmetic.
pub fn phi_table(k: usize, s: usize) -> Vec<usize> {
    if k == 1 {
        return vec![0; s];
    }
    // numpy.linspace(start, stop, k): start + i*step, last element forced to stop.
    let start = 1.0 / 3.0 / k as f64;
    let stop = 1.0 - 1.0 / 3.0 / k as f64;
    let step = (stop - start) / (k - 1) as f64;
    let ticks: Vec<f64> = (0..k)
        .map(|i| {
            if i == k - 1 {
                stop
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    (0..s)
        .map(|si| {
            let at = if s > 1 {
                si as f64 / (s - 1) as f64
            } else {
                0.0
            };
            let mut best = 0;
            for i in 1..k {
                if (ticks[i] - at).abs() < (ticks[best] - at).abs() {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// Configuration of the VAR transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VarConfig {
    pub depth: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub vocab_size: usize,
    /// Width of the VQ-VAE latent (`Cvae`).
    pub cvae: usize,
    /// Number of real classes; row `num_classes` of the class table is the null class.
    /// A text-conditioned model may have none (its class table is the null row only).
    pub num_classes: usize,
    pub norm_eps: f64,
    pub patch_nums: PatchNums,
    /// Width of the text embedding that `text_proj` maps to the condition (0: no text input).
    #[serde(default)]
    pub text_dim: usize,
}

impl VarConfig {
    /// The official family: `heads = depth`, `C = 64·depth`, 1000 classes, 256 px.
    pub fn for_depth(depth: usize) -> Self {
        Self {
            depth,
            embed_dim: depth * 64,
            num_heads: depth,
            mlp_ratio: 4.0,
            vocab_size: 4096,
            cvae: 32,
            num_classes: 1000,
            norm_eps: 1e-6,
            patch_nums: PatchNums::p256(),
            text_dim: 0,
        }
    }
    pub fn d16() -> Self {
        Self::for_depth(16)
    }
    pub fn d20() -> Self {
        Self::for_depth(20)
    }
    pub fn d24() -> Self {
        Self::for_depth(24)
    }
    pub fn d30() -> Self {
        Self::for_depth(30)
    }

    /// A named preset: `d16`, `d20`, `d24`, `d30` (or any `d<N>`).
    pub fn preset(name: &str) -> Result<Self> {
        name.strip_prefix('d')
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d > 0)
            .map(Self::for_depth)
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown VAR preset `{name}` (use d16, d20, d24, d30)"
                ))
            })
    }

    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio).round() as usize
    }
    /// The std of the truncated-normal initialisation of fresh weights: `√(1 / 3C)`, as the
    /// official `init_weights(init_std=-1)`.
    pub fn init_std(&self) -> f32 {
        (1.0 / (3.0 * self.embed_dim as f64)).sqrt() as f32
    }
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    /// Class id of the unconditional (null) class.
    pub fn null_class(&self) -> usize {
        self.num_classes
    }

    pub fn validate(&self) -> Result<()> {
        self.patch_nums.validate()?;
        if self.depth == 0 || self.num_heads == 0 || self.embed_dim == 0 {
            return Err(Error::config("depth, heads and width must be positive"));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(Error::config(format!(
                "width {} is not divisible by {} heads",
                self.embed_dim, self.num_heads
            )));
        }
        if self.vocab_size == 0 || self.cvae == 0 {
            return Err(Error::config("vocab_size and cvae must be positive"));
        }
        if self.num_classes == 0 && self.text_dim == 0 {
            return Err(Error::config(
                "a model needs classes or a text input (num_classes and text_dim are both 0)",
            ));
        }
        if self.embed_dim > MAX_WIDTH
            || self.depth > MAX_DEPTH
            || self.num_heads > MAX_WIDTH
            || self.vocab_size > MAX_VOCAB
            || self.num_classes > MAX_CLASSES
            || self.cvae > MAX_WIDTH
            || self.text_dim > MAX_WIDTH
        {
            return Err(Error::config(format!(
                "VAR configuration out of range (width ≤ {MAX_WIDTH}, depth ≤ {MAX_DEPTH}, vocabulary ≤ {MAX_VOCAB}, \
                 classes ≤ {MAX_CLASSES}, latent and text widths ≤ {MAX_WIDTH})"
            )));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= 64.0) {
            return Err(Error::config(format!(
                "mlp_ratio must be in (0, 64], got {}",
                self.mlp_ratio
            )));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(Error::config("norm_eps must be a positive number"));
        }
        Ok(())
    }

    /// Number of parameters (buffers excluded), matching the official count.
    pub fn num_params(&self) -> usize {
        let c = self.embed_dim;
        let l = self.patch_nums.total_tokens();
        let s = self.patch_nums.num_scales();
        let h = self.mlp_hidden();
        let v = self.vocab_size;
        let text = if self.text_dim > 0 {
            self.text_dim * c + c
        } else {
            0
        };
        let embed = self.cvae * c + c + (self.num_classes + 1) * c + c + l * c + s * c + text;
        let block = 3 * c * c
            + 2 * c
            + c * c
            + c
            + c * h
            + h
            + h * c
            + c
            + 6 * c * c
            + 6 * c
            + self.num_heads;
        embed + self.depth * block + (2 * c * c + 2 * c) + (v * c + v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_table_matches_official_float64_rule() {
        assert_eq!(phi_table(4, 10), vec![0, 0, 1, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(phi_table(1, 5), vec![0; 5]);
    }

    #[test]
    fn official_parameter_counts() {
        assert_eq!(VarConfig::for_depth(2).num_params(), 1_375_620);
        assert_eq!(VarConfig::for_depth(4).num_params(), 6_358_800);
        assert_eq!(VarConfig::d16().num_params(), 310_283_520);
        assert_eq!(VarConfig::d20().num_params(), 600_917_136);
        assert_eq!(VarConfig::d24().num_params(), 1_033_399_360);
        assert_eq!(VarConfig::d30().num_params(), 2_010_020_356);
    }

    #[test]
    fn patch_lists() {
        let p = PatchNums::p256();
        assert_eq!(p.total_tokens(), 680);
        assert_eq!(p.begin_ends()[9], (424, 680));
        assert_eq!(PatchNums::infer_from_total(680), Some(p));
        assert_eq!(
            PatchNums::infer_from_total(30),
            Some(PatchNums(vec![1, 2, 3, 4]))
        );
        assert!(PatchNums::new(vec![2, 1]).is_err());
    }
}
