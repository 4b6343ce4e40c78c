#!/usr/bin/env bash
# CPU benchmark of the VAR transformer against the official code on PyTorch.
# Prints markdown rows for docs/BENCHMARKS.md: once single-threaded, once with all cores.
#   scripts/bench.sh [--pytorch OFFICIAL_VAR_REPO]
# With --pytorch, the official VAR's teacher-forced forward is timed in the same run at the
# same thread count ($PYTHON, default python3, needs torch; bench/pytorch_forward.py) and the
# ratios are against it; without, against the 1-thread figures recorded with the golden vectors.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"
REPO=""
if [ "${1:-}" = "--pytorch" ]; then REPO="$2"; fi
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F)"
# --workspace keeps the feature set (and so the build) identical to the tests'.
cargo bench --workspace --locked --bench cpu --no-run
for t in 1 "$(nproc)"; do
  if [ -n "$REPO" ]; then
    # "d2 0.0312" lines → NEXTSCALE_PYTORCH_TF=2:0.0312,4:…
    NEXTSCALE_PYTORCH_TF=$("${PYTHON:-python3}" bench/pytorch_forward.py "$REPO" --threads "$t" 2>/dev/null \
      | awk '/^d[0-9]+ / {printf "%s%s:%s", sep, substr($1, 2), $2; sep=","}')
    export NEXTSCALE_PYTORCH_TF
  fi
  rows=$(RAYON_NUM_THREADS="$t" cargo bench --workspace --locked --bench cpu 2>/dev/null | grep '^|')
  if [ "$t" = 1 ]; then echo "$rows"; else echo "$rows" | grep '^| d'; fi
done
