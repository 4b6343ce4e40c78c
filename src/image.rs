//! Turning model output into pixels.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::readback::read_f32;

/// An 8-bit RGB image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// Row-major, 3 bytes per pixel.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// RGBA with opaque alpha (for canvases).
    pub fn to_rgba(&self) -> Vec<u8> {
        self.data
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect()
    }
}

/// `[B, 3, H, W]` in [−1, 1] → 8-bit images (`round(255·(x+1)/2)`).
pub async fn to_rgb8(img: Tensor<4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = img.dims();
    let v = read_f32(img).await?;
    Ok((0..b)
        .map(|bi| {
            let mut data = vec![0u8; h * w * 3];
            for ch in 0..c.min(3) {
                for i in 0..h * w {
                    let x = v[(bi * c + ch) * h * w + i];
                    let y = ((x + 1.0) * 0.5 * 255.0).round().clamp(0.0, 255.0);
                    data[i * 3 + ch] = y as u8;
                }
            }
            RgbImage {
                width: w,
                height: h,
                data,
            }
        })
        .collect())
}

/// Lays images out in a grid with `cols` columns.
pub fn grid(images: &[RgbImage], cols: usize) -> RgbImage {
    let cols = cols.max(1).min(images.len().max(1));
    let rows = images.len().div_ceil(cols);
    let (w, h) = images
        .first()
        .map(|i| (i.width, i.height))
        .unwrap_or((0, 0));
    let mut data = vec![0u8; rows * h * cols * w * 3];
    for (k, im) in images.iter().enumerate() {
        let (r, c) = (k / cols, k % cols);
        for y in 0..h {
            let dst = ((r * h + y) * cols * w + c * w) * 3;
            data[dst..dst + w * 3].copy_from_slice(&im.data[y * w * 3..(y + 1) * w * 3]);
        }
    }
    RgbImage {
        width: cols * w,
        height: rows * h,
        data,
    }
}
