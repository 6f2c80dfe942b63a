"""Tipping points: the input length from which an efficient variant is, and stays, cheaper.

Diwan, Choi & Harwath (ACL 2023, arXiv 2306.08667) call the *tipping point* of an efficient
self-attention variant the input length at which it becomes cheaper than its vanilla model. Here
"cheaper" is for one cost metric where lower is cheaper (latency, peak memory, FLOPs, inverse
throughput).

Measurement (paired design). At each length the baseline (B) and the efficient model (E) are
called alternately, B E B E ..., in one process after their warm-ups, so that machine drift hits
both; the whole sweep may be repeated in fresh processes (runs). Per length the data are a list of
runs, each a list of paired repeats (b_i, e_i); or an `Outcome` when no pair was measured.

Estimate.
1. Per length, r = median of the paired log ratios log(e_i / b_i), all runs pooled. The median is
   robust to the one-sided outliers of timing (an interrupt slows one call); pooling weights runs
   by their repeats and also serves deterministic metrics (one value per run). Outcomes: baseline
   out of memory where the efficient model ran is r = -inf (cheaper, for every metric: the
   baseline cannot run); efficient out of memory where the baseline ran is r = +inf (not
   cheaper); both out of memory ends the measured range; a length stopped by the time budget ends
   the determinable range (reported as `stopped_at`); not measured is skipped.
2. With tol = log(1 + tie_tol): cheaper where r < -tol, a tie where |r| <= tol, dearer above.
   tie_tol is a fixed margin of practical equivalence (default 2 %), not derived from the spread:
   the spread is the bootstrap's job (a status must hold in 95 % of the resamples), while a margin
   derived from it would make "tie" mean "noisy" and make the estimand depend on the number of
   repeats. It stops identical computations (BigBird running full attention below 704 tokens)
   from counting as "cheaper" on a 0.3 % difference.
3. The tipping index k is the first determinable length from which the efficient model is cheaper
   at every longer determinable length (an early dip that is undone later is ignored). Between
   the previous length k-1 (tie or dearer) and k, r is interpolated linearly on log L and its zero
   is the tipping length (for a tie slightly below zero at k-1: L_{k-1}; continuous in r). When
   r is infinite at either end (out of memory) the crossing is only bracketed: (L_{k-1}, L_k].
4. Interval: hierarchical bootstrap (`effx.analysis.bootstrap`): resample runs, then repeats
   within each run, recompute 1-3. The status is `undetermined` unless >= 95 % of the resamples
   agree with the estimate's status. For a crossing, the 95 % percentile interval of the
   resampled crossing lengths (a resample cheaper everywhere counts as L_min, one never cheaper
   as +inf, shown "> L_max"); no interval where the resamples cannot vary (zero width).
   Coverage, simulated with machine drift (tests/test_tipping.py): 0.975 with 3 runs x 5 repeats;
   1 run x 3 repeats covers only ~0.77 (the median of 3 is a poor bootstrap statistic).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from effx.analysis.bootstrap import hierarchical_medians, pooled_medians
from effx.errors import ParameterError

#: the statuses of a tipping point, the one place that defines them (the book's methods page
#: quotes this table)
STATUSES: dict[str, str] = {
    "crossing": "the efficient model becomes cheaper between two measured lengths and stays "
                "cheaper up to the longest determinable length; the length is interpolated on "
                "log length (or only bracketed, next to an out-of-memory length)",
    "cheaper_everywhere": "cheaper from the shortest measured length on: the tipping point is at "
                          "or below it",
    "not_cheaper": "no length from which the efficient model is and stays cheaper, up to the "
                   "longest determinable length",
    "tie": "within the tie tolerance of the baseline at every determinable length",
    "undetermined": "fewer than 95 % of the bootstrap resamples agree with the estimate's status",
    "no_data": "no length at which the two models can be compared",
}
#: the qualifier that may accompany any status
QUALIFIERS: dict[str, str] = {
    "stopped_at": "the first length stopped by the time budget: the determinable range ends "
                  "below it, so 'not cheaper up to L' may change with a larger budget",
}
TIE_TOL = 0.02
_CODES = ("crossing", "cheaper_everywhere", "not_cheaper", "tie", "no_data")   # per-resample
_VERB = {"crossing": "cross", "cheaper_everywhere": "are cheaper everywhere",
         "not_cheaper": "are not cheaper", "tie": "tie"}


class Outcome(str, Enum):
    """What happened at a length where no pair (b, e) was measured."""
    BASELINE_OOM = "baseline_oom"      # the efficient model ran: it is cheaper here
    EFFICIENT_OOM = "efficient_oom"    # the baseline ran: the efficient model is not cheaper
    BOTH_OOM = "both_oom"              # the measured range ends here
    OVER_BUDGET = "over_budget"        # stopped by the time budget: the determinable range ends
    NOT_MEASURED = "not_measured"      # skipped; the neighbouring lengths decide


def _fmt(x: float) -> str:
    """1843.2 -> '1,843'; 0.734 -> '0.734' (seconds of audio are lengths too)."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


@dataclass(frozen=True)
class TippingPoint:
    """A tipping point; `STATUSES` says what each status means, the module docstring how.

    length: the crossing (its upper end L_k when only bracketed), min_length for
    cheaper_everywhere, else None. ci_low/ci_high: the percentile interval, for a determined
    crossing whose resamples vary, else None (ci_high may be inf). agree: fraction of resamples
    with the estimate's status `point_status` (None: nothing resampled). bracket: (L_{k-1}, L_k)
    when an out-of-memory length bounds the crossing. n_runs, n_repeats: runs with pairs, and the
    fewest pairs of a (run, length).
    """
    status: str
    length: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    agree: float | None = None
    point_status: str = "no_data"
    min_length: float | None = None
    max_length: float | None = None
    stopped_at: float | None = None
    bracket: tuple[float, float] | None = None
    n_runs: int = 0
    n_repeats: int = 0
    tie_tol: float = TIE_TOL

    def label(self, unit: str = "tokens") -> str:
        """Table text, e.g. '1,843 tokens [1,610, 2,090]', '<= 128 tokens',
        'not cheaper up to 1,024 tokens (stopped by the time budget at 2,048)'."""
        u = f" {unit}" if unit else ""
        notes = []
        if self.status == "crossing" and self.bracket is not None:
            text = f"between {_fmt(self.bracket[0])} and {_fmt(self.bracket[1])}{u}"
            notes.append("out of memory at the edge")
        elif self.status == "crossing":
            text = f"{_fmt(self.length)}{u}"
            if self.ci_low is not None:
                hi = _fmt(self.ci_high) if np.isfinite(self.ci_high) else f"> {_fmt(self.max_length)}"
                text += f" [{_fmt(self.ci_low)}, {hi}]"
        elif self.status == "cheaper_everywhere":
            text = f"<= {_fmt(self.length)}{u}"
        elif self.status == "not_cheaper":
            text = f"not cheaper up to {_fmt(self.max_length)}{u}"
        elif self.status == "tie":
            text = f"tie (within {100 * self.tie_tol:g}%) up to {_fmt(self.max_length)}{u}"
        elif self.status == "undetermined":
            text = f"undetermined ({self.agree:.0%} of resamples {_VERB[self.point_status]})"
        else:
            text = "no data"
        if self.stopped_at is not None:
            notes.append(f"stopped by the time budget at {_fmt(self.stopped_at)}")
        return text + "".join(f" ({n})" for n in notes)


def _classify(lengths: np.ndarray, r: np.ndarray, tol: float):
    """Vectorised core. lengths (n,) increasing; r (B, n) log ratios, +-inf allowed, NaN = skip.

    Returns codes (B,) into _CODES, crossing length (B,) (L_min for cheaper_everywhere, NaN when
    none), bracketed (B,) bool, prev and k (B,) column indices of the crossing's bracket.
    """
    B, n = r.shape
    valid = ~np.isnan(r)
    cheaper = np.where(valid, r < -tol, True)                # NaN columns are neutral
    stays = np.logical_and.accumulate(cheaper[:, ::-1], axis=1)[:, ::-1]   # cheaper from i on
    start = stays & valid
    has = start.any(axis=1)
    k = np.argmax(start, axis=1)
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(n), -1), axis=1)
    prev = np.where(k > 0, last_valid[np.arange(B), np.maximum(k - 1, 0)], -1)
    all_tie = valid.any(axis=1) & np.all(~valid | (np.abs(r) <= tol), axis=1)
    codes = np.select([~valid.any(axis=1), has & (prev < 0), has, all_tie], [4, 1, 0, 3], 2)
    length = np.full(B, np.nan)
    bracketed = np.zeros(B, dtype=bool)
    first_valid = np.argmax(valid, axis=1)
    length[codes == 1] = lengths[first_valid[codes == 1]]
    rows = np.nonzero(codes == 0)[0]
    if rows.size:
        kk, pp = k[rows], prev[rows]
        r0, r1 = r[rows, pp], r[rows, kk]                     # r0 >= -tol > r1
        inf = ~np.isfinite(r0) | ~np.isfinite(r1)
        r0c = np.where(inf, 0.0, np.maximum(r0, 0.0))
        t = r0c / np.where(inf, 1.0, r0c - r1)
        x0, x1 = np.log(lengths[pp]), np.log(lengths[kk])
        length[rows] = np.where(inf, lengths[kk], np.exp(x0 + t * (x1 - x0)))
        bracketed[rows] = inf
    return codes, length, bracketed, prev, k


def _check_tol(tie_tol: float) -> float:
    if not (isinstance(tie_tol, (int, float)) and 0 <= tie_tol < 1):
        raise ParameterError("tie_tol", tie_tol, "a relative margin in [0, 1), e.g. 0.02 for 2%")
    return float(np.log1p(tie_tol))


def crossing_length(lengths, cost_a, cost_b, *, tie_tol: float = 0.0) -> TippingPoint:
    """Unpaired: from which length b is, and stays, cheaper than a (one cost per length each).

    lengths, cost_a, cost_b: 1-D, same size, any order. A non-finite or non-positive cost skips
    that length for both. Same rule and interpolation as `tipping_point`, no interval; ties
    (|log(b/a)| <= log(1 + tie_tol)) are not cheaper; tie_tol = 0 compares exactly.
    """
    L = np.asarray(lengths, dtype=float).ravel()
    a = np.asarray(cost_a, dtype=float).ravel()
    b = np.asarray(cost_b, dtype=float).ravel()
    if not (L.size == a.size == b.size):
        raise ParameterError("cost_a/cost_b", (a.size, b.size), f"one value per length ({L.size})",
                             why="sizes differ")
    if np.unique(L).size != L.size or not np.all(np.isfinite(L) & (L > 0)):
        raise ParameterError("lengths", list(L), "distinct positive lengths")
    order = np.argsort(L)
    L, a, b = L[order], a[order], b[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        r = np.where(ok, np.log(b / a), np.nan)
    tp = _result(L, r[None, :], r, tie_tol, _check_tol(tie_tol), ci=0.95, agree_level=0.95)
    return replace(tp, agree=None)                            # nothing was resampled


def _outcome(item, j: int) -> Outcome | None:
    """The Outcome of one length's entry, or None when it holds measured runs."""
    if not isinstance(item, str):
        return None
    try:
        return Outcome(item)
    except ValueError:
        raise ParameterError(f"measurements[{j}]", item,
                             ", ".join(o.value for o in Outcome)) from None


def _as_runs(item, j: int) -> list[np.ndarray]:
    """One length's runs -> list of 1-D log ratio arrays (non-finite or non-positive pairs dropped)."""
    runs = []
    for i, run in enumerate(item):
        pairs = np.asarray(run, dtype=float) if len(run) else np.empty((0, 2))
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ParameterError(f"measurements[{j}][{i}]", run,
                                 "a list of (baseline, efficient) pairs, or an Outcome")
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(pairs[:, 1] / pairs[:, 0])
            r = r[np.isfinite(r) & (pairs > 0).all(axis=1)]
        runs.append(r)
    return runs


def tipping_point(lengths, measurements, *, tie_tol: float = TIE_TOL, n_boot: int = 1000,
                  ci: float = 0.95, agree_level: float = 0.95, seed: int = 0) -> TippingPoint:
    """Tipping point of paired measurements, with its bootstrap status check and interval.

    lengths: (n,) distinct lengths, any order. measurements[j]: an `Outcome` (or its value) or a
    list of runs, each a list of paired repeats (baseline, efficient) in measurement order; run
    r is the same process at every length (pad with an empty run where it measured nothing).
    Costs: lower is cheaper (invert throughputs first).
    """
    if not (isinstance(n_boot, int) and n_boot > 0):
        raise ParameterError("n_boot", n_boot, "a positive integer")
    for name, v in (("ci", ci), ("agree_level", agree_level)):
        if not 0 < v < 1:
            raise ParameterError(name, v, "a number strictly between 0 and 1, e.g. 0.95")
    tol = _check_tol(tie_tol)
    L = np.asarray(lengths, dtype=float).ravel()
    if len(measurements) != L.size:
        raise ParameterError("measurements", len(measurements), f"one entry per length ({L.size})")
    if np.unique(L).size != L.size or not np.all(np.isfinite(L) & (L > 0)):
        raise ParameterError("lengths", list(L), "distinct positive lengths")
    cols, fixed, runs, stopped = [], [], [], None
    for j in np.argsort(L):
        outcome = _outcome(measurements[j], j)
        if outcome in (Outcome.BOTH_OOM, Outcome.OVER_BUDGET):
            stopped = L[j] if outcome == Outcome.OVER_BUDGET else None
            break                                             # the range ends here
        per_run = [] if outcome else _as_runs(measurements[j], j)
        if outcome == Outcome.NOT_MEASURED or not (outcome or any(len(x) for x in per_run)):
            continue                                          # nothing usable: skipped
        cols.append(L[j])
        fixed.append({Outcome.BASELINE_OOM: -np.inf, Outcome.EFFICIENT_OOM: np.inf}.get(outcome,
                                                                                       np.nan))
        runs.append(per_run)
    L = np.array(cols)
    fixed = np.array(fixed)
    R = max((len(x) for x in runs), default=0)
    runs = [x + [np.empty(0)] * (R - len(x)) for x in runs]
    alive = [i for i in range(R) if any(len(x[i]) for x in runs)]   # a run with no pair: none
    runs = [[x[i] for i in alive] for x in runs]
    point = np.where(np.isnan(fixed), pooled_medians(runs) if runs else fixed, fixed)
    boot = np.where(np.isnan(fixed), hierarchical_medians(runs, n_boot, np.random.default_rng(seed)),
                    fixed)
    used = [(r, len(v)) for x, f in zip(runs, fixed) if np.isnan(f) for r, v in enumerate(x) if len(v)]
    return _result(L, boot, point, tie_tol, tol, ci, agree_level, stopped_at=stopped,
                   n_runs=len({r for r, _ in used}), n_repeats=min((m for _, m in used), default=0))


def _result(L, boot, point, tie_tol, tol, ci, agree_level, stopped_at=None, n_runs=0,
            n_repeats=0) -> TippingPoint:
    """Status, interval and label fields from the point estimate (n,) and the resamples (B, n)."""
    common = dict(min_length=float(L[~np.isnan(point)][0]) if (~np.isnan(point)).any() else None,
                  max_length=float(L[~np.isnan(point)][-1]) if (~np.isnan(point)).any() else None,
                  stopped_at=None if stopped_at is None else float(stopped_at),
                  n_runs=n_runs, n_repeats=n_repeats, tie_tol=tie_tol)
    if L.size == 0 or np.isnan(point).all():
        return TippingPoint("no_data", **common)
    code, length, bracketed, prev, k = (x[0] for x in _classify(L, point[None, :], tol))
    status = _CODES[code]
    codes, lengths, _, _, _ = _classify(L, boot, tol)
    agree = float(np.mean(codes == code))
    if agree < agree_level:
        return TippingPoint("undetermined", agree=agree, point_status=status, **common)
    out = dict(status=status, agree=agree, point_status=status, **common)
    if status == "cheaper_everywhere":
        out["length"] = float(length)
    if status == "crossing":
        out["length"] = float(length)
        if bracketed:
            out["bracket"] = (float(L[prev]), float(L[k]))
        else:
            vals = np.where(codes <= 1, lengths, np.inf)[codes != 4]
            lo = np.percentile(vals, 100 * (1 - ci) / 2, method="lower")
            hi = np.percentile(vals, 100 * (1 + ci) / 2, method="higher")
            if hi > lo:                        # zero width: the resamples cannot vary
                out.update(ci_low=float(lo), ci_high=float(hi))
    return TippingPoint(**out)
