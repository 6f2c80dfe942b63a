"""Operators and host reads of a call: what sets the time of a small model on a GPU.

Every operator PyTorch's dispatcher runs is a kernel launch on a GPU (microseconds, whatever its
size), and a host read (a scalar read, boolean indexing, ``Tensor.tolist``) makes the GPU's queue
drain before the CPU goes on. Counted on any device alike, except that
``tolist`` of a CPU tensor bypasses the dispatcher, so it is counted where Python calls it.
"""
from __future__ import annotations

import collections
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: operators after which the host holds a value computed on the device
HOST_READS = frozenset({"aten._local_scalar_dense.default", "aten.nonzero.default",
                        "aten.equal.default"})


class _Operators(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


class _ListReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.Tensor.tolist
        return func(*args, **(kwargs or {}))


def count_dispatches(fn: Callable[[], object]) -> tuple[int, int]:
    """(operators, host reads) of one call of `fn`, without gradients."""
    with torch.no_grad(), _ListReads() as lists, _Operators() as mode:
        fn()
    reads = sum(n for op, n in mode.ops.items() if op in HOST_READS)
    return sum(mode.ops.values()), reads + lists.count
