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

/// One value in [−1, 1] as a byte: `round(255·(x+1)/2)`, clamped to 0–255 (the inverse of
/// the input scaling `b / 127.5 − 1`, exact for 8-bit images).
pub fn to_byte(x: f32) -> u8 {
    ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// `[B, 3, H, W]` in [−1, 1] → 8-bit images ([`to_byte`]).
pub async fn to_rgb8(img: Tensor<4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = img.dims();
    let v = read_f32(img).await?;
    Ok((0..b)
        .map(|bi| {
            let mut data = vec![0u8; h * w * 3];
            for ch in 0..c.min(3) {
                for i in 0..h * w {
                    data[i * 3 + ch] = to_byte(v[(bi * c + ch) * h * w + i]);
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

/// Most pixels a source image (or mask) may have: 8192² (256 MiB as RGBA).
pub const MAX_SOURCE_PIXELS: usize = 8192 * 8192;
/// Longest side after resizing, as a multiple of the model's size: more extreme aspect ratios
/// are refused (a 1×4M strip would otherwise become gigabytes before the crop).
pub const MAX_ASPECT: usize = 16;

/// An RGBA image as a browser's `ImageData` holds it: unpremultiplied, row-major, 4 bytes a pixel.
#[derive(Clone, Copy, Debug)]
pub struct RgbaView<'a> {
    pub width: usize,
    pub height: usize,
    pub data: &'a [u8],
}

impl<'a> RgbaView<'a> {
    /// Checks the size (limits before any allocation) and the byte count.
    pub fn new(width: usize, height: usize, data: &'a [u8]) -> Result<Self> {
        let pixels = width
            .checked_mul(height)
            .filter(|&p| p > 0 && p <= MAX_SOURCE_PIXELS)
            .ok_or_else(|| {
                crate::Error::invalid(format!(
                    "an image of {width}×{height} pixels is empty or larger than the limit of {MAX_SOURCE_PIXELS} pixels"
                ))
            })?;
        if data.len() != pixels * 4 {
            return Err(crate::Error::invalid(format!(
                "{width}×{height} RGBA needs {} bytes, got {}",
                pixels * 4,
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Composites on a grey `background` (255 = white), resizes the shorter side to `size`
    /// (Lanczos3) and centre-crops: `[3, size, size]` in [−1, 1], channel-major. This is the
    /// pre-processing of training images, so an edit sees its source as training did.
    pub fn to_chw(&self, size: usize, background: u8) -> Result<Vec<f32>> {
        let (w, h) = (self.width, self.height);
        if size == 0 {
            return Err(crate::Error::invalid("the target size must be positive"));
        }
        let s = size as u64;
        let (nw, nh) = if w <= h {
            (s, ((h as u64 * s + w as u64 / 2) / w as u64).max(s))
        } else {
            (((w as u64 * s + h as u64 / 2) / h as u64).max(s), s)
        };
        if nw.max(nh) > (MAX_ASPECT * size) as u64 {
            return Err(crate::Error::invalid(format!(
                "a {w}×{h} image is too elongated (at most {MAX_ASPECT}:1 is accepted)"
            )));
        }
        let bg = background as f32;
        let rgb: Vec<u8> = self
            .data
            .chunks_exact(4)
            .flat_map(|p| {
                let a = p[3] as f32 / 255.0;
                let c = |v: u8| (v as f32 * a + bg * (1.0 - a)).round() as u8;
                [c(p[0]), c(p[1]), c(p[2])]
            })
            .collect();
        let img = ::image::RgbImage::from_raw(w as u32, h as u32, rgb)
            .ok_or_else(|| crate::Error::invalid("image buffer of the wrong size"))?;
        let (nw, nh) = (nw as u32, nh as u32);
        let resized = if (nw as usize, nh as usize) == (w, h) {
            img
        } else {
            ::image::imageops::resize(&img, nw, nh, ::image::imageops::FilterType::Lanczos3)
        };
        let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
        let mut out = vec![0f32; 3 * size * size];
        for y in 0..size {
            for x in 0..size {
                let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
                for c in 0..3 {
                    out[c * size * size + y * size + x] = p[c] as f32 / 127.5 - 1.0;
                }
            }
        }
        Ok(out)
    }

    /// An edit mask at `size × size` pixels, `true` = keep: white (regenerate) and black (keep),
    /// with transparent pixels counting as black (an unpainted layer keeps the image). Resized
    /// like the source; a pixel is kept when its mean grey is below one half.
    pub fn to_keep_mask(&self, size: usize) -> Result<Vec<bool>> {
        let chw = self.to_chw(size, 0)?;
        let n = size * size;
        Ok((0..n)
            .map(|i| (chw[i] + chw[n + i] + chw[2 * n + i]) / 3.0 < 0.0)
            .collect())
    }
}
