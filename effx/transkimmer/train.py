"""One training stage of a (skimming) encoder on a GLUE task, resumable and deterministic.

A ``Stage`` is the whole optimisation recipe of one stage: 1 = fine-tuning from the pre-trained
encoder, 2 = what follows it (Transkimmer, or the baseline trained on for the same budget).
``train_stage`` runs it with periodic checkpoints (model, optimizer, scheduler, RNG state, step,
history) written atomically, and resumes from the last one: a stage stopped at any point and
resumed ends with exactly the weights of a stage run straight through (same machine and thread
count), because batches are a function of (seed, stage, epoch) and the torch RNG (dropout, Gumbel
noise) is restored with the step. The host reads each step's values (losses, kept fractions)
every ``curve_every`` steps and before a log line or a checkpoint, not every step: on a GPU each
read makes the queue drain, and a small model's steps are then as slow as their launches.

Loss = task loss (or (1 - a) task + a distillation from the baseline's logits) + lambda x skim
fraction (see ``loss.py``). An optional last phase (``frozen_epochs``) freezes the skim decisions,
as learned token pruning does: argmax decisions, predictors no longer trained, no skim loss.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from effx.runner.progress import eta
from effx.transkimmer.data import Encoded, collate, encode, epoch_batches  # noqa: F401 (re-export)
from effx.transkimmer.data import to_device
from effx.transkimmer.loss import distill_loss, task_loss
from effx.transkimmer.model import SkimBert


@dataclass(frozen=True)
class Stage:
    index: int                    # 1: from pre-trained; 2: the stage after it (seeds the batches)
    epochs: float                 # may be fractional: a prefix of the last shuffled pass
    lr: float                     # encoder and head
    seed: int = 0
    batch_size: int = 32
    bucketed: bool = True         # batches of similar lengths (data.bucketed_batches)
    weight_decay: float = 0.01    # not on biases and LayerNorm weights
    warmup: float = 0.06          # fraction of steps of linear warm-up, then linear decay to 0
    predictor_lr: float = 0.0
    skim_lambda: float = 0.0
    distill: float = 0.0          # weight a of the distillation loss (0: none)
    distill_temperature: float = 1.0
    frozen_epochs: float = 0.0    # last phase with skim decisions frozen
    freeze_word_embeddings: bool = True
    clip: float = 1.0             # gradient norm clipping

    def batches(self, lengths) -> list[list[int]]:
        """Every step's batch: a fresh order per epoch, seeded by (seed, stage, epoch)."""
        per_epoch = math.ceil(len(lengths) / self.batch_size)
        steps = max(1, round(self.epochs * per_epoch))
        out = []
        for epoch in range(math.ceil(steps / per_epoch)):
            out += epoch_batches(lengths, self.batch_size, self.seed, self.index, epoch, self.bucketed)
        return out[:steps]

    def frozen_from(self, steps: int, n: int) -> int:
        """First step of the frozen-decision phase (= steps when there is none)."""
        frozen = round(self.frozen_epochs * math.ceil(n / self.batch_size))
        return max(0, steps - frozen)

    def torch_seed(self) -> int:
        return int(np.random.SeedSequence([self.seed, self.index]).generate_state(1)[0])


def _optimizer(model: SkimBert, stage: Stage) -> torch.optim.Optimizer:
    """AdamW over every weight but (optionally) the word embeddings; predictors always included
    (a frozen predictor has no gradient, which AdamW skips), so the groups never change."""
    word = model.bert.embeddings.word_embeddings.weight
    word.requires_grad_(not stage.freeze_word_embeddings)
    groups = {(p_, d): [] for p_ in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        if p is word and stage.freeze_word_embeddings:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name or ".norm_" in name
        groups[(name.startswith("predictors."), not no_decay)].append(p)
    out = []
    for (pred, decay), params in groups.items():
        if params:
            out.append({"params": params, "lr": stage.predictor_lr if pred else stage.lr,
                        "weight_decay": stage.weight_decay if decay else 0.0})
    return torch.optim.AdamW(out)


def _schedule(opt, steps: int, warmup: float):
    warm = max(1, int(warmup * steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: an interrupted save leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _step_values(loss, task, out, valid: torch.Tensor) -> torch.Tensor:
    """(loss, task loss, kept fraction of the real tokens per layer when skimming) of one step,
    on the device: read by the host only every few steps (each read makes a GPU's queue drain)."""
    values = [loss.detach(), task.detach().to(loss.dtype)]
    if out.keep:
        n = valid.sum()
        values += [((k.detach() * valid).sum() / n).to(loss.dtype) for k in out.keep]
    return torch.stack(values)


def _read(pending: list[torch.Tensor], first_step: int, label: str, layers: int) -> list[tuple]:
    """The host's view of the pending steps' values: (loss, task loss, per-layer kept; 1.0 each
    without skimming) each, the floats ``.item()`` would give; a non-finite loss stops the stage,
    naming its step."""
    rows = torch.stack(pending).tolist() if pending else []
    for j, row in enumerate(rows):
        if not math.isfinite(row[0]):
            raise FloatingPointError(f"{label}: loss is {row[0]} at step {first_step + j + 1}")
    return [(row[0], row[1], row[2:] or [1.0] * layers) for row in rows]


def _set_frozen(model: SkimBert, frozen: bool) -> None:
    if model.skim:
        model.frozen_decisions = frozen
        for p in model.predictors.parameters():
            p.requires_grad_(not frozen)


def train_stage(model: SkimBert, data: Encoded, stage: Stage, *, state_path: Path | None = None,
                teacher: torch.Tensor | None = None, device="cpu", label: str = "train",
                log: Callable[[str], None] = print, log_every_s: float = 10.0,
                checkpoint_every_s: float = 180.0, curve_every: int = 10,
                on_step: Callable[[int], None] | None = None) -> dict:
    """Train `model` in place for one stage; returns its history (curves every `curve_every`
    steps: loss, task loss, kept fraction of real tokens, per layer too; steps; train_s).

    teacher: (N, C) logits of the baseline on `data`, for distillation. state_path: where the
    resumable state lives (resumed from when present; left in place, the caller removes it once
    the stage's result is saved). on_step(step) runs after each step (tests use it to interrupt)."""
    model.to(device).train()
    batches = stage.batches(data.lengths)
    steps, frozen_at = len(batches), stage.frozen_from(len(batches), len(data))
    torch.manual_seed(stage.torch_seed())
    _set_frozen(model, False)
    opt = _optimizer(model, stage)
    _set_frozen(model, frozen_at == 0)
    sched = _schedule(opt, steps, stage.warmup)
    hist = {"step": [], "loss": [], "task_loss": [], "kept": [], "kept_per_layer": [], "lr": [],
            "resumed_at": []}
    start, elapsed, acc = 0, 0.0, []
    if state_path is not None and Path(state_path).exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["stage"] != asdict(stage):
            raise RuntimeError(f"{state_path} holds another stage's state: {state['stage']}")
        model.load_state_dict(state["model"])
        _set_frozen(model, state["step"] >= frozen_at)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start, elapsed, hist, acc = state["step"], state["elapsed_s"], state["history"], state["acc"]
        hist["resumed_at"].append(start)
        log(f"{label}: resuming at step {start}/{steps}")
    t_run = t_log = t_ckpt = time.perf_counter()
    pending, last = [], (float("nan"), float("nan"), [float("nan")])   # device values not yet read
    for step in range(start, steps):
        if step == frozen_at and step > 0:
            _set_frozen(model, True)
        index = batches[step]
        b = collate(data, index, device)
        valid = b["attention_mask"].to(torch.float32)
        out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], padded=b["padded"])
        tl = task_loss(out.logits, b["labels"])
        loss = tl
        if teacher is not None and stage.distill > 0:
            kd = distill_loss(out.logits, to_device(teacher[index], device),
                              stage.distill_temperature)
            loss = (1 - stage.distill) * tl + stage.distill * kd
        if model.skim and not model.frozen_decisions and stage.skim_lambda:
            loss = loss + stage.skim_lambda * out.skim_fraction
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], stage.clip)
        opt.step()
        sched.step()
        pending.append(_step_values(loss, tl, out, valid))
        done = step + 1
        now = time.perf_counter()
        due_log = now - t_log >= log_every_s or done == steps
        due_ckpt = state_path is not None and done < steps and now - t_ckpt >= checkpoint_every_s
        if len(acc) + len(pending) == curve_every or done == steps or due_log or due_ckpt:
            acc += _read(pending, done - len(pending), label, len(model.layers))
            pending, last = [], acc[-1]
            now = time.perf_counter()                                   # the queue drained
        if len(acc) == curve_every or done == steps:
            hist["step"].append(done)
            hist["loss"].append(float(np.mean([a[0] for a in acc])))
            hist["task_loss"].append(float(np.mean([a[1] for a in acc])))
            per_layer = np.mean([a[2] for a in acc], axis=0)
            hist["kept_per_layer"].append(per_layer.tolist())
            hist["kept"].append(float(per_layer.mean()))
            hist["lr"].append(float(sched.get_last_lr()[0]))
            acc = []
        if due_ckpt:
            save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "step": done, "stage": asdict(stage),
                         "acc": acc,
                         "torch_rng": torch.get_rng_state(),
                         "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                         "history": hist, "elapsed_s": elapsed + now - t_run}, Path(state_path))
            t_ckpt = time.perf_counter()
        if due_log:
            last_loss, _, layers = last
            rate = (now - t_run) / (done - start)
            log(f"{label}: step {done}/{steps} ({steps - done} left), {rate:.2f} s/step, "
                f"{eta(now - t_run, done - start, steps - start)}, loss {last_loss:.3f}, "
                f"kept {float(np.mean(layers)):.2f}")
            t_log = now
        if on_step is not None:
            on_step(done)
    _set_frozen(model, False)
    model.eval()
    hist["steps"] = steps
    hist["train_s"] = elapsed + time.perf_counter() - t_run
    return hist
