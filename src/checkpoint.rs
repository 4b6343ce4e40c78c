//! Reading named tensors from checkpoints: safetensors (everywhere) and official PyTorch
//! `.pth` files (native, through burn-store's pickle reader, which never executes code).
//!
//! A [`Checkpoint`] is consumed key by key by the model loaders; each `take` checks the
//! shape, and whatever is left at the end is reported as unexpected.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result, Shape};

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    Other(&'static str),
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Other(_) => 0,
        }
    }
    fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::Other(s) => s,
        }
    }
}

enum Source {
    Slice {
        buf: Arc<[u8]>,
        start: usize,
        end: usize,
    },
    #[cfg(feature = "pytorch")]
    Lazy(pytorch_reader::Tensor),
}

struct Entry {
    shape: Vec<usize>,
    dtype: DType,
    source: Source,
}

impl Entry {
    fn bytes(&self, key: &str) -> Result<std::borrow::Cow<'_, [u8]>> {
        let bytes = match &self.source {
            Source::Slice { buf, start, end } => std::borrow::Cow::Borrowed(&buf[*start..*end]),
            #[cfg(feature = "pytorch")]
            Source::Lazy(t) => std::borrow::Cow::Owned(t.read().map_err(|e| Error::Format {
                format: "PyTorch",
                reason: format!("cannot read tensor `{key}`: {e}"),
            })?),
        };
        let want = self.shape.iter().product::<usize>() * self.dtype.size();
        if bytes.len() != want {
            return Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "tensor `{key}` holds {} bytes, its shape {} and dtype {} need {want}",
                    bytes.len(),
                    Shape(self.shape.clone()),
                    self.dtype.name()
                ),
            });
        }
        Ok(bytes)
    }
}

/// A set of named tensors read from a checkpoint file or buffer.
pub struct Checkpoint {
    entries: BTreeMap<String, Entry>,
    format: &'static str,
    /// safetensors `__metadata__` (e.g. `patch_nums` written by the trainer).
    metadata: BTreeMap<String, String>,
}

/// A tensor read out of a checkpoint as `f32` values.
#[derive(Clone, Debug)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Checkpoint {
    /// Reads a checkpoint from bytes: safetensors. (PyTorch archives are read from files,
    /// see [`Checkpoint::open`].)
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        if bytes.starts_with(b"PK\x03\x04") {
            return Err(Error::Format {
                format: "checkpoint",
                reason: "this is a PyTorch .pth archive: open it from a file natively, or convert it with `native-trainer export`".into(),
            });
        }
        Self::from_safetensors(bytes)
    }

    /// Reads a checkpoint file, safetensors or PyTorch `.pth`, recognised by its content.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |err| Error::Io {
            path: path.display().to_string(),
            err,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        if bytes.starts_with(b"PK\x03\x04") {
            #[cfg(feature = "pytorch")]
            {
                drop(bytes);
                return Self::from_pth_file(path);
            }
            #[cfg(not(feature = "pytorch"))]
            return Err(Error::Format {
                format: "checkpoint",
                reason: "PyTorch .pth support is not compiled in (feature `pytorch`)".into(),
            });
        }
        Self::from_safetensors(bytes)
    }

    /// Parses a safetensors buffer. Every offset is checked against the buffer.
    pub fn from_safetensors(bytes: Vec<u8>) -> Result<Self> {
        let (n, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Format {
                format: "safetensors",
                reason: e.to_string(),
            })?;
        let data_start = 8 + n;
        let buf: Arc<[u8]> = bytes.into();
        let mut entries = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F64 => DType::F64,
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::I64 => DType::I64,
                safetensors::Dtype::I32 => DType::I32,
                _ => DType::Other("unsupported"),
            };
            let (s, e) = info.data_offsets;
            let (start, end) = (data_start + s, data_start + e);
            if end > buf.len() || start > end {
                return Err(Error::Format {
                    format: "safetensors",
                    reason: format!("tensor `{name}` lies outside the file"),
                });
            }
            entries.insert(
                name.to_string(),
                Entry {
                    shape: info.shape.clone(),
                    dtype,
                    source: Source::Slice {
                        buf: buf.clone(),
                        start,
                        end,
                    },
                },
            );
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Self {
            entries,
            format: "safetensors",
            metadata,
        })
    }

    /// Reads an official PyTorch checkpoint (`torch.save(state_dict)`). Only tensors are
    /// extracted; no pickled code is run.
    #[cfg(feature = "pytorch")]
    pub fn from_pth_file(path: &std::path::Path) -> Result<Self> {
        let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| Error::Format {
            format: "PyTorch",
            reason: e.to_string(),
        })?;
        let mut entries = BTreeMap::new();
        for (name, t) in reader.into_tensors() {
            use pytorch_reader::DType as P;
            let dtype = match t.dtype() {
                P::F64 => DType::F64,
                P::F32 => DType::F32,
                P::F16 => DType::F16,
                P::BF16 => DType::BF16,
                P::I64 => DType::I64,
                P::I32 => DType::I32,
                _ => DType::Other("unsupported"),
            };
            entries.insert(
                name,
                Entry {
                    shape: t.shape().to_vec(),
                    dtype,
                    source: Source::Lazy(t),
                },
            );
        }
        Ok(Self {
            entries,
            format: "PyTorch",
            metadata: BTreeMap::new(),
        })
    }

    /// The file's metadata strings (safetensors `__metadata__`; empty for `.pth`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The patch list recorded in the metadata (`patch_nums`, a JSON list), if any.
    pub fn recorded_patch_nums(&self) -> Result<Option<crate::config::PatchNums>> {
        match self.metadata.get("patch_nums") {
            None => Ok(None),
            Some(s) => {
                let v: Vec<usize> = serde_json::from_str(s).map_err(|e| Error::Format {
                    format: "checkpoint",
                    reason: format!("metadata patch_nums `{s}` is not a list of sizes: {e}"),
                })?;
                Ok(Some(crate::config::PatchNums::new(v)?))
            }
        }
    }

    /// The container format this checkpoint was read from.
    pub fn format(&self) -> &'static str {
        self.format
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// The shape of `key` when it has `rank` dimensions, none of them 0 (`None` when absent):
    /// what the configuration is read from, so a mis-shaped tensor is an error, not an index
    /// out of bounds or a division by zero.
    pub fn dims(&self, key: &str, rank: usize) -> Result<Option<&[usize]>> {
        match self.shape(key) {
            None => Ok(None),
            Some(s) if s.len() == rank && !s.contains(&0) => Ok(Some(s)),
            Some(s) => Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "tensor `{key}` has shape {}, expected {rank} dimensions, none of them 0",
                    Shape(s.to_vec())
                ),
            }),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes `key` and returns its values as `f32`, checking the shape.
    pub fn take_f32(&mut self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let Some(entry) = self.entries.get(key) else {
            return Err(Error::MissingKey {
                key: key.into(),
                expected: Shape(expected.to_vec()),
            });
        };
        if entry.shape != expected {
            return Err(Error::ShapeMismatch {
                key: key.into(),
                found: Shape(entry.shape.clone()),
                expected: Shape(expected.to_vec()),
            });
        }
        let out = self.read_f32(key)?.data;
        self.entries.remove(key);
        Ok(out)
    }

    fn entry(&self, key: &str) -> Result<&Entry> {
        self.entries.get(key).ok_or_else(|| Error::MissingKey {
            key: key.into(),
            expected: Shape(vec![]),
        })
    }

    /// Reads `key` as `f32` without consuming it.
    pub fn read_f32(&self, key: &str) -> Result<F32Tensor> {
        let entry = self.entry(key)?;
        let bytes = entry.bytes(key)?;
        let data = match entry.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::DTypeMismatch {
                    key: key.into(),
                    found: other.name().into(),
                    expected: "a float type (F32, F16, BF16, F64)".into(),
                });
            }
        };
        Ok(F32Tensor {
            shape: entry.shape.clone(),
            data,
        })
    }

    /// Reads a float tensor as `f64` (exact for F64, widened otherwise) without consuming it.
    pub fn read_f64(&self, key: &str) -> Result<Vec<f64>> {
        let entry = self.entry(key)?;
        if entry.dtype == DType::F64 {
            let bytes = entry.bytes(key)?;
            return Ok(bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect());
        }
        Ok(self
            .read_f32(key)?
            .data
            .into_iter()
            .map(f64::from)
            .collect())
    }

    /// Reads an integer tensor as `i64` without consuming it.
    pub fn read_i64(&self, key: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let entry = self.entry(key)?;
        let bytes = entry.bytes(key)?;
        let data = match entry.dtype {
            DType::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            DType::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
            other => {
                return Err(Error::DTypeMismatch {
                    key: key.into(),
                    found: other.name().into(),
                    expected: "an integer type (I64, I32)".into(),
                });
            }
        };
        Ok((entry.shape.clone(), data))
    }

    /// Removes a buffer the model recomputes (`lvl_1L`, masks, statistics), checking its
    /// shape when present. Absent buffers are fine.
    pub fn skip_buffer(&mut self, key: &str, expected: &[usize]) -> Result<()> {
        if let Some(e) = self.entries.get(key) {
            if e.shape != expected {
                return Err(Error::ShapeMismatch {
                    key: key.into(),
                    found: Shape(e.shape.clone()),
                    expected: Shape(expected.to_vec()),
                });
            }
            self.entries.remove(key);
        }
        Ok(())
    }

    /// Builds a model from this whole state dict strictly (every key must be used): with
    /// `cfg`, or the configuration `infer` reads off the tensor shapes.
    pub fn load_strict<M, C>(
        mut self,
        cfg: Option<C>,
        infer: impl FnOnce(&Checkpoint) -> Result<C>,
        load: impl FnOnce(&mut Checkpoint, &C) -> Result<M>,
    ) -> Result<(M, C)> {
        let cfg = match cfg {
            Some(c) => c,
            None => infer(&self)?,
        };
        let m = load(&mut self, &cfg)?;
        self.finish()?;
        Ok((m, cfg))
    }

    /// Fails with the list of keys nobody consumed.
    pub fn finish(self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        Err(Error::UnexpectedKeys {
            keys: self
                .entries
                .into_iter()
                .map(|(k, e)| (k, Shape(e.shape)))
                .collect(),
        })
    }

    /// Splits off every key starting with `prefix` (the prefix is removed from the names).
    pub fn split_prefix(&mut self, prefix: &str) -> Checkpoint {
        let keys: Vec<String> = self
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let mut entries = BTreeMap::new();
        for k in keys {
            let e = self.entries.remove(&k).expect("listed");
            entries.insert(k[prefix.len()..].to_string(), e);
        }
        Checkpoint {
            entries,
            format: self.format,
            metadata: self.metadata.clone(),
        }
    }
}
