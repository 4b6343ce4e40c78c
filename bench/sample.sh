#!/usr/bin/env bash
# CPU inference side by side in one run: one class-conditional 256-px image (class 207, cfg 4,
# top-k 900, top-p 0.96) from a random-weight official-shaped VAR (d16 by default) and the
# official VQ-VAE architecture, with native-trainer (f16 pack, f32 in memory) and with the
# official code on PyTorch ($PYTHON, default python3), at each thread count. Prints sampling
# (10 scales with CFG) and decoding seconds per image, medians of 3 after a warm-up, and the
# ratios (PyTorch time / nextscale time: above 1, nextscale is faster).
#   bench/sample.sh --pytorch OFFICIAL_VAR_REPO [--threads 1,2] [--depth 16]
# Pause other work on the machine first: two shared cores make ratios lie.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
REPO=""
THREADS="1,$(nproc)"
DEPTH=16
while [ $# -gt 0 ]; do
  case "$1" in
    --pytorch) REPO="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --depth) DEPTH="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$REPO" ] || { echo "--pytorch OFFICIAL_VAR_REPO is required" >&2; exit 2; }
(cd "$ROOT" && cargo build --release --locked -p native-trainer --quiet)
B="$CARGO_TARGET_DIR/release/native-trainer"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$B" fixture official --depth "$DEPTH" --quant f16 --out "$W/d.nsp" >/dev/null 2>&1
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%F); VAR d$DEPTH, f16 pack"
med() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
for t in ${THREADS//,/ }; do
  : > "$W/s" ; : > "$W/d"
  for seed in 0 1 2 3; do
    RAYON_NUM_THREADS="$t" "$B" sample --pack "$W/d.nsp" --class 207 --cfg 4 --top-k 900 --top-p 0.96 \
      --seed "$seed" --out "$W/img.png" > "$W/log" 2>&1
    [ "$seed" = 0 ] && continue
    sed -nE 's/^sampled 1 image\(s\) in ([0-9.]+) s.*/\1/p' "$W/log" >> "$W/s"
    sed -nE 's/^decoded in ([0-9.]+) s.*/\1/p' "$W/log" >> "$W/d"
  done
  ns=$(med < "$W/s"); nd=$(med < "$W/d")
  out=$("${PYTHON:-python3}" "$ROOT/bench/pytorch_sample.py" "$REPO" --depth "$DEPTH" --threads "$t" 2>/dev/null)
  pt=$(echo "$out" | sed -nE 's/^seconds per image: ([0-9.]+).*/\1/p')
  pd=$(echo "$out" | sed -nE 's/^seconds per decode: ([0-9.]+).*/\1/p')
  awk -v t="$t" -v ns="$ns" -v nd="$nd" -v pt="$pt" -v pd="$pd" -v v="$(echo "$out" | sed -n 's/^torch \([^,]*\),.*/\1/p')" 'BEGIN {
    ps = pt - pd
    printf "%s threads: nextscale sampling %.2f s, decode %.2f s | PyTorch %s sampling %.2f s, decode %.2f s | ratio sampling %.2f, decode %.2f, image %.2f\n",
      t, ns, nd, v, ps, pd, ps / ns, pd / nd, pt / (ns + nd) }'
done
