#!/usr/bin/env python3
"""Reference sampling time of the official VAR on PyTorch: one class-conditional 256-px image
from a random-weight official model of the given depth (the official VQ-VAE architecture, also
random), with CFG, top-k and top-p as `native-trainer sample` is run beside it.

    python3 bench/pytorch_sample.py OFFICIAL_VAR_REPO [--depth 16] [--device cpu|cuda] [--threads 2]

Prints the seconds per image (median of --runs after one warm-up), sampling and decoding
together (`autoregressive_infer_cfg` returns the decoded image), as `seconds per image: S`, and
the VQ-VAE decode of one 16×16 latent to 256 px alone, as `seconds per decode: S`. Random
weights: the time does not depend on their values.
"""
import argparse
import statistics
import sys
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("repo")
ap.add_argument("--depth", type=int, default=16)
ap.add_argument("--device", default="cpu")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--cls", type=int, default=207)
ap.add_argument("--cfg", type=float, default=4.0)
ap.add_argument("--top-k", type=int, default=900)
ap.add_argument("--top-p", type=float, default=0.96)
a = ap.parse_args()
sys.path.insert(0, a.repo)
torch.set_num_threads(a.threads)
from models import build_vae_var  # noqa: E402

dev = torch.device(a.device)
torch.manual_seed(0)
vae, var = build_vae_var(device=dev, depth=a.depth, flash_if_available=True, fused_if_available=True)
# build_vae_var turns off the layers' own initialisation for speed and then initialises the VAR
# alone (the VQ-VAE's weights normally come from its checkpoint), so the VQ-VAE's convolutions
# keep never-initialised (torch.empty) memory, which can hold anything, NaN included: on an
# H200 (2026-12-04) the sampled probabilities were NaN. Give every VQ-VAE parameter random values.
with torch.no_grad():
    for p in vae.parameters():
        p.normal_(0.0, 0.02)
vae.eval()
var.eval()


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def one(seed):
    with torch.inference_mode():
        t0 = time.perf_counter()
        img = var.autoregressive_infer_cfg(B=1, label_B=a.cls, g_seed=seed, cfg=a.cfg, top_k=a.top_k,
                                           top_p=a.top_p)
        sync()
        assert img.shape == (1, 3, 256, 256)
        return time.perf_counter() - t0


def decode():
    f_hat = torch.randn(1, 32, 16, 16, device=dev)
    with torch.inference_mode():
        t0 = time.perf_counter()
        img = vae.fhat_to_img(f_hat)
        sync()
        assert img.shape == (1, 3, 256, 256)
        return time.perf_counter() - t0


one(0)
times = [one(i + 1) for i in range(a.runs)]
decode()
dec = [decode() for _ in range(a.runs)]
n_params = sum(p.numel() for p in var.parameters())
print(f"torch {torch.__version__}, {a.threads} threads, {a.device}, VAR d{a.depth} ({n_params / 1e6:.1f} M parameters)")
print(f"seconds per image: {statistics.median(times):.3f} (runs: {', '.join(f'{t:.3f}' for t in times)})")
print(f"seconds per decode: {statistics.median(dec):.3f} (runs: {', '.join(f'{t:.3f}' for t in dec)})")
