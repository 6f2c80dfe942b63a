"""Top-k attention pruning: a rule that learns nothing, the floor Transkimmer must beat.

Applied at inference to the fine-tuned baseline (no training), in the spirit of PoWER-BERT's
significance score (Goyal et al., ICML 2020): before each layer l of a fixed schedule
(``prune_layers``, default every layer but the first), each example keeps its
ceil(n r^j) tokens (n: its length, j: pruning points up to l) that received the most attention
in layer l-1 (attention probabilities summed over the valid queries, averaged over heads); CLS is
always kept. Dropped tokens are gathered away (``removal.gathered_forward``), as Transkimmer's.

The one free number, the keep ratio r, is set by bisection so that the mean analytic FLOPs per
example over a set of lengths (the training set's: no peeking at the dev set) is a target fraction
of the unpadded baseline's. The scores cost no matrix product (the probabilities are computed by
the attention anyway), so no predictor FLOPs are charged.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from effx.errors import ParameterError
from effx.transkimmer.flops import Dims, baseline_flops, skim_flops
from effx.transkimmer.model import SkimBert
from effx.transkimmer.removal import RemovalOutput, gathered_forward


def default_prune_layers(num_layers: int) -> tuple[int, ...]:
    return tuple(range(1, num_layers))


def check_prune_layers(prune_layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    layers = tuple(sorted(set(int(x) for x in prune_layers))) or default_prune_layers(num_layers)
    if not all(1 <= x < num_layers for x in layers):
        raise ParameterError("prune_layers", prune_layers, f"layer indices in 1..{num_layers - 1}",
                             why="layer 0 has no previous attention to score tokens with")
    return layers


def keep_counts(n: int, ratio: float, prune_layers: Sequence[int], num_layers: int) -> list[int]:
    """Tokens each layer computes for an example of n tokens (the rule of ``topk_select``)."""
    out, j, k = [], 0, n
    for layer in range(num_layers):
        if layer in prune_layers:
            j += 1
            k = max(1, math.ceil(n * ratio ** j))
        out.append(k)
    return out


def flops_fraction(lengths, ratio: float, prune_layers: Sequence[int], dims: Dims) -> float:
    """Mean FLOPs per example with pruning over mean FLOPs of the unpadded baseline."""
    pruned = sum(skim_flops(int(n), keep_counts(int(n), ratio, prune_layers, dims.layers), dims,
                            predictors=False) for n in lengths)
    return pruned / sum(baseline_flops(int(n), dims) for n in lengths)


def ratio_for_target(lengths, target: float, prune_layers: Sequence[int], dims: Dims,
                     iterations: int = 40) -> float:
    """Keep ratio r whose FLOPs fraction over `lengths` is closest to `target` (bisection: the
    fraction grows with r, in steps because token counts are whole)."""
    lengths = np.asarray(lengths)
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if flops_fraction(lengths, mid, prune_layers, dims) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda r: abs(flops_fraction(lengths, r, prune_layers, dims) - target))


def topk_select(ratio: float, prune_layers: Sequence[int]):
    """The selection rule for ``gathered_forward``."""
    prune_layers = tuple(prune_layers)

    def select(i, h, alive, lengths, received):
        if i not in prune_layers:
            return None
        j = sum(1 for x in prune_layers if x <= i)
        k = torch.ceil(lengths.to(torch.float64) * ratio ** j).long().clamp_min(1)      # (B,)
        score = received.masked_fill(~alive, float("-inf"))
        score[:, 0] = float("inf")                                                      # CLS
        order = torch.argsort(score, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        return (rank < k[:, None]) & alive
    return select


@torch.no_grad()
def topk_forward(model: SkimBert, input_ids, attention_mask=None, token_type_ids=None, *,
                 ratio: float, prune_layers: Sequence[int], states: bool = True) -> RemovalOutput:
    """Inference of the plain encoder of `model` with top-k attention pruning. input_ids (B, T);
    ``states``: as ``gathered_forward``."""
    return gathered_forward(model, input_ids, attention_mask, token_type_ids,
                            topk_select(ratio, prune_layers), needs_received=set(prune_layers),
                            states=states)
