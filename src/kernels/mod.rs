//! Fused CPU kernels for the hot paths that burn's CPU backend (flex) runs op by op.
//!
//! A training step of the VAR spends its time in the matrix products ([`matmul`]: the same
//! `gemm` as burn, without burn's copy of every output buffer), the attention softmax over the
//! `[B, H, L, L]` logits (the largest tensor of the step), the query/key normalisation, the
//! loss's log-softmax and the MLP's GELU; the VQ-VAE's in its convolutions ([`conv`]),
//! GroupNorm and SiLU. Under autodiff burn records each of these activations as the ops it is made of (max,
//! sub, exp, sum, div; mul, add, exp, div), every one a full pass over the tensor, `exp` and
//! broadcast ops on one thread, and as many passes again backward. Here each is one op with its
//! own backward: one pass forward and one backward, rows split over threads, `exp` vectorised.
//!
//! The kernels run natively and in both browser modules: the threaded one (feature `threads`)
//! splits them over its Web Workers, the single-threaded one runs them on the calling thread
//! (rayon's fallback where threads cannot start). Every function takes burn's path on the other
//! backends (burn fuses GPU kernels itself), so the model code calls them unconditionally.
//! `tests/kernels.rs` checks values and gradients against burn's ops.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

pub mod conv;
pub mod matmul;

/// Runs `f` on one of rayon's threads and waits for it: a step of work made of many parallel
/// loops (a sampling scale, a decode, a text encoding) goes to the pool once.
///
/// Called from outside the pool, every parallel loop is handed to the pool and its end waited
/// for: two thread wake-ups per loop, which in a browser's Web Workers (`Atomics.wait` and
/// `notify`) cost about what a second thread saves on loops of a small model's size. Inside the
/// pool a loop splits by work stealing, and the thread that started it goes on working and
/// takes back what no other thread has picked up. Where there is nothing to gain (already on a
/// pool thread, one thread in all, or rayon's single-threaded wasm fallback) `f` runs in place.
/// The results do not depend on which thread runs `f`: every split depends only on sizes and
/// the pool's thread count.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        return f();
    }
    rayon::scope(|_| f())
}

/// `x · w + bias` over the last axis of `x` (`[..., K]`), `w` `[K, N]`, `bias` `[N]`: a
/// `Linear` layer. On the CPU the product is written straight into its own buffer and the bias
/// is its starting value ([`matmul`]).
pub fn linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    if let Some(out) = flex::linear(&x, &w, bias.as_ref()) {
        return out;
    }
    burn::tensor::module::linear(x, w, bias)
}

/// The batched product `a · b` of `[B, H, M, K]` and `[B, H, K, N]` (any strides: a
/// `swap_dims` view is read in place).
pub fn batched_matmul(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    if let Some(out) = flex::batched_matmul(&a, &b, false) {
        return out;
    }
    a.matmul(b)
}

/// VAR's query/key normalisation: each row of `x` `[B, H, L, d]` divided by its L2 norm
/// (floored at 1e-12, as `F.normalize`) and multiplied by its head's `scale` `[1, H, 1, 1]`.
/// On the CPU a strided view (a slice of the fused qkv) is read in place, in one pass.
pub fn l2_normalize_scaled(x: Tensor<4>, scale: Tensor<4>) -> Tensor<4> {
    if let Some(out) = flex::l2_normalize_scaled(&x, &scale) {
        return out;
    }
    crate::nn::l2_normalize(x) * scale
}

/// Attention's output merged over heads: `(p · v)` with `p` `[B, H, M, K]` and `v`
/// `[B, H, K, d]`, as `[B, M, H·d]`. On the CPU the product is written in that order directly,
/// so merging the heads copies nothing.
pub fn attention_merge(p: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
    let [b, h, m, _] = p.dims();
    let d = v.dims()[3];
    if let Some(out) = flex::batched_matmul(&p, &v, true) {
        return out.swap_dims(1, 2).reshape([b, m, h * d]);
    }
    p.matmul(v).swap_dims(1, 2).reshape([b, m, h * d])
}

/// `softmax(logits + bias)` over the last axis. `logits` `[B, H, Lq, Lk]`; `bias`, when given,
/// `[1, 1, Lq, Lk]` (the block-causal mask, −∞ where a query may not look), not trained.
pub fn masked_softmax(logits: Tensor<4>, bias: Option<Tensor<4>>) -> Tensor<4> {
    if let Some(out) = flex::masked_softmax(&logits, bias.as_ref()) {
        return out;
    }
    let logits = match bias {
        Some(b) => logits + b,
        None => logits,
    };
    softmax(logits, 3)
}

/// `log(softmax(x))` over the last axis (the training loss's log-probabilities).
pub fn log_softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if let Some(out) = flex::log_softmax(&x) {
        return out;
    }
    burn::tensor::activation::log_softmax(x, D - 1)
}

/// GELU with the tanh approximation (PyTorch's `approximate='tanh'`), written as
/// `x · σ(2z)` with `z = √(2/π)(x + 0.044715 x³)`: the same function as `x/2 · (1 + tanh z)`.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if let Some(out) = flex::activation(&x, Act::GeluTanh) {
        return out;
    }
    gelu_tanh_ops(x)
}

/// [`gelu_tanh`] as burn's ops, the form every backend but the CPU runs. `z` is capped at 40
/// before `exp`: from about x < −10 `exp(z)` overflows to ∞, and under autodiff the division's
/// gradient (0) times `exp`'s (∞) is NaN. The cap changes no value that matters (below
/// x ≈ −7.35, where it applies, the output is x·e⁻⁴⁰, under 5e-18·|x|, where GELU is nearer
/// 0 still) and gives those inputs a zero gradient through `z`, as the function has there.
pub fn gelu_tanh_ops<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const K: f64 = -2.0 * GELU_C as f64;
    let z = (x.clone() + x.clone() * x.clone() * x.clone() * GELU_A as f64) * K;
    x / (z.clamp_max(40.0).exp() + 1.0)
}

/// Nearest-neighbour 2× upsampling of `[B, C, H, W]` (the VQ-VAE decoder's `Upsample`, before
/// its convolution). burn expands and copies it on one thread, and its backward sums the
/// expanded axes the same way; here each is one pass over planes in parallel.
pub fn upsample_nearest2x(x: Tensor<4>) -> Tensor<4> {
    if let Some(out) = flex::upsample_nearest2x(&x) {
        return out;
    }
    let [b, c, h, w] = x.dims();
    let up: Tensor<6> = x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]);
    up.reshape([b, c, 2 * h, 2 * w])
}

/// SiLU, `x · σ(x)` (the VQ-VAE's activation).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if let Some(out) = flex::activation(&x, Act::Silu) {
        return out;
    }
    burn::tensor::activation::silu(x)
}

/// VAR's adaptive layer norm: `LN(x) · (1 + scale) + shift`, the norm without affine
/// parameters over the last axis. `x` `[B, L, C]`; `scale`, `shift` `[B, 1, C]`.
pub fn ada_layer_norm(x: Tensor<3>, scale: Tensor<3>, shift: Tensor<3>, eps: f64) -> Tensor<3> {
    if let Some(out) = flex::ada_layer_norm(&x, &scale, &shift, eps as f32) {
        return out;
    }
    let (var, mean) = x.clone().var_mean_bias(2);
    (x - mean) / (var + eps).sqrt() * (scale + 1.0) + shift
}

/// What a fused norm applies to its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// The norm's output as it is.
    Nothing,
    /// `silu(norm(x))` (the VQ-VAE's every norm is followed by SiLU). On the CPU one pass each
    /// way: the same values as the two ops, without the activation's own pass over memory,
    /// buffer and autodiff node.
    Silu,
}

/// GroupNorm with affine parameters, as PyTorch's `nn.GroupNorm` (biased variance), then
/// `then`: `x` `[B, C, H, W]` in `groups` groups of `C / groups` channels; `weight`, `bias`
/// `[C]`.
pub fn group_norm(
    x: Tensor<4>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    groups: usize,
    eps: f64,
    then: Then,
) -> Tensor<4> {
    let with_silu = then == Then::Silu;
    if let Some(out) = flex::group_norm(&x, &weight, &bias, groups, eps as f32, with_silu) {
        return out;
    }
    let [b, c, h, w] = x.dims();
    let xg = x.reshape([b, groups, (c / groups) * h * w]);
    let (var, mean) = xg.clone().var_mean_bias(2);
    let xn = ((xg - mean) / (var + eps).sqrt()).reshape([b, c, h, w]);
    let y = xn * weight.reshape([1, c, 1, 1]) + bias.reshape([1, c, 1, 1]);
    if with_silu { silu(y) } else { y }
}

/// A 2-D convolution with a square kernel, stride and symmetric zero padding (groups 1,
/// dilation 1): `x` `[B, Cin, H, W]`, `weight` `[Cout, Cin, k, k]`, `bias` `[Cout]`. On the CPU
/// it is im2col + matrix products forward and backward ([`conv`]).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    if let Some(out) = flex::conv2d(&x, &weight, bias.as_ref(), stride, padding) {
        return out;
    }
    burn::tensor::module::conv2d(
        x,
        weight,
        bias,
        burn::tensor::ops::ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
    )
}

/// The elementwise activations with a fused kernel.
#[derive(Clone, Copy, Debug)]
enum Act {
    GeluTanh,
    Silu,
}

/// √(2/π) and the cubic coefficient of the tanh approximation.
const GELU_C: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

/// The row kernels, on plain slices (also what the tests call).
pub mod rows {
    use super::{GELU_A, GELU_C};

    /// `e^x` for f32, written so that the compiler vectorises loops over it (no libm call):
    /// Cephes' `expf` (range reduction by ln 2 in two parts, a degree-6 polynomial, the power
    /// of two built in the exponent bits); within a few ulp of `f32::exp` on [−87.3, 88], exactly
    /// 0 below (so a −∞ mask gives 0) and +∞ above 88 (where `f32::exp` is still finite up to
    /// 88.72: no caller here needs that range).
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LO: f32 = -87.336_55; // ln of the smallest normal f32
        const HI: f32 = 88.0; // keeps n ≤ 127, a finite power of two
        let xc = x.clamp(LO, HI);
        // n = round(x / ln 2) by adding 1.5·2^23: the sum's low mantissa bits then hold n
        // (this vectorises, unlike `round` or a float-to-int cast).
        const SHIFTER: f32 = 12_582_912.0;
        let t = xc * std::f32::consts::LOG2_E + SHIFTER;
        let n = t - SHIFTER;
        let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let mut p = 1.987_569_1e-4f32;
        p = p * r + 1.398_2e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 0.166_666_65;
        p = p * r + 0.5;
        let p = p * r * r + r + 1.0;
        // 2^n: n + 127 in the exponent field (n is in [−126, 127] after the clamp).
        let pow2 = f32::from_bits(
            (t.to_bits()
                .wrapping_sub(SHIFTER.to_bits())
                .wrapping_add(127))
                << 23,
        );
        let y = p * pow2;
        if x < LO {
            0.0
        } else if x > HI {
            f32::INFINITY
        } else {
            y
        }
    }

    const LANES: usize = 8;

    #[inline(always)]
    fn row_max(v: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for k in 0..LANES {
                acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
            }
        }
        let mut m = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        for a in acc {
            m = if a > m { a } else { m };
        }
        m
    }

    #[inline(always)]
    fn exp_sub_sum(v: &mut [f32], max: f32) -> f32 {
        for x in v.iter_mut() {
            *x = exp(*x - max);
        }
        sum(v)
    }

    #[inline(always)]
    fn sum(v: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for k in 0..LANES {
                acc[k] += c[k];
            }
        }
        chunks.remainder().iter().sum::<f32>() + acc.iter().sum::<f32>()
    }

    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..LANES {
                acc[k] += x[k] * y[k];
            }
        }
        let mut s = 0f32;
        for (x, y) in ra.iter().zip(rb) {
            s += x * y;
        }
        s + acc.iter().sum::<f32>()
    }

    /// Softmax of each row of `x` (+ the matching row of `bias`, which repeats every
    /// `bias.len() / row` rows of the whole tensor; `first_row` is `x`'s row number in it).
    #[inline(always)]
    fn softmax_fwd(x: &[f32], bias: Option<&[f32]>, first_row: usize, row: usize, out: &mut [f32]) {
        for (i, (xr, o)) in x
            .chunks_exact(row)
            .zip(out.chunks_exact_mut(row))
            .enumerate()
        {
            match bias {
                Some(b) => {
                    let rows_b = b.len() / row;
                    let k = (first_row + i) % rows_b;
                    let br = &b[k * row..(k + 1) * row];
                    for ((o, &x), &b) in o.iter_mut().zip(xr).zip(br) {
                        *o = x + b;
                    }
                }
                None => o.copy_from_slice(xr),
            }
            let m = row_max(o);
            let s = exp_sub_sum(o, m);
            let inv = 1.0 / s;
            for v in o.iter_mut() {
                *v *= inv;
            }
        }
    }

    /// `dx = p ⊙ (g − ⟨g, p⟩)` per row (the softmax's backward, from its output `p`).
    #[inline(always)]
    fn softmax_bwd(p: &[f32], g: &[f32], row: usize, dx: &mut [f32]) {
        for ((pr, gr), d) in p
            .chunks_exact(row)
            .zip(g.chunks_exact(row))
            .zip(dx.chunks_exact_mut(row))
        {
            let s = dot(pr, gr);
            for ((d, &p), &g) in d.iter_mut().zip(pr).zip(gr) {
                *d = p * (g - s);
            }
        }
    }

    /// `x − log Σ eˣ` per row.
    #[inline(always)]
    fn log_softmax_fwd(x: &[f32], row: usize, out: &mut [f32]) {
        for (xr, o) in x.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
            let m = row_max(xr);
            o.copy_from_slice(xr);
            let lse = m + exp_sub_sum(o, m).ln();
            for (o, &x) in o.iter_mut().zip(xr) {
                *o = x - lse;
            }
        }
    }

    /// `dx = g − softmax · Σ g` per row, from the output `y = log softmax`.
    #[inline(always)]
    fn log_softmax_bwd(y: &[f32], g: &[f32], row: usize, dx: &mut [f32]) {
        for ((yr, gr), d) in y
            .chunks_exact(row)
            .zip(g.chunks_exact(row))
            .zip(dx.chunks_exact_mut(row))
        {
            let s = sum(gr);
            for ((d, &y), &g) in d.iter_mut().zip(yr).zip(gr) {
                *d = g - exp(y) * s;
            }
        }
    }

    #[inline(always)]
    fn gelu_fwd(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            let z = GELU_C * (x + GELU_A * x * x * x);
            *y = x / (1.0 + exp(-2.0 * z));
        }
    }

    /// d/dx [x σ(2z)] = σ + x σ (1 − σ) · 2 z′, with z′ = √(2/π)(1 + 3·0.044715 x²).
    #[inline(always)]
    fn gelu_bwd(x: &[f32], g: &[f32], dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let z = GELU_C * (x + GELU_A * x * x * x);
            let s = 1.0 / (1.0 + exp(-2.0 * z));
            let dz = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
            *d = g * (s + x * s * (1.0 - s) * 2.0 * dz);
        }
    }

    #[inline(always)]
    fn silu_fwd(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x / (1.0 + exp(-x));
        }
    }

    /// d/dx [x σ(x)] = σ (1 + x (1 − σ)).
    #[inline(always)]
    fn silu_bwd(x: &[f32], g: &[f32], dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let s = 1.0 / (1.0 + exp(-x));
            *d = g * s * (1.0 + x * (1.0 - s));
        }
    }

    /// One batch element of the adaptive layer norm: rows of `c` values of `x`, the element's
    /// `scale` and `shift` (`c` each). Writes `y`, the normalised rows `xhat` and each row's
    /// `1/σ` (kept for the backward pass).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn ada_ln_fwd(
        x: &[f32],
        scale: &[f32],
        shift: &[f32],
        c: usize,
        eps: f32,
        y: &mut [f32],
        xhat: &mut [f32],
        rstd: &mut [f32],
    ) {
        let inv_c = 1.0 / c as f32;
        for (((xr, yr), hr), r) in x
            .chunks_exact(c)
            .zip(y.chunks_exact_mut(c))
            .zip(xhat.chunks_exact_mut(c))
            .zip(rstd.iter_mut())
        {
            let mean = sum(xr) * inv_c;
            for (h, &x) in hr.iter_mut().zip(xr) {
                *h = x - mean;
            }
            let var = dot(hr, hr) * inv_c;
            *r = 1.0 / (var + eps).sqrt();
            let rs = *r;
            for (((y, h), &s), &t) in yr.iter_mut().zip(hr.iter_mut()).zip(scale).zip(shift) {
                *h *= rs;
                *y = *h * (1.0 + s) + t;
            }
        }
    }

    /// Its backward for one batch element: `dx` per row, and this element's `dscale`, `dshift`
    /// (sums over its rows).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn ada_ln_bwd(
        xhat: &[f32],
        rstd: &[f32],
        scale: &[f32],
        g: &[f32],
        c: usize,
        dx: &mut [f32],
        dscale: &mut [f32],
        dshift: &mut [f32],
    ) {
        let inv_c = 1.0 / c as f32;
        let mut gs = vec![0f32; c];
        for (((hr, &r), gr), dr) in xhat
            .chunks_exact(c)
            .zip(rstd)
            .zip(g.chunks_exact(c))
            .zip(dx.chunks_exact_mut(c))
        {
            for ((((gs, &g), &s), &h), (ds, dt)) in gs
                .iter_mut()
                .zip(gr)
                .zip(scale)
                .zip(hr)
                .zip(dscale.iter_mut().zip(dshift.iter_mut()))
            {
                *gs = g * (1.0 + s);
                *ds += g * h;
                *dt += g;
            }
            let m1 = sum(&gs) * inv_c;
            let m2 = dot(&gs, hr) * inv_c;
            for ((d, &gs), &h) in dr.iter_mut().zip(&gs).zip(hr) {
                *d = r * (gs - m1 - h * m2);
            }
        }
    }

    /// One (image, group) of GroupNorm: `x` holds `w.len()` channels of `hw` values each.
    /// Writes `y` and returns the group's mean and `1/σ`.
    #[inline(always)]
    fn group_norm_fwd(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        hw: usize,
        eps: f32,
        silu: bool,
        y: &mut [f32],
    ) -> (f32, f32) {
        let inv_n = 1.0 / x.len() as f32;
        let mean = sum(x) * inv_n;
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x - mean;
        }
        let rstd = 1.0 / (dot(y, y) * inv_n + eps).sqrt();
        for ((yc, &w), &b) in y.chunks_exact_mut(hw).zip(w).zip(b) {
            let (a, c) = (rstd * w, b);
            if silu {
                for y in yc.iter_mut() {
                    let z = *y * a + c;
                    *y = z / (1.0 + exp(-z));
                }
            } else {
                for y in yc.iter_mut() {
                    *y = *y * a + c;
                }
            }
        }
        (mean, rstd)
    }

    /// The gradient reaching the norm's output through SiLU: `g · silu′(z)`, `z` the norm's
    /// output recomputed from the group's `x`, mean and `1/σ`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn group_norm_silu_grad(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        g: &[f32],
        hw: usize,
        mean: f32,
        rstd: f32,
        out: &mut [f32],
    ) {
        for ((((xc, gc), oc), &w), &b) in x
            .chunks_exact(hw)
            .zip(g.chunks_exact(hw))
            .zip(out.chunks_exact_mut(hw))
            .zip(w)
            .zip(b)
        {
            let (a, c) = (rstd * w, b - mean * rstd * w);
            for ((o, &x), &g) in oc.iter_mut().zip(xc).zip(gc) {
                let z = x * a + c;
                let s = 1.0 / (1.0 + exp(-z));
                *o = g * s * (1.0 + z * (1.0 - s));
            }
        }
    }

    /// Its backward: `dx` for the group, and each channel's `Σ g·x̂` and `Σ g` (the weight's
    /// and bias's gradients from this image).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn group_norm_bwd(
        x: &[f32],
        w: &[f32],
        g: &[f32],
        hw: usize,
        mean: f32,
        rstd: f32,
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let inv_n = 1.0 / x.len() as f32;
        // Σ over the group of ĝ = g·w and of ĝ·x̂, channel by channel.
        let (mut s1, mut s2) = (0f32, 0f32);
        for (((xc, gc), &wc), (dw, db)) in x
            .chunks_exact(hw)
            .zip(g.chunks_exact(hw))
            .zip(w)
            .zip(dw.iter_mut().zip(db.iter_mut()))
        {
            let gs = sum(gc);
            // Σ g·x̂ = rstd·(Σ g·x − mean·Σ g)
            let gx = rstd * (dot(gc, xc) - mean * gs);
            *dw = gx;
            *db = gs;
            s1 += wc * gs;
            s2 += wc * gx;
        }
        let (m1, m2) = (s1 * inv_n, s2 * inv_n);
        for (((xc, gc), &wc), dc) in x
            .chunks_exact(hw)
            .zip(g.chunks_exact(hw))
            .zip(w)
            .zip(dx.chunks_exact_mut(hw))
        {
            for ((d, &x), &g) in dc.iter_mut().zip(xc).zip(gc) {
                let xhat = (x - mean) * rstd;
                *d = rstd * (g * wc - m1 - xhat * m2);
            }
        }
    }

    // Each kernel is compiled twice: for the baseline CPU and, chosen at run time, with
    // AVX2 + FMA (8-wide vectors), like burn's own CPU kernels.
    macro_rules! dispatch {
        ($name:ident, $body:ident, ($($a:ident: $t:ty),*)) => {
            dispatch!($name, $body, ($($a: $t),*) -> ());
        };
        ($(#[$doc:meta])* $name:ident, $body:ident, ($($a:ident: $t:ty),*) -> $ret:ty) => {
            $(#[$doc])*
            #[allow(clippy::too_many_arguments)]
            pub fn $name($($a: $t),*) -> $ret {
                #[cfg(target_arch = "x86_64")]
                {
                    #[allow(clippy::too_many_arguments)]
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn wide($($a: $t),*) -> $ret {
                        $body($($a),*)
                    }
                    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                        // SAFETY: the CPU has the features `wide` was compiled for.
                        return unsafe { wide($($a),*) };
                    }
                }
                $body($($a),*)
            }
        };
    }
    dispatch!(softmax_forward, softmax_fwd, (x: &[f32], bias: Option<&[f32]>, first_row: usize, row: usize, out: &mut [f32]));
    dispatch!(softmax_backward, softmax_bwd, (p: &[f32], g: &[f32], row: usize, dx: &mut [f32]));
    dispatch!(log_softmax_forward, log_softmax_fwd, (x: &[f32], row: usize, out: &mut [f32]));
    dispatch!(log_softmax_backward, log_softmax_bwd, (y: &[f32], g: &[f32], row: usize, dx: &mut [f32]));
    dispatch!(gelu_forward, gelu_fwd, (x: &[f32], y: &mut [f32]));
    dispatch!(gelu_backward, gelu_bwd, (x: &[f32], g: &[f32], dx: &mut [f32]));
    dispatch!(silu_forward, silu_fwd, (x: &[f32], y: &mut [f32]));
    dispatch!(silu_backward, silu_bwd, (x: &[f32], g: &[f32], dx: &mut [f32]));
    dispatch!(ada_layer_norm_forward, ada_ln_fwd, (x: &[f32], scale: &[f32], shift: &[f32], c: usize, eps: f32, y: &mut [f32], xhat: &mut [f32], rstd: &mut [f32]));
    dispatch!(
        /// `(mean, 1/σ)` of the group.
        group_norm_forward, group_norm_fwd,
        (x: &[f32], w: &[f32], b: &[f32], hw: usize, eps: f32, silu: bool, y: &mut [f32]) -> (f32, f32)
    );
    dispatch!(group_norm_silu_gradient, group_norm_silu_grad, (x: &[f32], w: &[f32], b: &[f32], g: &[f32], hw: usize, mean: f32, rstd: f32, out: &mut [f32]));
    dispatch!(group_norm_backward, group_norm_bwd, (x: &[f32], w: &[f32], g: &[f32], hw: usize, mean: f32, rstd: f32, dx: &mut [f32], dw: &mut [f32], db: &mut [f32]));
    dispatch!(ada_layer_norm_backward, ada_ln_bwd, (xhat: &[f32], rstd: &[f32], scale: &[f32], g: &[f32], c: usize, dx: &mut [f32], dscale: &mut [f32], dshift: &mut [f32]));

    /// `y = act(x)`.
    pub(super) fn activation_forward(act: super::Act, x: &[f32], y: &mut [f32]) {
        match act {
            super::Act::GeluTanh => gelu_forward(x, y),
            super::Act::Silu => silu_forward(x, y),
        }
    }

    /// `dx = g · act′(x)`.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    pub(super) fn activation_backward(act: super::Act, x: &[f32], g: &[f32], dx: &mut [f32]) {
        match act {
            super::Act::GeluTanh => gelu_backward(x, g, dx),
            super::Act::Silu => silu_backward(x, g, dx),
        }
    }
}

/// The flex (and autodiff-over-flex) paths: unwrap burn's tensors to their CPU buffers, run the
/// row kernels over threads, wrap the result back. `None` when the tensor is elsewhere.
mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::tensor::{Bytes, DType, Shape, Tensor};
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    use super::conv::{self, ConvShape};
    use super::matmul::{self, Batched, Mat};
    use super::{Act, rows};

    /// Elements per parallel task: big enough to amortise the task, small enough to balance.
    const TASK: usize = 32 * 1024;

    /// A contiguous f32 view of a flex tensor, with its shape.
    fn f32_buffer(t: &FlexTensor) -> Option<FlexTensor> {
        (t.dtype() == DType::F32).then(|| t.to_contiguous())
    }

    fn slice(t: &FlexTensor) -> &[f32] {
        let all: &[f32] = t.storage();
        match t.layout().contiguous_offsets() {
            Some((a, b)) => &all[a..b],
            None => unreachable!("made contiguous above"),
        }
    }

    fn dims(t: &FlexTensor) -> Shape {
        t.layout().shape().clone()
    }

    /// A new buffer of `n` values filled in parallel: `fill(k, out)` writes part `k` (`chunk`
    /// values; the last part may be shorter). Each task zeroes its own part first, so no
    /// thread waits on one big memset and the part is in cache when it is filled.
    fn par_fill(n: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
        let mut v = Vec::<f32>::with_capacity(n);
        v.spare_capacity_mut()[..n]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(k, out)| {
                for x in out.iter_mut() {
                    x.write(0.0);
                }
                // SAFETY: every element of `out` was initialised just above.
                let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
                fill(k, out)
            });
        // SAFETY: the parts cover all `n` elements, each initialised by its task.
        unsafe { v.set_len(n) };
        v
    }

    /// Part `k` of `v` cut in `chunk`-sized parts (the last may be shorter).
    fn part(v: &[f32], k: usize, chunk: usize) -> &[f32] {
        &v[k * chunk..((k + 1) * chunk).min(v.len())]
    }

    fn new_like(shape: Shape, data: Vec<f32>) -> FlexTensor {
        FlexTensor::new(
            Bytes::from_elems(data),
            Layout::contiguous(shape),
            DType::F32,
        )
    }

    fn softmax_forward(x: &FlexTensor, bias: Option<&FlexTensor>) -> Option<FlexTensor> {
        let x = f32_buffer(x)?;
        let shape = dims(&x);
        let row = *shape.last()?;
        let bias = match bias {
            Some(b) => {
                let bs = dims(b);
                let (lq, lk) = (shape[shape.len() - 2], row);
                if bs.num_dims() != 4 || bs[0] != 1 || bs[1] != 1 || bs[2] != lq || bs[3] != lk {
                    return None;
                }
                Some(f32_buffer(b)?)
            }
            None => None,
        };
        if row == 0 {
            return None;
        }
        let src = slice(&x);
        let rows_per_task = (TASK / row).max(1);
        let chunk = rows_per_task * row;
        let b = bias.as_ref().map(slice);
        let out = par_fill(src.len(), chunk, |k, o| {
            rows::softmax_forward(part(src, k, chunk), b, k * rows_per_task, row, o)
        });
        Some(new_like(shape, out))
    }

    /// A backward pass over whole rows of `row` values: `f(kept, g, dx)` on matching parts of
    /// the tensor the op kept, the output gradient and the input gradient.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn backward_rows(
        kept: &FlexTensor,
        g: FlexTensor,
        row: usize,
        f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
    ) -> FlexTensor {
        let g = g.to_contiguous();
        let (ks, gs) = (slice(kept), slice(&g));
        let chunk = (TASK / row.max(1)).max(1) * row.max(1);
        let dx = par_fill(ks.len(), chunk, |k, d| {
            f(part(ks, k, chunk), part(gs, k, chunk), d)
        });
        new_like(dims(kept), dx)
    }

    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn last_dim(t: &FlexTensor) -> usize {
        dims(t).last().copied().unwrap_or(1)
    }

    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn softmax_backward(p: &FlexTensor, g: FlexTensor) -> FlexTensor {
        let row = last_dim(p);
        backward_rows(p, g, row, |p, g, d| rows::softmax_backward(p, g, row, d))
    }

    fn log_softmax_forward(x: &FlexTensor) -> Option<FlexTensor> {
        let x = f32_buffer(x)?;
        let row = *dims(&x).last()?;
        if row == 0 {
            return None;
        }
        let src = slice(&x);
        let chunk = (TASK / row).max(1) * row;
        let out = par_fill(src.len(), chunk, |k, o| {
            rows::log_softmax_forward(part(src, k, chunk), row, o)
        });
        Some(new_like(dims(&x), out))
    }

    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn log_softmax_backward(y: &FlexTensor, g: FlexTensor) -> FlexTensor {
        let row = last_dim(y);
        backward_rows(y, g, row, |y, g, d| {
            rows::log_softmax_backward(y, g, row, d)
        })
    }

    fn activation_forward(act: Act, x: &FlexTensor) -> FlexTensor {
        let src = slice(x);
        let out = par_fill(src.len(), TASK, |k, o| {
            rows::activation_forward(act, part(src, k, TASK), o)
        });
        new_like(dims(x), out)
    }

    /// `[B, C, H, W]` → `[B, C, 2H, 2W]`, each value repeated over a 2×2 block, plane by plane.
    fn upsample2x_forward(x: &FlexTensor) -> Option<FlexTensor> {
        let shape = dims(x);
        if shape.num_dims() != 4 || shape[2] == 0 || shape[3] == 0 {
            return None;
        }
        let (h, w) = (shape[2], shape[3]);
        let xs = slice(x);
        let y = par_fill(4 * xs.len(), 4 * h * w, |k, o| {
            for (i, line) in part(xs, k, h * w).chunks_exact(w).enumerate() {
                let (top, rest) = o[4 * i * w..4 * (i + 1) * w].split_at_mut(2 * w);
                for (pair, &v) in top.chunks_exact_mut(2).zip(line) {
                    pair[0] = v;
                    pair[1] = v;
                }
                rest.copy_from_slice(top);
            }
        });
        Some(new_like(Shape::new([shape[0], shape[1], 2 * h, 2 * w]), y))
    }

    /// Its backward: each input pixel's gradient is the sum of its 2×2 block's.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn upsample2x_backward(x: &FlexTensor, g: FlexTensor) -> FlexTensor {
        let g = g.to_contiguous();
        let shape = dims(x);
        let (h, w) = (shape[2], shape[3]);
        let gs = slice(&g);
        let dx = par_fill(shape.num_elements(), h * w, |k, d| {
            let gp = part(gs, k, 4 * h * w);
            for (i, dl) in d.chunks_exact_mut(w).enumerate() {
                let (r0, r1) = gp[4 * i * w..4 * (i + 1) * w].split_at(2 * w);
                for ((d, a), b) in dl
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    *d = (a[0] + a[1]) + (b[0] + b[1]);
                }
            }
        });
        new_like(shape, dx)
    }

    pub fn upsample_nearest2x(x: &Tensor<4>) -> Option<Tensor<4>> {
        if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
            let t = f32_buffer(&t)?;
            return Some(Tensor::from_primitive::<Flex>(upsample2x_forward(&t)?));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::upsample_nearest2x(x)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn activation_backward(act: Act, x: &FlexTensor, g: FlexTensor) -> FlexTensor {
        // Elementwise: any split works, so "rows" of one value give parts of TASK values.
        backward_rows(x, g, 1, |x, g, d| rows::activation_backward(act, x, g, d))
    }

    pub fn masked_softmax(logits: &Tensor<4>, bias: Option<&Tensor<4>>) -> Option<Tensor<4>> {
        if let Ok(x) = logits.clone().try_into_primitive::<Flex>() {
            let b = match bias {
                Some(b) => Some(b.clone().try_into_primitive::<Flex>().ok()?),
                None => None,
            };
            let out = softmax_forward(&x, b.as_ref())?;
            return Some(Tensor::from_primitive::<Flex>(out));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::masked_softmax(logits, bias)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    pub fn log_softmax<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
        if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
            return Some(Tensor::from_primitive::<Flex>(log_softmax_forward(&t)?));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::log_softmax(x)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    /// What the adaptive layer norm keeps for its backward pass.
    #[derive(Clone, Debug)]
    pub(super) struct AdaLnSaved {
        xhat: FlexTensor,
        rstd: Vec<f32>,
        scale: FlexTensor,
    }

    /// `x` `[B, L, C]`, `scale`/`shift` `[B, 1, C]` → `y` and what the backward needs.
    fn ada_ln_forward(
        x: &FlexTensor,
        scale: &FlexTensor,
        shift: &FlexTensor,
        eps: f32,
    ) -> Option<(FlexTensor, AdaLnSaved)> {
        let (x, scale, shift) = (f32_buffer(x)?, f32_buffer(scale)?, f32_buffer(shift)?);
        let shape = dims(&x);
        let (b, l, c) = (shape[0], shape[1], shape[2]);
        let ss = dims(&scale);
        if ss.dims::<3>() != [b, 1, c] || dims(&shift).dims::<3>() != [b, 1, c] || c == 0 || l == 0
        {
            return None;
        }
        let (xs, sc, sh) = (slice(&x), slice(&scale), slice(&shift));
        let mut y = vec![0f32; xs.len()];
        let mut xhat = vec![0f32; xs.len()];
        let mut rstd = vec![0f32; b * l];
        y.par_chunks_mut(l * c)
            .zip(xhat.par_chunks_mut(l * c))
            .zip(rstd.par_chunks_mut(l))
            .enumerate()
            .for_each(|(k, ((y, h), r))| {
                let (s, t) = (&sc[k * c..(k + 1) * c], &sh[k * c..(k + 1) * c]);
                rows::ada_layer_norm_forward(part(xs, k, l * c), s, t, c, eps, y, h, r)
            });
        let saved = AdaLnSaved {
            xhat: new_like(shape.clone(), xhat),
            rstd,
            scale,
        };
        Some((new_like(shape, y), saved))
    }

    /// `(dx, dscale, dshift)` from the output gradient.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn ada_ln_backward(saved: &AdaLnSaved, g: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
        let g = g.to_contiguous();
        let shape = dims(&saved.xhat);
        let (b, l, c) = (shape[0], shape[1], shape[2]);
        let (hs, gs, sc) = (slice(&saved.xhat), slice(&g), slice(&saved.scale));
        let mut dx = vec![0f32; hs.len()];
        let mut ds = vec![0f32; b * c];
        let mut dt = vec![0f32; b * c];
        dx.par_chunks_mut(l * c)
            .zip(ds.par_chunks_mut(c))
            .zip(dt.par_chunks_mut(c))
            .enumerate()
            .for_each(|(k, ((dx, ds), dt))| {
                rows::ada_layer_norm_backward(
                    part(hs, k, l * c),
                    &saved.rstd[k * l..(k + 1) * l],
                    &sc[k * c..(k + 1) * c],
                    part(gs, k, l * c),
                    c,
                    dx,
                    ds,
                    dt,
                )
            });
        let small = Shape::new([b, 1, c]);
        (
            new_like(shape, dx),
            new_like(small.clone(), ds),
            new_like(small, dt),
        )
    }

    pub fn ada_layer_norm(
        x: &Tensor<3>,
        scale: &Tensor<3>,
        shift: &Tensor<3>,
        eps: f32,
    ) -> Option<Tensor<3>> {
        if let Ok(xp) = x.clone().try_into_primitive::<Flex>() {
            let s = scale.clone().try_into_primitive::<Flex>().ok()?;
            let t = shift.clone().try_into_primitive::<Flex>().ok()?;
            let (y, _) = ada_ln_forward(&xp, &s, &t, eps)?;
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::ada_layer_norm(x, scale, shift, eps)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    /// What GroupNorm keeps for its backward pass: its input, weight, and each (image,
    /// group)'s mean and `1/σ`; with SiLU fused after it, its bias too (to recompute the
    /// activation's input).
    #[derive(Clone, Debug)]
    pub(super) struct GroupNormSaved {
        x: FlexTensor,
        w: FlexTensor,
        silu_bias: Option<FlexTensor>,
        groups: usize,
        stats: Vec<(f32, f32)>,
    }

    fn group_norm_forward(
        x: &FlexTensor,
        w: &FlexTensor,
        b: &FlexTensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Option<(FlexTensor, GroupNormSaved)> {
        let (x, w, b) = (f32_buffer(x)?, f32_buffer(w)?, f32_buffer(b)?);
        let shape = dims(&x);
        if shape.num_dims() != 4 || groups == 0 {
            return None;
        }
        let (c, hw) = (shape[1], shape[2] * shape[3]);
        if c % groups != 0 || hw == 0 || dims(&w).dims::<1>() != [c] || dims(&b).dims::<1>() != [c]
        {
            return None;
        }
        let cg = c / groups;
        let (xs, ws, bs) = (slice(&x), slice(&w), slice(&b));
        let mut y = vec![0f32; xs.len()];
        let mut stats = vec![(0f32, 0f32); shape[0] * groups];
        y.par_chunks_mut(cg * hw)
            .zip(stats.par_iter_mut())
            .enumerate()
            .for_each(|(k, (y, st))| {
                let ch = (k % groups) * cg..(k % groups + 1) * cg;
                *st = rows::group_norm_forward(
                    part(xs, k, cg * hw),
                    &ws[ch.clone()],
                    &bs[ch],
                    hw,
                    eps,
                    silu,
                    y,
                );
            });
        let saved = GroupNormSaved {
            x,
            w,
            silu_bias: silu.then_some(b),
            groups,
            stats,
        };
        Some((new_like(shape, y), saved))
    }

    /// `(dx, dweight, dbias)` from the output gradient.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn group_norm_backward(
        saved: &GroupNormSaved,
        g: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let g = g.to_contiguous();
        let shape = dims(&saved.x);
        let (b, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
        let groups = saved.groups;
        let cg = c / groups;
        let (xs, ws, gs) = (slice(&saved.x), slice(&saved.w), slice(&g));
        let bs = saved.silu_bias.as_ref().map(slice);
        let mut dx = vec![0f32; xs.len()];
        // Per image, per channel: Σ g·x̂ and Σ g; summed over images below.
        let mut dwb = vec![0f32; b * c];
        let mut dbb = vec![0f32; b * c];
        dx.par_chunks_mut(cg * hw)
            .zip(dwb.par_chunks_mut(cg).zip(dbb.par_chunks_mut(cg)))
            .enumerate()
            .for_each_init(Vec::new, |through_silu, (k, (dx, (dw, db)))| {
                let ch = (k % groups) * cg..(k % groups + 1) * cg;
                let (mean, rstd) = saved.stats[k];
                let (x, mut g) = (part(xs, k, cg * hw), part(gs, k, cg * hw));
                if let Some(bs) = bs {
                    through_silu.resize(cg * hw, 0.0);
                    rows::group_norm_silu_gradient(
                        x,
                        &ws[ch.clone()],
                        &bs[ch.clone()],
                        g,
                        hw,
                        mean,
                        rstd,
                        through_silu,
                    );
                    g = through_silu;
                }
                rows::group_norm_backward(x, &ws[ch], g, hw, mean, rstd, dx, dw, db);
            });
        let sum_images = |v: Vec<f32>| {
            let mut out = vec![0f32; c];
            for img in v.chunks_exact(c) {
                out.iter_mut().zip(img).for_each(|(o, x)| *o += x);
            }
            new_like(Shape::new([c]), out)
        };
        (new_like(shape, dx), sum_images(dwb), sum_images(dbb))
    }

    /// GroupNorm, followed by SiLU in the same pass when `silu`.
    pub fn group_norm(
        x: &Tensor<4>,
        w: &Tensor<1>,
        b: &Tensor<1>,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Option<Tensor<4>> {
        if let Ok(xp) = x.clone().try_into_primitive::<Flex>() {
            let wp = w.clone().try_into_primitive::<Flex>().ok()?;
            let bp = b.clone().try_into_primitive::<Flex>().ok()?;
            let (y, _) = group_norm_forward(&xp, &wp, &bp, groups, eps, silu)?;
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::group_norm(x, w, b, groups, eps, silu)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    /// What the convolution keeps for its backward pass: its shape, input and weight.
    #[derive(Clone, Debug)]
    pub(super) struct ConvSaved {
        shape: ConvShape,
        x: FlexTensor,
        w: FlexTensor,
    }

    fn conv_forward(
        x: &FlexTensor,
        w: &FlexTensor,
        b: Option<&FlexTensor>,
        stride: usize,
        pad: usize,
    ) -> Option<(FlexTensor, ConvSaved)> {
        let (x, w) = (f32_buffer(x)?, f32_buffer(w)?);
        let b = match b {
            Some(b) => Some(f32_buffer(b)?),
            None => None,
        };
        let (xs, ws) = (dims(&x), dims(&w));
        if xs.num_dims() != 4 || ws.num_dims() != 4 || ws[1] != xs[1] || ws[2] != ws[3] {
            return None;
        }
        let shape = ConvShape::new(xs.dims::<4>(), ws[0], ws[2], stride, pad)?;
        if b.as_ref()
            .is_some_and(|b| dims(b).dims::<1>() != [shape.cout])
        {
            return None;
        }
        let y = conv::forward(&shape, slice(&x), slice(&w), b.as_ref().map(slice));
        let out = new_like(Shape::new([shape.b, shape.cout, shape.ho, shape.wo]), y);
        Some((out, ConvSaved { shape, x, w }))
    }

    /// `(dx, dw, dbias)` from the output gradient (`dx` only when `want_dx`).
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn conv_backward(
        saved: &ConvSaved,
        g: FlexTensor,
        want_dx: bool,
    ) -> (Option<FlexTensor>, FlexTensor, FlexTensor) {
        let g = g.to_contiguous();
        let s = &saved.shape;
        let (dx, dw, db) = conv::backward(
            conv::Backward {
                s,
                x: slice(&saved.x),
                w: slice(&saved.w),
                dy: slice(&g),
            },
            want_dx,
        );
        (
            dx.map(|dx| new_like(dims(&saved.x), dx)),
            new_like(dims(&saved.w), dw),
            new_like(Shape::new([s.cout]), db),
        )
    }

    pub fn conv2d(
        x: &Tensor<4>,
        w: &Tensor<4>,
        b: Option<&Tensor<1>>,
        stride: usize,
        pad: usize,
    ) -> Option<Tensor<4>> {
        if let Ok(xp) = x.clone().try_into_primitive::<Flex>() {
            let wp = w.clone().try_into_primitive::<Flex>().ok()?;
            let bp = match b {
                Some(b) => Some(b.clone().try_into_primitive::<Flex>().ok()?),
                None => None,
            };
            let (y, _) = conv_forward(&xp, &wp, bp.as_ref(), stride, pad)?;
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::conv2d(x, w, b?, stride, pad)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    /// The matrices of an f32 tensor of rank ≥ 2, read in place whatever its strides: the
    /// leading axes index `count` matrices of `rows × cols`.
    #[derive(Clone, Debug)]
    pub(super) struct Mats {
        t: FlexTensor,
        lead: Vec<(usize, isize)>,
        rows: usize,
        cols: usize,
        rs: isize,
        cs: isize,
    }

    impl Mats {
        fn of(t: FlexTensor) -> Option<Self> {
            if t.dtype() != DType::F32 || t.layout().num_dims() < 2 {
                return None;
            }
            let t = if t.layout().has_positive_strides() {
                t
            } else {
                t.to_contiguous()
            };
            let (shape, st) = (dims(&t), t.layout().strides().to_vec());
            let r = shape.num_dims();
            let lead = (0..r - 2).map(|i| (shape[i], st[i])).collect();
            Some(Self {
                lead,
                rows: shape[r - 2],
                cols: shape[r - 1],
                rs: st[r - 2],
                cs: st[r - 1],
                t,
            })
        }

        fn lead_dims(&self) -> Vec<usize> {
            self.lead.iter().map(|&(d, _)| d).collect()
        }

        fn count(&self) -> usize {
            self.lead.iter().map(|&(d, _)| d).product()
        }

        /// Matrix `p` (leading indices in row-major order).
        fn mat(&self, mut p: usize) -> Mat {
            let mut off = self.t.layout().start_offset() as isize;
            for &(d, s) in self.lead.iter().rev() {
                off += (p % d) as isize * s;
                p /= d;
            }
            let all: &[f32] = self.t.storage();
            Mat {
                ptr: all.as_ptr().wrapping_offset(off),
                rs: self.rs,
                cs: self.cs,
            }
        }
    }

    /// What a `Linear` keeps for its backward pass: its input (contiguous) and weight.
    #[derive(Clone, Debug)]
    pub(super) struct LinearSaved {
        x: FlexTensor,
        w: Mats,
    }

    fn linear_forward(
        x: &FlexTensor,
        w: &FlexTensor,
        b: Option<&FlexTensor>,
    ) -> Option<(FlexTensor, LinearSaved)> {
        let x = f32_buffer(x)?;
        let w = Mats::of(w.clone())?;
        let (k, n) = (w.rows, w.cols);
        let mut shape = dims(&x);
        let r = shape.num_dims();
        if !w.lead.is_empty() || r < 2 || shape[r - 1] != k || k == 0 {
            return None;
        }
        let b = match b {
            Some(b) if dims(b).num_dims() == 1 && dims(b)[0] == n => Some(f32_buffer(b)?),
            Some(_) => return None,
            None => None,
        };
        let rows = shape.num_elements() / k;
        let xv = Mat::rows(slice(&x), k);
        let y = matmul::linear_forward(rows, k, n, xv, w.mat(0), b.as_ref().map(slice));
        shape[r - 1] = n;
        Some((new_like(shape, y), LinearSaved { x, w }))
    }

    /// `(dx, dw, dbias)` from the output gradient, each only when wanted.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn linear_backward(s: &LinearSaved, g: FlexTensor, want: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let g = g.to_contiguous();
        let (k, n) = (s.w.rows, s.w.cols);
        let rows = dims(&s.x).num_elements() / k;
        let xv = Mat::rows(slice(&s.x), k);
        let [dx, dw, db] = matmul::linear_backward(rows, k, n, xv, s.w.mat(0), slice(&g), want);
        [
            dx.map(|d| new_like(dims(&s.x), d)),
            dw.map(|d| new_like(Shape::new([k, n]), d)),
            db.map(|d| new_like(Shape::new([n]), d)),
        ]
    }

    pub fn linear<const D: usize>(
        x: &Tensor<D>,
        w: &Tensor<2>,
        b: Option<&Tensor<1>>,
    ) -> Option<Tensor<D>> {
        if let Ok(xp) = x.clone().try_into_primitive::<Flex>() {
            let wp = w.clone().try_into_primitive::<Flex>().ok()?;
            let bp = match b {
                Some(b) => Some(b.clone().try_into_primitive::<Flex>().ok()?),
                None => None,
            };
            let (y, _) = linear_forward(&xp, &wp, bp.as_ref())?;
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::linear(x, w, b)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    /// What the scaled L2 normalisation keeps for its backward pass.
    #[derive(Clone, Debug)]
    pub(super) struct L2Saved {
        x: Mats,
        scale: Vec<f32>,
        /// Each row's norm, floored.
        norm: Vec<f32>,
    }

    /// The floor of a row's norm (`F.normalize`'s `eps`).
    const L2_EPS: f32 = 1e-12;

    fn l2_forward(x: &FlexTensor, scale: &FlexTensor) -> Option<(FlexTensor, L2Saved)> {
        let x = Mats::of(x.clone())?;
        let lead = x.lead_dims();
        let sc = f32_buffer(scale)?;
        if lead.len() != 2 || dims(&sc).dims::<4>() != [1, lead[1], 1, 1] || x.cols == 0 {
            return None;
        }
        let (h, l, d) = (lead[1], x.rows, x.cols);
        let scale = slice(&sc).to_vec();
        let mut norm = vec![0f32; x.count() * l];
        let mut y = vec![0f32; x.count() * l * d];
        y.par_chunks_mut(l * d)
            .zip(norm.par_chunks_mut(l))
            .enumerate()
            .for_each(|(p, (y, nr))| {
                let m = x.mat(p);
                let s = scale[p % h];
                for (r, (yr, n)) in y.chunks_exact_mut(d).zip(nr).enumerate() {
                    // SAFETY: row `r` of matrix `p` lies in the tensor's buffer.
                    let row =
                        |j: usize| unsafe { *m.ptr.offset(r as isize * m.rs + j as isize * m.cs) };
                    let sq: f32 = (0..d).map(|j| row(j) * row(j)).sum();
                    *n = sq.sqrt().max(L2_EPS);
                    let f = s / *n;
                    for (j, v) in yr.iter_mut().enumerate() {
                        *v = row(j) * f;
                    }
                }
            });
        let shape = Shape::from([lead, vec![l, d]].concat());
        Some((new_like(shape, y), L2Saved { x, scale, norm }))
    }

    /// `(dx, dscale)`: with `x̂ = x / n`, `dx = s/n · (g − x̂ (x̂·g))` (just `s/n · g` where the
    /// norm was floored) and `dscale = Σ g·x̂` over each head's rows.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn l2_backward(s: &L2Saved, g: FlexTensor) -> (FlexTensor, FlexTensor) {
        let g = g.to_contiguous();
        let gs = slice(&g);
        let lead = s.x.lead_dims();
        let (h, l, d) = (lead[1], s.x.rows, s.x.cols);
        let mut dx = vec![0f32; gs.len()];
        let partial: Vec<f32> = dx
            .par_chunks_mut(l * d)
            .enumerate()
            .map(|(p, dxp)| {
                let m = s.x.mat(p);
                let sc = s.scale[p % h];
                let mut ds = 0f32;
                for (r, dr) in dxp.chunks_exact_mut(d).enumerate() {
                    // SAFETY: row `r` of matrix `p` lies in the tensor's buffer.
                    let row =
                        |j: usize| unsafe { *m.ptr.offset(r as isize * m.rs + j as isize * m.cs) };
                    let n = s.norm[p * l + r];
                    let gr = &gs[(p * l + r) * d..(p * l + r + 1) * d];
                    let dot: f32 = (0..d).map(|j| row(j) * gr[j]).sum::<f32>() / n;
                    ds += dot;
                    let f = sc / n;
                    let proj = if n > L2_EPS { dot / n } else { 0.0 };
                    for (j, v) in dr.iter_mut().enumerate() {
                        *v = f * (gr[j] - row(j) * proj);
                    }
                }
                ds
            })
            .collect();
        let mut dscale = vec![0f32; h];
        for (p, v) in partial.iter().enumerate() {
            dscale[p % h] += v;
        }
        (
            new_like(Shape::from([lead, vec![l, d]].concat()), dx),
            new_like(Shape::new([1, h, 1, 1]), dscale),
        )
    }

    pub fn l2_normalize_scaled(x: &Tensor<4>, scale: &Tensor<4>) -> Option<Tensor<4>> {
        if let Ok(xp) = x.clone().try_into_primitive::<Flex>() {
            let sp = scale.clone().try_into_primitive::<Flex>().ok()?;
            let (y, _) = l2_forward(&xp, &sp)?;
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::l2_normalize_scaled(x, scale)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    /// What a batched product keeps for its backward pass: both operands, in place.
    #[derive(Clone, Debug)]
    pub(super) struct BmmSaved {
        a: Mats,
        b: Mats,
    }

    /// `heads_last` (rank 4 only): the `[B, H, M, N]` result is stored as `[B, M, H, N]`, so
    /// that `swap_dims(1, 2)` makes it contiguous (attention's output, merged over heads next).
    fn bmm_forward(
        a: &FlexTensor,
        b: &FlexTensor,
        heads_last: bool,
    ) -> Option<(FlexTensor, BmmSaved)> {
        let (a, b) = (Mats::of(a.clone())?, Mats::of(b.clone())?);
        let lead = a.lead_dims();
        if lead != b.lead_dims() || a.cols != b.rows || (heads_last && lead.len() != 2) {
            return None;
        }
        let s = Batched {
            count: a.count(),
            m: a.rows,
            k: a.cols,
            n: b.cols,
        };
        let (m, n) = (s.m, s.n);
        let shape = Shape::from([lead.clone(), vec![m, n]].concat());
        let out = if heads_last {
            let h = lead[1];
            let dst = |p: usize| ((p / h) * m * h * n + (p % h) * n, h * n);
            let y = matmul::batched_forward(s, |p| a.mat(p), |p| b.mat(p), dst);
            let strides = vec![(m * h * n) as isize, n as isize, (h * n) as isize, 1];
            FlexTensor::new(
                Bytes::from_elems(y),
                Layout::new(shape, strides, 0),
                DType::F32,
            )
        } else {
            let y = matmul::batched_forward(s, |p| a.mat(p), |p| b.mat(p), |p| (p * m * n, n));
            new_like(shape, y)
        };
        Some((out, BmmSaved { a, b }))
    }

    /// `(da, db)` from the output gradient, each only when wanted.
    #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
    fn bmm_backward(s: &BmmSaved, g: FlexTensor, want: [bool; 2]) -> [Option<FlexTensor>; 2] {
        // Read in place: the gradient of a `heads_last` output arrives strided.
        let g = Mats::of(g).expect("an f32 gradient of rank ≥ 2");
        let (a, b) = (&s.a, &s.b);
        let (count, m, k, n) = (a.count(), a.rows, a.cols, b.cols);
        let lead = a.lead_dims();
        let da = want[0].then(|| {
            let sh = Batched {
                count,
                m,
                k: n,
                n: k,
            };
            let dst = |p| (p * m * k, k);
            let d = matmul::batched_forward(sh, |p| g.mat(p), |p| b.mat(p).t(), dst);
            new_like(Shape::from([lead.clone(), vec![m, k]].concat()), d)
        });
        let db = want[1].then(|| {
            let sh = Batched {
                count,
                m: k,
                k: m,
                n,
            };
            let dst = |p| (p * k * n, n);
            let d = matmul::batched_forward(sh, |p| a.mat(p).t(), |p| g.mat(p), dst);
            new_like(Shape::from([lead.clone(), vec![k, n]].concat()), d)
        });
        [da, db]
    }

    pub fn batched_matmul(a: &Tensor<4>, b: &Tensor<4>, heads_last: bool) -> Option<Tensor<4>> {
        if let Ok(ap) = a.clone().try_into_primitive::<Flex>() {
            let bp = b.clone().try_into_primitive::<Flex>().ok()?;
            let (y, _) = bmm_forward(&ap, &bp, heads_last)?;
            return Some(Tensor::from_primitive::<Flex>(y));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::batched_matmul(a, b, heads_last)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    pub fn activation<const D: usize>(x: &Tensor<D>, act: Act) -> Option<Tensor<D>> {
        if let Ok(t) = x.clone().try_into_primitive::<Flex>() {
            let t = f32_buffer(&t)?;
            return Some(Tensor::from_primitive::<Flex>(activation_forward(act, &t)));
        }
        #[cfg(feature = "autodiff")]
        {
            autodiff::activation(x, act)
        }
        #[cfg(not(feature = "autodiff"))]
        {
            None
        }
    }

    #[cfg(feature = "autodiff")]
    mod autodiff {
        use burn::backend::autodiff::checkpoint::base::Checkpointer;
        use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
        use burn::backend::autodiff::grads::Gradients;
        use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
        use burn::backend::tensor::FloatTensor;
        use burn::backend::{Autodiff, AutodiffBackend};

        use super::*;

        /// The one-input fused ops; what each keeps for its backward pass.
        #[derive(Clone, Copy, Debug)]
        enum Unary {
            /// Keeps its output (the probabilities).
            Softmax,
            /// Keeps its output (the log-probabilities).
            LogSoftmax,
            /// Keeps its input.
            Activation(Act),
            /// Keeps its input (for the shape).
            Upsample2x,
        }

        impl Backward<Flex, 1> for Unary {
            type State = FlexTensor;

            fn backward(
                self,
                ops: Ops<FlexTensor, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let kept = ops.state;
                unary::<Flex, _>(ops.parents, ops.node, grads, |g| match self {
                    Unary::Softmax => softmax_backward(&kept, g),
                    Unary::LogSoftmax => log_softmax_backward(&kept, g),
                    Unary::Activation(act) => activation_backward(act, &kept, g),
                    Unary::Upsample2x => upsample2x_backward(&kept, g),
                });
            }
        }

        /// Records `out = op(inputs)` in the graph, keeping `saved` for the backward pass when
        /// an input is tracked.
        fn record<Op, const N: usize, const D: usize>(
            op: Op,
            inputs: [&FloatTensor<Autodiff<Flex>>; N],
            out: FlexTensor,
            saved: Op::State,
        ) -> Tensor<D>
        where
            Op: Backward<Flex, N>,
        {
            let y = match op
                .prepare::<NoCheckpointing>(inputs.map(|t| t.node()))
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(saved, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            };
            Tensor::from_primitive::<Autodiff<Flex>>(y)
        }

        /// What a fused op of two or three inputs keeps for its backward pass.
        #[derive(Clone, Debug)]
        enum Saved {
            AdaLayerNorm(AdaLnSaved),
            GroupNorm(GroupNormSaved),
            Conv2d(ConvSaved),
            Linear(LinearSaved),
            Bmm(BmmSaved),
            L2(L2Saved),
        }

        impl Saved {
            /// The inputs' gradients in input order (`None`: not wanted, or no gradient);
            /// `want[i]`: input `i` is tracked.
            fn backward(&self, g: FlexTensor, want: &[bool]) -> Vec<Option<FlexTensor>> {
                match self {
                    Saved::AdaLayerNorm(s) => {
                        let (dx, ds, dt) = ada_ln_backward(s, g);
                        vec![Some(dx), Some(ds), Some(dt)]
                    }
                    Saved::GroupNorm(s) => {
                        let (dx, dw, db) = group_norm_backward(s, g);
                        vec![Some(dx), Some(dw), Some(db)]
                    }
                    Saved::Conv2d(s) => {
                        let (dx, dw, db) = conv_backward(s, g, want[0]);
                        vec![dx, Some(dw), Some(db)]
                    }
                    Saved::Linear(s) => linear_backward(s, g, [want[0], want[1], want[2]]).into(),
                    Saved::Bmm(s) => bmm_backward(s, g, [want[0], want[1]]).into(),
                    Saved::L2(s) => {
                        let (dx, ds) = l2_backward(s, g);
                        vec![Some(dx), Some(ds)]
                    }
                }
            }
        }

        /// The fused ops of two or three inputs: an input and a second operand, a modulation
        /// scale and shift, or a weight and a bias.
        #[derive(Debug)]
        struct Fused;

        impl<const N: usize> Backward<Flex, N> for Fused {
            type State = Saved;

            fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
                let g = grads.consume::<Flex>(&ops.node);
                let want = ops.parents.each_ref().map(Option::is_some);
                let ds = ops.state.backward(g, &want);
                // Hands each tracked parent its gradient.
                for (parent, d) in ops.parents.into_iter().zip(ds) {
                    if let (Some(p), Some(d)) = (parent, d) {
                        grads.register::<Flex>(p.id, d);
                    }
                }
            }
        }

        /// A tensor under autodiff, or a constant that may still be a plain flex tensor.
        fn ad_or_const<const D: usize>(t: &Tensor<D>) -> Option<FloatTensor<Autodiff<Flex>>> {
            match t.clone().try_into_primitive::<Autodiff<Flex>>() {
                Ok(t) => Some(t),
                Err(_) => Some(<Autodiff<Flex> as AutodiffBackend>::from_inner(
                    t.clone().try_into_primitive::<Flex>().ok()?,
                )),
            }
        }

        /// A fused op of two or three inputs: `forward` runs on their inner tensors and returns
        /// the output with what its backward keeps.
        fn fused<const N: usize, const D: usize>(
            inputs: [FloatTensor<Autodiff<Flex>>; N],
            forward: impl FnOnce([&FlexTensor; N]) -> Option<(FlexTensor, Saved)>,
        ) -> Option<Tensor<D>> {
            let (y, saved) = forward(inputs.each_ref().map(|t| t.primitive()))?;
            Some(record(Fused, inputs.each_ref(), y, saved))
        }

        /// A fused op of one input: `forward` returns the output and the tensor its backward
        /// keeps.
        fn unary_op<const D: usize>(
            x: &Tensor<D>,
            op: Unary,
            forward: impl FnOnce(&FlexTensor) -> Option<(FlexTensor, FlexTensor)>,
        ) -> Option<Tensor<D>> {
            let x = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
            let (y, kept) = forward(x.primitive())?;
            Some(record(op, [&x], y, kept))
        }

        pub fn ada_layer_norm(
            x: &Tensor<3>,
            scale: &Tensor<3>,
            shift: &Tensor<3>,
            eps: f32,
        ) -> Option<Tensor<3>> {
            let inputs = [ad_or_const(x)?, ad_or_const(scale)?, ad_or_const(shift)?];
            fused(inputs, |[x, s, t]| {
                ada_ln_forward(x, s, t, eps).map(|(y, k)| (y, Saved::AdaLayerNorm(k)))
            })
        }

        pub fn group_norm(
            x: &Tensor<4>,
            w: &Tensor<1>,
            b: &Tensor<1>,
            groups: usize,
            eps: f32,
            silu: bool,
        ) -> Option<Tensor<4>> {
            let inputs = [ad_or_const(x)?, ad_or_const(w)?, ad_or_const(b)?];
            fused(inputs, |[x, w, b]| {
                group_norm_forward(x, w, b, groups, eps, silu)
                    .map(|(y, k)| (y, Saved::GroupNorm(k)))
            })
        }

        pub fn conv2d(
            x: &Tensor<4>,
            w: &Tensor<4>,
            b: &Tensor<1>,
            stride: usize,
            pad: usize,
        ) -> Option<Tensor<4>> {
            let inputs = [ad_or_const(x)?, ad_or_const(w)?, ad_or_const(b)?];
            fused(inputs, |[x, w, b]| {
                conv_forward(x, w, Some(b), stride, pad).map(|(y, k)| (y, Saved::Conv2d(k)))
            })
        }

        pub fn linear<const D: usize>(
            x: &Tensor<D>,
            w: &Tensor<2>,
            b: Option<&Tensor<1>>,
        ) -> Option<Tensor<D>> {
            let (x, w) = (ad_or_const(x)?, ad_or_const(w)?);
            let b = match b {
                Some(b) => ad_or_const(b)?,
                // No bias: a constant zero one (untracked, so it gets no gradient).
                None => {
                    let n = dims(w.primitive()).dims::<2>()[1];
                    <Autodiff<Flex> as AutodiffBackend>::from_inner(new_like(
                        Shape::new([n]),
                        vec![0.0; n],
                    ))
                }
            };
            fused([x, w, b], |[x, w, b]| {
                linear_forward(x, w, Some(b)).map(|(y, k)| (y, Saved::Linear(k)))
            })
        }

        pub fn batched_matmul(a: &Tensor<4>, b: &Tensor<4>, heads_last: bool) -> Option<Tensor<4>> {
            fused([ad_or_const(a)?, ad_or_const(b)?], |[a, b]| {
                bmm_forward(a, b, heads_last).map(|(y, k)| (y, Saved::Bmm(k)))
            })
        }

        pub fn l2_normalize_scaled(x: &Tensor<4>, scale: &Tensor<4>) -> Option<Tensor<4>> {
            fused([ad_or_const(x)?, ad_or_const(scale)?], |[x, sc]| {
                l2_forward(x, sc).map(|(y, k)| (y, Saved::L2(k)))
            })
        }

        pub fn masked_softmax(logits: &Tensor<4>, bias: Option<&Tensor<4>>) -> Option<Tensor<4>> {
            type Ad = Autodiff<Flex>;
            // A constant made on an autodiff device may still be a plain flex tensor.
            let b = match bias {
                Some(b) => Some(match b.clone().try_into_primitive::<Ad>() {
                    Ok(b) if b.is_tracked() => return None, // a trained bias: burn's path
                    Ok(b) => b.into_primitive(),
                    Err(_) => b.clone().try_into_primitive::<Flex>().ok()?,
                }),
                None => None,
            };
            unary_op(logits, Unary::Softmax, |x| {
                softmax_forward(x, b.as_ref()).map(|out| (out.clone(), out))
            })
        }

        pub fn log_softmax<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
            unary_op(x, Unary::LogSoftmax, |x| {
                log_softmax_forward(x).map(|out| (out.clone(), out))
            })
        }

        pub fn activation<const D: usize>(x: &Tensor<D>, act: Act) -> Option<Tensor<D>> {
            unary_op(x, Unary::Activation(act), |x| {
                let input = f32_buffer(x)?;
                Some((activation_forward(act, &input), input))
            })
        }

        pub fn upsample_nearest2x(x: &Tensor<4>) -> Option<Tensor<4>> {
            unary_op(x, Unary::Upsample2x, |x| {
                let input = f32_buffer(x)?;
                Some((upsample2x_forward(&input)?, input))
            })
        }
    }
}
