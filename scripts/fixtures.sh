#!/usr/bin/env bash
# Creates the demo/test model (random weights) in www/models/ with native-trainer.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
cargo build --release --locked --workspace --bin native-trainer
mkdir -p www/models
"$CARGO_TARGET_DIR/release/native-trainer" fixture tiny --seed 0 --out www/models/tiny-random.safetensors
for q in q8 q4; do
  "$CARGO_TARGET_DIR/release/native-trainer" export --var www/models/tiny-random.safetensors \
    --quant "$q" --no-report --out "www/models/tiny-random-$q.nsp"
done
