#!/usr/bin/env python3
"""How much a VAR depends on the exact weights of its VQ-VAE (docs/EMOJI-LOG.md, "What limits
the images"; run by `scripts/train-models.sh tokenizer-noise`).

  vqvae-noise.py perturb SRC DST SEED   moves every tensor that a q8 export stores as q8 codes
      (two or more dimensions, at least 1,024 values) by uniform noise within half a q8 step
      of its block of 32 values (step = the block's max |x| / 127): the size of q8 rounding.
  vqvae-noise.py compare A B            the share of equal tokens of two token folders
      (`prepare` outputs of the same images), overall and per scale, as JSON.
Needs numpy.
"""
import glob
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    tensors = {}
    for k, v in header.items():
        if v["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {k} is {v['dtype']}, only F32 is read")
        s, e = v["data_offsets"]
        tensors[k] = (v["shape"], np.frombuffer(b[8 + n + s : 8 + n + e], dtype="<f4").copy())
    return meta, tensors


def write_safetensors(path, meta, tensors):
    header, blobs, off = {}, [], 0
    for k, (shape, x) in tensors.items():
        raw = x.astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def perturb(src, dst, seed):
    meta, tensors = read_safetensors(src)
    rng = np.random.default_rng(seed)
    moved = 0
    for k, (shape, x) in tensors.items():
        if len(shape) >= 2 and x.size >= 1024 and x.size % 32 == 0:
            blocks = x.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127
            blocks += (rng.random(blocks.shape, dtype=np.float32) - 0.5) * step
            moved += 1
    write_safetensors(dst, meta, tensors)
    print(f"moved {moved} of {len(tensors)} tensors by q8-sized noise (seed {seed}) into {dst}")


def read_tokens(folder):
    shards = sorted(glob.glob(folder + "/*.nxtok"))
    if not shards:
        raise SystemExit(f"{folder}: no .nxtok shards")
    header, parts = None, []
    for path in shards:
        b = open(path, "rb").read()
        if b[:8] != b"NXSTOKS\0":
            raise SystemExit(f"{path}: not a token shard")
        _, hl = struct.unpack("<II", b[8:16])
        header = json.loads(b[16 : 16 + hl])
        dtype = {2: "<u2", 4: "<u4"}[header["token_bytes"]]
        parts.append(np.frombuffer(b[16 + hl :], dtype=dtype))
    pn = header["patch_nums"]
    length = sum(p * p for p in pn)
    return pn, np.concatenate(parts).reshape(-1, length)


def compare(a, b):
    pn, x = read_tokens(a)
    pn2, y = read_tokens(b)
    if pn != pn2 or x.shape != y.shape:
        raise SystemExit("the two folders hold different scales or counts")
    eq = x == y
    out = {"sequences": int(x.shape[0]), "equal": float(eq.mean()), "per_scale": {}}
    o = 0
    for p in pn:
        out["per_scale"][f"{p}x{p}"] = float(eq[:, o : o + p * p].mean())
        o += p * p
    out["sequences_all_equal"] = float(eq.all(axis=1).mean())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "perturb":
        perturb(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
