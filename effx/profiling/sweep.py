"""Resumable sweeps: measure a list of points, record each in the results store as it finishes.

- A point already recorded with a final status (``ok``, ``oom``, ...) is skipped: an interrupted
  sweep resumes where it stopped and redoes nothing.
- An out-of-memory error is a result: it is recorded with status ``oom``, and the longer points of
  the same series (same point but for the length) are recorded as ``skipped_after_oom``.
- A time budget per call (CPU sweeps): once the median latency of one call (or, for points
  without a latency, the whole measurement) exceeds the budget, the longer points of the series
  are recorded as ``over_budget`` without being run.
- ``Unsupported`` raised by the measure function records ``unsupported`` (e.g. an image side that
  is not a multiple of the patch size) and moves on. Any other error propagates: bugs fail loudly.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import torch
from tqdm import tqdm

from effx.results import ResultStore, point_key


from effx.errors import Unsupported  # noqa: E402  (re-exported for old callers)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _cost_s(metrics: dict, elapsed: float | None) -> float | None:
    """What the time budget is compared with: one call's median latency, else the measure time."""
    latency = metrics.get("latency_s", {}).get("value")
    return latency if latency is not None else elapsed


def _series(point: dict, length_key: str) -> str:
    return point_key({k: v for k, v in point.items() if k != length_key})


def run_sweep(store: ResultStore, points: list[dict],
              measure: Callable[[dict], tuple[dict, dict] | dict], *,
              length_key: str = "length", budget_s: float | None = None,
              desc: str | None = None) -> dict[str, int]:
    """Measure every point not yet in `store`; return counts per outcome.

    `measure(point)` returns ``metrics`` or ``(metrics, info)`` where metrics map a name to
    ``effx.results.metric(...)`` entries. Points are visited by series, shortest length first.
    """
    ordered = sorted(points, key=lambda p: (_series(p, length_key), p.get(length_key, 0)))
    done = store.done_keys()
    stopped: dict[str, str] = {}   # series -> status given to its longer points
    for rec in store.records():    # a series stopped in an earlier run stays stopped
        if rec["status"] in ("oom", "over_budget") and length_key in rec["point"]:
            stopped.setdefault(_series(rec["point"], length_key),
                               "skipped_after_oom" if rec["status"] == "oom" else "over_budget")
        took = _cost_s(rec.get("metrics", {}), rec.get("info", {}).get("measure_wall_s"))
        if budget_s is not None and took is not None and took > budget_s:
            stopped.setdefault(_series(rec["point"], length_key), "over_budget")
    counts = {"measured": 0, "resumed": 0, "oom": 0, "skipped": 0, "unsupported": 0}
    bar = tqdm(ordered, desc=desc or store.study, unit="pt", file=sys.stderr, mininterval=2.0)
    for point in bar:
        key, series = point_key(point), _series(point, length_key)
        if key in done:
            counts["resumed"] += 1
            continue
        if series in stopped:
            store.record(point, status=stopped[series], info={"reason": "a shorter length of this series ran out of memory or over the time budget"})
            counts["skipped"] += 1
            continue
        bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in point.items() if k in ("model", "variant", length_key)))
        t0 = time.perf_counter()
        try:
            out = measure(point)
        except Unsupported as exc:
            store.record(point, status="unsupported", info={"reason": str(exc)})
            counts["unsupported"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - re-raised below unless it is an OOM
            if not is_oom(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            store.record(point, status="oom", info={"error": str(exc).splitlines()[0][:300]})
            stopped[series] = "skipped_after_oom"
            counts["oom"] += 1
            continue
        elapsed = time.perf_counter() - t0
        metrics, info = out if isinstance(out, tuple) else (out, {})
        store.record(point, metrics, info=dict(info, measure_wall_s=round(elapsed, 3)))
        counts["measured"] += 1
        if budget_s is not None and _cost_s(metrics, elapsed) > budget_s:
            stopped[series] = "over_budget"
    bar.close()
    return counts


def sweep_study(study: str, P: dict) -> tuple[ResultStore, dict[str, int]]:
    """Run the sweep of a study module (its ``points(P)`` and ``measure(point, P)``) into the
    store of ``P["profile"]``, with provenance and the CPU thread count fixed. Used by the
    notebooks and by ``python -m effx.pipeline measure`` (no Jupyter needed, e.g. on a GPU box)."""
    from effx.profiling.timing import fixed_threads
    from effx.studies import STUDIES
    module = STUDIES[study]
    store = ResultStore(study, P["profile"])
    store.start_run(P, device=P["device"])
    threads = P.get("threads") if str(P["device"]) == "cpu" else None
    with fixed_threads(threads):
        counts = run_sweep(store, module.points(P), lambda point: module.measure(point, P),
                           budget_s=P.get("budget_s"), desc=study)
    return store, counts
