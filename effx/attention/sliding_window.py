"""Sliding-window (local) attention: query i sees keys j with |i - j| <= window.

As in Longformer's local attention and the L-HuBERT of Diwan et al. (2023). Cost is linear in T:
each query sees at most 2 * window + 1 keys.

One call, two paths (nanochat style): the Triton kernel on CUDA tensors when Triton imports,
else the blocked PyTorch fallback below. ``backend=`` forces a path (tests use it).
The fallback splits queries into chunks of ``c`` and lets each chunk attend to its own keys plus
``window`` on each side, via a strided view of the padded keys: memory O(T * (c + 2 * window)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

try:  # the kernel is optional: CPU-only installs and old Triton still work through the fallback
    from effx.kernels.sliding_window_triton import sliding_window_attention_triton
    HAS_TRITON_KERNEL = True
except Exception:  # noqa: BLE001 - any import failure means "no kernel"
    sliding_window_attention_triton = None
    HAS_TRITON_KERNEL = False

BACKENDS = ("auto", "triton", "torch")


def _chunk_size(t: int, window: int) -> int:
    return max(16, min(window, t))


def sliding_window_attention_torch(q, k, v, *, window: int, key_padding_mask=None, scale=None):
    """Blocked PyTorch sliding-window attention. q, k, v: (B, H, T, D) -> (B, H, T, D)."""
    b, h, t, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    w = min(window, t - 1)
    c = _chunk_size(t, w)
    nb = math.ceil(t / c)
    t_pad = nb * c
    span = c + 2 * w                                                      # keys seen by a chunk
    # pad queries to nb*c; pad keys/values by w on the left and w + (t_pad - t) on the right
    qb = F.pad(q, (0, 0, 0, t_pad - t)).view(b, h, nb, c, d)
    kp = F.pad(k, (0, 0, w, w + t_pad - t))
    vp = F.pad(v, (0, 0, w, w + t_pad - t))
    kw = kp.unfold(2, span, c)                                            # (B, H, nb, D, span)
    vw = vp.unfold(2, span, c).transpose(-1, -2)                          # (B, H, nb, span, D)
    scores = (qb @ kw) * scale                                            # (B, H, nb, c, span)
    # band: key at window slot s of chunk n is position n*c + s - w; query n*c + a
    a = torch.arange(c, device=q.device)[:, None]
    s = torch.arange(span, device=q.device)[None, :]
    band = (s - w - a).abs() <= w                                         # (c, span)
    key_pos = torch.arange(nb, device=q.device)[:, None] * c + torch.arange(span, device=q.device) - w
    valid = (key_pos >= 0) & (key_pos < t)                                # (nb, span)
    allowed = band[None, :, :] & valid[:, None, :]                        # (nb, c, span)
    allowed = allowed[None, None]
    if key_padding_mask is not None:
        kpm = F.pad(key_padding_mask, (w, w + t_pad - t), value=False).unfold(1, span, c)  # (B, nb, span)
        allowed = allowed & kpm[:, None, :, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    out = probs @ vw                                                      # (B, H, nb, c, D)
    return out.reshape(b, h, t_pad, d)[:, :, :t]


def sliding_window_attention(q, k, v, *, window: int, key_padding_mask=None, scale=None,
                             backend: str = "auto"):
    """Sliding-window attention, |i - j| <= window. q, k, v: (B, H, T, D) -> (B, H, T, D).

    backend: 'auto' (Triton kernel on CUDA when available), 'triton', or 'torch'.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")
    if window < 0:
        raise ValueError(f"window={window}; allowed: an integer >= 0")
    use_kernel = backend == "triton" or (backend == "auto" and q.is_cuda and HAS_TRITON_KERNEL)
    if use_kernel:
        if not HAS_TRITON_KERNEL:
            raise RuntimeError("backend='triton' requested but the Triton kernel failed to import")
        return sliding_window_attention_triton(q, k, v, window=window,
                                               key_padding_mask=key_padding_mask, scale=scale)
    return sliding_window_attention_torch(q, k, v, window=window, key_padding_mask=key_padding_mask,
                                          scale=scale)
