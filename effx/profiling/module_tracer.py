"""Hooks over a module tree: exclusive time per module call, backward nodes, saved activations.

The generic machinery behind ``effx.profiling.components`` (which sums it per Transformer
component). ``ModuleTracer`` puts a pre- and a post-hook on every module; each stamps a clock
(``time.perf_counter`` on CPU, or any ``timer``; a CUDA event on GPU, so nothing synchronises).
A call's exclusive time is its interval minus its child calls' intervals. A parent's interval
also holds its children's hook cost: ``hook_overhead_s`` calibrates that cost per hooked call
on a chain of ``nn.Identity`` modules, and ``forward_times`` subtracts it per child call.

Backward: autograd numbers the nodes it creates (a thread-local sequence counter). The hooks
record the counter at each call's entry and exit, so each node of the graph belongs to the
innermost call running when it was made (a weight's gradient accumulation: the weight's
module). ``watch_backward`` puts a pre- and a post-hook on every node to time it.

Saved activations: ``saving()`` counts, per module running, the bytes of the tensors autograd
saves for backward (each storage once, parameters excluded).
"""
from __future__ import annotations

import functools
import statistics
import time
from collections import defaultdict
from typing import Callable

import torch
from torch import nn

_next_seq = torch._C._autograd._get_sequence_nr      # the number the next autograd node gets
_NO_NODE = object()                                   # ModuleTracer.in_node outside backward nodes


class _Clock:
    """CPU: ``timer`` (wall clock by default); CUDA: events on the current stream, read after one
    synchronize. ``time.thread_time`` (this thread's CPU time) is immune to other jobs pre-empting
    the process; with one torch thread it counts all the work (the tests use it)."""

    def __init__(self, device, timer: Callable[[], float] = time.perf_counter):
        self.cuda, self.timer = torch.device(device).type == "cuda", timer

    def mark(self):
        if not self.cuda:
            return self.timer()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


class ModuleTracer:
    """Hooks on every module of ``model``: call intervals, autograd ownership, saved bytes.

    Use as a context manager around one step (``watch_backward(loss)`` before a backward, and
    ``saving()`` around a forward to count saved activations); read ``forward_times()``,
    ``backward_times()`` and ``saved`` (module name -> seconds / bytes; None = outside every
    module), then ``reset()``.
    """

    def __init__(self, model: nn.Module, device="cpu", overhead_s: float = 0.0,
                 timer: Callable[[], float] = time.perf_counter):
        self.model, self.clock, self.overhead_s = model, _Clock(device, timer), overhead_s
        self.param_owner = {id(p): name for name, m in model.named_modules()
                            for p in m.parameters(recurse=False)}
        self.handles: list = []
        self.reset()

    def reset(self):
        # one call = [name, start, end, parent index, first seq nr, end seq nr, child calls]
        self.calls: list[list] = []
        self.stack: list[int] = []
        self.nodes: list[list] = []          # [owner name, start, end]
        self.saved: dict[str | None, int] = defaultdict(int)
        self._seen_storages: set[int] = set()
        self.in_node = _NO_NODE

    # -- hooks -------------------------------------------------------------------------------
    def __enter__(self):
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(functools.partial(self._pre, name)))
            self.handles.append(module.register_forward_hook(functools.partial(self._post, name)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _pre(self, name, module, args):
        parent = self.stack[-1] if self.stack else -1
        if parent >= 0:
            self.calls[parent][6] += 1
        self.stack.append(len(self.calls))
        self.calls.append([name, None, None, parent, _next_seq(), None, 0])
        self.calls[-1][1] = self.clock.mark()                         # last: excludes this hook

    def _post(self, name, module, args, output):
        end = self.clock.mark()                                       # first: excludes this hook
        call = self.calls[self.stack.pop()]
        call[2], call[5] = end, _next_seq()

    def current(self) -> str | None:
        """The module running now: innermost forward call, or the owner of the backward node."""
        if self.in_node is not _NO_NODE:
            return self.in_node
        return self.calls[self.stack[-1]][0] if self.stack else None

    # -- forward -----------------------------------------------------------------------------
    def forward_times(self) -> dict[str | None, float]:
        """Exclusive forward seconds per module name, the hook overhead subtracted."""
        self.clock.sync()
        inclusive = [self.clock.seconds(c[1], c[2]) for c in self.calls]
        out: dict[str | None, float] = defaultdict(float)
        for i, c in enumerate(self.calls):
            out[c[0]] += inclusive[i] - self.overhead_s * c[6]
            if c[3] >= 0:
                out[self.calls[c[3]][0]] -= inclusive[i]
        return dict(out)

    # -- backward ----------------------------------------------------------------------------
    def _owners(self) -> tuple[int, list]:
        """Sequence number -> innermost module call (calls are in pre-order: inner ones last)."""
        if not self.calls:
            return 0, []
        base = min(c[4] for c in self.calls)
        owner: list = [None] * (max(c[5] for c in self.calls) - base)
        for c in self.calls:
            owner[c[4] - base:c[5] - base] = [c[0]] * (c[5] - c[4])
        return base, owner

    def watch_backward(self, loss: torch.Tensor) -> int:
        """Hook every node of ``loss``'s graph to time it; returns the number of nodes."""
        base, owner = self._owners()
        seen, todo = set(), [loss.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            todo.extend(n for n, _ in node.next_functions)
            if hasattr(node, "variable"):                             # AccumulateGrad
                name = self.param_owner.get(id(node.variable))
            else:
                s = node._sequence_nr() - base
                name = owner[s] if 0 <= s < len(owner) else None
            rec = [name, None, None]
            self.nodes.append(rec)
            node.register_prehook(functools.partial(self._node_pre, rec))
            node.register_hook(functools.partial(self._node_post, rec))
        return len(seen)

    def _node_pre(self, rec, grad_outputs):
        self.in_node = rec[0]
        rec[1] = self.clock.mark()

    def _node_post(self, rec, grad_inputs, grad_outputs):
        rec[2] = self.clock.mark()
        self.in_node = _NO_NODE

    def backward_times(self) -> dict[str | None, float]:
        self.clock.sync()
        out: dict[str | None, float] = defaultdict(float)
        for name, a, b in self.nodes:
            if a is not None and b is not None:
                out[name] += self.clock.seconds(a, b)
        return dict(out)

    # -- saved activations -------------------------------------------------------------------
    def saving(self):
        """Context manager: count bytes of tensors saved for backward, per current module."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}

        def pack(t):
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key and key not in params and key not in self._seen_storages:
                self._seen_storages.add(key)
                self.saved[self.current()] += storage.nbytes()
            return t.detach()    # never t itself: a saved output would hold its own graph node (a cycle)
        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


@functools.lru_cache(maxsize=None)
def hook_overhead_s(device: str = "cpu", timer: Callable[[], float] = time.perf_counter,
                    calls: int = 200, trials: int = 7) -> float:
    """Seconds one hooked module call adds to its parent's interval (see module docstring)."""
    chain = nn.Sequential(*[nn.Identity() for _ in range(calls)])
    x = torch.zeros(1, device=device)
    tracer = ModuleTracer(chain, device, timer=timer)
    diffs = []
    for _ in range(trials):
        t0 = timer()
        chain(x)
        plain = timer() - t0
        with tracer:
            chain(x)
        tracer.clock.sync()
        traced = tracer.clock.seconds(tracer.calls[0][1], tracer.calls[0][2])
        tracer.reset()
        diffs.append((traced - plain) / calls)
    return max(0.0, statistics.median(diffs))

