//! Model → official state dict: every parameter under its PyTorch name and in PyTorch layout,
//! plus the persistent buffers the official modules keep, so a model trained here loads with
//! `load_state_dict(strict=True)` in the official code and with [`crate::Checkpoint`] here.
//!
//! Names come from burn's module traversal (field names), translated by [`OfficialPath`]
//! where this crate's structs differ from the PyTorch modules. The same names key optimizer
//! state, so they are stable across runs.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Values of one state-dict tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// One named tensor of a state dict, PyTorch layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Values,
}

impl Entry {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, v: Vec<f32>) -> Self {
        Self {
            name: name.into(),
            shape,
            values: Values::F32(v),
        }
    }

    /// The values of an f32 tensor (`None` for an integer one).
    pub fn f32_values(&self) -> Option<&[f32]> {
        match &self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }

    /// The values of an f32 tensor, to change in place (`None` for an integer one).
    pub fn f32_values_mut(&mut self) -> Option<&mut Vec<f32>> {
        match &mut self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }

    /// Name, shape and values of an f32 tensor (`None` for an integer one).
    pub fn into_f32(self) -> Option<(String, Vec<usize>, Vec<f32>)> {
        match self.values {
            Values::F32(v) => Some((self.name, self.shape, v)),
            Values::I64(_) => None,
        }
    }
}

/// The module path of the parameter being visited, translated to the official key.
#[derive(Default, Debug, Clone)]
pub struct OfficialPath {
    /// `(field or index, type of the container that holds it)`.
    stack: Vec<(String, String)>,
}

impl OfficialPath {
    pub fn enter(&mut self, name: &str, container: &str) {
        self.stack.push((name.to_string(), container.to_string()));
    }
    pub fn exit(&mut self) {
        self.stack.pop();
    }

    /// The official state-dict key of the current parameter.
    pub fn key(&self) -> String {
        let mut parts: Vec<&str> = Vec::with_capacity(self.stack.len());
        for (name, container) in &self.stack {
            let ty = container.strip_prefix("Struct:").unwrap_or(container);
            let seg = match (name.as_str(), ty) {
                // `LevelBlocks` groups `block.{j}` / `attn.{j}` of a level; PyTorch has no such module.
                ("blocks", "DownLevel" | "UpLevel") => continue,
                // `Sequential(SiLU, Linear)`: the Linear is item 1.
                ("ada_lin", "AdaLnSelfAttn" | "AdaLnBeforeHead") => "ada_lin.1",
                ("pos_1lc", "Var") => "pos_1LC",
                ("class_emb", "Var") => "class_emb.weight",
                ("lvl_embed", "Var") => "lvl_embed.weight",
                ("scale_mul", "SelfAttention") => "scale_mul_1H11",
                ("embedding", "VectorQuantizer") => "embedding.weight",
                // LoRA updates sit beside the weight they change, under PEFT's names.
                ("lora", "Linear") => continue,
                ("lora_a", "LoraPair") => "lora_A.weight",
                ("lora_b", "LoraPair") => "lora_B.weight",
                (n, _) => n,
            };
            parts.push(seg);
        }
        parts.join(".")
    }

    /// Whether the current parameter is a `Linear` weight (kept `[in, out]` here,
    /// `[out, in]` in PyTorch).
    pub fn is_linear_weight(&self) -> bool {
        matches!(self.stack.last(), Some((n, c))
            if (n == "weight" && c == "Struct:Linear")
                || ((n == "lora_a" || n == "lora_b") && c == "Struct:LoraPair"))
    }
}

/// Calls `f(key, is_linear_weight, tensor)` for every float parameter of `module`, in
/// traversal order.
pub fn for_each_param<M: Module>(module: &M, mut f: impl FnMut(&str, bool, Tensor<1>, &[usize])) {
    struct V<'a, F> {
        path: OfficialPath,
        f: &'a mut F,
    }
    impl<F: FnMut(&str, bool, Tensor<1>, &[usize])> ModuleVisitor for V<'_, F> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let dims = t.dims();
            let flat: Tensor<1> = t.reshape([dims.iter().product::<usize>()]);
            (self.f)(&self.path.key(), self.path.is_linear_weight(), flat, &dims);
        }
    }
    module.visit(&mut V {
        path: OfficialPath::default(),
        f: &mut f,
    });
}

/// All parameters of `module` under their official names and layouts (reads them back,
/// so native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn parameters<M: Module>(module: &M) -> crate::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut err = None;
    for_each_param(module, |key, linear_weight, flat, dims| {
        if err.is_some() {
            return;
        }
        match crate::readback::block_on(crate::readback::read_f32(flat)) {
            Ok(v) => {
                let (shape, v) = if linear_weight {
                    let (din, dout) = (dims[0], dims[1]);
                    let mut t = vec![0f32; v.len()];
                    for i in 0..din {
                        for o in 0..dout {
                            t[o * din + i] = v[i * dout + o];
                        }
                    }
                    (vec![dout, din], t)
                } else {
                    (dims.to_vec(), v)
                };
                out.push(Entry::f32(key, shape, v));
            }
            Err(e) => err = Some(e),
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Writes a state dict as safetensors (F32 and I64 tensors), streaming, with optional
/// `__metadata__` strings.
pub fn write_safetensors<W: std::io::Write>(
    out: &mut W,
    entries: &[Entry],
    metadata: Option<&std::collections::BTreeMap<String, String>>,
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(m));
    }
    let mut offset = 0usize;
    for e in entries {
        let (dtype, n) = match &e.values {
            Values::F32(v) => ("F32", v.len() * 4),
            Values::I64(v) => ("I64", v.len() * 8),
        };
        header.insert(
            e.name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": e.shape, "data_offsets": [offset, offset + n] }),
        );
        offset += n;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    out.write_all(&(h.len() as u64).to_le_bytes())?;
    out.write_all(&h)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for e in entries {
        buf.clear();
        match &e.values {
            Values::F32(v) => {
                for chunk in v.chunks(1 << 14) {
                    buf.clear();
                    chunk
                        .iter()
                        .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                    out.write_all(&buf)?;
                }
            }
            Values::I64(v) => {
                for chunk in v.chunks(1 << 13) {
                    buf.clear();
                    chunk
                        .iter()
                        .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                    out.write_all(&buf)?;
                }
            }
        }
    }
    Ok(())
}
