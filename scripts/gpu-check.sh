#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU (PyTorch and the CUDA toolkit there, no cargo,
# no network), in a few minutes, side by side in one run:
#   1. the same training steps on burn-CUDA (native-trainer) and on the official VAR modules in
#      PyTorch: the emoji preset's VQ-VAE and VAR, and an official-size VAR (d16, batch 32);
#   2. one 256-px image from a random-weight d16-shaped model (class 207, cfg 4, top-k 900,
#      top-p 0.96) on both, sampling and decoding;
# and writes one JSON report (and a log). Random weights and generated data throughout: the
# times do not depend on values, and nothing needs downloading.
#
#   scripts/gpu-check.sh --bin BIN --repo OFFICIAL_VAR [--device cuda] [--depth 16] [--steps 20]
#                        [--out gpu-check.json] [--skip-train]
#
# --skip-train runs part 2 alone (its training figures are then null in the report).
# --bin is a native-trainer built with `native-trainer/scripts/build-cuda.sh` (it travels
# compressed: `xz -T0 -9`, about 25 MB); --repo a checkout of the official VAR code (its
# `models/`). Without --bin, the script builds the CPU binary here: with `--device cpu --depth 2
# --steps 6` it is the dry run of the whole path on this machine.
# On the GPU machine, libnvrtc comes from PyTorch's pip package and the CUDA headers from the
# toolkit (CUDA_PATH, default /usr/local/cuda); both are found if unset.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B=""
REPO=""
DEV=cuda
DEPTH=16
STEPS=20
OUT=gpu-check.json
TRAIN=1
PY="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) B="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --device) DEV="$2"; shift 2 ;;
    --depth) DEPTH="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --skip-train) TRAIN=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$REPO" ] && [ -d "$REPO/models" ] || { echo "--repo must be a checkout of the official VAR code" >&2; exit 2; }
if [ -z "$B" ]; then
  source "$ROOT/scripts/env.sh"
  (cd "$ROOT" && cargo build --release --locked -p native-trainer --quiet)
  B="$CARGO_TARGET_DIR/release/native-trainer"
fi
source "$ROOT/scripts/gpu-env.sh"
if [ "$DEV" = cuda ]; then cuda_env; fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
LOG="${OUT%.json}.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
t0=$(date +%s)
stamp() { say "[$(( $(date +%s) - t0 )) s] $*"; }
common=(--steps "$STEPS" --set train.log_every=5 --set train.eval_every=100000 --set train.sample_every=100000
  --set train.ckpt_every=100000 --device "$DEV")
dsize=(--set "model.depth=$DEPTH" --set "model.embed_dim=$((64 * DEPTH))" --set "model.num_heads=$DEPTH")

say "machine: $(uname -m), $(nproc) cores; GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo none); $(date -u +%FT%TZ)"
NS_VQ="" NS_VAR="" NS_D="" PT_VQ="" PT_VAR="" PT_D="" TORCH=""
if [ "$TRAIN" = 1 ]; then
  stamp "data and fixtures"
  "$B" fixture shapes --out "$W/s64" --n 32 --size 64 >>"$LOG" 2>&1
  "$B" fixture shapes --out "$W/s256" --n 8 --size 256 >>"$LOG" 2>&1
  "$B" fixture vqvae --out "$W/vq-official.safetensors" >>"$LOG" 2>&1

  stamp "1a. emoji preset, native-trainer on $DEV"
  "$B" train-vqvae --data "$W/s64" --out "$W/vq" --preset emoji "${common[@]}" >>"$LOG" 2>&1
  "$B" prepare --data "$W/s64" --vae "$W/vq/vqvae.safetensors" --out "$W/tok64" --device "$DEV" >>"$LOG" 2>&1
  "$B" train-var --tokens "$W/tok64" --vae "$W/vq/vqvae.safetensors" --out "$W/var" --preset emoji "${common[@]}" >>"$LOG" 2>&1
  NS_VQ=$(metrics_mean img_per_s "$W/vq/metrics.csv")
  NS_VAR=$(metrics_mean tok_per_s "$W/var/metrics.csv")
  # each figure is logged as soon as it exists, so a run cut short keeps what it measured
  say "nextscale, emoji VQ-VAE: $NS_VQ images/s; emoji VAR: $NS_VAR tokens/s"
  stamp "1a. emoji preset, PyTorch on $DEV"
  PT=$("$PY" "$ROOT/bench/pytorch_train_step.py" "$REPO" --preset emoji --device "$DEV" --threads "$(nproc)" --steps "$STEPS" 2>>"$LOG") \
    || say "PyTorch failed (exit $?; its error is in $LOG): its figures are null"
  say "$PT"
  PT_VQ=$(echo "$PT" | awk '/VQ-VAE/ {print $(NF-3)}')
  PT_VAR=$(echo "$PT" | awk '/official VAR/ {print $(NF-3)}')
  TORCH=$(echo "$PT" | sed -n 's/^torch \([^,]*\),.*/\1/p')

  stamp "1b. d$DEPTH VAR, batch 32, native-trainer on $DEV"
  "$B" prepare --data "$W/s256" --vae "$W/vq-official.safetensors" --out "$W/tok256" --device "$DEV" >>"$LOG" 2>&1
  "$B" train-var --tokens "$W/tok256" --vae "$W/vq-official.safetensors" --out "$W/var-d" --preset d16 "${dsize[@]}" \
    --batch-size 32 "${common[@]}" >>"$LOG" 2>&1
  NS_D=$(metrics_mean tok_per_s "$W/var-d/metrics.csv")
  say "nextscale, d$DEPTH VAR, batch 32: $NS_D tokens/s"
  stamp "1b. d$DEPTH VAR, batch 32, PyTorch on $DEV"
  PT=$("$PY" "$ROOT/bench/pytorch_train_step.py" "$REPO" --preset "d$DEPTH" --batch 32 --device "$DEV" --threads "$(nproc)" --steps "$STEPS" 2>>"$LOG") \
    || say "PyTorch failed (exit $?; its error is in $LOG): its figures are null"
  say "$PT"
  PT_D=$(echo "$PT" | awk '/official VAR/ {print $(NF-3)}')
fi

stamp "2. d$DEPTH sampling, native-trainer on $DEV"
"$B" fixture official --depth "$DEPTH" --quant f16 --out "$W/d.nsp" >>"$LOG" 2>&1
NS_S=()
for seed in 1 2 3; do
  # --warmup: each process samples and decodes the image once untimed first (kernel
  # compilation happens there), as PyTorch's script does before its timed images
  "$B" sample --pack "$W/d.nsp" --class 207 --cfg 4 --top-k 900 --top-p 0.96 --seed "$seed" --device "$DEV" \
    --warmup --out "$W/s$seed.png" > "$W/sample.log" 2>&1 || { cat "$W/sample.log" >> "$LOG"; say "sample failed"; exit 1; }
  cat "$W/sample.log" >> "$LOG"
  s=$(sed -nE 's/^sampled 1 image\(s\) in ([0-9.]+) s.*/\1/p' "$W/sample.log")
  d=$(sed -nE 's/^decoded in ([0-9.]+) s.*/\1/p' "$W/sample.log")
  [ -n "$s" ] && [ -n "$d" ] || { say "no times in sample's output"; exit 1; }
  NS_S+=("$(awk -v s="$s" -v d="$d" 'BEGIN{printf "%.3f", s + d}')")
  say "nextscale, d$DEPTH image, seed $seed: sampled in $s s, decoded in $d s"
done
stamp "2. d$DEPTH sampling, PyTorch on $DEV"
PT=$("$PY" "$ROOT/bench/pytorch_sample.py" "$REPO" --depth "$DEPTH" --device "$DEV" --threads "$(nproc)" 2>>"$LOG") \
  || say "PyTorch failed (exit $?; its error is in $LOG): its figures are null"
say "$PT"
PT_S=$(echo "$PT" | sed -nE 's/^seconds per image: ([0-9.]+).*/\1/p')
[ -n "$TORCH" ] || TORCH=$(echo "$PT" | sed -n 's/^torch \([^,]*\),.*/\1/p')

stamp "report"
NS_S_MED=$(printf '%s\n' "${NS_S[@]}" | sort -n | sed -n 2p)
"$PY" - "$OUT" <<EOF
import json, sys
def r(a, b):
    try:
        return round(float(a) / float(b), 3)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
def f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
rep = {
    "machine": open("$LOG").readline().strip(),
    "device": "$DEV", "torch": "$TORCH" or None, "steps": $STEPS if $TRAIN else None, "depth": $DEPTH,
    "ratio_means": "above 1: nextscale is faster (throughputs: nextscale / PyTorch; times: PyTorch / nextscale)",
    "train": {
        "emoji_vqvae_images_per_s": {"nextscale": f("$NS_VQ"), "pytorch": f("$PT_VQ"), "ratio": r("$NS_VQ", "$PT_VQ")},
        "emoji_var_tokens_per_s": {"nextscale": f("$NS_VAR"), "pytorch": f("$PT_VAR"), "ratio": r("$NS_VAR", "$PT_VAR")},
        "d${DEPTH}_var_batch32_tokens_per_s": {"nextscale": f("$NS_D"), "pytorch": f("$PT_D"), "ratio": r("$NS_D", "$PT_D")},
    },
    "sample_d${DEPTH}_256px_seconds": {
        "nextscale": f("$NS_S_MED"), "nextscale_runs": [float(x) for x in "${NS_S[*]}".split()],
        "pytorch": f("$PT_S"), "ratio": r("$PT_S", "$NS_S_MED"),
    },
    "seconds": $(( $(date +%s) - t0 )),
}
json.dump(rep, open(sys.argv[1], "w"), indent=2)
print(json.dumps(rep, indent=2))
EOF
