#!/usr/bin/env bash
# Fetches CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) from the PyPI package
# open-clip-torch into $NEXTSCALE_CACHE/clip/ (idempotent). Prints the file's path.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
DEST="$NEXTSCALE_CACHE/clip/bpe_simple_vocab_16e6.txt.gz"
if [ -f "$DEST" ]; then
  echo "$DEST"
  exit 0
fi
ensure_pip "CLIP's vocabulary"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --only-binary :all: "open-clip-torch==3.2.0" -d "$TMP" >&2
mkdir -p "$(dirname "$DEST")"
python3 - "$TMP" "$DEST" <<'PY'
import pathlib, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
whl = next(tmp.glob("open_clip_torch-*.whl"))
with zipfile.ZipFile(whl) as z:
    dest.write_bytes(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
PY
echo "$DEST"
