//! The matrix-product throughput of one core, natively and in wasm, on the shapes of the emoji
//! model's last scale, width 96 (`run.sh`: main.rs natively, run.mjs in Chromium).

/// `iters` products `[m×k]·[k×n]` with `gemm` on one thread (the same call as
/// nextscale's `kernels::matmul`); returns a value of the result so nothing is optimised out.
pub fn gemm_products(m: usize, n: usize, k: usize, iters: usize) -> f32 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    for _ in 0..iters {
        // SAFETY: the three buffers hold their row-major matrices.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        };
    }
    c[0]
}

/// A register tile of `MR` rows × `4·NB` columns over `k` (A as broadcast scalars, B as
/// vectors), with a separate multiply and add or with `f32x4.relaxed_madd` (FMA where the CPU
/// has it): how much a fused multiply-add could give a wasm microkernel.
#[cfg(target_arch = "wasm32")]
mod tile {
    use core::arch::wasm32::*;

    #[inline(always)]
    fn madd<const FMA: bool>(a: v128, b: v128, c: v128) -> v128 {
        #[cfg(target_feature = "relaxed-simd")]
        if FMA {
            return f32x4_relaxed_madd(a, b, c);
        }
        f32x4_add(c, f32x4_mul(a, b))
    }

    pub fn run<const FMA: bool, const MR: usize, const NB: usize>(
        a: &[f32],
        b: &[f32],
        k: usize,
        out: &mut [f32],
    ) {
        assert!(a.len() >= k * MR && b.len() >= k * NB * 4 && out.len() >= MR * NB * 4);
        let mut acc = [[f32x4_splat(0.0); NB]; MR];
        for p in 0..k {
            // SAFETY: bounds checked above.
            unsafe {
                let bp = b.as_ptr().add(p * NB * 4);
                let mut bv = [f32x4_splat(0.0); NB];
                for (j, v) in bv.iter_mut().enumerate() {
                    *v = v128_load(bp.add(4 * j) as *const v128);
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = v128_load32_splat(a.as_ptr().add(p * MR + r) as *const u32);
                    for (c, bj) in row.iter_mut().zip(bv) {
                        *c = madd::<FMA>(av, bj, *c);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                // SAFETY: bounds checked above.
                unsafe { v128_store(out.as_mut_ptr().add((r * NB + j) * 4) as *mut v128, *v) };
            }
        }
    }
}

/// wasm export: `iters` gemm products of `m×k·k×n`.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn products(m: usize, n: usize, k: usize, iters: usize) -> f32 {
    gemm_products(m, n, k, iters)
}

/// wasm export: `iters` passes of the register tile `variant` over k = 512; returns the
/// flops of one pass. Variants: 0 = 3×16 mul+add, 1 = 3×16 FMA, 2 = 8×8 mul+add, 3 = 8×8 FMA.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn tiles(variant: u32, iters: usize) -> f64 {
    let k = 512;
    let a = vec![0.5f32; k * 8];
    let b = vec![0.25f32; k * 16];
    let mut out = vec![0f32; 64];
    let (mr, cols) = if variant < 2 { (3, 16) } else { (8, 8) };
    for _ in 0..iters {
        let (a, b) = (core::hint::black_box(&a), core::hint::black_box(&b));
        match variant {
            0 => tile::run::<false, 3, 4>(&a, &b, k, &mut out),
            1 => tile::run::<true, 3, 4>(&a, &b, k, &mut out),
            2 => tile::run::<false, 8, 2>(&a, &b, k, &mut out),
            _ => tile::run::<true, 8, 2>(&a, &b, k, &mut out),
        }
        core::hint::black_box(&mut out);
    }
    (2 * mr * cols * k) as f64
}
