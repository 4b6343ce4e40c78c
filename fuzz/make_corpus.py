#!/usr/bin/env python3
"""Writes the pack regression corpus (tests/corpus/pack/) from the format spec alone
(docs/pack-format.md), independently of the Rust writer: a valid minimal pack holding each
storage kind, and damaged variants that a reader must reject without crashing."""
import json, os, struct, zlib

OUT = os.path.join(os.path.dirname(__file__), '..', 'tests', 'corpus', 'pack')
os.makedirs(OUT, exist_ok=True)

def f16(x):
    return struct.pack('<e', x)

def encode(vals, storage):
    if storage == 'f32':
        return b''.join(struct.pack('<f', v) for v in vals)
    if storage == 'f16':
        return b''.join(f16(v) for v in vals)
    qmax = 127 if storage == 'q8' else 7
    blocks = [vals[i:i + 32] for i in range(0, len(vals), 32)]
    scales = [struct.unpack('<e', f16(max(abs(v) for v in b) / qmax))[0] for b in blocks]
    out = b''.join(f16(s) for s in scales)
    codes = []
    for b, s in zip(blocks, scales):
        codes += [0 if s == 0 else max(-qmax, min(qmax, round(v / s))) for v in b]
    if storage == 'q8':
        return out + bytes((c & 0xff) for c in codes)
    nib = [c + 8 for c in codes] + ([8] if len(codes) % 2 else [])
    return out + bytes(nib[i] | (nib[i + 1] << 4) for i in range(0, len(nib), 2))

pn = [1, 2, 3, 4, 5, 6, 8]
var = dict(depth=2, embed_dim=128, num_heads=2, mlp_ratio=4.0, vocab_size=512, cvae=16,
           num_classes=10, norm_eps=1e-6, patch_nums=pn)
vae = dict(vocab_size=512, z_channels=16, ch=32, ch_mult=[1, 1, 2, 2], num_res_blocks=1,
           in_channels=3, using_sa=True, using_mid_sa=True, share_quant_resi=4, quant_resi=0.5,
           beta=0.25, patch_nums=pn)
tensors, blobs, off = [], [], 0
for i, storage in enumerate(['f32', 'f16', 'q8', 'q4']):
    vals = [((k * 37 + i * 11) % 23 - 11) / 8.0 for k in range(70)]
    blob = encode(vals, storage)
    tensors.append(dict(name=f't.{storage}', shape=[7, 10], storage=storage, offset=off,
                        length=len(blob), crc32=zlib.crc32(blob)))
    blobs.append(blob)
    off = (off + len(blob) + 63) // 64 * 64
header = json.dumps(dict(var=var, vae=vae, class_names=None, meta={'by': 'make_corpus.py'},
                         tensors=tensors)).encode()
start = (16 + len(header) + 63) // 64 * 64
pack = bytearray(b'NXSPACK\0' + struct.pack('<II', 1, len(header)) + header)
pack += bytes(start - len(pack))
for t, blob in zip(tensors, blobs):
    pack += bytes(start + t['offset'] - len(pack))
    pack += blob
open(os.path.join(OUT, 'valid-minimal.nsp'), 'wb').write(pack)

def variant(name, b):
    open(os.path.join(OUT, name), 'wb').write(bytes(b))

variant('truncated-header.nsp', pack[:40])
variant('truncated-data.nsp', pack[:-5])
flipped = bytearray(pack); flipped[start + 3] ^= 0xff
variant('flipped-data.nsp', flipped)
variant('huge-header-length.nsp', pack[:12] + struct.pack('<I', 0xffffffff) + pack[16:])
variant('bad-version.nsp', pack[:8] + struct.pack('<I', 99) + pack[12:])

def v2(name, extra):
    h = json.loads(header); h.update(extra)
    hb = json.dumps(h).encode()
    s2 = (16 + len(hb) + 63) // 64 * 64
    b = bytearray(b'NXSPACK\0' + struct.pack('<II', 2, len(hb)) + hb)
    b += bytes(s2 - len(b))
    b += pack[start:]
    variant(name, b)

# Version 2: recommended sampling settings; features a reader must know.
v2('valid-v2-sampling.nsp', dict(sampling=dict(cfg=3.0, top_k=50, top_p=0.9, **{'class': 4})))
v2('unknown-feature.nsp', dict(requires=['feature-from-the-future']))
v2('bad-sampling.nsp', dict(sampling=dict(cfg=-1.0, top_k=50, top_p=0.9)))
big = json.loads(header); big['tensors'][0]['shape'] = [2 ** 40, 2 ** 40]
h2 = json.dumps(big).encode()
variant('overflowing-shape.nsp', b'NXSPACK\0' + struct.pack('<II', 1, len(h2)) + h2)
off2 = json.loads(header); off2['tensors'][1]['offset'] = 2 ** 62
h3 = json.dumps(off2).encode()
variant('offset-past-end.nsp', b'NXSPACK\0' + struct.pack('<II', 1, len(h3)) + h3 + bytes(64))
top = json.loads(header); top['tensors'][0]['offset'] = 2 ** 64 - 64
h4 = json.dumps(top).encode()
variant('offset-at-address-top.nsp', b'NXSPACK\0' + struct.pack('<II', 1, len(h4)) + h4 + bytes(64))
variant('not-json.nsp', b'NXSPACK\0' + struct.pack('<II', 1, 4) + b'\xff\xfe{[')
variant('empty.nsp', b'')
print('wrote', len(os.listdir(OUT)), 'files to', OUT)
