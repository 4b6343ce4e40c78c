//! One image request as an options object spells it (the JS package's `generate()` options,
//! camelCase), parsed by serde and checked here with messages that name the option: the
//! browser and native callers share one set of rules, and the wasm layer only converts.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::edit::Half;
use crate::error::{Error, Result};
use crate::sampler::SampleOptions;

/// The options `generate()` takes besides its callbacks (`onScale`, `signal`).
pub const KNOWN_OPTIONS: [&str; 11] = [
    "classLabel",
    "prompt",
    "cfg",
    "topK",
    "topP",
    "seed",
    "moreSmooth",
    "image",
    "mask",
    "keepScales",
    "keepHalf",
];

/// Largest side of an edit's image or mask as given (before the library resizes it).
pub const MAX_INPUT_SIDE: usize = 16384;

/// Numbers arrive as JS numbers (f64) and are checked here, so that `seed: -1` or
/// `topK: 2.5` get a message naming the option instead of a type error.
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRequest {
    #[serde(default)]
    pub class_label: Option<f64>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub cfg: Option<f64>,
    #[serde(default)]
    pub top_k: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<f64>,
    #[serde(default)]
    pub more_smooth: Option<bool>,
    #[serde(default)]
    pub image: Option<RgbaInput>,
    #[serde(default)]
    pub mask: Option<RgbaInput>,
    #[serde(default)]
    pub keep_scales: Option<f64>,
    #[serde(default)]
    pub keep_half: Option<String>,
}

/// `{ width, height, data }`: unpremultiplied RGBA bytes.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct RgbaInput {
    pub width: f64,
    pub height: f64,
    #[serde(deserialize_with = "bytes")]
    pub data: Vec<u8>,
}

/// An edit's image, checked: `width × height × 4` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgba {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// What an edit keeps of its image.
#[derive(Debug, Clone, PartialEq)]
pub enum EditRegion {
    /// White = regenerate, black or transparent = keep.
    Mask(Rgba),
    KeepScales(usize),
    Half(Half),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EditRequest {
    pub image: Rgba,
    pub region: EditRegion,
}

/// A checked request: one condition, the sampling options (defaults filled in), the edit.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub condition: Condition,
    pub options: SampleOptions,
    pub edit: Option<EditRequest>,
}

/// What a request is checked against.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    pub num_classes: usize,
    pub num_scales: usize,
    pub takes_prompts: bool,
    /// The options used where the request gives none.
    pub defaults: SampleOptions,
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RGBA bytes (a Uint8Array)")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> std::result::Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(s.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = s.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }
    d.deserialize_bytes(V)
}

fn finite(key: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !x.is_finite() => Err(Error::invalid(format!(
            "option {key} must be a finite number"
        ))),
        other => Ok(other),
    }
}

fn integer(key: &str, v: Option<f64>, max: f64) -> Result<Option<f64>> {
    match finite(key, v)? {
        Some(x) if x.fract() != 0.0 || x < 0.0 || x > max => Err(Error::invalid(format!(
            "option {key} must be an integer from 0 to {max}, got {x}"
        ))),
        other => Ok(other),
    }
}

fn rgba(key: &str, v: Option<RgbaInput>) -> Result<Option<Rgba>> {
    let Some(v) = v else { return Ok(None) };
    let max = MAX_INPUT_SIDE as f64;
    let side = |x: f64| (x.fract() == 0.0 && (1.0..=max).contains(&x)).then_some(x as usize);
    let (Some(width), Some(height)) = (side(v.width), side(v.height)) else {
        return Err(Error::invalid(format!(
            "option {key} must be {{ width, height, data }} with RGBA bytes, sides 1 to {MAX_INPUT_SIDE}"
        )));
    };
    if v.data.len() != width * height * 4 {
        return Err(Error::invalid(format!(
            "option {key}: {width}×{height} RGBA needs {} bytes, got {}",
            width * height * 4,
            v.data.len()
        )));
    }
    Ok(Some(Rgba {
        width,
        height,
        data: v.data,
    }))
}

impl GenerateRequest {
    /// Refuses option names this version does not know (a typo must not be ignored).
    pub fn check_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for k in keys {
            if !KNOWN_OPTIONS.contains(&k) {
                return Err(Error::invalid(format!(
                    "unknown option '{k}' (known: {})",
                    KNOWN_OPTIONS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Checks the request against the model and fills in the defaults.
    pub fn resolve(self, m: &ModelFacts) -> Result<Resolved> {
        let edit = self.edit(m.num_scales)?;
        let prompt = match self.prompt {
            Some(p) if p.trim().is_empty() => return Err(Error::invalid("option prompt is empty")),
            other => other,
        };
        let label = integer("classLabel", self.class_label, m.num_classes as f64)?;
        let condition = match (label, prompt) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("give either classLabel or prompt, not both"));
            }
            (None, Some(p)) if m.takes_prompts => Condition::Prompt(p),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "this model has no text encoder: use classLabel, not prompt",
                ));
            }
            (Some(l), None) => Condition::Class(l as usize),
            // An edit without a condition is unconditional in-/out-painting.
            (None, None) if edit.is_some() => Condition::Unconditional,
            (None, None) if m.takes_prompts => {
                return Err(Error::invalid(
                    "prompt is required (or classLabel for unconditional)",
                ));
            }
            (None, None) => {
                return Err(Error::invalid(format!(
                    "classLabel is required (0..{} or {} for unconditional)",
                    m.num_classes.saturating_sub(1),
                    m.num_classes
                )));
            }
        };
        let d = &m.defaults;
        let options = SampleOptions {
            cfg: finite("cfg", self.cfg)?.map_or(d.cfg, |x| x as f32),
            top_k: integer("topK", self.top_k, 1e9)?.map_or(d.top_k, |x| x as usize),
            top_p: finite("topP", self.top_p)?.map_or(d.top_p, |x| x as f32),
            seed: integer("seed", self.seed, 9_007_199_254_740_991.0)?.map_or(d.seed, |x| x as u64),
            more_smooth: self.more_smooth.unwrap_or(false),
        };
        Ok(Resolved {
            condition,
            options,
            edit,
        })
    }

    fn edit(&self, num_scales: usize) -> Result<Option<EditRequest>> {
        let image = rgba("image", self.image.clone())?;
        let mask = rgba("mask", self.mask.clone())?;
        let keep_scales = integer("keepScales", self.keep_scales, num_scales as f64)?;
        let half = self
            .keep_half
            .as_deref()
            .map(|s| {
                Half::parse(s).map_err(|_| {
                    Error::invalid("option keepHalf must be 'top', 'bottom', 'left' or 'right'")
                })
            })
            .transpose()?;
        let given = mask.is_some() as u8 + keep_scales.is_some() as u8 + half.is_some() as u8;
        let Some(image) = image else {
            if given > 0 {
                return Err(Error::invalid(
                    "mask, keepScales and keepHalf edit an image: give image too",
                ));
            }
            return Ok(None);
        };
        if given != 1 {
            return Err(Error::invalid(
                "an edit needs exactly one of mask (white = regenerate), keepScales or keepHalf",
            ));
        }
        let region = if let Some(m) = mask {
            EditRegion::Mask(m)
        } else if let Some(k) = keep_scales {
            if k < 1.0 {
                return Err(Error::invalid(format!(
                    "option keepScales must be an integer from 1 to {num_scales}, got {k}"
                )));
            }
            EditRegion::KeepScales(k as usize)
        } else {
            EditRegion::Half(half.expect("one was given"))
        };
        Ok(Some(EditRequest { image, region }))
    }
}

/// What a loaded model is, as the JS package's `info` shows it (camelCase).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    pub num_classes: usize,
    pub vocab_size: usize,
    pub patch_nums: Vec<usize>,
    pub image_size: usize,
    pub parameters: f64,
    pub has_text_encoder: bool,
    pub takes_prompts: bool,
    pub class_names: Option<Vec<String>>,
    pub sampling: SamplingInfo,
}

/// The settings `generate()` uses for an absent option, and the model's showcase condition.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SamplingInfo {
    pub cfg: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub prompt: Option<String>,
    pub class_label: Option<usize>,
    /// The settings come from the pack (else: the official defaults).
    pub from_pack: bool,
}

impl crate::pipeline::Pipeline {
    /// The model's description for the JS package's `info`.
    pub fn info(&self) -> ModelInfo {
        let c = self.var_config();
        let d = self.default_options();
        let r = self.recommended();
        // f32 settings as the decimals they were written with (0.9, not 0.8999999761581421).
        let dec = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
        ModelInfo {
            depth: c.depth,
            width: c.embed_dim,
            heads: c.num_heads,
            num_classes: c.num_classes,
            vocab_size: c.vocab_size,
            patch_nums: c.patch_nums.0.clone(),
            image_size: self.image_size(),
            parameters: c.num_params() as f64,
            has_text_encoder: self.text_encoder().is_some(),
            takes_prompts: self.takes_prompts(),
            class_names: self.class_names().map(<[String]>::to_vec),
            sampling: SamplingInfo {
                cfg: dec(d.cfg),
                top_k: d.top_k,
                top_p: dec(d.top_p),
                prompt: r.and_then(|r| r.prompt.clone()),
                class_label: r.and_then(|r| r.class),
                from_pack: r.is_some(),
            },
        }
    }

    /// The facts a request is checked against.
    pub fn request_facts(&self) -> ModelFacts {
        ModelFacts {
            num_classes: self.var_config().num_classes,
            num_scales: self.var_config().patch_nums.num_scales(),
            takes_prompts: self.takes_prompts(),
            defaults: self.default_options(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ModelFacts {
        ModelFacts {
            num_classes: 10,
            num_scales: 7,
            takes_prompts: false,
            defaults: SampleOptions {
                cfg: 3.0,
                top_k: 50,
                top_p: 0.9,
                seed: 0,
                more_smooth: false,
            },
        }
    }

    fn parse(j: &str) -> Result<Resolved> {
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        GenerateRequest::check_keys(keys.iter().map(String::as_str))?;
        serde_json::from_value::<GenerateRequest>(v)
            .map_err(|e| Error::invalid(e.to_string()))?
            .resolve(&facts())
    }

    #[test]
    fn options_resolve_with_defaults_and_refuse_with_the_option_named() {
        let r = parse(r#"{"classLabel": 3, "seed": 7}"#).unwrap();
        assert_eq!(r.condition, Condition::Class(3));
        assert_eq!(r.options.seed, 7);
        assert_eq!(r.options.top_k, 50);
        let e = |j: &str| parse(j).unwrap_err().to_string();
        assert!(e(r#"{"classLabel": 11}"#).contains("classLabel must be an integer from 0 to 10"));
        assert!(e(r#"{}"#).contains("classLabel is required"));
        assert!(e(r#"{"classLabel": 1, "seed": -1}"#).contains("seed must be an integer"));
        assert!(e(r#"{"classLabel": 1, "topk": 5}"#).contains("unknown option 'topk'"));
        assert!(e(r#"{"prompt": "a cat"}"#).contains("no text encoder"));
        assert!(e(r#"{"classLabel": 1, "prompt": "a"}"#).contains("not both"));
        assert!(e(r#"{"keepHalf": "top"}"#).contains("give image too"));
        let img = r#"{"width": 2, "height": 1, "data": [1,2,3,4,5,6,7,8]}"#;
        let r = parse(&format!(r#"{{"image": {img}, "keepHalf": "left"}}"#)).unwrap();
        assert_eq!(r.condition, Condition::Unconditional);
        assert_eq!(r.edit.unwrap().image.width, 2);
        assert!(
            e(&format!(r#"{{"image": {img}, "keepHalf": "up"}}"#)).contains("keepHalf must be")
        );
        let short = r#"{"width": 2, "height": 2, "data": [1,2,3]}"#;
        assert!(e(&format!(r#"{{"image": {short}, "keepScales": 2}}"#)).contains("needs 16 bytes"));
        assert!(
            e(&format!(
                r#"{{"image": {img}, "keepScales": 2, "keepHalf": "top"}}"#
            ))
            .contains("exactly one of")
        );
    }
}
