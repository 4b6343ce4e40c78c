#!/usr/bin/env python3
"""Draws the editing pictures of the docs with `native-trainer edit` (the pictures are the
CLI's output, only laid out here):

  docs/models/edit-digits-halves.png   real MNIST test digits (one per class): the upper half
                                       kept, the lower half completed, 4 samples each; then the
                                       left half kept
  docs/models/edit-emoji-inpaint.png   shipped emoji: a painted region redrawn for a prompt

    python3 scripts/edit-pictures.py NATIVE_TRAINER MNIST_DIR [EMOJI_TEST_DIR]

Needs numpy and pillow (`pip install numpy pillow`).
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw

B, MNIST = sys.argv[1], sys.argv[2]
EMOJI = sys.argv[3] if len(sys.argv) > 3 else None
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'docs', 'models')
TMP = tempfile.mkdtemp(prefix='nextscale-edit-')
SCALE = 3


def idx(path):
    raw = open(path, 'rb').read()
    if raw[:2] == b'\x1f\x8b':
        raw = gzip.decompress(raw)
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def edit(pack, image, *args, n=4):
    out = os.path.join(TMP, f'e{abs(hash((image,) + args))}')
    subprocess.run([B, 'edit', '--pack', pack, '--image', image, '--n', str(n), '--out-dir', out, *args],
                   check=True, capture_output=True)
    return [Image.open(os.path.join(out, f)).convert('RGB') for f in sorted(os.listdir(out))]


def shade(img, keep):
    """The source with the regenerated part greyed out."""
    a = np.array(img.convert('RGB')).astype(np.float32)
    h, w = a.shape[:2]
    m = np.ones((h, w), bool)
    if keep == 'top':
        m[h // 2:] = False
    elif keep == 'left':
        m[:, w // 2:] = False
    a[~m] = a[~m] * 0.25 + 96
    return Image.fromarray(a.astype(np.uint8))


def sheet(rows, size, path, labels=None):
    cols = max(len(r) for r in rows)
    pad = 4
    W, H = cols * (size + pad) + pad, len(rows) * (size + pad) + pad
    sheet = Image.new('RGB', (W, H), (255, 255, 255))
    for y, row in enumerate(rows):
        for x, im in enumerate(row):
            sheet.paste(im.resize((size, size), Image.NEAREST), (pad + x * (size + pad), pad + y * (size + pad)))
    sheet.save(path)
    print('wrote', path)


# Digits: the first test digit of each class; keep its upper (then left) half.
images, labels = idx(os.path.join(MNIST, 't10k-images-idx3-ubyte')), idx(os.path.join(MNIST, 't10k-labels-idx1-ubyte'))
pack = os.path.join(ROOT, 'models', 'digits.nsp')
rows = []
for keep in ['top', 'left']:
    for c in range(10):
        i = int(np.nonzero(labels == c)[0][0])
        src = os.path.join(TMP, f'digit{c}.png')
        Image.fromarray(images[i]).save(src)
        outs = edit(pack, src, '--keep-half', keep, '--class', str(c), '--seed', str(c))
        rows.append([Image.open(src).convert('RGB'), shade(Image.open(src), keep)] + outs)
sheet(rows, 32 * SCALE, os.path.join(OUT, 'edit-digits-halves.png'))

# Emoji: paint a box over the centre of held-out emoji and redraw it for a prompt.
if EMOJI:
    pack = os.path.join(ROOT, 'models', 'emoji.nsp')
    mask = os.path.join(TMP, 'mask.png')
    m = Image.new('RGB', (64, 64), (0, 0, 0))
    ImageDraw.Draw(m).rectangle([16, 16, 47, 47], fill=(255, 255, 255))
    m.save(mask)
    meta = [json.loads(l) for l in open(os.path.join(EMOJI, 'metadata.jsonl'))]
    rows = []
    for r, prompt in zip(meta[::37][:4], ['red apple', 'sun', 'grinning face', 'fire']):
        src = os.path.join(EMOJI, r['file_name'])
        base = Image.open(src).convert('RGBA')
        white = Image.new('RGBA', base.size, (255, 255, 255, 255))
        white.alpha_composite(base)
        shown = white.convert('RGB').resize((64, 64), Image.LANCZOS)
        a = np.array(shown).astype(np.float32)
        a[16:48, 16:48] = a[16:48, 16:48] * 0.25 + 96
        outs = edit(pack, src, '--mask', mask, '--prompt', prompt, '--seed', '1')
        rows.append([white.convert('RGB'), Image.fromarray(a.astype(np.uint8))] + outs)
    sheet(rows, 64 * 2, os.path.join(OUT, 'edit-emoji-inpaint.png'))
