"""Fine-tuning a (skimming) encoder on one GLUE task: tokenisation, dynamic padding, training.

Batches are padded only to their own longest sequence (dynamic padding), both in training and
evaluation, so the baseline is never charged for padding it does not need. Seeds are fixed
(data order, dropout, Gumbel noise, new heads); results repeat on one machine and thread count.
Loss: task loss (cross-entropy, or MSE for STS-B) + lambda * kept-token fraction (Transkimmer's
skim loss, see ``model.SkimBert``).
"""
from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from effx.transkimmer.model import SkimBert


@dataclass
class TrainConfig:
    epochs: float = 1.0            # may be fractional: a fraction of one shuffled pass
    batch_size: int = 32
    lr: float = 5e-5               # encoder and head
    predictor_lr: float = 1e-4     # skim predictors (short CPU budgets: see the chapter)
    weight_decay: float = 0.01
    warmup: float = 0.06           # fraction of steps with linear warm-up, then linear decay
    skim_lambda: float = 0.0
    seed: int = 0
    freeze_word_embeddings: bool = True   # 11.7M of MiniLM's 22.7M weights: halves the Adam work


@dataclass
class Encoded:
    """A tokenised split: ragged token lists (no padding) and labels."""
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode(tokenizer, frame: pd.DataFrame, max_length: int = 128) -> Encoded:
    """Tokenise a GLUE frame (sentence1, sentence2 or None, label), truncating to max_length."""
    s1 = frame["sentence1"].tolist()
    pair = frame["sentence2"].notna().any()
    s2 = frame["sentence2"].tolist() if pair else None
    enc = tokenizer(s1, s2, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return Encoded(enc["input_ids"], types, frame["label"].to_numpy(), tokenizer.pad_token_id or 0)


def collate(data: Encoded, index, device="cpu", pad_to: int | None = None) -> dict:
    """Batch of examples `index`, padded to the longest of them (or to `pad_to`)."""
    index = list(index)
    width = max(len(data.input_ids[i]) for i in index)
    width = max(width, pad_to or 0)
    ids = torch.full((len(index), width), data.pad_id, dtype=torch.long)
    types = torch.zeros((len(index), width), dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        types[row, :n] = torch.tensor(data.token_type_ids[i])
        mask[row, :n] = 1
    labels = torch.as_tensor(data.labels[index])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "token_type_ids": types.to(device), "labels": labels.to(device)}


def batch_indices(n: int, batch_size: int, shuffle: bool = False, seed: int = 0,
                  limit: int | None = None) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if limit is not None:
        order = order[:limit]
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:                                     # regression (STS-B)
        return F.mse_loss(logits[:, 0], labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def _optimizer(model: SkimBert, cfg: TrainConfig) -> torch.optim.Optimizer:
    model.bert.embeddings.word_embeddings.weight.requires_grad_(not cfg.freeze_word_embeddings)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    pred = [p for n, p in trainable if n.startswith("predictors.")]
    rest = [p for n, p in trainable if not n.startswith("predictors.")]
    groups = [{"params": rest, "lr": cfg.lr}]
    if pred:
        groups.append({"params": pred, "lr": cfg.predictor_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def train(model: SkimBert, data: Encoded, cfg: TrainConfig, device="cpu",
          desc: str = "train") -> dict:
    """Fine-tune in place; returns per-step history (loss, task loss, kept fraction)."""
    seed_everything(cfg.seed)
    model.to(device).train()
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    steps = max(1, round(cfg.epochs * per_epoch))
    batches = []
    for epoch in range(math.ceil(cfg.epochs)):
        batches += batch_indices(len(data), cfg.batch_size, shuffle=True, seed=cfg.seed + epoch)
    batches = batches[:steps]
    opt = _optimizer(model, cfg)
    warm = max(1, int(cfg.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    hist = {"loss": [], "task_loss": [], "kept": []}
    bar = tqdm(batches, desc=desc, file=sys.stderr, mininterval=15, leave=False)
    for index in bar:
        b = collate(data, index, device)
        out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        tl = task_loss(out.logits, b["labels"])
        loss = tl + cfg.skim_lambda * out.skim_fraction if model.skim else tl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        hist["loss"].append(loss.item())
        hist["task_loss"].append(tl.item())
        hist["kept"].append(out.skim_fraction.item() if model.skim else 1.0)
        if not math.isfinite(hist["loss"][-1]):
            raise FloatingPointError(f"{desc}: loss is {hist['loss'][-1]} at step {len(hist['loss'])}")
        bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}", kept=f"{hist['kept'][-1]:.2f}", refresh=False)
    bar.close()
    model.eval()
    hist["steps"] = steps
    return hist
