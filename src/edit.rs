//! Zero-shot editing, as the official `demo_zero_shot_edit`: the source image's multi-scale
//! tokens are kept where a mask says so and the rest is sampled, scale by scale, so that the
//! KV cache and f̂ carry the kept context into every later scale.
//!
//! At each scale the mask (on the finest token grid, 1 = keep) is resized to that scale
//! bilinearly (`align_corners=False`), thresholded at `> 0.5` and forced to all-keep where
//! `pn² ≤ 3`; the scale's embedding map becomes `source·m + sampled·(1 − m)` before the f̂
//! update and the next scale's input. With the null condition this is in-/out-painting; with a
//! class or a prompt, guided editing. Two more modes use the same machinery: half completion
//! (a mask keeping the top or left half) and variations (keep every token of the first K
//! scales, sample the rest).

use crate::config::PatchNums;
use crate::error::{Error, Result};

/// Which source tokens an edit keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Region {
    /// Keep mask on the finest token grid (`pn × pn`, row-major), `true` = keep the source.
    Mask(Vec<bool>),
    /// Keep every token of the first `k` scales; sample all later ones (variations).
    KeepScales(usize),
}

/// A half of the image to keep (half completion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Top,
    Bottom,
    Left,
    Right,
}

impl Half {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "top" => Ok(Self::Top),
            "bottom" => Ok(Self::Bottom),
            "left" => Ok(Self::Left),
            "right" => Ok(Self::Right),
            _ => Err(Error::invalid(format!(
                "unknown half `{s}` (use top, bottom, left or right)"
            ))),
        }
    }

    /// The keep mask on a `pn × pn` token grid.
    pub fn mask(self, pn: usize) -> Vec<bool> {
        let h = pn / 2;
        (0..pn * pn)
            .map(|i| {
                let (y, x) = (i / pn, i % pn);
                match self {
                    Self::Top => y < h,
                    Self::Bottom => y >= pn - h,
                    Self::Left => x < h,
                    Self::Right => x >= pn - h,
                }
            })
            .collect()
    }
}

/// Turns a pixel mask (`size × size`, row-major, `true` = keep) into the keep mask of the
/// finest token grid: a token is kept when more than half of its pixels are kept.
pub fn token_mask(pixels_keep: &[bool], size: usize, pn: usize) -> Result<Vec<bool>> {
    if pn == 0 || size == 0 || !size.is_multiple_of(pn) {
        return Err(Error::invalid(format!(
            "a {size}-px mask does not divide into a {pn}×{pn} token grid"
        )));
    }
    if pixels_keep.len() != size * size {
        return Err(Error::invalid(format!(
            "the mask has {} pixels, a {size}×{size} image needs {}",
            pixels_keep.len(),
            size * size
        )));
    }
    let f = size / pn;
    Ok((0..pn * pn)
        .map(|t| {
            let (ty, tx) = (t / pn, t % pn);
            let kept = (0..f)
                .flat_map(|dy| (0..f).map(move |dx| (ty * f + dy) * size + tx * f + dx))
                .filter(|&i| pixels_keep[i])
                .count();
            2 * kept > f * f
        })
        .collect())
}

/// `F.interpolate(mask, (out, out), mode='bilinear', align_corners=False)` of a square mask,
/// computed in f32 as PyTorch does on the CPU.
pub fn bilinear(mask: &[f32], inp: usize, out: usize) -> Vec<f32> {
    let scale = inp as f32 / out as f32;
    let src = |d: usize| -> (usize, usize, f32) {
        let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (s as usize).min(inp - 1);
        let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
        (i0, i1, s - i0 as f32)
    };
    let mut v = vec![0f32; out * out];
    for y in 0..out {
        let (y0, y1, ly) = src(y);
        for x in 0..out {
            let (x0, x1, lx) = src(x);
            let at = |yy: usize, xx: usize| mask[yy * inp + xx];
            v[y * out + x] = (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1))
                + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
        }
    }
    v
}

/// The keep mask of every scale (`pn²` booleans each) for a region.
pub fn scale_masks(region: &Region, patch_nums: &PatchNums) -> Result<Vec<Vec<bool>>> {
    let pns = patch_nums.as_slice();
    let last = *pns.last().ok_or_else(|| Error::invalid("no scales"))?;
    match region {
        Region::KeepScales(k) => {
            if *k == 0 || *k > pns.len() {
                return Err(Error::invalid(format!(
                    "keep-scales must be from 1 to {} (the model's scales), got {k}",
                    pns.len()
                )));
            }
            Ok(pns
                .iter()
                .enumerate()
                .map(|(si, &pn)| vec![si < *k; pn * pn])
                .collect())
        }
        Region::Mask(m) => {
            if m.len() != last * last {
                return Err(Error::invalid(format!(
                    "the keep mask has {} entries, the finest token grid {last}×{last} needs {}",
                    m.len(),
                    last * last
                )));
            }
            let f: Vec<f32> = m.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
            Ok(pns
                .iter()
                .map(|&pn| {
                    if pn * pn <= 3 {
                        vec![true; pn * pn]
                    } else {
                        bilinear(&f, last, pn)
                            .into_iter()
                            .map(|v| v > 0.5)
                            .collect()
                    }
                })
                .collect())
        }
    }
}

/// What [`crate::sampler::Sampling`] needs to edit: the source tokens of each image per scale
/// (`[scale][image][pn²]`) and the keep mask of each scale (shared by all images).
#[derive(Clone, Debug)]
pub struct EditPlan {
    pub source: Vec<Vec<Vec<u32>>>,
    pub keep: Vec<Vec<bool>>,
}

impl EditPlan {
    /// Checks the plan against a model's scales, vocabulary and batch.
    pub fn validate(&self, patch_nums: &[usize], vocab: usize, batch: usize) -> Result<()> {
        if self.source.len() != patch_nums.len() || self.keep.len() != patch_nums.len() {
            return Err(Error::invalid(format!(
                "the edit has {} scales of tokens and {} of masks; the model has {}",
                self.source.len(),
                self.keep.len(),
                patch_nums.len()
            )));
        }
        for (si, &pn) in patch_nums.iter().enumerate() {
            let n = pn * pn;
            if self.keep[si].len() != n
                || self.source[si].len() != batch
                || self.source[si]
                    .iter()
                    .any(|r| r.len() != n || r.iter().any(|&t| t as usize >= vocab))
            {
                return Err(Error::invalid(format!(
                    "the edit's tokens or mask for scale {si} have the wrong shape or range"
                )));
            }
        }
        Ok(())
    }

    /// The same source for `n` images each (one source image, several samples).
    pub fn repeat(mut self, n: usize) -> Self {
        for s in &mut self.source {
            *s = s
                .iter()
                .flat_map(|r| std::iter::repeat_n(r.clone(), n))
                .collect();
        }
        self
    }

    /// Share of the finest scale's tokens that are kept.
    pub fn kept_fraction(&self) -> f64 {
        let last = self.keep.last().map_or(&[][..], Vec::as_slice);
        last.iter().filter(|&&k| k).count() as f64 / last.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_pytorch_on_known_values() {
        // F.interpolate(torch.arange(16.).view(1,1,4,4), (2,2), mode='bilinear',
        // align_corners=False) = [[2.5, 4.5], [10.5, 12.5]].
        let m: Vec<f32> = (0..16).map(|i| i as f32).collect();
        assert_eq!(bilinear(&m, 4, 2), vec![2.5, 4.5, 10.5, 12.5]);
        // Upsampling 2→3: src = (d+0.5)·2/3 − 0.5 → 0 (clamped), 0.5, 1.1667.
        let m = vec![0.0, 1.0, 2.0, 3.0];
        let v = bilinear(&m, 2, 3);
        assert!(
            (v[1] - 0.5).abs() < 1e-6 && (v[4] - 1.5).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn masks_follow_the_official_rules() {
        let pn = PatchNums(vec![1, 2, 3, 4, 6, 8]);
        let keep = Half::Top.mask(8);
        let m = scale_masks(&Region::Mask(keep.clone()), &pn).unwrap();
        // pn² ≤ 3: all kept; the finest scale is the mask itself.
        assert_eq!(m[0], vec![true]);
        assert_eq!(m[5], keep);
        // 8 → 4: rows 0–1 kept (1.0), rows 2–3 not (0.0).
        assert_eq!(m[3].iter().filter(|&&k| k).count(), 8);
        // 8 → 3: the middle row samples between rows 3 and 4: exactly 0.5 → not kept.
        assert_eq!(
            m[2],
            [true, true, true, false, false, false, false, false, false]
        );
        let v = scale_masks(&Region::KeepScales(2), &pn).unwrap();
        assert!(v[1].iter().all(|&k| k) && v[2].iter().all(|&k| !k));
        assert!(scale_masks(&Region::KeepScales(7), &pn).is_err());
        assert!(scale_masks(&Region::Mask(vec![true; 10]), &pn).is_err());
    }

    #[test]
    fn a_token_is_kept_when_most_of_its_pixels_are() {
        // 4×4 pixels, 2×2 tokens: token 0 has 3 of 4 kept, token 1 has 2 of 4 (not more than half).
        let mut px = vec![false; 16];
        for i in [0, 1, 4, 2, 3] {
            px[i] = true;
        }
        assert_eq!(
            token_mask(&px, 4, 2).unwrap(),
            vec![true, false, false, false]
        );
        assert!(token_mask(&px, 4, 3).is_err());
    }
}
