#!/usr/bin/env python3
"""Where an emoji VAR goes wrong: its first scales or its later ones? Each row is one everyday
prompt: the real emoji, then four images for each K, drawn with the real emoji's first K scales
kept and the rest sampled for the prompt (`native-trainer edit --keep-scales K`; K = 0 is plain
`sample`). If the images turn into the emoji once a few coarse scales are given, the model's
later scales are fine and its first ones are what it gets wrong.

    python3 scripts/emoji-prefix-grid.py NATIVE_TRAINER VAR VAE TEXT_ENCODER EMOJI_TRAIN_DIR OUT.png [K,K,...]

VAR and VAE are model files (a run's checkpoint works). Sampling: cfg 3, top-k 50, top-p 0.9
(the emoji pack's settings), seed 0. Needs pillow (`pip install pillow`).
"""
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image

B, VAR, VAE, TEXT, TRAIN, OUT = sys.argv[1:7]
KS = [int(k) for k in (sys.argv[7] if len(sys.argv) > 7 else '0,2,4,6').split(',')]
PROMPTS = ['red apple', 'cat face', 'rocket', 'pizza', 'flag: Japan', 'dog face', 'sun', 'ghost']
N, S, GAP = 4, 64, 8
SETTINGS = ['--cfg', '3', '--top-k', '50', '--top-p', '0.9', '--seed', '0', '--n', str(N)]

files = {}
with open(os.path.join(TRAIN, 'metadata.jsonl')) as f:
    for line in f:
        row = json.loads(line)
        files.setdefault(row['text'], row['file_name'])

tmp = tempfile.mkdtemp(prefix='nextscale-prefix-')
grid = Image.new('RGB', (S + len(KS) * (GAP + N * S), len(PROMPTS) * S), 'white')
for r, prompt in enumerate(PROMPTS):
    real = os.path.join(TRAIN, files[prompt])
    real_im = Image.open(real).convert('RGBA').resize((S, S))
    grid.paste(real_im, (0, r * S), real_im)
    for j, k in enumerate(KS):
        out = os.path.join(tmp, f'{r}-{k}')
        model = ['--var', VAR, '--vae', VAE, '--text-encoder', TEXT, '--prompt', prompt]
        if k == 0:
            cmd = [B, 'sample', *model, *SETTINGS, '--out-dir', out]
        else:
            cmd = [B, 'edit', *model, '--image', real, '--keep-scales', str(k), *SETTINGS,
                   '--out-dir', out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i, name in enumerate(sorted(os.listdir(out))[:N]):
            im = Image.open(os.path.join(out, name)).convert('RGB')
            grid.paste(im, (S + GAP + j * (GAP + N * S) + i * S, r * S))
grid.quantize(256).save(OUT, optimize=True)  # 256 colours: a third of the bytes, same picture
print(f'wrote {OUT}: rows {PROMPTS}, columns K = {KS}')
