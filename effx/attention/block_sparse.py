"""Block-sparse attention with one layout of (block x block) tiles, as in BigBird and SPION.

A layout is a bool tensor (nb, nb) shared by heads, or (H, nb, nb) per head; nb = ceil(T / block).
Query block r attends to the key blocks c with layout[r, c] True. The PyTorch fallback gathers,
for each query block, its listed key blocks (padded to the row with the most blocks), so memory
and work scale with the number of listed blocks, not with T^2.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def band_layout(nb: int, width: int = 1, device=None) -> torch.Tensor:
    """Block-diagonal band: query block r sees key blocks r-width..r+width."""
    idx = torch.arange(nb, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= width


def layout_density(layout: torch.Tensor) -> float:
    return float(layout.float().mean())


def block_sparse_attention(q, k, v, *, layout: torch.Tensor, block: int, key_padding_mask=None,
                           scale=None):
    """q, k, v: (B, H, T, D); layout: bool (nb, nb) or (H, nb, nb). Returns (B, H, T, D)."""
    b, h, t, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    nb = math.ceil(t / block)
    if layout.shape[-1] != nb or layout.shape[-2] != nb:
        raise ValueError(f"layout is {tuple(layout.shape)} but T={t}, block={block} needs ({nb}, {nb})")
    lay = layout.to(q.device).bool()
    lay = lay.expand(h, nb, nb) if lay.dim() == 2 else lay                  # (H, nb, nb)
    kmax = max(int(lay.sum(-1).max()), 1)
    # indices of listed key blocks per (head, query block), padded with block 0 marked invalid
    order = torch.argsort((~lay).to(torch.int8), dim=-1, stable=True)[..., :kmax]  # (H, nb, kmax)
    listed = torch.gather(lay, -1, order)                                          # (H, nb, kmax)
    t_pad = nb * block
    qb = F.pad(q, (0, 0, 0, t_pad - t)).view(b, h, nb, block, d)
    kb = F.pad(k, (0, 0, 0, t_pad - t)).view(b, h, nb, block, d)
    vb = F.pad(v, (0, 0, 0, t_pad - t)).view(b, h, nb, block, d)
    gather_idx = order.reshape(1, h, nb * kmax, 1, 1).expand(b, h, nb * kmax, block, d)
    kg = torch.gather(kb, 2, gather_idx).view(b, h, nb, kmax * block, d)
    vg = torch.gather(vb, 2, gather_idx).view(b, h, nb, kmax * block, d)
    scores = (qb @ kg.transpose(-1, -2)) * scale                             # (B, H, nb, block, kmax*block)
    key_pos = (order[..., None] * block + torch.arange(block, device=q.device)).reshape(h, nb, kmax * block)
    allowed = listed.repeat_interleave(block, -1) & (key_pos < t)            # (H, nb, kmax*block)
    allowed = allowed[None, :, :, None, :]
    if key_padding_mask is not None:
        kpm = F.pad(key_padding_mask, (0, t_pad - t), value=False)           # (B, t_pad)
        kpm = torch.gather(kpm[:, None, :].expand(b, h, t_pad), 2,
                           key_pos.clamp(max=t_pad - 1).reshape(1, h, -1).expand(b, h, -1))
        allowed = allowed & kpm.view(b, h, nb, 1, kmax * block)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    out = probs @ vg                                                          # (B, H, nb, block, D)
    return out.reshape(b, h, t_pad, d)[:, :, :t]
