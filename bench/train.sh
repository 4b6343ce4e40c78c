#!/usr/bin/env bash
# Training throughput of the `tiny` presets on this machine's CPU: 100 VQ-VAE steps and 100
# VAR steps on the generated shapes data set; prints images/s and tokens/s (mean of the logged
# intervals after the first, from metrics.csv).
#   bench/train.sh [--device cpu|vulkan|cuda] [--pytorch OFFICIAL_VAR_REPO]
# With --pytorch, the same configurations also run through the official VAR modules on
# PyTorch ($PYTHON, default python3, needs torch) in the same run, and the ratios are printed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
DEV=cpu
REPO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEV="$2"; shift 2 ;;
    --pytorch) REPO="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release --workspace --quiet
B="$CARGO_TARGET_DIR/release/native-trainer"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$B" fixture shapes --out "$W/shapes" --n 64 >/dev/null 2>&1
common=(--steps 100 --set train.log_every=10 --set train.eval_every=1000 --set train.sample_every=1000
  --set train.ckpt_every=1000 --device "$DEV")
"$B" train-vqvae --data "$W/shapes" --out "$W/vq" --preset tiny "${common[@]}" >/dev/null 2>&1
"$B" prepare --data "$W/shapes" --vae "$W/vq/vqvae.safetensors" --out "$W/tok" --flip >/dev/null 2>&1
"$B" train-var --tokens "$W/tok" --vae "$W/vq/vqvae.safetensors" --out "$W/var" --preset tiny "${common[@]}" >/dev/null 2>&1
mean() { # column name, file
  awk -F, -v c="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} $k!=""{n++; if(n>1){s+=$k; m++}} END{printf "%.1f", s/m}' "$2"
}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; device $DEV; $(date -u +%F)"
VQ=$(mean img_per_s "$W/vq/metrics.csv")
VAR=$(mean tok_per_s "$W/var/metrics.csv")
echo "train-vqvae tiny (32 px, batch 8): $VQ images/s"
echo "train-var tiny (85 tokens, batch 16): $VAR tokens/s"
if [ -n "$REPO" ]; then
  out=$("${PYTHON:-python3}" "$ROOT/bench/pytorch_train_step.py" "$REPO" --threads "$(nproc)" 2>/dev/null)
  echo "$out"
  pvq=$(echo "$out" | awk '/VQ-VAE/ {print $(NF-3)}')
  pvar=$(echo "$out" | awk '/official VAR/ {print $(NF-3)}')
  awk -v a="$VQ" -v b="$pvq" -v c="$VAR" -v d="$pvar" 'BEGIN { printf "ratio nextscale/PyTorch: VQ-VAE %.2f, VAR %.2f\n", a/b, c/d }'
fi
