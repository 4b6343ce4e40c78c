//! Weights kept quantized in memory, and the matmul that dequantizes them as it goes.
//!
//! A pack stores a q8/q4 matrix in PyTorch's `[out, in]` layout as blocks of 32 values along
//! each row (one f16 scale per block, then the codes; see [`crate::pack::Storage`]). A
//! [`PackedMatrix`] keeps exactly those bytes, never re-quantized and never transposed: the
//! values it hands to the matmul are bit for bit the ones the dequantize-on-load path builds.
//!
//! [`PackedMatrix::matmul_t`] computes `x Wᵀ` tile by tile: a few dozen rows of `W` are
//! dequantized into a small scratch buffer that stays in cache and multiplied with `gemm` (the
//! kernel burn's CPU backend uses), tiles running in parallel (in turn in the single-threaded
//! wasm module, where rayon runs everything on the calling thread). Memory is the packed
//! bytes plus one tile per thread, instead of four bytes per weight.
//!
//! On a GPU, [`DeviceMatrix`] keeps the same codes in device memory (four q8 or eight q4 codes
//! per 32-bit word, the scales as f32) and rebuilds the f32 matrix with a few elementwise
//! tensor ops each time a layer runs, so only one layer's weight is ever f32 at a time. The
//! values are the same products (code × scale) as on the CPU, bit for bit.

use std::sync::Arc;

use rayon::prelude::*;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::pack::{BLOCK, Storage};

/// A `[rows, cols]` matrix in a pack's q8/q4 block layout (rows = PyTorch's `out`).
#[derive(Clone)]
pub struct PackedMatrix {
    /// The buffer holding the stored bytes (a whole pack, shared: nothing is copied).
    buf: Arc<Vec<u8>>,
    /// Where this tensor's bytes start in `buf`: `rows · cols / 32` f16 scales, then the codes.
    start: usize,
    len: usize,
    rows: usize,
    cols: usize,
    storage: Storage,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedMatrix({:?}, [{}, {}])",
            self.storage, self.rows, self.cols
        )
    }
}

/// Floats of one dequantized tile (256 KiB): `tile_rows · cols` stays near this.
const TILE_FLOATS: usize = 1 << 16;

impl PackedMatrix {
    /// Takes a tensor's stored bytes, `buf[start..start + len]`. Blocks must not straddle rows
    /// (`cols` a multiple of 32), the length must match, and every scale must be finite.
    pub fn new(
        buf: Arc<Vec<u8>>,
        start: usize,
        len: usize,
        storage: Storage,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        if !matches!(storage, Storage::Q8 | Storage::Q4) {
            return Err(Error::invalid(format!(
                "only q8 and q4 weights stay packed, not {storage:?}"
            )));
        }
        if cols == 0 || rows == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(Error::invalid(format!(
                "a packed matrix needs rows of a multiple of {BLOCK} values, got [{rows}, {cols}]"
            )));
        }
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::invalid("packed matrix too large"))?;
        if len != storage.byte_len(n) || start.checked_add(len).is_none_or(|e| e > buf.len()) {
            return Err(Error::invalid(format!(
                "packed matrix [{rows}, {cols}] {storage:?} needs {} bytes, got {len}",
                storage.byte_len(n),
            )));
        }
        let m = Self {
            buf,
            start,
            len,
            rows,
            cols,
            storage,
        };
        if let Some(b) = (0..n / BLOCK).find(|&b| !m.scale(b).is_finite()) {
            return Err(Error::Format {
                format: "weights",
                reason: format!("block {b} of a packed matrix has a non-finite scale"),
            });
        }
        Ok(m)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Bytes held in memory.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    #[inline]
    fn scale(&self, block: usize) -> f32 {
        let b = self.bytes();
        half::f16::from_le_bytes([b[2 * block], b[2 * block + 1]]).to_f32()
    }

    /// Rows `r0..r0 + out.len() / cols`, dequantized into `out` (row-major).
    pub fn dequantize_rows(&self, r0: usize, out: &mut [f32]) {
        let per_row = self.cols / BLOCK;
        let nblocks = self.rows * per_row;
        let bytes = self.bytes();
        let (scales, codes) = bytes.split_at(2 * nblocks);
        let b0 = r0 * per_row;
        for (i, dst) in out.chunks_exact_mut(BLOCK).enumerate() {
            let b = b0 + i;
            let s = half::f16::from_le_bytes([scales[2 * b], scales[2 * b + 1]]).to_f32();
            match self.storage {
                Storage::Q8 => {
                    let q = &codes[b * BLOCK..(b + 1) * BLOCK];
                    for (d, &c) in dst.iter_mut().zip(q) {
                        *d = c as i8 as f32 * s;
                    }
                }
                _ => {
                    // The 16 values a nibble can stand for in this block, looked up instead
                    // of converted: the same products (code × scale), bit for bit.
                    let lut: [f32; 16] = std::array::from_fn(|q| (q as i32 - 8) as f32 * s);
                    let q = &codes[b * BLOCK / 2..(b + 1) * BLOCK / 2];
                    for (d, &c) in dst.chunks_exact_mut(2).zip(q) {
                        d[0] = lut[(c & 0x0f) as usize];
                        d[1] = lut[(c >> 4) as usize];
                    }
                }
            }
        }
    }

    /// The whole matrix as f32, `[rows, cols]` row-major (what the pack's reader decodes).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let tr = self.tile_rows();
        out.par_chunks_mut(tr * self.cols)
            .enumerate()
            .for_each(|(t, o)| self.dequantize_rows(t * tr, o));
        out
    }

    /// Rows of `W` per tile.
    fn tile_rows(&self) -> usize {
        (TILE_FLOATS / self.cols).clamp(8, 256).min(self.rows)
    }

    /// `x Wᵀ`: `x` is `[m, cols]` row-major, the result `[m, rows]` row-major.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "matmul_t: x is not [m, cols]");
        let n = self.rows;
        let mut out = vec![0f32; m * n];
        if m == 0 {
            return out;
        }
        let tr = self.tile_rows();
        let tiles = n.div_ceil(tr);
        let dst = SendPtr(out.as_mut_ptr());
        let run = |t: usize, scratch: &mut Vec<f32>| {
            let r0 = t * tr;
            let rows = tr.min(n - r0);
            scratch.resize(rows * self.cols, 0.0);
            self.dequantize_rows(r0, scratch);
            // out[:, r0..r0 + rows] = x · scratchᵀ; scratch is [rows, k] row-major, i.e. the
            // right-hand [k, rows] operand column-major.
            // SAFETY: `x` is [m, k], `scratch` [rows, k], and the destination columns
            // r0..r0 + rows of the [m, n] output belong to this tile alone.
            unsafe {
                gemm::gemm(
                    m,
                    rows,
                    self.cols,
                    dst.get().add(r0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    self.cols as isize,
                    scratch.as_ptr(),
                    self.cols as isize,
                    1,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        };
        (0..tiles)
            .into_par_iter()
            .for_each_init(Vec::new, |s, t| run(t, s));
        out
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each parallel task writes a disjoint set of columns (see `matmul_t`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Where a layer's packed weight lives: on the host (the CPU backend multiplies the blocks
/// directly) or on a GPU (dequantized per use).
#[derive(Clone, Debug)]
pub enum PackedWeight {
    Host(PackedMatrix),
    /// Boxed: a device tensor handle is large beside the host matrix's few words.
    Device(Box<DeviceMatrix>),
}

impl PackedWeight {
    /// `m` for a model built on `device`: kept as it is on the CPU, uploaded for a GPU.
    pub fn new(m: PackedMatrix, device: &Device) -> Self {
        if *device == Device::flex() {
            Self::Host(m)
        } else {
            Self::Device(Box::new(DeviceMatrix::upload(&m, device)))
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Self::Host(m) => m.rows,
            Self::Device(m) => m.rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Self::Host(m) => m.cols,
            Self::Device(m) => m.cols,
        }
    }

    /// The whole matrix as f32, `[rows, cols]`, on `device` (a host matrix is uploaded there).
    pub fn to_tensor(&self, device: &Device) -> Tensor<2> {
        match self {
            Self::Host(m) => {
                Tensor::from_data(TensorData::new(m.to_f32(), [m.rows, m.cols]), device)
            }
            Self::Device(m) => m.dequantize(),
        }
    }
}

/// A q8/q4 matrix in device memory: the codes as 32-bit words, `[rows, cols / per_word]`
/// (four q8 or eight q4 codes per word, little-endian, the first code in the lowest bits, as
/// in the pack), and one f32 scale per block of 32, `[rows, cols / 32, 1]`.
#[derive(Clone, Debug)]
pub struct DeviceMatrix {
    words: Tensor<2, Int>,
    scales: Tensor<3>,
    storage: Storage,
    rows: usize,
    cols: usize,
}

impl DeviceMatrix {
    /// Uploads a packed matrix's codes and scales to `device` as they are (nothing re-quantized).
    pub fn upload(m: &PackedMatrix, device: &Device) -> Self {
        let blocks = m.rows * m.cols / BLOCK;
        let (scales, codes) = m.bytes().split_at(2 * blocks);
        let scales: Vec<f32> = scales
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        // Rows of whole blocks: a row's codes are 32 (q8) or 16 (q4) bytes per block, so whole
        // words, and no word straddles two rows.
        let words: Vec<i32> = codes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let per_word = Self::codes_per_word(m.storage);
        Self {
            words: Tensor::from_data(TensorData::new(words, [m.rows, m.cols / per_word]), device),
            scales: Tensor::from_data(TensorData::new(scales, [m.rows, m.cols / BLOCK, 1]), device),
            storage: m.storage,
            rows: m.rows,
            cols: m.cols,
        }
    }

    fn codes_per_word(storage: Storage) -> usize {
        match storage {
            Storage::Q8 => 4,
            _ => 8,
        }
    }

    /// Bytes held on the device: the codes plus four bytes per block of 32.
    pub fn byte_len(&self) -> usize {
        self.rows * self.cols / Self::codes_per_word(self.storage) * 4
            + self.rows * self.cols / BLOCK * 4
    }

    /// `[rows, cols]` f32: each code times its block's scale.
    pub fn dequantize(&self) -> Tensor<2> {
        let per = Self::codes_per_word(self.storage);
        let bits = 32 / per;
        let mask = (1i32 << bits) - 1;
        let fields: Vec<Tensor<2, Int>> = (0..per)
            .map(|j| {
                self.words
                    .clone()
                    .bitwise_right_shift_scalar((bits * j) as i32)
                    .bitwise_and_scalar(mask)
            })
            .collect();
        // [rows, words, per] → [rows, cols]: code j of a word is column `per · word + j`.
        let codes = Tensor::<2, Int>::stack::<3>(fields, 2).reshape([self.rows, self.cols]);
        let codes = match self.storage {
            // The byte as a signed value (two's complement).
            Storage::Q8 => codes.bitwise_xor_scalar(0x80) - 0x80,
            // The nibble holds the code plus 8.
            _ => codes - 8,
        };
        let values = codes.float().reshape([self.rows, self.cols / BLOCK, BLOCK]);
        (values * self.scales.clone()).reshape([self.rows, self.cols])
    }
}
