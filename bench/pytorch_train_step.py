#!/usr/bin/env python3
"""Reference training throughput of the official VAR modules on PyTorch (CPU), for the same
configurations and batch sizes as bench/train.sh.

    python3 bench/pytorch_train_step.py OFFICIAL_VAR_REPO [--preset tiny|digits|emoji|d16] [--threads 2]
                                        [--device cpu|cuda] [--batch N]

OFFICIAL_VAR_REPO is a checkout of github.com/FoundationVision/VAR (not part of this project).
The VQ-VAE step composes the official Encoder, Decoder and VectorQuantizer2 with the preset's
sizes (native-trainer/presets/vqvae-<preset>.toml: ch 32, ch_mult 1,1,2, one res block, no
attention; its codes, code width, patches, image size and batch): L1 + VQ loss, backward,
AdamW. The VAR step is the official VAR (var-<preset>.toml: depth, width, heads; L2-normalised
attention through PyTorch's fused scaled_dot_product_attention) teacher-forced on random tokens:
cross-entropy, backward, global-norm clip 2.0, AdamW(0.9, 0.95). `dN` (any depth) is the official
model of that depth (width 64N, N heads, 4,096 codes of width 32, 680 tokens), VAR step only.
"""
import argparse
import sys
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("repo")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--preset", default="tiny")
ap.add_argument("--device", default="cpu")
ap.add_argument("--batch", type=int, default=0, help="VAR batch size (default: the preset's)")
a = ap.parse_args()
sys.path.insert(0, a.repo)
torch.set_num_threads(a.threads)
torch.manual_seed(0)
# The official quantizer asks for the world size while training: one local process.
torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29517", rank=0, world_size=1)
dev = torch.device(a.device)

from models.basic_vae import Decoder, Encoder  # noqa: E402
from models.quant import VectorQuantizer2  # noqa: E402
from models.var import VAR  # noqa: E402
from models.vqvae import VQVAE  # noqa: E402

# The presets' sizes (native-trainer/presets/vqvae-*.toml and var-*.toml).
OFFICIAL = a.preset.startswith("d") and a.preset[1:].isdigit()
P = dict(px=256, vq_batch=0, codes=4096, cvae=32, pn=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), depth=int(a.preset[1:]),
         width=64 * int(a.preset[1:]), heads=int(a.preset[1:]), batch=32) if OFFICIAL else {
    "tiny": dict(px=32, vq_batch=8, codes=64, cvae=8, pn=(1, 2, 4, 8), depth=2, width=64, heads=2, batch=16),
    "digits": dict(px=32, vq_batch=16, codes=256, cvae=16, pn=(1, 2, 3, 4, 6, 8), depth=3, width=96, heads=3, batch=32),
    "emoji": dict(px=64, vq_batch=16, codes=512, cvae=16, pn=(1, 2, 3, 4, 6, 8, 11, 16), depth=3, width=96, heads=3,
                  batch=16),
}[a.preset]
if a.batch:
    P["batch"] = a.batch
pn = P["pn"]


class TinyVQ(torch.nn.Module):
    def __init__(self):
        super().__init__()
        z = P["cvae"]
        dd = dict(dropout=0.0, ch=32, z_channels=z, in_channels=3, ch_mult=(1, 1, 2), num_res_blocks=1,
                  using_sa=False, using_mid_sa=False)
        self.encoder = Encoder(double_z=False, **dd)
        self.decoder = Decoder(**dd)
        self.quantize = VectorQuantizer2(vocab_size=P["codes"], Cvae=z, using_znorm=False, beta=0.25,
                                         default_qresi_counts=0, v_patch_nums=pn, quant_resi=0.5, share_quant_resi=4)
        self.quant_conv = torch.nn.Conv2d(z, z, 3, padding=1)
        self.post_quant_conv = torch.nn.Conv2d(z, z, 3, padding=1)

    def forward(self, x):
        f_hat, _, vq = self.quantize(self.quant_conv(self.encoder(x)))
        return self.decoder(self.post_quant_conv(f_hat)), vq


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(step, n):
    for _ in range(3):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - t0) / n


if not OFFICIAL:
    vq = TinyVQ().to(dev).train()
    opt = torch.optim.AdamW(vq.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    x = torch.rand(P["vq_batch"], 3, P["px"], P["px"], device=dev) * 2 - 1


def vq_step():
    rec, vql = vq(x)
    loss = (rec - x).abs().mean() + vql
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vq.parameters(), 2.0)
    opt.step()


t_vq = timed(vq_step, a.steps) if not OFFICIAL else None

vae = VQVAE(vocab_size=P["codes"], z_channels=P["cvae"], ch=32, v_patch_nums=pn, test_mode=True)
var = VAR(vae_local=vae, num_classes=4, depth=P["depth"], embed_dim=P["width"], num_heads=P["heads"],
          attn_l2_norm=True, patch_nums=pn, flash_if_available=True, fused_if_available=False).to(dev).train()
var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-3, init_head=0.02, init_std=-1)
params = [p for p in var.parameters() if p.requires_grad]
vopt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
L = sum(p * p for p in pn)
B = P["batch"]
V = P["codes"]
labels = torch.randint(0, 4, (B,), device=dev)
gt = torch.randint(0, V, (B, L), device=dev)
xin = torch.randn(B, L - 1, P["cvae"], device=dev)


def var_step():
    logits = var(labels, xin)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, V), gt.view(-1))
    vopt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 2.0)
    vopt.step()


t_var = timed(var_step, a.steps)
print(f"torch {torch.__version__}, {a.threads} threads, {a.device}")
nb = P["vq_batch"]
if t_vq is not None:
    print(f"official VQ-VAE modules, {a.preset}, {P['px']} px, batch {nb}: {nb / t_vq:.1f} images/s ({t_vq * 1e3:.1f} ms/step)")
print(f"official VAR, {a.preset}, {L} tokens, batch {B}: {B * L / t_var:.1f} tokens/s ({t_var * 1e3:.1f} ms/step)")
