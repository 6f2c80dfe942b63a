"""Measure one point: latency, peak memory and FLOPs of one step, inference or training.

A *step* is one call of the model on one batch: under ``torch.no_grad`` for inference, or
forward + backward of a scalar (the sum of the outputs) for training, gradients cleared after.
"""
from __future__ import annotations

from typing import Callable

import torch

from effx.profiling.flops import count_flops
from effx.profiling.memory import peak_memory_bytes
from effx.profiling.timing import summarize, time_callable
from effx.results import metric

MODES = ("inference", "training")
METRICS = ("latency", "memory", "flops")


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, (tuple, list)):
        return _first_tensor(out[0])
    if isinstance(out, dict):
        return _first_tensor(next(iter(out.values())))
    raise TypeError(f"cannot find a tensor in model output of type {type(out)}")


def make_step(forward: Callable[[], object], mode: str, module: torch.nn.Module | None = None):
    """Wrap a zero-argument forward call into an inference or training step."""
    if mode == "inference":
        def step():
            # no_grad rather than inference_mode: FlopCounterMode cannot evaluate parametrized
            # weights (torchaudio's weight-normed convolution) under inference_mode
            with torch.no_grad():
                return forward()
        return step
    if mode == "training":
        def step():
            out = _first_tensor(forward())
            out.float().sum().backward()
            if module is not None:
                for p in module.parameters():
                    p.grad = None
            return out
        return step
    raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")


def measure_step(step: Callable[[], object], *, device, repeats: int = 10, warmup: int = 2,
                 metrics=METRICS, min_sample_s: float = 1e-3) -> dict:
    """Metrics of one step: latency_s (median and samples), peak_memory_bytes, flops."""
    out = {}
    if "latency" in metrics:
        samples = time_callable(step, device=device, warmup=warmup, repeats=repeats,
                                min_sample_s=min_sample_s)
        out["latency_s"] = metric(summarize(samples)["median"], "s", samples)
    if "memory" in metrics:
        out["peak_memory_bytes"] = metric(peak_memory_bytes(step, device), "bytes")
    if "flops" in metrics:
        total, _ = count_flops(step)
        out["flops"] = metric(total, "FLOP")
    return out
