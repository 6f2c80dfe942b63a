"""The Transkimmer encoder: a Hugging Face BERT-family encoder with a skim predictor per layer.

Guan et al., ACL 2022 (arXiv 2205.07324). This module is the *masked* computation, used for
training and as the reference the gather-based inference (``removal.py``) must equal:

* before layer l a ``SkimPredictor`` scores every token; the decision (straight-through hard
  Gumbel in training, argmax at evaluation) is multiplied into a cumulative keep mask, so a token
  once skimmed never returns; CLS (position 0) is always kept;
* a skimmed token is no longer attended to, and its hidden state is frozen: it is forwarded to the
  output with the value it had when it was skimmed;
* the skim loss term is the mean over layers of the kept-token fraction (``fixed``: over real
  tokens; ``paper``: over all padded positions, as the official code); ``loss.py`` converts
  between this lambda and the official code's.

Two variants (``ATTENTION`` registry, one function each, same signature):

* ``paper``: the first release: softmax over all non-pad keys, then probabilities multiplied by
  the keep mask (kept tokens' attention is *not* renormalised). Pad tokens are scored by the
  predictor and counted in the kept fraction (an easy, inflated win).
* ``fixed``: masked softmax (probabilities renormalised over kept keys). Pads are never kept,
  never scored and excluded from the kept fraction.

The encoder weights are the HF ``BertLayer`` modules themselves; ``bert_layer`` runs one of them
with the attention passed in, so the plain encoder and every variant share one layer code path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from effx.errors import ParameterError
from effx.transkimmer.predictor import SkimPredictor, argmax_keep, hard_gumbel_keep

VARIANTS = ("paper", "fixed")


# -- attention functions: (q, k, v (B, H, T, D), valid (B, T) bool, keep (B, T) float | None,
#    dropout p) -> (B, H, T, D) --------------------------------------------------------------
def sdpa_attention(q, k, v, valid, keep=None, dropout_p=0.0):
    """Plain masked softmax attention over valid keys (keep must be None: nothing skimmed).
    Callers pass ``valid=None`` when every key is valid, having read that from the device once
    per forward (or per width change), not once per layer: the kernel then runs unmasked."""
    mask = None if valid is None else valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def _probs(q, k, valid):
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5                     # (B, H, T, T)
    if valid is not None:
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def paper_attention(q, k, v, valid, keep=None, dropout_p=0.0):
    """Softmax, then probabilities times the keep mask, not renormalised (first release)."""
    p = _probs(q, k, valid)
    if keep is not None:
        p = p * keep[:, None, None, :]
    return F.dropout(p, dropout_p, training=dropout_p > 0) @ v


def fixed_attention(q, k, v, valid, keep=None, dropout_p=0.0):
    """Masked softmax over kept keys, written as renormalised probabilities so that the keep mask
    stays differentiable (equal to softmax over kept keys when keep is exactly 0/1)."""
    p = _probs(q, k, valid)
    if keep is not None:
        p = p * keep[:, None, None, :]
        p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    return F.dropout(p, dropout_p, training=dropout_p > 0) @ v


ATTENTION: dict[str, Callable] = {"paper": paper_attention, "fixed": fixed_attention,
                                  "none": sdpa_attention}


def bert_layer(layer: nn.Module, h: torch.Tensor, valid: torch.Tensor | None,
               keep: torch.Tensor | None = None, attention: Callable = sdpa_attention) -> torch.Tensor:
    """Run one HF ``BertLayer`` on h (B, T, d) with the given attention function."""
    sa = layer.attention.self
    B, T, _ = h.shape
    H, D = sa.num_attention_heads, sa.attention_head_size
    q, k, v = (lin(h).view(B, T, H, D).transpose(1, 2) for lin in (sa.query, sa.key, sa.value))
    p = sa.dropout.p if layer.training else 0.0
    ctx = attention(q, k, v, valid, keep, p).transpose(1, 2).reshape(B, T, H * D)   # (B, T, d)
    a = layer.attention.output(ctx, h)              # dense, dropout, LayerNorm(x + h)
    return layer.output(layer.intermediate(a), a)   # FFN, dropout, LayerNorm(x + a)


@dataclass
class SkimOutput:
    logits: torch.Tensor            # (B, C)
    hidden: torch.Tensor            # (B, T, d): last state of every token (skimmed ones frozen)
    keep: list[torch.Tensor]        # per layer, (B, T) cumulative keep mask used by that layer
    skim_fraction: torch.Tensor     # scalar: mean over layers of the kept fraction (loss term)


class SkimBert(nn.Module):
    """A BERT-family encoder + classification head, with (``skim=True``) a predictor per layer."""

    def __init__(self, bert: nn.Module, num_labels: int, skim: bool = True, variant: str = "fixed",
                 tau: float = 1.0, keep_bias: float = 5.0):
        super().__init__()
        if variant not in VARIANTS:
            raise ParameterError("variant", variant, ", ".join(VARIANTS))
        self.bert, self.skim, self.variant, self.tau = bert, skim, variant, tau
        self.frozen_decisions = False      # True: deterministic decisions, predictors not trained
        d = bert.config.hidden_size
        eps = bert.config.layer_norm_eps
        self.predictors = nn.ModuleList(
            [SkimPredictor(d, keep_bias, eps) for _ in self.layers]) if skim else None
        self.dropout = nn.Dropout(bert.config.hidden_dropout_prob)
        self.classifier = nn.Linear(d, num_labels)

    @property
    def layers(self) -> nn.ModuleList:
        return self.bert.encoder.layer

    def embed(self, input_ids, token_type_ids=None) -> torch.Tensor:
        return self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from the CLS state (B, T, d) -> (B, C), through the pooler when there is one."""
        cls = h[:, 0]
        if getattr(self.bert, "pooler", None) is not None:
            cls = self.bert.pooler.activation(self.bert.pooler.dense(cls))
        return self.classifier(self.dropout(cls))

    def decide(self, layer_index: int, h: torch.Tensor) -> torch.Tensor:
        """0/1 keep decision (B, T) of layer `layer_index`'s predictor; CLS always kept.

        Training: straight-through hard Gumbel, unless ``frozen_decisions`` (argmax, no gradient:
        the last phase of training, as learned token pruning does). CLS is a constant 1 chosen by
        ``torch.where``: no gradient reaches the predictor through it, and every other token gets
        the full straight-through gradient (``torch.maximum`` would split the gradient on ties,
        i.e. at CLS and at every skimmed token)."""
        logits = self.predictors[layer_index](h)
        if self.training and not self.frozen_decisions:
            d = hard_gumbel_keep(logits, self.tau)
        else:
            d = argmax_keep(logits).detach()
        is_cls = torch.arange(d.shape[1], device=d.device) == 0                 # (T,)
        return torch.where(is_cls, torch.ones((), dtype=d.dtype, device=d.device), d)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None,
                skim: bool | None = None, padded: bool | None = None) -> SkimOutput:
        """input_ids (B, T); ``skim=False`` runs the plain encoder (the baseline's cost).
        ``padded``: whether some row holds padding, when the caller knows it on the host (a
        batch's lengths); None: the plain encoder reads it from the device, once. Only the plain
        encoder uses it (unmasked attention when nothing is padded)."""
        skim = self.skim if skim is None else skim and self.skim
        if attention_mask is None:
            attention_mask, padded = torch.ones_like(input_ids), False
        valid = attention_mask.bool()                                   # (B, T) real tokens
        h = self.embed(input_ids, token_type_ids)
        if not skim:
            if padded is None:
                padded = not bool(valid.all())                          # one host read
            every = valid if padded else None
            for layer in self.layers:
                h = bert_layer(layer, h, every)
            return SkimOutput(self.head(h), h, [], h.new_zeros(()))
        attention = ATTENTION[self.variant]
        # paper: pads start "kept" and are scored; fixed: pads are never kept
        keep = valid.to(h.dtype) if self.variant == "fixed" else torch.ones_like(valid, dtype=h.dtype)
        masks, fractions = [], []
        for i, layer in enumerate(self.layers):
            keep = keep * self.decide(i, h)
            masks.append(keep)
            if self.variant == "fixed":
                fractions.append((keep * valid).sum() / valid.sum())
            else:
                fractions.append(keep.mean())
            new = bert_layer(layer, h, valid, keep, attention)
            k = keep[..., None]
            h = k * new + (1 - k) * h                   # skimmed tokens keep their last state
        return SkimOutput(self.head(h), h, masks, torch.stack(fractions).mean())


# -- loading (kept here for older callers; see encoders.py) --------------------------------------
from effx.transkimmer.encoders import encoder_path, load_encoder  # noqa: E402,F401
