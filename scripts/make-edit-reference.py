#!/usr/bin/env python3
"""Writes tests/reference/edit_d2.safetensors: zero-shot edits computed by the official VAR
code (FoundationVision/VAR, models/ unmodified) on the golden d2 weights and the procedural
official VQ-VAE, following the masked sampling loop of the official `demo_zero_shot_edit`
notebook: at every scale the sampled embedding map is mixed with the source's,
`gt * m + h * (1 - m)`, where `m` is the keep mask bilinearly resized (align_corners=False),
thresholded at > 0.5 and all-keep where pn^2 <= 3, before f_hat and the next scale's input.

    python3 scripts/make-edit-reference.py VAR_REPO GOLDEN_DIR VQVAE.safetensors OUT.safetensors

VAR_REPO: a checkout of the official repository (its `models` package is imported).
GOLDEN_DIR: ../shared/var-golden (var_d2_random.pth).
VQVAE.safetensors: `native-trainer fixture vqvae --out VQVAE.safetensors` (the procedural
weights of the golden vectors, bit for bit).
Needs `pip install torch numpy safetensors`. The project's tests read the stored file; they do
not need Python.

Cases (all on one source image, B = 2 images per case):
  inpaint   class 207 and the null class, the centre half regenerated, greedy (top_k=1)
  outpaint  null class, only the centre kept, cfg 4, greedy
  half      class 3, top half kept, sampled (top-k 900, top-p 0.96): the official draws are
            stored so the Rust test can replay them and compare the mixing exactly
For each case: the mask, the source tokens, per scale the drawn tokens (before mixing) and
the tokens after mixing, and the final f_hat.
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from safetensors.torch import load_file

var_repo, golden, vqvae_path, out = sys.argv[1:5]
sys.path.insert(0, var_repo)
from models import build_vae_var  # noqa: E402
from models.helpers import sample_with_top_k_top_p_  # noqa: E402

torch.set_num_threads(2)
PN = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
vae, var = build_vae_var(device='cpu', patch_nums=PN, V=4096, Cvae=32, ch=160, share_quant_resi=4,
                         num_classes=1000, depth=2, shared_aln=False, attn_l2_norm=True)
var.load_state_dict(torch.load(f'{golden}/var_d2_random.pth', map_location='cpu', weights_only=True), strict=True)
vae.load_state_dict(load_file(vqvae_path), strict=True)
vae.eval(), var.eval()
var.cond_drop_rate = 0.0


def source_image() -> np.ndarray:
    """A deterministic 256x256 RGB test card (uint8), also built by the Rust test."""
    y, x = np.mgrid[0:256, 0:256]
    r = (x * 255 // 255).astype(np.uint8)
    g = (y * 255 // 255).astype(np.uint8)
    b = (((x // 32) + (y // 32)) % 2 * 200 + 27).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def box_mask(y0, x0, y1, x1, inpainting):
    ph = pw = PN[-1]
    m = torch.zeros(ph, pw)
    m[round(y0 * ph):round(y1 * ph), round(x0 * pw):round(x1 * pw)] = 1
    return 1 - m if inpainting else m


@torch.no_grad()
def masked_infer(labels, cfg, top_k, top_p, seed, src_tokens, edit_mask):
    """The official masked sampling loop; returns drawn tokens, mixed tokens, f_hat."""
    B = len(labels)
    rng = var.rng
    rng.manual_seed(seed)
    label_B = torch.tensor(labels)
    sos = cond_BD = var.class_emb(torch.cat((label_B, torch.full_like(label_B, var.num_classes)), dim=0))
    lvl_pos = var.lvl_embed(var.lvl_1L) + var.pos_1LC
    next_map = sos.unsqueeze(1).expand(2 * B, var.first_l, -1) + var.pos_start.expand(2 * B, var.first_l, -1) \
        + lvl_pos[:, :var.first_l]
    cur_L = 0
    f_hat = sos.new_zeros(B, var.Cvae, PN[-1], PN[-1])
    drawn, mixed = [], []
    for b in var.blocks:
        b.attn.kv_caching(True)
    for si, pn in enumerate(PN):
        ratio = si / var.num_stages_minus_1
        cur_L += pn * pn
        x = next_map
        cond = var.shared_ada_lin(cond_BD)
        for b in var.blocks:
            x = b(x=x, cond_BD=cond, attn_bias=None)
        logits = var.get_logits(x, cond_BD)
        t = cfg * ratio
        logits = (1 + t) * logits[:B] - t * logits[B:]
        idx = sample_with_top_k_top_p_(logits, rng=rng, top_k=top_k, top_p=top_p, num_samples=1)[:, :, 0]
        h = var.vae_quant_proxy[0].embedding(idx).transpose_(1, 2).reshape(B, var.Cvae, pn, pn)
        gt = var.vae_quant_proxy[0].embedding(src_tokens[si]).transpose_(1, 2).reshape(B, var.Cvae, pn, pn)
        m = F.interpolate(edit_mask.expand(B, *edit_mask.shape).unsqueeze(1).float(), size=(pn, pn),
                          mode='bilinear', align_corners=False).gt(0.5).int()
        if pn * pn <= 3:
            m.fill_(1)
        h = gt * m + h * (1 - m)
        keep = m.reshape(B, pn * pn).bool()
        drawn.append(idx.clone())
        mixed.append(torch.where(keep, src_tokens[si], idx))
        f_hat, next_map = var.vae_quant_proxy[0].get_next_autoregressive_input(si, len(PN), f_hat, h)
        if si != var.num_stages_minus_1:
            next_map = next_map.view(B, var.Cvae, -1).transpose(1, 2)
            next_map = var.word_embed(next_map) + lvl_pos[:, cur_L:cur_L + PN[si + 1] ** 2]
            next_map = next_map.repeat(2, 1, 1)
    for b in var.blocks:
        b.attn.kv_caching(False)
    return drawn, mixed, f_hat


img = source_image()
x = torch.from_numpy(img).permute(2, 0, 1).float().div(255).unsqueeze(0)  # [0, 1]
x = x.mul(2).sub(1)  # normalize_01_into_pm1
with torch.no_grad():
    src = vae.img_to_idxBl(x)  # list of [1, pn^2]
tensors = {}
for si, t in enumerate(src):
    tensors[f'source.{si}'] = t[0].numpy().astype(np.int64)

cases = {
    'inpaint': dict(labels=[207, 1000], cfg=4.0, top_k=1, top_p=0.0, seed=0,
                    mask=box_mask(0.25, 0.25, 0.75, 0.75, inpainting=True)),
    'outpaint': dict(labels=[1000, 1000], cfg=4.0, top_k=1, top_p=0.0, seed=0,
                     mask=box_mask(0.25, 0.25, 0.75, 0.75, inpainting=False)),
    'half': dict(labels=[3, 3], cfg=2.0, top_k=900, top_p=0.96, seed=7,
                 mask=torch.cat([torch.ones(8, 16), torch.zeros(8, 16)], dim=0)),
}
for name, c in cases.items():
    B = len(c['labels'])
    src_B = [t.expand(B, -1) for t in src]
    drawn, mixed, f_hat = masked_infer(c['labels'], c['cfg'], c['top_k'], c['top_p'], c['seed'], src_B, c['mask'])
    tensors[f'{name}.mask'] = c['mask'].numpy().astype(np.float32)
    tensors[f'{name}.labels'] = np.array(c['labels'], dtype=np.int64)
    tensors[f'{name}.settings'] = np.array([c['cfg'], c['top_k'], c['top_p'], c['seed']], dtype=np.float64)
    for si in range(len(PN)):
        tensors[f'{name}.drawn.{si}'] = drawn[si].numpy().astype(np.int64)
        tensors[f'{name}.mixed.{si}'] = mixed[si].numpy().astype(np.int64)
    tensors[f'{name}.f_hat'] = f_hat.numpy().astype(np.float32)
save_file(tensors, out, metadata={
    'made_with': f'official VAR {var_repo}, torch {torch.__version__}',
    'script': 'scripts/make-edit-reference.py',
})
print('wrote', out, len(tensors), 'tensors')
