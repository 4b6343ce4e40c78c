//! PNG output without fonts or plotting libraries: line charts of training curves (with a
//! built-in 5×7 pixel font for titles and tick labels) and image grids.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

/// 5×7 glyphs, one byte per row, bit 4 = leftmost pixel.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        _ => [0; 7],
    }
}

pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>) {
    for (k, c) in s.chars().enumerate() {
        let g = glyph(c);
        for (r, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (16 >> col) != 0 {
                    put(img, x + 6 * k as i64 + col, y + r as i64, color);
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        put(img, x.round() as i64, y.round() as i64, c);
        put(img, x.round() as i64, y.round() as i64 + 1, c);
    }
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e4).contains(&a) {
        format!("{v:.1E}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub const COLORS: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
];

/// One chart panel: `series` of `(label, points)` drawn into `img` at `(ox, oy)`.
pub fn chart(
    img: &mut RgbImage,
    ox: i64,
    oy: i64,
    w: i64,
    h: i64,
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) {
    let black = Rgb([40, 40, 40]);
    let grey = Rgb([220, 220, 220]);
    text(img, ox + 50, oy + 4, title, black);
    let (px, py, pw, ph) = (ox + 50, oy + 18, w - 60, h - 40);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .filter(|p| p.1.is_finite())
        .collect();
    if pts.is_empty() {
        text(img, px + 10, py + ph / 2, "NO DATA YET", black);
        return;
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for (x, y) in &pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1e-6_f64.max(y0.abs() * 0.01);
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let sx = |x: f64| px as f64 + (x - x0) / (x1 - x0) * pw as f64;
    let sy = |y: f64| (py + ph) as f64 - (y - y0) / (y1 - y0) * ph as f64;
    for k in 0..=4 {
        let yv = y0 + (y1 - y0) * k as f64 / 4.0;
        let yy = sy(yv);
        line(img, (px as f64, yy), ((px + pw) as f64, yy), grey);
        text(img, ox, yy as i64 - 3, &fmt_tick(yv), black);
        let xv = x0 + (x1 - x0) * k as f64 / 4.0;
        text(
            img,
            sx(xv) as i64 - 8,
            py + ph + 6,
            &format!("{}", xv.round() as i64),
            black,
        );
    }
    line(
        img,
        (px as f64, py as f64),
        (px as f64, (py + ph) as f64),
        black,
    );
    line(
        img,
        (px as f64, (py + ph) as f64),
        ((px + pw) as f64, (py + ph) as f64),
        black,
    );
    // Colours follow a series' place in the panel; series without points get no legend row.
    let mut row = 0;
    for (i, (label, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        if p.is_empty() {
            continue;
        }
        let p: Vec<&(f64, f64)> = p.iter().filter(|q| q.1.is_finite()).collect();
        for w2 in p.windows(2) {
            line(
                img,
                (sx(w2[0].0), sy(w2[0].1)),
                (sx(w2[1].0), sy(w2[1].1)),
                c,
            );
        }
        if p.len() == 1 {
            for d in -2..=2 {
                put(img, sx(p[0].0) as i64 + d, sy(p[0].1) as i64, c);
                put(img, sx(p[0].0) as i64, sy(p[0].1) as i64 + d, c);
            }
        }
        let lx = px + pw - 110;
        let ly = py + 4 + 10 * row;
        row += 1;
        line(
            img,
            (lx as f64, ly as f64 + 3.0),
            (lx as f64 + 12.0, ly as f64 + 3.0),
            c,
        );
        text(img, lx + 16, ly, label, black);
    }
}

/// A chart: a title and labelled point series.
pub type Panel<'a> = (&'a str, Vec<(&'a str, Vec<(f64, f64)>)>);

/// Panels side by side, written as one PNG. Series without points are left out of their
/// panel's legend (the others keep their colours), and panels without points are left out (a
/// run with nothing held out has no validation panel), unless no panel has any.
pub fn curves(path: &Path, panels: &[Panel]) -> Result<()> {
    let drawn: Vec<Panel> = panels
        .iter()
        .filter(|(_, series)| series.iter().any(|(_, p)| !p.is_empty()))
        .cloned()
        .collect();
    let panels = if drawn.is_empty() { panels } else { &drawn };
    let (w, h) = (420i64, 260i64);
    let mut img = RgbImage::from_pixel(
        (w * panels.len() as i64) as u32,
        h as u32,
        Rgb([255, 255, 255]),
    );
    for (i, (title, series)) in panels.iter().enumerate() {
        chart(&mut img, i as i64 * w, 0, w, h, title, series);
    }
    write_png(path, &img)
}

/// Creates `dir` for a command's `--images`, or accepts it if it exists and is empty. A folder
/// that already holds files is refused: the images of an earlier run would sit beside the new
/// ones under the same names and numbers, and a reader could not tell them apart.
pub fn image_folder(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    if let Some(entry) = entries.next() {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        anyhow::bail!(
            "{} already holds files (e.g. {}): choose an empty or new folder for the images, \
             or delete it first",
            dir.display(),
            entry.file_name().to_string_lossy()
        );
    }
    Ok(())
}

/// One `[3, s, s]` image in [−1, 1] as 8-bit RGB ([`nextscale::image::to_byte`]).
pub fn rgb_image(x: &[f32], s: usize) -> nextscale::image::RgbImage {
    let data = (0..s * s)
        .flat_map(|p| (0..3).map(move |c| nextscale::image::to_byte(x[c * s * s + p])))
        .collect();
    nextscale::image::RgbImage {
        width: s,
        height: s,
        data,
    }
}

/// Tiles `[B, 3, S, S]` images in [−1, 1] into a grid of `cols` columns and writes a PNG.
pub fn grid(path: &Path, images: &[f32], size: usize, cols: usize) -> Result<()> {
    let per = 3 * size * size;
    let n = images.len() / per;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = 2;
    let mut img = RgbImage::from_pixel(
        (cols * (size + gap) + gap) as u32,
        (rows * (size + gap) + gap) as u32,
        Rgb([255, 255, 255]),
    );
    for k in 0..n {
        let (r, c) = (k / cols, k % cols);
        let (x0, y0) = (gap + c * (size + gap), gap + r * (size + gap));
        let tile = rgb_image(&images[k * per..(k + 1) * per], size);
        for (p, px) in tile.data.chunks_exact(3).enumerate() {
            let (x, y) = (x0 + p % size, y0 + p / size);
            img.put_pixel(x as u32, y as u32, Rgb([px[0], px[1], px[2]]));
        }
    }
    write_png(path, &img)
}

/// Writes `img` as a PNG, atomically.
fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    crate::run::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_without_points_are_left_out() {
        let dir = std::env::temp_dir().join(format!("nextscale-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curves.png");
        let points = vec![(0.0, 1.0), (1.0, 0.5)];
        let panels: Vec<Panel> = vec![
            ("LOSS", vec![("TRAIN", points.clone()), ("VAL", vec![])]),
            ("VALIDATION", vec![("PSNR", vec![])]),
            ("USAGE", vec![("TRAIN", points)]),
        ];
        curves(&path, &panels).unwrap();
        assert_eq!(image::open(&path).unwrap().width(), 2 * 420);
        // A series keeps its colour when one before it has no points.
        let later = vec![(
            "LOSS",
            vec![("VAL", vec![]), ("TRAIN", vec![(0.0, 1.0), (1.0, 0.5)])],
        )];
        curves(&path, &later).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let count = |c: Rgb<u8>| img.pixels().filter(|&&p| p == c).count();
        assert!(count(COLORS[1]) > 0 && count(COLORS[0]) == 0);
        // Nothing to draw at all: the empty panels still make a picture.
        curves(&path, &panels[1..2]).unwrap();
        assert_eq!(image::open(&path).unwrap().width(), 420);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn image_folders_must_be_new_or_empty() {
        let dir = std::env::temp_dir().join(format!("nextscale-images-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        image_folder(&dir.join("new")).unwrap(); // made
        image_folder(&dir.join("new")).unwrap(); // empty: accepted
        std::fs::write(dir.join("new/00000.png"), b"an earlier run").unwrap();
        let err = image_folder(&dir.join("new")).unwrap_err().to_string();
        assert!(
            err.contains("already holds files (e.g. 00000.png)"),
            "{err}"
        );
        // Nothing was deleted.
        assert_eq!(
            std::fs::read(dir.join("new/00000.png")).unwrap(),
            b"an earlier run"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
