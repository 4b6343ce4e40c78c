#!/usr/bin/env python3
"""Reference training throughput of the official VAR modules on PyTorch (CPU), for the same
tiny configurations and batch sizes as bench/train.sh.

    python3 bench/pytorch_train_step.py OFFICIAL_VAR_REPO [--threads 2]

OFFICIAL_VAR_REPO is a checkout of github.com/FoundationVision/VAR (not part of this project).
The VQ-VAE step composes the official Encoder, Decoder and VectorQuantizer2 with the tiny
preset's sizes (ch 32, ch_mult 1,1,2, one res block, no attention, 64 codes of width 8,
patches 1,2,4,8; 32 px, batch 8): L1 + VQ loss, backward, AdamW. The VAR step is the official
VAR (depth 2, width 64, 2 heads, 4 classes, L2-normalised attention) teacher-forced on random
tokens, batch 16: cross-entropy, backward, global-norm clip 2.0, AdamW(0.9, 0.95).
"""
import argparse
import sys
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("repo")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=30)
a = ap.parse_args()
sys.path.insert(0, a.repo)
torch.set_num_threads(a.threads)
torch.manual_seed(0)
# The official quantizer asks for the world size while training: one local process.
torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29517", rank=0, world_size=1)

from models.basic_vae import Decoder, Encoder  # noqa: E402
from models.quant import VectorQuantizer2  # noqa: E402
from models.var import VAR  # noqa: E402
from models.vqvae import VQVAE  # noqa: E402

pn = (1, 2, 4, 8)


class TinyVQ(torch.nn.Module):
    def __init__(self):
        super().__init__()
        dd = dict(dropout=0.0, ch=32, z_channels=8, in_channels=3, ch_mult=(1, 1, 2), num_res_blocks=1,
                  using_sa=False, using_mid_sa=False)
        self.encoder = Encoder(double_z=False, **dd)
        self.decoder = Decoder(**dd)
        self.quantize = VectorQuantizer2(vocab_size=64, Cvae=8, using_znorm=False, beta=0.25,
                                         default_qresi_counts=0, v_patch_nums=pn, quant_resi=0.5, share_quant_resi=4)
        self.quant_conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.post_quant_conv = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        f_hat, _, vq = self.quantize(self.quant_conv(self.encoder(x)))
        return self.decoder(self.post_quant_conv(f_hat)), vq


def timed(step, n):
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


vq = TinyVQ().train()
opt = torch.optim.AdamW(vq.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
x = torch.rand(8, 3, 32, 32) * 2 - 1


def vq_step():
    rec, vql = vq(x)
    loss = (rec - x).abs().mean() + vql
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vq.parameters(), 2.0)
    opt.step()


t_vq = timed(vq_step, a.steps)

vae = VQVAE(vocab_size=64, z_channels=8, ch=32, v_patch_nums=pn, test_mode=True)
var = VAR(vae_local=vae, num_classes=4, depth=2, embed_dim=64, num_heads=2, attn_l2_norm=True, patch_nums=pn,
          flash_if_available=False, fused_if_available=False).train()
var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-3, init_head=0.02, init_std=-1)
params = [p for p in var.parameters() if p.requires_grad]
vopt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
L = sum(p * p for p in pn)
B = 16
labels = torch.randint(0, 4, (B,))
gt = torch.randint(0, 64, (B, L))
xin = torch.randn(B, L - 1, 8)


def var_step():
    logits = var(labels, xin)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, 64), gt.view(-1))
    vopt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 2.0)
    vopt.step()


t_var = timed(var_step, a.steps)
print(f"torch {torch.__version__}, {a.threads} threads")
print(f"official VQ-VAE modules, tiny, 32 px, batch 8: {8 / t_vq:.1f} images/s ({t_vq * 1e3:.1f} ms/step)")
print(f"official VAR, tiny, 85 tokens, batch 16: {B * L / t_var:.1f} tokens/s ({t_var * 1e3:.1f} ms/step)")
