#!/usr/bin/env python3
"""A picture of what an emoji pack draws in each group: for every group, six training emoji
evenly spaced in file-name order (a fixed rule, not a choice), the real emoji above and the
pack's image for its label below (`native-trainer sample`, one image per label, seed 0).

    python3 scripts/emoji-by-group.py NATIVE_TRAINER PACK EMOJI_FLAT_DIR OUT.png

It also prints, for each image, the rank of its own emoji among all the training emoji by
16×16 pixel means (1 = the nearest; the measure of `evaluate --rank`), so the picture shows
what the figures mean. EMOJI_FLAT_DIR is the `emoji-flat` folder of `scripts/data/fetch.sh`
(its captions.json and train/). Needs numpy and Pillow.
"""
import collections
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

if len(sys.argv) != 5:
    sys.exit(__doc__)
B, PACK, DATA, OUT = sys.argv[1:5]
PER = 6
entries = json.load(open(os.path.join(DATA, 'captions.json')))
by_group = collections.defaultdict(list)
for e in sorted(entries, key=lambda e: e['file']):
    if e['split'] == 'train':
        by_group[e['group']].append(e)
groups = sorted(by_group)
if any(len(by_group[g]) < PER for g in groups):
    sys.exit(f"every group needs at least {PER} training emoji")
picks = [[g[i * len(g) // PER] for i in range(PER)] for g in (by_group[k] for k in groups)]


def real(file, size):
    im = Image.open(os.path.join(DATA, 'train', file)).convert('RGBA')
    flat = Image.new('RGBA', im.size, 'white')
    flat.alpha_composite(im)
    return flat.convert('RGB').resize((size, size), Image.LANCZOS)


def means16(im):
    """16×16 box means per channel, as `evaluate --rank` takes them."""
    a = np.asarray(im, dtype=np.float64)
    s = a.shape[0]
    f = s // 16
    return a.reshape(16, f, 16, f, 3).mean(axis=(1, 3)).transpose(2, 0, 1).ravel()


with tempfile.TemporaryDirectory() as tmp:
    made = os.path.join(tmp, 'made.png')
    args = [B, 'sample', '--pack', PACK, '--n', '1', '--cols', str(PER), '--seed', '0',
            '--out', made]
    for row in picks:
        for e in row:
            args += ['--prompt', e['captions'][0]]
    done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{B} sample failed:\n{done.stderr}")
    gen = Image.open(made).convert('RGB')
size = gen.width // PER
if size % 16:
    sys.exit(f"images of {size} px: the 16×16 means need a multiple of 16")
train = sorted(e['file'] for g in groups for e in by_group[g])
cands = np.stack([means16(real(f, size)) for f in train])
pad = size // 8
sheet = Image.new('RGB', (PER * size, len(groups) * (2 * size + pad)), 'white')
nearest = 0
for r, (g, row) in enumerate(zip(groups, picks)):
    y = r * (2 * size + pad)
    ranks = []
    for c, e in enumerate(row):
        sheet.paste(real(e['file'], size), (c * size, y))
        tile = gen.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
        sheet.paste(tile, (c * size, y + size))
        d = ((cands - means16(tile)) ** 2).sum(axis=1)
        rank = 1 + int((d < d[train.index(e['file'])]).sum())
        ranks.append(rank)
        nearest += rank == 1
    print(f"{g}: " + ", ".join(f"{e['captions'][0]} ({k})" for e, k in zip(row, ranks)))
sheet.save(OUT, optimize=True)
print(f"{nearest} of {len(groups) * PER} images are the nearest of all {len(train)} training emoji "
      "to their own (by 16×16 pixel means)")
