"""SPION's sparsity pattern: convolutional flood filling of an averaged attention map.

Yoon, Han, Moon, "SPION: Layer-Wise Sparse Training of Transformer via Convolutional Flood
Filling" (arXiv 2309.12578, PAKDD 2024), reimplemented from the paper's description. For one
layer, from its attention probabilities averaged over batch and heads into an (N, N) map:

1. ``diagonal_convolution``: 2-D convolution with an F x F identity (diagonal) filter, same
   padding: each entry becomes the sum of the F entries on its diagonal segment, which keeps
   diagonal stripes and smears isolated noise.
2. ``block_scores``: average pooling with block size B to (nb, nb), nb = ceil(N / B).
3. ``flood_fill``: greedy walks from the top row and the left column towards the bottom-right
   that mark the above-threshold cells they pass (the exact walk is in its docstring).
4. The block diagonal is always added.

Variants (``spion_layout``): CF = 1-4 (the paper's main one), F = 2-4 without the convolution,
C = 1, 2, then the top-k blocks (a density) instead of the flood fill, then 4.
One layout per layer, shared by every head and batch item. Pure functions on tensors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from effx.attention.block_sparse import layout_density
from effx.errors import ParameterError

__all__ = ["AttentionMapMean", "attention_map", "block_scores", "diagonal_convolution",
           "flood_fill", "layout_density", "spion_layout", "top_k_blocks", "VARIANTS"]


# ------------------------------------------------------------------------------ the map

def attention_map(probs: torch.Tensor) -> torch.Tensor:
    """Attention probabilities (B, H, N, N) -> their mean over batch and heads, (N, N) float64."""
    if probs.dim() != 4 or probs.shape[-1] != probs.shape[-2]:
        raise ParameterError("probs", tuple(probs.shape), "a (B, H, N, N) tensor")
    return probs.detach().double().mean(dim=(0, 1))


class AttentionMapMean:
    """Running mean of attention maps over several batches (training: average between checks).

    ``update(probs)`` takes (B, H, N, N) probabilities; ``mean`` is the (N, N) float64 mean over
    every batch item and head seen since the last ``reset()`` (each item weighs the same).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | None = None      # (N, N) float64 sum over items and heads
        self.count = 0

    def update(self, probs: torch.Tensor) -> None:
        part = attention_map(probs) * (probs.shape[0] * probs.shape[1])   # (N, N) sum
        if self.total is not None and self.total.shape != part.shape:
            raise ParameterError("probs", tuple(probs.shape), f"N = {self.total.shape[-1]} as before")
        self.total = part if self.total is None else self.total + part.to(self.total.device)
        self.count += probs.shape[0] * probs.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        if self.total is None:
            raise RuntimeError("AttentionMapMean.mean before any update()")
        return self.total / self.count


# ------------------------------------------------------------------------------ steps 1 and 2

def diagonal_convolution(attn_map: torch.Tensor, filter_size: int = 31) -> torch.Tensor:
    """(N, N) -> (N, N): convolution with the F x F identity filter, 'same' padding (zeros).

    out[i, j] = sum_{t=0..F-1} map[i + t - p, j + t - p], p = (F - 1) // 2 (PyTorch's 'same'
    convention, so an even F reaches one further towards the bottom-right). Computed as F shifted
    sums, O(F N^2), instead of a dense F x F convolution. Returns float64.
    """
    if filter_size < 1:
        raise ParameterError("filter_size", filter_size, "an integer >= 1")
    m = attn_map.double()
    n0, n1 = m.shape
    p = (filter_size - 1) // 2
    padded = F.pad(m, (p, filter_size - 1 - p, p, filter_size - 1 - p))   # (N + F - 1, N + F - 1)
    out = torch.zeros_like(m)
    for t in range(filter_size):
        out += padded[t:t + n0, t:t + n1]
    return out


def block_scores(attn_map: torch.Tensor, block: int) -> torch.Tensor:
    """(N, N) -> (nb, nb), nb = ceil(N / block): the mean of each block x block tile.

    N is padded up to nb * block; the padding is not counted, so the last row and column of
    tiles are means over their real entries only (an edge tile is not diluted by padding).
    """
    if block < 1:
        raise ParameterError("block", block, "an integer >= 1")
    m = attn_map.double()
    n = m.shape[-1]
    nb = math.ceil(n / block)
    pad = nb * block - n
    sums = F.pad(m, (0, pad, 0, pad)).view(nb, block, nb, block).sum(dim=(1, 3))   # (nb, nb)
    sizes = torch.full((nb,), block, dtype=torch.float64, device=m.device)
    sizes[-1] = n - (nb - 1) * block                                                # real rows in the last tile
    return sums / (sizes[:, None] * sizes[None, :])


# ------------------------------------------------------------------------------ step 3

def flood_fill(scores: torch.Tensor, quantile: float) -> torch.Tensor:
    """(nb, nb) block scores -> bool (nb, nb): the cells marked by SPION's greedy walks.

    threshold = torch.quantile(scores, quantile) (linear interpolation); a cell is *above* the
    threshold when its score is strictly greater. One walk starts at every cell of the top row
    and of the left column (2 nb - 1 walks, row-major order of their start cells). A walk at
    cell (i, j):
      - stops if (i, j) is not above the threshold (the cell is not marked);
      - stops if (i, j) was already visited by an earlier walk (a walk's path depends only on its
        current cell, so the rest of it is already marked: this changes nothing but the cost);
      - otherwise marks (i, j) and steps to the largest of its neighbours right (i, j+1), down
        (i+1, j) and diagonal (i+1, j+1) that lie inside the grid; ties go to the diagonal, then
        down, then right. At the bottom-right cell there is no neighbour and the walk ends.
    So a walk ends at the first cell that is not above the threshold, or at the bottom-right
    corner; along the bottom row and right column it can only move right or down.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ParameterError("quantile", quantile, "a number in [0, 1]")
    nb = scores.shape[-1]
    threshold = torch.quantile(scores.double().flatten(), quantile).item()
    s = scores.double().tolist()                                   # python lists: fast scalar access
    visited = [[False] * nb for _ in range(nb)]
    starts = [(0, j) for j in range(nb)] + [(i, 0) for i in range(1, nb)]
    for i, j in starts:
        while True:
            if not s[i][j] > threshold or visited[i][j]:
                break
            visited[i][j] = True
            steps = [(i + di, j + dj) for di, dj in ((1, 1), (1, 0), (0, 1))   # tie order
                     if i + di < nb and j + dj < nb]
            if not steps:
                break
            i, j = max(steps, key=lambda c: s[c[0]][c[1]])         # max keeps the first of equals
    return torch.tensor(visited, dtype=torch.bool, device=scores.device).reshape(nb, nb)


def top_k_blocks(scores: torch.Tensor, density: float) -> torch.Tensor:
    """(nb, nb) -> bool (nb, nb): the k = max(1, round(density * nb^2)) highest-scoring blocks.

    Ties are broken in row-major order (a stable sort), so the result is deterministic.
    """
    if not 0.0 < density <= 1.0:
        raise ParameterError("density", density, "a fraction in (0, 1]")
    flat = scores.double().flatten()
    k = max(1, round(density * flat.numel()))
    keep = torch.argsort(flat, descending=True, stable=True)[:k]
    out = torch.zeros_like(flat, dtype=torch.bool)
    out[keep] = True
    return out.view_as(scores)


# ------------------------------------------------------------------------------ variants

def _variant_cf(attn_map, block, filter_size, quantile, density):
    return flood_fill(block_scores(diagonal_convolution(attn_map, filter_size), block), quantile)


def _variant_f(attn_map, block, filter_size, quantile, density):
    return flood_fill(block_scores(attn_map, block), quantile)


def _variant_c(attn_map, block, filter_size, quantile, density):
    kept = 1.0 - quantile if density is None else density
    return top_k_blocks(block_scores(diagonal_convolution(attn_map, filter_size), block), kept)


#: variant name -> (map, block, filter_size, quantile, density) -> bool (nb, nb) before the diagonal
VARIANTS = {"CF": _variant_cf, "F": _variant_f, "C": _variant_c}


def spion_layout(attn_map: torch.Tensor, variant: str = "CF", *, block: int = 64, filter_size: int = 31,
                 quantile: float = 0.96, density: float | None = None) -> torch.Tensor:
    """SPION block layout of one layer: (N, N) averaged attention map -> bool (nb, nb).

    variant: 'CF' (convolution then flood fill, the paper's main one), 'F' (flood fill of the
    un-convolved block scores) or 'C' (convolution then the top-k blocks, k from ``density``, the
    fraction of blocks kept; default 1 - quantile). ``quantile`` is the flood fill's threshold
    quantile (0.96 to 0.99 in the paper). The block diagonal is always added. nb = ceil(N / block);
    the layout is shared by heads and batch (feed it to ``block_sparse_attention``).
    """
    if variant not in VARIANTS:
        raise ParameterError("variant", variant, ", ".join(VARIANTS))
    if attn_map.dim() != 2 or attn_map.shape[0] != attn_map.shape[1]:
        raise ParameterError("attn_map", tuple(attn_map.shape), "a square (N, N) tensor")
    if density is not None and variant != "C":
        raise ParameterError("density", density, "None unless variant='C' (flood fill uses quantile)")
    chosen = VARIANTS[variant](attn_map, block, filter_size, quantile, density)      # (nb, nb)
    return chosen | torch.eye(chosen.shape[0], dtype=torch.bool, device=chosen.device)
