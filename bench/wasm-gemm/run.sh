#!/usr/bin/env bash
# One core's matrix-product throughput, native (gemm with AVX-512 where the CPU has it) against
# wasm in headless Chromium (gemm's simd128 kernels), on the shipped emoji model's last-scale
# shapes, plus one register tile with and without f32x4.relaxed_madd: what bounds the
# browser's CPU path (docs/BENCHMARKS.md). Needs the repository's npm packages (`npm ci`, for playwright-core) and
# Debian's chromium. Pause other work first; run from anywhere.
set -euo pipefail
source "$(dirname "$0")/../../scripts/env.sh"
ensure_toolchain
cd "$ROOT/bench/wasm-gemm"
T="$CARGO_TARGET_DIR/wasm-gemm"
cargo build --release --locked --target-dir "$T/native" -q
RUSTFLAGS="-C target-feature=+simd128" \
  cargo build --release --locked --lib --target wasm32-unknown-unknown --target-dir "$T/simd128" -q
RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
  cargo build --release --locked --lib --target wasm32-unknown-unknown --target-dir "$T/relaxed" -q
"$T/native/release/wasm-gemm-bench"
WASM_GEMM_TARGET="$T" node run.mjs
