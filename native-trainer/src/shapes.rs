//! A generated image data set for tests and quick starts: shapes in four colours on white,
//! one class folder per shape (or captions), with random size, position and shade from the
//! counter RNG.

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};
use nextscale::rng::{CounterRng, stream_id};

pub const CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];
const COLOR_NAMES: [&str; 4] = ["red", "green", "blue", "yellow"];
const COLORS: [[f64; 3]; 4] = [
    [220., 40., 40.],
    [40., 150., 60.],
    [40., 80., 220.],
    [230., 170., 20.],
];

fn inside(class: usize, dx: f64, dy: f64, r: f64) -> bool {
    match class {
        0 => dx * dx + dy * dy <= r * r,
        1 => dx.abs() <= r * 0.8 && dy.abs() <= r * 0.8,
        2 => dy <= r * 0.7 && dy >= -r && dx.abs() <= (dy + r) * 0.6,
        _ => (dx.abs() <= r * 0.3 && dy.abs() <= r) || (dy.abs() <= r * 0.3 && dx.abs() <= r),
    }
}

/// Writes `n` images per shape of `size`×`size` pixels, in a random one of four colours:
/// under `dir/<shape>/` (class folders), or with `captions` under `dir/images/` with a
/// `metadata.jsonl` of captions such as "a red circle".
pub fn write(dir: &Path, n: usize, size: usize, seed: u64, captions: bool) -> Result<()> {
    let rng = CounterRng::new(seed);
    let mut meta = String::new();
    for (c, name) in CLASSES.iter().enumerate() {
        let sub = if captions {
            dir.join("images")
        } else {
            dir.join(name)
        };
        std::fs::create_dir_all(&sub)?;
        for i in 0..n {
            let s = stream_id("shape", c as u64, i as u64);
            let u = |k: u64| rng.uniform(s, k);
            let r = size as f64 * (0.2 + 0.15 * u(0));
            let cx = r + (size as f64 - 2.0 * r) * u(1);
            let cy = r + (size as f64 - 2.0 * r) * u(2);
            let hue = (rng.bits(s, 7) % 4) as usize;
            let col: [u8; 3] =
                std::array::from_fn(|k| (COLORS[hue][k] * (0.8 + 0.2 * u(3 + k as u64))) as u8);
            let img = RgbImage::from_fn(size as u32, size as u32, |x, y| {
                // 2×2 supersampling for soft edges.
                let mut cover = 0.0;
                for sy in 0..2 {
                    for sx in 0..2 {
                        let (px, py) = (
                            x as f64 + 0.25 + 0.5 * sx as f64,
                            y as f64 + 0.25 + 0.5 * sy as f64,
                        );
                        if inside(c, px - cx, py - cy, r) {
                            cover += 0.25;
                        }
                    }
                }
                Rgb(std::array::from_fn(|k| {
                    (255.0 * (1.0 - cover) + col[k] as f64 * cover).round() as u8
                }))
            });
            if captions {
                let file = format!("{name}-{i:04}.png");
                img.save(sub.join(&file))?;
                meta.push_str(&serde_json::json!({"file_name": format!("images/{file}"), "text": format!("a {} {name}", COLOR_NAMES[hue])}).to_string());
                meta.push('\n');
            } else {
                img.save(sub.join(format!("{i:04}.png")))?;
            }
        }
    }
    if captions {
        std::fs::write(dir.join("metadata.jsonl"), meta)?;
    }
    Ok(())
}
