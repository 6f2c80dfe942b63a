"""Block-sparse attention through torch.sparse CSR: SPION's cuSPARSE design in PyTorch.

Yoon, Han, Moon, SPION (arXiv 2309.12578) run their sparse attention as three library calls on an
element-level CSR matrix of the selected (query, key) entries: SDDMM (scores computed only at the
selected entries) -> a row softmax -> SpMM with V. The same here, with every (batch, head) pair
one diagonal block of a single (B*H*T, B*H*T) CSR matrix, so that rows may hold different
numbers of entries (key padding differs per batch item, layouts may differ per head):

  scores = torch.sparse.sampled_addmm(pattern, Q, K^T)         SDDMM, (nnz,) values
  probs  = row softmax of the values (standard or faithful)     segment max / sum over CSR rows
  out    = torch.sparse.mm(P, V)                                SpMM, (B*H*T, D)

Semantics as in effx.attention.block_sparse (standard: masked softmax; faithful: every
unselected real key adds a logit 0 to its row's denominator, N_b - nnz_i of them, with padded
keys never counted). Rows with no selected key give zeros. The backward is written out with the
same two library calls (``_CsrAttention``): torch.sparse's own autograd would build dense
(B*H*T)^2 gradients. So this path also trains; bfloat16/float16 are refused (as the official
code, fp32 only).
Memory: O(nnz) int64 indices and values; the index is built from the block layout directly
(``element_csr``), one (batch, head) diagonal block at a time, with no (T, T) intermediate, so
T = 4096 fits in CPU memory. A mirror of the paper's design, not the fast path.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from effx.errors import ParameterError

DTYPES = (torch.float32, torch.float64)


def _block_segments(lay: torch.Tensor, block: int, t: int, real=None):
    """Selected keys of every (layout head g, query block r), concatenated in (g, r, key) order.

    lay: bool (H_l, nb, nb); real: bool (T,) (real keys of one batch item) or None. Returns keys
    (n,) int64 and lengths (H_l * nb,): the keys of segment g*nb + r are the next lengths[.] ones.
    """
    hl, nb = lay.shape[0], lay.shape[-1]
    g, r, c = lay.nonzero(as_tuple=True)                                     # listed blocks, sorted
    keys = c[:, None] * block + torch.arange(block, device=lay.device)       # (E, block)
    ok = keys < t
    if real is not None:
        ok &= real[keys.clamp(max=t - 1)]
    lengths = torch.zeros(hl * nb, dtype=torch.long, device=lay.device).index_add_(0, g * nb + r, ok.sum(-1))
    return keys[ok], lengths


def _tile_rows(keys: torch.Tensor, lengths: torch.Tensor, block: int, t: int) -> torch.Tensor:
    """Columns of the T rows of one diagonal block: query i gets the segment of its block i // block.
    keys, lengths: one layout head's segments (nb of them). Returns (sum of row lengths,) int64."""
    seg = torch.arange(t, device=keys.device) // block                      # (T,) segment of each row
    row_len = lengths[seg]
    starts = F.pad(lengths.cumsum(0), (1, 0))[seg]                           # (T,) segment start
    first = F.pad(row_len.cumsum(0), (1, 0))[:-1]                            # (T,) row start in output
    pos = torch.arange(int(row_len.sum()), device=keys.device)
    return keys[pos + torch.repeat_interleave(starts - first, row_len)]


def element_csr(layout: torch.Tensor, block: int, b: int, h: int, t: int, key_padding_mask=None):
    """Element-level CSR index of the selected entries of all (batch, head) pairs.

    layout: bool (nb, nb) or (H_l, nb, nb), H_l in (1, H); key_padding_mask: (B, T) bool or None.
    Row (b*H + h)*T + i holds the columns (b*H + h)*T + j for key j selected for query i (listed
    block, j < T, real key), in increasing order. Returns crow (B*H*T + 1,) and col (nnz,) int64.
    Built per (batch item, layout head) from the listed blocks: memory O(nnz + B*H*T).
    """
    lay = (layout if layout.dim() == 3 else layout[None]).bool()
    hl, nb = lay.shape[0], lay.shape[-1]
    kpm = None if key_padding_mask is None else key_padding_mask.to(lay.device, torch.bool)
    seg = torch.arange(t, device=lay.device) // block
    per_item = []                      # per batch item: (keys, lengths (H_l, nb)); shared without padding
    for i in range(1 if kpm is None else b):
        keys, lengths = _block_segments(lay, block, t, None if kpm is None else kpm[i])
        per_item.append((keys, lengths.view(hl, nb)))
    row_len = torch.stack([lengths[:, seg] for _, lengths in per_item])     # (B|1, H_l, T)
    row_len = row_len.expand(b, h, t).reshape(-1)                            # (B*H*T,)
    crow = F.pad(row_len.cumsum(0), (1, 0))
    col = torch.empty(int(crow[-1]), dtype=torch.long, device=lay.device)
    for i in range(b):
        if i == 0 or kpm is not None:                                        # (T rows) per layout head
            keys, lengths = per_item[i if kpm is not None else 0]
            offsets = F.pad(lengths.sum(-1).cumsum(0), (1, 0)).tolist()      # segment starts per head
            tiled = [_tile_rows(keys[offsets[g]:offsets[g + 1]], lengths[g], block, t) for g in range(hl)]
        for j in range(h):
            start = int(crow[(i * h + j) * t])
            cols = tiled[j if hl > 1 else 0]
            torch.add(cols, (i * h + j) * t, out=col[start:start + cols.numel()])   # its diagonal block
    return crow, col


def _csr(crow, col, values, n):
    with warnings.catch_warnings():          # "sparse CSR support is in beta" (a one-time notice)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


def _transposed(crow, col, n):
    """CSR of the transposed pattern: (crow_t, col_t, perm), values_t = values[perm]."""
    positions = torch.arange(col.numel(), dtype=torch.float64, device=col.device)   # exact below 2^53
    tr = _csr(crow, col, positions, n).t().to_sparse_csr()
    return tr.crow_indices(), tr.col_indices(), tr.values().long()


def _row_softmax(scores, crow, phantoms):
    """Softmax of the CSR values row by row (rows with no entry stay empty); phantoms (rows,) or
    None: zero logits added to each row's denominator (faithful mode). Returns (nnz,) probs."""
    n = crow.numel() - 1
    row_of = torch.repeat_interleave(torch.arange(n, device=crow.device), crow.diff())   # (nnz,)
    m = torch.full((n,), float("-inf"), dtype=scores.dtype, device=scores.device)
    m = m.scatter_reduce(0, row_of, scores, reduce="amax")                   # (rows,)
    if phantoms is not None:
        m = torch.where(phantoms > 0, m.clamp(min=0.0), m)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m[row_of])                                        # (nnz,)
    z = torch.zeros(n, dtype=scores.dtype, device=scores.device).index_add_(0, row_of, e)
    if phantoms is not None:
        z += phantoms * torch.exp(-m)
    return e.div_(z[row_of])                                                 # rows with entries: z > 0


class _CsrAttention(torch.autograd.Function):
    """SDDMM -> row softmax -> SpMM, with a backward of the same kind (torch.sparse's own autograd
    builds (rows x rows) dense gradients): with P the probabilities and dS = P * (dP - rowsum(P dP))
    (also for the faithful P, whose rows sum to less than one),
    dV = P^T dO,  dP = SDDMM(dO, V^T),  dQ = scale dS K,  dK = scale dS^T Q."""

    @staticmethod
    def forward(ctx, qf, kf, vf, crow, col, phantoms, scale):
        n = qf.shape[0]
        pattern = _csr(crow, col, torch.zeros(col.numel(), dtype=qf.dtype, device=qf.device), n)
        scores = torch.sparse.sampled_addmm(pattern, qf, kf.t(), beta=0.0, alpha=scale).values()
        probs = _row_softmax(scores, crow, phantoms)                         # (nnz,)
        ctx.save_for_backward(qf, kf, vf, crow, col, probs)
        ctx.scale = scale
        return torch.sparse.mm(_csr(crow, col, probs, n), vf)                # SpMM, (rows, D)

    @staticmethod
    def backward(ctx, dout):
        qf, kf, vf, crow, col, probs = ctx.saved_tensors
        n = qf.shape[0]
        dout = dout.contiguous()
        pattern = _csr(crow, col, torch.zeros_like(probs), n)
        dp = torch.sparse.sampled_addmm(pattern, dout, vf.t(), beta=0.0).values()    # (nnz,)
        row_of = torch.repeat_interleave(torch.arange(n, device=crow.device), crow.diff())
        dot = torch.zeros(n, dtype=probs.dtype, device=probs.device).index_add_(0, row_of, probs * dp)
        ds = probs * (dp - dot[row_of])
        del dp, row_of
        crow_t, col_t, perm = _transposed(crow, col, n)
        dq = torch.sparse.mm(_csr(crow, col, ds, n), kf).mul_(ctx.scale)
        dk = torch.sparse.mm(_csr(crow_t, col_t, ds[perm], n), qf).mul_(ctx.scale)
        dv = torch.sparse.mm(_csr(crow_t, col_t, probs[perm], n), dout)
        return dq, dk, dv, None, None, None, None


def block_sparse_attention_csr(q, k, v, *, layout: torch.Tensor, block: int, key_padding_mask=None,
                               scale=None, softmax: str = "standard"):
    """Block-sparse attention by SDDMM -> row softmax -> SpMM on an element-level CSR matrix.

    q, k, v: (B, H, T, D) float32 or float64; layout: bool (nb, nb) or (H, nb, nb),
    nb = ceil(T / block); key_padding_mask: (B, T) bool, True = real key; softmax: 'standard' or
    'faithful'. Returns (B, H, T, D). Differentiable with respect to q, k and v; memory O(nnz).
    """
    if q.dtype not in DTYPES:
        raise ParameterError("dtype", q.dtype, "float32 or float64 (torch.sparse SDDMM/SpMM; the "
                             "official SPION path is fp32 only)")
    if softmax not in ("standard", "faithful"):
        raise ParameterError("softmax", softmax, "standard, faithful")
    b, h, t, d = q.shape
    n = b * h * t
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    crow, col = element_csr(layout.to(q.device).bool(), block, b, h, t, key_padding_mask)
    phantoms = None
    if softmax == "faithful":
        real = (torch.full((b, 1), t, device=q.device) if key_padding_mask is None
                else key_padding_mask.to(q.device).sum(-1, keepdim=True))    # (B, 1) N_b
        phantoms = (real.expand(b, h * t).reshape(n) - crow.diff()).to(q.dtype)   # N_b - nnz_i
    qf, kf, vf = (x.reshape(n, d) for x in (q, k, v))                        # (B*H*T, D)
    return _CsrAttention.apply(qf, kf, vf, crow, col, phantoms, float(scale)).reshape(b, h, t, d)
