//! Training configurations: TOML files with a `[model]` and a `[train]` table, named presets
//! compiled into the binary (`--preset NAME`), and command-line overrides.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Optimisation settings shared by both trainers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of the peak (`lin0` schedule).
    pub lr_end: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    pub seed: u64,
    /// Random horizontal flips.
    pub flip: bool,
    /// Fraction of the data held out for validation.
    pub val_fraction: f64,
    pub log_every: u64,
    pub eval_every: u64,
    pub sample_every: u64,
    pub ckpt_every: u64,
    pub keep_last: usize,
    // VQ-VAE only.
    #[serde(default)]
    pub recon: Option<String>,
    /// Weight of the patch-GAN (hinge) generator loss; 0 = off.
    #[serde(default)]
    pub gan_weight: f64,
    /// Step at which the discriminator starts.
    #[serde(default)]
    pub gan_start: u64,
    /// Steps a code may go unused before it is restarted from an encoder output (0 = never).
    #[serde(default)]
    pub dead_code_after: u64,
    /// Train the decoder only: the encoder, `quant_conv`, the codebook and the φ convolutions
    /// stay bit for bit, so the tokens of a VAR trained on this VQ-VAE stay valid.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decoder_only: bool,
    // VAR only.
    #[serde(default)]
    pub label_smooth: f64,
    /// Probability of replacing the condition by the null class (for CFG).
    #[serde(default)]
    pub cond_drop: f64,
    /// How the scales share the loss, in [0, 2]: 0 weighs every token the same (the official
    /// loss), 1 weighs every scale the same, above 1 the coarse scales weigh more than the
    /// fine ones (`var_steps::scale_weights`).
    #[serde(default)]
    pub scale_balance: f64,
    /// Gaussian noise on the caption embeddings of text runs, as a fraction of their length
    /// (`var_steps::TextNoise`); 0 = off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub text_noise: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl TrainConfig {
    /// The optimizer settings of this configuration.
    pub fn adamw(&self) -> crate::optim::AdamWConfig {
        crate::optim::AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: 1e-8,
            weight_decay: self.weight_decay,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
        }
    }
}

/// Named presets: `(name, kind, TOML)`.
pub const PRESETS: &[(&str, &str, &str)] = &[
    ("tiny", "vqvae", include_str!("../presets/vqvae-tiny.toml")),
    ("tiny", "var", include_str!("../presets/var-tiny.toml")),
    (
        "tiny",
        "adapter",
        include_str!("../presets/adapter-tiny.toml"),
    ),
    (
        "small64",
        "vqvae",
        include_str!("../presets/vqvae-small64.toml"),
    ),
    (
        "small64",
        "var",
        include_str!("../presets/var-small64.toml"),
    ),
    (
        "official",
        "vqvae",
        include_str!("../presets/vqvae-official.toml"),
    ),
    ("d16", "var", include_str!("../presets/var-d16.toml")),
    // The shipped models (models/*.nsp, docs/MODELS.md).
    (
        "digits",
        "vqvae",
        include_str!("../presets/vqvae-digits.toml"),
    ),
    ("digits", "var", include_str!("../presets/var-digits.toml")),
    (
        "digits",
        "adapter",
        include_str!("../presets/adapter-digits.toml"),
    ),
    (
        "digits",
        "lora",
        include_str!("../presets/lora-digits.toml"),
    ),
    ("tiny", "lora", include_str!("../presets/lora-tiny.toml")),
    (
        "emoji",
        "vqvae",
        include_str!("../presets/vqvae-emoji.toml"),
    ),
    ("emoji", "var", include_str!("../presets/var-emoji.toml")),
];

pub fn preset(name: &str, kind: &str) -> Result<&'static str> {
    PRESETS
        .iter()
        .find(|(n, k, _)| *n == name && *k == kind)
        .map(|(_, _, t)| *t)
        .with_context(|| {
            let names: Vec<&str> = PRESETS
                .iter()
                .filter(|(_, k, _)| *k == kind)
                .map(|(n, _, _)| *n)
                .collect();
            format!("no {kind} preset `{name}` (presets: {})", names.join(", "))
        })
}

/// The configuration text: a file, else a preset; then `key=value` overrides (TOML values,
/// keys like `train.steps` or `model.ch`).
pub fn resolve(
    config: Option<&std::path::Path>,
    preset_name: Option<&str>,
    kind: &str,
    overrides: &[(String, String)],
) -> Result<toml::Table> {
    let text = match (config, preset_name) {
        (Some(_), Some(_)) => bail!("give either --config or --preset, not both"),
        (Some(p), None) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, Some(n)) => preset(n, kind)?.to_string(),
        (None, None) => preset("tiny", kind)?.to_string(),
    };
    let mut table: toml::Table = toml::from_str(&text).context("parsing the configuration")?;
    for (k, v) in overrides {
        let (sect, key) = k
            .split_once('.')
            .with_context(|| format!("override `{k}`: use section.key, e.g. train.steps"))?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .or_else(|_| toml::from_str::<toml::Table>(&format!("v = \"{v}\"")))
            .with_context(|| format!("override `{k}`: cannot parse `{v}`"))?
            .remove("v")
            .expect("parsed");
        let t = table
            .get_mut(sect)
            .and_then(|s| s.as_table_mut())
            .with_context(|| format!("override `{k}`: no [{sect}] table"))?;
        t.insert(key.to_string(), value);
    }
    Ok(table)
}

/// Checks the training settings of a `kind` run (`vqvae`, `var`, `adapter`, `lora`).
pub fn validate(t: &TrainConfig, kind: &str) -> Result<()> {
    if t.batch_size == 0 || t.steps == 0 {
        bail!("batch_size and steps must be positive");
    }
    if !(t.lr > 0.0 && t.lr.is_finite()) {
        bail!("lr must be a positive number");
    }
    if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
        bail!("beta1 and beta2 must be in [0, 1)");
    }
    if !(0.0..1.0).contains(&t.val_fraction)
        || !(0.0..1.0).contains(&t.cond_drop)
        || !(0.0..1.0).contains(&t.label_smooth)
    {
        bail!("val_fraction, cond_drop and label_smooth must be in [0, 1)");
    }
    if !(0.0..=2.0).contains(&t.scale_balance) {
        bail!("scale_balance must be in [0, 2]");
    }
    if !(0.0..=4.0).contains(&t.text_noise) {
        bail!("text_noise must be in [0, 4]");
    }
    if kind == "lora" && t.text_noise != 0.0 {
        bail!("train.text_noise perturbs caption embeddings; a lora run has none");
    }
    if t.log_every == 0 || t.ckpt_every == 0 || t.eval_every == 0 || t.sample_every == 0 {
        bail!("log_every, eval_every, sample_every and ckpt_every must be positive");
    }
    // A setting that only the other kind of run reads would otherwise be ignored silently.
    let (owner, foreign) = if kind == "vqvae" {
        (
            "VAR",
            vec![
                ("label_smooth", t.label_smooth != 0.0),
                ("cond_drop", t.cond_drop != 0.0),
                ("scale_balance", t.scale_balance != 0.0),
                ("text_noise", t.text_noise != 0.0),
            ],
        )
    } else {
        (
            "VQ-VAE",
            vec![
                ("recon", t.recon.is_some()),
                ("gan_weight", t.gan_weight != 0.0),
                ("gan_start", t.gan_start != 0),
                ("dead_code_after", t.dead_code_after != 0),
                ("decoder_only", t.decoder_only),
            ],
        )
    };
    if let Some((key, _)) = foreign.into_iter().find(|&(_, set)| set) {
        bail!("train.{key} is a {owner} setting; a {kind} run does not read it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str, kind: &str) -> TrainConfig {
        let (_, _, text) = PRESETS
            .iter()
            .find(|(n, k, _)| *n == name && *k == kind)
            .expect("preset");
        let t: toml::Table = toml::from_str(text).unwrap();
        t["train"].clone().try_into().unwrap()
    }

    #[test]
    fn every_preset_validates_and_a_setting_of_the_other_kind_is_refused() {
        for (name, kind, _) in PRESETS {
            validate(&preset(name, kind), kind).unwrap_or_else(|e| panic!("{name} {kind}: {e}"));
        }
        let mut vq = preset("tiny", "vqvae");
        vq.scale_balance = 1.0;
        let e = validate(&vq, "vqvae").unwrap_err().to_string();
        assert!(e.contains("train.scale_balance is a VAR setting"), "{e}");
        let mut var = preset("tiny", "var");
        var.gan_weight = 0.1;
        let e = validate(&var, "var").unwrap_err().to_string();
        assert!(e.contains("train.gan_weight is a VQ-VAE setting"), "{e}");
        let mut lora = preset("tiny", "lora");
        lora.text_noise = 0.5;
        let e = validate(&lora, "lora").unwrap_err().to_string();
        assert!(e.contains("a lora run has none"), "{e}");
        var = preset("tiny", "var");
        var.text_noise = 0.5;
        validate(&var, "var").unwrap();
        var.text_noise = f64::NAN;
        assert!(validate(&var, "var").is_err());
        // Balances above 1 (the coarse scales weigh more) are accepted up to 2.
        var = preset("tiny", "var");
        var.scale_balance = 1.5;
        validate(&var, "var").unwrap();
        var.scale_balance = 2.5;
        let e = validate(&var, "var").unwrap_err().to_string();
        assert!(e.contains("scale_balance must be in [0, 2]"), "{e}");
    }
}
