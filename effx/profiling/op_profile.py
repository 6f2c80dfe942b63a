"""Operator time per module from torch.profiler: the innermost module scope owns each operator.

The cost-breakdown study (Diwan et al., ACL 2023) needs the time of every Transformer component.
Here time is *operator* time measured by ``torch.profiler`` (Kineto), not module intervals:

1. ``ModuleScopes`` opens a profiler scope (``record_function``, named ``effx.module:<name>``)
   in a forward pre-hook of every module and closes it in the forward hook (``always_call``), so
   scopes nest exactly like module calls.
2. ``attribute_events`` walks the profiler's event tree. Forward: an operator belongs to the
   innermost module scope above it. Backward: the autograd engine wraps every node it runs in an
   ``autograd::engine::evaluate_function: <Node>`` event that carries the node's sequence number
   and the id of the thread that ran the forward (``fwd_thread``); the forward operator that
   created the node was recorded with the same (thread, sequence number), so the node and every
   operator under it belong to that forward operator's module. (Several forward operators can see
   one number: an operator records the *next* number when it starts, and only one creating a node
   uses it up; the last one to start with it is the creator, or inside it.)
3. What an operator costs: on CPU its *self* time (its interval minus its child operators'), so
   nested operators are not counted twice; on GPU the duration of the kernels it launched
   (``FunctionEvent.kernels``, matched by Kineto's correlation ids), which a module scope can own
   too (Triton kernels launched from Python).

Not operator time (item 4 measures part of it): Python, hooks, the gaps between operators, the
profiler's own bookkeeping (except the part of it that falls inside an operator's interval, see
``effx.profiling.components`` for the check that bounds it). Operators outside every module (the
loss, gradient accumulation into ``.grad``) are reported under ``None``.

4. *Time between operators* (CPU only): the part of a module scope's own interval that none of
   its children (its operators and the scopes of its submodules) covers: the module's Python,
   the allocator (a large intermediate goes back to the operating system where Python drops it,
   between operators) and the hooks' and profiler's own cost (compare two profiled steps to
   cancel it). Forward only: backward runs in the autograd engine, outside module scopes. On a
   GPU the host's time overlaps the kernels and is not comparable to kernel time, so it is not
   reported.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

SCOPE = "effx.module:"
ENGINE = "autograd::engine::evaluate_function: "


class ModuleScopes:
    """Context manager: a profiler scope around every forward call of every module of ``model``."""

    def __init__(self, model: nn.Module):
        self.model, self.handles, self.open = model, [], []
        self.calls = 0

    def __enter__(self):
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(
                functools.partial(self._enter, SCOPE + name)))
            self.handles.append(module.register_forward_hook(self._exit, always_call=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        while self.open:                                  # a forward raised through a hook
            self.open.pop().__exit__(None, None, None)

    def _enter(self, label, module, args):
        scope = record_function(label)
        scope.__enter__()
        self.open.append(scope)
        self.calls += 1

    def _exit(self, module, args, output):
        self.open.pop().__exit__(None, None, None)


@dataclass
class OpTimes:
    """Operator seconds of one profiled step, per module name (None = outside every module)."""
    forward: dict = field(default_factory=dict)
    backward: dict = field(default_factory=dict)
    events: int = 0                 # profiler events read (CPU side)
    unlinked_s: float = 0.0         # backward time whose node matched no forward operator
    #: (module name, "forward" | "backward") -> {operator name: seconds}
    by_operator: dict = field(default_factory=dict)
    #: module name -> forward seconds inside its own scope that no child covers (CPU only)
    between_ops: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.forward.values()) + sum(self.backward.values())


def _own_cost_s(e, cuda: bool) -> float:
    if cuda:
        return sum(k.duration for k in e.kernels) / 1e6
    return 0.0 if e.is_user_annotation else e.self_cpu_time_total / 1e6


def attribute_events(events, cuda: bool = False) -> OpTimes:
    """Operator time of a profiled step per module and phase (see the module docstring).

    ``events``: ``torch.profiler.profile(...).events()`` of one step run under ``ModuleScopes``.
    """
    cpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and not e.is_async]
    cpu.sort(key=lambda e: e.time_range.start)      # a forward operator before its backward
    owner: dict[int, tuple] = {}              # id(event) -> (module name | None, phase)
    creator: dict[tuple, str | None] = {}     # (thread, sequence nr) -> module of the forward op

    def own(e) -> tuple:
        """(module, phase) of ``e``: its own rule, else its nearest ancestor's."""
        chain = []
        while id(e) not in owner:
            if e.is_user_annotation and e.name.startswith(SCOPE):
                owner[id(e)] = (e.name[len(SCOPE):], "forward")
            elif e.name.startswith(ENGINE):
                key = (e.fwd_thread, e.sequence_nr)
                linked = e.sequence_nr < 0 or key in creator      # < 0: AccumulateGrad
                owner[id(e)] = (creator.get(key), "backward" if linked else "unlinked")
            elif e.cpu_parent is None:
                owner[id(e)] = (None, "forward")
            else:
                chain.append(e)
                e = e.cpu_parent
        for child in chain:
            owner[id(child)] = owner[id(e)]
        return owner[id(e)]

    out = OpTimes(events=len(cpu))
    for e in cpu:
        mine = own(e)
        if mine[1] == "forward" and e.sequence_nr >= 0 and not e.is_user_annotation:
            creator[(e.thread, e.sequence_nr)] = mine[0]      # the last one to start is the creator
        cost = _own_cost_s(e, cuda)
        if not cost:
            continue
        if mine[1] == "unlinked":
            out.unlinked_s += cost
        phase = "forward" if mine[1] == "forward" else "backward"
        store = out.forward if phase == "forward" else out.backward
        store[mine[0]] = store.get(mine[0], 0.0) + cost
        ops = out.by_operator.setdefault((mine[0], phase), {})
        ops[e.name] = ops.get(e.name, 0.0) + cost
    if not cuda:
        for e in cpu:
            if e.is_user_annotation and e.name.startswith(SCOPE):
                name = e.name[len(SCOPE):]
                out.between_ops[name] = out.between_ops.get(name, 0.0) + _uncovered_s(e)
    return out


def _interval_s(e) -> float:
    return (e.time_range.end - e.time_range.start) / 1e6


def _uncovered_s(scope) -> float:
    """Seconds of ``scope``'s interval outside its children's (which follow one another)."""
    return max(0.0, _interval_s(scope) - sum(_interval_s(c) for c in scope.cpu_children))


def _sync(cuda: bool):
    if cuda:
        torch.cuda.synchronize()


def timed(step: Callable[[], object], cuda: bool) -> float:
    """Wall seconds of one call of ``step`` (the device synchronised before and after)."""
    _sync(cuda)
    t0 = time.perf_counter()
    step()
    _sync(cuda)
    return time.perf_counter() - t0


def profiled_step(step: Callable[[], object], model: nn.Module, device="cpu") -> tuple[float, OpTimes]:
    """Run ``step`` once under the profiler with module scopes: (wall seconds, operator times).

    The wall time is taken inside the profiler, hooks already registered: it is the profiled
    step's duration, instrumentation included.
    """
    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        with ModuleScopes(model):
            wall = timed(step, cuda)
    return wall, attribute_events(prof.events(), cuda)
