"""Peak memory of one call, above what was already allocated before it.

The number reported is the activation/workspace peak: the largest amount of tensor memory the
call had allocated at any moment, minus nothing else (weights and inputs that exist before the
call are excluded and reported separately by the caller). The same definition on both devices:

- GPU: the CUDA caching allocator's statistics: ``reset_peak_memory_stats``, then
  ``max_memory_allocated() - memory_allocated()`` taken before the call.
- CPU: PyTorch's profiler with ``profile_memory=True`` records every tensor allocation and free
  made by PyTorch operators; the running sum of those events in time order gives the live bytes,
  whose maximum is the peak. Memory that C libraries allocate outside PyTorch's allocator (oneDNN
  scratch space, Python objects) is not seen: this is a lower bound on the process's growth.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler quiet in notebooks

import torch


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ profiler's start/stop lines, written straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr():
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    # Each "[memory]" record is one allocation (+bytes) or free (-bytes) of PyTorch's CPU
    # allocator, with its time stamp; the running sum is the live memory of the call.
    records = [e for e in prof.profiler.kineto_results.events()
               if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for e in sorted(records, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return int(peak)


def peak_memory_bytes(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated by `fn` beyond what was allocated before it (see module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_peak(fn, device)
    return _cpu_peak(fn)
