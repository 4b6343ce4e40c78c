#!/usr/bin/env bash
# Training throughput of the `tiny` presets on this machine's CPU: 100 VQ-VAE steps and 100
# VAR steps on the generated shapes data set; prints images/s and tokens/s (mean of the logged
# intervals after the first, from metrics.csv).
#   bench/train.sh [--device cpu|vulkan|cuda]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
DEV=cpu
[ "${1:-}" = "--device" ] && DEV="$2"
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
echo "train-vqvae tiny (32 px, batch 8): $(mean img_per_s "$W/vq/metrics.csv") images/s"
echo "train-var tiny (85 tokens, batch 16): $(mean tok_per_s "$W/var/metrics.csv") tokens/s"
