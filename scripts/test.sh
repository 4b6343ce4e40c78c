#!/usr/bin/env bash
# Runs the whole test suite: unit tests, parity against the golden vectors, loading errors,
# and a wasm32 build check of the library. Used by CI (.ci/run) and by developers.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"

start=$(date +%s)
echo "== native tests (release profile; target dir $CARGO_TARGET_DIR)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --release --workspace --locked --lib --bins --tests 2>&1 | tee "$log"
passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")

echo "== wasm32 check of the library (WebGPU + CPU backends)"
cargo check --release --locked --lib --target wasm32-unknown-unknown --features webgpu

echo "== done in $(( $(date +%s) - start )) s"
echo "nextscale: $passed passed, $failed failed"
