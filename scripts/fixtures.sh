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

# An official-size pack (random d16 VAR + the procedural official VQ-VAE, q4, 243 MB), written
# tensor by tensor: the browser tests stream it in and sample its first scales on the CPU path.
"$CARGO_TARGET_DIR/release/native-trainer" fixture official --depth 16 --quant q4 --out www/models/d16-q4.nsp

# A small text-conditioned model that takes prompts (for the browser tests): trained here on
# generated captioned shapes, with the MiniLM encoder inside the pack.
MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
B="$CARGO_TARGET_DIR/release/native-trainer"
W="$NEXTSCALE_CACHE/fixtures/shapes-text"
rm -rf "$W"
mkdir -p "$W"
quiet=(--set train.eval_every=1000 --set train.sample_every=1000 --set train.ckpt_every=1000)
"$B" fixture shapes --captions --n 16 --out "$W/data" 2>/dev/null
"$B" train-vqvae --data "$W/data" --out "$W/vq" --steps 40 "${quiet[@]}" 2>/dev/null
"$B" prepare --data "$W/data" --vae "$W/vq/vqvae.safetensors" --out "$W/tokens" 2>/dev/null
"$B" train-var --tokens "$W/tokens" --vae "$W/vq/vqvae.safetensors" --out "$W/var" \
  --text-encoder "$MINILM" --steps 40 "${quiet[@]}" 2>/dev/null
"$B" export --var "$W/var/var.safetensors" --vae "$W/vq/vqvae.safetensors" --text-encoder "$MINILM" \
  --quant q8 --no-report --out www/models/shapes-text.nsp
