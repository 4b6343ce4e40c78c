#!/usr/bin/env bash
# Builds the browser package and the demo model, then serves the demo page on
# http://127.0.0.1:${PORT:-8000}/www/ (localhost is a secure context, so WebGPU works).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
[ -d node_modules/binaryen ] || npm ci --no-audit --no-fund
bash scripts/build-wasm.sh
bash scripts/fixtures.sh
echo "== open http://127.0.0.1:${PORT:-8000}/www/"
exec python3 -m http.server "${PORT:-8000}" --bind 127.0.0.1
