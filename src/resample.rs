//! The two resampling ops of the multi-scale quantizer, with PyTorch's exact semantics,
//! expressed as small separable matrices so they run as matmuls on any backend:
//! `area` (adaptive average pooling, overlapping windows) and `bicubic`
//! (A = −0.75, align_corners = False, unclamped source coordinate, clamped taps).

use burn::tensor::{Device, Tensor};

use crate::nn::tensor;

/// `[out, in]` matrix of `F.interpolate(mode='area')` along one axis.
pub fn area_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0f32; n_out * n_in];
    for i in 0..n_out {
        let start = (i * n_in) / n_out;
        let end = ((i + 1) * n_in).div_ceil(n_out);
        let w = 1.0 / (end - start) as f32;
        for j in start..end {
            m[i * n_in + j] = w;
        }
    }
    m
}

/// `[out, in]` matrix of `F.interpolate(mode='bicubic', align_corners=False)` along one axis.
pub fn bicubic_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    const A: f32 = -0.75;
    let cc1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cc2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = n_in as f32 / n_out as f32;
    let mut m = vec![0f32; n_out * n_in];
    for o in 0..n_out {
        let src = (o as f32 + 0.5) * scale - 0.5;
        let i0 = src.floor();
        let t = src - i0;
        let w = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
        for (k, wk) in w.iter().enumerate() {
            let idx = (i0 as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
            m[o * n_in + idx] += wk;
        }
    }
    m
}

/// Applies the per-axis matrix `m` (`[out, in]`) to both spatial axes of `x` (`[B, C, in, in]`).
fn apply_separable(x: Tensor<4>, m: Vec<f32>, n_out: usize, device: &Device) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    debug_assert_eq!(h, w);
    let n_in = w;
    // mᵀ: [in, out]
    let mut mt = vec![0f32; m.len()];
    for o in 0..n_out {
        for i in 0..n_in {
            mt[i * n_out + o] = m[o * n_in + i];
        }
    }
    let mt = tensor(mt, [n_in, n_out], device);
    // columns: [B·C·H, W] · mᵀ → [B·C·H, out]
    let y = x.reshape([b * c * h, w]).matmul(mt.clone());
    // rows: bring H last, then the same product
    let y = y
        .reshape([b * c, h, n_out])
        .swap_dims(1, 2)
        .reshape([b * c * n_out, h]);
    let y = y.matmul(mt);
    y.reshape([b * c, n_out, n_out])
        .swap_dims(1, 2)
        .reshape([b, c, n_out, n_out])
}

/// `F.interpolate(x, size=(n, n), mode='area')`.
pub fn area(x: Tensor<4>, n: usize) -> Tensor<4> {
    let s = x.dims()[3];
    if s == n {
        return x;
    }
    let device = x.device();
    apply_separable(x, area_matrix(s, n), n, &device)
}

/// `F.interpolate(x, size=(n, n), mode='bicubic', align_corners=False)`.
pub fn bicubic(x: Tensor<4>, n: usize) -> Tensor<4> {
    let s = x.dims()[3];
    if s == n {
        return x;
    }
    let device = x.device();
    apply_separable(x, bicubic_matrix(s, n), n, &device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_windows_overlap_like_pytorch() {
        // 16 → 3: [0,6), [5,11), [10,16)
        let m = area_matrix(16, 3);
        let nz = |r: usize| -> Vec<usize> { (0..16).filter(|&j| m[r * 16 + j] > 0.0).collect() };
        assert_eq!(nz(0), (0..6).collect::<Vec<_>>());
        assert_eq!(nz(1), (5..11).collect::<Vec<_>>());
        assert_eq!(nz(2), (10..16).collect::<Vec<_>>());
    }

    #[test]
    fn bicubic_rows_sum_to_one_and_1_to_n_is_constant() {
        for n in [1, 2, 3, 5, 13] {
            let m = bicubic_matrix(n, 16);
            for o in 0..16 {
                let s: f32 = m[o * n..(o + 1) * n].iter().sum();
                assert!((s - 1.0).abs() < 1e-6, "{n}: {s}");
            }
        }
        assert!(
            bicubic_matrix(1, 16)
                .iter()
                .all(|&v| (v - 1.0).abs() < 1e-6)
        );
    }
}
