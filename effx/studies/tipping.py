"""Tipping points: the input length from which an efficient variant is cheaper than its baseline.

Diwan, Choi & Harwath (ACL 2023, arXiv 2306.08667) call the *tipping point* of an efficient
self-attention variant the input length at which it becomes cheaper than its vanilla model. Here
"cheaper" is for one cost metric where lower is cheaper (latency, peak memory, inverse throughput).

Algorithm (measurements on a grid of lengths, both models at the same lengths):

1. Keep the lengths where both costs are finite and positive (an OOM or a missing point counts
   for neither model at that length).
2. r(L) = log(cost_eff(L) / cost_base(L)); the efficient variant is cheaper where r <= 0.
3. The tipping index k is the first measured length from which r <= 0 at *every* larger measured
   length. With noise the curves may cross more than once; this rule ignores an early dip below
   zero that is later undone, and reports the crossing after which the variant stays cheaper.
4. Between lengths k-1 (r > 0) and k (r <= 0), r is interpolated linearly against log L (the
   costs are near power laws, i.e. straight lines on log-log axes), and the zero is the tipping
   length. k = 0 is "cheaper_everywhere" (reported as <= L_min); no such k is "no_crossing"
   (not cheaper at L_max, so no tipping point up to L_max).

Everything here is pure numpy/pandas: it reads measured tables and never runs a model.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from effx.errors import ParameterError

STATUSES = ("crossing", "cheaper_everywhere", "no_crossing", "no_data")


def _fmt(x: float) -> str:
    """1843.2 -> '1,843'; 0.734 -> '0.734' (seconds of audio are lengths too)."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


@dataclass(frozen=True)
class TippingPoint:
    """Where the efficient variant becomes (and stays) cheaper; see the module docstring.

    status: "crossing" (length interpolated), "cheaper_everywhere" (length = min_length, read as
    "<= min_length"), "no_crossing" (length None: not cheaper up to max_length), or "no_data"
    (no length where both costs are finite).
    """
    length: float | None
    status: str
    min_length: float | None
    max_length: float | None

    def label(self, unit: str = "tokens") -> str:
        """Human text: '1,843 tokens', '<= 128 tokens', 'no crossing up to 4,096'."""
        suffix = f" {unit}" if unit else ""
        if self.status == "crossing":
            return f"{_fmt(self.length)}{suffix}"
        if self.status == "cheaper_everywhere":
            return f"<= {_fmt(self.length)}{suffix}"
        if self.status == "no_crossing":
            return f"no crossing up to {_fmt(self.max_length)}"
        return "no data"


def _valid_columns(lengths: np.ndarray, base: np.ndarray, eff: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (np.isfinite(lengths) & (lengths > 0) & np.isfinite(base) & (base > 0)
                & np.isfinite(eff) & (eff > 0))


def _crossings(lengths: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised core. lengths: (n,) increasing; ratio: (B, n) = log(eff/base), all finite.

    Returns (length (B,) with NaN where none, status (B,) as str objects).
    """
    B, n = ratio.shape
    length = np.full(B, np.nan)
    status = np.full(B, "no_data", dtype=object)
    if n == 0:
        return length, status
    cheaper = ratio <= 0
    # stays[b, i]: cheaper at i and at every larger measured length  (suffix AND)
    stays = np.logical_and.accumulate(cheaper[:, ::-1], axis=1)[:, ::-1]
    any_stay = stays[:, -1]
    k = np.argmax(stays, axis=1)                      # first True (0 when none: masked below)
    everywhere = any_stay & (k == 0)
    cross = any_stay & (k > 0)
    status[:] = "no_crossing"
    status[everywhere] = "cheaper_everywhere"
    status[cross] = "crossing"
    length[everywhere] = lengths[0]
    log_len = np.log(lengths)
    rows = np.nonzero(cross)[0]
    if rows.size:
        kk = k[rows]
        r0, r1 = ratio[rows, kk - 1], ratio[rows, kk]      # r0 > 0 >= r1
        x0, x1 = log_len[kk - 1], log_len[kk]
        t = r0 / (r0 - r1)
        length[rows] = np.exp(x0 + t * (x1 - x0))
    return length, status


def _prepare_lengths(lengths) -> np.ndarray:
    L = np.asarray(lengths, dtype=float).ravel()
    finite = L[np.isfinite(L)]
    if np.unique(finite).size != finite.size:
        raise ParameterError("lengths", list(lengths), "distinct lengths (one cost per length)",
                             why="a length appears twice")
    return L


def crossing_length(lengths, cost_baseline, cost_efficient) -> TippingPoint:
    """Tipping point from one cost per length for each model (lower cost = cheaper).

    lengths, cost_baseline, cost_efficient: 1-D, same size, any order. NaN/inf/None (e.g. an OOM)
    drop that length for both models.
    """
    L = _prepare_lengths(lengths)
    b = np.asarray(cost_baseline, dtype=float).ravel()
    e = np.asarray(cost_efficient, dtype=float).ravel()
    if not (L.size == b.size == e.size):
        raise ParameterError("cost_baseline/cost_efficient", (b.size, e.size),
                             f"one value per length ({L.size})", why="sizes differ")
    ok = _valid_columns(L, b, e)
    order = np.argsort(L[ok])
    L, b, e = L[ok][order], b[ok][order], e[ok][order]
    length, status = _crossings(L, np.log(e / b)[None, :])
    return TippingPoint(length=None if np.isnan(length[0]) else float(length[0]),
                        status=str(status[0]),
                        min_length=float(L[0]) if L.size else None,
                        max_length=float(L[-1]) if L.size else None)


def _apply_stat(stat: Callable, x: np.ndarray) -> np.ndarray:
    """stat over the last axis; falls back to a loop for statistics without an `axis` argument."""
    try:
        out = np.asarray(stat(x, axis=-1), dtype=float)
        if out.shape == x.shape[:-1]:
            return out
    except TypeError:
        pass
    return np.apply_along_axis(lambda row: float(stat(row)), -1, x)


def _clean_samples(samples) -> list[np.ndarray]:
    out = []
    for s in samples:
        a = np.asarray([] if s is None else s, dtype=float).ravel()
        out.append(a[np.isfinite(a)])
    return out


def bootstrap_tipping(lengths, samples_baseline, samples_efficient, n_boot: int = 1000,
                      ci: float = 0.95, seed: int = 0, stat: Callable = np.median) -> dict:
    """Tipping point with a percentile bootstrap interval over the repeated measurements.

    samples_*: one sequence of repeats per length (empty/None = not measured, e.g. OOM). Each
    resample draws every length's repeats with replacement (independently per length and model),
    takes `stat`, and finds the crossing. The interval is the (1-ci)/2 and (1+ci)/2 percentiles
    of the resamples that *crossed*; the fractions of each outcome say how often that was.
    """
    if not (isinstance(n_boot, int) and n_boot > 0):
        raise ParameterError("n_boot", n_boot, "a positive integer")
    if not 0 < ci < 1:
        raise ParameterError("ci", ci, "a number strictly between 0 and 1, e.g. 0.95")
    L = _prepare_lengths(lengths)
    sb, se = _clean_samples(samples_baseline), _clean_samples(samples_efficient)
    if not (L.size == len(sb) == len(se)):
        raise ParameterError("samples_baseline/samples_efficient", (len(sb), len(se)),
                             f"one list of repeats per length ({L.size})", why="sizes differ")
    point_b = np.array([_apply_stat(stat, s[None, :])[0] if s.size else np.nan for s in sb])
    point_e = np.array([_apply_stat(stat, s[None, :])[0] if s.size else np.nan for s in se])
    estimate = crossing_length(L, point_b, point_e)

    ok = _valid_columns(L, point_b, point_e)
    cols = np.nonzero(ok)[0][np.argsort(L[ok])]
    rng = np.random.default_rng(seed)
    ratio = np.empty((n_boot, cols.size))
    for j, c in enumerate(cols):   # (n_boot, n_repeats) draws per length and model
        rb = sb[c][rng.integers(0, sb[c].size, size=(n_boot, sb[c].size))]
        re = se[c][rng.integers(0, se[c].size, size=(n_boot, se[c].size))]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio[:, j] = np.log(_apply_stat(stat, re) / _apply_stat(stat, rb))
    finite_rows = np.isfinite(ratio).all(axis=1)   # a resample with a zero cost is unusable
    boot_len, boot_status = _crossings(L[cols], ratio[finite_rows])
    crossed = boot_len[boot_status == "crossing"]
    lo, hi = ((np.nan, np.nan) if crossed.size == 0 else
              np.percentile(crossed, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]))
    frac = {s: float(np.mean(boot_status == s)) if boot_status.size else float("nan")
            for s in ("crossing", "cheaper_everywhere", "no_crossing")}
    return {"estimate": estimate, "length": estimate.length, "status": estimate.status,
            "ci_low": float(lo), "ci_high": float(hi), "ci": ci, "n_boot": n_boot, "seed": seed,
            "frac_crossing": frac["crossing"],
            "frac_cheaper_everywhere": frac["cheaper_everywhere"],
            "frac_no_crossing": frac["no_crossing"],
            "n_samples": int(min((sb[c].size for c in cols), default=0))}


# -- tables ------------------------------------------------------------------------------------

#: columns of ResultStore.table() that are not part of a point
_NOT_POINT = {"status", "run_id", "metric", "value", "unit", "n", "q25", "q75", "commit", "date",
              "device_name", "torch_version", "samples"}


def default_higher_is_better(metric: str) -> bool:
    """Throughput-like metrics (name starts with 'throughput'): cost = 1 / value."""
    return str(metric).startswith("throughput")


def _norm(v):
    """Comparable point value: NaN -> None, 2.0 -> 2 (pandas turns int columns with gaps to float)."""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, sort_keys=True, default=str)   # hashable, same on both sides
    if hasattr(v, "item"):   # numpy scalar
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _point_of(row: dict, point_cols: Iterable[str]) -> dict:
    return {k: _norm(row[k]) for k in point_cols if _norm(row[k]) is not None}


def _frame_from(results, samples: dict | None) -> pd.DataFrame:
    """Tidy frame with a `samples` column (lists of repeats, possibly empty)."""
    if hasattr(results, "records") and hasattr(results, "table"):   # a ResultStore
        rows = [dict(rec["point"], status=rec["status"], metric=name, value=m.get("value"),
                     unit=m.get("unit"), samples=list(m.get("samples") or []))
                for rec in results.records() for name, m in rec["metrics"].items()]
        return pd.DataFrame(rows)
    if not isinstance(results, pd.DataFrame):
        raise ParameterError("results", type(results).__name__, "a ResultStore or a DataFrame")
    df = results.copy()
    if "samples" not in df.columns:
        by_point = {}
        for key, per_metric in (samples or {}).items():
            point = {k: _norm(v) for k, v in json.loads(key).items() if _norm(v) is not None}
            by_point[json.dumps(point, sort_keys=True, default=str)] = per_metric
        point_cols = [c for c in df.columns if c not in _NOT_POINT and not c.startswith("info_")]
        df["samples"] = [
            list(by_point.get(json.dumps(_point_of(r, point_cols), sort_keys=True, default=str),
                              {}).get(r["metric"]) or [])
            for r in df.to_dict("records")]
    return df


def tipping_table(results, baseline_of: dict[str, str], *, samples: dict | None = None,
                  metric_col: str = "metric", model_col: str = "model",
                  length_col: str = "length", value_col: str = "value",
                  higher_is_better: Iterable[str] | Callable[[str], bool] = default_higher_is_better,
                  n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                  stat: Callable = np.median,
                  length_unit: str | dict[str, str] = "tokens") -> pd.DataFrame:
    """One row per (efficient series, its baseline series, metric): tipping point and interval.

    results: a ``ResultStore`` (exact samples), or its ``table()`` DataFrame plus ``samples`` from
    ``ResultStore.samples()`` (matched to rows by point key) or a `samples` column. Without samples
    the interval is NaN and the point estimate uses the `value` column.
    baseline_of: efficient model -> baseline model, e.g. {"longformer": "roberta"}.
    A *series* is every point column but model and length (modality, mode, device, dtype, batch,
    ...). An efficient series pairs with each baseline series that agrees on the columns both
    have; baseline-only columns appear as ``baseline_<col>``. Only rows with status "ok" count.
    higher_is_better: metric names (or a predicate) whose cost is 1/value (throughput).
    length_unit: unit in the labels, one for all or per modality ({"speech": "s", ...}).
    Intervals are NaN where every used length has a single repeat (a bootstrap cannot vary).
    """
    if isinstance(higher_is_better, str):
        higher_is_better = {higher_is_better}
    higher = higher_is_better if callable(higher_is_better) else set(higher_is_better).__contains__
    df = _frame_from(results, samples)
    out_cols = ["model", "baseline", "metric", "tipping_length", "ci_low", "ci_high", "status",
                "label", "frac_crossing", "min_length", "max_length", "lengths", "n_lengths",
                "n_samples", "inverted"]
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    df = df[df["status"] == "ok"]
    series_cols = [c for c in df.columns if c not in _NOT_POINT | {model_col, length_col}
                   and not c.startswith("info_")]
    series: dict[tuple, dict] = {}   # (model, metric, frozen params) -> {length: samples/value}
    for r in df.to_dict("records"):
        params = tuple(sorted(_point_of(r, series_cols).items()))
        s = series.setdefault((r[model_col], r[metric_col], params), {})
        reps = [float(x) for x in (r["samples"] or []) if x is not None]
        if not reps and r.get(value_col) is not None and np.isfinite(r[value_col]):
            reps = [float(r[value_col])]
        if higher(r[metric_col]):
            reps = [1.0 / x if x > 0 else np.nan for x in reps]
        s[float(r[length_col])] = reps
    rows = []
    for (model, metric, params), eff in series.items():
        if model not in baseline_of:
            continue
        pe = dict(params)
        for (bmodel, bmetric, bparams), base in series.items():
            pb = dict(bparams)
            if bmodel != baseline_of[model] or bmetric != metric:
                continue
            if any(pe[k] != pb[k] for k in pe.keys() & pb.keys()):
                continue
            grid = sorted(eff.keys() | base.keys())
            res = bootstrap_tipping(grid, [base.get(x, []) for x in grid],
                                    [eff.get(x, []) for x in grid], n_boot=n_boot, ci=ci,
                                    seed=seed, stat=stat)
            est: TippingPoint = res["estimate"]
            used = [x for x in grid if base.get(x) and eff.get(x)]
            n_single = all(len(base[x]) == 1 and len(eff[x]) == 1 for x in used)
            unit = (length_unit if isinstance(length_unit, str)
                    else length_unit.get(pe.get("modality"), ""))
            rows.append(dict(pe, **{f"baseline_{k}": v for k, v in pb.items() if k not in pe},
                             model=model, baseline=bmodel, metric=metric,
                             tipping_length=est.length,
                             ci_low=np.nan if n_single else res["ci_low"],
                             ci_high=np.nan if n_single else res["ci_high"],
                             status=est.status, label=est.label(unit),
                             frac_crossing=res["frac_crossing"], min_length=est.min_length,
                             max_length=est.max_length, lengths=used, n_lengths=len(used),
                             n_samples=res["n_samples"], inverted=bool(higher(metric))))
    if not rows:
        return pd.DataFrame(columns=out_cols)
    table = pd.DataFrame(rows)
    lead = [c for c in ("modality", "model", "baseline", "metric", "mode", "device", "dtype",
                        "batch") if c in table.columns]
    return table[lead + [c for c in table.columns if c not in lead]]
