#!/usr/bin/env bash
# The main job on the shipped default: builds native-trainer, then generates with the two
# models shipped in models/ (trained by native-trainer, see docs/MODELS.md):
#   out/emoji.png   text-to-image emoji for a few prompts (4 samples each)
#   out/digits.png  class-conditional MNIST digits, one row per digit 0–9
# usage: scripts/demo.sh [OUT_DIR] [PROMPT ...]
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"

OUT="${1:-$ROOT/out}"
shift || true
if [ "$#" -gt 0 ]; then prompts=("$@"); else prompts=("grinning face" "face with tears of joy" "red apple" "fire"); fi
cargo build --release --locked -p native-trainer
BIN="$CARGO_TARGET_DIR/release/native-trainer"
mkdir -p "$OUT"
args=()
for p in "${prompts[@]}"; do args+=(--prompt "$p"); done
# Sampling settings (cfg 3, top-k 50, top-p 0.9) come from the packs.
"$BIN" sample --pack models/emoji.nsp "${args[@]}" --n 4 --cols 4 --seed 0 --out "$OUT/emoji.png"
"$BIN" sample --pack models/digits.nsp --class 0,1,2,3,4,5,6,7,8,9 --n 10 --cols 10 --seed 0 \
  --out "$OUT/digits.png"
echo "wrote $OUT/emoji.png (rows: ${prompts[*]}) and $OUT/digits.png (rows: digits 0–9)"
