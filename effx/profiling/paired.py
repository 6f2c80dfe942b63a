"""Paired timing: the things compared are called alternately in one process, so that machine
drift (other jobs, frequency changes) hits all of them alike and their per-repeat ratio stays
honest.

After each step's warm-up, repeat r calls every step once, in an order rotated by r (A B C,
B C A, C A B, ...), timing each call. Steps shorter than ``min_sample_s`` are called several
times inside one sample (the count fixed per step during warm-up), as ``timeit`` does. Sample i
of every step comes from the same round: ``samples[a][i] / samples[b][i]`` is a paired ratio.
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _one(fn: Callable[[], object], inner: int, device) -> float:
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def warm_up(fn: Callable[[], object], *, device="cpu", warmup: int = 1,
            min_sample_s: float = 1e-3) -> tuple[float, int]:
    """Run ``warmup`` untimed calls (at least one), then one timed call: (its seconds, the number
    of calls one sample should hold so that it lasts at least ``min_sample_s``)."""
    for _ in range(max(warmup - 1, 0)):
        fn()
    _sync(device)
    one = _one(fn, 1, device)
    inner = max(1, int(min_sample_s / max(one, 1e-9))) if one < min_sample_s else 1
    return one, inner


def time_alternating(steps: dict[str, Callable[[], object]], *, device="cpu", repeats: int = 10,
                     inner: dict[str, int] | None = None) -> dict[str, list[float]]:
    """Seconds per call of every step, ``repeats`` rounds, alternating (see module docstring).
    Call ``warm_up`` on each step first; ``inner`` is its second result per step."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(steps)
    inner = inner or {}
    samples: dict[str, list[float]] = {n: [0.0] * repeats for n in names}
    for r in range(repeats):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            samples[name][r] = _one(steps[name], inner.get(name, 1), device)
    return samples
