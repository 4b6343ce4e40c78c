//! Native side: the same gemm products as run.mjs times in wasm, on one thread.
use std::time::Instant;

fn main() {
    for &(m, n, k) in SHAPES {
        let iters = 200_000_000 / (m * n * k).max(1) + 1;
        wasm_gemm_bench::gemm_products(m, n, k, iters / 10 + 1);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            std::hint::black_box(wasm_gemm_bench::gemm_products(m, n, k, iters));
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (m * n * k * iters) as f64 / best / 1e9;
        println!("native gemm {m}x{k}·{k}x{n}: {gflops:.1} GFLOP/s");
    }
}

/// The shipped emoji model's last scale (512 rows with CFG, width 96, MLP 384, 512 codes): qkv,
/// MLP up, MLP down, head.
const SHAPES: &[(usize, usize, usize)] = &[
    (512, 288, 96),
    (512, 384, 96),
    (512, 96, 384),
    (512, 512, 96),
];
