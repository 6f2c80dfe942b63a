"""Which module owns the work running now: module hooks plus autograd sequence numbers.

The bookkeeping behind the FLOPs and saved-activation columns of ``effx.profiling.components``
(time comes from the profiler, ``effx.profiling.op_profile``). ``ModuleTracer`` puts a pre- and a
post-hook on every module and keeps the stack of module calls, so in the forward the owner is the
innermost call running.

Backward: autograd numbers the nodes it creates (a thread-local sequence counter). The hooks
record the counter at each call's entry and exit, so every node belongs to the innermost call
running when it was made; during backward ``current()`` asks autograd which node it is running
(``torch._C._current_autograd_node``) and maps its number to that call. A weight's gradient
accumulation (AccumulateGrad, unnumbered) belongs to the weight's module.

Saved activations: ``saving()`` counts, per module running, the bytes of the tensors autograd
saves for backward (each storage once, parameters excluded).
"""
from __future__ import annotations

import functools
from collections import defaultdict

import torch
from torch import nn

_next_seq = torch._C._autograd._get_sequence_nr      # the number the next autograd node gets


class ModuleTracer:
    """Hooks on every module of ``model``: call stack, autograd ownership, saved bytes.

    Use as a context manager around one step (``saving()`` around a forward to count saved
    activations); ``current()`` names the module whose work runs now (forward or backward);
    ``saved`` maps module name -> bytes (None = outside every module); ``reset()`` between steps.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.param_owner = {id(p): name for name, m in model.named_modules()
                            for p in m.parameters(recurse=False)}
        self.handles: list = []
        self.reset()

    def reset(self):
        # one call = [name, first seq nr, end seq nr]
        self.calls: list[list] = []
        self.stack: list[int] = []
        self.saved: dict[str | None, int] = defaultdict(int)
        self._seen_storages: set[int] = set()
        self._owner_of_seq: tuple[int, list] | None = None

    # -- hooks -------------------------------------------------------------------------------
    def __enter__(self):
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(functools.partial(self._pre, name)))
            self.handles.append(module.register_forward_hook(self._post, always_call=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _pre(self, name, module, args):
        self.stack.append(len(self.calls))
        self.calls.append([name, _next_seq(), None])
        self._owner_of_seq = None

    def _post(self, module, args, output):
        self.calls[self.stack.pop()][2] = _next_seq()

    # -- ownership ---------------------------------------------------------------------------
    def _owners(self) -> tuple[int, list]:
        """Sequence number - base -> innermost module call (calls are in pre-order: inner last)."""
        done = [c for c in self.calls if c[2] is not None]
        if not done:
            return 0, []
        base = min(c[1] for c in done)
        owner: list = [None] * (max(c[2] for c in done) - base)
        for name, first, end in done:
            owner[first - base:end - base] = [name] * (end - first)
        return base, owner

    def node_owner(self, node) -> str | None:
        """The module that created autograd ``node`` (or, for AccumulateGrad, owns the weight)."""
        if hasattr(node, "variable"):                                 # AccumulateGrad
            return self.param_owner.get(id(node.variable))
        if self._owner_of_seq is None:
            self._owner_of_seq = self._owners()
        base, owner = self._owner_of_seq
        s = node._sequence_nr() - base
        return owner[s] if 0 <= s < len(owner) else None

    def current(self) -> str | None:
        """The module whose work runs now: the owner of the autograd node being evaluated, else
        the innermost forward call."""
        node = torch._C._current_autograd_node()
        if node is not None:
            return self.node_owner(node)
        return self.calls[self.stack[-1]][0] if self.stack else None

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
            # never t itself: a saved output would hold its own graph node (a reference cycle
            # that kept every step's activations alive: GBs per profiled point)
            return t.detach()
        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
