"""The one dense reference for every attention variant in effx.

Masked softmax attention, optionally in float64. Tests, benchmarks and notebooks compare every
variant and kernel against this function, and the masks below describe each variant's pattern
as a dense (T, T) boolean matrix (True = query may attend to key); each variant's spec
(``effx.attention.ATTENTION[name].mask(t, ...)``) returns its pattern through them.
Layout everywhere: (B, H, T, D). FLOP formulas live in ``effx.attention.spec``.
"""
from __future__ import annotations

import math

import torch


def attention_reference(q, k, v, *, mask=None, key_padding_mask=None, scale=None, upcast=True):
    """softmax(q k^T * scale + mask) v.

    q, k, v: (B, H, T, D); mask: bool, broadcastable to (B, H, T, T), True = attend;
    key_padding_mask: bool (B, T), True = real token. Rows with no allowed key give zeros.
    Computed in float64 when `upcast`, returned in q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    dtype = q.dtype
    if upcast:
        q, k, v = q.double(), k.double(), v.double()
    scores = (q @ k.transpose(-2, -1)) * scale                         # (B, H, T, T)
    allowed = torch.ones_like(scores, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)              # empty rows -> 0
    return (probs @ v).to(dtype)


def sliding_window_mask(t: int, window: int, device=None) -> torch.Tensor:
    """(T, T) bool: key j is visible to query i when |i - j| <= window."""
    idx = torch.arange(t, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window


def block_layout_mask(layout: torch.Tensor, block: int, t: int) -> torch.Tensor:
    """Expand a block layout (..., nb, nb) of bools to an element mask (..., T, T)."""
    full = layout.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return full[..., :t, :t]

