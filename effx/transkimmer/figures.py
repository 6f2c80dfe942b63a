"""Figures of the Transkimmer study: the accuracy-speedup frontier of every method, kept tokens
by layer, one sentence's skimming trace and the training curves. Each is a function returning a
tidy frame, plus a plot function that reads only that frame (matplotlib / seaborn).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from effx.transkimmer.report import curves, jobs_frame, not_beaten, setting

METHOD_ORDER = ("baseline", "baseline_continued", "transkimmer", "topk_pruning", "fewer_layers")


def frontier(seeds: pd.DataFrame, x: str = "flops_speedup") -> pd.DataFrame:
    """Accuracy-speedup points of all methods (``report.seed_summary`` rows): task, method,
    setting, seeds, metric mean and 95% interval, speedups; 'pareto' marks the points no other
    point of the task beats on both the metric and `x`."""
    if seeds.empty:
        return seeds
    cols = ["task", "method", "setting", "metric", "seeds", "value", "value_ci", "delta",
            "delta_ci", "flops_speedup", "wall_b1", "wall_b32", "wall_b32_ci", "kept"]
    out = seeds[cols].copy()
    out["pareto"] = pd.concat([not_beaten(g, x) for _, g in out.groupby("task")]).astype(bool)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return out.sort_values(["task", "method", x], key=lambda c: c.map(order) if c.name == "method"
                           else c).reset_index(drop=True)


def plot_frontier(front: pd.DataFrame, task: str, x: str = "flops_speedup", ax=None):
    """Metric (mean over seeds, 95% interval) against speedup `x` for one task; one marker per
    method, Transkimmer's lambdas joined by a line; the baseline as a dashed line."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    g = front[front.task == task]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    palette = dict(zip(METHOD_ORDER, sns.color_palette("colorblind", len(METHOD_ORDER))))
    for method, m in g.groupby("method", sort=False):
        m = m.sort_values(x)
        ax.errorbar(m[x], m.value, yerr=m.value_ci.fillna(0), fmt="o-" if method == "transkimmer"
                    else "o", color=palette[method], label=method, capsize=3)
    base = g[g.method == "baseline"]
    if len(base):
        ax.axhline(base.value.iloc[0], ls="--", c="grey", lw=1)
    ax.set_xlabel({"flops_speedup": "FLOPs speedup over the unpadded baseline (x)",
                   "wall_b32": "wall-clock speedup, batch 32, length-sorted (x)",
                   "wall_b1": "wall-clock speedup, batch 1 (x)"}.get(x, x))
    ax.set_ylabel(f"{g.metric.iloc[0] if len(g) else 'metric'} (x100)")
    ax.set_title(task)
    ax.legend(fontsize="small")
    return ax


def keep_table(table: pd.DataFrame) -> pd.DataFrame:
    """Long table of the kept fraction of real tokens by layer: task, method, setting, seed,
    layer, kept."""
    wide = jobs_frame(table)
    rows = []
    for _, r in wide.iterrows():
        for c in r.index:
            if str(c).startswith("keep_l") and pd.notna(r[c]):
                rows.append({"task": r.task, "method": r.job.method, "setting": setting(r.job),
                             "seed": r.seed, "layer": int(str(c)[6:]), "kept": float(r[c])})
    return pd.DataFrame(rows, columns=["task", "method", "setting", "seed", "layer", "kept"])


def plot_keep(keep: pd.DataFrame, task: str, ax=None):
    """Kept fraction by layer, one line per setting (mean over seeds) of one task."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=keep[keep.task == task], x="layer", y="kept", hue="setting", marker="o", ax=ax)
    ax.set(ylim=(0, 1.05), xlabel="layer index", ylabel="kept fraction of real tokens", title=task)
    return ax


def trace_frame(table: pd.DataFrame, task: str, method: str = "transkimmer",
                setting_text: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Token x layer grid of the stored example (1 = computed by that layer, 0 = dropped) of the
    first job matching (task, method, setting, seed); empty when none has a trace."""
    wide = jobs_frame(table)
    if wide.empty or "info_trace" not in wide:
        return pd.DataFrame()
    pick = wide[(wide.task == task) & (wide.seed == seed) & wide.info_trace.notna() &
                wide.job.map(lambda j: j.method == method and
                             (setting_text is None or setting(j) == setting_text))]
    if pick.empty:
        return pd.DataFrame()
    trace = pick.info_trace.iloc[0]
    layers = int(np.sum([str(c).startswith("keep_l") for c in pick.columns
                         if pd.notna(pick[c].iloc[0])]))
    grid = [[int(layer < s) for layer in range(layers)] for s in trace["skimmed_at"]]
    return pd.DataFrame(grid, index=[f"{i}:{t}" for i, t in enumerate(trace["tokens"])],
                        columns=[f"L{i}" for i in range(layers)])


def curve_bands(table: pd.DataFrame) -> pd.DataFrame:
    """Training curves (``report.curves``) summarised over seeds: task, setting, quantity, step,
    seeds (how many seeds logged that step), mean, lo and hi (the seeds' smallest and largest value:
    a plain range, not an interval; with 3 seeds a bootstrap would only dress it up)."""
    long = curves(table)
    cols = ["task", "setting", "quantity", "step", "seeds", "mean", "lo", "hi"]
    if long.empty:
        return pd.DataFrame(columns=cols)
    out = (long.groupby(["task", "setting", "quantity", "step"], sort=True).value
           .agg(seeds="count", mean="mean", lo="min", hi="max").reset_index())
    return out[cols]


def plot_curves(bands: pd.DataFrame, task: str, axes=None):
    """Task loss and kept fraction against training step for one task: per setting the mean over
    seeds, shaded between the seeds' lowest and highest value."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    g = bands[bands.task == task]
    quantities = sorted(set(g.quantity), reverse=True)           # task loss, then kept fraction
    if axes is None:
        _, axes = plt.subplots(1, len(quantities), figsize=(5 * len(quantities), 3.4),
                               squeeze=False)
        axes = axes[0]
    settings = sorted(set(g.setting))
    palette = dict(zip(settings, sns.color_palette("colorblind", len(settings))))
    for ax, quantity in zip(axes, quantities):
        for name, s in g[g.quantity == quantity].groupby("setting"):
            ax.plot(s.step, s["mean"], color=palette[name], lw=1, label=name)
            if (s.seeds > 1).any():
                ax.fill_between(s.step, s.lo, s.hi, color=palette[name], alpha=0.2, lw=0)
        ax.set(xlabel="training step", ylabel=quantity, title=f"{task}: {quantity}")
    axes[-1].legend(fontsize="x-small", ncol=2)
    return axes
