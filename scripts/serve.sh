#!/usr/bin/env bash
# Builds the browser package and the demo model, then serves the demo page on
# http://127.0.0.1:${PORT:-8000}/www/ (localhost is a secure context, so WebGPU works; the
# isolation headers let the CPU path use threads).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
[ -d node_modules/binaryen ] || npm ci --no-audit --no-fund
bash scripts/build-wasm.sh
bash scripts/fixtures.sh
echo "== open http://127.0.0.1:${PORT:-8000}/www/"
# Served cross-origin isolated (COOP + COEP), so the CPU path may run on several threads.
exec python3 - "${PORT:-8000}" <<'PY'
import http.server, sys
class Isolated(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Isolated).serve_forever()
PY
