#!/usr/bin/env python3
"""A picture of what an emoji pack draws in each group: for every group, six training emoji
evenly spaced in file-name order (a fixed rule, not a choice), the real emoji above and the
pack's image for its label below (`native-trainer sample`, one image per label, seed 0).

    python3 scripts/emoji-by-group.py NATIVE_TRAINER PACK EMOJI_FLAT_DIR OUT.png

EMOJI_FLAT_DIR is the `emoji-flat` folder of `scripts/data/fetch.sh` (its captions.json and
train/). Needs Pillow.
"""
import collections
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image

B, PACK, DATA, OUT = sys.argv[1:5]
PER = 6
entries = json.load(open(os.path.join(DATA, 'captions.json')))
by_group = collections.defaultdict(list)
for e in sorted(entries, key=lambda e: e['file']):
    if e['split'] == 'train':
        by_group[e['group']].append(e)
groups = sorted(by_group)
picks = [[g[i * len(g) // PER] for i in range(PER)] for g in (by_group[k] for k in groups)]

with tempfile.TemporaryDirectory() as tmp:
    made = os.path.join(tmp, 'made.png')
    args = [B, 'sample', '--pack', PACK, '--n', '1', '--cols', str(PER), '--seed', '0',
            '--out', made]
    for row in picks:
        for e in row:
            args += ['--prompt', e['captions'][0]]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    gen = Image.open(made).convert('RGB')
    size = gen.width // PER
    pad = size // 8
    sheet = Image.new('RGB', (PER * size, len(groups) * (2 * size + pad)), 'white')
    for r, row in enumerate(picks):
        y = r * (2 * size + pad)
        for c, e in enumerate(row):
            real = Image.open(os.path.join(DATA, 'train', e['file'])).convert('RGBA')
            flat = Image.new('RGBA', real.size, 'white')
            flat.alpha_composite(real)
            sheet.paste(flat.convert('RGB').resize((size, size), Image.LANCZOS), (c * size, y))
            tile = gen.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
            sheet.paste(tile, (c * size, y + size))
    sheet.save(OUT, optimize=True)
for g, row in zip(groups, picks):
    print(f"{g}: " + ", ".join(e['captions'][0] for e in row))
