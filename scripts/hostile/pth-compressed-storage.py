#!/usr/bin/env python3
"""Writes a hostile `.pth`: the golden d2 VAR with `class_emb.weight` a small view of a 2 GiB
storage, every ZIP entry deflated (about 7 MB on disk). A reader that inflates whole storages
needs over 2 GiB for it; nextscale reads only the bytes the tensor covers.

usage: scripts/hostile/pth-compressed-storage.py OUT.pth   (needs torch; about 2 GiB of RAM
while writing)
check: /usr/bin/time -v native-trainer sample --var OUT.pth --vae VQ --class 1 --out x.png
       (VQ from `native-trainer fixture vqvae --out VQ`): the peak RSS matches the plain file's."""
import os
import sys
import tempfile
import zipfile

import torch

out = sys.argv[1]
golden = os.environ.get('NEXTSCALE_GOLDEN_DIR', os.path.join(os.path.dirname(__file__), '../../../shared/var-golden'))
sd = torch.load(os.path.join(golden, 'var_d2_random.pth'), map_location='cpu', weights_only=True)
t = sd['class_emb.weight']
big = torch.zeros(2**29)  # 2 GiB of float32
big[: t.numel()] = t.flatten()
sd['class_emb.weight'] = big[: t.numel()].view(t.shape)
with tempfile.TemporaryDirectory() as d:
    raw = os.path.join(d, 'raw.pth')
    torch.save(sd, raw)
    with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(out, 'w', compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
print(f'{out}: {os.path.getsize(out)} bytes')
