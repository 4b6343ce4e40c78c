//! nextscale packs (`.nsp`): one self-describing file per model, made for the web.
//!
//! Layout (little-endian; see `docs/pack-format.md`):
//! ```text
//! 0   "NXSPACK\0"            magic, 8 bytes
//! 8   u32 version            = 2 (version 1 packs still read)
//! 12  u32 header_len
//! 16  header (UTF-8 JSON)    configs, class names, tensor table
//! ..  zero padding to a multiple of 64
//! D   data                   each tensor at D + offset, offsets multiples of 64
//! ```
//! The header comes first, so a streaming reader knows the model, its size and whether it fits
//! before the weights arrive. Every offset, length and checksum is verified; bad bytes are an
//! [`Error::Format`], never a panic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{VarConfig, VqVaeConfig};
use crate::error::{Error, Result, Shape};
use crate::params::{Init, ParamSource};
use crate::state_dict::Entry;

pub const MAGIC: &[u8; 8] = b"NXSPACK\0";
/// The version this library writes.
pub const VERSION: u32 = 2;
/// The oldest version it reads (version 1 lacks `sampling` and `requires`).
pub const MIN_VERSION: u32 = 1;
/// Features a pack may require of its reader (`requires` in the header). A pack that names
/// one this library does not know is refused with a message instead of being misread.
pub const KNOWN_FEATURES: &[&str] = &["lora", "clip-text"];
/// Values per quantization block.
pub const BLOCK: usize = 32;
const ALIGN: usize = 64;
/// Upper bound on the header, to refuse absurd allocations from corrupt files.
const MAX_HEADER: usize = 64 << 20;

/// How one tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    F32,
    F16,
    /// Per block of 32 values: an f16 scale and 32 signed bytes (−127…127); [`encode`] uses
    /// the scale `max|x|/127`.
    Q8,
    /// Per block of 32 values: an f16 scale and 32 signed nibbles (`q + 8`, low first; −8…7);
    /// [`encode`] uses the scale `max|x|/7` and codes −7…7.
    Q4,
}

impl Storage {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8" => Ok(Self::Q8),
            "q4" => Ok(Self::Q4),
            _ => Err(Error::invalid(format!(
                "unknown storage `{s}` (use f32, f16, q8 or q4)"
            ))),
        }
    }

    /// Bytes needed for `n` values.
    pub fn byte_len(self, n: usize) -> usize {
        let blocks = n.div_ceil(BLOCK);
        match self {
            Self::F32 => 4 * n,
            Self::F16 => 2 * n,
            Self::Q8 => blocks * 2 + n,
            Self::Q4 => blocks * 2 + n.div_ceil(2),
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
    /// From the start of the data section.
    pub offset: usize,
    pub length: usize,
    /// CRC-32 (IEEE) of the stored bytes.
    pub crc32: u32,
}

/// The pack header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackHeader {
    pub var: VarConfig,
    pub vae: VqVaeConfig,
    /// Optional human-readable class names, `var.num_classes` of them.
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// Free-form provenance: the command, the sources, the default scheme.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// A text encoder inside the pack (its tensors under `text.`), for prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextHeader>,
    /// A CLIP text encoder inside the pack (its tensors under `text.`), instead of `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipHeader>,
    /// A text adapter of a class-conditional model (its tensors under `adapter.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<crate::var::adapter::AdapterConfig>,
    /// The sampling settings the model was tuned for (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::sampler::Recommended>,
    /// LoRA updates of the VAR (tensors under `lora.`), applied when the pack is loaded;
    /// such a pack requires the `lora` feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::var::lora::LoraConfig>,
    /// Features a reader must support to use this pack correctly (version 2); see
    /// [`KNOWN_FEATURES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    pub tensors: Vec<TensorEntry>,
}

/// The text encoder of a pack: a BERT sentence encoder with mean pooling and L2 norm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextHeader {
    pub config: crate::text::BertConfig,
    /// Longest input in tokens (`[CLS]`/`[SEP]` included).
    pub max_tokens: usize,
    /// WordPiece vocabulary, index = token id.
    pub vocab: Vec<String>,
}

/// A CLIP text encoder inside the pack (`CLIPTextModel`, its tensors under `text.`): the
/// pooled output, projected when the config names a projection, L2-normalised. Packs that
/// carry one require the `clip-text` feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipHeader {
    pub config: crate::text::ClipTextConfig,
    /// BPE vocabulary, index = token id.
    pub vocab: Vec<String>,
    /// BPE merges in rank order, `"a b"`.
    pub merges: Vec<String>,
}

/// Optional parts of a pack beyond the VAR and the VQ-VAE.
#[derive(Clone, Debug, Default)]
pub struct PackExtras {
    pub text: Option<TextHeader>,
    pub clip: Option<ClipHeader>,
    pub adapter: Option<crate::var::adapter::AdapterConfig>,
    pub sampling: Option<crate::sampler::Recommended>,
    pub lora: Option<crate::var::lora::LoraConfig>,
}

impl PackHeader {
    /// Size of the whole file this header describes.
    pub fn file_len(&self, header_len: usize) -> usize {
        let end = self
            .tensors
            .iter()
            .map(|t| t.offset.saturating_add(t.length))
            .max()
            .unwrap_or(0);
        data_start(header_len).saturating_add(end)
    }
    /// Number of stored values.
    pub fn num_values(&self) -> usize {
        self.tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }
}

fn data_start(header_len: usize) -> usize {
    (16 + header_len).div_ceil(ALIGN) * ALIGN
}

fn fmt_err(reason: impl Into<String>) -> Error {
    Error::Format {
        format: "nextscale pack",
        reason: reason.into(),
    }
}

/// Reads the header from the first bytes of a pack. Returns it and the offset of the data
/// section; `Ok(None)` when more bytes are needed (streaming).
pub fn read_header(prefix: &[u8]) -> Result<Option<(PackHeader, usize)>> {
    if prefix.len() < 16 {
        if !MAGIC.starts_with(&prefix[..prefix.len().min(8)]) {
            return Err(fmt_err("not a nextscale pack (bad magic)"));
        }
        return Ok(None);
    }
    if &prefix[..8] != MAGIC {
        return Err(fmt_err("not a nextscale pack (bad magic)"));
    }
    let version = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(fmt_err(format!(
            "unsupported pack version {version} (this library reads versions {MIN_VERSION} to {VERSION}{})",
            if version > VERSION {
                "; the pack was written by a newer nextscale: update the library"
            } else {
                ""
            }
        )));
    }
    let hlen = u32::from_le_bytes(prefix[12..16].try_into().expect("4 bytes")) as usize;
    if hlen > MAX_HEADER {
        return Err(fmt_err(format!(
            "header of {hlen} bytes is implausibly large"
        )));
    }
    if prefix.len() < 16 + hlen {
        return Ok(None);
    }
    let header: PackHeader = serde_json::from_slice(&prefix[16..16 + hlen])
        .map_err(|e| fmt_err(format!("bad header: {e}")))?;
    validate_header(&header)?;
    Ok(Some((header, data_start(hlen))))
}

/// A text encoder's embedding width against what the model (or its adapter) takes.
fn check_text_dim(h: &PackHeader, dim: usize, what: &str) -> Result<()> {
    let text_dim = h
        .var
        .text_dim
        .max(h.adapter.as_ref().map_or(0, |a| a.text_dim));
    if text_dim != dim {
        return Err(fmt_err(format!(
            "the {what} gives {dim}-d embeddings, the model takes {text_dim}"
        )));
    }
    Ok(())
}

fn validate_header(h: &PackHeader) -> Result<()> {
    let unknown: Vec<&str> = h
        .requires
        .iter()
        .map(String::as_str)
        .filter(|f| !KNOWN_FEATURES.contains(f))
        .collect();
    if !unknown.is_empty() {
        return Err(fmt_err(format!(
            "the pack needs features this version of nextscale lacks ({}): update the library",
            unknown.join(", ")
        )));
    }
    h.var.validate()?;
    if let Some(l) = &h.lora {
        l.validate()?;
        if !h.requires.iter().any(|f| f == "lora") {
            return Err(fmt_err(
                "the pack carries a LoRA but does not list `lora` in `requires`",
            ));
        }
    }
    h.vae.validate()?;
    crate::config::check_pair(&h.var, &h.vae)?;
    if let Some(a) = &h.adapter
        && a.embed_dim != h.var.embed_dim
    {
        return Err(fmt_err(format!(
            "the text adapter makes {}-wide conditions for a VAR of width {}",
            a.embed_dim, h.var.embed_dim
        )));
    }
    if let Some(s) = &h.sampling {
        s.validate()?;
        if h.var.text_dim == 0 && h.adapter.is_none() && s.prompt.is_some() {
            return Err(fmt_err(
                "the recommended settings name a prompt, but the model does not take prompts",
            ));
        }
        if let Some(c) = s.class
            && c > h.var.num_classes
        {
            return Err(fmt_err(format!(
                "the recommended class {c} is out of range (the model has {} classes)",
                h.var.num_classes
            )));
        }
    }
    if let Some(t) = &h.text {
        t.config.validate()?;
        if t.vocab.len() != t.config.vocab_size {
            return Err(fmt_err(format!(
                "the text vocabulary has {} tokens, its config says {}",
                t.vocab.len(),
                t.config.vocab_size
            )));
        }
        check_text_dim(h, t.config.hidden_size, "text encoder")?;
    }
    if let Some(c) = &h.clip {
        if h.text.is_some() {
            return Err(fmt_err(
                "the pack carries two text encoders (`text` and `clip`)",
            ));
        }
        if !h.requires.iter().any(|f| f == "clip-text") {
            return Err(fmt_err(
                "the pack carries a CLIP text encoder but does not list `clip-text` in `requires`",
            ));
        }
        c.config.validate()?;
        if c.vocab.len() != c.config.vocab_size {
            return Err(fmt_err(format!(
                "the CLIP vocabulary has {} tokens, its config says {}",
                c.vocab.len(),
                c.config.vocab_size
            )));
        }
        let dim = c.config.projection_dim.unwrap_or(c.config.hidden_size);
        check_text_dim(h, dim, "CLIP text encoder")?;
    }
    if let Some(names) = &h.class_names
        && names.len() != h.var.num_classes
    {
        return Err(fmt_err(format!(
            "{} class names for {} classes",
            names.len(),
            h.var.num_classes
        )));
    }
    let mut seen = BTreeSet::new();
    for t in &h.tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(fmt_err(format!("tensor `{}` appears twice", t.name)));
        }
        let n = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| fmt_err(format!("tensor `{}` has an overflowing shape", t.name)))?;
        if n as u64 > (1u64 << 34) {
            return Err(fmt_err(format!("tensor `{}` is implausibly large", t.name)));
        }
        if t.storage.byte_len(n) != t.length {
            return Err(fmt_err(format!(
                "tensor `{}`: {} values stored as {:?} need {} bytes, the table says {}",
                t.name,
                n,
                t.storage,
                t.storage.byte_len(n),
                t.length
            )));
        }
        if t.offset % ALIGN != 0 || t.offset.checked_add(t.length).is_none() {
            return Err(fmt_err(format!("tensor `{}` has a bad offset", t.name)));
        }
    }
    Ok(())
}

/// A parsed pack: the header and the bytes. It hands tensors out as `f32`, dequantizing.
pub struct Pack {
    pub header: PackHeader,
    /// Shared with the [`PackedMatrix`]es handed out, so weights kept packed are not copied.
    bytes: std::sync::Arc<Vec<u8>>,
    data: usize,
    index: BTreeMap<String, usize>,
    used: BTreeSet<String>,
    /// `None`: not decided yet ([`Pipeline::from_pack`](crate::Pipeline::from_pack) keeps them).
    keep_packed: Option<bool>,
}

impl Pack {
    /// Parses a whole pack, checking that every tensor lies inside the file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let (header, data) =
            read_header(&bytes)?.ok_or_else(|| fmt_err("the file ends inside its header"))?;
        let need = header.file_len(data - 16);
        if bytes.len() < need {
            return Err(fmt_err(format!(
                "the file is truncated: {} bytes, its table needs {need}",
                bytes.len()
            )));
        }
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            header,
            bytes: std::sync::Arc::new(bytes),
            data,
            index,
            used: BTreeSet::new(),
            keep_packed: None,
        })
    }

    /// Whether model loaders keep q8/q4 matrices packed (on the CPU the matmul dequantizes them
    /// tile by tile; on a GPU each layer's weight is dequantized when it runs; see
    /// [`crate::quant`]) instead of dequantizing them to f32 at load. By default
    /// [`crate::Pipeline::from_pack`] keeps them packed; `false` is for comparisons.
    pub fn keep_packed(&mut self, yes: bool) {
        self.keep_packed = Some(yes);
    }

    /// Keeps q8/q4 matrices packed unless [`Self::keep_packed`] said otherwise.
    pub fn keep_packed_by_default(&mut self) {
        self.keep_packed.get_or_insert(true);
    }

    /// The checked stored bytes of tensor `i`: `(start in the file, length)`.
    fn checked_bytes(&self, i: usize) -> Result<(usize, usize)> {
        let t = &self.header.tensors[i];
        let start = self.data + t.offset;
        let crc = crc32fast::hash(&self.bytes[start..start + t.length]);
        if crc != t.crc32 {
            return Err(fmt_err(format!(
                "tensor `{}` is corrupt (checksum {crc:08x}, expected {:08x})",
                t.name, t.crc32
            )));
        }
        Ok((start, t.length))
    }

    /// The same pack with a changed header (settings, class names, provenance), written as the
    /// current version; the tensor data is copied byte for byte (nothing is re-quantized).
    pub fn rewrite_header(&self, edit: impl FnOnce(&mut PackHeader)) -> Result<Vec<u8>> {
        let mut header = self.header.clone();
        let tensors = header.tensors.clone();
        edit(&mut header);
        if header.tensors != tensors {
            return Err(Error::invalid(
                "rewriting a pack's header cannot change its tensors",
            ));
        }
        validate_header(&header)?;
        let json = serde_json::to_vec(&header).map_err(|e| Error::invalid(e.to_string()))?;
        let start = data_start(json.len());
        let body = &self.bytes[self.data..];
        let mut out = Vec::with_capacity(start + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.resize(start, 0);
        out.extend_from_slice(body);
        Ok(out)
    }

    /// The f32 values of every tensor whose name starts with `prefix` (prefix removed), e.g.
    /// `vae.` for the VQ-VAE: to fine-tune from a pack.
    pub fn tensors_with_prefix(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.header
            .tensors
            .iter()
            .filter_map(|t| t.name.strip_prefix(prefix).map(|n| (n, t)))
            .map(|(n, t)| Ok(Entry::f32(n, t.shape.clone(), self.read(&t.name)?)))
            .collect()
    }

    /// One model of the pack as an f32 checkpoint: the VAR (`"var"`: every tensor outside the
    /// VQ-VAE, text encoder and adapter, plus the official buffers) or the VQ-VAE (`"vae"`), with its format, the pack's
    /// patch list (and the VAR's class names) as metadata, as the trainer writes them. To fine-tune,
    /// adapt or re-export a shipped model from its pack.
    pub fn model_checkpoint(&self, part: &str) -> Result<crate::Checkpoint> {
        let others = ["vae.", "text.", "adapter.", "lora."];
        let entries: Vec<Entry> = match part {
            "vae" => self.tensors_with_prefix("vae.")?,
            "var" => {
                let mut e = self
                    .header
                    .tensors
                    .iter()
                    .filter(|t| !others.iter().any(|p| t.name.starts_with(p)))
                    .map(|t| Ok(Entry::f32(&t.name, t.shape.clone(), self.read(&t.name)?)))
                    .collect::<Result<Vec<_>>>()?;
                // A pack leaves out the buffers the model recomputes; a state dict has them.
                let v = &self.header.var;
                e.extend(crate::var::buffers(&v.patch_nums, v.depth, v.embed_dim));
                e
            }
            _ => return Err(Error::invalid(format!("a pack holds no model `{part}`"))),
        };
        let mut meta = BTreeMap::new();
        let json = |v: &[_]| serde_json::to_string(v).unwrap_or_default();
        // The names the trainer writes in its own checkpoints, so a pack's model and a run's
        // are recognised as the same kind of model (e.g. by `native-trainer average`).
        let format = if part == "vae" {
            "nextscale-vqvae"
        } else {
            "nextscale-var"
        };
        meta.insert("format".to_string(), format.to_string());
        meta.insert(
            "patch_nums".to_string(),
            json(&self.header.var.patch_nums.0[..]),
        );
        if let (Some(names), "var") = (&self.header.class_names, part) {
            meta.insert(
                "class_names".to_string(),
                serde_json::to_string(names).unwrap_or_default(),
            );
        }
        let mut bytes = Vec::new();
        crate::state_dict::write_safetensors(&mut bytes, &entries, Some(&meta))
            .map_err(|e| Error::invalid(format!("writing the {part} checkpoint: {e}")))?;
        crate::Checkpoint::from_bytes(bytes)
    }

    pub fn is_pack(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// The values of one tensor (checksum verified, dequantized).
    pub fn read(&self, name: &str) -> Result<Vec<f32>> {
        let i = *self.index.get(name).ok_or_else(|| Error::MissingKey {
            key: name.into(),
            expected: Shape(vec![]),
        })?;
        let (start, len) = self.checked_bytes(i)?;
        let t = &self.header.tensors[i];
        Ok(decode(
            &self.bytes[start..start + len],
            t.storage,
            t.shape.iter().product(),
        ))
    }

    /// A [`ParamSource`] over the tensors whose names start with `prefix`.
    pub fn source<'a>(&'a mut self, prefix: &str) -> PackSource<'a> {
        PackSource {
            pack: self,
            prefix: prefix.to_string(),
        }
    }

    /// Fails if the model did not use every tensor of the pack.
    pub fn finish(&self) -> Result<()> {
        let keys: Vec<(String, Shape)> = self
            .header
            .tensors
            .iter()
            .filter(|t| !self.used.contains(&t.name))
            .map(|t| (t.name.clone(), Shape(t.shape.clone())))
            .collect();
        if keys.is_empty() {
            Ok(())
        } else {
            Err(Error::UnexpectedKeys { keys })
        }
    }
}

pub struct PackSource<'a> {
    pack: &'a mut Pack,
    prefix: String,
}

impl PackSource<'_> {
    /// The table index of `key` (prefixed), whose shape must be `shape`.
    fn lookup(&self, key: &str, shape: &[usize]) -> Result<(String, usize)> {
        let name = format!("{}{key}", self.prefix);
        let i = *self
            .pack
            .index
            .get(&name)
            .ok_or_else(|| Error::MissingKey {
                key: name.clone(),
                expected: Shape(shape.to_vec()),
            })?;
        let found = &self.pack.header.tensors[i].shape;
        if found != shape {
            return Err(Error::ShapeMismatch {
                key: name,
                found: Shape(found.clone()),
                expected: Shape(shape.to_vec()),
            });
        }
        Ok((name, i))
    }
}

impl ParamSource for PackSource<'_> {
    fn get_packed(
        &mut self,
        key: &str,
        shape: &[usize],
        _init: Init,
    ) -> Result<Option<crate::quant::PackedMatrix>> {
        if self.pack.keep_packed != Some(true) {
            return Ok(None);
        }
        let (name, i) = self.lookup(key, shape)?;
        let storage = self.pack.header.tensors[i].storage;
        let rows = shape.first().copied().unwrap_or(0);
        let cols = shape.iter().skip(1).product::<usize>();
        if !matches!(storage, Storage::Q8 | Storage::Q4) || !cols.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        let (start, len) = self.pack.checked_bytes(i)?;
        let m = crate::quant::PackedMatrix::new(
            self.pack.bytes.clone(),
            start,
            len,
            storage,
            rows,
            cols,
        )
        .map_err(|e| fmt_err(format!("tensor `{name}`: {e}")))?;
        self.pack.used.insert(name);
        Ok(Some(m))
    }

    fn get(&mut self, key: &str, shape: &[usize], _init: Init) -> Result<Vec<f32>> {
        let (name, _) = self.lookup(key, shape)?;
        let v = self.pack.read(&name)?;
        crate::params::check_finite(&name, &v)?;
        self.pack.used.insert(name);
        Ok(v)
    }
    fn skip_buffer(&mut self, _key: &str, _shape: &[usize]) -> Result<()> {
        Ok(())
    }
}

fn f16_bits(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// Encodes `values` in `storage`.
pub fn encode(values: &[f32], storage: Storage) -> Vec<u8> {
    let mut out = Vec::with_capacity(storage.byte_len(values.len()));
    match storage {
        Storage::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Storage::F16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&f16_bits(v))),
        Storage::Q8 | Storage::Q4 => {
            let qmax = if storage == Storage::Q8 { 127.0 } else { 7.0 };
            let scales: Vec<f32> = values
                .chunks(BLOCK)
                .map(|b| {
                    let m = b.iter().fold(0f32, |a, v| a.max(v.abs()));
                    // Round the scale to f16 first, so the codes use the scale the reader sees.
                    half::f16::from_f32(m / qmax).to_f32()
                })
                .collect();
            let codes: Vec<i8> = values
                .chunks(BLOCK)
                .zip(&scales)
                .flat_map(|(b, &s)| {
                    b.iter().map(move |&v| {
                        if s == 0.0 || !s.is_finite() {
                            0
                        } else {
                            (v / s).round().clamp(-qmax, qmax) as i8
                        }
                    })
                })
                .collect();
            out = block_bytes(storage, &scales, &codes);
        }
    }
    out
}

/// Encodes q8/q4 blocks given their scales (one per 32 codes; f16 values) and codes
/// (−127…127 for q8, −8…7 for q4): the layout [`decode`] reads. For quantizers that choose
/// codes themselves (e.g. GPTQ); [`encode`] rounds each value to nearest.
pub fn encode_blocks(storage: Storage, scales: &[f32], codes: &[i8]) -> Result<Vec<u8>> {
    if !matches!(storage, Storage::Q8 | Storage::Q4) {
        return Err(Error::invalid(format!("{storage:?} has no blocks")));
    }
    if scales.len() != codes.len().div_ceil(BLOCK) {
        return Err(Error::invalid(format!(
            "{} scales for {} codes (one per {BLOCK})",
            scales.len(),
            codes.len()
        )));
    }
    if let Some(s) = scales
        .iter()
        .find(|&&s| half::f16::from_f32(s).to_f32().to_bits() != s.to_bits())
    {
        return Err(Error::invalid(format!(
            "scale {s} is not an f16 value: the codes would be read with another scale"
        )));
    }
    if storage == Storage::Q8 && codes.contains(&i8::MIN) {
        return Err(Error::invalid("q8 codes run from -127 to 127"));
    }
    if storage == Storage::Q4 && codes.iter().any(|q| !(-8..=7).contains(q)) {
        return Err(Error::invalid("q4 codes run from -8 to 7"));
    }
    Ok(block_bytes(storage, scales, codes))
}

fn block_bytes(storage: Storage, scales: &[f32], codes: &[i8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(storage.byte_len(codes.len()));
    for s in scales {
        out.extend_from_slice(&f16_bits(*s));
    }
    match storage {
        Storage::Q8 => out.extend(codes.iter().map(|&q| q as u8)),
        Storage::Q4 => {
            for pair in codes.chunks(2) {
                let nib = |q: i8| (q + 8) as u8;
                out.push(nib(pair[0]) | (pair.get(1).map_or(8, |&q| nib(q)) << 4));
            }
        }
        Storage::F32 | Storage::F16 => {}
    }
    out
}

/// Decodes `n` values stored in `storage` (the length was validated against the table).
pub fn decode(raw: &[u8], storage: Storage, n: usize) -> Vec<f32> {
    match storage {
        Storage::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Storage::F16 => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Storage::Q8 | Storage::Q4 => {
            let blocks = n.div_ceil(BLOCK);
            let (sc, q) = raw.split_at(blocks * 2);
            let scale = |i: usize| {
                half::f16::from_le_bytes([sc[2 * (i / BLOCK)], sc[2 * (i / BLOCK) + 1]]).to_f32()
            };
            if storage == Storage::Q8 {
                (0..n).map(|i| q[i] as i8 as f32 * scale(i)).collect()
            } else {
                (0..n)
                    .map(|i| {
                        let byte = q[i / 2];
                        let nib = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                        (nib as i32 - 8) as f32 * scale(i)
                    })
                    .collect()
            }
        }
    }
}

/// Writes a pack: the header, then each tensor encoded and aligned.
pub fn write_pack(
    var: &VarConfig,
    vae: &VqVaeConfig,
    class_names: Option<Vec<String>>,
    meta: BTreeMap<String, String>,
    tensors: &[(String, Vec<usize>, Vec<f32>, Storage)],
) -> Result<Vec<u8>> {
    write_pack_with(var, vae, class_names, meta, PackExtras::default(), tensors)
}

/// A tensor already in its stored form.
pub struct EncodedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
    pub bytes: std::sync::Arc<Vec<u8>>,
}

/// [`write_pack`] with a text encoder and/or a text adapter.
pub fn write_pack_with(
    var: &VarConfig,
    vae: &VqVaeConfig,
    class_names: Option<Vec<String>>,
    meta: BTreeMap<String, String>,
    extras: PackExtras,
    tensors: &[(String, Vec<usize>, Vec<f32>, Storage)],
) -> Result<Vec<u8>> {
    let mut encoded = Vec::with_capacity(tensors.len());
    for (name, shape, values, storage) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::invalid(format!(
                "tensor `{name}`: shape and value count differ"
            )));
        }
        encoded.push(EncodedTensor {
            name: name.clone(),
            shape: shape.clone(),
            storage: *storage,
            bytes: std::sync::Arc::new(encode(values, *storage)),
        });
    }
    write_pack_encoded(var, vae, class_names, meta, extras, &encoded)
}

/// Writes a pack of tensors already encoded (their lengths are checked against their shapes).
pub fn write_pack_encoded(
    var: &VarConfig,
    vae: &VqVaeConfig,
    class_names: Option<Vec<String>>,
    meta: BTreeMap<String, String>,
    extras: PackExtras,
    tensors: &[EncodedTensor],
) -> Result<Vec<u8>> {
    let mut entries = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for t in tensors {
        let n = t.shape.iter().product::<usize>();
        if t.bytes.len() != t.storage.byte_len(n) {
            return Err(Error::invalid(format!(
                "tensor `{}`: {} stored bytes for {n} {:?} values",
                t.name,
                t.bytes.len(),
                t.storage
            )));
        }
        entries.push(TensorEntry {
            name: t.name.clone(),
            shape: t.shape.clone(),
            storage: t.storage,
            offset,
            length: t.bytes.len(),
            crc32: crc32fast::hash(&t.bytes),
        });
        offset = (offset + t.bytes.len()).div_ceil(ALIGN) * ALIGN;
    }
    let blobs: Vec<&[u8]> = tensors.iter().map(|t| t.bytes.as_slice()).collect();
    let header = PackHeader {
        var: var.clone(),
        vae: vae.clone(),
        class_names,
        meta,
        requires: [
            ("lora", extras.lora.is_some()),
            ("clip-text", extras.clip.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| f.to_string())
        .collect(),
        text: extras.text,
        clip: extras.clip,
        adapter: extras.adapter,
        sampling: extras.sampling,
        lora: extras.lora,
        tensors: entries,
    };
    validate_header(&header)?;
    let json = serde_json::to_vec(&header).map_err(|e| Error::invalid(e.to_string()))?;
    let start = data_start(json.len());
    let mut out = Vec::with_capacity(start + offset);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(start, 0);
    for (e, blob) in header.tensors.iter().zip(&blobs) {
        out.resize(start + e.offset, 0);
        out.extend_from_slice(blob);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let v: Vec<f32> = (0..100)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for (s, q) in [(Storage::Q8, 127.0), (Storage::Q4, 7.0)] {
            let d = decode(&encode(&v, s), s, v.len());
            for (blk, dblk) in v.chunks(BLOCK).zip(d.chunks(BLOCK)) {
                let m = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
                for (x, y) in blk.iter().zip(dblk) {
                    assert!((x - y).abs() <= m / q * 0.5 + m * 1e-3, "{s:?}: {x} vs {y}");
                }
            }
        }
        let d = decode(&encode(&v, Storage::F32), Storage::F32, v.len());
        assert_eq!(d, v);
        assert_eq!(Storage::Q4.byte_len(100), 4 * 2 + 50);
    }

    #[test]
    fn chosen_codes_decode_as_given_and_bad_ones_are_refused() {
        // 33 codes: two blocks, the second partial (its odd nibble is padding).
        let codes: Vec<i8> = (0..33).map(|i| (i % 16) as i8 - 8).collect();
        let scales = [0.5f32, 0.25];
        let bytes = encode_blocks(Storage::Q4, &scales, &codes).unwrap();
        assert_eq!(bytes.len(), Storage::Q4.byte_len(33));
        let d = decode(&bytes, Storage::Q4, 33);
        for (i, (&q, v)) in codes.iter().zip(&d).enumerate() {
            assert_eq!(*v, q as f32 * scales[i / BLOCK]);
        }
        let q8: Vec<i8> = (0..32).map(|i| (i * 8 - 127) as i8).collect();
        let d = decode(
            &encode_blocks(Storage::Q8, &[2.0], &q8).unwrap(),
            Storage::Q8,
            32,
        );
        assert_eq!(d, q8.iter().map(|&q| q as f32 * 2.0).collect::<Vec<_>>());
        // Rounding to nearest goes through the same layout.
        let v: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 3.0).collect();
        let s: Vec<f32> = v
            .chunks(BLOCK)
            .map(|b| half::f16::from_f32(b.iter().fold(0f32, |a, x| a.max(x.abs())) / 7.0).to_f32())
            .collect();
        let c: Vec<i8> = v
            .iter()
            .enumerate()
            .map(|(i, x)| (x / s[i / BLOCK]).round().clamp(-7.0, 7.0) as i8)
            .collect();
        assert_eq!(
            encode_blocks(Storage::Q4, &s, &c).unwrap(),
            encode(&v, Storage::Q4)
        );
        for (st, sc, co) in [
            (Storage::Q4, vec![1.0f32], vec![8i8; 32]),
            (Storage::Q8, vec![1.0], vec![i8::MIN; 32]),
            (Storage::Q4, vec![1.0, 1.0], vec![0; 32]),
            (Storage::Q4, vec![0.1], vec![0; 32]),
            (Storage::F16, vec![1.0], vec![0; 32]),
        ] {
            assert!(encode_blocks(st, &sc, &co).is_err(), "{st:?} {sc:?}");
        }
    }

    #[test]
    fn headers_with_mismatched_text_parts_are_refused() {
        let (var, vae) = crate::fixtures::tiny_configs();
        let t = vec![("a".to_string(), vec![3, 40], vec![0.5f32; 120], Storage::Q4)];
        let p =
            Pack::from_bytes(write_pack(&var, &vae, None, BTreeMap::new(), &t).unwrap()).unwrap();
        let adapter = |embed_dim| crate::var::adapter::AdapterConfig {
            text_dim: 8,
            hidden: 8,
            embed_dim,
            alpha: 1.0,
            beta: 1.0,
        };
        let c = var.embed_dim;
        assert!(p.rewrite_header(|h| h.adapter = Some(adapter(c))).is_ok());
        let e = p
            .rewrite_header(|h| h.adapter = Some(adapter(c + 1)))
            .unwrap_err();
        assert!(e.to_string().contains("text adapter makes"), "{e}");
        let clip = ClipHeader {
            config: crate::text::ClipTextConfig {
                vocab_size: 2,
                hidden_size: 8,
                intermediate_size: 16,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                max_position_embeddings: 4,
                hidden_act: "quick_gelu".into(),
                layer_norm_eps: 1e-5,
                eos_token_id: 1,
                projection_dim: None,
            },
            vocab: vec!["<|startoftext|>".into(), "<|endoftext|>".into()],
            merges: Vec::new(),
        };
        let e = p
            .rewrite_header(|h| {
                h.adapter = Some(adapter(c));
                h.clip = Some(clip.clone());
            })
            .unwrap_err();
        assert!(e.to_string().contains("does not list `clip-text`"), "{e}");
        assert!(
            p.rewrite_header(|h| {
                h.adapter = Some(adapter(c));
                h.clip = Some(clip.clone());
                h.requires = vec!["clip-text".into()];
            })
            .is_ok()
        );
        let mut narrow = clip.clone();
        narrow.config.hidden_size = 4;
        let e = p
            .rewrite_header(|h| {
                h.adapter = Some(adapter(c));
                h.clip = Some(narrow);
                h.requires = vec!["clip-text".into()];
            })
            .unwrap_err();
        assert!(e.to_string().contains("gives 4-d embeddings"), "{e}");
    }

    #[test]
    fn every_prefix_of_a_pack_is_rejected_cleanly() {
        let (var, vae) = crate::fixtures::tiny_configs();
        let t = vec![("a".to_string(), vec![3, 40], vec![0.5f32; 120], Storage::Q4)];
        let bytes = write_pack(&var, &vae, None, BTreeMap::new(), &t).unwrap();
        let p = Pack::from_bytes(bytes.clone()).unwrap();
        assert_eq!(p.read("a").unwrap().len(), 120);
        for n in 0..bytes.len() {
            assert!(Pack::from_bytes(bytes[..n].to_vec()).is_err(), "prefix {n}");
        }
        // A flipped data byte fails its checksum; a flipped header byte fails to parse.
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(Pack::from_bytes(bad).unwrap().read("a").is_err());
    }
}
