#!/usr/bin/env python3
"""Reference time of the official VAR's teacher-forced forward on PyTorch (CPU), for the same
workload as benches/cpu.rs: depth N (width 64N, N heads, 1,000 classes, 4,096 codes of width 32,
the 680 tokens of 256 px), batch 2, float32, no gradients; median of 5 runs after a warm-up.
    python3 bench/pytorch_forward.py OFFICIAL_VAR_REPO [--depths 2,4] [--threads 1]
OFFICIAL_VAR_REPO is a checkout of github.com/FoundationVision/VAR (not part of this project).
Prints one line per depth: `d<N> <seconds>`.
"""
import argparse
import statistics
import sys
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("repo")
ap.add_argument("--depths", default="2,4")
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()
sys.path.insert(0, a.repo)
torch.set_num_threads(a.threads)
torch.manual_seed(0)

from models.var import VAR  # noqa: E402
from models.vqvae import VQVAE  # noqa: E402

pn = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
L = sum(p * p for p in pn)
print(f"torch {torch.__version__}, {a.threads} threads")
for depth in (int(d) for d in a.depths.split(",")):
    vae = VQVAE(vocab_size=4096, z_channels=32, ch=160, v_patch_nums=pn, test_mode=True)
    var = VAR(vae_local=vae, num_classes=1000, depth=depth, embed_dim=64 * depth, num_heads=depth,
              attn_l2_norm=True, patch_nums=pn, flash_if_available=True, fused_if_available=False).eval()
    var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    labels = torch.tensor([3, 1000])
    x = torch.zeros(2, L - 1, 32)
    with torch.no_grad():
        var(labels, x)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            var(labels, x)
            runs.append(time.perf_counter() - t0)
    print(f"d{depth} {statistics.median(runs):.4f}")
