#!/usr/bin/env bash
# CPU benchmark of the VAR transformer against the official PyTorch CPU figures.
# Prints markdown rows for docs/BENCHMARKS.md: once single-threaded (like-for-like with the
# 1-thread PyTorch baseline), once with all cores.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F)"
# --workspace keeps the feature set (and so the build) identical to the tests'.
cargo bench --workspace --locked --bench cpu --no-run
RAYON_NUM_THREADS=1 cargo bench --workspace --locked --bench cpu 2>/dev/null | grep '^|'
cargo bench --workspace --locked --bench cpu 2>/dev/null | grep '^| d'
