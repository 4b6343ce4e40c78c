//! 2-D convolution on the CPU as im2col + one matrix product per tile of output rows, forward
//! and backward (the VQ-VAE's hot path).
//!
//! burn's CPU backend computes a convolution's weight gradient as another convolution whose
//! kernel is the output gradient (a 64×64 "kernel" producing a 3×3 "image"), after transposing
//! both tensors, and its input gradient as a transposed convolution written as plain loops.
//! Here all three products are matrix products over the same im2col columns:
//!
//! * forward, per image: `y[co, n] = Σ_k w[co, k] · col[k, n] + b[co]`;
//! * weight: `dw[co, k] = Σ_images Σ_n dy[co, n] · col[k, n]`;
//! * input: `dcol[k, n] = Σ_co w[co, k] · dy[co, n]`, scattered back by col2im;
//!
//! with `k` running over (input channel, kernel row, kernel column) and `n` over output
//! positions. The columns are built a tile of output rows at a time (about 384 KiB), so they
//! stay in cache and a 256-px map never needs its whole 9×-sized column matrix; tiles of one
//! image run in parallel forward, images in parallel backward.

use rayon::prelude::*;

use std::cell::RefCell;

use super::matmul::{Mat, Shared, matmul};

thread_local! {
    /// Each thread's column buffer, kept between calls: a training step runs some fifty
    /// convolutions, and a fresh zeroed buffer per task cost more than the copies into it.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's column buffer, at least `len` values long (its contents are
/// whatever the last user left: callers write before they read).
fn with_columns<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLUMNS.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => {
            if c.len() < len {
                c.resize(len, 0.0);
            }
            f(&mut c[..len])
        }
        // Only if a task nested inside another on this thread: a buffer of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Images per backward task: one run per thread, so each thread adds its images' weight
/// gradients into one accumulator (rayon would otherwise split further and zero more).
fn images_per_task(b: usize) -> usize {
    b.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// A buffer of `n` values that the caller's tasks fill completely through its pointer before
/// `finish` sets its length (no zeroing first).
struct Uninit(Vec<f32>);

impl Uninit {
    fn new(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    fn ptr(&mut self) -> Shared {
        Shared(self.0.as_mut_ptr())
    }

    /// # Safety
    /// Every one of the `n` values must have been written.
    unsafe fn finish(mut self, n: usize) -> Vec<f32> {
        // SAFETY: the capacity is `n` and the caller wrote all of it.
        unsafe { self.0.set_len(n) };
        self.0
    }
}

/// What one convolution computes: `x` `[b, cin, h, w]` with a square `k`×`k` kernel, stride
/// and symmetric zero padding, groups 1, dilation 1, into `[b, cout, ho, wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub b: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Column-tile budget in f32 values (384 KiB: half a core's L2 on the machines measured).
const TILE: usize = 96 * 1024;

impl ConvShape {
    /// `None` for shapes the kernels do not take (empty, or a kernel larger than the padded
    /// input), which then go through burn.
    pub fn new(x: [usize; 4], cout: usize, k: usize, stride: usize, pad: usize) -> Option<Self> {
        let [b, cin, h, w] = x;
        if b == 0 || cin == 0 || cout == 0 || k == 0 || stride == 0 {
            return None;
        }
        let (hp, wp) = (h.checked_add(2 * pad)?, w.checked_add(2 * pad)?);
        if hp < k || wp < k {
            return None;
        }
        let (ho, wo) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
        Some(Self {
            b,
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad,
            ho,
            wo,
        })
    }

    /// Rows of the column matrix: `cin · k · k`.
    pub fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Output positions per image.
    pub fn n(&self) -> usize {
        self.ho * self.wo
    }

    fn x_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    fn y_len(&self) -> usize {
        self.cout * self.n()
    }

    /// A 1×1, stride-1, unpadded convolution: the input already is its column matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output rows per column tile.
    fn tile_rows(&self) -> usize {
        (TILE / (self.kk() * self.wo).max(1)).clamp(1, self.ho)
    }

    /// The tiles of output rows, `[oy0, oy1)`.
    fn tiles(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (t, ho) = (self.tile_rows(), self.ho);
        (0..ho.div_ceil(t)).map(move |i| (i * t, ((i + 1) * t).min(ho)))
    }
}

/// The input pixel `(iy, ix)` of output `(o, kernel offset)` along one axis, if inside.
#[inline(always)]
fn src(o: usize, kof: usize, s: &ConvShape, size: usize) -> Option<usize> {
    (o * s.stride + kof)
        .checked_sub(s.pad)
        .filter(|&i| i < size)
}

/// The valid output columns `[lo, hi)` of kernel column `kx`: those reading inside the input
/// (`0 ≤ ox·stride + kx − pad < w`); the others read padding.
#[inline(always)]
fn valid_columns(s: &ConvShape, kx: usize) -> (usize, usize) {
    let lo = s.pad.saturating_sub(kx).div_ceil(s.stride).min(s.wo);
    let hi = (s.w + s.pad)
        .checked_sub(kx + 1)
        .map_or(0, |last| last / s.stride + 1)
        .clamp(lo, s.wo);
    (lo, hi)
}

/// The column matrix of output rows `[oy0, oy1)` of one image: `col[(ci, ky, kx), n]`, `n`
/// over the tile's positions.
fn im2col(s: &ConvShape, x: &[f32], oy0: usize, oy1: usize, col: &mut [f32]) {
    if s.stride == 1 && s.wo == s.w {
        return im2col_same(s, x, oy0, oy1, col);
    }
    let nt = (oy1 - oy0) * s.wo;
    for ci in 0..s.cin {
        let plane = &x[ci * s.h * s.w..(ci + 1) * s.h * s.w];
        for ky in 0..s.k {
            for kx in 0..s.k {
                let r = (ci * s.k + ky) * s.k + kx;
                let row = &mut col[r * nt..(r + 1) * nt];
                let (lo, hi) = valid_columns(s, kx);
                for (t, oy) in (oy0..oy1).enumerate() {
                    let out = &mut row[t * s.wo..(t + 1) * s.wo];
                    let Some(iy) = src(oy, ky, s, s.h) else {
                        out.fill(0.0);
                        continue;
                    };
                    let line = &plane[iy * s.w..(iy + 1) * s.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if lo < hi {
                        // Input columns lo·stride + kx − pad, then every stride-th.
                        let from = &line[lo * s.stride + kx - s.pad..];
                        for (o, v) in out[lo..hi].iter_mut().zip(from.iter().step_by(s.stride)) {
                            *o = *v;
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] for a stride-1 convolution that keeps the width (`2·pad = k − 1`, the VQ-VAE's
/// 3×3 convolutions). A row of the column matrix is then the input plane itself, shifted by
/// `(ky − pad)·w + kx − pad` values: one copy per row, then zeros over the rows that read the
/// top or bottom padding and over the `|kx − pad|` columns at each line's edge that wrapped
/// around (maps of 8–64 values per line made a copy per line cost more in calls than data).
fn im2col_same(s: &ConvShape, x: &[f32], oy0: usize, oy1: usize, col: &mut [f32]) {
    let (w, hw, nt) = (s.w, s.h * s.w, (oy1 - oy0) * s.w);
    for ci in 0..s.cin {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..s.k {
            // Output rows [va, vb) read input rows inside the image.
            let va = (s.pad.saturating_sub(ky)).clamp(oy0, oy1);
            let vb = (s.h + s.pad).saturating_sub(ky).clamp(va, oy1);
            for kx in 0..s.k {
                let r = (ci * s.k + ky) * s.k + kx;
                let row = &mut col[r * nt..(r + 1) * nt];
                let (a, b) = ((va - oy0) * w, (vb - oy0) * w);
                row[..a].fill(0.0);
                row[b..].fill(0.0);
                if a == b {
                    continue;
                }
                // dst[a + i] = plane[start + i], start = (va + ky − pad)·w + kx − pad; up to
                // |kx − pad| values at either end fall outside the plane: they are wrapped
                // edge columns, zeroed below.
                let start = ((va + ky - s.pad) * w + kx) as isize - s.pad as isize;
                let end = start + (b - a) as isize;
                let skip_front = (-start).max(0) as usize;
                let skip_back = (end - hw as isize).max(0) as usize;
                let src0 = (start + skip_front as isize) as usize;
                let len = b - a - skip_front - skip_back;
                row[a + skip_front..a + skip_front + len].copy_from_slice(&plane[src0..src0 + len]);
                // One value per line (pad 1) is a store: `fill` would be a memset call per
                // line, which cost more than the row's copy.
                let dst = &mut row[a..b];
                if kx < s.pad {
                    let n = s.pad - kx;
                    for line in dst.chunks_exact_mut(w) {
                        if n == 1 {
                            line[0] = 0.0;
                        } else {
                            line[..n].fill(0.0);
                        }
                    }
                } else if kx > s.pad {
                    let n = kx - s.pad;
                    for line in dst.chunks_exact_mut(w) {
                        if n == 1 {
                            line[w - 1] = 0.0;
                        } else {
                            line[w - n..].fill(0.0);
                        }
                    }
                }
            }
        }
    }
}

/// The transpose of [`im2col`]: adds each column value back onto the input pixel it came from.
fn col2im_add(s: &ConvShape, col: &[f32], oy0: usize, oy1: usize, dx: &mut [f32]) {
    let nt = (oy1 - oy0) * s.wo;
    for ci in 0..s.cin {
        let plane = &mut dx[ci * s.h * s.w..(ci + 1) * s.h * s.w];
        for ky in 0..s.k {
            for kx in 0..s.k {
                let r = (ci * s.k + ky) * s.k + kx;
                let row = &col[r * nt..(r + 1) * nt];
                let (lo, hi) = valid_columns(s, kx);
                if lo == hi {
                    continue;
                }
                for (t, oy) in (oy0..oy1).enumerate() {
                    let Some(iy) = src(oy, ky, s, s.h) else {
                        continue;
                    };
                    let line = &mut plane[iy * s.w..(iy + 1) * s.w];
                    let from = &row[t * s.wo + lo..t * s.wo + hi];
                    let to = line[lo * s.stride + kx - s.pad..]
                        .iter_mut()
                        .step_by(s.stride);
                    for (d, &v) in to.zip(from) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// `y = conv(x, w) + bias`. `x` `[b, cin, h, w]`, `w` `[cout, cin, k, k]`, `bias` `[cout]`;
/// returns `[b, cout, ho, wo]`.
pub fn forward(s: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(x.len(), s.b * s.x_len(), "conv input length");
    assert_eq!(w.len(), s.cout * s.kk(), "conv weight length");
    let (n, kk) = (s.n(), s.kk());
    let mut y = Uninit::new(s.b * s.y_len());
    let out = y.ptr();
    let tiles: Vec<(usize, usize)> = s.tiles().collect();
    let tasks: Vec<(usize, usize, usize)> = (0..s.b)
        .flat_map(|b| tiles.iter().map(move |&(a, z)| (b, a, z)))
        .collect();
    let cols = if s.pointwise() {
        0
    } else {
        kk * s.tile_rows() * s.wo
    };
    tasks.par_iter().for_each(|&(b, oy0, oy1)| {
        with_columns(cols, |col| {
            let img = &x[b * s.x_len()..(b + 1) * s.x_len()];
            let (p0, nt) = (oy0 * s.wo, (oy1 - oy0) * s.wo);
            let rhs = if s.pointwise() {
                Mat {
                    ptr: img[p0..].as_ptr(),
                    rs: n as isize,
                    cs: 1,
                }
            } else {
                im2col(s, img, oy0, oy1, &mut col[..kk * nt]);
                Mat::rows(col, nt)
            };
            // SAFETY: this task alone writes columns [p0, p0 + nt) of image b's `cout` rows
            // (the bias first when there is one, then the product onto it).
            unsafe {
                let dst = out.get().add(b * s.y_len() + p0);
                if let Some(bias) = bias {
                    for (co, &v) in bias.iter().enumerate() {
                        for i in 0..nt {
                            dst.add(co * n + i).write(v);
                        }
                    }
                }
                matmul(
                    s.cout,
                    nt,
                    kk,
                    dst,
                    n,
                    bias.is_some(),
                    Mat::rows(w, kk),
                    rhs,
                    false,
                );
            }
        })
    });
    // SAFETY: the tasks' tiles cover every output row of every image, all `cout` channels.
    unsafe { y.finish(s.b * s.y_len()) }
}

/// The gradients of a convolution: `(dx, dw, dbias)`, `dx` only when asked for.
pub type ConvGrads = (Option<Vec<f32>>, Vec<f32>, Vec<f32>);

/// What a convolution's backward pass reads: its shape, input `x`, weight `w` and the
/// output gradient `dy`.
#[derive(Clone, Copy)]
pub struct Backward<'a> {
    pub s: &'a ConvShape,
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub dy: &'a [f32],
}

/// The gradients of [`forward`] from the output gradient.
pub fn backward(p: Backward, want_dx: bool) -> ConvGrads {
    let Backward { s, dy, .. } = p;
    assert_eq!(dy.len(), s.b * s.y_len(), "conv output-gradient length");
    // The gradient columns hold `cout·k²` rows, the input columns `cin·k²`: without `dx` they
    // only pay when they are not larger.
    if s.stride == 1 && !s.pointwise() && s.pad < s.k && (want_dx || s.cout <= s.cin) {
        return backward_from_gradient_columns(p, want_dx);
    }
    backward_input_columns(p, want_dx)
}

/// [`backward`] from the input's columns: `dw` from them, `dx` as their gradient scattered
/// back (col2im). Any stride.
fn backward_input_columns(p: Backward, want_dx: bool) -> ConvGrads {
    let Backward { s, x, w, dy } = p;
    let (n, kk) = (s.n(), s.kk());
    let mut dx = want_dx.then(|| vec![0f32; s.b * s.x_len()]);
    let dx_ptr = dx.as_mut().map(|v| Shared(v.as_mut_ptr()));
    let zero = || (vec![0f32; s.cout * kk], vec![0f32; s.cout]);
    let (dw, db) = (0..s.b)
        .into_par_iter()
        .with_min_len(images_per_task(s.b))
        .fold(
            || (zero(), Vec::new(), Vec::new()),
            |((mut dw, mut db), mut col, mut dcol), b| {
                let img = &x[b * s.x_len()..(b + 1) * s.x_len()];
                let g = &dy[b * s.y_len()..(b + 1) * s.y_len()];
                for (co, d) in db.iter_mut().enumerate() {
                    *d += g[co * n..(co + 1) * n].iter().sum::<f32>();
                }
                // SAFETY: this task alone writes image b of dx.
                let mut dxi = dx_ptr.map(|p| unsafe {
                    std::slice::from_raw_parts_mut(p.get().add(b * s.x_len()), s.x_len())
                });
                let cap = kk * s.tile_rows() * s.wo;
                if !s.pointwise() {
                    col.resize(cap, 0.0);
                    if dxi.is_some() {
                        dcol.resize(cap, 0.0);
                    }
                }
                for (oy0, oy1) in s.tiles() {
                    let (p0, nt) = (oy0 * s.wo, (oy1 - oy0) * s.wo);
                    let gt = Mat::rows(&g[p0..], n);
                    // The columns: dw[co, k] += Σ_n dy[co, n] · col[k, n].
                    let cols = if s.pointwise() {
                        Mat::transposed(&img[p0..], n)
                    } else {
                        im2col(s, img, oy0, oy1, &mut col[..kk * nt]);
                        Mat::transposed(&col[..kk * nt], nt)
                    };
                    // SAFETY: dw is cout × kk; the views lie inside img/col and g.
                    unsafe { matmul(s.cout, kk, nt, dw.as_mut_ptr(), kk, true, gt, cols, false) };
                    if let Some(dxi) = dxi.as_deref_mut() {
                        let wt = Mat::transposed(w, kk);
                        if s.pointwise() {
                            // SAFETY: rows of dx's image b, columns [p0, p0 + nt).
                            unsafe {
                                matmul(
                                    kk,
                                    nt,
                                    s.cout,
                                    dxi[p0..].as_mut_ptr(),
                                    n,
                                    false,
                                    wt,
                                    gt,
                                    false,
                                )
                            };
                        } else {
                            let dc = &mut dcol[..kk * nt];
                            // SAFETY: dc is kk × nt.
                            unsafe {
                                matmul(kk, nt, s.cout, dc.as_mut_ptr(), nt, false, wt, gt, false)
                            };
                            col2im_add(s, dc, oy0, oy1, dxi);
                        }
                    }
                }
                ((dw, db), col, dcol)
            },
        )
        .map(|(acc, _, _)| acc)
        .reduce(zero, |(mut a, mut b), (c, d)| {
            a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
            b.iter_mut().zip(&d).for_each(|(b, d)| *b += d);
            (a, b)
        });
    (dx, dw, db)
}

/// [`backward`] for stride 1 from one column matrix, of the output gradient.
///
/// With stride 1, `dx` is the convolution of `dy` (padded by `k − 1 − pad`) with the kernel
/// flipped and its channel axes swapped; its columns `D[(co, ky', kx'), input position]` =
/// `dy[co, iy − k + 1 + ky' + pad, ix − k + 1 + kx' + pad]` also give the weight gradient:
///
/// * input: `dx[ci, ·] = Σ_(co, ky', kx') w[co, ci, k−1−ky', k−1−kx'] · D[(co, ky', kx'), ·]`;
/// * weight: `dw[co, ci, k−1−ky', k−1−kx'] = Σ_positions D[(co, ky', kx'), ·] · x[ci, ·]`;
///
/// so one im2col of `dy` per tile replaces the im2col of `x`, the `cin·k²`-row product of the
/// input columns' gradient and its scatter back (col2im), and `dx` is written in place.
fn backward_from_gradient_columns(p: Backward, want_dx: bool) -> ConvGrads {
    let Backward { s, x, w, dy } = p;
    let (k, n) = (s.k, s.n());
    // The convolution that computes dx: dy in, dx out.
    let t = ConvShape::new([s.b, s.cout, s.ho, s.wo], s.cin, k, 1, k - 1 - s.pad)
        .expect("the transposed convolution of a valid stride-1 convolution");
    debug_assert_eq!((t.ho, t.wo), (s.h, s.w));
    let (hw, rows) = (s.h * s.w, t.kk());
    // The flipped kernel as `[ci, (co, ky', kx')]`.
    let mut flipped = Vec::new();
    if want_dx {
        flipped.resize(s.cin * rows, 0.0);
        for co in 0..s.cout {
            for ci in 0..s.cin {
                let src = &w[(co * s.cin + ci) * k * k..][..k * k];
                let dst = &mut flipped[ci * rows + co * k * k..][..k * k];
                for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = v;
                }
            }
        }
    }
    let mut dx = want_dx.then(|| Uninit::new(s.b * s.x_len()));
    let dx_ptr = dx.as_mut().map(Uninit::ptr);
    // dwt[(co, ky', kx'), ci]: the weight gradient with the kernel flipped.
    let zero = || (vec![0f32; rows * s.cin], vec![0f32; s.cout]);
    let (dwt, db) = (0..s.b)
        .into_par_iter()
        .with_min_len(images_per_task(s.b))
        .fold(zero, |(mut dwt, mut db), b| {
            let img = &x[b * s.x_len()..(b + 1) * s.x_len()];
            let g = &dy[b * s.y_len()..(b + 1) * s.y_len()];
            for (co, d) in db.iter_mut().enumerate() {
                *d += g[co * n..(co + 1) * n].iter().sum::<f32>();
            }
            with_columns(rows * t.tile_rows() * t.wo, |cols| {
                for (iy0, iy1) in t.tiles() {
                    let (p0, nt) = (iy0 * t.wo, (iy1 - iy0) * t.wo);
                    let d = &mut cols[..rows * nt];
                    im2col(&t, g, iy0, iy1, d);
                    // SAFETY: dwt is rows × cin; D is rows × nt; x's view is image b's
                    // positions [p0, p0 + nt) of each of its cin planes.
                    unsafe {
                        matmul(
                            rows,
                            s.cin,
                            nt,
                            dwt.as_mut_ptr(),
                            s.cin,
                            true,
                            Mat::rows(d, nt),
                            Mat::transposed(&img[p0..], hw),
                            false,
                        )
                    };
                    if let Some(p) = dx_ptr {
                        // SAFETY: this task alone writes image b of dx: its cin rows of
                        // stride hw, columns [p0, p0 + nt).
                        unsafe {
                            matmul(
                                s.cin,
                                nt,
                                rows,
                                p.get().add(b * s.x_len() + p0),
                                hw,
                                false,
                                Mat::rows(&flipped, rows),
                                Mat::rows(d, nt),
                                false,
                            )
                        };
                    }
                }
            });
            (dwt, db)
        })
        .reduce(zero, |(mut a, mut b), (c, d)| {
            a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
            b.iter_mut().zip(&d).for_each(|(b, d)| *b += d);
            (a, b)
        });
    // SAFETY: each image's tiles cover all its input rows, every channel of dx.
    let dx = dx.map(|v| unsafe { v.finish(s.b * s.x_len()) });
    // Unflip: dw[co, ci, ky, kx] = dwt[(co, k−1−ky, k−1−kx), ci].
    let mut dw = vec![0f32; s.cout * s.kk()];
    for co in 0..s.cout {
        for ci in 0..s.cin {
            let dst = &mut dw[(co * s.cin + ci) * k * k..][..k * k];
            for (j, d) in dst.iter_mut().rev().enumerate() {
                *d = dwt[(co * k * k + j) * s.cin + ci];
            }
        }
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    /// The two backward formulations (input columns + col2im; output-gradient columns) agree,
    /// with and without `dx`, including shapes whose `cout > cin` take the first without `dx`.
    #[test]
    fn both_backward_paths_agree() {
        // (b, cin, h, w, cout, k, pad)
        for (b, ci, h, w, co, k, p) in [
            (2, 3, 9, 7, 5, 3, 1),
            (1, 5, 8, 11, 3, 3, 0),
            (2, 4, 6, 5, 3, 5, 2),
            (3, 6, 7, 9, 2, 3, 2),
            (2, 40, 40, 36, 8, 3, 1),
        ] {
            let s = ConvShape::new([b, ci, h, w], co, k, 1, p).unwrap();
            let (x, wt, dy) = (
                values(b * s.x_len(), 1),
                values(co * s.kk(), 2),
                values(b * s.y_len(), 3),
            );
            let op = Backward {
                s: &s,
                x: &x,
                w: &wt,
                dy: &dy,
            };
            let (dx1, dw1, db1) = backward_from_gradient_columns(op, true);
            // The input-columns path, forced: the same code `backward` runs for stride 2.
            let (dx2, dw2, db2) = backward_input_columns(op, true);
            let close = |a: &[f32], b: &[f32], tol: f32| {
                a.iter()
                    .zip(b)
                    .all(|(a, b)| (a - b).abs() <= tol * (1.0 + b.abs()))
            };
            assert!(
                close(&dx1.unwrap(), &dx2.unwrap(), 1e-4),
                "dx {:?}",
                (b, ci, h, w, co, k, p)
            );
            assert!(close(&dw1, &dw2, 1e-4), "dw {:?}", (b, ci, h, w, co, k, p));
            assert!(close(&db1, &db2, 1e-5), "db");
            let (none, dw3, _) = backward_from_gradient_columns(op, false);
            assert!(none.is_none() && close(&dw3, &dw2, 1e-4));
        }
    }
}
