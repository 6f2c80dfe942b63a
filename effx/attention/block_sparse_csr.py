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
keys never counted). Rows with no selected key give zeros. Gradients flow through
sampled_addmm, the CSR values and sparse.mm (PyTorch supports all three for float32/float64), so
this path also trains; bfloat16/float16 are refused (as the official code, fp32 only).
Memory: O(nnz) int64 indices and values, plus a (B, H, T, T) bool mask while the index is built
(``element_csr``): a mirror of the paper's design, not the fast path.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from effx.attention.reference import block_layout_mask
from effx.errors import ParameterError

DTYPES = (torch.float32, torch.float64)


def element_csr(layout: torch.Tensor, block: int, b: int, h: int, t: int, key_padding_mask=None):
    """Element-level CSR index of the selected entries of all (batch, head) pairs.

    layout: bool (nb, nb) or (H_l, nb, nb), H_l in (1, H); key_padding_mask: (B, T) bool or None.
    Row (b*H + h)*T + i holds the columns (b*H + h)*T + j for key j selected for query i (listed
    block, j < T, real key), in increasing order. Returns crow (B*H*T + 1,) and col (nnz,) int64.
    """
    lay = layout if layout.dim() == 3 else layout[None]
    per_head = block_layout_mask(lay, block, t).expand(h, t, t)              # (H, T, T)
    allowed = per_head[None].expand(b, h, t, t)                              # (B, H, T, T)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.to(layout.device, torch.bool)[:, None, None, :]
    row, col = allowed.reshape(b * h * t, t).nonzero(as_tuple=True)         # row-major: sorted
    col = col + (row // t) * t                                               # into its diagonal block
    counts = torch.bincount(row, minlength=b * h * t)
    crow = F.pad(counts.cumsum(0), (1, 0))
    return crow, col


def _csr(crow, col, values, n):
    with warnings.catch_warnings():          # "sparse CSR support is in beta" (a one-time notice)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


def block_sparse_attention_csr(q, k, v, *, layout: torch.Tensor, block: int, key_padding_mask=None,
                               scale=None, softmax: str = "standard"):
    """Block-sparse attention by SDDMM -> row softmax -> SpMM on an element-level CSR matrix.

    q, k, v: (B, H, T, D) float32 or float64; layout: bool (nb, nb) or (H, nb, nb),
    nb = ceil(T / block); key_padding_mask: (B, T) bool, True = real key; softmax: 'standard' or
    'faithful'. Returns (B, H, T, D). Differentiable with respect to q, k and v.
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
    nnz_row = crow.diff()                                                    # (B*H*T,)
    row_of = torch.repeat_interleave(torch.arange(n, device=q.device), nnz_row)   # (nnz,)
    qf, kf, vf = (x.reshape(n, d) for x in (q, k, v))                        # (B*H*T, D)

    pattern = _csr(crow, col, torch.zeros(col.numel(), dtype=q.dtype, device=q.device), n)
    scores = torch.sparse.sampled_addmm(pattern, qf, kf.t(), beta=0.0, alpha=scale).values()  # (nnz,)

    # row softmax over the CSR values; the max is a constant shift (no gradient needed)
    m = torch.full((n,), float("-inf"), dtype=q.dtype, device=q.device)
    m = m.scatter_reduce(0, row_of, scores.detach(), reduce="amax")          # (B*H*T,)
    if softmax == "faithful":
        real = (torch.full((b, 1), t, device=q.device) if key_padding_mask is None
                else key_padding_mask.to(q.device).sum(-1, keepdim=True))    # (B, 1) N_b
        phantoms = (real.expand(b, h * t).reshape(n) - nnz_row).to(q.dtype)  # N_b - nnz_i
        m = torch.where(phantoms > 0, m.clamp(min=0.0), m)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m[row_of])                                        # (nnz,)
    z = torch.zeros(n, dtype=q.dtype, device=q.device).index_add(0, row_of, e)
    if softmax == "faithful":
        z = z + phantoms * torch.exp(-m)
    probs = e / z[row_of]                                                    # rows with entries: z > 0

    out = torch.sparse.mm(_csr(crow, col, probs, n), vf)                     # SpMM, (B*H*T, D)
    return out.reshape(b, h, t, d)
