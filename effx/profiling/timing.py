"""Latency measurement.

CPU: wall clock (``time.perf_counter``) around each call, with the thread count fixed for the
whole measurement. Calls shorter than ``min_sample_s`` are repeated inside one sample (as
``timeit`` does) so that timer resolution and call overhead do not dominate; a sample is the
mean of its inner calls.
GPU: CUDA events recorded around each call on the current stream, read after a synchronize.
Both: ``warmup`` untimed calls first (allocator, autotuning, lazy initialisation), then
``repeats`` samples. Report the median and the inter-quartile range of the samples.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import torch


@contextlib.contextmanager
def fixed_threads(n: int | None):
    """Run the block with torch's intra-op thread count fixed to `n` (None: leave as is)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _cuda_samples(fn: Callable[[], object], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return samples


def _cpu_samples(fn: Callable[[], object], repeats: int, min_sample_s: float) -> list[float]:
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    inner = max(1, int(min_sample_s / max(one, 1e-9))) if one < min_sample_s else 1
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return samples


def time_callable(fn: Callable[[], object], *, device: str | torch.device = "cpu", warmup: int = 2,
                  repeats: int = 10, min_sample_s: float = 1e-3) -> list[float]:
    """Seconds per call of `fn`, one number per sample (see module docstring)."""
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    is_cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if is_cuda:
        torch.cuda.synchronize()
        return _cuda_samples(fn, repeats)
    return _cpu_samples(fn, repeats, min_sample_s)


def summarize(samples: list[float]) -> dict[str, float]:
    """Median and quartiles of timing samples."""
    qs = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"median": statistics.median(samples), "q25": qs[0], "q75": qs[2]}
