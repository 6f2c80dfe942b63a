"""The one tolerance rule for kernels and fast paths, shared by tests, kernel checks and benchmarks.

flash-attention's rule: in the working dtype, a fast path's error against a float64 reference
may be at most ``factor`` (2) times the error of plain PyTorch doing the same math in the same
dtype, plus one rounding step at the largest reference value (so that an exact fallback does not
force an exact kernel). It applies to outputs and to every gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FACTOR = 2.0


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|, computed in float64."""
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


@dataclass(frozen=True)
class Verdict:
    """One comparison: the candidate's error, the plain path's error, the bound and the outcome."""
    name: str
    error: float
    baseline_error: float
    bound: float
    finite: bool

    @property
    def ok(self) -> bool:
        return self.finite and self.error <= self.bound

    def __str__(self) -> str:
        word = "ok" if self.ok else "FAILS"
        return (f"{self.name}: error {self.error:.2e} vs bound {self.bound:.2e} "
                f"(plain PyTorch {self.baseline_error:.2e}) {word}")


def within_rule(name: str, candidate: torch.Tensor, plain: torch.Tensor, reference: torch.Tensor,
                factor: float = FACTOR) -> Verdict:
    """Compare ``candidate`` (fast path) and ``plain`` (PyTorch, same dtype) with ``reference``
    (float64). The bound is ``factor * error(plain) + eps(dtype) * max|reference| + 1e-6``."""
    eps = torch.finfo(candidate.dtype).eps if candidate.is_floating_point() else 0.0
    base = max_error(plain, reference)
    bound = factor * base + eps * (reference.abs().max().item() if reference.numel() else 0.0) + 1e-6
    return Verdict(name, max_error(candidate, reference), base, bound,
                   bool(torch.isfinite(candidate).all()))


def assert_within_rule(name, candidate, plain, reference, factor: float = FACTOR) -> Verdict:
    """``within_rule`` that raises AssertionError with the numbers when the rule is broken."""
    verdict = within_rule(name, candidate, plain, reference, factor)
    if not verdict.ok:
        raise AssertionError(str(verdict))
    return verdict


def outputs_and_grads(fn, q, k, v, grad_out, dtype=None) -> tuple[torch.Tensor, ...]:
    """(out, dq, dk, dv) of ``fn(q, k, v)`` for the upstream gradient ``grad_out``, the inputs cast
    to ``dtype`` (default: their own) as fresh leaves."""
    xs = [x.detach().to(dtype or x.dtype).requires_grad_(True) for x in (q, k, v)]
    out = fn(*xs)
    grads = torch.autograd.grad(out, xs, grad_out.to(out.dtype))
    return (out, *grads)


def compare_paths(fn, plain, reference, q, k, v, grad_out, factor: float = FACTOR) -> list[Verdict]:
    """The rule for the output and every gradient: ``fn`` and ``plain`` run in q's dtype,
    ``reference`` in float64. Returns one Verdict per tensor (out, dq, dk, dv)."""
    got = outputs_and_grads(fn, q, k, v, grad_out)
    base = outputs_and_grads(plain, q, k, v, grad_out)
    ref = outputs_and_grads(reference, q, k, v, grad_out, torch.float64)
    return [within_rule(n, a, b, r, factor)
            for n, a, b, r in zip(("out", "dq", "dk", "dv"), got, base, ref)]
