#!/usr/bin/env bash
# Builds the npm package into pkg/: the wasm library (WebGPU + CPU backends), a threaded
# CPU-only module beside it, their wasm-bindgen bindings (--target web), the Worker-based JS
# API, types and package.json.
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

# The threaded CPU module: the same library without WebGPU, compiled with wasm atomics so a
# rayon pool of Web Workers shares its memory (wgpu is not thread-safe there). Needs nightly
# with rust-src for `-Z build-std`; without them the package runs the CPU path on one thread.
NIGHTLY="${NEXTSCALE_NIGHTLY:-nightly}"
if [ "${NEXTSCALE_NO_THREADS:-0}" != 1 ] && command -v rustup >/dev/null 2>&1; then
  rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src' \
    || rustup toolchain install "$NIGHTLY" --profile minimal -c rust-src
  echo "== building the threaded CPU module ($NIGHTLY)"
  # Its own target dir: other flags and another std, which would otherwise rebuild each time.
  # Shared, imported memory (4 GiB at most) and the thread-local-storage exports that
  # wasm-bindgen's thread start-up needs.
  LINK="-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296"
  for sym in __wasm_init_tls __tls_size __tls_align __tls_base; do LINK="$LINK -C link-arg=--export=$sym"; done
  RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 $LINK" \
    cargo "+$NIGHTLY" rustc --release --locked --lib --target wasm32-unknown-unknown --features threads \
    --crate-type cdylib -Z build-std=panic_abort,std --target-dir "$CARGO_TARGET_DIR/threads"
  wasm-bindgen --target web --out-dir "$OUT" --out-name nextscale_wasm_threads \
    "$CARGO_TARGET_DIR/threads/wasm32-unknown-unknown/release/nextscale.wasm"
  if [ -x "$OPT" ]; then
    "$OPT" -O --enable-threads --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types \
      "$OUT/nextscale_wasm_threads_bg.wasm" -o "$OUT/nextscale_wasm_threads_bg.wasm.opt"
    mv "$OUT/nextscale_wasm_threads_bg.wasm.opt" "$OUT/nextscale_wasm_threads_bg.wasm"
  fi
  node scripts/wasm-threads-glue.mjs "$OUT"
else
  echo "== skipping the threaded CPU module (NEXTSCALE_NO_THREADS=1 or no rustup)"
fi
cp pkg-config/js/*.js pkg-config/index.d.ts pkg-config/README.md "$OUT/"
VERSION=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
sed "s/__VERSION__/$VERSION/" pkg-config/package.json > "$OUT/package.json"
ls -la "$OUT"
