"""Analytic FLOPs of a BERT-family encoder with and without Transkimmer skimming.

Convention (same as ``effx.profiling.count_flops`` / PyTorch): 1 multiply-add = 2 FLOPs, and only
matrix products are counted (LayerNorm, GELU, softmax, gather are ignored by both).
Per layer over n tokens, hidden d, FFN width f:
    projections Q, K, V, O: 4 * 2 n d^2;  scores QK^T and PV: 2 * 2 n^2 d;  FFN: 2 * 2 n d f.
Transkimmer predictor over n tokens: Linear(d, d) + Linear(d, 2) = 2 n d^2 + 4 n d.
The predictor of layer l sees the tokens that survived layer l-1 (all n for the first).
Head: pooler Linear(d, d) on CLS + classifier Linear(d, C).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Dims:
    hidden: int
    ffn: int
    layers: int
    num_labels: int = 2
    pooler: bool = True

    @classmethod
    def of(cls, config, num_labels: int = 2, pooler: bool = True) -> "Dims":
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                   num_labels, pooler)


def layer_flops(n: int, d: int, f: int) -> int:
    return 8 * n * d * d + 4 * n * n * d + 4 * n * d * f


def predictor_flops(n: int, d: int) -> int:
    return 2 * n * d * d + 4 * n * d


def head_flops(dims: Dims) -> int:
    return (2 * dims.hidden * dims.hidden if dims.pooler else 0) + 2 * dims.hidden * dims.num_labels


def baseline_flops(n: int, dims: Dims) -> int:
    """One sequence of n tokens through the plain encoder + head."""
    return dims.layers * layer_flops(n, dims.hidden, dims.ffn) + head_flops(dims)


def skim_flops(n: int, tokens_per_layer: Sequence[int], dims: Dims, predictors: bool = True) -> int:
    """One sequence of n tokens whose layer l computes tokens_per_layer[l] tokens, Transkimmer's
    predictors included (``predictors=False``: a rule that costs no matrix product, e.g. top-k
    by received attention, whose scores come out of the attention already computed)."""
    total, before = head_flops(dims), n
    for kept in tokens_per_layer:
        total += layer_flops(int(kept), dims.hidden, dims.ffn)
        total += predictor_flops(before, dims.hidden) if predictors else 0
        before = int(kept)
    return total


def padded_batch_flops(lengths, batches, dims: Dims, pad_to: int | None = None) -> float:
    """Mean FLOPs per example when each batch runs padded to its longest example (or `pad_to`):
    what a padded baseline is charged."""
    total = sum(len(b) * baseline_flops(pad_to or max(lengths[i] for i in b), dims) for b in batches)
    return total / sum(len(b) for b in batches)
