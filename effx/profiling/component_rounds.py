"""The rounds of the cost breakdown (``effx.profiling.components``): per round, the plain step
and the step with the attention core ablated, each timed and then profiled, in an order swapped
every round, with Python's cycle collector off."""
from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from typing import Callable

import torch

from effx.errors import Unsupported
from effx.profiling.op_profile import OpTimes, profiled_step, timed


@dataclass
class Rounds:
    """What ``rounds`` measured, per round: the plain and the ablated step, each timed and
    profiled (wall seconds, operator times)."""
    plain: list = field(default_factory=list)
    ablated: list = field(default_factory=list)
    profiled: list = field(default_factory=list)
    ops: list[OpTimes] = field(default_factory=list)
    ablated_profiled: list = field(default_factory=list)
    ablated_ops: list[OpTimes] = field(default_factory=list)
    method: str = "not requested"           # how the ablation works, or why there is none
    replaced: tuple[str, ...] = ()          # the modules the no-op replaces whole


def _in_order(i: int, plain: Callable, ablated: Callable) -> tuple:
    """(plain(), ablated()), run in this round's order: swapped every round."""
    out = {}
    for which in (("plain", "ablated") if i % 2 == 0 else ("ablated", "plain")):
        out[which] = plain() if which == "plain" else ablated()
    return out["plain"], out["ablated"]


@contextlib.contextmanager
def _no_cycle_collection():
    """Python's cycle collector off (as ``timeit`` does): the profiler leaves cyclic event trees
    behind, whose collection would otherwise land at random inside later steps."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def rounds(model, step, device, repeats, ablation) -> Rounds:
    """``repeats`` rounds of ``step`` on ``model``: plain and, with ``ablation`` (``model ->
    context manager``, see ``effx.profiling.components``), ablated, each timed and profiled."""
    with _no_cycle_collection():
        return _rounds_of(model, step, device, repeats, ablation)


def _rounds_of(model, step, device, repeats, ablation) -> Rounds:
    cuda = torch.device(device).type == "cuda"
    r = Rounds()
    if ablation is not None:
        context = ablation(model)
        try:
            handle = context.__enter__()                       # raises for models it cannot do
        except Unsupported as exc:
            r.method, ablation = str(exc), None
        else:
            try:
                timed(step, cuda)                              # warm-up, and did it do anything?
                profiled_step(step, model, device)
            finally:
                context.__exit__(None, None, None)
            if handle.calls == 0:
                raise RuntimeError(f"the ablation ({handle.method}) never ran its no-op: the "
                                   f"model does not route its attention through it")
            r.method, r.replaced = handle.method, tuple(handle.replaced)
    timed(step, cuda)
    profiled_step(step, model, device)                             # the profiler's first start

    def ablated(measure):
        with ablation(model):
            return measure()
    for i in range(repeats):
        if ablation is None:
            r.plain.append(timed(step, cuda))
            wall, ops = profiled_step(step, model, device)
            r.profiled.append(wall)
            r.ops.append(ops)
            continue
        plain, abl = _in_order(i, lambda: timed(step, cuda),
                               lambda: ablated(lambda: timed(step, cuda)))
        r.plain.append(plain)
        r.ablated.append(abl)
        (wall, ops), (abl_wall, abl_ops) = _in_order(
            i, lambda: profiled_step(step, model, device),
            lambda: ablated(lambda: profiled_step(step, model, device)))
        r.profiled.append(wall)
        r.ops.append(ops)
        r.ablated_profiled.append(abl_wall)
        r.ablated_ops.append(abl_ops)
    return r
