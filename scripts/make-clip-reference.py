#!/usr/bin/env python3
"""Writes tests/reference/clip_text.json: the CLIP text encoder's reference outputs.

* Tokens of fixed prompts from open_clip's SimpleTokenizer (the original CLIP BPE tokenizer,
  PyPI open-clip-torch), with its vocabulary `bpe_simple_vocab_16e6.txt.gz`, also written
  here as Hugging Face `vocab.json` + `merges.txt` (OUT_DIR) for the Rust tokenizer.
* Hidden states and pooled outputs of transformers' `CLIPTextModel` (small config) whose
  weights come from a formula both sides compute (see `weight()` and tests/clip_text.rs), so
  no weight file needs to be stored.

    python3 scripts/make-clip-reference.py OUT_DIR tests/reference/clip_text.json
"""
import gzip
import importlib.util
import json
import pathlib
import sys

import numpy as np
import torch
import transformers
from transformers import CLIPTextConfig, CLIPTextModel

out_dir, out_json = pathlib.Path(sys.argv[1]), sys.argv[2]
out_dir.mkdir(parents=True, exist_ok=True)
spec = importlib.util.find_spec("open_clip")
tok_path = pathlib.Path(spec.submodule_search_locations[0]) / "tokenizer.py"
ts = importlib.util.spec_from_file_location("oc_tokenizer", tok_path)
oc = importlib.util.module_from_spec(ts)
ts.loader.exec_module(oc)
bpe_path = oc.default_bpe()
tok = oc.SimpleTokenizer(bpe_path)

# The vocabulary as Hugging Face files (what CLIPTokenizer reads).
merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
(out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
vocab = {k: v for k, v in tok.encoder.items() if k not in ("<start_of_text>", "<end_of_text>")}
vocab["<|startoftext|>"] = tok.encoder["<start_of_text>"]
vocab["<|endoftext|>"] = tok.encoder["<end_of_text>"]
(out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))

PROMPTS = [
    "a photo of a cat",
    "A RED apple, on a table!",
    "Café crème — naïve résumé",
    "it's 3.14 o'clock & they've gone",
    "emoji 😺🍎 and CJK 数字",
    "  spaces\tand\nlines  ",
    "“curly quotes” and &amp; entities",
    "x",
    "a very long prompt " * 30,
]
ids = [tok([p], context_length=77)[0].tolist() for p in PROMPTS]

cfg = CLIPTextConfig(
    vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
)
model = CLIPTextModel(cfg).eval()
M = (1 << 64) - 1


def splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & M
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & M
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & M
    return x ^ (x >> np.uint64(31))


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M
    return h


def weight(key, shape):
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        x = splitmix(np.uint64(fnv1a(key)) ^ np.arange(n, dtype=np.uint64))
    r = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2 - 1
    if "layer_norm" in key and key.endswith("weight"):
        v = 1 + 0.1 * r
    elif key.endswith("bias"):
        v = 0.02 * r
    elif "embedding" in key:
        v = 0.5 * r
    else:
        v = r * np.sqrt(3.0 / shape[1])
    return torch.tensor(v.reshape(shape), dtype=torch.float32)


sd = {k: weight(k, tuple(v.shape)) for k, v in model.state_dict().items() if "position_ids" not in k}
missing = model.load_state_dict(sd, strict=False)
assert not missing.unexpected_keys, missing
with torch.no_grad():
    batch = torch.tensor([i for i in ids])
    lens = [len([t for t in i if t != 0]) for i in ids]
    res = [model(input_ids=torch.tensor([i[:n]])) for i, n in zip(ids, lens)]
json.dump(
    {
        "made_with": {"transformers": transformers.__version__, "torch": torch.__version__,
                      "tokenizer": "open_clip SimpleTokenizer (open-clip-torch 3.2.0)"},
        "config": cfg.to_dict(),
        "keys": sorted(sd.keys()),
        "prompts": PROMPTS,
        "ids": [i[:n] for i, n in zip(ids, lens)],
        "pooled": [[round(float(x), 7) for x in r.pooler_output[0]] for r in res],
        "last_hidden_first_last": [
            [[round(float(x), 7) for x in r.last_hidden_state[0, 0]], [round(float(x), 7) for x in r.last_hidden_state[0, -1]]]
            for r in res
        ],
    },
    open(out_json, "w"),
)
print(f"wrote {out_json} and {out_dir}/vocab.json, merges.txt")
