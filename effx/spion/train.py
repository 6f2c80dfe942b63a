"""One SPION training run (Yoon, Han, Moon, arXiv 2309.12578) or one of its baselines.

A run = a ``SpionRunConfig``. Methods (``METHODS``):
- ``dense``: the model with dense SDPA attention throughout;
- ``sliding_window`` / ``bigbird``: fixed block layouts (``effx.spion.baselines``) from step 0, at
  ``density`` (pass the mean layout density of a finished SPION run to compare at equal cost);
- ``spion_cf`` / ``spion_f`` / ``spion_c``: dense warm-up; every K = ``capture_every`` steps,
  forward hooks on each layer's attention core recompute softmax(q k^T / sqrt(D)) from the core's
  q, k inputs (only on those steps) and average it over batch and heads into one (N, N) map per
  layer, which feeds ``effx.spion.switch.DenseToSparseSwitch`` (the 15% Frobenius-distance rule,
  or a fixed step: then the switch happens at the first capture step >= ``switch_step``). Once it
  is ready, each layer's layout is built once from its latest map (``spion_layout``) and kept;
  every layer then runs block-sparse attention with its own layout and ``softmax`` mode.

Optimiser AdamW; learning rate: linear warm-up over ``warmup`` steps, then linear decay to 0 at
the last step (as the LRA code's one-cycle schedule). At SPION's switch the schedule restarts
(warm-up and decay over the remaining steps), as in the official SPION code. Batches come from
a seeded permutation per epoch; with no dropout and the seeds fixed, a run resumed from a
checkpoint reproduces an uninterrupted one exactly (same machine, same thread count).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from effx.data.lra import load_task, task_spec
from effx.device import resolve_device
from effx.errors import ParameterError
from effx.profiling.memory import peak_memory_bytes
from effx.profiling.timing import fixed_threads
from effx.runner.progress import eta
from effx.spion.baselines import FIXED_PATTERNS, fixed_layout
from effx.spion.model import (SOFTMAX_MODES, LraClassifier, LraModelConfig, MapCapture,
                              attention_flops, evaluate, set_layer_attention)
from effx.spion.pattern import layout_density, spion_layout
from effx.spion.switch import DenseToSparseSwitch

#: method -> SPION variant (None: not SPION)
METHODS = {"dense": None, "sliding_window": None, "bigbird": None,
           "spion_cf": "CF", "spion_f": "F", "spion_c": "C"}
SWITCH_RULES = ("distance", "fixed")
_BOOKKEEPING = {"key": False}          # field metadata: not a setting of the run, not in key()


@dataclass
class SpionRunConfig:
    """Every setting of one run. Lengths: short on the CPU (128-1024), LRA's on the GPU
    (ListOps 2048, Image 1024, Text 4096). ``key()`` names the run (results, checkpoints)."""
    task: str = "listops"
    length: int = 512
    n_train: int = 2000
    n_test: int = 500
    task_options: dict = field(default_factory=dict)   # e.g. {"resize": "pad"}, {"source": "sst2"}
    data_seed: int = 0
    method: str = "spion_cf"
    block: int = 32
    filter_size: int = 31
    quantile: float = 0.96
    density: float | None = None      # spion_c (else 1 - quantile) and the fixed patterns
    softmax: str = "faithful"         # of every block-sparse layer: faithful | standard
    backend: str = "auto"             # of block_sparse_attention: auto | torch | triton | csr
    switch_rule: str = "distance"
    capture_every: int = 500          # K
    threshold: float = 0.15
    switch_step: int | None = None    # switch_rule='fixed'
    n_layers: int | None = None       # None: the task's (4 ListOps, 2 otherwise)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: int = 100
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    checkpoint_every: int = field(default=0, metadata=_BOOKKEEPING)   # steps; 0: never
    log_every_s: float = field(default=10.0, metadata=_BOOKKEEPING)

    def __post_init__(self):
        task_spec(self.task)
        if self.method not in METHODS:
            raise ParameterError("method", self.method, ", ".join(METHODS))
        if self.softmax not in SOFTMAX_MODES:
            raise ParameterError("softmax", self.softmax, ", ".join(SOFTMAX_MODES))
        if self.switch_rule not in SWITCH_RULES:
            raise ParameterError("switch_rule", self.switch_rule, ", ".join(SWITCH_RULES))
        if self.switch_rule == "fixed" and self.switch_step is None:
            raise ParameterError("switch_step", None, "a step (switch_rule='fixed')")
        needs_density = self.method in FIXED_PATTERNS
        if needs_density and self.density is None:
            raise ParameterError("density", None, f"a fraction in (0, 1] for method={self.method}")
        if self.density is not None and not (needs_density or self.method == "spion_c"):
            raise ParameterError("density", self.density, "None unless method is spion_c, "
                                 + ", ".join(FIXED_PATTERNS))
        for name in ("length", "block", "steps", "batch_size", "capture_every"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(name, getattr(self, name), "an integer >= 1")

    def key(self) -> str:
        """Every setting that changes the result, as 'name=value' joined by '|'."""
        parts = []
        for f in dataclasses.fields(self):
            if f.metadata.get("key", True):
                value = getattr(self, f.name)
                value = sorted(value.items()) if isinstance(value, dict) else value
                parts.append(f"{f.name}={value}")
        return "|".join(parts)

    @property
    def layers(self) -> int:
        return self.n_layers or task_spec(self.task).n_layers


def lr_factor(step: int, phase_start: int, steps: int, warmup: int) -> float:
    """Linear warm-up then linear decay to 0, restarted at `phase_start` (SPION's switch)."""
    i, n = step - phase_start, steps - phase_start
    w = max(1, min(warmup, n))
    return (i + 1) / w if i < w else max(0.0, (n - i) / max(1, n - w))


def batch_order(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the batch of `step`: a seeded permutation per epoch, last partial batch dropped."""
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[i * batch_size:(i + 1) * batch_size]


def _median_time(hist: dict, phase: str) -> float | None:
    rows = [i for i, p in enumerate(hist["phase"]) if p == phase]
    keep = [hist["seconds"][i] for i in rows[1:] if not hist["capture"][i] and not hist["profiled"][i]]
    keep = keep or [hist["seconds"][i] for i in rows]
    return float(np.median(keep)) if keep else None


class SpionRun:
    """One training run: ``SpionRun(cfg, checkpoint, log).run()`` -> the record; afterwards
    ``.model`` is the trained model (each layer's attention as it ended) and ``.layouts`` its layouts.

    checkpoint: a file; when it exists (same key) the run resumes from it, and it is (re)written
    atomically every ``cfg.checkpoint_every`` steps (model, optimiser, torch RNG, step, switch
    state, layouts, history; the learning rate is a function of the step and the switch step).
    log: called with a progress line every ``cfg.log_every_s`` seconds and at the switch.
    on_step(step, row): called after every step with that step's history row.
    """

    def __init__(self, cfg: SpionRunConfig, checkpoint: str | Path | None = None,
                 log: Callable[[str], None] | None = None,
                 on_step: Callable[[int, dict], None] | None = None):
        self.cfg, self.log, self.on_step = cfg, log or (lambda msg: None), on_step
        self.ckpt = None if checkpoint is None else Path(checkpoint)
        self.device = resolve_device(cfg.device)
        opts = dict(seed=cfg.data_seed, **cfg.task_options)
        self.train = load_task(cfg.task, "train", cfg.length, cfg.n_train, **opts)
        self.test = load_task(cfg.task, "test", cfg.length, cfg.n_test, **opts)
        torch.manual_seed(cfg.seed)
        self.model = LraClassifier(LraModelConfig(self.train.vocab_size, self.train.num_classes,
                                                  cfg.layers)).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, eps=1e-6)
        self.variant, nb = METHODS[cfg.method], math.ceil(cfg.length / cfg.block)
        self.switch = None if self.variant is None else DenseToSparseSwitch(
            cfg.layers, cfg.threshold, cfg.capture_every,
            cfg.switch_step if cfg.switch_rule == "fixed" else None)
        self.layouts = [None] * cfg.layers
        if cfg.method in FIXED_PATTERNS:
            self.layouts = [fixed_layout(cfg.method, nb, cfg.density, seed=cfg.seed)] * cfg.layers
        self.history = {k: [] for k in ("loss", "seconds", "phase", "capture", "profiled", "lr")}
        self.state = {"step": 0, "phase_start": 0, "switched_at": None, "captures": [],
                      "peak_memory": {"dense": None, "sparse": None}}
        if self.ckpt is not None and self.ckpt.exists():
            self._load()
        self._apply_layouts()

    # ---------------------------------------------------------------------------- checkpoints

    def _load(self) -> None:
        saved = torch.load(self.ckpt, map_location="cpu", weights_only=True)
        if saved["key"] != self.cfg.key():
            raise ParameterError("checkpoint", str(self.ckpt), "a checkpoint of this run",
                                 why=f"it holds the run {saved['key']}")
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        self.switch = (None if saved["switch"] is None
                       else DenseToSparseSwitch.from_state_dict(saved["switch"]))
        self.layouts, self.history, self.state = saved["layouts"], saved["history"], saved["state"]
        self.log(f"{self.cfg.method}: resumed from {self.ckpt} at step {self.state['step']}")

    def save(self) -> None:
        """Write the checkpoint atomically (a temporary file, then a rename)."""
        tmp = self.ckpt.with_name(self.ckpt.name + ".tmp")
        torch.save({"key": self.cfg.key(), "model": self.model.state_dict(),
                    "optimizer": self.opt.state_dict(), "rng": torch.get_rng_state(),
                    "layouts": self.layouts, "history": self.history, "state": self.state,
                    "switch": None if self.switch is None else self.switch.state_dict()}, tmp)
        os.replace(tmp, self.ckpt)

    # ---------------------------------------------------------------------------- training

    def _apply_layouts(self) -> None:
        if any(layout is not None for layout in self.layouts):
            set_layer_attention(self.model, [None if l is None else l.to(self.device)
                                             for l in self.layouts],
                                block=self.cfg.block, softmax=self.cfg.softmax, backend=self.cfg.backend)

    def _switch_to_sparse(self, step: int) -> None:
        cfg = self.cfg
        self.layouts = [spion_layout(m, self.variant, block=cfg.block, filter_size=cfg.filter_size,
                                     quantile=cfg.quantile, density=cfg.density)
                        for m in self.switch.latest_maps]
        self._apply_layouts()
        self.state["switched_at"], self.state["phase_start"] = step, step + 1
        self.log(f"{cfg.method}: switched to sparse after step {step}; layout densities "
                 + ", ".join(f"{layout_density(l):.3f}" for l in self.layouts))

    def _step(self, step: int) -> None:
        cfg, st, hist = self.cfg, self.state, self.history
        phase = "dense" if all(layout is None for layout in self.layouts) else "sparse"
        capture = self.switch is not None and not self.switch.ready and self.switch.due(step)
        profiled = (st["peak_memory"][phase] is None and not capture
                    and (step > st["phase_start"] or step == cfg.steps - 1))
        lr = cfg.lr * lr_factor(step, st["phase_start"], cfg.steps, cfg.warmup)
        for group in self.opt.param_groups:
            group["lr"] = lr
        ids, mask, labels = self.train.batch(batch_order(step, len(self.train), cfg.batch_size,
                                                         cfg.seed), self.device)
        hooks = MapCapture(self.model) if capture else None
        out = {}

        def one_step():
            loss = F.cross_entropy(self.model(ids, mask), labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            out["loss"] = loss.item()

        t0 = time.perf_counter()
        if profiled:        # the profiler's overhead: this step is left out of the timings
            st["peak_memory"][phase] = peak_memory_bytes(one_step, self.device)
        else:
            one_step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        row = dict(zip(hist, (out["loss"], time.perf_counter() - t0, phase, capture, profiled, lr)))
        for name, value in row.items():
            hist[name].append(value)
        if not math.isfinite(out["loss"]):
            raise FloatingPointError(f"{cfg.method}: loss is {out['loss']} at step {step}")
        if capture:
            ready = self.switch.observe(step, hooks.maps())
            st["captures"].append({"step": step, "changes": self.switch.layer_changes(),
                                   "distances": [d[-1] if d else None for d in self.switch.distances]})
            if ready:
                self._switch_to_sparse(step)
        st["step"] = step + 1
        if self.on_step is not None:
            self.on_step(step, row)

    def run(self) -> dict:
        """Train the remaining steps, evaluate on the test split, return the record."""
        cfg, st = self.cfg, self.state
        with fixed_threads(cfg.threads):
            self.model.train()
            t_start = t_log = time.perf_counter()
            first = st["step"]
            self.log(f"{cfg.method}: {cfg.task} length {cfg.length}, steps {first}..{cfg.steps}")
            while st["step"] < cfg.steps:
                self._step(st["step"])
                if self.ckpt is not None and cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0:
                    self.save()
                now = time.perf_counter()
                if now - t_log >= cfg.log_every_s:
                    t_log, left = now, cfg.steps - st["step"]
                    self.log(f"{cfg.method} step {st['step']}/{cfg.steps} ({left} left), loss "
                             f"{self.history['loss'][-1]:.3f}, {self.history['phase'][-1]}, "
                             f"{eta(now - t_start, st['step'] - first, cfg.steps - first)}")
            accuracy = evaluate(self.model, self.test, cfg.eval_batch_size, self.device)
        return self.record(accuracy)

    def record(self, accuracy: float) -> dict:
        """The run's results: test accuracy; per step loss, seconds, phase, capture, lr; per
        capture the distances and relative changes; the median seconds per step of each phase
        (capture steps, the profiled step and each phase's first step left out); peak memory of
        one step per phase (``effx.profiling.memory.peak_memory_bytes``: CUDA allocator peak, or
        the PyTorch profiler's allocations on CPU, a lower bound); layouts as lists of lists of
        bools (None = dense); densities; attention forward FLOPs on the computed blocks."""
        cfg, mcfg, layouts = self.cfg, self.model.cfg, self.layouts
        flops = attention_flops(layouts, length=cfg.length, block=cfg.block, n_heads=mcfg.n_heads,
                                head_dim=mcfg.d_model // mcfg.n_heads)
        densities = [1.0 if l is None else layout_density(l) for l in layouts]
        hist = self.history
        return {"key": cfg.key(), "config": dataclasses.asdict(cfg), "test_accuracy": accuracy,
                "steps": cfg.steps, "switched_at": self.state["switched_at"],
                "captures": self.state["captures"], "history": hist,
                "seconds_per_step": {p: _median_time(hist, p) for p in ("dense", "sparse")},
                "peak_memory_bytes": dict(self.state["peak_memory"]),
                "layouts": [None if l is None else l.bool().tolist() for l in layouts],
                "layout_density": densities, "mean_density": float(np.mean(densities)),
                "attention_flops_forward": flops}


def train_run(cfg: SpionRunConfig, checkpoint: str | Path | None = None,
              log: Callable[[str], None] | None = None,
              on_step: Callable[[int, dict], None] | None = None) -> dict:
    """One run, straight through or resumed from `checkpoint`: ``SpionRun(...).run()``."""
    return SpionRun(cfg, checkpoint, log, on_step).run()
