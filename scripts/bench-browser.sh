#!/usr/bin/env bash
# Browser benchmark (see bench/browser.mjs): builds what it needs, then prints markdown.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
[ -f pkg/nextscale_wasm_bg.wasm ] || bash scripts/build-wasm.sh
bash scripts/fixtures.sh >/dev/null
node bench/browser.mjs
