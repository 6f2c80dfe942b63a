"""Cost per Transformer component: profiled operator time, FLOPs and saved activations, checked.

Diwan et al. (ACL 2023) find that non-attention parts carry much of a Transformer's cost. Every
module belongs to one component (``effx.models.components``); ``profile_components`` measures:

- **Time per component**: operator time from ``torch.profiler``, attributed to the innermost
  module scope, backward operators to the module whose forward operator created their autograd
  node (``effx.profiling.op_profile``). CPU: operators' self time; GPU: their kernels' time.
- **Overhead band**: the plain (un-instrumented) step minus the operator time of the profiled
  step next to it: Python, framework and idle time that no operator accounts for.
- **Ablation** (optional): the plain step minus the same step with the attention core replaced
  by a same-shape no-op (``effx.models.ablation``), an independent measure of the core's cost.
  Where the no-op replaces whole modules (effx's ``AttentionCore``), the *time between their
  operators* that it saves is measured too (CPU): forward time inside their scopes that no
  operator covers (``effx.profiling.op_profile``), i.e. their Python and the allocator returning
  their large intermediates to the operating system. The ablation saves it, operator times
  miss it.
- **FLOPs** (FlopCounterMode with effx's CPU fused-attention formulas, ``effx.profiling.flops``)
  and **saved activations** (``saved_tensors_hooks``), each credited to the module running the
  op (``effx.profiling.module_tracer``): forward call, or creator of the backward node.

Sampling: a counting pass (FLOPs, saved bytes; also the first warm-up), one warm-up of each
step kind, then ``repeats`` rounds of [plain, ablated] timed, then [plain, ablated] profiled
(each pair's order swapped every round): paired samples, so that machine drift hits both sides
of every pair (``effx.profiling.paired`` does the same for plain timings). Python's cycle
collector is off during the rounds. The profiled pair splits what the ablation saved, per round
(``ablation["parts_s"]``): the core's operators, the time between them (in the replaced modules;
the hooks' and profiler's own cost is in both steps and cancels), the operators of every other
component (do they run faster once the core is gone?), and the rest of the profiled walls'
difference (time outside operators elsewhere).

The checks (``check`` in the result: what can fail, pass or stay undecided, and why the sum of
the parts is not a check): ``effx.profiling.component_checks``.

Not checked against an independent measure: how the rest is split among the non-attention
components (each operator has exactly one owner; tests/test_components.py checks operators'
owners by name). GPU path (kernel time, CUDA activity) written to Kineto's event model, not
yet run on a GPU.
"""
from __future__ import annotations

import contextlib
import statistics
from collections import defaultdict
from typing import Callable, ContextManager, Protocol

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effx.profiling.component_checks import checks, median_interval
from effx.profiling.component_rounds import Rounds, rounds
from effx.profiling.flops import _custom_mapping
from effx.profiling.module_tracer import ModuleTracer
from effx.profiling.op_profile import OpTimes
from effx.profiling.point import make_step
from effx.profiling.timing import summarize

__all__ = ["ModuleTracer", "OwnedFlopCounter", "by_component", "count_components",
           "profile_components"]

UNATTRIBUTED = "unattributed"       # operators outside every module: the loss, .grad accumulation


class AblationHandle(Protocol):
    """What an ablation context manager yields (``effx.models.ablation.Ablation``)."""
    method: str
    calls: int
    replaced: tuple[str, ...]


def by_component(per_module: dict, assignment: dict[str, str]) -> dict[str, float]:
    """Sum a module-name -> value dict into component -> value (None -> 'unattributed')."""
    out: dict[str, float] = defaultdict(float)
    for name, v in per_module.items():
        out[assignment[name] if name is not None else UNATTRIBUTED] += v
    return dict(out)


class OwnedFlopCounter(FlopCounterMode):
    """FlopCounterMode (CPU fused attention counted) that also credits each op to ``owner()``."""

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


def _counting_pass(model, step, forward, mode, flops: bool, memory: bool) -> dict:
    """One step with FLOPs and saved activations credited per module (grad on, as in training);
    also the first warm-up. Returns the per-module dicts and the call count."""
    tracer = ModuleTracer(model)
    counter = OwnedFlopCounter(tracer.current) if flops else contextlib.nullcontext()
    saving = tracer.saving() if memory else contextlib.nullcontext()
    with tracer, torch.enable_grad(), saving, counter:
        (step if mode == "training" else forward)()
    return {"flops": dict(counter.by_owner) if flops else {},
            "flops_total": counter.get_total_flops() if flops else None,
            "saved": dict(tracer.saved), "module_calls": len(tracer.calls)}


def profile_components(model: nn.Module, forward: Callable[[], object],
                       assignment: dict[str, str] | Callable[[nn.Module], dict[str, str]],
                       *, mode: str, device="cpu", repeats: int = 10,
                       ablation: Callable[[nn.Module], ContextManager[AblationHandle]] | None = None,
                       ablated_component: str = "attention_core", flops: bool = True,
                       memory: bool = True, n_boot: int = 2000, seed: int = 0) -> dict:
    """Per-component cost of one step of ``model`` (``forward()`` runs it on fixed inputs).

    ``assignment``: module name -> component, or a function of the model called after the first
    step (some models replace modules in their first forward at a new length). ``ablation``:
    ``model -> context manager`` (``effx.models.ablation.attention_core_ablated``), compared
    with ``ablated_component``; None skips it. Returns (seconds, FLOPs, bytes)::

        components        the table's components present, then "unattributed"
        time_s            {component: [operator seconds per round]}, forward + backward
        forward_s, backward_s   the same split by phase
        time              {component: {"median", "q25", "q75"}}
        plain_s           [plain step seconds per round];  plain: its median/quartiles
        profiled_s        [wall seconds of the profiled step per round] (instrumentation included)
        operator_s        [operator seconds per profiled step]
        overhead_s        [plain - operator seconds per round];  overhead: median/quartiles
        ablation          {"status": "ok" | "unavailable", "reason", "method", "ablated_s",
                           "diff_s" (plain - ablated per round), "median_s", "interval_s"
                           (95% bootstrap of the median difference), "share", "share_interval",
                           "profiled_share" (median core operator time / median plain),
                           "parts_s" (per round, profiled plain step - profiled ablated step:
                           {"core_operators", "core_between_ops" (CPU, whole modules
                           replaced; else absent), "other_components", "rest" (the walls'
                           difference less the other parts)}), "parts_interval_s" (95%
                           bootstrap interval of each part's median)}
        check             ``effx.profiling.component_checks``; check["passed"]: True when
                          every check that ran passed, False when one failed, None when one
                          was too scattered
        flops, flops_total, saved_bytes, module_calls, profiler_events
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}; allowed: >= 1 (10 or more for intervals)")
    step = make_step(forward, mode, model)
    modules = [id(m) for m in model.modules()]
    counted = _counting_pass(model, step, forward, mode, flops, memory)
    if [id(m) for m in model.modules()] != modules:   # the forward replaced modules (BigBird's
        counted = _counting_pass(model, step, forward, mode, flops, memory)   # switch): again
    if callable(assignment):
        assignment = assignment(model)
    r = rounds(model, step, device, repeats, ablation)
    plain, ablated, ops = r.plain, r.ablated, r.ops
    comps = sorted(set(assignment.values())) + [UNATTRIBUTED]
    fwd = [by_component(o.forward, assignment) for o in ops]
    bwd = [by_component(o.backward, assignment) for o in ops]
    phase = {name: {c: [d.get(c, 0.0) for d in per] for c in comps} for name, per in
             (("forward_s", fwd), ("backward_s", bwd))}
    time_s = {c: [f + b for f, b in zip(phase["forward_s"][c], phase["backward_s"][c])] for c in comps}
    operator = [o.total for o in ops]
    out = dict(components=comps, time_s=time_s, **phase,
               time={c: summarize(v) for c, v in time_s.items()},
               plain_s=plain, plain=summarize(plain), profiled_s=r.profiled, operator_s=operator,
               overhead_s=[p - o for p, o in zip(plain, operator)],
               flops=by_component(counted["flops"], assignment) if flops else {},
               flops_total=counted["flops_total"] if flops else None,
               saved_bytes=by_component(counted["saved"], assignment) if memory else {},
               module_calls=counted["module_calls"], profiler_events=ops[-1].events)
    out["overhead"] = summarize(out["overhead_s"])
    core = time_s.get(ablated_component, [0.0] * repeats)
    out["ablation"] = _ablation_summary(r, core, assignment, ablated_component, n_boot, seed)
    between = out["ablation"].get("parts_s", {}).get("core_between_ops") or [0.0] * repeats
    core_with_between = [c + b for c, b in zip(core, between)]
    out["check"] = checks(plain, operator, core_with_between, ablated,
                           [o.unlinked_s for o in ops], mode, n_boot, seed)
    return out


def count_components(model: nn.Module, forward: Callable[[], object],
                     assignment: dict[str, str] | Callable[[nn.Module], dict[str, str]], *,
                     mode: str) -> dict:
    """FLOPs and saved activations per component from one step, without timing (a point whose
    step is too slow to time still gets them): {"flops", "flops_total", "saved_bytes"}."""
    step = make_step(forward, mode, model)
    counted = _counting_pass(model, step, forward, mode, True, True)
    if callable(assignment):
        assignment = assignment(model)
    return {"flops": by_component(counted["flops"], assignment), "flops_total": counted["flops_total"],
            "saved_bytes": by_component(counted["saved"], assignment)}


def _operator_s(o: OpTimes, assignment) -> dict[str, float]:
    """Operator seconds per component, forward and backward together."""
    out = by_component(o.forward, assignment)
    for c, v in by_component(o.backward, assignment).items():
        out[c] = out.get(c, 0.0) + v
    return out


def _between_s(o: OpTimes, modules: tuple[str, ...]) -> float:
    """Time between operators inside ``modules`` and their submodules."""
    return sum(v for name, v in o.between_ops.items()
               if name is not None and any(name == m or name.startswith(m + ".") for m in modules))


def _ablation_summary(r: Rounds, core, assignment, component, n_boot, seed) -> dict:
    if not r.ablated:
        return {"status": "unavailable", "reason": r.method}
    diff = [p - a for p, a in zip(r.plain, r.ablated)]
    base = statistics.median(r.plain)
    lo, hi = median_interval(diff, n_boot=n_boot, seed=seed)
    # per round: the profiled plain step minus the profiled ablated step (hooks and profiler
    # cost are in both, so they cancel)
    parts = {"core_operators": [], "core_between_ops": [], "other_components": [], "rest": []}
    for o, a, wall, abl_wall in zip(r.ops, r.ablated_ops, r.profiled, r.ablated_profiled):
        plain_c, ablated_c = _operator_s(o, assignment), _operator_s(a, assignment)
        delta = {c: plain_c.get(c, 0.0) - ablated_c.get(c, 0.0)
                 for c in set(plain_c) | set(ablated_c)}
        core_ops = delta.get(component, 0.0)
        between = _between_s(o, r.replaced) - _between_s(a, r.replaced)
        others = sum(v for c, v in delta.items() if c != component)
        for part, v in (("core_operators", core_ops), ("core_between_ops", between),
                        ("other_components", others),
                        ("rest", wall - abl_wall - core_ops - between - others)):
            parts[part].append(v)
    if not r.replaced or not any(o.between_ops for o in r.ops):
        del parts["core_between_ops"]       # not measured: no whole module replaced, or a GPU
    return {"status": "ok", "reason": None, "method": r.method, "ablated_s": r.ablated,
            "diff_s": diff,
            "median_s": statistics.median(diff), "interval_s": (lo, hi),
            "share": statistics.median(diff) / base, "share_interval": (lo / base, hi / base),
            "profiled_share": statistics.median(core) / base, "parts_s": parts,
            "parts_interval_s": {k: median_interval(v, n_boot=n_boot, seed=seed)
                                 for k, v in parts.items()}}
