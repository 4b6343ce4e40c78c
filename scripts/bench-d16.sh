#!/usr/bin/env bash
# Official-size model, weights kept packed (docs/BENCHMARKS.md, "d16 in a page"):
#   1. native, side by side: the same d16 q4 pack sampled with its matrices kept packed (the CPU
#      default) and dequantized to f32 at load (`--dequantize`, the old path): load, sampling,
#      decode time and peak RSS, and whether the tokens are equal;
#   2. in headless Chromium on the wasm CPU path: a full 256-px image with time per scale,
#      decode time, wasm memory and Chromium's peak RSS (bench/d16-browser.mjs).
# DEVICE=vulkan runs part 1 on the native wgpu device instead (weights kept packed on the GPU
# against dequantized at load; on a machine without a GPU, Mesa's lavapipe, where GPU memory
# is the process's RSS) and skips part 2; RUNS sets the number of seeds (default 3).
# Needs pkg/ (scripts/build-wasm.sh). Writes the fixture pack if it is missing.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"
cargo build --release --locked --workspace --bin native-trainer
B="$CARGO_TARGET_DIR/release/native-trainer"
P=www/models/d16-q4.nsp
[ -s "$P" ] || "$B" fixture official --depth 16 --quant q4 --out "$P"
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F)"
echo "pack: $P, $(stat -c %s "$P") bytes"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
DEVICE="${DEVICE:-cpu}"
for run in $(seq 1 "${RUNS:-3}"); do
  for mode in packed dequantize; do
    flag=()
    [ "$mode" = dequantize ] && flag=(--dequantize)
    /usr/bin/time -f "peak_rss_kb %M" "$B" sample --device "$DEVICE" --pack "$P" --class 207 --seed "$run" "${flag[@]}" \
      --out "$T/$mode.png" --tokens-out "$T/$mode.json" 2> "$T/$mode.log"
    load=$(sed -nE "s/.* in ([0-9.]+) s on $DEVICE/\\1/p" "$T/$mode.log")
    samp=$(sed -nE 's/^sampled 1 image\(s\) in ([0-9.]+) s/\1/p' "$T/$mode.log")
    dec=$(sed -nE 's/^decoded in ([0-9.]+) s/\1/p' "$T/$mode.log")
    rss=$(awk '/peak_rss_kb/ { printf "%.0f", $2 / 1024 }' "$T/$mode.log")
    echo "run $run $mode: load ${load} s, sampling ${samp} s, decode ${dec} s, peak RSS ${rss} MiB"
  done
  cmp -s "$T/packed.json" "$T/dequantize.json" && echo "run $run: tokens equal" || echo "run $run: TOKENS DIFFER"
done
if [ "$DEVICE" = cpu ]; then node bench/d16-browser.mjs; fi
