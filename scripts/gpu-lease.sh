#!/usr/bin/env bash
# What one short lease of a GPU machine runs, in order (no cargo and no network there; at most
# 64 MiB travels): first the GPU check (scripts/gpu-check.sh: burn-CUDA against the official
# PyTorch modules), then CUDA training of the shipped emoji VAR, in forks side by side, sized
# to end before the lease does. Everything the machine needs travels in one ignored folder:
#
#   DIR/native-trainer.xz   native-trainer built by native-trainer/scripts/build-cuda.sh, stripped, xz
#   DIR/VAR/                a checkout of the official VAR code (for the PyTorch side)
#   DIR/tokens.tar.xz       the emoji VAR's token shards and their cached caption embeddings
#                           (a folder tokens/, compressed: 11.4 MB become 6.6)
#   DIR/init.safetensors    the VAR the forks start from (the shipped one, f32)
#   DIR/minilm/             MiniLM's config.json and vocab.txt: with a placeholder of the model's
#                           length they key the embedding cache, so the 91 MB encoder stays home
#   models/emoji.nsp        (tracked) the VQ-VAE the tokens came from
#
#   OUT=dir scripts/gpu-lease.sh DIR
#   env: DEADLINE (s from the start by which training must end, default 540), CHECK_S (the GPU
#   check's box, default 300; 0 skips the check), PROBE_S (the probes' box, default 45), DEV
#   (cuda; cpu for the dry run), MODEL_LEN (the encoder's bytes), FORKS ("NAME:BATCH:LR ...",
#   default b64:64:1e-3), CHECK_ARGS (more gpu-check.sh arguments), BIN (a native-trainer to
#   use instead of DIR's).
# The H200 run of 2026-12-04 (docs/BENCHMARKS.md, docs/EMOJI-LOG.md "On a GPU") was
# `DEADLINE=495 CHECK_S=380 OUT=<out> scripts/gpu-lease.sh DIR`, DIR laid out as above with
# var-v6-d6-lr1e-3's weights as init.safetensors.
#
# Each fork trains from DIR/init.safetensors exactly as emoji-deeper-more does on the CPU (a
# fresh warm-up to its peak, linear decay; scripts/train-models.sh), at its own batch size and
# peak. A probe of all forks side by side for PROBE_S seconds measures their rates while they
# share the GPU, as the real runs will; the real runs then get as many steps as fit before
# DEADLINE. OUT gets gpu-check.json/.log, lease.log and one tar per fork (var.safetensors,
# metrics.csv, config.toml).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="$(cd "${1:?usage: OUT=dir scripts/gpu-lease.sh DIR}" && pwd)" || exit 2
OUT="${OUT:?set OUT}"
DEADLINE="${DEADLINE:-540}"
CHECK_S="${CHECK_S:-300}"
PROBE_S="${PROBE_S:-45}"
DEV="${DEV:-cuda}"
MODEL_LEN="${MODEL_LEN:-90868376}"
FORKS="${FORKS:-b64:64:1e-3}"
T0=$(date +%s)
W=/tmp/lease
rm -rf "$W" # a rerun must not resume the last run's probes
mkdir -p "$W" "$OUT"
LOG="$OUT/lease.log"
say() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$LOG"; }

# xz, or Python's lzma where the machine has no xz
unxz() { if command -v xz >/dev/null; then xz -dc; else
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'; fi; }
if [ -n "${BIN:-}" ]; then B="$BIN"; else
  B="$W/native-trainer"
  unxz < "$D/native-trainer.xz" > "$B" && chmod +x "$B" || { say "unpacking failed"; exit 1; }
fi
source "$ROOT/scripts/gpu-env.sh"
if [ "$DEV" = cuda ]; then
  cuda_env
  { nvidia-smi; ls "$CUDA_PATH/include" | head -5; } >>"$LOG" 2>&1
fi
say "binary ready ($DEV); LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

# 1. The GPU check, boxed: its log grows under OUT even if the box closes first. CHECK_S=0
# skips it (training only).
if [ "$CHECK_S" -gt 0 ]; then
  timeout "$CHECK_S" bash "$ROOT/scripts/gpu-check.sh" --bin "$B" --repo "$D/VAR" --device "$DEV" \
    --out "$OUT/gpu-check.json" ${CHECK_ARGS:-}
  say "gpu check: exit $?"
fi

# 2. The emoji forks.
unxz < "$D/tokens.tar.xz" | tar -C "$W" -x || { say "unpacking the tokens failed"; exit 1; }
mkdir -p "$W/minilm"
cp "$D"/minilm/* "$W/minilm/"
truncate -s "$MODEL_LEN" "$W/minilm/model.safetensors"
fork() { # NAME BATCH LR STEPS [train-var args]; BOX: seconds before it is stopped (0: never)
  timeout "${BOX:-0}" "$B" train-var --tokens "$W/tokens" --vae "$ROOT/models/emoji.nsp" --out "$W/$1" --preset emoji \
    --init "$D/init.safetensors" --steps "$4" --batch-size "$2" --set train.lr="$3" \
    --set train.log_every=25 --set train.ckpt_every=100000 --set train.eval_every=500 \
    --set train.sample_every=1000000 --set train.scale_balance=1 \
    --text-encoder "$W/minilm" --device "$DEV" "${@:5}" > "$W/$1.log" 2>&1
}
# The probes are boxed in time, not in steps: with a step count the larger batches finish
# last, partly alone, and overestimate their rate (the H200 run of 2026-12-04, evening: a
# batch-128 fork beside two batch-64 ones was sized from a rate it did not get, and ran out
# of time). The step count only has to outlast the box.
pids=()
for f in $FORKS; do
  IFS=: read -r n b lr <<<"$f"
  (BOX="$PROBE_S" fork "probe-$n" "$b" "$lr" 100000 --set train.log_every=5; true) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
left=$((DEADLINE - ($(date +%s) - T0) - 30))
say "probes done; ${left} s left for training"
pids=()
for f in $FORKS; do
  IFS=: read -r n b lr <<<"$f"
  r=$(metrics_mean tok_per_s "$W/probe-$n/metrics.csv")
  # 507 tokens per image; 85 % of the time left, the rest for compiling and writing ("null",
  # a probe that logged nothing, counts as 0 and skips the fork)
  steps=$(awk -v r="$r" -v b="$b" -v t="$left" 'BEGIN{s=int(r / (b * 507) * t * 0.85); print (s < 100 ? 0 : s)}')
  say "fork $n: batch $b, peak $lr, probe $r tok/s -> $steps steps"
  [ "$steps" -gt 0 ] || { tail -5 "$W/probe-$n.log" | tee -a "$LOG"; continue; }
  # boxed too: a fork that overruns still comes back with its log and metrics
  BOX=$((DEADLINE - ($(date +%s) - T0))) fork "$n" "$b" "$lr" "$steps" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || say "a fork failed"; done
for f in $FORKS; do
  IFS=: read -r n b lr <<<"$f"
  [ -d "$W/$n" ] || continue
  cp "$W/$n.log" "$W/$n/train.log" 2>/dev/null
  files=()
  for x in var.safetensors metrics.csv config.toml train.log; do [ -s "$W/$n/$x" ] && files+=("$x"); done
  [ -s "$W/$n/var.safetensors" ] || say "fork $n left no model (it ran out of time or failed: see train.log in its tar)"
  tail -3 "$W/$n/metrics.csv" >>"$LOG" 2>/dev/null
  tar -C "$W/$n" -cf "$OUT/fork-$n.tar" "${files[@]}"
done
say "done"
