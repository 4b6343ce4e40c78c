#!/usr/bin/env bash
# The main job on the shipped default: sample an image with native-trainer.
# Until trained models ship, the default is the golden-test VAR d2 with the procedural
# VQ-VAE: the architecture is the official one, the weights are random, so the image is noise.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"

GOLDEN="${NEXTSCALE_GOLDEN_DIR:-$ROOT/../shared/var-golden}"
OUT="${1:-$ROOT/out.png}"
cargo build --release --locked -p native-trainer
BIN="$CARGO_TARGET_DIR/release/native-trainer"
VAE="$NEXTSCALE_CACHE/vqvae_golden_random.safetensors"
[ -s "$VAE" ] || "$BIN" fixture vqvae --out "$VAE"
"$BIN" sample --var "$GOLDEN/var_d2_random.safetensors" --vae "$VAE" \
  --class 207 --cfg 4 --top-k 900 --top-p 0.96 --seed 0 --out "$OUT" \
  --tokens-out "${OUT%.png}.tokens.json"
echo "wrote $OUT (random weights: expect noise, not a picture)"
