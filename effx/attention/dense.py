"""Dense (vanilla) attention in its two usual implementations.

- ``sdpa``: PyTorch's fused scaled_dot_product_attention (flash / memory-efficient kernels on
  GPU, a fused flash kernel on CPU). What current Hugging Face models use.
- ``eager``: the textbook matmul -> softmax -> matmul, materialising the (T, T) scores.
  What 2023-era reference code used; the tipping point study compares both.

Their specs (``SDPA``, ``EAGER``) say T keys per query and 4*B*H*T*T*D forward FLOPs; they differ
in the backward FlopCounterMode counts: 2.5x the forward for the fused kernel, 2x for autograd.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from effx.attention.spec import AttentionSpec


def sdpa_attention(q, k, v, *, key_padding_mask=None, scale=None):
    """q, k, v: (B, H, T, D); key_padding_mask: (B, T) bool, True = real token."""
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def eager_attention(q, k, v, *, key_padding_mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale                         # (B, H, T, T)
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


SDPA = AttentionSpec(
    "sdpa", sdpa_attention, backward_factor=2.5,
    summary="dense attention, PyTorch's fused scaled_dot_product_attention (backward recomputes "
            "the scores: 2.5x the forward, PyTorch's FLOP convention for fused attention)")
EAGER = AttentionSpec(
    "eager", eager_attention, backward_factor=2.0,
    summary="dense attention, matmul -> softmax -> matmul (autograd: 2 products per product)")
