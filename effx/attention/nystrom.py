"""Nystrom attention (Xiong et al., 2021, Nystromformer): softmax attention through landmarks.

Landmarks are segment means of queries and keys (m of them). With
F = softmax(Q Kl^T), A = softmax(Ql Kl^T), B = softmax(Ql K^T):  out = F pinv(A) (B V),
pinv by the iterative scheme of the paper (6 iterations). Cost O(T * m * D): linear in T.
An approximation: it never equals dense attention exactly (except in the limit m = T).

Its spec (``NYSTROM``) has no mask (``exact=False``) and counts the FLOPs of what it computes,
since they are not those of attention over some keys: with m = min(landmarks, T),
8*B*H*T*m*D (Q Kl^T, F (.), Ql K^T, B V) + 4*B*H*m*m*D (Ql Kl^T, pinv(A) (.))
+ 8*iterations*B*H*m^3 (four m x m products per pseudo-inverse iteration).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from effx.attention.spec import AttentionSpec


def _iterative_pinv(a: torch.Tensor, iters: int = 6) -> torch.Tensor:
    i = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    z = a.transpose(-1, -2) / (a.abs().sum(-2).amax(-1) * a.abs().sum(-1).amax(-1))[..., None, None]
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * i - az @ (15 * i - az @ (7 * i - az)))
    return z


def nystrom_attention(q, k, v, *, num_landmarks: int = 64, key_padding_mask=None, scale=None,
                      pinv_iterations: int = 6):
    """q, k, v: (B, H, T, D) -> (B, H, T, D). Uses min(num_landmarks, T) landmarks."""
    b, h, t, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    if key_padding_mask is not None:
        if not bool(key_padding_mask.all()):
            raise ValueError("nystrom_attention does not support padded keys (landmarks would mix "
                             "padding in); pass unpadded sequences")
    m = min(num_landmarks, t)
    # segment means over (nearly) equal segments: adaptive pooling along T
    ql = F.adaptive_avg_pool1d(q.reshape(b * h, t, d).transpose(1, 2), m).transpose(1, 2).view(b, h, m, d)
    kl = F.adaptive_avg_pool1d(k.reshape(b * h, t, d).transpose(1, 2), m).transpose(1, 2).view(b, h, m, d)
    f = torch.softmax((q @ kl.transpose(-1, -2)) * scale, dim=-1)           # (B, H, T, m)
    a = torch.softmax((ql @ kl.transpose(-1, -2)) * scale, dim=-1)          # (B, H, m, m)
    bm = torch.softmax((ql @ k.transpose(-1, -2)) * scale, dim=-1)          # (B, H, m, T)
    return f @ (_iterative_pinv(a, pinv_iterations) @ (bm @ v))


def _flops(batch, heads, t, head_dim, o) -> float:
    m = min(o["num_landmarks"], t)
    return float(batch * heads * (8 * t * m * head_dim + 4 * m * m * head_dim
                                  + 8 * o["pinv_iterations"] * m ** 3))


NYSTROM = AttentionSpec(
    "nystrom", nystrom_attention, options={"num_landmarks": 64, "pinv_iterations": 6},
    exact=False, backward_factor=2.0, keys=lambda t, o: min(o["num_landmarks"], t), count=_flops,
    summary="Nystrom approximation through m landmarks (segment means); each query attends to "
            "the m landmark keys; linear in T")
