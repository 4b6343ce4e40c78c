//! Reconstruction quality: PSNR and SSIM on images in [−1, 1] (compared in [0, 1]).

/// PSNR in dB over all values (peak 1 on the [0, 1] scale).
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x as f64 - *y as f64) * 0.5;
            d * d
        })
        .sum::<f64>()
        / a.len().max(1) as f64;
    if mse == 0.0 {
        99.0
    } else {
        -10.0 * mse.log10()
    }
}

/// Mean SSIM (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03) of
/// `[n, c, s, s]` images, averaged over channels and images; windows are clipped at the
/// border (valid positions only).
pub fn ssim(a: &[f32], b: &[f32], size: usize) -> f64 {
    let plane = size * size;
    let n = a.len() / plane;
    let r = 5usize.min((size.saturating_sub(1)) / 2);
    let win = 2 * r + 1;
    let g: Vec<f64> = (0..win)
        .map(|i| {
            let d = i as f64 - r as f64;
            (-d * d / (2.0 * 1.5 * 1.5)).exp()
        })
        .collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / gs).collect();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for p in 0..n {
        let x = |i: usize| (a[p * plane + i] as f64 + 1.0) * 0.5;
        let y = |i: usize| (b[p * plane + i] as f64 + 1.0) * 0.5;
        for cy in r..size - r {
            for cx in r..size - r {
                let (mut mx, mut my, mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for dy in 0..win {
                    for dx in 0..win {
                        let w = g[dy] * g[dx];
                        let i = (cy + dy - r) * size + (cx + dx - r);
                        let (u, v) = (x(i), y(i));
                        mx += w * u;
                        my += w * v;
                        xx += w * u * u;
                        yy += w * v * v;
                        xy += w * u * v;
                    }
                }
                let (vx, vy, cxy) = (xx - mx * mx, yy - my * my, xy - mx * my);
                total += ((2.0 * mx * my + c1) * (2.0 * cxy + c2))
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
                count += 1;
            }
        }
    }
    if count == 0 {
        1.0
    } else {
        total / count as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_are_perfect_and_noise_is_not() {
        let s = 16;
        let a: Vec<f32> = (0..3 * s * s)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        assert!((ssim(&a, &a, s) - 1.0).abs() < 1e-9);
        assert_eq!(psnr(&a, &a), 99.0);
        let b: Vec<f32> = a.iter().map(|v| (v + 0.2).min(1.0)).collect();
        // Mean shift of 0.1 on the [0, 1] scale (less where clipped): PSNR ≈ 20 dB.
        let p = psnr(&a, &b);
        assert!(p > 19.0 && p < 23.0, "{p}");
        assert!(ssim(&a, &b, s) < 1.0);
    }
}
