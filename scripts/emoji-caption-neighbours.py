#!/usr/bin/env python3
"""Where the held-out emoji names lie among the training captions, in the text encoder's
embedding space, and what a plain lookup would score: embeds every training caption and each
held-out emoji's label with `native-trainer embed-text` (unit-length MiniLM embeddings), then
reports
  - the cosine from each held-out label to its nearest training caption (median, percentiles);
  - the cosine from each training caption to its nearest other training caption;
  - the group accuracy of a lookup that answers a held-out label with the group of the emoji
    of its nearest training caption (and a majority vote of the k nearest), the figure the
    judge's group accuracy on generated images compares with.

    python3 scripts/emoji-caption-neighbours.py NATIVE_TRAINER MINILM_DIR EMOJI_FLAT_DIR

EMOJI_FLAT_DIR is the `emoji-flat` folder of `scripts/data/fetch.sh` (its captions.json).
Needs numpy (`pip install numpy`).
"""
import collections
import json
import os
import subprocess
import sys

import numpy as np

B, MINILM, DATA = sys.argv[1:4]
entries = json.load(open(os.path.join(DATA, 'captions.json')))
train = [(e['file'], c) for e in entries if e['split'] == 'train' for c in e['captions']]
test = [(e['file'], e['captions'][0]) for e in entries if e['split'] == 'test']
group = {e['file']: e['group'] for e in entries}


def embed(prompts):
    rows = []
    for i in range(0, len(prompts), 500):
        out = subprocess.run([B, 'embed-text', '--text-encoder', MINILM, '--', *prompts[i:i + 500]],
                             capture_output=True, text=True, check=True).stdout
        rows += json.loads(out)
    return np.array(rows, dtype=np.float64)


E = embed([c for _, c in train])
T = embed([c for _, c in test])
assert len(E) == len(train) and len(T) == len(test), 'one embedding per prompt'
S = T @ E.T
nearest = S.max(1)
print(f'{len(test)} held-out labels, {len(train)} training captions')
print('held-out label -> nearest training caption, cosine: median %.2f, 10th percentile %.2f, '
      '90th %.2f' % (np.median(nearest), np.percentile(nearest, 10), np.percentile(nearest, 90)))
SS = E @ E.T
np.fill_diagonal(SS, -np.inf)
print('training caption -> nearest other caption, cosine: median %.2f' % np.median(SS.max(1)))
order = np.argsort(-S, axis=1)
for k in (1, 5, 20):
    right = 0
    for i, row in enumerate(order[:, :k]):
        votes = collections.Counter(group[train[j][0]] for j in row)
        # Ties go to the nearest caption's group.
        best = max(votes.values())
        pick = next(group[train[j][0]] for j in row if votes[group[train[j][0]]] == best)
        right += pick == group[test[i][0]]
    print(f'lookup, {k} nearest caption(s): {100 * right / len(test):.1f} % of held-out labels in '
          'the right group')
