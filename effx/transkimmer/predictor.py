"""Transkimmer's skim predictor and its straight-through Gumbel decision.

Guan et al., "Transkimmer: Transformer Learns to Layer-wise Skim" (ACL 2022, arXiv 2205.07324).
Before every layer a small MLP scores each token: LayerNorm -> Linear(d, d) -> LayerNorm -> GELU
-> Linear(d, 2). Channel 0 is "skim", channel 1 is "keep". The output biases start at -5 / +5 so a
fresh predictor keeps everything and fine-tuning starts from the plain encoder.

Training uses a hard straight-through Gumbel-softmax: the forward value is an exact 0/1 decision,
the backward pass uses the gradient of the relaxed softmax. Evaluation is deterministic (argmax):
the official code left the Gumbel noise on at evaluation, which makes its inference random.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

SKIM, KEEP = 0, 1


class SkimPredictor(nn.Module):
    """Per-token keep/skim logits. (B, T, d) -> (B, T, 2)."""

    def __init__(self, hidden: int, keep_bias: float = 5.0, eps: float = 1e-12):
        super().__init__()
        self.norm_in = nn.LayerNorm(hidden, eps=eps)
        self.proj = nn.Linear(hidden, hidden)
        self.norm_mid = nn.LayerNorm(hidden, eps=eps)
        self.out = nn.Linear(hidden, 2)
        with torch.no_grad():
            self.out.bias[SKIM] = -keep_bias
            self.out.bias[KEEP] = keep_bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.norm_mid(self.proj(self.norm_in(h)))))


class _StraightThrough(torch.autograd.Function):
    """Forward: exact 0/1 (soft >= 0.5); backward: identity (the gradient of the soft value)."""

    @staticmethod
    def forward(ctx, soft):
        return (soft >= 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def hard_gumbel_keep(logits: torch.Tensor, tau: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """0/1 keep decision (B, T) with straight-through gradients (the relaxed keep probability's)."""
    u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)
    exponential = -torch.log(u.clamp_min(1e-20))                                # Exp(1) noise
    gumbel = -torch.log(exponential.clamp_min(1e-20))
    soft = torch.softmax((logits + gumbel) / tau, dim=-1)[..., KEEP]          # (B, T)
    return _StraightThrough.apply(soft)          # argmax of the 2 classes, exactly 0/1; grad soft


def keeps(logits: torch.Tensor) -> torch.Tensor:
    """Deterministic decision for evaluation, as booleans (B, T): keep when the keep logit is not
    below the skim logit."""
    return logits[..., KEEP] >= logits[..., SKIM]


def argmax_keep(logits: torch.Tensor) -> torch.Tensor:
    """``keeps`` as 0/1 in the logits' dtype (the masked computation multiplies by it)."""
    return keeps(logits).to(logits.dtype)
