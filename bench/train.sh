#!/usr/bin/env bash
# Training throughput on this machine's CPU, per preset size: VQ-VAE steps and VAR steps on the
# generated shapes data set (images/s and tokens/s: the mean of the logged intervals after the
# first, from metrics.csv).
#   bench/train.sh [--device cpu|vulkan|cuda] [--pytorch OFFICIAL_VAR_REPO] [--presets tiny,digits,emoji]
#                  [--threads 2] [--steps 40] [--bin NATIVE_TRAINER]
# --threads takes a list (e.g. 1,2): each count runs both sides (RAYON_NUM_THREADS for
# native-trainer, torch.set_num_threads for PyTorch). With --pytorch, the same configurations
# also run through the official VAR modules on PyTorch ($PYTHON, default python3, needs torch)
# in the same run, and the ratios are printed. --bin times another build (e.g. an older one).
# Pause other work on the machine first: two shared cores make ratios lie.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
DEV=cpu
REPO=""
PRESETS=tiny
THREADS="$(nproc)"
STEPS=40
B=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEV="$2"; shift 2 ;;
    --pytorch) REPO="$2"; shift 2 ;;
    --presets) PRESETS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --bin) B="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$B" ]; then
  cargo build --release --workspace --quiet
  B="$CARGO_TARGET_DIR/release/native-trainer"
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
px() { case "$1" in emoji) echo 64 ;; *) echo 32 ;; esac; }
mean() { # column name, file
  awk -F, -v c="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} $k!=""{n++; if(n>1){s+=$k; m++}} END{printf "%.1f", s/m}' "$2"
}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; device $DEV; $(date -u +%F)"
echo "native-trainer: $B"
common=(--steps "$STEPS" --set train.log_every=5 --set train.eval_every=100000 --set train.sample_every=100000
  --set train.ckpt_every=100000 --device "$DEV")
for p in ${PRESETS//,/ }; do
  size=$(px "$p")
  [ -d "$W/shapes$size" ] || "$B" fixture shapes --out "$W/shapes$size" --n 64 --size "$size" >/dev/null 2>&1
  for t in ${THREADS//,/ }; do
    export RAYON_NUM_THREADS="$t"
    rm -rf "$W/vq" "$W/tok" "$W/var"
    "$B" train-vqvae --data "$W/shapes$size" --out "$W/vq" --preset "$p" "${common[@]}" >/dev/null 2>&1
    "$B" prepare --data "$W/shapes$size" --vae "$W/vq/vqvae.safetensors" --out "$W/tok" >/dev/null 2>&1
    "$B" train-var --tokens "$W/tok" --vae "$W/vq/vqvae.safetensors" --out "$W/var" --preset "$p" "${common[@]}" >/dev/null 2>&1
    VQ=$(mean img_per_s "$W/vq/metrics.csv")
    VAR=$(mean tok_per_s "$W/var/metrics.csv")
    echo "$p, $t threads: nextscale VQ-VAE $VQ images/s, VAR $VAR tokens/s"
    if [ -n "$REPO" ]; then
      out=$("${PYTHON:-python3}" "$ROOT/bench/pytorch_train_step.py" "$REPO" --preset "$p" --threads "$t" 2>/dev/null)
      pvq=$(echo "$out" | awk '/VQ-VAE/ {print $(NF-3)}')
      pvar=$(echo "$out" | awk '/official VAR/ {print $(NF-3)}')
      echo "$p, $t threads: PyTorch    VQ-VAE $pvq images/s, VAR $pvar tokens/s ($(echo "$out" | grep -m1 "^torch"))"
      awk -v p="$p" -v t="$t" -v a="$VQ" -v b="$pvq" -v c="$VAR" -v d="$pvar" \
        'BEGIN { printf "%s, %s threads: ratio nextscale/PyTorch: VQ-VAE %.2f, VAR %.2f\n", p, t, a/b, c/d }'
    fi
  done
done
