"""Block-sparse attention with one layout of (block x block) tiles, as in BigBird and SPION.

A layout is a bool tensor (nb, nb) shared by heads, or (H, nb, nb) per head; nb = ceil(T / block).
Query block r attends to the key blocks c with layout[r, c] True.

Two softmax semantics (SPION, Yoon, Han, Moon, arXiv 2309.12578):
  standard  masked softmax over the selected keys; a row with no selected key gives zeros.
  faithful  the official SPION kernel's quirk: every unselected key counts as a logit equal to 0
            in the denominator and adds nothing to the numerator. For query i of batch item b:
                out_i = sum_{j sel} e^{s_ij} v_j / (sum_{j sel} e^{s_ij} + (N_b - nnz_i))
            with N_b = the number of real (unpadded) keys of item b (T without key padding) and
            nnz_i = the number of real keys selected for row i. Padded keys never count, neither
            as selected keys nor as zero logits, so N_b does not depend on how much padding there is.
            The max used for stability includes the zero logits (max(rowmax, 0) when N_b > nnz_i):
            the same value as the official exp(-rowmax) form, without overflow.

One call, three paths (``backend=``):
  torch   effx.attention.block_sparse_torch: for each query block, its listed key blocks gathered,
          query blocks grouped in buckets by their number of listed blocks, so work scales with the
          listed blocks even for uneven layouts (BigBird's global row); differentiable (trains on CPU).
  triton  effx.kernels.block_sparse_triton, FlashAttention-2 style forward and backward; chosen by
          'auto' on CUDA tensors when Triton imports and the block is a power of two >= 16.
  csr     effx.attention.block_sparse_csr: torch.sparse element-level CSR, SDDMM -> softmax -> SpMM,
          mirroring the paper's cuSPARSE design (float32/float64).
``faithful_reference`` is the dense float64 emulation of the faithful softmax that tests use beside
``effx.attention.reference.attention_reference`` (the standard one).

What a path derives from the layout alone (the Triton ``BlockIndex``, the torch path's bucket plan)
needs host synchronisation, so the public call keeps it in ``LAYOUT_CACHE`` while the caller's
layout tensor lives and is not written in place: calling again with the same layout (every
training step) reuses it.
"""
from __future__ import annotations

import math
import weakref

import torch

from effx.attention.block_sparse_csr import block_sparse_attention_csr
from effx.attention.block_sparse_torch import (block_sparse_attention_torch, check_layout_shape, checked_layout,
                                               plan_buckets, torch_path_flops)
from effx.errors import ParameterError

try:  # the kernel is optional: CPU-only installs and old Triton still work through the fallback
    from effx.kernels.block_sparse_triton import block_index, block_sparse_attention_triton, kernel_supports
    HAS_TRITON_KERNEL = True
except Exception:  # noqa: BLE001 - any import failure means "no kernel"
    block_index = block_sparse_attention_triton = kernel_supports = None
    HAS_TRITON_KERNEL = False

SOFTMAX = ("standard", "faithful")
BACKENDS = ("auto", "torch", "triton", "csr")


def band_layout(nb: int, width: int = 1, device=None) -> torch.Tensor:
    """Block-diagonal band: query block r sees key blocks r-width..r+width."""
    idx = torch.arange(nb, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= width


def layout_density(layout: torch.Tensor) -> float:
    """Fraction of the (nb, nb) blocks that are listed (mean over heads for an (H, nb, nb) layout)."""
    return float(layout.float().mean())


def faithful_reference(q, k, v, *, mask=None, key_padding_mask=None, scale=None, upcast=True):
    """Dense emulation of the faithful softmax, built on the same masked scores as the reference.

    q, k, v: (B, H, T, D); mask: bool broadcastable to (B, H, T, T), True = selected;
    key_padding_mask: (B, T) bool, True = real key. Unselected real keys get logit 0, padded keys
    -inf; the softmax is over the whole row and only selected keys feed the output. Float64 when
    ``upcast``; returns (B, H, T, D) in q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    dtype = q.dtype
    if upcast:
        q, k, v = q.double(), k.double(), v.double()
    scores = (q @ k.transpose(-2, -1)) * scale                               # (B, H, T, T)
    real = torch.ones_like(scores, dtype=torch.bool)
    if key_padding_mask is not None:
        real = real & key_padding_mask[:, None, None, :]
    selected = real if mask is None else real & mask
    logits = torch.where(selected, scores, torch.where(real, torch.zeros_like(scores), float("-inf")))
    probs = torch.softmax(logits, dim=-1).nan_to_num(0.0) * selected         # (B, H, T, T)
    return (probs @ v).to(dtype)


class LayoutCache:
    """Objects built from a layout tensor, kept while that tensor lives and is not written in place.

    An entry is found by the layout object itself (its id, checked through a weak reference, so a
    new tensor at a recycled address never matches), its version counter (bumped by every
    in-place write, views included) and ``key`` (what else the object depends on: the path, the
    block, the device). Writes through ``.data`` bypass the version counter: build a new tensor.
    The entry of a dead layout is dropped (the objects are built from a copy of it, so they do not
    keep it alive); at most ``size`` entries are kept (oldest out).
    """

    def __init__(self, size: int = 64):
        self.size, self.hits, self.misses = size, 0, 0
        self._entries: dict = {}

    def get(self, layout: torch.Tensor, key: tuple, build):
        try:
            state = (layout._version, tuple(layout.shape), layout.dtype)
        except RuntimeError:                 # an inference tensor has no version counter
            return build()
        slot = (id(layout), key)
        entry = self._entries.get(slot)
        if entry is not None and entry[0]() is layout and entry[1] == state:
            self.hits += 1
            return entry[2]
        self.misses += 1
        value = build()
        entries = self._entries
        self._entries.pop(slot, None)
        self._entries[slot] = (weakref.ref(layout, lambda _, slot=slot: entries.pop(slot, None)), state, value)
        while len(self._entries) > self.size:
            self._entries.pop(next(iter(self._entries)))
        return value

    def clear(self) -> None:
        self._entries.clear()


#: the public call's cache of BlockIndex (Triton) and BucketPlan (torch) per layout
LAYOUT_CACHE = LayoutCache()


def _triton_path(q, k, v, **kw):
    if not HAS_TRITON_KERNEL:
        raise RuntimeError("backend='triton' requested but effx.kernels.block_sparse_triton failed to import")
    return block_sparse_attention_triton(q, k, v, **kw)      # looked up at call time (tests can spy)


def _csr_path(q, k, v, **kw):
    return block_sparse_attention_csr(q, k, v, **kw)


#: backend name -> path; every path takes (q, k, v, *, layout, block, key_padding_mask, scale, softmax)
PATHS = {"torch": block_sparse_attention_torch, "triton": _triton_path, "csr": _csr_path}

#: backend name -> (lay3 (H_l, nb, nb) bool, block) -> what the path takes as ``layout`` instead
PREPARED = {"torch": lambda lay3, block: plan_buckets(lay3),
            "triton": lambda lay3, block: block_index(lay3, block)}


def choose_backend(q: torch.Tensor, block: int, backend: str = "auto") -> str:
    """'auto' -> 'triton' for CUDA tensors the kernel supports when it imports, else 'torch'."""
    if backend != "auto":
        return backend
    if q.is_cuda and HAS_TRITON_KERNEL and kernel_supports(block, q.shape[-1], q.dtype):
        return "triton"
    return "torch"


def block_sparse_attention(q, k, v, *, layout: torch.Tensor, block: int, key_padding_mask=None,
                           scale=None, softmax: str = "standard", backend: str = "auto"):
    """Block-sparse attention. q, k, v: (B, H, T, D) -> (B, H, T, D).

    layout: bool (nb, nb) shared by heads, or (H, nb, nb); nb = ceil(T / block).
    key_padding_mask: (B, T) bool, True = real key. scale: default 1/sqrt(D).
    softmax: 'standard' or 'faithful' (module docstring). backend: 'auto', 'torch', 'triton', 'csr'.
    """
    if softmax not in SOFTMAX:
        raise ParameterError("softmax", softmax, ", ".join(SOFTMAX))
    if backend not in BACKENDS:
        raise ParameterError("backend", backend, ", ".join(BACKENDS))
    if q.dim() != 4 or not (q.shape == k.shape == v.shape):
        raise ParameterError("q, k, v shapes", (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
                             "one shared (B, H, T, D) shape")
    check_layout_shape(layout, q, block)
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (q.shape[0], q.shape[2]):
        raise ParameterError("key_padding_mask", tuple(key_padding_mask.shape), f"(B, T) = "
                             f"{(q.shape[0], q.shape[2])}")
    name = choose_backend(q, block, backend)
    prepare = PREPARED.get(name) if name != "triton" or HAS_TRITON_KERNEL else None
    if prepare is not None:                  # built on a copy of the layout: the cache must not keep it alive
        given = LAYOUT_CACHE.get(layout, (name, block, q.device),
                                 lambda: prepare(checked_layout(layout, q, block).clone(), block))
    else:
        given = checked_layout(layout, q, block)
        given = given if layout.dim() == 3 else given[0]
    return PATHS[name](q, k, v, layout=given, block=block, key_padding_mask=key_padding_mask,
                       scale=scale, softmax=softmax)


# ------------------------------------------------------------------------------------------
# Spec (effx.attention.spec): the facts about this variant, read by the encoder and the studies.
# The layout is an option: None builds a band of `band` blocks on each side from T; a given
# layout (e.g. SPION's learned per-layer layout) is used as it is. FLOPs: what the torch path
# computes and FlopCounterMode counts (each bucket of query blocks padded to its longest row, and
# T to whole blocks: ``torch_path_flops``); the csr and triton paths are not seen by FlopCounterMode yet.
# ------------------------------------------------------------------------------------------
from effx.attention.reference import block_layout_mask  # noqa: E402
from effx.attention.spec import AttentionSpec  # noqa: E402


def layout_at(t: int, o: dict) -> torch.Tensor:
    """The layout used at length t: ``o['layout']`` if given, else a band of ``o['band']`` blocks."""
    if o["layout"] is not None:
        return o["layout"]
    return band_layout(math.ceil(t / o["block"]), o["band"])


def _call_options(t: int, o: dict) -> dict:
    return {"layout": layout_at(t, o), "block": o["block"], "softmax": o["softmax"], "backend": o["backend"]}


def _keys_per_query(t: int, o: dict) -> float:
    """Mean selected keys per query (the last block holds t - (nb-1)*block positions), over heads."""
    lay = layout_at(t, o).to("cpu", torch.float64)
    nb, block = lay.shape[-1], o["block"]
    sizes = torch.full((nb,), float(block), dtype=torch.float64)
    sizes[-1] = t - (nb - 1) * block
    keys_per_row = lay @ sizes                                        # (..., nb): keys of a query in row r
    return float((keys_per_row * sizes).sum(-1).mean() / t)


def _counted_flops(batch: int, heads: int, t: int, head_dim: int, o: dict) -> float:
    """The torch path's work: each bucket of query blocks against its longest row's blocks."""
    return torch_path_flops(layout_at(t, o).bool(), o["block"], batch, heads, head_dim)


BLOCK_SPARSE = AttentionSpec(
    "block_sparse", block_sparse_attention,
    options={"block": 64, "band": 1, "layout": None, "softmax": "standard", "backend": "auto"},
    runtime=("backend",), build=_call_options, keys=_keys_per_query, count=_counted_flops,
    pattern=lambda t, o: block_layout_mask(layout_at(t, o).bool(), o["block"], t),
    backward_factor=2.0,
    summary="block-sparse attention over a layout of (block x block) tiles (BigBird, SPION); "
            "default layout: a band of `band` blocks on each side of the diagonal")
