//! Where model parameters come from: a checkpoint (with strict key/shape checks) or a fresh
//! initialisation (for training from scratch). Model constructors ask a [`ParamSource`] for
//! each tensor by its official state-dict name, in PyTorch layout.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::rng::CounterRng;

/// How a parameter is initialised when it is not loaded.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    Zeros,
    Ones,
    Const(f32),
    /// Normal(0, std), truncated at ±2 (absolute, as `torch.nn.init.trunc_normal_`).
    TruncNormal(f32),
    /// Uniform(-bound, bound).
    Uniform(f32),
}

/// A supplier of named parameters in PyTorch layout.
pub trait ParamSource {
    /// The values of `key`, whose shape must be `shape` (row-major).
    fn get(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>>;
    /// A persistent buffer the model recomputes itself; a checkpoint may hold it.
    fn skip_buffer(&mut self, key: &str, shape: &[usize]) -> Result<()>;
    /// `key` kept in its stored q8/q4 blocks (`shape[0]` rows of `shape[1..]` values), when the
    /// source holds it so and was asked to keep weights packed. `None`: ask [`Self::get`].
    fn get_packed(
        &mut self,
        _key: &str,
        _shape: &[usize],
        _init: Init,
    ) -> Result<Option<crate::quant::PackedMatrix>> {
        Ok(None)
    }
}

/// A loader's view of a [`ParamSource`]: the key prefix of the module it loads and the device
/// its tensors go to. `s.pp("attn")` is the scope of a child module (keys `prefix.attn.…`);
/// `s.param("weight", …)` reads `prefix.weight`. Model constructors take a scope, so a
/// module's loader names only its own parameters.
pub struct Scope<'a> {
    src: &'a mut dyn ParamSource,
    prefix: String,
    device: Device,
}

impl<'a> Scope<'a> {
    /// The root scope (no prefix) of `src`, building tensors on `device`.
    pub fn new(src: &'a mut dyn ParamSource, device: &Device) -> Self {
        Self {
            src,
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// The scope of the child module `name` (`blocks.3`, `attn`, `ffn.fc1`).
    pub fn pp(&mut self, name: impl std::fmt::Display) -> Scope<'_> {
        let prefix = self.key(&name.to_string());
        Scope {
            src: &mut *self.src,
            prefix,
            device: self.device.clone(),
        }
    }

    /// The full state-dict key of `name` in this scope.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// This scope's prefix (`""` at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The values of `name` (row-major, PyTorch layout), whose shape must be `shape`.
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        let key = self.key(name);
        self.src.get(&key, shape, init)
    }

    /// `name` kept in its stored q8/q4 blocks, when the source holds it so (see
    /// [`ParamSource::get_packed`]).
    pub fn get_packed(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
    ) -> Result<Option<crate::quant::PackedMatrix>> {
        let key = self.key(name);
        self.src.get_packed(&key, shape, init)
    }

    /// A persistent buffer the model recomputes itself (a checkpoint may hold it).
    pub fn skip_buffer(&mut self, name: &str, shape: &[usize]) -> Result<()> {
        let key = self.key(name);
        self.src.skip_buffer(&key, shape)
    }

    /// `name` as a parameter tensor of rank `D` on this scope's device.
    pub fn param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Param<Tensor<D>>> {
        let data = self.get(name, &shape, init)?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(data, shape),
            &self.device,
        )))
    }
}

/// Writes a model's tensors straight into a pack's stored form as the model asks for them:
/// each value comes from `inner`, matrices are encoded in `storage` (q8/q4: and handed back
/// packed, so the model is built without an f32 copy of them; f16/f32: handed back dense),
/// other tensors are kept f32. For official-size test packs (`native-trainer fixture official`).
pub struct PackingSink<'a> {
    inner: &'a mut dyn ParamSource,
    prefix: String,
    storage: crate::pack::Storage,
    /// A matrix the loader will now ask for densely (`storage` does not stay packed).
    dense_matrix: Option<String>,
    pub tensors: Vec<crate::pack::EncodedTensor>,
}

impl<'a> PackingSink<'a> {
    pub fn new(
        inner: &'a mut dyn ParamSource,
        prefix: &str,
        storage: crate::pack::Storage,
    ) -> Self {
        Self {
            inner,
            prefix: prefix.to_string(),
            storage,
            dense_matrix: None,
            tensors: Vec::new(),
        }
    }
}

impl ParamSource for PackingSink<'_> {
    fn get(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        let v = self.inner.get(key, shape, init)?;
        let storage = match self.dense_matrix.take() {
            Some(k) if k == key => self.storage,
            _ => crate::pack::Storage::F32,
        };
        self.tensors.push(crate::pack::EncodedTensor {
            name: format!("{}{key}", self.prefix),
            shape: shape.to_vec(),
            storage,
            bytes: std::sync::Arc::new(crate::pack::encode(&v, storage)),
        });
        Ok(v)
    }
    fn skip_buffer(&mut self, _key: &str, _shape: &[usize]) -> Result<()> {
        Ok(())
    }
    fn get_packed(
        &mut self,
        key: &str,
        shape: &[usize],
        init: Init,
    ) -> Result<Option<crate::quant::PackedMatrix>> {
        let rows = shape.first().copied().unwrap_or(0);
        let cols = shape.iter().skip(1).product::<usize>();
        if !cols.is_multiple_of(crate::pack::BLOCK) {
            return Ok(None);
        }
        if !matches!(
            self.storage,
            crate::pack::Storage::Q8 | crate::pack::Storage::Q4
        ) {
            self.dense_matrix = Some(key.to_string()); // `get` stores it in `storage`
            return Ok(None);
        }
        let v = self.inner.get(key, shape, init)?;
        let bytes = std::sync::Arc::new(crate::pack::encode(&v, self.storage));
        drop(v);
        let len = bytes.len();
        let m = crate::quant::PackedMatrix::new(bytes.clone(), 0, len, self.storage, rows, cols)?;
        self.tensors.push(crate::pack::EncodedTensor {
            name: format!("{}{key}", self.prefix),
            shape: shape.to_vec(),
            storage: self.storage,
            bytes,
        });
        Ok(Some(m))
    }
}

/// Refuses a weight tensor holding NaN or ±∞: such a model would load and then sample
/// nothing but zeros or garbage, with no message.
pub fn check_finite(key: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(crate::Error::Format {
            format: "weights",
            reason: format!(
                "tensor `{key}` holds a non-finite value ({} at index {i}): the file is corrupt",
                values[i]
            ),
        }),
    }
}

impl ParamSource for Checkpoint {
    fn get(&mut self, key: &str, shape: &[usize], _init: Init) -> Result<Vec<f32>> {
        let v = self.take_f32(key, shape)?;
        check_finite(key, &v)?;
        Ok(v)
    }
    fn skip_buffer(&mut self, key: &str, shape: &[usize]) -> Result<()> {
        Checkpoint::skip_buffer(self, key, shape)
    }
}

/// Fresh parameters from the project's counter-based RNG: the same seed and key always give
/// the same values, independent of construction order.
pub struct RandomInit {
    rng: CounterRng,
}

impl RandomInit {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: CounterRng::new(seed),
        }
    }
}

impl ParamSource for RandomInit {
    fn get(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        let stream = crate::rng::fnv1a64(key.as_bytes());
        Ok(match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Const(v) => vec![v; n],
            Init::Uniform(b) => (0..n as u64)
                .map(|i| ((self.rng.uniform(stream, i) * 2.0 - 1.0) * b as f64) as f32)
                .collect(),
            Init::TruncNormal(std) => (0..n as u64)
                .map(|i| {
                    let mut j = 0u64;
                    loop {
                        let z = self.rng.normal(stream, i + (j << 40)) * std as f64;
                        if z.abs() <= 2.0 {
                            break z as f32;
                        }
                        j += 1;
                    }
                })
                .collect(),
        })
    }
    fn skip_buffer(&mut self, _key: &str, _shape: &[usize]) -> Result<()> {
        Ok(())
    }
}

/// Wraps a source and keeps a copy of every tensor it hands out, under `prefix` + name.
pub struct Recorder<'a> {
    inner: &'a mut dyn ParamSource,
    prefix: String,
    pub tensors: Vec<crate::state_dict::Entry>,
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a mut dyn ParamSource, prefix: &str) -> Self {
        Self {
            inner,
            prefix: prefix.to_string(),
            tensors: Vec::new(),
        }
    }
}

impl ParamSource for Recorder<'_> {
    fn get(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        let v = self.inner.get(key, shape, init)?;
        self.tensors.push(crate::state_dict::Entry::f32(
            format!("{}{key}", self.prefix),
            shape.to_vec(),
            v.clone(),
        ));
        Ok(v)
    }
    fn skip_buffer(&mut self, key: &str, shape: &[usize]) -> Result<()> {
        self.inner.skip_buffer(key, shape)
    }
}

/// The official `VAR.init_weights` on top of a random source, for training from scratch:
/// `head.weight ×init_head`, `head_nm.ada_lin.1.weight ×init_adaln`, per block
/// `attn.proj.weight` and `ffn.fc2.weight` ÷√(2·depth), and `ada_lin.1.weight` rows
/// `[2C:]` ×init_adaln, rows `[:2C]` (the gammas) ×init_adaln_gamma. Everything else is
/// the inner source's trunc-normal / constant initialisation.
pub struct VarInit<S: ParamSource> {
    pub inner: S,
    pub depth: usize,
    pub init_adaln: f32,
    pub init_adaln_gamma: f32,
    pub init_head: f32,
}

impl<S: ParamSource> ParamSource for VarInit<S> {
    fn get(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        let mut v = self.inner.get(key, shape, init)?;
        let scale_all = |v: &mut [f32], s: f32| v.iter_mut().for_each(|x| *x *= s);
        if key == "head.weight" {
            scale_all(&mut v, self.init_head);
        } else if key == "head_nm.ada_lin.1.weight" {
            scale_all(&mut v, self.init_adaln);
        } else if key.starts_with("blocks.") {
            if key.ends_with(".attn.proj.weight") || key.ends_with(".ffn.fc2.weight") {
                scale_all(&mut v, 1.0 / (2.0 * self.depth as f32).sqrt());
            } else if key.ends_with(".ada_lin.1.weight") {
                // [6C, C]: rows 0..2C are gamma1/gamma2.
                let c = shape[1];
                let (gammas, rest) = v.split_at_mut(2 * c * c);
                scale_all(gammas, self.init_adaln_gamma);
                scale_all(rest, self.init_adaln);
            }
        }
        Ok(v)
    }
    fn skip_buffer(&mut self, key: &str, shape: &[usize]) -> Result<()> {
        self.inner.skip_buffer(key, shape)
    }
}
