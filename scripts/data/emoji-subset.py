#!/usr/bin/env python3
"""A subset of the flat-emoji training set: N emoji drawn with a fixed seed, with all their
captions, as hard links (a diagnostic: can the VAR learn individual emoji when it sees each
caption many times?).

usage: emoji-subset.py EMOJI_FLAT_DIR OUT_DIR [N] [SEED]
"""
import json
import os
import random
import sys

src, out = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 50
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
rows = [json.loads(line) for line in open(os.path.join(src, "train", "metadata.jsonl"))]
random.seed(seed)
pick = random.sample(rows, n)
files = {r["file_name"] for r in pick}
for part, keep in (("train", None), ("train-captions", files)):
    os.makedirs(os.path.join(out, part), exist_ok=True)
    with open(os.path.join(out, part, "metadata.jsonl"), "w") as f:
        for line in open(os.path.join(src, part, "metadata.jsonl")):
            r = json.loads(line)
            if r["file_name"] not in files or (keep is None and r not in pick):
                continue
            f.write(line)
            dst = os.path.join(out, part, r["file_name"])
            if not os.path.exists(dst):
                os.link(os.path.join(src, part, r["file_name"]), dst)
print(f"{n} emoji under {out}")
