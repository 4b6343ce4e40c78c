//! Text encoders that turn prompts into condition vectors, natively and in wasm.
//!
//! [`MiniLm`] is a sentence-transformers model (`all-MiniLM-L6-v2` and other BERT-based
//! ones): WordPiece tokens → BERT → mean over the real tokens → L2 normalisation.

pub mod bert;
pub mod bpe;
pub mod clip;
pub mod wordpiece;

use burn::tensor::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
pub use bert::{Bert, BertConfig};
pub use bpe::ClipBpe;
pub use clip::{ClipTextConfig, ClipTextModel};
pub use wordpiece::WordPiece;

#[cfg(not(target_arch = "wasm32"))]
fn read_file(dir: &std::path::Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|err| Error::Io {
        path: p.display().to_string(),
        err,
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn read_text(dir: &std::path::Path, name: &str) -> Result<String> {
    String::from_utf8(read_file(dir, name)?).map_err(|_| Error::Format {
        format: "text file",
        reason: format!("{name} is not UTF-8"),
    })
}

/// sentence-transformers' `max_seq_length` (from `sentence_bert_config.json`), capped by the
/// encoder's positions; all positions without it.
pub fn max_tokens(config: &BertConfig, sentence_config_json: Option<&str>) -> usize {
    sentence_config_json
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v["max_seq_length"].as_u64())
        .map_or(config.max_position_embeddings, |m| m as usize)
        .min(config.max_position_embeddings)
}

/// The BERT tensors of a checkpoint, without the `bert.` prefix some exports carry.
pub fn bert_tensors(mut ck: Checkpoint) -> Checkpoint {
    if ck.keys().any(|k| k.starts_with("bert.")) {
        ck.split_prefix("bert.")
    } else {
        ck
    }
}

/// Both encoders' checks of the attention shape.
fn check_heads(hidden: usize, heads: usize) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::config(
            "hidden_size must be a multiple of num_attention_heads",
        ));
    }
    Ok(())
}

/// A sentence embedding model: tokenizer, encoder and pooling.
pub struct MiniLm {
    pub tokenizer: WordPiece,
    pub bert: Bert,
    pub config: BertConfig,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included (sentence-transformers'
    /// `max_seq_length`).
    pub max_tokens: usize,
}

impl MiniLm {
    /// Builds the model from the files of a sentence-transformers folder: `config.json`,
    /// `vocab.txt`, `model.safetensors` and optionally `sentence_bert_config.json`.
    pub fn from_parts(
        config_json: &str,
        vocab_txt: &str,
        weights: Vec<u8>,
        sentence_config_json: Option<&str>,
        device: &Device,
    ) -> Result<Self> {
        let config: BertConfig = serde_json::from_str(config_json).map_err(|e| Error::Format {
            format: "BERT config.json",
            reason: e.to_string(),
        })?;
        let max_tokens = max_tokens(&config, sentence_config_json);
        // The vocabulary is checked before the (large) weights are parsed.
        if vocab_txt.lines().count() != config.vocab_size {
            return Err(Error::config(format!(
                "vocab.txt has {} tokens, config.json says {}",
                vocab_txt.lines().count(),
                config.vocab_size
            )));
        }
        let mut ck = bert_tensors(Checkpoint::from_bytes(weights)?);
        let m = Self::load(&mut ck, config, vocab_txt, max_tokens, device)?;
        ck.finish()?;
        Ok(m)
    }

    /// Builds the model from a parameter source (a checkpoint, a pack) and its vocabulary.
    pub fn load(
        src: &mut dyn crate::params::ParamSource,
        config: BertConfig,
        vocab_txt: &str,
        max_tokens: usize,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = WordPiece::from_vocab(vocab_txt, true)?;
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(Error::config(format!(
                "vocab.txt has {} tokens, config.json says {}",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        if max_tokens < 2 || max_tokens > config.max_position_embeddings {
            return Err(Error::config(format!(
                "max_tokens {max_tokens} must be within 2..={}",
                config.max_position_embeddings
            )));
        }
        let bert = Bert::load(src, &config, device)?;
        Ok(Self {
            tokenizer,
            bert,
            config,
            max_tokens,
        })
    }

    /// Reads a sentence-transformers folder (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| read_file(dir, name);
        let text = |name: &str| read_text(dir, name);
        let sentence = text("sentence_bert_config.json").ok();
        Self::from_parts(
            &text("config.json")?,
            &text("vocab.txt")?,
            read("model.safetensors")?,
            sentence.as_deref(),
            device,
        )
    }

    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, self.max_tokens)
    }

    /// Unit-length sentence embeddings `[N, dim]`.
    pub fn embed(&self, texts: &[&str], device: &Device) -> Result<Tensor<2>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t)).collect();
        let (states, mask) = self.bert.forward(&ids, device)?;
        let [b, l, c] = states.dims();
        let m3: Tensor<3> = mask.clone().reshape([b, l, 1]);
        let summed = (states * m3).sum_dim(1).reshape([b, c]);
        let counts = mask.sum_dim(1).clamp_min(1e-9);
        Ok(crate::nn::l2_normalize(summed / counts))
    }
}

/// A CLIP text encoder: BPE tokenizer + `CLIPTextModel`; the embedding is the pooled output
/// (projected when the weights have `text_projection`), L2-normalised.
pub struct ClipText {
    pub tokenizer: ClipBpe,
    pub model: ClipTextModel,
    pub config: ClipTextConfig,
}

impl ClipText {
    /// Reads a Hugging Face folder: `config.json`, `vocab.json`, `merges.txt`,
    /// `model.safetensors` (a CLIPTextModel, or a full CLIPModel whose vision tower is
    /// ignored).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        let (config, tokenizer, mut ck) = Self::read_folder(dir)?;
        let model = Self::load(&mut ck, config, tokenizer, device)?;
        Self::finish_folder(&ck)?;
        Ok(model)
    }

    /// The configuration, tokenizer and weights of a Hugging Face folder (see [`Self::open`]);
    /// `projection_dim` is cleared when the weights have no projection.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_folder(
        dir: impl AsRef<std::path::Path>,
    ) -> Result<(ClipTextConfig, ClipBpe, Checkpoint)> {
        let dir = dir.as_ref();
        let mut config = ClipTextConfig::from_json(&read_text(dir, "config.json")?)?;
        let tokenizer = ClipBpe::from_hf(
            &read_text(dir, "vocab.json")?,
            &read_text(dir, "merges.txt")?,
        )?;
        let ck = Checkpoint::from_bytes(read_file(dir, "model.safetensors")?)?;
        if config.projection_dim.is_some() && !ck.contains("text_projection.weight") {
            config.projection_dim = None;
        }
        // Older Hugging Face CLIP configs carry the legacy `eos_token_id: 2`; transformers then
        // pools at the highest token id, which is the end-of-text token.
        if config.eos_token_id == 2 && tokenizer.eot != 2 {
            config.eos_token_id = tokenizer.eot;
        }
        Ok((config, tokenizer, ck))
    }

    /// Refuses tensors left in a folder's checkpoint after loading, but those of a full
    /// CLIPModel's image tower, which prompts do not need.
    pub fn finish_folder(ck: &Checkpoint) -> Result<()> {
        let left: Vec<String> = ck
            .keys()
            .filter(|k| {
                !(k.starts_with("vision_model.")
                    || k.starts_with("visual_projection.")
                    || *k == "logit_scale")
            })
            .map(str::to_string)
            .collect();
        if !left.is_empty() {
            return Err(Error::Format {
                format: "CLIP text checkpoint",
                reason: format!("unexpected tensors: {}", left.join(", ")),
            });
        }
        Ok(())
    }

    /// The model's tensors from `src` (`text_model.*`, `text_projection.weight`), with its
    /// tokenizer: from a folder's checkpoint or a pack.
    pub fn load(
        src: &mut dyn crate::params::ParamSource,
        config: ClipTextConfig,
        tokenizer: ClipBpe,
        device: &Device,
    ) -> Result<Self> {
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(Error::config(format!(
                "the BPE vocabulary has {} tokens, the configuration says {}",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        if config.eos_token_id != tokenizer.eot {
            return Err(Error::config(format!(
                "the configuration's end-of-text id {} is not the tokenizer's ({})",
                config.eos_token_id, tokenizer.eot
            )));
        }
        let model = ClipTextModel::load(src, &config, device)?;
        Ok(Self {
            tokenizer,
            model,
            config,
        })
    }

    pub fn dim(&self) -> usize {
        self.config
            .projection_dim
            .unwrap_or(self.config.hidden_size)
    }

    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text, self.config.max_position_embeddings)
    }

    /// Unit-length pooled embeddings `[N, dim]`.
    pub fn embed(&self, texts: &[&str], device: &Device) -> Result<Tensor<2>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t)).collect();
        let (_, pooled) = self.model.forward(&ids, device)?;
        Ok(crate::nn::l2_normalize(pooled))
    }
}

/// Either kind of prompt encoder, chosen by the folder's files.
pub enum TextEncoder {
    MiniLm(Box<MiniLm>),
    Clip(Box<ClipText>),
}

impl TextEncoder {
    /// A folder with `merges.txt` is CLIP (Hugging Face layout), one with `vocab.txt` a
    /// sentence-transformers BERT model.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.join("merges.txt").is_file() {
            Ok(Self::Clip(Box::new(ClipText::open(dir, device)?)))
        } else {
            Ok(Self::MiniLm(Box::new(MiniLm::open(dir, device)?)))
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Self::MiniLm(m) => m.dim(),
            Self::Clip(c) => c.dim(),
        }
    }

    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        match self {
            Self::MiniLm(m) => m.tokenize(text),
            Self::Clip(c) => c.tokenize(text),
        }
    }

    /// Unit-length embeddings `[N, dim]`, computed on the CPU kernels' thread pool
    /// ([`crate::kernels::on_pool`]).
    pub fn embed(&self, texts: &[&str], device: &Device) -> Result<Tensor<2>> {
        crate::kernels::on_pool(|| match self {
            Self::MiniLm(m) => m.embed(texts, device),
            Self::Clip(c) => c.embed(texts, device),
        })
    }
}
