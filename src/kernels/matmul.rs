//! Matrix products on the CPU straight into buffers of their own: `Linear` (with its bias) and
//! the attention's batched products, forward and backward.
//!
//! burn's CPU backend computes the same products with the same `gemm` crate, but every output
//! buffer it makes (`FlexTensor::empty`) is a zeroed `Vec<u8>` that cubecl then copies into a
//! fresh allocation to raise its alignment: each product pays a memset, a copy and the page
//! faults of a new buffer before `gemm` writes a single value (a fifth of a VAR training step).
//! Here `gemm` writes the result into a `Vec<f32>` it fills itself, the bias is written as the
//! rows' starting value, and the backward pass computes the bias gradient in the same sweep as
//! the weight gradient, rows split over threads.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A matrix view for [`matmul`]: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a view only reads; the buffers it points into outlive the tasks that share it.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    /// A row-major matrix with `row_stride`.
    pub fn rows(v: &[f32], row_stride: usize) -> Self {
        Self {
            ptr: v.as_ptr(),
            rs: row_stride as isize,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `row_stride`.
    pub fn transposed(v: &[f32], row_stride: usize) -> Self {
        Self {
            ptr: v.as_ptr(),
            rs: 1,
            cs: row_stride as isize,
        }
    }

    /// The transpose of this view.
    pub fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// The view starting `rows` rows further down.
    pub fn down(self, rows: usize) -> Self {
        Self {
            // SAFETY: the caller keeps the moved view inside its buffer (see `matmul`).
            ptr: unsafe { self.ptr.offset(rows as isize * self.rs) },
            ..self
        }
    }
}

/// A pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
pub(crate) struct Shared(pub *mut f32);
// SAFETY: every task writes a part no other task touches (see the callers).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`; `dst` row-major with `dst_rs`, `accumulate` adds to it
/// (otherwise `dst` is only written). `threads`: let `gemm` split the product itself.
///
/// # Safety
/// `dst` must hold `m` rows of stride `dst_rs` with `n` values each, and `a`, `b` must point
/// into live buffers covering their `m×k` and `k×n` views.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    threads: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row `i` of `dst` holds `n` values (the caller's contract).
                unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(0.0) };
            }
        }
        return;
    }
    let par = if threads && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract; gemm reads `a`, `b` and writes `dst` within those views.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Rows per task when a product is split by rows: two tasks per thread, each with enough rows
/// to amortise packing the right-hand matrix again (on one thread, one task: no repacking).
fn rows_per_task(rows: usize, k: usize, n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 {
        return rows.max(1);
    }
    let min_rows = (256 * 1024 / (k + n).max(1)).clamp(32, 1024);
    rows.div_ceil(2 * threads).max(min_rows)
}

/// A buffer of `n` values that `fill(start, part)` writes completely, part by part in parallel
/// (`chunk` values per part). No part is zeroed first: `fill` must write every value.
pub(crate) fn par_write(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(n);
    let chunk = chunk.max(1);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(k, part)| fill(k * chunk, part));
    // SAFETY: the parts cover all `n` values, each written by its task (`fill`'s contract).
    unsafe { v.set_len(n) };
    v
}

/// `y = x · w (+ bias)`: `x` `rows × k` (a view), `w` `k × n` (a view), `bias` `[n]`; `y`
/// row-major `rows × n`. Large products are split by rows over threads; small ones with many
/// columns (inference: a few tokens against a wide weight) let `gemm` split the columns.
pub(crate) fn linear_forward(
    rows: usize,
    k: usize,
    n: usize,
    x: Mat,
    w: Mat,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let per = rows_per_task(rows, k, n);
    let whole = rows <= per;
    par_write(rows * n, per * n, |start, y| {
        let (r0, m) = (start / n, y.len() / n);
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(n) {
                for (d, &v) in row.iter_mut().zip(b) {
                    d.write(v);
                }
            }
        }
        // SAFETY: `y` holds `m` rows of `n`, which gemm writes whole (onto the bias when there
        // is one, initialised above); `x` rows `r0..r0 + m` and `w` lie in the caller's
        // buffers.
        unsafe {
            matmul(
                m,
                n,
                k,
                y.as_mut_ptr().cast::<f32>(),
                n,
                bias.is_some(),
                x.down(r0),
                w,
                whole,
            )
        };
    })
}

/// The gradients of [`linear_forward`] from `g` (`rows × n`, row-major): `dx` (`rows × k`, when
/// `want_dx`), `dw` (`k × n`, row-major, when `want_dw`) and `dbias` (`[n]`, when `want_db`).
pub(crate) fn linear_backward(
    rows: usize,
    k: usize,
    n: usize,
    x: Mat,
    w: Mat,
    g: &[f32],
    want: [bool; 3],
) -> [Option<Vec<f32>>; 3] {
    let [want_dx, want_dw, want_db] = want;
    let gm = Mat::rows(g, n);
    let dx = want_dx.then(|| {
        let per = rows_per_task(rows, n, k);
        let whole = rows <= per;
        par_write(rows * k, per * k, |start, d| {
            let (r0, m) = (start / k, d.len() / k);
            // SAFETY: `d` holds `m` rows of `k`, which gemm writes whole; `g` rows `r0..r0 + m`
            // and `wᵀ` lie in their buffers.
            unsafe {
                let dst = d.as_mut_ptr().cast::<f32>();
                matmul(m, k, n, dst, k, false, gm.down(r0), w.t(), whole)
            };
        })
    });
    if !want_dw && !want_db {
        return [dx, None, None];
    }
    // dw = xᵀ g and dbias = Σ rows of g: each task sums its rows into a partial of its own.
    let threads = rayon::current_num_threads().max(1);
    let per = rows.div_ceil(threads).max(64);
    let parts: Vec<(Vec<f32>, Vec<f32>)> = (0..rows.div_ceil(per).max(1))
        .into_par_iter()
        .map(|t| {
            let (r0, r1) = (t * per, ((t + 1) * per).min(rows));
            let mut dw = vec![0f32; if want_dw { k * n } else { 0 }];
            if want_dw {
                // SAFETY: `dw` is `k × n`; `x` rows `r0..r1` (as `xᵀ` columns) and `g` rows
                // `r0..r1` lie in their buffers.
                unsafe {
                    matmul(
                        k,
                        n,
                        r1 - r0,
                        dw.as_mut_ptr(),
                        n,
                        false,
                        x.down(r0).t(),
                        gm.down(r0),
                        false,
                    )
                };
            }
            let mut db = vec![0f32; if want_db { n } else { 0 }];
            if want_db {
                for row in g[r0 * n..r1 * n].chunks_exact(n) {
                    for (d, v) in db.iter_mut().zip(row) {
                        *d += v;
                    }
                }
            }
            (dw, db)
        })
        .collect();
    let mut parts = parts.into_iter();
    let (mut dw, mut db) = parts.next().unwrap_or_default();
    for (w2, b2) in parts {
        dw.iter_mut().zip(&w2).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&b2).for_each(|(a, b)| *a += b);
    }
    [dx, want_dw.then_some(dw), want_db.then_some(db)]
}

/// The shape of a batched product: `count` products `m×k · k×n`; operand `i` of product `p`
/// starts at `offset(p)` of its buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batched {
    pub count: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// `c[p] = a[p] · b[p]` for every product `p`; `a(p)`, `b(p)` give the views, `dst(p)` where
/// product `p`'s `m × n` output starts in `c` and its row stride. The outputs must cover `c`
/// (`count · m · n` values) without overlapping. Products run in parallel, or split by `gemm`
/// when there are few.
pub(crate) fn batched_forward(
    s: Batched,
    a: impl Fn(usize) -> Mat + Sync,
    b: impl Fn(usize) -> Mat + Sync,
    dst: impl Fn(usize) -> (usize, usize) + Sync,
) -> Vec<f32> {
    let Batched { count, m, k, n } = s;
    let len = count * m * n;
    let few = count < 2 * rayon::current_num_threads();
    let mut c = Vec::<f32>::with_capacity(len);
    let out = Shared(c.as_mut_ptr());
    (0..count).into_par_iter().for_each(|p| {
        let (offset, rs) = dst(p);
        // SAFETY: product `p` writes its own `m` rows of `n` values (`dst`'s contract), inside
        // the `len` values allocated; its operands lie in the caller's buffers.
        unsafe { matmul(m, n, k, out.get().add(offset), rs, false, a(p), b(p), few) };
    });
    // SAFETY: the products' outputs cover all `len` values (`dst`'s contract), each written.
    unsafe { c.set_len(len) };
    c
}
