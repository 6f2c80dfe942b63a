"""Gather-based Transkimmer inference: skimmed tokens are removed, so they cost nothing.

The masked computation (``model.SkimBert.forward``) still runs every layer over every token and
only *masks* skimmed ones. Here, after each predictor, the surviving tokens of every sequence are
gathered to the front (order preserved, CLS stays at position 0) and the batch is re-padded to the
largest number of survivors in the batch; padded slots are masked out of attention. A skimmed
token's state is written once, at the position it came from, into the output buffer: the result
equals the masked computation of the ``fixed`` variant (tested). At batch 1 there is no padding at
all and attention runs unmasked on the survivors.

For the ``paper`` variant, removal is *not* the trained function: that variant's softmax still
spans skimmed keys (probabilities multiplied by the mask, not renormalised), which removal cannot
reproduce without computing the skimmed keys; removal then runs the renormalised attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from effx.transkimmer.model import SkimBert, bert_layer, sdpa_attention
from effx.transkimmer.predictor import argmax_keep


@dataclass
class RemovalOutput:
    logits: torch.Tensor                # (B, C)
    hidden: torch.Tensor                # (B, T, d): final state of every token, original order
    tokens_per_layer: torch.Tensor      # (L, B): real tokens each layer computed
    width_per_layer: list[int]          # padded width each layer actually ran at (batch cost)


def _write(out, h, pos, rows):
    """out[b, pos[b, j]] = h[b, j] wherever rows[b, j]."""
    b, j = rows.nonzero(as_tuple=True)
    out[b, pos[b, j]] = h[b, j]


@torch.no_grad()
def skim_forward_removed(model: SkimBert, input_ids, attention_mask=None,
                         token_type_ids=None, skim: bool | None = None) -> RemovalOutput:
    """Evaluation forward with real token removal (argmax decisions). Shapes as ``SkimBert``;
    ``skim=False`` runs the plain encoder through the same code (the baseline)."""
    skim = model.skim if skim is None else skim and model.skim
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    alive = attention_mask.bool()                                   # (B, T') slot holds a kept token
    h = model.embed(input_ids, token_type_ids)                      # (B, T', d) packed states
    out = h.clone()                                                 # pads keep their embedding
    B, T, _ = h.shape
    pos = torch.arange(T, device=h.device).expand(B, T)             # original position of each slot
    counts, widths = [], []
    for i, layer in enumerate(model.layers):
        if skim:
            d = argmax_keep(model.predictors[i](h)).bool()
            d[:, 0] = True                                          # CLS (slot 0 stays CLS)
            _write(out, h, pos, alive & ~d)                         # skimmed now: frozen output
            alive = alive & d
            width = int(alive.sum(1).max())
            if width < h.shape[1]:
                # survivors first, original order kept (stable sort on "not alive")
                order = torch.argsort((~alive).to(torch.int8), dim=1, stable=True)[:, :width]
                h = torch.gather(h, 1, order[..., None].expand(-1, -1, h.shape[-1]))
                pos, alive = torch.gather(pos, 1, order), torch.gather(alive, 1, order)
        counts.append(alive.sum(1))
        widths.append(h.shape[1])
        h = bert_layer(layer, h, alive, None, sdpa_attention)
    _write(out, h, pos, alive)
    return RemovalOutput(model.head(out), out, torch.stack(counts), widths)
