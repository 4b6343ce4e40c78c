#!/usr/bin/env bash
# Builds native-trainer with the CUDA backend without network access to GitHub.
#
# burn's CUDA backend pulls in cubecl's LLVM-based compiler, whose build script downloads a
# prebuilt LLVM ("tracel-llvm") from GitHub. Where that is impossible, Debian's LLVM 22
# stands in: its packages are unpacked (no root needed beyond apt-get download), the
# bundler's install marker is created, and its `llvm-config` becomes a wrapper around
# Debian's. Kernels are compiled at run time by NVRTC (the `cuda` feature selects it).
#
#   native-trainer/scripts/build-cuda.sh            # → $CARGO_TARGET_DIR/release/native-trainer
#   FEATURES=cuda-autotune native-trainer/scripts/build-cuda.sh   # the same with burn's autotuning
#
# At run time the binary needs the NVIDIA driver (libcuda.so.1), libnvrtc.so.13 on
# LD_LIBRARY_PATH and the CUDA headers under $CUDA_PATH/include (see docs/TRAINING.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
# A separate target dir: the CUDA feature set must not invalidate the default build.
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$NEXTSCALE_CACHE/target-cuda}"

# The bundler version cargo resolved (its marker directory carries it).
VER=$(awk '/^name = "tracel-llvm-bundler"/{getline; gsub(/"/,"",$3); print $3}' "$ROOT/Cargo.lock")
if [ -z "$VER" ]; then
  echo "tracel-llvm-bundler is not in Cargo.lock; nothing to stand in for" >&2
  exit 1
fi
LLVM=22
STAND="$NEXTSCALE_CACHE/llvm-standin-$LLVM"
ARCH_LIB="$STAND/usr/lib/$(uname -m)-linux-gnu"
if [ ! -x "$STAND/usr/lib/llvm-$LLVM/bin/llvm-config" ]; then
  echo "unpacking Debian's LLVM $LLVM into $STAND"
  mkdir -p "$STAND/debs"
  (cd "$STAND/debs" && apt-get download "llvm-$LLVM-dev" "llvm-$LLVM" "libllvm$LLVM" \
    "libpolly-$LLVM-dev" libzstd-dev libz3-4 libz3-dev libxml2-dev libxml2)
  for f in "$STAND"/debs/*.deb; do dpkg -x "$f" "$STAND"; done
fi
# Only the static zstd in our search path: `-lzstd` then links it into the binary.
rm -f "$ARCH_LIB/libzstd.so"

DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
DEST="$DATA/tracel/tracel-llvm-$VER"
mkdir -p "$DEST/bin"
cat > "$DEST/bin/llvm-config" <<WRAP
#!/bin/sh
# Stand-in for the tracel-llvm bundle: Debian's llvm-config, with the absolute libz3 path
# turned into -lz3 (the bundler expects bare library names).
export LD_LIBRARY_PATH="$ARCH_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
out=\$("$STAND/usr/lib/llvm-$LLVM/bin/llvm-config" "\$@") || exit \$?
printf '%s\n' "\$out" | sed -e 's#[^ ]*/libz3\.so[^ ]*#-lz3#g'
WRAP
chmod +x "$DEST/bin/llvm-config"
touch "$DEST/.tracel-llvm-installed"
"$DEST/bin/llvm-config" --version >/dev/null

export RUSTFLAGS="${RUSTFLAGS:-} -L native=$ARCH_LIB"
# Without nvcc here, cudarc would bind the newest CUDA API it knows (13.4); the GPU machines'
# driver 580 is CUDA 13.0, so bind that unless told otherwise (never set it empty).
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
cd "$ROOT"
# FEATURES=cuda-autotune adds burn's autotuning (native-trainer/Cargo.toml)
cargo build --release -p native-trainer --no-default-features --features "${FEATURES:-cuda}"
echo "built $CARGO_TARGET_DIR/release/native-trainer (CUDA, features ${FEATURES:-cuda})"
