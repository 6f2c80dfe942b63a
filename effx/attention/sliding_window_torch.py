"""The PyTorch path of sliding-window attention (``effx.attention.sliding_window``): queries in
chunks of ``c``, each chunk against its span of c + 2w keys read as a strided view of k; one fused
attention call (PyTorch's CPU flash kernel, or the same math in plain ops elsewhere) for all
interior chunks with one shared band mask; the backward recomputes the scores per chunk and adds
the overlapping key-span gradients. Shapes: q, k, v (B, H, T, D).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

FORWARD_CHUNK, BACKWARD_CHUNK = 32, 128   # queries per chunk (chunk_size)


def chunk_size(t: int, window: int, backward: bool = False) -> int:
    """Queries per chunk of the torch path. A chunk multiplies c + 2w keys per query for at most
    2w + 1 useful ones, so small chunks waste little, but each is one small product; and in the
    backward every chunk writes the gradient of its whole key span, (c + 2w) / c times the size of
    k, which larger chunks keep small. On CPU (PyTorch's flash kernel, BERT-base heads,
    T = 1k..8k, w = 64..512; benchmarks/sliding_window_kernel.py --cpu) the fastest were c = 32
    forward (16..64 within a few percent) and c = 128 backward (64..256 within 10%). When a
    chunk's span c + 2w would reach T, one chunk of all T queries (c = T, a (T, T) band mask)
    does less work."""
    w = min(window, t - 1)
    c = BACKWARD_CHUNK if backward else FORWARD_CHUNK
    return t if c + 2 * w >= t else c


# ---------------------------------------------------------------------------------------------
# The torch path: chunks of queries against their key span
# ---------------------------------------------------------------------------------------------

class _Plan:
    """How the torch path splits one call. Chunk n holds queries n*c .. n*c+c-1 and sees the span
    of keys n*c-w .. n*c+c+w-1. Chunks whose span lies inside [0, T) ("interior") share one band
    mask (c, span), broadcast, and read their keys as a strided view of k (no copy); the few
    chunks at the two edges get a padded copy of their keys and a mask that also removes the
    keys outside [0, T). One chunk (c = T, ``single``): all T queries against all T keys, a (T, T)
    band mask (none when w >= T - 1), k itself as the keys."""

    def __init__(self, t: int, w: int, backward: bool = False):
        self.t, self.w = t, w
        self.c, self.backward = chunk_size(t, w, backward), backward
        self.single = self.c == t                                       # one chunk: all T keys
        self.nb = math.ceil(t / self.c)
        self.span = t if self.single else self.c + 2 * w                # keys seen by a chunk
        self.left = 0 if self.single else w                             # window start = n*c - left
        if self.single:
            self.groups = [(0, 1, True)]
            return
        first = math.ceil(w / self.c)                                   # first chunk with n*c >= w
        end = max(first, (t - self.c - w) // self.c + 1)                # chunks with n*c+c+w <= T
        groups = [(0, min(first, self.nb), False), (first, end, True), (min(end, self.nb), self.nb, False)]
        self.groups = [(a, z, interior) for a, z, interior in groups if z > a]   # (first, end, interior)

    def rows(self, a: int, z: int) -> slice:
        return slice(a * self.c, min(z * self.c, self.t))

    def queries(self, xf, a, z):
        """(N, T, D) -> (N, z-a, c, D): the queries of chunks a..z-1, zero rows after T."""
        x = xf[:, self.rows(a, z)]
        if x.shape[1] < (z - a) * self.c:                               # a last, partial chunk
            x = F.pad(x, (0, 0, 0, (z - a) * self.c - x.shape[1]))
        return x.view(x.shape[0], z - a, self.c, x.shape[-1])

    def windows(self, xf, a, z, interior):
        """(N, T, D) contiguous -> (N, z-a, span, D): each chunk's keys, a strided view (windows
        overlap in memory); edge groups view a zero-padded copy of their keys."""
        n, t, d = xf.shape
        start = a * self.c - self.left                                  # key position of slot 0
        if interior:
            base, length, offset = xf, t, xf.storage_offset() + start * d
        else:
            length = (z - a) * self.c + 2 * self.left
            lo, hi = max(start, 0), min(start + length, t)
            base = F.pad(xf[:, lo:hi], (0, 0, lo - start, start + length - hi)).contiguous()
            offset = base.storage_offset()
        return base.as_strided((n, z - a, self.span, d), (length * d, self.c * d, d, 1), offset)

    def allowed(self, a, z, interior, key_padding_mask=None):
        """Bool mask (z-a or 1, c, span), or (B, z-a, c, span) with key padding; None: all allowed."""
        band = None
        if self.w < self.t - 1:                                         # else every key is in the band
            s = torch.arange(self.span)
            band = (s[None, :] - self.left - torch.arange(self.c)[:, None]).abs() <= self.w
            if interior and key_padding_mask is None:
                return band[None]                                       # shared by the chunks
        key = (torch.arange(a, z)[:, None] * self.c + torch.arange(self.span) - self.left)
        valid = (key >= 0) & (key < self.t)                             # (z-a, span)
        if key_padding_mask is not None:
            kpm = key_padding_mask.to("cpu", torch.bool)
            valid = valid & kpm[:, key.clamp(0, self.t - 1)]             # (B, z-a, span)
        elif self.single:
            return band if band is None else band[None]
        full = valid[..., None, :]
        return full if band is None else full & band


def _additive(mask, dtype, device):
    """bool mask -> additive float mask (0 / -inf) in the inputs' dtype, 4-D for the fused kernel."""
    if mask is None:
        return None
    out = torch.where(mask, torch.zeros((), dtype=dtype), torch.full((), float("-inf"), dtype=dtype))
    return (out if out.dim() == 4 else out[None]).to(device)


@functools.lru_cache(maxsize=64)
def _group_mask(t: int, w: int, backward: bool, a: int, z: int, interior: bool, dtype: torch.dtype,
                device: str):
    """The additive mask of one group without key padding; the same at every call with this
    geometry, so built once (read-only: the fused kernels never write to it)."""
    return _additive(_Plan(t, w, backward).allowed(a, z, interior), dtype, torch.device(device))


def _fused_forward(q, k, v, mask, scale, plain: bool | None = None):
    """One fused attention call over chunks: q (N, nb, c, D), k, v (N, nb, span, D),
    mask (1 or N, nb, c, span) additive. Returns out (N, nb, c, D) and lse (N, nb, c) (natural
    log, 0 for rows with no allowed key, whose output is 0). ``plain``: the same math in plain
    PyTorch ops (default: on devices other than CPU)."""
    if not (q.device.type != "cpu" if plain is None else plain):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, False, attn_mask=mask, scale=scale)
    acc = torch.promote_types(q.dtype, torch.float32)                  # other devices: plain math
    s = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask.to(s.device)
    lse = torch.logsumexp(s, dim=-1)
    lse = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)     # rows with no key: 0
    out = torch.exp(s - lse[..., None]).to(v.dtype) @ v
    return out, lse


def _fused_backward(do, q, k, v, out, lse, mask, scale, plain: bool | None = None):
    """Gradients of ``_fused_forward`` (scores recomputed from lse), shapes as its inputs."""
    if not (q.device.type != "cpu" if plain is None else plain):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            do, q, k, v, out, lse, 0.0, False, attn_mask=mask, scale=scale)
    acc = torch.promote_types(q.dtype, torch.float32)
    s = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask.to(s.device)
    p = torch.exp(s - lse[..., None])                                   # (N, nb, c, span)
    dof = do.to(acc)
    dv = p.transpose(-1, -2) @ dof
    dp = dof @ v.to(acc).transpose(-1, -2)
    ds = p * (dp - (dof * out.to(acc)).sum(-1, keepdim=True))
    dq = (ds @ k.to(acc)) * scale
    dk = (ds.transpose(-1, -2) @ q.to(acc)) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _calls(plan, b, h, key_padding_mask, dtype, device):
    """(rows of the (B*H) batch, group, additive mask) for every fused call: one call per group, or
    per group and sequence when keys are padded (the mask then differs between sequences)."""
    if key_padding_mask is not None and bool(key_padding_mask.all()):
        key_padding_mask = None
    for a, z, interior in plan.groups:
        if key_padding_mask is None:                                    # (T, T) masks are not kept
            mask = (_additive(plan.allowed(a, z, interior), dtype, device) if plan.single else
                    _group_mask(plan.t, plan.w, plan.backward, a, z, interior, dtype, str(device)))
            yield slice(None), (a, z, interior), mask
            continue
        allowed = plan.allowed(a, z, interior, key_padding_mask)
        for i in range(b):
            yield slice(i * h, (i + 1) * h), (a, z, interior), _additive(allowed[i], dtype, device)


def _flat(x):
    """(B, H, T, D) -> (B*H, T, D), contiguous (a view when x is)."""
    return x.reshape(-1, x.shape[2], x.shape[3]).contiguous()


def _torch_forward(q, k, v, w, scale, key_padding_mask):
    b, h, t, d = q.shape
    plan = _Plan(t, w)
    qf, kf, vf = _flat(q), _flat(k), _flat(v)
    out = torch.empty_like(qf)
    lse = torch.empty(qf.shape[:2], dtype=torch.float64 if q.dtype == torch.float64 else torch.float32,
                      device=q.device)
    for rows, (a, z, interior), mask in _calls(plan, b, h, key_padding_mask, q.dtype, q.device):
        o, l = _fused_forward(plan.queries(qf[rows], a, z), plan.windows(kf, a, z, interior)[rows],
                              plan.windows(vf, a, z, interior)[rows], mask, scale)
        if plan.single and rows == slice(None):                         # one call made everything
            return o.view(b, h, t, d), l.view(b, h, t)
        n = plan.rows(a, z)
        out[rows, n] = o.reshape(o.shape[0], -1, d)[:, :n.stop - n.start]
        lse[rows, n] = l.reshape(l.shape[0], -1)[:, :n.stop - n.start]
    return out.view(b, h, t, d), lse.view(b, h, t)


def _torch_backward(do, q, k, v, out, lse, w, scale, key_padding_mask):
    b, h, t, d = q.shape
    plan = _Plan(t, w, backward=True)
    qf, kf, vf, of = _flat(q), _flat(k), _flat(v), _flat(out)
    dof, lsef = _flat(do.to(q.dtype)), lse.reshape(b * h, t, 1)
    dq = torch.empty_like(qf)
    pieces = math.ceil(plan.span / plan.c)                              # chunk-sized pieces of a span
    acc_len = (plan.nb + pieces - 1) * plan.c                           # padded key positions
    dk_acc, dv_acc = (qf.new_zeros(b * h, acc_len, d, dtype=torch.promote_types(q.dtype, torch.float32))
                      for _ in range(2))
    for rows, (a, z, interior), mask in _calls(plan, b, h, key_padding_mask, q.dtype, q.device):
        lse_g = plan.queries(lsef[rows], a, z)[..., 0]                  # padded rows: q = 0, do = 0
        g_q, g_k, g_v = _fused_backward(plan.queries(dof[rows], a, z), plan.queries(qf[rows], a, z),
                                        plan.windows(kf, a, z, interior)[rows],
                                        plan.windows(vf, a, z, interior)[rows],
                                        plan.queries(of[rows], a, z), lse_g, mask, scale)
        n = plan.rows(a, z)
        dq[rows, n] = g_q.reshape(g_q.shape[0], -1, d)[:, :n.stop - n.start]
        for acc, g in ((dk_acc, g_k), (dv_acc, g_v)):                   # overlapping windows: add up
            blocks = acc[rows].view(g.shape[0], -1, plan.c, d)          # a view: adds land in acc
            for p in range(pieces):                                     # piece p of chunk n: block n + p
                part = g[:, :, p * plan.c:(p + 1) * plan.c]             # the last piece may be shorter
                blocks[:, a + p:z + p, :part.shape[2]] += part
    dk = dk_acc[:, plan.left:plan.left + t].to(k.dtype)
    dv = dv_acc[:, plan.left:plan.left + t].to(v.dtype)
    return dq.view(b, h, t, d), dk.reshape(b, h, t, d), dv.reshape(b, h, t, d)
