"""The checks of the cost breakdown (``effx.profiling.components``): what can fail, pass or stay
undecided.

Why the sum of the parts is not a check: operator times plus the overhead band equal the plain
step by definition, so that sum proves nothing. What is tested instead, each interval-based
check with one of three outcomes (``check_verdict``): ``fail`` when its interval misses what the
check allows, whatever its width; ``too scattered`` when it does not but is wider than
``SCATTER_LIMIT`` (20 points of the step), so it decides nothing and its ``passed`` is None, as
is the whole check's unless another check failed; ``pass`` otherwise.

1. ``operators_within_plain``: profiled operator time cannot exceed the un-instrumented step.
   Statistic: median over rounds of (operators - plain) / plain, with a bootstrap interval;
   fails when the interval lies above ``+tolerance`` (2%), i.e. when the profiler inflates
   operator time (its per-operator cost lands inside parent operators) or time is counted twice
   (inclusive instead of self time, a backward operator in two places, CPU and kernel time
   mixed). Its negative is the overhead band's share, reported beside it.
2. ``ablation_matches_profile``: the ablated share of the step (median of plain - ablated,
   over median plain) minus the profiled attention-core share (median over rounds of the core's
   operator time plus the time between operators that the no-op saves in the modules it
   replaces, over median plain), bootstrap interval over rounds; fails when the interval misses
   [-tol, +tol] (5 points). Catches attention work attributed elsewhere (or other work
   attributed to it), backward attribution in training included. Not available for models the
   ablation cannot handle (``ablation["reason"]``). The time between operators counts because
   the ablation removes it too (at 4,096 tokens an eager core frees 0.8 GB score tensors
   there). Where the no-op replaces a function inside a larger module (Hugging Face's attention
   interface, torchaudio), that function's Python cannot be told apart and counts as zero:
   expect agreement there where attention is a large part of the step.
3. ``backward_linked`` (training): backward operator time whose node matched no forward
   operator, as a share of operator time; fails above 1% (the sequence-number link broke).

Intervals are percentile bootstraps over rounds (``median_interval``; coverage simulated in
the tests: about 93-95% for a median of 10 skewed differences).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

TOLERANCE = {"operators_within_plain": 0.02, "ablation_matches_profile": 0.05, "backward_linked": 0.01}
#: an interval wider than this (fraction of the step) decides nothing: 20 points of the step,
#: four times the ablation check's band, cannot tell a 5-point agreement from a 15-point miss
SCATTER_LIMIT = 0.20


def median_interval(samples, coverage: float = 0.95, n_boot: int = 2000, seed: int = 0,
                    statistic: Callable | None = None) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` (default: the median) over rows of
    ``samples`` (1-D, or 2-D with one row per round, resampled together). Coverage of the
    median's interval at 10 rounds is tested by simulation (tests/test_components.py)."""
    x = np.asarray(samples, dtype=float)
    stat = statistic or (lambda s: np.median(s, axis=1))
    idx = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    values = stat(x[idx])
    a = (1 - coverage) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def check_verdict(lo: float, hi: float, misses: bool) -> dict:
    """A check's outcome from its interval: ``fail`` when the interval misses what the check
    allows (whatever its width), else ``too scattered`` when it is wider than ``SCATTER_LIMIT``
    (it would also hold a clear miss), else ``pass``. ``passed``: True, False or None."""
    if misses:
        return {"passed": False, "verdict": "fail"}
    if hi - lo > SCATTER_LIMIT:
        return {"passed": None, "verdict": "too scattered"}
    return {"passed": True, "verdict": "pass"}


def checks(plain, op_total, core, ablated, unlinked, mode, n_boot: int = 2000, seed: int = 0) -> dict:
    """The checks of one point from its rounds (seconds per round): plain steps, operator time
    of the profiled steps, the attention core's profiled time (operators plus the time between
    them that the ablation saves), ablated steps ([] without an ablation), backward time linked
    to no forward operator. {name: {"statistic", "value", "interval", "tolerance", "passed",
    "verdict"}, ..., "passed": True | False | None}."""
    rows = np.column_stack([plain, op_total])
    excess = np.median((rows[:, 1] - rows[:, 0]) / rows[:, 0])
    lo, hi = median_interval(rows, n_boot=n_boot, seed=seed, statistic=lambda s: np.median(
        (s[..., 1] - s[..., 0]) / s[..., 0], axis=1))
    tol = TOLERANCE["operators_within_plain"]
    out = {"operators_within_plain": dict(
        statistic="median over rounds of (operator time - plain step) / plain step",
        value=float(excess), interval=(lo, hi), tolerance=tol, **check_verdict(lo, hi, lo > tol))}
    if ablated:
        rows = np.column_stack([plain, ablated, core])

        def gap(s):   # ablated share - profiled core share, per bootstrap resample
            p = np.median(s[..., 0], axis=1)
            return (np.median(s[..., 0] - s[..., 1], axis=1) - np.median(s[..., 2], axis=1)) / p
        value = float(gap(rows[None])[0])
        lo, hi = median_interval(rows, n_boot=n_boot, seed=seed, statistic=gap)
        tol = TOLERANCE["ablation_matches_profile"]
        out["ablation_matches_profile"] = dict(
            statistic="median(plain - ablated)/median(plain) "
                      "- median(core operators + between them)/median(plain)",
            value=value, interval=(lo, hi), tolerance=tol,
            **check_verdict(lo, hi, bool(lo > tol or hi < -tol)))
    if mode == "training":
        share = float(sum(unlinked) / max(sum(op_total), 1e-12))
        tol = TOLERANCE["backward_linked"]
        out["backward_linked"] = dict(statistic="backward operator time matched to no forward "
                                      "operator / operator time", value=share, tolerance=tol,
                                      **check_verdict(share, share, share > tol))
    verdicts = [c["passed"] for c in out.values()]
    out["passed"] = False if False in verdicts else (None if None in verdicts else True)
    return out
