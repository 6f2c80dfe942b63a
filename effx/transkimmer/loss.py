"""Losses of Transkimmer training, and what our skim-loss weight means in the official code's units.

Task loss: cross-entropy (MSE for STS-B). Optional distillation from the fine-tuned baseline's
logits (temperature-scaled KL, or MSE for regression). Skim loss: ``SkimOutput.skim_fraction``.

The two skim losses. The official code (ChandlerGuan/Transkimmer, ``modeling_transkimer.py``,
``BertForSequenceClassification.forward``) adds ``lambda_paper * S_paper`` with

    S_paper = (1/L) sum_l  mean_b ( sum_t m[l, b, t] ) / T

where m is the cumulative 0/1 keep mask over *every* position of the padded batch (CLS constant 1,
pads scored by the predictors like real tokens) and T is the padded width of that batch. Its GLUE
script (``scripts/run_glue.sh``) truncates at 512 tokens and does not pass ``--pad_to_max_length``,
so batches of 32 are padded dynamically to their longest example, drawn at random (no bucketing):
T is the longest example of each random batch, not a fixed 128 or 512.

Our ``fixed`` variant adds ``lambda * S_ours`` with S_ours = (1/L) sum_l (sum_bt m v) / (sum_bt v),
v the real-token mask (pads are never kept, never counted). The ``paper`` variant computes S_paper
itself (over the positions of *our* padded batches).

Conversion. Per real token, the gradient pressure is lambda_paper / (L B T) in the official code
and lambda / (L sum_b n_b) here, so the two push real tokens equally hard when

    lambda = lambda_paper * rho,    rho = sum_b n_b / (B T)   (the batch's fill ratio),

averaged over batches. With random dynamically padded batches of 32 (MiniLM's tokenizer, 128
tokens) rho is 0.34 on SST-2's training set, 0.50 CoLA, 0.67 MRPC, 0.41 STS-B, 0.52 RTE: the
official lambda 0.5 is about lambda 0.17 here on SST-2. The official loss also pushes the predictors to drop
pads (``1 - rho`` of its positions), a saving a dynamically padded or removal-based baseline never
pays: dropping them is an easy win that only a padded baseline rewards (the official issue
tracker reports it too)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over (B, C) logits, or MSE when C == 1 (regression, STS-B)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits[:, 0], labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, times T^2 (Hinton et al.);
    MSE to the teacher's output for regression. logits, teacher: (B, C)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits, teacher.to(logits.dtype))
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher.to(logits.dtype) / t, -1),
                    reduction="batchmean", log_target=True) * t * t


def fill_ratio(lengths, batches) -> float:
    """Mean over batches of (real tokens) / (batch size x padded width): rho above."""
    lengths = np.asarray(lengths)
    ratios = [lengths[b].sum() / (len(b) * lengths[b].max()) for b in batches if len(b)]
    return float(np.mean(ratios))


def official_fill_ratio(lengths, batch_size: int = 32, seed: int = 0) -> float:
    """rho of the official GLUE recipe on these (already truncated) lengths: random batches,
    each padded to its own longest example."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    return fill_ratio(lengths, [order[i:i + batch_size] for i in range(0, len(order), batch_size)])


def lambda_from_paper(lambda_paper: float, rho: float) -> float:
    """Our ``fixed``-variant lambda that pushes real tokens as hard as ``lambda_paper`` did."""
    return lambda_paper * rho


def lambda_to_paper(lam: float, rho: float) -> float:
    """The official code's lambda equivalent to our ``fixed``-variant ``lam`` (inverse of the above)."""
    return lam / rho
