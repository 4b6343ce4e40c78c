#!/usr/bin/env python3
"""How much the caption embeddings say about an image's first-scale token: counts the distinct
first tokens of a token folder (`native-trainer prepare` with captions) and fits a linear
softmax classifier from each caption's embedding to its first token (full-batch gradient
descent, 3,000 steps, on all captions), reporting its accuracy on those captions. The VAR's
own accuracy on the first token is the `acc_s0` column of its run's metrics.csv.

    python3 scripts/first-token-probe.py TOKENS_DIR

Needs numpy (`pip install numpy`).
"""
import glob
import json
import os
import struct
import sys

import numpy as np

d = sys.argv[1]
emb_file = glob.glob(os.path.join(d, 'text-embeddings-*.safetensors'))[0]
with open(emb_file, 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
meta = header['embeddings']
a, b = meta['data_offsets']
emb = np.frombuffer(data[a:b], dtype=np.float32).reshape(meta['shape']).astype(np.float64)

shard = sorted(glob.glob(os.path.join(d, 'tokens-*.nxtok')))
if len(shard) != 1:
    sys.exit('expected one token shard')
raw = open(shard[0], 'rb').read()
hlen = struct.unpack('<I', raw[12:16])[0]
th = json.loads(raw[16:16 + hlen])
length = sum(p * p for p in th['patch_nums'])
dtype = np.uint16 if th['token_bytes'] == 2 else np.uint32
tokens = np.frombuffer(raw[16 + hlen:], dtype=dtype).reshape(-1, length)
assert len(tokens) == len(emb), 'tokens and embeddings differ in count'

images = {tuple(t) for t in tokens}
first = np.array([t[0] for t in images])
codes, counts = np.unique(first, return_counts=True)
print(f'{len(tokens)} captions, {len(images)} distinct images; first-scale token: '
      f'{len(codes)} distinct values, the commonest on {counts.max()} images')

y = tokens[:, 0].astype(int)
classes, yi = np.unique(y, return_inverse=True)
w = np.zeros((emb.shape[1], len(classes)))
bias = np.zeros(len(classes))
for _ in range(3000):
    z = emb @ w + bias
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), yi] -= 1
    w -= 5.0 * emb.T @ p / len(y)
    bias -= 5.0 * p.mean(0)
acc = ((emb @ w + bias).argmax(1) == yi).mean()
majority = np.bincount(yi).max() / len(y)
print(f'linear probe, caption embedding -> first token: {acc:.1%} of the captions '
      f'(always the commonest: {majority:.1%})')
