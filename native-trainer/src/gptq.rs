//! GPTQ (Frantar et al., 2022, "Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers"): a linear layer's weight is quantized one input column at a
//! time, and each column's rounding error is folded into the columns not yet quantized,
//! weighted by the inverse of `H = XᵀX`, the Gram matrix of the layer's inputs over
//! calibration data. Rounding to nearest minimises the error of each weight; GPTQ minimises
//! the error of the layer's outputs on those inputs.
//!
//! The result is the pack's usual q8/q4 blocks (32 values along a PyTorch row, one f16 scale
//! each, chosen when the quantizer reaches the block, as the reference implementation's
//! `groupsize` does): readers are unchanged, only the choice of codes differs.

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor};
use nextscale::pack::{BLOCK, Storage, encode_blocks};
use nextscale::text::MiniLm;

/// The Gram matrix `XᵀX` of a layer's inputs, summed over calibration tokens.
pub struct Gram {
    n: usize,
    sum: Vec<f64>,
    /// Tokens seen.
    pub tokens: usize,
}

impl Gram {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            sum: vec![0.0; n * n],
            tokens: 0,
        }
    }

    /// Adds `x` `[B, L, n]`, keeping the rows where `mask` `[B, L]` is 1 (padding rows are 0);
    /// `tokens` is the number of such rows.
    pub fn add(&mut self, x: &Tensor<3>, mask: &Tensor<2>, tokens: usize) {
        let [b, l, n] = x.dims();
        let m: Tensor<3> = mask.clone().reshape([b, l, 1]);
        let rows: Tensor<2> = (x.clone() * m).reshape([b * l, n]);
        let g = rows.clone().transpose().matmul(rows);
        let g = g
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32");
        for (s, v) in self.sum.iter_mut().zip(g) {
            *s += v as f64;
        }
        self.tokens += tokens;
    }
}

/// The Gram matrices of block `layer`'s linear layers in a MiniLM/BERT encoder over
/// `prompts`, with the names of the layers each feeds (relative to the block: the query, key
/// and value share their input and one matrix).
pub fn bert_grams(
    model: &MiniLm,
    prompts: &[String],
    layer: usize,
    device: &Device,
) -> Result<Vec<(Vec<String>, Gram)>> {
    let mut grams: Vec<(Vec<String>, Gram)> = Vec::new();
    for chunk in prompts.chunks(64) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| model.tokenize(p)).collect();
        let mut seen: Vec<(Vec<String>, Tensor<3>)> = Vec::new();
        let (_, mask) = model
            .bert
            .forward_traced(&ids, device, &mut |l, names, x| {
                if l == layer {
                    seen.push((names.iter().map(|n| n.to_string()).collect(), x.clone()));
                }
            })?;
        for (names, x) in seen {
            let at = match grams.iter().position(|(n, _)| *n == names) {
                Some(i) => i,
                None => {
                    grams.push((names, Gram::new(x.dims()[2])));
                    grams.len() - 1
                }
            };
            grams[at].1.add(&x, &mask, ids.iter().map(Vec::len).sum());
        }
    }
    Ok(grams)
}

/// What [`quantize`] achieved: the layer's output error on the calibration inputs,
/// `tr((W − Q) H (W − Q)ᵀ) / tr(W H Wᵀ)`, for its codes and for plain rounding to nearest
/// with the `max|x|` scale (the default export; the difference is GPTQ and the scale search
/// together).
pub struct Report {
    pub gptq: f64,
    pub nearest: f64,
}

/// [`quantize`] for tensor `name` of a pack being written, with its output error printed:
/// `None` when it is not a q8/q4 matrix, or (printed) when its inputs are not whole blocks of
/// [`BLOCK`] and it is left to rounding.
pub fn fit_matrix(
    name: &str,
    shape: &[usize],
    values: &[f32],
    gram: &Gram,
    storage: Storage,
) -> Result<Option<Vec<u8>>> {
    if !matches!(storage, Storage::Q8 | Storage::Q4) || shape.len() != 2 {
        return Ok(None);
    }
    let (rows, cols) = (shape[0], shape[1]);
    if !cols.is_multiple_of(BLOCK) {
        eprintln!(
            "  {name}: rounded to nearest (its {cols} inputs are not whole blocks of {BLOCK})"
        );
        return Ok(None);
    }
    let (bytes, r) = quantize(values, rows, cols, gram, storage)?;
    eprintln!(
        "  {name}: output error {:.2e} (rounded to nearest with the max|x| scale: {:.2e}; {} tokens)",
        r.gptq, r.nearest, gram.tokens
    );
    Ok(Some(bytes))
}

/// Quantizes `w` (`[rows, cols]`, PyTorch's `[out, in]`) for inputs with Gram matrix `gram`
/// (`cols × cols`); returns the stored bytes.
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    gram: &Gram,
    storage: Storage,
) -> Result<(Vec<u8>, Report)> {
    let codes_of = Codes::of(storage)?;
    if gram.n != cols || w.len() != rows * cols || !cols.is_multiple_of(BLOCK) {
        bail!(
            "GPTQ: a [{rows}, {cols}] weight does not match its {0}×{0} inputs",
            gram.n
        );
    }
    let mut h = gram.sum.clone();
    let mut wq: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    // Inputs that are always zero carry no information: their weights are free (set to 0).
    for i in 0..cols {
        if h[i * cols + i] == 0.0 {
            h[i * cols + i] = 1.0;
            (0..rows).for_each(|r| wq[r * cols + i] = 0.0);
        }
    }
    // The reference's damping: 1 % of the mean diagonal.
    let damp = 0.01 * (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
    (0..cols).for_each(|i| h[i * cols + i] += damp);
    let u = upper_cholesky_of_inverse(&h, cols)?;

    let mut scales = vec![0f32; rows * cols / BLOCK];
    let mut codes = vec![0i8; rows * cols];
    let mut err = vec![0f64; rows];
    for i in 0..cols {
        let g = i / BLOCK;
        if i % BLOCK == 0 {
            // The block's scale, from the weights as updated so far (f16, as stored).
            let weight = (i..i + BLOCK).map(|j| h[j * cols + j]).collect::<Vec<_>>();
            for r in 0..rows {
                let block = &wq[r * cols + i..r * cols + i + BLOCK];
                scales[r * (cols / BLOCK) + g] = block_scale(block, &weight, codes_of);
            }
        }
        let d = u[i * cols + i];
        for r in 0..rows {
            let s = scales[r * (cols / BLOCK) + g] as f64;
            let v = wq[r * cols + i];
            let q = codes_of.round(v, s);
            codes[r * cols + i] = q as i8;
            err[r] = (v - q * s) / d;
        }
        let ui = &u[i * cols + i + 1..(i + 1) * cols];
        for r in 0..rows {
            let e = err[r];
            if e != 0.0 {
                let row = &mut wq[r * cols + i + 1..(r + 1) * cols];
                row.iter_mut().zip(ui).for_each(|(x, &c)| *x -= e * c);
            }
        }
    }
    let bytes = encode_blocks(storage, &scales, &codes)?;
    let deq = nextscale::pack::decode(&bytes, storage, rows * cols);
    let nearest =
        nextscale::pack::decode(&nextscale::pack::encode(w, storage), storage, rows * cols);
    let energy = quadratic(rows, cols, &gram.sum, |k| w[k] as f64);
    let error = |q: &[f32]| quadratic(rows, cols, &gram.sum, |k| w[k] as f64 - q[k] as f64);
    let report = Report {
        gptq: error(&deq) / energy.max(f64::MIN_POSITIVE),
        nearest: error(&nearest) / energy.max(f64::MIN_POSITIVE),
    };
    Ok((bytes, report))
}

/// The code range of a block storage, and its rounding rule.
#[derive(Clone, Copy)]
struct Codes {
    min: f64,
    max: f64,
}

impl Codes {
    fn of(storage: Storage) -> Result<Self> {
        match storage {
            Storage::Q8 => Ok(Self {
                min: -127.0,
                max: 127.0,
            }),
            Storage::Q4 => Ok(Self {
                min: -8.0,
                max: 7.0,
            }),
            _ => bail!("blocks are q8 or q4, not {storage:?}"),
        }
    }

    /// The code of `v` at scale `s` (0 for a zero or non-finite scale).
    fn round(self, v: f64, s: f64) -> f64 {
        if s > 0.0 && s.is_finite() {
            (v / s).round().clamp(self.min, self.max)
        } else {
            0.0
        }
    }
}

/// The f16 scale for one block: among clippings of its largest magnitude (100 % down to
/// 50 %) over the largest positive code (and over the largest negative one), the one whose
/// rounding error, weighted by each input's energy `weight`, is least.
fn block_scale(block: &[f64], weight: &[f64], codes: Codes) -> f32 {
    let m = block.iter().fold(0f64, |a, v| a.max(v.abs()));
    let mut best = (f64::INFINITY, 0f32);
    // The clippings of `m / qmax`, and for q4 also `m / 8` (the code −8 reaches a negative
    // extreme).
    let tops: &[f64] = if -codes.min > codes.max {
        &[codes.max, -codes.min]
    } else {
        &[codes.max]
    };
    for (step, top) in (0..=25).flat_map(|s| tops.iter().map(move |t| (s, t))) {
        let s = half::f16::from_f64(m * (1.0 - 0.02 * step as f64) / top).to_f32();
        let sf = s as f64;
        if !(sf > 0.0 && sf.is_finite()) {
            continue;
        }
        let e: f64 = block
            .iter()
            .zip(weight)
            .map(|(&v, &h)| h * (v - codes.round(v, sf) * sf).powi(2))
            .sum();
        if e < best.0 {
            best = (e, s);
        }
    }
    best.1
}

/// Rounds `values` to nearest with each block's scale chosen by [`block_scale`] (for tables
/// such as embeddings, whose inputs have no Gram matrix); the stored bytes.
pub fn round_blocks(values: &[f32], storage: Storage) -> Result<Vec<u8>> {
    let range = Codes::of(storage)?;
    let ones = [1.0; BLOCK];
    let mut scales = Vec::with_capacity(values.len().div_ceil(BLOCK));
    let mut codes = Vec::with_capacity(values.len());
    for b in values.chunks(BLOCK) {
        let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let s = block_scale(&b, &ones[..b.len()], range);
        scales.push(s);
        codes.extend(b.iter().map(|&v| range.round(v, s as f64) as i8));
    }
    Ok(encode_blocks(storage, &scales, &codes)?)
}

/// `Σ_r v_r H v_rᵀ` over the rows `v_r` of a `[rows, cols]` matrix given element by element:
/// with `W − Q`, the squared error of the layer's outputs over the calibration inputs; with
/// `W`, their energy.
fn quadratic(rows: usize, cols: usize, h: &[f64], v: impl Fn(usize) -> f64) -> f64 {
    let mut hv = vec![0f64; cols];
    let mut total = 0.0;
    for r in 0..rows {
        hv.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..cols {
            let a = v(r * cols + i);
            if a != 0.0 {
                hv.iter_mut()
                    .zip(&h[i * cols..(i + 1) * cols])
                    .for_each(|(x, &c)| *x += a * c);
            }
        }
        total += (0..cols).map(|i| v(r * cols + i) * hv[i]).sum::<f64>();
    }
    total
}

/// `U` upper-triangular with `Uᵀ U = H⁻¹` (row-major), for `H` symmetric positive definite.
fn upper_cholesky_of_inverse(h: &[f64], n: usize) -> Result<Vec<f64>> {
    let l = cholesky(h, n)?;
    // L⁻¹, lower-triangular, by forward substitution column by column.
    let mut li = vec![0f64; n * n];
    for j in 0..n {
        li[j * n + j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let s: f64 = (j..i).map(|k| l[i * n + k] * li[k * n + j]).sum();
            li[i * n + j] = -s / l[i * n + i];
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹: (H⁻¹)ᵢⱼ = Σₖ L⁻¹ₖᵢ L⁻¹ₖⱼ over k ≥ max(i, j).
    let mut inv = vec![0f64; n * n];
    for k in 0..n {
        let row = &li[k * n..k * n + k + 1];
        for i in 0..=k {
            let a = row[i];
            if a != 0.0 {
                let out = &mut inv[i * n..i * n + k + 1];
                out.iter_mut().zip(row).for_each(|(x, &b)| *x += a * b);
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            inv[i * n + j] = inv[j * n + i];
        }
    }
    // The lower factor of H⁻¹, transposed.
    let c = cholesky(&inv, n)?;
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = c[i * n + j];
        }
    }
    Ok(u)
}

/// The lower-triangular `L` with `L Lᵀ = a` (row-major).
fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = l[i * n..i * n + j]
                .iter()
                .zip(&l[j * n..j * n + j])
                .map(|(x, y)| x * y)
                .sum();
            if i == j {
                let d = a[i * n + i] - s;
                if !(d > 0.0 && d.is_finite()) {
                    bail!("GPTQ: the inputs' Gram matrix is not positive definite");
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn inverse_factor_is_exact() {
        let n = 40;
        let mut s = 1;
        let x: Vec<f64> = (0..n * 3 * n).map(|_| lcg(&mut s)).collect();
        let mut h = vec![0f64; n * n];
        for t in 0..3 * n {
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += x[t * n + i] * x[t * n + j];
                }
            }
        }
        let u = upper_cholesky_of_inverse(&h, n).unwrap();
        // Uᵀ U H = I.
        for i in 0..n {
            for j in 0..n {
                let mut v = 0.0;
                for k in 0..n {
                    let utu: f64 = (0..n).map(|m| u[m * n + i] * u[m * n + k]).sum();
                    v += utu * h[k * n + j];
                }
                assert!((v - (i == j) as u8 as f64).abs() < 1e-8, "{i},{j}: {v}");
            }
        }
    }

    /// Correlated inputs (the case GPTQ is for): its output error beats rounding to nearest,
    /// and the bytes decode through the pack's reader.
    #[test]
    fn beats_nearest_on_correlated_inputs() {
        let (rows, cols, tokens) = (16, 64, 400);
        let mut s = 7;
        let base: Vec<f64> = (0..tokens * 4).map(|_| lcg(&mut s)).collect();
        let mix: Vec<f64> = (0..4 * cols).map(|_| lcg(&mut s)).collect();
        let mut gram = Gram::new(cols);
        for t in 0..tokens {
            let x: Vec<f64> = (0..cols)
                .map(|i| {
                    (0..4)
                        .map(|k| base[t * 4 + k] * mix[k * cols + i])
                        .sum::<f64>()
                        + 0.05 * lcg(&mut s)
                })
                .collect();
            for i in 0..cols {
                for j in 0..cols {
                    gram.sum[i * cols + j] += x[i] * x[j];
                }
            }
        }
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s) as f32).collect();
        for storage in [Storage::Q4, Storage::Q8] {
            let (bytes, r) = quantize(&w, rows, cols, &gram, storage).unwrap();
            assert_eq!(bytes.len(), storage.byte_len(rows * cols));
            assert!(
                r.gptq < 0.5 * r.nearest,
                "{storage:?}: {} vs {}",
                r.gptq,
                r.nearest
            );
        }
    }
}
