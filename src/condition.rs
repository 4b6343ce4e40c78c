//! What an image is generated (or edited) for: one type for every entry point.

use serde::{Deserialize, Serialize};

/// The condition of one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Condition {
    /// A class id of a class-conditional model.
    Class(usize),
    /// A prompt, encoded by the model's text encoder (a text-conditioned VAR, or a
    /// class-conditional one through its text adapter).
    Prompt(String),
    /// A text embedding computed elsewhere (`text_dim` values).
    Embedding(Vec<f32>),
    /// The null condition: unconditional generation, in-/out-painting.
    Unconditional,
}

impl Condition {
    /// One condition per class id; the null class id means unconditional.
    pub fn classes(labels: &[usize]) -> Vec<Self> {
        labels.iter().map(|&l| Self::Class(l)).collect()
    }

    pub fn prompts<S: AsRef<str>>(prompts: &[S]) -> Vec<Self> {
        prompts
            .iter()
            .map(|p| Self::Prompt(p.as_ref().to_string()))
            .collect()
    }
}
