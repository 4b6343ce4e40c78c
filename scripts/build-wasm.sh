#!/usr/bin/env bash
# Builds the npm package into pkg/: the wasm library (WebGPU + CPU backends), its
# wasm-bindgen bindings (--target web), the Worker-based JS API, types and package.json.
# Installs wasm-bindgen-cli at the exact version in Cargo.lock, and uses npm binaryen's
# wasm-opt when installed (Debian's wasm-opt produces modules Chromium rejects).
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"

WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if ! command -v wasm-bindgen >/dev/null 2>&1 || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$WB_VERSION" ]; then
  echo "== installing wasm-bindgen-cli $WB_VERSION"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

echo "== building the wasm library"
cargo rustc --release --locked --lib --target wasm32-unknown-unknown --features webgpu --crate-type cdylib
WASM="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/nextscale.wasm"

OUT="$ROOT/pkg"
rm -rf "$OUT"
mkdir -p "$OUT"
wasm-bindgen --target web --out-dir "$OUT" --out-name nextscale_wasm "$WASM"
OPT="$ROOT/node_modules/.bin/wasm-opt"
if [ -x "$OPT" ]; then
  echo "== wasm-opt -O (npm binaryen)"
  "$OPT" -O --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types \
    "$OUT/nextscale_wasm_bg.wasm" -o "$OUT/nextscale_wasm_bg.wasm.opt"
  mv "$OUT/nextscale_wasm_bg.wasm.opt" "$OUT/nextscale_wasm_bg.wasm"
fi
cp pkg-config/js/*.js pkg-config/index.d.ts pkg-config/README.md "$OUT/"
VERSION=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
sed "s/__VERSION__/$VERSION/" pkg-config/package.json > "$OUT/package.json"
ls -la "$OUT"
