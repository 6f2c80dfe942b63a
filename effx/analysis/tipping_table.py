"""Tipping points of tidy result rows: one row per (efficient model, baseline, metric, series).

The estimator is `effx.analysis.tipping.tipping_point`; this module only pairs the rows.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from effx.analysis.tipping import TIE_TOL, Outcome, tipping_point
from effx.errors import ParameterError

#: columns of the input that are not series columns
RESERVED = ("model", "metric", "length", "run", "samples", "status")
OUTPUT = ("model", "baseline", "metric")
RESULT_COLUMNS = ("status", "tipping_length", "ci_low", "ci_high", "agree", "label", "min_length",
                  "max_length", "stopped_at", "n_runs", "n_repeats", "point_status")
_OOM = ("oom", "skipped_after_oom")


def default_higher_is_better(metric: str) -> bool:
    """Throughput-like metrics (name starts with 'throughput'): cost = 1 / value."""
    return str(metric).startswith("throughput")


def _state(row: dict | None) -> str:
    """'ok', 'oom', 'budget' or 'missing' for one model's row at one (series, length, run)."""
    if row is None:
        return "missing"
    status = row["status"]
    if status == "ok":
        return "ok" if len(row["samples"]) else "missing"
    if status in _OOM:
        return "oom"
    return "budget" if status == "over_budget" else "missing"


def _nan(x: float | None) -> float:
    return np.nan if x is None else float(x)


def _samples(v) -> list[float]:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return []
    return [math.nan if x is None else float(x) for x in v]   # None keeps its place in the order


def _length_entry(base_runs: list, eff_runs: list, where: str, invert: bool):
    """One length: runs of (b, e) pairs, or an Outcome. base_runs/eff_runs: rows per run (or None)."""
    runs, states = [], []
    for b, e in zip(base_runs, eff_runs):
        sb, se = _state(b), _state(e)
        states.append((sb, se))
        if sb == se == "ok":
            xb, xe = np.array(b["samples"]), np.array(e["samples"])
            if xb.size != xe.size:
                raise ParameterError("samples", (xb.size, xe.size),
                                     "as many baseline as efficient repeats (paired by index)",
                                     why=f"{where}, run {b['run']!r}")
            with np.errstate(divide="ignore"):                # 1/0 = inf: dropped as non-finite
                runs.append(np.column_stack([1 / xb, 1 / xe] if invert else [xb, xe]))
        else:
            runs.append(np.empty((0, 2)))
    if any(len(r) for r in runs):
        return runs
    if any("budget" in s for s in states):
        return Outcome.OVER_BUDGET
    base_oom = any(s == ("oom", "ok") for s in states)
    eff_oom = any(s == ("ok", "oom") for s in states)
    if any(s == ("oom", "oom") for s in states) or (base_oom and eff_oom):
        return Outcome.BOTH_OOM
    return (Outcome.EFFICIENT_OOM if eff_oom else Outcome.BASELINE_OOM if base_oom
            else Outcome.NOT_MEASURED)


def tipping_table(frame: pd.DataFrame, baseline_of: Mapping[str, str | Iterable[str]], *,
                  series_cols: Iterable[str] | None = None,
                  higher_is_better: Callable[[str], bool] = default_higher_is_better,
                  tie_tol: float = TIE_TOL, n_boot: int = 1000, ci: float = 0.95,
                  agree_level: float = 0.95, seed: int = 0,
                  length_unit: str | Mapping[str, str] = "tokens",
                  unit_by: str = "modality") -> pd.DataFrame:
    """One tipping point per (efficient model, its baseline, metric, series).

    Input contract, one row per (series, model, metric, length, run):
      model   : str, a key or a value of `baseline_of`.
      metric  : str, a cost name; `higher_is_better(metric)` says which are inverted (cost = 1/value).
      length  : number, the input length (tokens, seconds, pixels).
      run     : hashable id of the process that measured the sweep (the same id for the baseline
                and the efficient model of a paired sweep); one value when there is one run.
      samples : list of the repeats in measurement order; the i-th baseline repeat is paired with
                the i-th efficient repeat of the same (series, metric, length, run): both lists
                must have the same size. One value for deterministic metrics. Non-finite or
                non-positive values drop their pair. Empty or None: nothing measured.
      status  : "ok" (samples used); "oom" or "skipped_after_oom" (out of memory); "over_budget"
                (stopped by the time budget); anything else ("unsupported", ...) = not measured.
      series columns: `series_cols`, by default every other column (e.g. modality, mode, device,
                dtype, batch). A baseline row pairs with the efficient row that agrees on every
                series column (NaN equals NaN): drop model-specific columns before calling.
    Per (series, metric, length) the runs are combined: if any run has pairs, those are the data;
    else an `Outcome` from the runs' statuses: a time-budget stop on either side -> over_budget;
    both out of memory (in one run, or each in another run) -> both_oom; baseline out of memory
    where the efficient model ran -> baseline_oom; the reverse -> efficient_oom; else not
    measured. A missing row is not measured.
    baseline_of: efficient model -> its baseline model, or several, e.g.
                {"longformer": "roberta", "bigbird": ["bert", "bert:eager"]}.
    length_unit: the unit in labels; one for all, or per value of the `unit_by` series column.
    Returns columns model, baseline, metric, the series columns, then `RESULT_COLUMNS`
    (see `effx.analysis.tipping.TippingPoint`; tipping_length is the crossing, or L_min for
    cheaper_everywhere, else NaN).
    """
    missing = [c for c in RESERVED if c not in frame.columns]
    if missing:
        raise ParameterError("frame", list(frame.columns), f"a DataFrame with columns {RESERVED}",
                             why=f"missing {missing}")
    series_cols = ([c for c in frame.columns if c not in RESERVED] if series_cols is None
                   else list(series_cols))
    columns = [*OUTPUT, *series_cols, *RESULT_COLUMNS]
    pairs = [(eff, base) for eff, bases in baseline_of.items()
             for base in ([bases] if isinstance(bases, str) else bases)]
    models = {m for pair in pairs for m in pair}
    index: dict[tuple, dict] = {}            # (series..., metric, length, run, model) -> row
    groups: dict[tuple, set] = {}            # (series..., metric) -> {(length, run)}
    for row in frame[frame["model"].isin(models)].to_dict("records"):
        series = tuple(None if isinstance(row[c], float) and math.isnan(row[c]) else row[c]
                       for c in series_cols)
        key = (*series, row["metric"], float(row["length"]), row["run"], row["model"])
        if key in index:
            raise ParameterError("frame", dict(zip([*series_cols, "metric", "length", "run",
                                                    "model"], key)),
                                 "one row per (series, model, metric, length, run)",
                                 why="a duplicate row")
        index[key] = dict(row, samples=_samples(row["samples"]))
        groups.setdefault((*series, row["metric"]), set()).add((float(row["length"]), row["run"]))
    rows = []
    for eff, base in pairs:
        for group, points in groups.items():
            *series, metric = group
            mine = [(L, r) for L, r in points
                    if (*group, L, r, eff) in index or (*group, L, r, base) in index]
            if not any((*group, L, r, eff) in index for L, r in mine):
                continue
            lengths = sorted({L for L, _ in mine})
            runs = sorted({r for _, r in mine}, key=str)
            measurements = []
            for L in lengths:
                where = f"{dict(zip(series_cols, series))}, {metric}, length {L:g}"
                measurements.append(_length_entry(
                    [index.get((*group, L, r, base)) for r in runs],
                    [index.get((*group, L, r, eff)) for r in runs], where,
                    bool(higher_is_better(metric))))
            tp = tipping_point(lengths, measurements, tie_tol=tie_tol, n_boot=n_boot, ci=ci,
                               agree_level=agree_level, seed=seed)
            s = dict(zip(series_cols, series))
            unit = length_unit if isinstance(length_unit, str) else length_unit.get(s.get(unit_by), "")
            rows.append(dict(model=eff, baseline=base, metric=metric, **s, status=tp.status,
                             tipping_length=_nan(tp.length),
                             ci_low=_nan(tp.ci_low), ci_high=_nan(tp.ci_high), agree=_nan(tp.agree),
                             label=tp.label(unit), min_length=tp.min_length,
                             max_length=_nan(tp.max_length), stopped_at=_nan(tp.stopped_at),
                             n_runs=tp.n_runs, n_repeats=tp.n_repeats,
                             point_status=tp.point_status))
    return pd.DataFrame(rows, columns=columns)
