"""Cost per Transformer component: time, FLOPs and saved activations, attributed module by module.

Diwan et al. (ACL 2023) find that non-attention parts carry much of a Transformer's cost. To
measure that, every module's *exclusive* cost (what it does outside its child modules) is summed
per component with the table of ``effx.models.components``. How each cost is attributed:

- **Time**, forward and backward: module hooks and autograd-node hooks stamping a clock
  (``effx.profiling.module_tracer``: exclusive time per module call, the hooks' own cost
  calibrated and subtracted on CPU; CUDA events on GPU). A backward node belongs to the module
  call that created it; the autograd engine's own time between nodes stays "unattributed".
- **FLOPs**: PyTorch's FlopCounterMode with effx's CPU fused-attention formulas
  (``effx.profiling.flops``); each counted op is credited to the module call or backward node
  running it, by the same ownership as time.
- **Memory**: activations saved for backward, via ``torch.autograd.graph.saved_tensors_hooks``
  during one forward with gradients: each tensor storage counted once, for the module running
  when it was first saved; parameters excluded (weights, not activations).

Time is checked against the un-instrumented step: ``residual_s`` = plain time minus the sum of
the components; ``profile_components`` reports it beside the components (see the notebook).
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effx.profiling.flops import _custom_mapping
from effx.profiling.module_tracer import ModuleTracer, hook_overhead_s
from effx.profiling.point import _first_tensor, make_step

__all__ = ["ModuleTracer", "OwnedFlopCounter", "by_component", "hook_overhead_s",
           "profile_components"]


def by_component(per_module: dict, assignment: dict[str, str]) -> dict[str, float]:
    """Sum a module-name -> value dict into component -> value (None -> 'unattributed')."""
    out: dict[str, float] = defaultdict(float)
    for name, v in per_module.items():
        out[assignment[name] if name is not None else "unattributed"] += v
    return dict(out)


class OwnedFlopCounter(FlopCounterMode):
    """FlopCounterMode (CPU fused attention counted) that also credits each op to ``owner()``.

    FlopCounterMode's own per-module counts come from ``ModuleTracker``, whose backward
    attribution is approximate (we saw negative exclusive counts in training); crediting the
    module that owns the running forward call or backward node attributes FLOPs exactly as time.
    """

    def __init__(self, owner: Callable[[], str | None]):
        if not hasattr(FlopCounterMode, "_count_flops"):      # torch < 2.5
            raise RuntimeError(f"torch {torch.__version__}: FlopCounterMode has no _count_flops")
        super().__init__(display=False, custom_mapping=_custom_mapping())
        self.owner, self.by_owner = owner, defaultdict(int)

    def _count_flops(self, func_packet, out, args, kwargs):      # called once per counted op
        if func_packet in self.flop_registry:
            n = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            self.by_owner[self.owner()] += int(n)
        return super()._count_flops(func_packet, out, args, kwargs)


def _traced_step(forward: Callable, mode: str, model: nn.Module, tracer: ModuleTracer):
    """The step of ``effx.profiling.make_step`` with the backward graph watched."""
    if mode == "inference":
        return make_step(forward, mode, model)

    def step():
        loss = _first_tensor(forward()).float().sum()
        tracer.watch_backward(loss)
        loss.backward()
        for p in model.parameters():
            p.grad = None
    return step


def profile_components(model: nn.Module, forward: Callable[[], object],
                       assignment: dict[str, str] | Callable[[nn.Module], dict[str, str]],
                       *, mode: str, device="cpu", repeats: int = 3, flops: bool = True,
                       memory: bool = True, timer: Callable[[], float] = time.perf_counter) -> dict:
    """Per-component cost of one step of ``model`` (``forward()`` runs it on fixed inputs).

    Plain and instrumented steps alternate ``repeats`` times after one warm-up (the FLOP/memory
    pass); ``timer`` is the CPU clock (see ``_Clock``). ``assignment`` (module name -> component)
    may be a function of the model, called after the warm-up: some models replace modules in
    their first forward at a new length (BigBird switching between full and block-sparse).
    Returns {"plain_s": [...], "instrumented_s": [...], "time_s": {component: [...]},
    "forward_s"/"backward_s": {component: [...]}, "flops": {component: n}, "saved_bytes":
    {component: bytes}, "hook_overhead_s": c, "module_calls": n, "graph_nodes": n}.
    Components cover the table's components plus "unattributed" (backward engine, loss).
    """
    on_cpu = torch.device(device).type == "cpu"
    overhead = hook_overhead_s("cpu", timer) if on_cpu else 0.0
    tracer = ModuleTracer(model, device, overhead, timer)
    plain = make_step(forward, mode, model)
    traced = _traced_step(forward, mode, model, tracer)
    clock = tracer.clock
    out = {"flops": {}, "saved_bytes": {}, "hook_overhead_s": overhead}
    modules = [id(m) for m in model.modules()]
    for _ in range(2):   # warm-up pass: FLOPs per module and saved activations (grad on, as in training)
        tracer.reset()
        with tracer, torch.enable_grad(), tracer.saving():
            counter = OwnedFlopCounter(tracer.current)
            with counter:
                (traced if mode == "training" else forward)()
        now = [id(m) for m in model.modules()]
        if now == modules:
            break
        modules = now    # the forward replaced modules that the hooks did not see: once more
    if callable(assignment):
        assignment = assignment(model)
    out["module_calls"], out["graph_nodes"] = len(tracer.calls), len(tracer.nodes)
    if flops:
        out["flops"] = by_component(dict(counter.by_owner), assignment)
        out["flops_total"] = counter.get_total_flops()
    if memory:
        out["saved_bytes"] = by_component(dict(tracer.saved), assignment)
    tracer.reset()
    comps = sorted(set(assignment.values())) + ["unattributed"]
    plain_s, traced_s = [], []
    fwd, bwd = {k: [] for k in comps}, {k: [] for k in comps}
    for _ in range(repeats):
        clock.sync()
        a = clock.mark()
        plain()
        b = clock.mark()
        with tracer:
            traced()
        c = clock.mark()
        clock.sync()
        plain_s.append(clock.seconds(a, b))
        traced_s.append(clock.seconds(b, c))
        for store, per_module in ((fwd, tracer.forward_times()), (bwd, tracer.backward_times())):
            summed = by_component(per_module, assignment)
            for k in comps:
                store[k].append(summed.get(k, 0.0))
        tracer.reset()
    out.update(plain_s=plain_s, instrumented_s=traced_s, forward_s=fwd, backward_s=bwd,
               time_s={k: [f + g for f, g in zip(fwd[k], bwd[k])] for k in comps})
    return out
