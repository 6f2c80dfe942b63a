"""Inference with dropped tokens gathered away, so that they cost nothing.

The masked computation (``model.SkimBert.forward``) still runs every layer over every token and
only *masks* skimmed ones. ``gathered_forward`` instead asks a selection rule, before each layer,
which tokens go on; the survivors of every sequence are gathered to the front (order preserved,
CLS stays at position 0) and the batch is re-padded to the largest number of survivors in the
batch; padded slots are masked out of attention. A dropped token's state is written once, at the
position it came from, into the output buffer (``states=True``: traces and tests read it; what is
timed computes the logits alone, ``states=False``). At batch 1 there is no padding at all.

Two rules use it: Transkimmer's predictors (``skim_forward_removed``; equals the masked
computation of the ``fixed`` variant, tested) and top-k attention pruning (``topk.py``), which
needs the attention each token received in the previous layer (``received``).

For the ``paper`` variant, removal is *not* the trained function: that variant's softmax still
spans skimmed keys (probabilities multiplied by the mask, not renormalised), which removal cannot
reproduce without computing the skimmed keys; removal then runs the renormalised attention.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from effx.transkimmer.model import SkimBert, _probs, bert_layer, sdpa_attention
from effx.transkimmer.predictor import keeps


@dataclass
class RemovalOutput:
    logits: torch.Tensor                # (B, C)
    tokens_per_layer: torch.Tensor      # (L, B): real tokens each layer computed
    width_per_layer: list[int]          # padded width each layer actually ran at (batch cost)
    hidden: torch.Tensor | None = None  # (B, T, d): final state of every token, original order
    dropped_at: torch.Tensor | None = None   # (B, T): first layer that no longer computed each
                                        # token (L: computed by every layer; pads: 0)
                                        # (both None when the forward ran with states=False)


# select(layer index, h (B, T', d), alive (B, T') bool, original lengths (B,),
#        received (B, T') | None) -> keep (B, T') bool, or None to keep every alive token
Select = Callable[..., "torch.Tensor | None"]


def _write(out, h, pos, rows):
    """out[b, pos[b, j]] = h[b, j] wherever rows[b, j]; out (B, T, ...), pos distinct per row. A
    scatter of the old or the new value: no host read (a boolean index would wait for the
    device to say how many rows)."""
    idx = pos.reshape(*pos.shape, *(1,) * (out.dim() - 2)).expand(*pos.shape, *out.shape[2:])
    rows = rows.reshape(*rows.shape, *(1,) * (out.dim() - 2))
    out.scatter_(1, idx, torch.where(rows, h, out.gather(1, idx)))


def _bounds(counts: torch.Tensor) -> tuple[int, int]:
    """(fewest, most) live tokens of the batch: the one host read a layer needs (its width)."""
    low, high = torch.stack(torch.aminmax(counts)).tolist()
    return int(low), int(high)


def received_attention(store: dict):
    """An attention function (model.py signature) that also stores, in store['received'], the
    attention each key received: mean over heads of the sum over valid queries, (B, T)."""
    def attention(q, k, v, valid, keep=None, dropout_p=0.0):
        p = _probs(q, k, valid)                                           # (B, H, T, T)
        rows = p if valid is None else p * valid[:, None, :, None]
        store["received"] = rows.sum(2).mean(1)
        return F.dropout(p, dropout_p, training=dropout_p > 0) @ v
    return attention


@torch.no_grad()
def gathered_forward(model: SkimBert, input_ids, attention_mask=None, token_type_ids=None,
                     select: Select | None = None, needs_received=frozenset(),
                     states: bool = True) -> RemovalOutput:
    """Evaluation forward where `select` drops tokens before each layer (None: plain encoder).
    needs_received: layer indices whose `select` reads the previous layer's received attention.
    states=False: the logits and token counts alone (what a classifier serves, and what the wall
    clock times): dropped tokens' states are not written back, and at batch 1 the survivors are
    found by one ``nonzero``, whose size is the next layer's width (the same one host read)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    alive = attention_mask.bool()                                   # (B, T') slot holds a live token
    lengths = alive.sum(1)
    h = model.embed(input_ids, token_type_ids)                      # (B, T', d) packed states
    B, T, _ = h.shape
    pos = torch.arange(T, device=h.device).expand(B, T)             # original position of each slot
    cls = pos[:1] == 0                                              # (1, T): slot 0, CLS
    single = B == 1 and not states
    out = h.clone() if states else None                             # pads keep their embedding
    dropped_at = torch.where(alive, len(model.layers), 0) if states else None
    counts, widths, store = [], [], {}
    count = lengths                                                 # live tokens per row (B,)
    fewest = None                                                   # read when first needed
    for i, layer in enumerate(model.layers):
        d = None if select is None else select(i, h, alive, lengths, store.get("received"))
        if d is not None:
            d = d | cls[:, :h.shape[1]]                             # CLS (slot 0 stays CLS)
            if states:
                dropped = alive & ~d
                _write(out, h, pos, dropped)                        # dropped now: frozen output
                _write(dropped_at, torch.full_like(pos, i), pos, dropped)
            alive = alive & d
            if single:                                              # survivors, in order
                order = alive[0].nonzero()[:, 0]                    # the read: its size
                fewest = width = len(order)
                if width < h.shape[1]:
                    h, alive = h[:, order], alive[:, order]
                count = width
            else:
                count = alive.sum(1)
                fewest, width = _bounds(count)
                if width < h.shape[1]:
                    # survivors first, original order kept (stable sort, live slots first)
                    order = torch.argsort(alive.to(torch.int8), dim=1, descending=True,
                                          stable=True)[:, :width]
                    h = torch.gather(h, 1, order[..., None].expand(-1, -1, h.shape[-1]))
                    alive = torch.gather(alive, 1, order)
                    if states:
                        pos = torch.gather(pos, 1, order)
        if fewest is None:
            fewest, _ = _bounds(count)
            count = fewest if single else count                     # read now: not again
        counts.append(count)
        widths.append(h.shape[1])
        store.clear()
        attention = received_attention(store) if i + 1 in needs_received else sdpa_attention
        every = fewest == h.shape[1]                                # no slot to mask
        h = bert_layer(layer, h, None if every else alive, None, attention)
    if not states:
        tokens = (torch.tensor([[c] for c in counts], device=h.device) if single
                  else torch.stack(counts))
        return RemovalOutput(model.head(h), tokens, widths)
    _write(out, h, pos, alive)
    return RemovalOutput(model.head(out), torch.stack(counts), widths, out, dropped_at)


@torch.no_grad()
def skim_forward_removed(model: SkimBert, input_ids, attention_mask=None,
                         token_type_ids=None, skim: bool | None = None,
                         states: bool = True) -> RemovalOutput:
    """Transkimmer inference with real token removal (argmax decisions). Shapes as ``SkimBert``;
    ``skim=False`` runs the plain encoder through the same code (the baseline); ``states``: as
    ``gathered_forward``."""
    skim = model.skim if skim is None else skim and model.skim

    def predictors(i, h, alive, lengths, received):
        return keeps(model.predictors[i](h))
    return gathered_forward(model, input_ids, attention_mask, token_type_ids,
                            predictors if skim else None, states=states)
