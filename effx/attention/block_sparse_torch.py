"""The PyTorch path of block-sparse attention (effx.attention.block_sparse): gather, in buckets.

For each query block, its listed key blocks are gathered and multiplied as one dense tile row:
scores (block, kb*block) = Q_r K_listed^T, a softmax, then P V_listed. Rows list different numbers
of blocks (BigBird's global block lists all of them, SPION's flood fill is uneven), so padding every
row to the longest one would make every row cost as much as the full row. Instead the query blocks
are grouped into a few *buckets* by their number of listed blocks (``plan_buckets``: a small
dynamic programme that trades padded tiles against one more bucket) and each bucket is padded only
to its own longest row. Work is then proportional to the listed blocks, plus little padding.

Each bucket is one batched product: q (N, block, D) @ k_gathered^T (N, D, kb*block) with the mask
as an additive bias broadcast over the block's queries (-inf on unlisted, padded and out-of-range
keys), so no (B, H, nb, block, kb*block) mask is built. The batch is processed in chunks that keep
each intermediate small (``CHUNK_BYTES``): on CPU a fresh large tensor costs more in page faults
than the arithmetic on it. Rows with no selected key output zeros. Both softmax semantics of the
module docstring of effx.attention.block_sparse; the faithful one scales each row of the
ordinary softmax by Z / (Z + phantoms) = sigmoid(lse - log phantoms), whose gradient is the
softmax backward applied to the scaled probabilities (``_RowScaledSoftmax``).
FLOPs (FlopCounterMode sees baddbmm and bmm): ``torch_path_flops``; backward = 2x forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from effx.errors import ParameterError

#: one more bucket must save at least this fraction of all listed tile rows (or one row)
SPLIT_COST = 0.05
#: target size of the largest intermediate (the scores of one bucket) per batch chunk
CHUNK_BYTES = 1 << 20


def checked_layout(layout: torch.Tensor, q: torch.Tensor, block: int) -> torch.Tensor:
    """Validate a layout for q (B, H, T, D); returns it as bool (H_l, nb, nb), H_l = 1 or H."""
    check_layout_shape(layout, q, block)
    lay = layout.to(device=q.device, dtype=torch.bool)
    return lay[None] if lay.dim() == 2 else lay


def check_layout_shape(layout: torch.Tensor, q: torch.Tensor, block: int) -> None:
    """Raise ParameterError unless layout is (nb, nb) or (1 or H, nb, nb), nb = ceil(T / block)."""
    h, t = q.shape[1], q.shape[2]
    if not isinstance(block, int) or block < 1:
        raise ParameterError("block", block, "an integer >= 1")
    nb = math.ceil(t / block)
    if layout.dim() not in (2, 3) or tuple(layout.shape[-2:]) != (nb, nb):
        raise ParameterError("layout", tuple(layout.shape), f"(nb, nb) or (H, nb, nb) with nb = "
                             f"ceil(T / block) = {nb} (T={t}, block={block})")
    if layout.dim() == 3 and layout.shape[0] not in (1, h):
        raise ParameterError("layout", tuple(layout.shape), f"a head dimension of 1 or H={h}")


def phantom_counts(layout: torch.Tensor, block: int, t: int, key_padding_mask=None) -> torch.Tensor:
    """Faithful softmax's zero logits per query block: N_b - nnz (effx.attention.block_sparse).

    layout: bool (H_l, nb, nb); key_padding_mask: (B, T) bool or None. Returns float64
    (B, H_l, nb) (B = 1 without key padding): real keys of the item outside the row's listed blocks.
    """
    nb = layout.shape[-1]
    if key_padding_mask is None:
        real = torch.full((1, nb), float(block), dtype=torch.float64, device=layout.device)
        real[:, -1] = t - (nb - 1) * block                                   # (1, nb) keys per block
    else:
        kpm = F.pad(key_padding_mask.to(layout.device, torch.float64), (0, nb * block - t))
        real = kpm.view(-1, nb, block).sum(-1)                               # (B, nb)
    selected = torch.einsum("hrc,bc->bhr", layout.double(), real)            # (B, H_l, nb)
    return real.sum(-1)[:, None, None] - selected


# ------------------------------------------------------------------------------ the plan

@dataclass(frozen=True)
class Bucket:
    """Row units (query blocks) padded to the same number kb of key blocks."""
    rows: torch.Tensor      # (R,) long: row units; unit g*nb + r = query block r of layout head g
    cols: torch.Tensor      # (R, kb) long: key units g*nb + c, listed ones first (ascending)
    listed: torch.Tensor    # (R, kb) bool: False on the padding


@dataclass(frozen=True)
class BucketPlan:
    """How the torch path runs one layout (built once per layout, see effx.attention.block_sparse)."""
    layout: torch.Tensor             # bool (H_l, nb, nb)
    buckets: tuple[Bucket, ...]
    empty: torch.Tensor              # (E,) long: row units listing no block (their output is 0)
    order: torch.Tensor | None       # (U,) long: back from [bucket rows..., empty] to unit order

    @property
    def tile_rows(self) -> int:
        """(query block, key block) tiles computed per (batch item, head group), padding included."""
        return sum(bk.cols.numel() for bk in self.buckets)


def _split_points(counts: list[int], penalty: float) -> list[int]:
    """Bucket upper bounds over the sorted distinct counts > 0: the cheapest partition, cost =
    sum over buckets of (rows x their largest count) + penalty per bucket."""
    values = sorted(set(c for c in counts if c > 0))
    rows = [sum(1 for c in counts if c == v) for v in values]
    best, cut = [0.0], [0]                       # best[j]: cheapest plan of values[:j]
    for j in range(1, len(values) + 1):
        options = [(best[i] + sum(rows[i:j]) * values[j - 1] + penalty, i) for i in range(j)]
        cost, i = min(options)
        best.append(cost)
        cut.append(i)
    bounds, j = [], len(values)
    while j > 0:
        bounds.append(values[j - 1])
        j = cut[j]
    return sorted(bounds)


def plan_buckets(layout: torch.Tensor, split_cost: float = SPLIT_COST) -> BucketPlan:
    """Group the row units of a bool (H_l, nb, nb) layout into buckets (module docstring)."""
    lay = layout.bool()
    lay = lay[None] if lay.dim() == 2 else lay
    hl, nb = lay.shape[0], lay.shape[-1]
    units = lay.reshape(hl * nb, nb)                                          # (U, nb)
    counts = units.sum(-1)                                                    # (U,)
    offset = torch.arange(hl, device=lay.device).repeat_interleave(nb) * nb   # key unit of block 0
    listed_rows = int((counts > 0).sum())
    penalty = max(1.0, split_cost * int(counts.sum()))
    buckets, lower = [], 0
    for upper in _split_points(counts.tolist(), penalty) if listed_rows else []:
        rows = torch.nonzero((counts > lower) & (counts <= upper)).flatten()
        order = torch.argsort((~units[rows]).to(torch.int8), dim=-1, stable=True)[:, :upper]
        buckets.append(Bucket(rows, order + offset[rows, None], torch.gather(units[rows], 1, order)))
        lower = upper
    empty = torch.nonzero(counts == 0).flatten()
    perm = torch.cat([bk.rows for bk in buckets] + [empty])
    identity = bool((perm == torch.arange(hl * nb, device=lay.device)).all())
    return BucketPlan(lay, tuple(buckets), empty, None if identity else torch.argsort(perm))


def torch_path_flops(layout: torch.Tensor, block: int, batch: int, heads: int, head_dim: int) -> float:
    """Forward FLOPs the torch path multiplies (and FlopCounterMode counts) for this layout:
    4 * block^2 * D per tile, for every batch item and head (padded T, bucket padding included)."""
    plan = plan_buckets(layout)
    groups = heads if plan.layout.shape[0] == 1 else 1        # per-head layouts: heads are in the units
    return 4.0 * batch * groups * plan.tile_rows * block * block * head_dim


# ------------------------------------------------------------------------------ softmax

class _RowScaledSoftmax(torch.autograd.Function):
    """softmax(scores) with each row multiplied by ``keep`` (0 or 1, rows without a selected key)
    and, faithful mode, by Z / (Z + phantoms). P = e^s / (Z + p) has dP/ds_k = P_k (dP_k - sum P dP)
    like the plain softmax, so the backward is the softmax backward applied to the scaled P."""

    @staticmethod
    def forward(ctx, scores, keep, phantoms):
        probs = torch.softmax(scores, dim=-1)
        if phantoms is not None:                              # sigmoid(lse - log p) = Z / (Z + p)
            probs.mul_(torch.sigmoid(torch.logsumexp(scores, -1, keepdim=True) - phantoms.log()))
        if keep is not None:
            probs.mul_(keep)
        ctx.save_for_backward(probs)
        return probs

    @staticmethod
    def backward(ctx, grad):
        probs, = ctx.saved_tensors
        return torch._softmax_backward_data(grad, probs, -1, probs.dtype), None, None


def _bucket_masks(bucket: Bucket, key_ok: torch.Tensor, nb: int, dtype, phantoms):
    """Additive bias (B|1, 1, R, kb*block), keep (B|1, 1, R, 1) or None, phantoms (B|1, 1, R, 1) or None.

    key_ok: bool (B|1, nb, block), True = real key inside T; phantoms: (B|1, U) per row unit."""
    r, kb = bucket.cols.shape
    allowed = bucket.listed[None, :, :, None] & key_ok[:, bucket.cols % nb]   # (B|1, R, kb, block)
    allowed = allowed.reshape(allowed.shape[0], 1, r, -1)
    alive = allowed.any(-1, keepdim=True)                                     # (B|1, 1, R, 1)
    keep = None
    if not bool(alive.all()):                # a row sees nothing: finite bias, output zeroed
        allowed = allowed | ~alive
        keep = alive.to(dtype)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
    ph = None if phantoms is None else phantoms[:, bucket.rows].to(dtype)[:, None, :, None]
    return bias, keep, ph


def _bucket_attention(qc, kc, vc, bucket: Bucket, bias, keep, phantoms, scale: float):
    """One bucket of one batch chunk: qc, kc, vc (bc, G, U, block, D) -> (bc, G, R, block, D)."""
    bc, g, u, block, d = qc.shape
    r, kb = bucket.cols.shape
    n = bc * g * r

    def rows(x):                                              # (bc|1, 1, R, s) -> (n, 1, s)
        return None if x is None else x.expand(bc, g, r, x.shape[-1]).reshape(n, 1, x.shape[-1])

    qg = qc if r == u else qc.index_select(2, bucket.rows)   # (bc, G, R, block, D)
    kg = kc.index_select(2, bucket.cols.flatten()).view(n, kb * block, d)
    vg = vc.index_select(2, bucket.cols.flatten()).view(n, kb * block, d)
    scores = torch.baddbmm(rows(bias), qg.reshape(n, block, d), kg.transpose(1, 2), alpha=scale)
    probs = _RowScaledSoftmax.apply(scores, rows(keep), rows(phantoms))      # (n, block, kb*block)
    return torch.bmm(probs, vg).view(bc, g, r, block, d)


def block_sparse_attention_torch(q, k, v, *, layout, block: int, key_padding_mask=None, scale=None,
                                 softmax: str = "standard", chunk_bytes: int | None = None):
    """Bucketed gather path. q, k, v: (B, H, T, D); layout: bool (nb, nb) or (H, nb, nb), or a
    ``BucketPlan`` built from one (``plan_buckets``); chunk_bytes: default ``CHUNK_BYTES``.
    Returns (B, H, T, D). Differentiable."""
    b, h, t, d = q.shape
    plan = layout if isinstance(layout, BucketPlan) else plan_buckets(checked_layout(layout, q, block))
    hl, nb = plan.layout.shape[0], plan.layout.shape[-1]
    if nb != math.ceil(t / block) or hl not in (1, h):
        raise ParameterError("layout", (hl, nb, nb), f"(1 or H={h}, nb, nb), nb = ceil(T / block)")
    if not plan.buckets:                                      # nothing listed: zeros (with a graph)
        return q * 0.0
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    t_pad = nb * block
    g, u = (h, nb) if hl == 1 else (1, h * nb)                # (G head groups, U row units)
    q5, k5, v5 = ((F.pad(x, (0, 0, 0, t_pad - t)) if t_pad > t else x).reshape(b, g, u, block, d)
                  for x in (q, k, v))

    key_ok = (torch.arange(t_pad, device=q.device) < t).view(1, nb, block)
    if key_padding_mask is not None:
        key_ok = key_ok & F.pad(key_padding_mask.to(q.device, torch.bool), (0, t_pad - t)).view(b, nb, block)
    phantoms = None
    if softmax == "faithful":
        phantoms = phantom_counts(plan.layout, block, t, key_padding_mask).flatten(1)   # (B|1, U_l)
    masks = [_bucket_masks(bk, key_ok, nb, q.dtype, phantoms) for bk in plan.buckets]

    widest = max(bk.cols.numel() for bk in plan.buckets) * g * block * block   # largest scores per item
    chunk = max(1, min(b, (chunk_bytes or CHUNK_BYTES) // (widest * q.element_size())))
    outs = []
    for i, (qc, kc, vc) in enumerate(zip(*(x.split(chunk) for x in (q5, k5, v5)))):
        sl = slice(i * chunk, i * chunk + qc.shape[0])
        parts = [_bucket_attention(qc, kc, vc, bk, *_batch_chunk(m, sl), scale)
                 for bk, m in zip(plan.buckets, masks)]
        if plan.empty.numel():
            parts.append(qc.new_zeros(qc.shape[0], g, plan.empty.numel(), block, d))
        out = torch.cat(parts, 2) if len(parts) > 1 else parts[0]
        outs.append(out if plan.order is None else out.index_select(2, plan.order))
    out = torch.cat(outs) if len(outs) > 1 else outs[0]                     # (B, G, U, block, D)
    return out.reshape(b, h, t_pad, d)[:, :, :t]


def _batch_chunk(masks, sl: slice):
    """The batch chunk ``sl`` of (bias, keep, phantoms); a batch dim of 1 broadcasts as it is."""
    return tuple(m if m is None or m.shape[0] == 1 else m[sl] for m in masks)
